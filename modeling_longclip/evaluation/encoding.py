"""Batched encoding of benchmark files for any dual encoder, with an on-disk embedding cache.

`embed.embed_texts` / `embed.embed_images` return L2-normalized float32 rows for this package's families (their own
`encode_text` / `encode_image`) and for any other transformers dual encoder (CLIPModel, SiglipModel, ...), so this is
the only place that turns benchmark files into embeddings. Images are decoded a batch at a time (the next batch in
background threads while the current one is encoded), so memory does not grow with the benchmark.

The cache stores one safetensors file per (model, data, settings). The key covers:
- the model: the folder's config.json, processor / tokenizer files and code by content, weight files by name, size
  and mtime (hashing gigabytes of weights on every run would cost more than it saves); a model not loaded from a
  folder is fingerprinted by its config and the bytes of its state dict;
- the data: each image's resolved path, size and mtime, or the exact list of texts;
- the settings: model dtype, device type, processor kwargs (e.g. `long_text`), the processor's own configuration and
  how inputs reach the model (`embed.encoder_signature`: the padding and length used for a foreign model).
Batch size is not part of the key: pooled features do not depend on padding, so it changes only float rounding.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import UnidentifiedImageError
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

from ..common.files import atomic_write
from ..common.images import open_image
from ..processing_longclip import LongTextTruncationWarning
from .benchmarks import BenchmarkError
from .embed import embed_images, embed_texts, encoder_signature, text_limit

DEFAULT_CACHE_DIR = Path("~/.cache/modeling_longclip/eval")
CACHE_FORMAT = 1
WEIGHT_SUFFIXES = frozenset({".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".gguf", ".npz"})
HASHED_FILE_LIMIT = 64 << 20  # non-weight files larger than this are fingerprinted by stat, like weights
TEXT_BATCHES_PER_CALL = 16  # texts handed to encode_text at once: room to sort by length, and a lively progress bar


def _sha256(*parts: str | bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode("utf-8") if isinstance(part, str) else part)
        digest.update(b"\0")
    return digest.hexdigest()


def folder_fingerprint(folder: str | Path) -> str:
    """Fingerprint of a saved model folder's top-level files (model cards and hidden files excluded)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such model folder")
    digest = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.name.startswith(".") or path.suffix.lower() == ".md":
            continue
        stat = path.stat()
        if path.suffix.lower() in WEIGHT_SUFFIXES or stat.st_size > HASHED_FILE_LIMIT:
            entry = f"{path.name}\tstat\t{stat.st_size}\t{stat.st_mtime_ns}"
        else:
            entry = f"{path.name}\tsha256\t{hashlib.sha256(path.read_bytes()).hexdigest()}"
        digest.update(entry.encode("utf-8") + b"\n")
    return digest.hexdigest()


def state_dict_fingerprint(model) -> str:
    """Fingerprint of an in-memory model: its config and every parameter / buffer byte."""
    if not hasattr(model, "state_dict"):
        raise ValueError(
            f"cannot fingerprint a {type(model).__name__} for the embedding cache: pass model_dir= or a fingerprint."
        )
    digest = hashlib.sha256()
    config = getattr(model, "config", None)
    digest.update(config.to_json_string().encode("utf-8") if hasattr(config, "to_json_string") else b"")
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}\t{tensor.dtype}\t{tuple(tensor.shape)}\n".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def model_fingerprint(model=None, model_dir: str | Path | None = None) -> str:
    """The model part of the cache key: its folder (given, or the one it was loaded from) or else its weights."""
    if model_dir is None:
        name = getattr(model, "name_or_path", None)
        model_dir = name if name and Path(name).is_dir() else None
    if model_dir is not None:
        return "folder:" + folder_fingerprint(model_dir)
    return "weights:" + state_dict_fingerprint(model)


def images_fingerprint(paths) -> str:
    """Resolved path, size and mtime of every image: replacing or touching one changes it."""
    lines = []
    for path in paths:
        path = Path(path)
        try:
            stat = path.stat()
        except FileNotFoundError:
            raise BenchmarkError(f"{path}: image does not exist.") from None
        lines.append(f"{path.resolve()}\t{stat.st_size}\t{stat.st_mtime_ns}")
    return _sha256("\n".join(lines))


