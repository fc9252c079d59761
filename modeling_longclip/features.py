"""LLM text-feature cache: run the LLM text tower of LLM2CLIP / ProCLIP once over a caption set, read it back anywhere.

    longclip-extract-text-features --model LLM2CLIP-Llama-3-8B-hf --captions train.jsonl --output features/ \
        --caption-column caption --derive-short-captions

Training the adapter (and evaluating with fixed text towers) only needs the pooled LLM embedding of each caption,
`model.encode_llm(...)`; computing it once and storing it turns every later epoch into a table lookup.

Layout of a cache folder:

- `shard-00000.safetensors`, `shard-00001.safetensors`, ...: one tensor `embeds` [rows, dim] each (float32 unless
  another storage dtype was asked for), rows in the order the captions arrived;
- `index.json`: `{"format": 1, "dim": D, "model": {fingerprint}, "shards": [file names], "keys": {key: [shard, row]}}`.

A caption's key is `caption_key(text)` (SHA-1 of the stripped text: the processor strips captions, so " a dog " and
"a dog" are one caption) unless the captions come with ids. Each shard is written to a temporary file and renamed,
then the index is replaced the same way, so a killed run leaves a valid cache; running the same command again skips
every caption already indexed and encodes the rest. A shard file that the index does not list (the run died between
the two renames) is overwritten. The fingerprint (text model type and size, pooling, processor template and pooling
scope, token budget, tokenizer vocabulary, and a hash of the text tower's weights) protects against mixing features
of two models in one folder and against training with features of another model (`TextFeatureCache.check_model`).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

from .embedding import length_order
from .files import TEMP_SUFFIX, atomic_write
from .training.data import TABLE_BUILDERS, DataError, read_table_file, short_caption_of

INDEX_NAME = "index.json"
INDEX_FORMAT = 1
TENSOR_NAME = "embeds"
SHARD_PREFIX = "shard-"
SHARD_SUFFIX = ".safetensors"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# Recorded in the index for people reading it, but not compared: a copied or moved model folder is the same model.
INFORMATIONAL_FIELDS = frozenset({"name_or_path"})
HASH_CHUNK = 1 << 24  # elements per host copy while hashing weights


class FeatureCacheError(ValueError):
    """The cache folder belongs to another model or processor, is not a feature cache, or cannot take these rows."""


def caption_key(text: str) -> str:
    """The default key of a caption: SHA-1 (hex) of its UTF-8 text, stripped like the processor strips it."""
    return hashlib.sha1(text.strip().encode("utf-8")).hexdigest()


def shard_name(index: int) -> str:
    return f"{SHARD_PREFIX}{index:05d}{SHARD_SUFFIX}"


# -- model fingerprint ------------------------------------------------------------------------------------------------


def _text_tower(model):
    tower = getattr(model, "text_model", None)
    return tower if isinstance(tower, torch.nn.Module) else model


def text_weights_hash(model) -> str:
    """SHA-256 of the text tower's parameter names, shapes and values, floats taken as bfloat16.

    Casting to bfloat16 first makes the hash the same whether the weights were loaded in bfloat16 or float32 (for a
    bfloat16 checkpoint the two hold the same values; for a float32 checkpoint both round to the same bfloat16), and
    on any device, so features extracted in bf16 on a GPU are recognised by a float32 model on the CPU.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(_text_tower(model).state_dict().items()):
        tensor = tensor.detach()
        kind = "float" if tensor.is_floating_point() else str(tensor.dtype)
        digest.update(f"{name}\t{tuple(tensor.shape)}\t{kind}\n".encode())
        flat = tensor.reshape(-1)
        for start in range(0, flat.numel(), HASH_CHUNK):
            chunk = flat[start : start + HASH_CHUNK]
            if chunk.is_floating_point():
                chunk = chunk.to(torch.bfloat16)
            digest.update(chunk.to("cpu").contiguous().view(torch.uint8).numpy())
    return digest.hexdigest()


