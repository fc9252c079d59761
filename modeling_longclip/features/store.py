"""The text-feature store: sharded safetensors rows plus one `index.json` mapping caption keys to rows.

Layout of a cache folder:

- `shard-00000.safetensors`, `shard-00001.safetensors`, ...: one tensor `embeds` [rows, dim] each (float32 unless
  another storage dtype was asked for), rows in the order the captions arrived;
- `index.json`: `{"format": 2, "dim": D, "model": {fingerprint}, "compute_dtype": "float32", "shards": [file names],
  "keys": {key: [shard, row]}}`; `compute_dtype` is what the rows were computed in (bfloat16 rows differ from float32
  ones by ~1e-2), so a resumed run in another dtype is refused instead of mixing the two.

A caption's default key is `caption_key(text)`: SHA-1 of its exact UTF-8 text, nothing stripped. llm2vec (whose
rules the processor follows) pools leading and inner whitespace, and its token count for the word cut includes
trailing whitespace, so two captions that differ in any character may embed differently and get two rows.

Format 2 (this one) came with llm2vec's exact rules; format 1 caches keyed stripped captions and were encoded with
both ends stripped and words cut at max_length, so they are refused with a message, never reused.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors import safe_open

from ..common.errors import LongCLIPError
from ..common.files import TEMP_SUFFIX, atomic_write
from .fingerprint import describe_differences, fingerprint_differences, model_fingerprint

INDEX_NAME = "index.json"
INDEX_FORMAT = 2
TENSOR_NAME = "embeds"
SHARD_PREFIX = "shard-"
SHARD_SUFFIX = ".safetensors"


class FeatureCacheError(LongCLIPError, ValueError):
    """The cache folder belongs to another model or processor, is not a feature cache, or cannot take these rows."""


def caption_key(text: str) -> str:
    """The default key of a caption: SHA-1 (hex) of its exact UTF-8 text (see the module docstring for why)."""
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def shard_name(index: int) -> str:
    return f"{SHARD_PREFIX}{index:05d}{SHARD_SUFFIX}"


def read_index(folder: Path) -> dict | None:
    """The folder's index, None when there is none; FeatureCacheError when it is unreadable or of another format."""
    path = folder / INDEX_NAME
    if not path.is_file():
        return None
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise FeatureCacheError(f"{path}: not a readable feature-cache index ({error}).") from None
    if isinstance(index, dict) and index.get("format") == 1:
        raise FeatureCacheError(
            f"{path}: a feature cache of format 1, made before the processor followed llm2vec exactly (its captions "
            "were stripped at both ends and cut at max_length, and its keys hash stripped text), so its rows differ "
            "from what this model computes now; extract again into a new folder, or with --overwrite (overwrite=True)."
        )
    if not isinstance(index, dict) or index.get("format") != INDEX_FORMAT or not isinstance(index.get("keys"), dict):
        raise FeatureCacheError(f"{path}: not a feature-cache index of format {INDEX_FORMAT}.")
    return index


def write_index(folder: Path, index: dict) -> None:
    data = json.dumps(index, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    atomic_write(folder / INDEX_NAME, lambda temporary: Path(temporary).write_bytes(data))


def remove_leftovers(folder: Path, shards_too: bool = False) -> None:
    """Temporary files of a killed run (and, for `overwrite`, the index and every shard)."""
    for path in folder.iterdir():
        name = path.name
        ours = name.startswith((f".{SHARD_PREFIX}", f".{INDEX_NAME}.")) and name.endswith(TEMP_SUFFIX)
        if shards_too:
            ours = ours or name == INDEX_NAME or (name.startswith(SHARD_PREFIX) and name.endswith(SHARD_SUFFIX))
        if ours and path.is_file():
            path.unlink()


class TextFeatureCache:
    """Read side of a feature cache: `cache.get(keys)` / `cache.get_texts(captions)` -> float32 [n, dim].

    Shards are opened lazily with `safe_open` (memory-mapped) and only the requested rows are read. Picklable: the
    open handles stay behind and each DataLoader worker opens its own.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        index = read_index(self.folder)
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
        """`get` of the captions' default keys (`caption_key`: the exact text, nothing stripped)."""
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
                f"({describe_differences(self.fingerprint, current, differences)}); "
                "extract features again for this model."
            )


__all__ = [
    "INDEX_FORMAT",
    "INDEX_NAME",
    "FeatureCacheError",
    "TextFeatureCache",
    "caption_key",
    "read_index",
    "remove_leftovers",
    "shard_name",
    "write_index",
]
