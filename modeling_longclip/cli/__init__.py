"""`longclip`: one command whose subcommands are the package's commands (`longclip convert longclip ...` is
`longclip-convert ...`). Each subcommand is imported only when it runs, so `longclip --help` is instant."""

from __future__ import annotations

import importlib
import sys

# (words) -> (module:function, one-line summary); every function is a `common.cli.command` main(argv) -> int.
SUBCOMMANDS = {
    ("convert", "longclip"): ("converters.cli:convert_longclip_main", "a Long-CLIP / OpenAI CLIP .pt -> folder"),
    ("convert", "llm2clip"): ("converters.cli:convert_llm2clip_main", "LLM2CLIP CLIP part + LLM -> one folder"),
    ("convert", "proclip"): ("converters.cli:convert_proclip_main", "a ProCLIP .pt + LLM -> one folder"),
    ("convert", "zoo"): ("converters.zoo:main", "every released checkpoint found (or fetched)"),
    ("train", "longclip"): ("training.longclip_train:main", "fine-tune Long-CLIP with the authors' recipe"),
    ("train", "llm2clip"): ("training.dual_tower_train:llm2clip_main", "LLM2CLIP stage 1 or 2 (--stage)"),
    ("train", "proclip"): ("training.dual_tower_train:proclip_main", "ProCLIP stage 1 or 2 (--stage)"),
    ("eval",): ("evaluation.cli:main", "retrieval / zero-shot benchmarks, one model or a comparison"),
    ("features",): ("features.cli:main", "cache the LLM text features of a caption set"),
    ("export", "onnx"): ("export.onnx:main", "onnx/{text,vision}_model.onnx beside the weights, checked"),
    ("export", "open_clip"): ("export.cli:open_clip_main", "an open_clip local-dir: / hf-hub: directory, checked"),
    ("export", "immich"): ("export.cli:immich_main", "immich's CLIP model layout (textual/, visual/), checked"),
    ("export", "stretch-text-encoder"): ("export.text_encoder_stretch:main", "a 248-position CLIP text encoder"),
    ("export", "hub"): ("export.hub:upload_command", "check a folder loads, then upload it to the Hub"),
    ("search", "index"): ("search.cli:index_main", "index (or update) a photo folder for long-text search"),
    ("search", "query"): ("search.cli:query_main", "search a photo index with a paragraph or a photo"),
    ("search", "ann"): ("search.cli:ann_main", "build a photo index's FAISS index, print its recall@10"),
    ("search", "info"): ("search.cli:info_main", "what a photo index holds and how it was built"),
    ("demo",): ("demo.long_text_demo:main", "the embedded default: what 248 tokens buy"),
    ("demo", "conversion"): ("demo.conversion:main", "a conversion round trip in seconds"),
}


def usage() -> str:
    width = max(len(" ".join(words)) for words in SUBCOMMANDS)
    rows = [f"  longclip {' '.join(words):<{width}}  {summary}" for words, (_, summary) in SUBCOMMANDS.items()]
    return "usage: longclip COMMAND [SUBCOMMAND] [options] (each takes --help)\n\n" + "\n".join(rows) + "\n"


def resolve(argv: list[str]) -> tuple[str, list[str]] | None:
    """The longest subcommand that `argv` starts with: (target, the rest of argv)."""
    for length in (2, 1):
        words = tuple(argv[:length])
        if len(words) == length and words in SUBCOMMANDS:
            return SUBCOMMANDS[words][0], argv[length:]
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage(), end="")
        return 0
    found = resolve(argv)
    if found is None:
        print(f"longclip: error: unknown command {' '.join(argv[:2])!r} (see longclip --help)", file=sys.stderr)
        return 2
    target, rest = found
    module, function = target.split(":")
    return getattr(importlib.import_module(f"{__name__.rsplit('.', 1)[0]}.{module}"), function)(rest)