def _tokenizer_hash(tokenizer) -> str | None:
    if tokenizer is None or not hasattr(tokenizer, "get_vocab"):
        return None
    vocab = sorted(tokenizer.get_vocab().items())
    return hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode("utf-8")).hexdigest()


def model_fingerprint(model, processor) -> dict:
    """What decides the cached embeddings: text tower (type, size, weights), pooling, and how captions are encoded."""
    config = getattr(model, "config", None)
    text_config = getattr(config, "text_config", None) or config
    return {
        "name_or_path": str(getattr(model, "name_or_path", "") or ""),
        "text_model_type": getattr(text_config, "model_type", None),
        "hidden_size": getattr(text_config, "hidden_size", None),
        "pooling": getattr(config, "pooling", None),
        "text_template": getattr(processor, "text_template", None),
        "pooling_scope": getattr(processor, "pooling_scope", None),
        "max_length": getattr(processor, "max_length", None),
        "tokenizer": _tokenizer_hash(getattr(processor, "tokenizer", None)),
        "text_weights": text_weights_hash(model),
    }


def fingerprint_differences(stored: dict, current: dict) -> list[str]:
    """Names of the compared fingerprint fields whose values differ."""
    fields = (set(stored) | set(current)) - INFORMATIONAL_FIELDS
    return sorted(f for f in fields if stored.get(f) != current.get(f))


def _describe_differences(stored: dict, current: dict, fields: list[str]) -> str:
    def short(value):
        text = json.dumps(value)
        return text if len(text) <= 60 else text[:57] + "..."

    return "; ".join(f"{f}: cached {short(stored.get(f))}, now {short(current.get(f))}" for f in fields)


# -- files ------------------------------------------------------------------------------------------------------------


def _read_index(folder: Path) -> dict | None:
    path = folder / INDEX_NAME
    if not path.is_file():
        return None
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise FeatureCacheError(f"{path}: not a readable feature-cache index ({error}).") from None
    if not isinstance(index, dict) or index.get("format") != INDEX_FORMAT or not isinstance(index.get("keys"), dict):
        raise FeatureCacheError(f"{path}: not a feature-cache index of format {INDEX_FORMAT}.")
    return index