def texts_fingerprint(texts) -> str:
    return _sha256(json.dumps(list(texts), ensure_ascii=False))


def processor_signature(processor) -> str:
    """What the processor would do to inputs, for processors passed in memory (the folder covers saved ones)."""
    parts = [type(processor).__name__]
    to_json = getattr(processor, "to_json_string", None)
    if callable(to_json):
        parts.append(to_json())
    tokenizer = getattr(processor, "tokenizer", None)
    if tokenizer is not None:
        parts += [type(tokenizer).__name__, str(getattr(tokenizer, "model_max_length", "")), str(len(tokenizer))]
    return _sha256(*parts)


class EmbeddingCache:
    """Embeddings on disk, one safetensors file per (model fingerprint, kind, data fingerprint, settings)."""

    def __init__(self, directory: str | Path | None = None, model_fingerprint: str = ""):
        if not model_fingerprint:
            raise ValueError("EmbeddingCache needs a model fingerprint (see model_fingerprint()).")
        self.directory = Path(directory or DEFAULT_CACHE_DIR).expanduser()
        self.model_fingerprint = model_fingerprint

    @classmethod
    def for_model(cls, model, directory: str | Path | None = None, model_dir: str | Path | None = None):
        return cls(directory, model_fingerprint(model, model_dir))

    def key(self, kind: str, data_fingerprint: str, settings: dict) -> str:
        payload = {"format": CACHE_FORMAT, "model": self.model_fingerprint, "kind": kind, "data": data_fingerprint}
        return _sha256(json.dumps({**payload, "settings": settings}, sort_keys=True, default=str))

    def path(self, kind: str, key: str) -> Path:
        return self.directory / f"{kind}-{key[:40]}.safetensors"

    def load(self, kind: str, key: str, count: int) -> tuple[torch.Tensor, dict] | None:
        """The cached embeddings, or None when absent, unreadable or not what the key promises."""
        path = self.path(kind, key)
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
                embeddings = handle.get_tensor("embeddings")
        except Exception:  # noqa: BLE001 - a truncated or foreign file is a miss; it is overwritten below
            return None
        if metadata.get("key") != key or embeddings.shape[0] != count:
            return None
        return embeddings, metadata

    def save(self, kind: str, key: str, embeddings: torch.Tensor, metadata: dict) -> Path:
        """Written to a temporary file and renamed, so a killed run never leaves a half-written entry."""
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.path(kind, key)
        fields = {str(k): str(v) for k, v in metadata.items()}
        tensors = {"embeddings": embeddings.detach().to("cpu").contiguous()}
        atomic_write(path, lambda temporary: save_file(tensors, temporary, {**fields, "key": key}))
        return path


@dataclass
class Encoded:
    """Embeddings [n, dim] (float32, CPU) and where they came from: "hit", "miss" (encoded, then stored) or "off"."""

    embeddings: torch.Tensor
    cache: str
    too_long: int | None = None  # texts only: how many exceed the tokenizer's limit


def _device_and_dtype(model) -> dict:
    device = getattr(model, "device", None)
    return {"device": getattr(device, "type", str(device)), "dtype": str(getattr(model, "dtype", None))}


def count_long_texts(processor, texts, batch: int = 1024, model=None) -> int | None:
    """How many texts have more tokens (special tokens included) than the model's limit (`embed.text_limit`); None if
    unknown."""
    limit = text_limit(processor, model)
    if limit is None:
        return None
    tokenizer, count = processor.tokenizer, 0
    for start in range(0, len(texts), batch):
        ids = tokenizer(list(texts[start : start + batch]), verbose=False)["input_ids"]
        count += sum(len(sequence) > limit for sequence in ids)
    return count


def _truncation_warnings(processor) -> tuple[type, ...]:
    """The truncation warning of this package and of the processor's own module (a remote-code copy is a new class)."""
    classes = {LongTextTruncationWarning}
    module = sys.modules.get(type(processor).__module__)
    own = getattr(module, "LongTextTruncationWarning", None)
    if isinstance(own, type) and issubclass(own, Warning):
        classes.add(own)
    return tuple(classes)


