"""`longclip-eval`: evaluate a saved model folder on a benchmark and write results.json + results.md.

    longclip-eval --model LongCLIP-L-hf --benchmark urban1k --data-root data/Urban1k --output results/urban1k.json

Works for every model family through the shared feature API (`encode_text` / `encode_image`). A missing file or a
malformed record is reported as one `error: ...` line on stderr with exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .benchmarks import BENCHMARKS, DEFAULT_PROTOCOLS, BenchmarkError, load_benchmark
from .encoding import DEFAULT_CACHE_DIR, EmbeddingCache, model_fingerprint
from .report import markdown_table, write_results
from .runner import evaluate


def build_parser() -> argparse.ArgumentParser:
    protocols = "; ".join(
        f"{name}: {', '.join(p + (' (default)' if p == DEFAULT_PROTOCOLS[name] else '') for p in table)}"
        for name, table in BENCHMARKS.items()
    )
    parser = argparse.ArgumentParser(
        prog="longclip-eval",
        description="Long- and short-caption retrieval and zero-shot classification for long-text CLIP models.",
    )
    parser.add_argument("--model", required=True, help="saved model folder (AutoModel + AutoProcessor, remote code)")
    parser.add_argument("--benchmark", required=True, choices=sorted(BENCHMARKS))
    parser.add_argument("--data-root", required=True, help="the benchmark's folder, in its official layout")
    parser.add_argument("--protocol", help=f"evaluation protocol ({protocols})")
    parser.add_argument("--annotations", help="annotation file, when it is not at its usual place in the data root")
    parser.add_argument("--class-names", help="zeroshot: class names, one per line, in sorted-subfolder order")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    parser.add_argument(
        "--long-text", choices=("truncate", "window"), help="processor option for texts past the context (Long-CLIP)"
    )
    parser.add_argument("--cache-dir", default=str(DEFAULT_CACHE_DIR), help="embedding cache (default: %(default)s)")
    parser.add_argument("--no-cache", action="store_true", help="neither read nor write cached embeddings")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--output", required=True, help="results.json to write; the Markdown table goes beside it")
    return parser


def load_model(model_dir: str, device: str | None):
    """AutoModel + AutoProcessor with trust_remote_code, in eval mode on `device`."""
    import torch
    from transformers import AutoModel, AutoProcessor

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise BenchmarkError(f"--device {device}: CUDA is not available on this machine.")
    try:
        model = AutoModel.from_pretrained(model_dir, trust_remote_code=True).eval().to(device)
        processor = AutoProcessor.from_pretrained(model_dir, trust_remote_code=True)
    except OSError as error:  # unreadable weights or tokenizer files: one line, not a traceback
        raise BenchmarkError(f"{model_dir}: cannot load the model or its processor ({error}).") from None
    return model, processor


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.batch_size < 1:
        print("error: --batch-size must be at least 1", file=sys.stderr)
        return 2
    try:
        model_dir = Path(args.model).expanduser()
        if not model_dir.is_dir():
            raise BenchmarkError(f"{model_dir}: no such model folder.")
        if not (model_dir / "config.json").is_file():
            raise BenchmarkError(f"{model_dir}: not a saved model folder (no config.json).")
        dataset = load_benchmark(  # before the model: a wrong path fails in a second, not after loading weights
            args.benchmark, args.data_root, args.protocol, annotations=args.annotations, class_names=args.class_names
        )
        model, processor = load_model(str(model_dir), args.device)
        cache = None if args.no_cache else EmbeddingCache(args.cache_dir, model_fingerprint(model, model_dir))
        text_kwargs = {"long_text": args.long_text} if args.long_text else None
        results = evaluate(
            model,
            processor,
            dataset,
            batch_size=args.batch_size,
            cache=cache,
            text_kwargs=text_kwargs,
            progress=not args.no_progress,
            model_name=str(model_dir),
        )
        results["data_root"] = str(Path(args.data_root).expanduser())
        json_path, markdown = write_results(results, args.output)
    except (BenchmarkError, FileNotFoundError, NotADirectoryError, PermissionError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(markdown_table(results), end="")
    print(f"wrote {json_path} and {markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