def _write_index(folder: Path, index: dict) -> None:
    data = json.dumps(index, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    atomic_write(folder / INDEX_NAME, lambda temporary: Path(temporary).write_bytes(data))


def _remove_leftovers(folder: Path, shards_too: bool = False) -> None:
    """Temporary files of a killed run (and, for `overwrite`, the index and every shard)."""
    for path in folder.iterdir():
        name = path.name
        ours = name.startswith((f".{SHARD_PREFIX}", f".{INDEX_NAME}.")) and name.endswith(TEMP_SUFFIX)
        if shards_too:
            ours = ours or name == INDEX_NAME or (name.startswith(SHARD_PREFIX) and name.endswith(SHARD_SUFFIX))
        if ours and path.is_file():
            path.unlink()


# -- extraction -------------------------------------------------------------------------------------------------------


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
    return next(iter(_text_tower(model).parameters()), None)


def _compute_context(model, device: torch.device, dtype: torch.dtype | None):
    """No autocast when the weights already are in `dtype`; autocast for half precision over float32 weights."""
    parameter = _tower_parameter(model)
    weights = parameter.dtype if parameter is not None else torch.float32
    if dtype is None or dtype == weights:
        return contextlib.nullcontext()
    if weights == torch.float32 and dtype in (torch.bfloat16, torch.float16):
        return torch.autocast(device.type, dtype=dtype)
    raise ValueError(f"cannot compute in {dtype} with a text model loaded in {weights}: load it in {dtype} or float32.")


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
    _remove_leftovers(output_dir, shards_too=overwrite)

    if device is not None:
        _text_tower(model).to(device)
    parameter = _tower_parameter(model)
    if device is not None:
        device = torch.device(device)
    else:
        device = parameter.device if parameter is not None else torch.device("cpu")
    context = _compute_context(model, device, compute_dtype)
    dtype_name = str(compute_dtype or (parameter.dtype if parameter is not None else torch.float32)).replace("torch.", "")

    fingerprint = model_fingerprint(model, processor)
    index = _read_index(output_dir)
    if index is None:
        index = {"format": INDEX_FORMAT, "dim": None, "model": fingerprint, "shards": [], "keys": {}}
    else:
        stored = index.get("model") or {}
        differences = fingerprint_differences(stored, fingerprint)
        if differences:
            raise FeatureCacheError(
                f"{output_dir} holds features of another model or processor "
                f"({_describe_differences(stored, fingerprint, differences)}); "
                "use a new output folder, or overwrite=True (--overwrite) to replace them."
            )
    keys: dict = index["keys"]
    stats = ExtractionStats(output_dir)
    seen: set[str] = set()  # keys met in this call (cached, pending or written)
    pending_keys: list[str] = []
    pending_texts: list[str] = []

    def flush() -> None:
        order = length_order(processor, pending_texts)
        rows = None
        for start in range(0, len(order), batch_size):
            positions = order[start : start + batch_size]
            embeds = _encode_batch(model, processor, [pending_texts[i] for i in positions], device, context)
            if rows is None:
                if index["dim"] is not None and embeds.shape[1] != index["dim"]:
                    raise FeatureCacheError(
                        f"{output_dir}: cached features have {index['dim']} dims, the model gives {embeds.shape[1]}."
                    )
                rows = torch.empty(len(order), embeds.shape[1], dtype=storage)
            rows[torch.tensor(positions)] = embeds.to(storage)
            bar.update(len(positions))
        shard = len(index["shards"])
        name = shard_name(shard)
        metadata = {"format": str(INDEX_FORMAT), "rows": str(len(order)), "compute_dtype": dtype_name}
        atomic_write(output_dir / name, lambda tmp: save_file({TENSOR_NAME: rows.contiguous()}, tmp, metadata))
        index["dim"] = int(rows.shape[1])
        index["shards"].append(name)
        for row, key in enumerate(pending_keys):
            keys[key] = [shard, row]
        _write_index(output_dir, index)
        stats.encoded += len(order)
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
        _write_index(output_dir, index)  # an empty caption set still makes a valid (empty) cache
    stats.total = len(keys)
    return stats


def extract_text_features(model, processor, captions: Iterable[tuple[str, str]], output_dir: str | Path, **options) -> Path:
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


# -- reading ----------------------------------------------------------------------------------------------------------


class TextFeatureCache:
    """Read side of a feature cache: `cache.get(keys)` / `cache.get_texts(captions)` -> float32 [n, dim].

    Shards are opened lazily with `safe_open` (memory-mapped) and only the requested rows are read. Picklable: the
    open handles stay behind and each DataLoader worker opens its own.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        index = _read_index(self.folder)
        if index is None:
            raise FileNotFoundError(
                f"{self.folder}: no feature cache here (no {INDEX_NAME}); make one with longclip-extract-text-features."
            )
        self.index = index
        self.keys: dict = index["keys"]
        self.shards: list[str] = list(index["shards"])
        self.fingerprint: dict = index.get("model") or {}
        self._handles: dict[int, object] = {}

    def __len__(self) -> int:
        return len(self.keys)

    def __contains__(self, key) -> bool:
        return key in self.keys

    def __repr__(self) -> str:
        return f"TextFeatureCache({str(self.folder)!r}, captions={len(self)}, dim={self.dim})"

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_handles"] = {}
        return state

    @property
    def dim(self) -> int | None:
        return self.index.get("dim")

    def _handle(self, shard: int):
        handle = self._handles.get(shard)
        if handle is None:
            path = self.folder / self.shards[shard]
            if not path.is_file():
                raise FileNotFoundError(f"{path}: shard listed in {self.folder / INDEX_NAME} is missing.")
            handle = self._handles[shard] = safe_open(str(path), framework="pt")
        return handle

    def close(self) -> None:
        self._handles.clear()

    def get(self, keys: Sequence[str]) -> torch.Tensor:
        """Cached embeddings of `keys`, float32 [len(keys), dim], in the order asked; KeyError for a missing key."""
        if isinstance(keys, str):
            raise TypeError("TextFeatureCache.get takes a list of keys, not a single string.")
        keys = list(keys)
        out = torch.empty(len(keys), self.dim or 0, dtype=torch.float32)
        by_shard: dict[int, list[tuple[int, int]]] = {}
        for position, key in enumerate(keys):
            location = self.keys.get(key)
            if location is None:
                raise KeyError(
                    f"caption key {key!r} is not in the feature cache at {self.folder} ({len(self)} captions); "
                    "extract features for this caption set with longclip-extract-text-features."
                )
            by_shard.setdefault(location[0], []).append((location[1], position))
        for shard, wanted in by_shard.items():
            rows = self._handle(shard).get_slice(TENSOR_NAME)
            wanted.sort()
            start = 0
            while start < len(wanted):  # one read per run of consecutive rows
                end = start + 1
                while end < len(wanted) and wanted[end][0] - wanted[end - 1][0] <= 1:
                    end += 1
                first, last = wanted[start][0], wanted[end - 1][0]
                block = rows[first : last + 1].float()
                offsets = torch.tensor([row - first for row, _ in wanted[start:end]])
                out[torch.tensor([position for _, position in wanted[start:end]])] = block[offsets]
                start = end
        return out

    def get_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """`get` of the captions' default keys (`caption_key`)."""
        if isinstance(texts, str):
            raise TypeError("TextFeatureCache.get_texts takes a list of captions, not a single string.")
        keys = [caption_key(text) for text in texts]
        for text, key in zip(texts, keys):
            if key not in self.keys:
                excerpt = text if len(text) <= 80 else text[:77] + "..."
                raise KeyError(
                    f"caption {excerpt!r} (key {key}) is not in the feature cache at {self.folder} ({len(self)} "
                    "captions); extract features for this caption set with longclip-extract-text-features."
                )
        return self.get(keys)

    def check_model(self, model, processor) -> None:
        """Raise FeatureCacheError (a ValueError) when `model` / `processor` would not give these features."""
        current = model_fingerprint(model, processor)
        differences = fingerprint_differences(self.fingerprint, current)
        if differences:
            raise FeatureCacheError(
                f"the feature cache at {self.folder} was made with another model or processor "
                f"({_describe_differences(self.fingerprint, current, differences)}); "
                "extract features again for this model."
            )


# -- caption sources --------------------------------------------------------------------------------------------------


def load_caption_table(path: str | Path):
    """A `datasets.Dataset` from JSON lines / JSON / CSV / TSV / Parquet, or a folder written by `save_to_disk`."""
    import datasets

    path = Path(path).expanduser()
    if path.is_dir():
        try:
            loaded = datasets.load_from_disk(str(path))
        except Exception as error:  # noqa: BLE001 - any unreadable folder: one clear message
            raise DataError(f"{path}: not a dataset saved with save_to_disk ({type(error).__name__}: {error}).") from None
        if isinstance(loaded, datasets.DatasetDict):
            splits = list(loaded)
            if "train" in loaded:
                loaded = loaded["train"]
            elif len(splits) == 1:
                loaded = loaded[splits[0]]
            else:
                raise DataError(f"{path}: a DatasetDict with splits {splits}; save the split to encode on its own.")
        return loaded
    if not path.exists():
        raise DataError(f"{path}: no such caption file or dataset folder.")
    if path.suffix.lower() not in TABLE_BUILDERS:
        raise DataError(f"{path}: expected {', '.join(TABLE_BUILDERS)} or a folder saved with Dataset.save_to_disk.")
    return read_table_file(path)


class CaptionSource:
    """(key, text) pairs of a caption table, in row order; `len()` is the exact number of pairs (one counting pass).

    Per row, every caption column in turn, and with `derive_short` the short caption of each right after it. Keys:
    `caption_key(text)`, or with an id column `<id>` for the first caption column, `<id>:<column>` for the others,
    and `:short` appended for a derived short caption. Empty (or whitespace-only) captions are left out.
    """

    def __init__(self, dataset, caption_columns: Sequence[str], id_column: str | None, derive_short: bool, source: str):
        self.dataset, self.caption_columns, self.id_column = dataset, list(caption_columns), id_column
        self.derive_short, self.source = derive_short, source
        self._length: int | None = None

    def __iter__(self) -> Iterator[tuple[str, str]]:
        columns = list(self.caption_columns)
        if self.id_column and self.id_column not in columns:
            columns.append(self.id_column)
        row = 0
        for batch in self.dataset.select_columns(columns).iter(batch_size=1000):
            for i in range(len(batch[columns[0]])):
                row_id = None
                if self.id_column:
                    row_id = batch[self.id_column][i]
                    if row_id is None or (isinstance(row_id, str) and not row_id.strip()):
                        raise DataError(f"{self.source}: row {row} has no `{self.id_column}` id.")
                    row_id = str(row_id)
                for position, column in enumerate(self.caption_columns):
                    text = batch[column][i]
                    if text is None:
                        continue
                    if not isinstance(text, str):
                        raise DataError(
                            f"{self.source}: row {row}, column `{column}` holds {type(text).__name__}, not text."
                        )
                    if not text.strip():
                        continue
                    key = None if row_id is None else (row_id if position == 0 else f"{row_id}:{column}")
                    yield (key or caption_key(text)), text
                    if self.derive_short:
                        short = short_caption_of(text.strip())
                        if short.strip():
                            yield (f"{key}:short" if key else caption_key(short)), short
                row += 1

    def __len__(self) -> int:
        if self._length is None:
            self._length = sum(1 for _ in self)
        return self._length


def iter_captions(
    path: str | Path,
    caption_columns: Sequence[str] = ("caption",),
    id_column: str | None = None,
    derive_short: bool = False,
) -> CaptionSource:
    """(key, text) pairs of a caption file or saved dataset; see `CaptionSource` for the order and the keys."""
    if isinstance(caption_columns, str):
        caption_columns = [caption_columns]
    caption_columns = list(dict.fromkeys(caption_columns))
    if not caption_columns:
        raise DataError("name at least one caption column.")
    dataset = load_caption_table(path)
    names = list(dataset.column_names or [])
    for column, option in [*((c, "--caption-column") for c in caption_columns), (id_column, "--id-column")]:
        if column is not None and column not in names:
            raise DataError(f"{path}: no column `{column}` (columns: {names}); choose one with {option}.")
    return CaptionSource(dataset, caption_columns, id_column, derive_short, str(path))


# -- command line -----------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="longclip-extract-text-features",
        description="Run the LLM text tower of an LLM2CLIP / ProCLIP model over a caption set and cache the pooled "
        "embeddings (sharded safetensors + index.json). Rerunning the same command resumes an interrupted run.",
    )
    parser.add_argument("--model", required=True, help="saved LLM2CLIP / ProCLIP folder (AutoModel + AutoProcessor)")
    parser.add_argument("--captions", required=True, help="JSON lines / JSON / CSV / TSV / Parquet, or a save_to_disk folder")
    parser.add_argument("--output", required=True, help="cache folder (created; resumed when it holds this model's cache)")
    parser.add_argument("--caption-column", action="append", dest="caption_columns",
                        help="column with captions; repeat for several (default: caption)")  # fmt: skip
    parser.add_argument("--id-column", help="column with caption ids to use as keys (default: SHA-1 of the caption)")
    parser.add_argument("--derive-short-captions", action="store_true",
                        help="also encode each caption's short caption (the text before its first '. ')")  # fmt: skip
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--shard-size", type=int, default=10_000, help="captions per shard (default: %(default)s)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    parser.add_argument("--dtype", choices=("auto", *DTYPES), default="auto",
                        help="text tower dtype (auto: bfloat16 on CUDA, float32 on CPU)")  # fmt: skip
    parser.add_argument("--storage-dtype", choices=tuple(DTYPES), default="float32", help="dtype of the stored rows")
    parser.add_argument("--overwrite", action="store_true", help="replace a cache already in --output")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def load_model(model_dir: Path, device: str, dtype: torch.dtype, progress: bool = True):
    """AutoModel + AutoProcessor (remote code) in eval mode, the text tower on `device`, in `dtype`."""
    from transformers import AutoModel, AutoProcessor
    from transformers.utils import logging as transformers_logging

    bars = transformers_logging.is_progress_bar_enabled()
    if not progress:
        transformers_logging.disable_progress_bar()
    try:
        model = AutoModel.from_pretrained(str(model_dir), trust_remote_code=True, dtype=dtype)
        processor = AutoProcessor.from_pretrained(str(model_dir), trust_remote_code=True)
    except (OSError, ValueError) as error:  # unreadable weights, unknown model type, missing tokenizer: one line
        raise DataError(f"{model_dir}: cannot load the model or its processor ({error}).") from None
    finally:
        if bars:
            transformers_logging.enable_progress_bar()
    if not hasattr(model, "encode_llm"):
        raise DataError(f"{model_dir}: a {type(model).__name__} has no encode_llm; the cache is for LLM2CLIP / ProCLIP.")
    model.eval()
    _text_tower(model).to(device)  # only the text tower runs: the image tower stays where it was loaded
    return model, processor


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.batch_size < 1 or args.shard_size < 1:
            raise DataError("--batch-size and --shard-size must be at least 1.")
        model_dir = Path(args.model).expanduser()
        if not (model_dir / "config.json").is_file():
            raise DataError(f"{model_dir}: not a saved model folder (no config.json).")
        output = Path(args.output).expanduser()
        if output.exists() and not output.is_dir():
            raise DataError(f"{output} exists and is not a folder.")
        # Before the model: a wrong path or column fails in a second, not after loading the weights.
        columns = args.caption_columns or ["caption"]
        captions = iter_captions(args.captions, columns, args.id_column, args.derive_short_captions)
        device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        if torch.device(device).type == "cuda" and not torch.cuda.is_available():
            raise DataError(f"--device {device}: CUDA is not available on this machine.")
        if args.dtype == "auto":
            dtype = torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
        else:
            dtype = DTYPES[args.dtype]
        if output.is_dir() and not args.overwrite:
            _read_index(output)  # an unreadable index fails before the weights are loaded
        model, processor = load_model(model_dir, device, dtype, progress=not args.no_progress)
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
    except (DataError, FeatureCacheError, FileNotFoundError, NotADirectoryError, PermissionError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except torch.cuda.OutOfMemoryError:  # torch.OutOfMemoryError on torch >= 2.5 is the same class
        print(
            f"error: out of memory at --batch-size {args.batch_size}; lower it and run the same command again "
            "(finished shards are kept).",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print("interrupted: every finished shard is kept; run the same command again to resume.", file=sys.stderr)
        return 130
    print(
        f"encoded {stats.encoded} captions, skipped {stats.cached} already cached and {stats.duplicates} repeated; "
        f"{stats.total} captions in {len(_read_index(output)['shards'])} shards at {output}"
    )
    return 0


__all__ = [
    "CaptionSource",
    "ExtractionStats",
    "FeatureCacheError",
    "TextFeatureCache",
    "caption_key",
    "extract_text_features",
    "fingerprint_differences",
    "iter_captions",
    "load_caption_table",
    "main",
    "model_fingerprint",
    "run_extraction",
    "text_weights_hash",
]


if __name__ == "__main__":
    sys.exit(main())