def _load_image(path: Path):
    try:
        return open_image(path)
    except FileNotFoundError:
        raise BenchmarkError(f"{path}: image does not exist.") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        raise BenchmarkError(f"{path}: cannot decode the image ({type(error).__name__}: {error}).") from None


def encode_images(
    model,
    processor,
    paths,
    *,
    batch_size: int = 64,
    cache: EmbeddingCache | None = None,
    progress: bool = True,
    workers: int | None = None,
) -> Encoded:
    """Image embeddings for `paths` in order, from the cache when the model, the files and the settings match."""
    paths = [Path(p) for p in paths]
    settings = {
        **_device_and_dtype(model),
        "processor": processor_signature(processor),
        **encoder_signature(model, processor),
    }
    key = cache.key("image", images_fingerprint(paths), settings) if cache else None
    if cache and (hit := cache.load("image", key, len(paths))) is not None:
        return Encoded(hit[0], "hit")
    workers = workers or min(8, os.cpu_count() or 1)
    batches = [paths[start : start + batch_size] for start in range(0, len(paths), batch_size)]
    chunks = []
    with (
        ThreadPoolExecutor(workers) as pool,
        tqdm(total=len(paths), desc="encoding images", unit="img", disable=not progress) as bar,
    ):
        pending = pool.map(_load_image, batches[0]) if batches else None
        for index in range(len(batches)):
            images = list(pending)
            if index + 1 < len(batches):  # decode the next batch while this one is encoded
                pending = pool.map(_load_image, batches[index + 1])
            chunks.append(embed_images(model, processor, images, batch_size=batch_size).float().cpu())
            bar.update(len(images))
    embeddings = torch.cat(chunks) if chunks else torch.zeros(0, 0)
    if cache:
        cache.save("image", key, embeddings, {"count": len(paths)})
    return Encoded(embeddings, "miss" if cache else "off")


def encode_texts(
    model,
    processor,
    texts,
    *,
    batch_size: int = 64,
    cache: EmbeddingCache | None = None,
    progress: bool = True,
    text_kwargs: dict | None = None,
) -> Encoded:
    """Text embeddings in order, plus how many texts exceed the model's limit (counted here, not warned about)."""
    texts = list(texts)
    text_kwargs = dict(text_kwargs or {})
    settings = {
        **_device_and_dtype(model),
        "processor": processor_signature(processor),
        "text_kwargs": text_kwargs,
        **encoder_signature(model, processor),
    }
    key = cache.key("text", texts_fingerprint(texts), settings) if cache else None
    if cache and (hit := cache.load("text", key, len(texts))) is not None:
        too_long = hit[1].get("too_long", "")
        counted = int(too_long) if too_long.isdigit() else count_long_texts(processor, texts, model=model)
        return Encoded(hit[0], "hit", counted)
    too_long = count_long_texts(processor, texts, model=model)
    chunks = []
    with (
        warnings.catch_warnings(),
        tqdm(total=len(texts), desc="encoding texts", unit="text", disable=not progress) as bar,
    ):
        for category in _truncation_warnings(processor):
            warnings.simplefilter("ignore", category)
        chunk = batch_size * TEXT_BATCHES_PER_CALL  # each chunk is sorted by length before it is batched
        for start in range(0, len(texts), chunk):
            batch = texts[start : start + chunk]
            embeds = embed_texts(model, processor, batch, batch_size=batch_size, **text_kwargs)
            chunks.append(embeds.float().cpu())
            bar.update(len(batch))
    embeddings = torch.cat(chunks) if chunks else torch.zeros(0, 0)
    if cache:
        cache.save("text", key, embeddings, {"count": len(texts), "too_long": "" if too_long is None else too_long})
    return Encoded(embeddings, "miss" if cache else "off", too_long)


__all__ = [
    "DEFAULT_CACHE_DIR",
    "EmbeddingCache",
    "Encoded",
    "count_long_texts",
    "encode_images",
    "encode_texts",
    "folder_fingerprint",
    "images_fingerprint",
    "model_fingerprint",
    "processor_signature",
    "state_dict_fingerprint",
    "text_limit",
    "texts_fingerprint",
]
