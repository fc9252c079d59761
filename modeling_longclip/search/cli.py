"""`longclip-search`: index a photo folder, query it with a paragraph or a photo, build its ANN index, describe it.

```
longclip-search index PHOTOS_DIR --model MODEL --index INDEX_DIR [--device D] [--dtype T] [--batch-size N]
                      [--num-workers N] [--chunk-size N] [--ann]
longclip-search query INDEX_DIR "TEXT" [-k K] [--json] [--model MODEL] [--ann]      (TEXT "-": read stdin)
longclip-search query INDEX_DIR --image PATH [-k K] [--json] [--model MODEL] [--ann]
longclip-search ann INDEX_DIR [--kind auto|hnsw|ivf] [--target-recall 0.95]
longclip-search info INDEX_DIR [--json]
```

Every subcommand follows the package's command-line rule (common/cli.py): a refusal is one `error:` line and exit 2.
`python -m modeling_longclip.search index ...` is the same command, which `accelerate launch` / `torchrun` start
once per process to split the indexing (indexer.py). Each subcommand is a row of `SUBCOMMANDS`, imported when run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import warnings

from ..common.cli import ArgumentParser, command

# name -> (module:function in this package, one-line summary); each function is a `command` main(argv) -> int.
# `serve` (the web page, issue 16 item 4) is reserved for one more row here, built on index.PhotoIndex.
SUBCOMMANDS = {
    "index": ("cli:index_main", "index (or update) a photo folder"),
    "query": ("cli:query_main", "search an index with a text or a photo"),
    "ann": ("cli:ann_main", "build the approximate (FAISS) index and print its recall@10"),
    "info": ("cli:info_main", "what an index holds and how it was built"),
}
INDEX_KEPT = "chunks committed so far are kept; run the same command again to continue"


def positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, got {value!r}")
    return number


def non_negative(value: str) -> int:
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"must be 0 or a positive whole number, got {value!r}")
    return int(value)


def model_options(parser: ArgumentParser) -> None:
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    parser.add_argument(
        "--dtype", default="auto", help="auto (float16 on CUDA, float32 otherwise), float32, float16, bfloat16"
    )


@command(kept=INDEX_KEPT)
def index_main(argv: list[str] | None = None) -> int:
    from .indexer import IndexOptions, Quiet, update_index

    parser = ArgumentParser(prog="longclip-search index", description="Index (or update) a photo folder.")
    parser.add_argument("photos_dir", help="the folder of photos (walked recursively, links followed)")
    parser.add_argument("--model", required=True, help="a model folder (any family of this package, CLIP, SigLIP)")
    parser.add_argument("--index", required=True, help="the index folder (created, or updated when it exists)")
    model_options(parser)
    parser.add_argument("--batch-size", type=positive, default=32)
    parser.add_argument("--num-workers", type=non_negative, default=2, help="DataLoader workers decoding photos")
    parser.add_argument("--chunk-size", type=positive, default=1024, help="photos per committed chunk")
    parser.add_argument("--ann", action="store_true", help="build the FAISS index afterwards (see `ann`)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    options = IndexOptions(
        args.device, args.dtype, args.batch_size, args.num_workers, args.chunk_size, not args.no_progress
    )
    try:
        report = update_index(args.photos_dir, args.index, args.model, options)
    except Quiet:
        return 2
    if not report.main_process:  # the main process reports for all
        return 0
    print("\n".join(report.lines()))
    t = report.timings
    if report.added or report.updated or report.skipped:
        print(
            f"time: decoding {t.decode:.1f} s and preprocessing {t.preprocess:.1f} s (CPU-seconds in the workers), "
            f"waiting for the workers {t.wait:.1f} s, model {t.model:.1f} s, writing {t.write:.1f} s"
        )
    if args.ann:
        from .index import PhotoIndex

        with PhotoIndex.open(args.index, verify_model=False) as index:
            print(index.build_ann().line())
    return 0


def read_text(value: str | None) -> str | None:
    return sys.stdin.read() if value == "-" else value


@command()
def query_main(argv: list[str] | None = None) -> int:
    from .index import LongQueryWarning, PhotoIndex

    parser = ArgumentParser(prog="longclip-search query", description="Search an index with a text or a photo.")
    parser.add_argument("index_dir")
    parser.add_argument("text", nargs="?", help="the query (any length; '-' reads it from standard input)")
    parser.add_argument("--image", help="query by this photo instead of a text")
    parser.add_argument("-k", type=positive, default=10, help="number of results")
    parser.add_argument("--json", action="store_true", help='print [{"path", "score"}, ...]')
    parser.add_argument("--model", help="the model folder (default: the one the index was built with)")
    parser.add_argument("--ann", action="store_true", help="use the FAISS index (build it with `ann`)")
    model_options(parser)
    args = parser.parse_args(argv)
    if (args.text is None) == (args.image is None):
        parser.error("give a query TEXT or --image PATH (one of them)")
    with PhotoIndex.open(args.index_dir, args.model, device=args.device, dtype=args.dtype) as index:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", LongQueryWarning)
            hits = index.search(text=read_text(args.text), image=args.image, k=args.k, ann=args.ann)
        for warning in caught:
            if issubclass(warning.category, LongQueryWarning):
                print(f"note: {warning.message}", file=sys.stderr)
            else:
                warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)
    if args.json:
        print(json.dumps([{"path": hit.path, "score": hit.score} for hit in hits], indent=2))
    else:
        print(f"{'rank':>4}  {'score':>7}  path")
        for rank, hit in enumerate(hits, 1):
            print(f"{rank:>4}  {hit.score:7.4f}  {hit.path}")
    return 0


@command(kept="the previous ANN index (if any) is kept")
def ann_main(argv: list[str] | None = None) -> int:
    from .index import PhotoIndex

    parser = ArgumentParser(
        prog="longclip-search ann", description="Build the FAISS index of an index and measure its recall@10."
    )
    parser.add_argument("index_dir")
    parser.add_argument("--kind", default="auto", choices=["auto", "hnsw", "ivf"], help="auto: HNSW up to 200k photos")
    parser.add_argument("--target-recall", type=float, default=0.95, help="recall@10 the search breadth is tuned to")
    args = parser.parse_args(argv)
    with PhotoIndex.open(args.index_dir, verify_model=False) as index:
        print(index.build_ann(args.kind, args.target_recall).line())
    return 0


@command()
def info_main(argv: list[str] | None = None) -> int:
    from .index import PhotoIndex

    parser = ArgumentParser(prog="longclip-search info", description="What an index holds and how it was built.")
    parser.add_argument("index_dir")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    with PhotoIndex.open(args.index_dir, verify_model=False) as index:
        info = index.info()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    ann = info["ann"]
    print(f"index:       {info['index']}")
    print(f"photos:      {info['photos']} under {info['photos_root']} ({info['skipped']} could not be decoded)")
    print(f"model:       {info['model']['path']} ({info['model']['class']}, {info['model']['fingerprint'][:19]})")
    print(
        f"embeddings:  {info['embedding_dim']} float16 values per photo, {info['shards']} shards, {info['dead_rows']} dead rows"
    )
    print(f"size:        {info['bytes'] / 1e6:.1f} MB")
    if ann is None:
        print("ANN index:   none (longclip-search ann builds one)")
    else:
        state = "current" if ann["current"] else "out of date: rebuild it with longclip-search ann"
        print(f"ANN index:   {ann['kind'].upper()}, recall@10 {ann['recall_at_10']}, {state}")
    return 0


def usage() -> str:
    rows = [f"  longclip-search {name:<6} {summary}" for name, (_, summary) in SUBCOMMANDS.items()]
    return "usage: longclip-search COMMAND [options] (each takes --help)\n\n" + "\n".join(rows) + "\n"


@command()
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage(), end="")
        return 0
    if argv[0] not in SUBCOMMANDS:
        print(f"longclip-search: error: unknown command {argv[0]!r} (see longclip-search --help)", file=sys.stderr)
        return 2
    module, function = SUBCOMMANDS[argv[0]][0].split(":")
    return getattr(importlib.import_module(f"{__package__}.{module}"), function)(argv[1:])


__all__ = ["SUBCOMMANDS", "ann_main", "index_main", "info_main", "main", "query_main"]
