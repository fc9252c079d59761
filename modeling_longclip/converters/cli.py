"""Command lines of the converters: parse arguments and call the package (refusals and interrupts follow
common/cli.py's rule: one line, exit 2 / 130 / 143, nothing written)."""

from __future__ import annotations

import argparse

from ..common.cli import ArgumentParser, command
from ..export.folder import DTYPES

INTERRUPTED = "nothing was written (the staging folder was removed)"


@command(kept=INTERRUPTED)
def convert_longclip_main(argv=None) -> int:
    from .longclip import OUTPUT_FORMATS, convert_longclip

    parser = ArgumentParser(
        prog="longclip-convert",
        description="Convert an original Long-CLIP (or OpenAI CLIP) .pt state dict into a Hugging Face folder.",
    )
    parser.add_argument("--checkpoint", required=True, help="longclip-B.pt, longclip-L.pt, ... (a raw state dict)")
    parser.add_argument("--output", required=True, help="folder to write (created atomically)")
    parser.add_argument(
        "--format",
        choices=OUTPUT_FORMATS,
        default="longclip",
        help="longclip: remote-code LongCLIPModel (default); clip: a stock CLIPModel folder",
    )
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="dtype of the written weights")
    parser.add_argument(
        "--tokenizer",
        default=None,
        help="an existing HF CLIP tokenizer folder (default: build it from open_clip's BPE file)",
    )
    parser.add_argument("--keep", type=int, default=20, help="position rows kept when stretching a 77-token CLIP")
    parser.add_argument("--ratio", type=int, default=4, help="stretch ratio for a 77-token CLIP (248 = 20 + 57 * 4)")
    parser.add_argument(
        "--exact-fp16",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="stretch a 77-token CLIP in fp16 with the authors' operation order (their load_from_clip; "
        "bit-exact with their tables; default); --no-exact-fp16: the same formulas in fp32",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    args = parser.parse_args(argv)

    report = convert_longclip(
        args.checkpoint,
        args.output,
        output_format=args.format,
        dtype=args.dtype,
        tokenizer=args.tokenizer,
        keep=args.keep,
        ratio=args.ratio,
        overwrite=args.overwrite,
        exact_fp16=args.exact_fp16,
    )
    for line in report.lines():
        print(line)
    print(f"wrote {args.output}")
    return 0


def _dual_tower_main(
    prog: str, description: str, source_flag: str, source_help: str, llm_help: str, convert, argv, add_options=None
):
    """LLM2CLIP and ProCLIP share their options besides their source (one text model, one output folder);
    `add_options(parser)` adds a family's own, which reach `convert` under their own names."""
    parser = ArgumentParser(prog=prog, description=description)
    parser.add_argument(source_flag, required=True, help=source_help)
    parser.add_argument("--llm", required=True, help=llm_help)
    parser.add_argument("--output", required=True, help="folder to write (created atomically)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="dtype of the written weights")
    parser.add_argument(
        "--external-llm",
        action="store_true",
        help="keep the LLM weights out of the folder; the config records where they live",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    if add_options is not None:
        add_options(parser)
    args = parser.parse_args(argv)

    source = getattr(args, source_flag.lstrip("-"))
    shared = {source_flag.lstrip("-"), "llm", "output", "dtype", "external_llm", "overwrite"}
    own = {name: value for name, value in vars(args).items() if name not in shared}
    parity = convert(
        source,
        args.llm,
        args.output,
        dtype=args.dtype,
        external_llm=args.external_llm,
        overwrite=args.overwrite,
        **own,
    )
    for line in parity.lines():
        print(line)
    print(f"wrote {args.output}")
    return 0


@command(kept=INTERRUPTED)
def convert_llm2clip_main(argv=None) -> int:
    from .llm2clip import convert_llm2clip

    return _dual_tower_main(
        "longclip-convert-llm2clip",
        "Merge the released LLM2CLIP CLIP part and its LLM text model into one self-contained folder.",
        "--clip",
        "folder, Hub id or eva_clip .pt file of the CLIP part (vision tower + adapter)",
        "folder or Hub id of the text model (plain Llama keys + tokenizer)",
        convert_llm2clip,
        argv,
        _siglip2_release_options,
    )


def _siglip2_release_options(parser) -> None:
    """What only LLM2CLIP's SigLIP2 release takes: its PEFT LoRA and the tower's head count (added to the parser
    itself, not to an argument group, so their underscore spellings work too)."""
    parser.add_argument(
        "--lora",
        metavar="PATH",
        default=None,
        help="SigLIP2 release only: the PEFT LoRA folder its text path merges into the LLM (default: the one in the "
        "release folder, else in a subfolder of --llm; the conversion is refused when none is found)",
    )
    parser.add_argument(
        "--no-lora",
        action="store_true",
        help="SigLIP2 release only: convert with the un-adapted LLM (its caption features differ from the release's)",
    )
    parser.add_argument(
        "--num-heads",
        type=int,
        default=None,
        metavar="N",
        help="SigLIP2 release only: attention heads of the SigLIP tower, for a width timm's definitions do not name",
    )


@command(kept=INTERRUPTED)
def convert_proclip_main(argv=None) -> int:
    from .proclip import convert_proclip

    return _dual_tower_main(
        "longclip-convert-proclip",
        "Convert a ProCLIP .pt (visual.* + text.text_adaptor.*) plus its LLM into one self-contained folder.",
        "--checkpoint",
        "e.g. proclip/3m/L14.pt (a raw state dict)",
        "folder or Hub id of the LLM embedder it was trained with",
        convert_proclip,
        argv,
    )
