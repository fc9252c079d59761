"""`longclip-extract-text-features`: run the LLM text tower of LLM2CLIP / ProCLIP once over a caption set.

    longclip-extract-text-features --model LLM2CLIP-Llama-3-8B-hf --captions train.jsonl --output features/ \
        --caption-column caption --derive-short-captions

Training the adapter (and evaluating with fixed text towers) only needs the pooled LLM embedding of each caption,
`model.encode_llm(...)`; computing it once and storing it turns every later epoch into a table lookup.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from ..common.cli import ArgumentParser, command
from ..common.errors import DataError
from ..common.loading import check_model_folder, load_model_folder, resolve_device
from ..common.quantization import BACKENDS, BITS, load_quantized_model
from .caption_sources import iter_captions
from .extraction import DTYPES, check_compute_dtype, run_extraction
from .fingerprint import text_tower
from .store import read_index


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="longclip-extract-text-features",
        description="Run the LLM text tower of an LLM2CLIP / ProCLIP model over a caption set and cache the pooled "
        "embeddings (sharded safetensors + index.json). Rerunning the same command resumes an interrupted run.",
    )
    parser.add_argument("--model", required=True, help="saved LLM2CLIP / ProCLIP folder (AutoModel + AutoProcessor)")
    parser.add_argument(
        "--captions", required=True, help="JSON lines / JSON / CSV / TSV / Parquet, or a save_to_disk folder"
    )
    parser.add_argument(
        "--output", required=True, help="cache folder (created; resumed when it holds this model's cache)"
    )
    parser.add_argument(
        "--caption-column",
        action="append",
        dest="caption_columns",
        help="column with captions; repeat for several (default: caption)",
    )
    parser.add_argument("--id-column", help="column with caption ids to use as keys (default: SHA-1 of the caption)")
    parser.add_argument(
        "--derive-short-captions",
        action="store_true",
        help="also encode each caption's short caption (the text before its first '. ')",
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--shard-size", type=int, default=10_000, help="captions per shard (default: %(default)s)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    parser.add_argument(
        "--dtype",
        choices=("auto", *DTYPES),
        default="auto",
        help="text tower dtype (auto: bfloat16 on CUDA, float32 on CPU)",
    )
    parser.add_argument(
        "--quantize",
        choices=BITS,
        help="load the LLM text tower in 8 or 4 bits (the adapter and image tower stay in --dtype): bitsandbytes on "
        "CUDA and for 4bit, torchao int8 weight-only for 8bit on a CPU; see --quantization-backend",
    )
    parser.add_argument(
        "--quantization-backend",
        choices=BACKENDS,
        default="auto",
        help="who quantizes (default: %(default)s, as described for --quantize)",
    )
    parser.add_argument("--storage-dtype", choices=tuple(DTYPES), default="float32", help="dtype of the stored rows")
    parser.add_argument("--overwrite", action="store_true", help="replace a cache already in --output")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def load_model(
    model_dir: Path,
    device: str,
    dtype: torch.dtype,
    progress: bool = True,
    quantize: str | None = None,
    backend: str = "auto",
):
    """AutoModel + AutoProcessor (remote code) in eval mode through the tools' one loader (`load_model_folder`: a
    missing folder, truncated weights or an unreadable tokenizer is one line), the text tower on `device`, in `dtype`;
    with `quantize`, the text tower in 8 or 4 bits (common/quantization.py), the whole model placed on `device`.
    """
    from transformers.utils import logging as transformers_logging

    bars = transformers_logging.is_progress_bar_enabled()
    if not progress:
        transformers_logging.disable_progress_bar()
    try:
        if quantize:  # placed on `device` as it loads
            model, processor = load_quantized_model(
                model_dir, quantize, device, backend, dtype=dtype, dual_encoder=False
            )
        else:  # loaded on the CPU: only the text tower runs, so only it moves to `device`
            model, processor = load_model_folder(model_dir, device="cpu", dual_encoder=False, dtype=dtype)
    finally:
        if bars:
            transformers_logging.enable_progress_bar()
    if not hasattr(model, "encode_llm"):
        raise DataError(
            f"{model_dir}: a {type(model).__name__} has no encode_llm; the cache is for LLM2CLIP / ProCLIP."
        )
    if not quantize:
        text_tower(model).to(device)
    return model, processor


@command(kept="every finished shard is kept; run the same command again to resume")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.batch_size < 1 or args.shard_size < 1:
        raise DataError("--batch-size and --shard-size must be at least 1.")
    model_dir = check_model_folder(args.model)
    output = Path(args.output).expanduser()
    if output.exists() and not output.is_dir():
        raise DataError(f"{output} exists and is not a folder.")
    # Before the model: a wrong path or column fails in a second, not after loading the weights.
    columns = args.caption_columns or ["caption"]
    captions = iter_captions(args.captions, columns, args.id_column, args.derive_short_captions)
    device = resolve_device(args.device)
    if args.dtype == "auto":
        dtype = torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    else:
        dtype = DTYPES[args.dtype]
    if output.is_dir() and not args.overwrite:
        index = read_index(output)  # an unreadable index, or one made in another dtype, fails before the weights load
        if index is not None:
            check_compute_dtype(output, index, str(dtype).removeprefix("torch."), check_quantization=False)
    model, processor = load_model(
        model_dir, device, dtype, not args.no_progress, args.quantize, args.quantization_backend
    )
    stats = run_extraction(
        model,
        processor,
        captions,
        output,
        batch_size=args.batch_size,
        shard_size=args.shard_size,
        dtype=dtype,
        progress=not args.no_progress,
        overwrite=args.overwrite,
        storage_dtype=args.storage_dtype,
    )
    print(
        f"encoded {stats.encoded} captions, skipped {stats.cached} already cached and {stats.duplicates} repeated; "
        f"{stats.total} captions in {len(read_index(output)['shards'])} shards at {output}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
