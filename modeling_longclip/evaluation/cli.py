"""`longclip-eval`: evaluate saved model folders on a benchmark and write results.json + results.md.

    longclip-eval --model LongCLIP-L-hf --benchmark urban1k --data-root data/Urban1k --output results/urban1k.json
    longclip-eval --model LongCLIP-L-hf --model clip-vit-large-patch14 --model siglip-base-patch16-224 ...

Works for this package's families (`encode_text` / `encode_image`) and any transformers dual encoder with
`get_text_features` / `get_image_features` and a processor (CLIPModel, SiglipModel, ...). Several `--model`s give one
comparison: the table (results.md), its JSON (results.json, with every model's full result) and a bar chart
(results.png). `--update-card` also writes each model's table, dated and with the data it was read from, into its
folder's README.md (export/cards.py). A missing file or a malformed record is reported as one `error: ...` line on
stderr with exit status 2.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

from ..common.cli import ArgumentParser, command
from ..common.loading import check_model_folder
from ..export.cards import results_for_folder, update_card_results
from .benchmarks import BENCHMARKS, DEFAULT_PROTOCOLS, BenchmarkError, load_benchmark
from .compare import comparison, comparison_markdown, write_comparison
from .encoding import DEFAULT_CACHE_DIR
from .report import markdown_table, write_results
from .runner import evaluate_folders


def build_parser() -> argparse.ArgumentParser:
    protocols = "; ".join(
        f"{name}: {', '.join(p + (' (default)' if p == DEFAULT_PROTOCOLS[name] else '') for p in table)}"
        for name, table in BENCHMARKS.items()
    )
    parser = ArgumentParser(
        prog="longclip-eval",
        description="Long- and short-caption retrieval and zero-shot classification for long-text CLIP models.",
    )
    parser.add_argument(
        "--model",
        required=True,
        action="append",
        help="saved model folder (AutoModel + AutoProcessor, remote code allowed); repeat it to compare models",
    )
    parser.add_argument("--benchmark", required=True, choices=sorted(BENCHMARKS))
    parser.add_argument("--data-root", required=True, help="the benchmark's folder, in its official layout")
    parser.add_argument("--protocol", help=f"evaluation protocol ({protocols})")
    parser.add_argument("--annotations", help="annotation file, when it is not at its usual place in the data root")
    parser.add_argument("--class-names", help="zeroshot: class names, one per line, in sorted-subfolder order")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    parser.add_argument(
        "--long-text",
        choices=("truncate", "window"),
        help="texts past the context, for this package's processors (other models truncate at their limit)",
    )
    parser.add_argument("--cache-dir", default=str(DEFAULT_CACHE_DIR), help="embedding cache (default: %(default)s)")
    parser.add_argument("--no-cache", action="store_true", help="neither read nor write cached embeddings")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument(
        "--output", required=True, help="results.json to write; the Markdown table (and, comparing, a chart) beside it"
    )
    parser.add_argument(
        "--update-card",
        action="store_true",
        help="also write each model's measured table (dated, with its data) into its folder's README.md",
    )
    return parser


@command(kept="nothing was written; finished embedding batches are cached for the next run")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.batch_size < 1:
        raise BenchmarkError("--batch-size must be at least 1")
    # every folder before the data and the weights: a typo or a truncated weight file fails in a second
    folders = [check_model_folder(model) for model in args.model]
    dataset = load_benchmark(
        args.benchmark, args.data_root, args.protocol, annotations=args.annotations, class_names=args.class_names
    )
    results = evaluate_folders(
        folders,
        [dataset],
        device=args.device,
        cache_dir=None if args.no_cache else args.cache_dir,
        text_kwargs={"long_text": args.long_text} if args.long_text else None,
        batch_size=args.batch_size,
        progress=not args.no_progress,
    )
    data_root, today = str(Path(args.data_root).expanduser()), datetime.date.today().isoformat()
    for result in results:
        result.update(data_root=data_root, date=today)
    if len(results) == 1:
        written = write_results(results[0], args.output)
        table = markdown_table(results[0])
    else:
        table = comparison(results)
        written = write_comparison(table, args.output, title=f"{dataset.name} ({dataset.protocol})")
        table = comparison_markdown(table)
    print(table, end="")
    print(f"wrote {', '.join(str(path) for path in written[:-1])} and {written[-1]}")
    if args.update_card:
        for folder in folders:
            print(f"updated {update_card_results(folder, results_for_folder(results, folder))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
