"""Text-feature extraction: run the text tower of an LLM2CLIP / ProCLIP model over (key, text) captions into the store.

Captions are taken `shard_size` at a time (keys already cached, and repeated keys, are skipped), encoded in batches
sorted by token count, and written as one shard plus an updated index (feature_store.py), so a killed run leaves a
valid cache and the same call resumes it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

from ..common.files import atomic_write
from ..common.quantization import describe_quantization, is_quantized
from ..embedding import encode_in_length_order
from .fingerprint import describe_differences, fingerprint_differences, model_fingerprint, text_tower
from .store import (
    INDEX_FORMAT,
    INDEX_NAME,
    TENSOR_NAME,
    FeatureCacheError,
    read_index,
    remove_leftovers,
    shard_name,
    write_index,
)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class ExtractionStats:
    """What one extraction run did."""

    output_dir: Path
    encoded: int = 0  # captions run through the model by this call
    cached: int = 0  # skipped: already in the cache when this call started (each key counted once)
    duplicates: int = 0  # skipped: a key met earlier in this call's input
    shards_written: int = 0
    total: int = 0  # captions in the cache afterwards


def _as_dtype(dtype) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}.")
    return DTYPES[dtype]


def _tower_parameter(model) -> torch.Tensor | None:
    return next(iter(text_tower(model).parameters()), None)


def _compute_context(model, device: torch.device, dtype: torch.dtype | None):
    """No autocast when the weights already are in `dtype`; autocast for half precision over float32 weights."""
    parameter = _tower_parameter(model)
    weights = parameter.dtype if parameter is not None else torch.float32
    if dtype is None or dtype == weights:
        return contextlib.nullcontext()
    if weights == torch.float32 and dtype in (torch.bfloat16, torch.float16):
        return torch.autocast(device.type, dtype=dtype)
    raise ValueError(
        f"cannot compute in {dtype} with a text model loaded in {weights}: load it in {dtype} or float32."
    )


def _encode_batch(model, processor, texts: list[str], device: torch.device, context) -> torch.Tensor:
    inputs = processor(text=texts, return_tensors="pt")
    inputs = {k: inputs[k].to(device) for k in ("input_ids", "attention_mask", "pooling_mask") if k in inputs}
    with torch.no_grad(), context:
        embeds = model.encode_llm(**inputs)
    embeds = embeds.detach().float().cpu()
    if not torch.isfinite(embeds).all():
        raise FeatureCacheError(
            f"the text model produced non-finite features for a batch of {len(texts)} captions (first: "
            f"{texts[0][:60]!r}); float16 overflows easily, use bfloat16 or float32."
        )
    return embeds


def cached_compute_dtype(output_dir: Path, index: dict) -> str | None:
    """The dtype the cached rows were computed in: the index's, or (caches made before the index recorded it) the
    first shard's metadata."""
    if index.get("compute_dtype"):
        return index["compute_dtype"]
    for name in index.get("shards", [])[:1]:
        try:
            with safe_open(str(output_dir / name), framework="pt") as shard:
                return (shard.metadata() or {}).get("compute_dtype")
        except (OSError, SafetensorError):
            return None
    return None


QUANTIZED_TOWER = ", text tower "  # joins the compute dtype and a quantized tower's description in the index


def check_compute_dtype(output_dir: Path, index: dict, dtype_name: str, check_quantization: bool = True) -> None:
    """Rows computed in bfloat16 and rows computed in float32 differ by ~1e-2, rows of an 8- or 4-bit text tower by
    more: one cache holds rows of one of them. `dtype_name` may carry the tower's quantization after
    `QUANTIZED_TOWER`; without `check_quantization` (before the model is loaded) only the dtypes are compared."""
    cached = cached_compute_dtype(output_dir, index) if index.get("keys") else None
    if cached is None or cached == dtype_name:
        return
    cached_dtype, _, cached_tower = cached.partition(QUANTIZED_TOWER)
    dtype, _, tower = dtype_name.partition(QUANTIZED_TOWER)
    count = len(index["keys"])
    if cached_dtype != dtype:
        raise FeatureCacheError(
            f"{output_dir}: its {count} cached captions were computed in {cached_dtype}, this run would compute "
            f"in {dtype} (--dtype auto picks bfloat16 on CUDA, float32 on the CPU); pass --dtype {cached_dtype} "
            f"(dtype={cached_dtype!r}) to continue it, or --overwrite (overwrite=True) to compute every row again in "
            f"{dtype}."
        )
    if check_quantization and cached_tower != tower:
        raise FeatureCacheError(
            f"{output_dir}: its {count} cached captions were computed with the text tower "
            f"{cached_tower or 'in full precision'}, this run's is {tower or 'in full precision'}; load it as the cache "
            "was made (--quantize) to continue it, or --overwrite (overwrite=True) to compute every row again."
        )


