"""`longclip-export TARGET MODEL ...`: one command for every export of a model folder to a tool users already run.

    longclip-export open_clip LongCLIP-L-hf LongCLIP-L-open_clip     # open_clip local-dir: / hf-hub: layout
    longclip-export immich LongCLIP-L-hf LongCLIP-L-immich           # immich's machine-learning model layout
    longclip-export onnx LongCLIP-L-hf                               # = longclip-export-onnx (graphs beside the weights)

Each target checks its output with the consumer's own loading code before anything is kept, and refuses in one line
(exit status 2, nothing written) a family it cannot express, an existing output without --overwrite, or a folder that
is not a model.
"""

from __future__ import annotations

import argparse
import sys

from ..common.cli import ArgumentParser, command

TARGETS = {
    "open_clip": "open_clip_config.json + open_clip_model.safetensors for open_clip's local-dir: / hf-hub:",
    "immich": "config.json, textual/ and visual/ ONNX models as immich's machine-learning server loads them",
    "onnx": "MODEL/onnx/{text,vision}_model.onnx beside the weights (longclip-export-onnx)",
}


def _target_parser(target: str, description: str) -> ArgumentParser:
    parser = ArgumentParser(prog=f"longclip-export {target}", description=description)
    parser.add_argument("model", metavar="MODEL", help="a converted or fine-tuned Long-CLIP or stock CLIP folder")
    parser.add_argument("output", metavar="OUT", help="folder to write (replaced atomically)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    return parser


@command(kept="nothing was written (OUT is replaced only after open_clip agrees with the folder)")
def open_clip_main(argv: list[str] | None = None) -> int:
    from .open_clip import export_open_clip

    parser = _target_parser(
        "open_clip",
        "Write MODEL as an open_clip model directory (open_clip_config.json + open_clip_model.safetensors), checked "
        "with open_clip's own create_model / get_tokenizer against the folder before anything is kept.",
    )
    args = parser.parse_args(argv)
    check = export_open_clip(args.model, args.output, overwrite=args.overwrite)
    print("\n".join(check.lines()))
    return 0


@command(kept="nothing was written (OUT is replaced only after the immich-style check agrees with the folder)")
def immich_main(argv: list[str] | None = None) -> int:
    from .immich import export_immich

    parser = _target_parser(
        "immich",
        "Write MODEL in the layout immich's machine-learning server loads for an OpenCLIP-style CLIP model "
        "(config.json, textual/, visual/), checked the way immich reads it before anything is kept.",
    )
    args = parser.parse_args(argv)
    report = export_immich(args.model, args.output, overwrite=args.overwrite)
    print("\n".join(report.lines()))
    return 0


def _onnx_main(argv: list[str]) -> int:
    from .onnx import main as onnx_main

    return onnx_main(argv)


MAINS = {"open_clip": open_clip_main, "immich": immich_main, "onnx": _onnx_main}


@command(kept="nothing was written")
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = ArgumentParser(
        prog="longclip-export",
        description="Export a model folder to a tool users already run; `longclip-export TARGET --help` for a target.",
        epilog="targets:\n" + "\n".join(f"  {name:<10} {summary}" for name, summary in TARGETS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("target", choices=list(TARGETS), help="what to export to")
    parser.parse_args(argv[:1])
    return MAINS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