def run_extraction(
    model,
    processor,
    captions: Iterable[tuple[str, str]],
    output_dir: str | Path,
    batch_size: int = 64,
    shard_size: int = 10_000,
    dtype: torch.dtype | str | None = None,
    device: torch.device | str | None = None,
    progress: bool = True,
    overwrite: bool = False,
    storage_dtype: torch.dtype | str = torch.float32,
) -> ExtractionStats:
    """`extract_text_features`, returning what it did (encoded / skipped counts) instead of the folder alone."""
    if batch_size < 1 or shard_size < 1:
        raise ValueError(f"batch_size and shard_size must be at least 1, got {batch_size} and {shard_size}.")
    if not hasattr(model, "encode_llm"):
        raise ValueError(f"{type(model).__name__} has no encode_llm: the feature cache is for LLM2CLIP / ProCLIP.")
    compute_dtype, storage = _as_dtype(dtype), _as_dtype(storage_dtype)
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise FeatureCacheError(f"{output_dir} exists and is not a folder.")
    output_dir.mkdir(parents=True, exist_ok=True)
    remove_leftovers(output_dir, shards_too=overwrite)

    if device is not None:
        text_tower(model).to(device)
    parameter = _tower_parameter(model)
    if device is not None:
        device = torch.device(device)
    else:
        device = parameter.device if parameter is not None else torch.device("cpu")
    context = _compute_context(model, device, compute_dtype)
    dtype_name = str(compute_dtype or (parameter.dtype if parameter is not None else torch.float32)).replace(
        "torch.", ""
    )

    if is_quantized(model):  # same fingerprint as its full-precision tower (fingerprint.text_weights_hash), other rows
        dtype_name += QUANTIZED_TOWER + describe_quantization(model.config.quantization_config)
    fingerprint = model_fingerprint(model, processor)
    index = read_index(output_dir)
    if index is None:
        index = {"format": INDEX_FORMAT, "dim": None, "model": fingerprint, "shards": [], "keys": {}}
    else:
        stored = index.get("model") or {}
        differences = fingerprint_differences(stored, fingerprint)
        if differences:
            raise FeatureCacheError(
                f"{output_dir} holds features of another model or processor "
                f"({describe_differences(stored, fingerprint, differences)}); "
                "use a new output folder, or overwrite=True (--overwrite) to replace them."
            )
        check_compute_dtype(output_dir, index, dtype_name)
    index["compute_dtype"] = dtype_name
    keys: dict = index["keys"]
    stats = ExtractionStats(output_dir)
    seen: set[str] = set()  # keys met in this call (cached, pending or written)
    pending_keys: list[str] = []
    pending_texts: list[str] = []

    def encode_batch(texts: list[str]) -> torch.Tensor:
        embeds = _encode_batch(model, processor, texts, device, context)
        if index["dim"] is not None and embeds.shape[1] != index["dim"]:
            raise FeatureCacheError(
                f"{output_dir}: cached features have {index['dim']} dims, the model gives {embeds.shape[1]}."
            )
        bar.update(len(texts))
        return embeds.to(storage)

    def flush() -> None:
        rows = encode_in_length_order(processor, pending_texts, encode_batch, batch_size)
        shard = len(index["shards"])
        name = shard_name(shard)
        metadata = {"format": str(INDEX_FORMAT), "rows": str(len(rows)), "compute_dtype": dtype_name}
        atomic_write(output_dir / name, lambda tmp: save_file({TENSOR_NAME: rows.contiguous()}, tmp, metadata))
        index["dim"] = int(rows.shape[1])
        index["shards"].append(name)
        for row, key in enumerate(pending_keys):
            keys[key] = [shard, row]
        write_index(output_dir, index)
        stats.encoded += len(rows)
        stats.shards_written += 1
        pending_keys.clear()
        pending_texts.clear()

    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    total = len(captions) if hasattr(captions, "__len__") else None
    bar = tqdm(total=total, disable=not progress, unit="caption", desc="text features", dynamic_ncols=True)
    try:
        for key, text in captions:
            if not isinstance(key, str) or not isinstance(text, str):
                raise TypeError(
                    f"captions must be (key, text) string pairs, got ({type(key).__name__}, {type(text).__name__})."
                )
            if key in seen:
                stats.duplicates += 1
                bar.update(1)
                continue
            seen.add(key)
            if key in keys:
                stats.cached += 1
                bar.update(1)
                continue
            pending_keys.append(key)
            pending_texts.append(text)
            if len(pending_keys) >= shard_size:
                flush()
                bar.set_postfix(encoded=stats.encoded, skipped=stats.cached + stats.duplicates, refresh=False)
        if pending_keys:
            flush()
    finally:
        bar.close()
        if was_training and hasattr(model, "train"):
            model.train()
    if not (output_dir / INDEX_NAME).exists():
        write_index(output_dir, index)  # an empty caption set still makes a valid (empty) cache
    stats.total = len(keys)
    return stats


def extract_text_features(
    model, processor, captions: Iterable[tuple[str, str]], output_dir: str | Path, **options
) -> Path:
    """Encode `captions` ((key, text) pairs) with `model.encode_llm` into the feature cache at `output_dir`.

    Captions are taken `shard_size` at a time (keys already cached, and repeated keys, are skipped), encoded in
    batches of `batch_size` sorted by token count so padding stays small, and written as one shard plus an updated
    index; rows keep the order in which the captions arrived. Interrupted runs resume where the index ends.

    dtype: compute dtype; None runs the text tower as loaded; bfloat16 / float16 over float32 weights use autocast.
    device: where the text tower runs (it is moved there); None: where it is.
    storage_dtype: dtype of the stored rows (float32 by default); `TextFeatureCache.get` always returns float32.
    overwrite: delete an existing cache in the folder (index and shards) first; without it a cache of another model
    raises `FeatureCacheError` (a ValueError).

    Options are those of `run_extraction`; this returns the cache folder.
    """
    return run_extraction(model, processor, captions, output_dir, **options).output_dir


__all__ = [
    "DTYPES",
    "ExtractionStats",
    "cached_compute_dtype",
    "check_compute_dtype",
    "extract_text_features",
    "run_extraction",
]
