"""Which model an index was built with: a fingerprint of the model folder's content, not of its path.

An index is only meaningful with the model that embedded its photos, and the check runs on every query, so it must
cost milliseconds even for a multi-GB model. The fingerprint is a SHA-256 over the folder's top-level files that
decide an embedding:

- weight files (`*.safetensors`, `*.bin`, `*.pt`, `*.pth`, `*.ckpt`, `*.gguf`): name, size, the whole safetensors
  header (every tensor's name, dtype, shape and offsets) and 16 samples of 4 KiB spread evenly over the file, so a
  retrained, re-converted or truncated weight file changes it without reading gigabytes;
- every other configuration, processor, tokenizer and remote-code file (`*.json`, `*.txt`, `*.model`, `*.tiktoken`,
  `*.py`), hashed in full: config.json, preprocessor_config.json, processor_config.json, tokenizer files, the
  payload code.

Not covered, on purpose: documentation (README.md, model cards), the sentence-transformers description files
(modules.json, config_sentence_transformers.json, sentence_bert_config.json and the module subfolders), exports in
subfolders (onnx/), and the path: a copied or moved folder is the same model, and adding an export to a folder does
not orphan its indexes. A change to two weight values that no sample touches goes unnoticed; a different model of
the same shapes does not (every sample of a different checkpoint differs). Results are memoized per process by each
file's (size, mtime_ns, inode).
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

from ..common.loading import check_model_folder

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf")
HASHED_SUFFIXES = (".json", ".txt", ".model", ".tiktoken", ".py")
NOT_THE_MODEL = frozenset({"modules.json", "config_sentence_transformers.json", "sentence_bert_config.json"})
SAMPLES, SAMPLE_BYTES = 16, 4096
MAX_SAFETENSORS_HEADER = 100 << 20  # the format's own limit on the header size

_memo: dict[tuple, str] = {}


def _safetensors_header(handle, size: int) -> bytes:
    if size < 8:
        return b""
    handle.seek(0)
    (length,) = struct.unpack("<Q", handle.read(8))
    return handle.read(length) if 0 < length <= min(MAX_SAFETENSORS_HEADER, size - 8) else b""


def file_digest(path: Path) -> str:
    """SHA-256 of one file as described in the module docstring (header + samples for weights, else everything)."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino)
    if key in _memo:
        return _memo[key]
    digest = hashlib.sha256(f"{path.name}\0{stat.st_size}\0".encode())
    with open(path, "rb") as handle:
        if path.suffix in WEIGHT_SUFFIXES:
            if path.suffix == ".safetensors":
                digest.update(_safetensors_header(handle, stat.st_size))
            step = max(stat.st_size // SAMPLES, 1)
            for offset in range(0, stat.st_size, step):
                handle.seek(offset)
                digest.update(handle.read(SAMPLE_BYTES))
        else:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    _memo[key] = digest.hexdigest()
    return _memo[key]


def fingerprinted_files(model_dir: Path) -> list[Path]:
    """The top-level files the fingerprint covers, in name order."""
    return sorted(
        path
        for path in model_dir.iterdir()
        if path.is_file()
        and path.name not in NOT_THE_MODEL
        and not path.name.startswith(".")
        and path.suffix in WEIGHT_SUFFIXES + HASHED_SUFFIXES
    )


def model_fingerprint(model_dir: str | Path) -> str:
    """`sha256:<hex>` of the model folder's content (see the module docstring); a bad folder is refused in one line."""
    model_dir = check_model_folder(model_dir)
    digest = hashlib.sha256()
    for path in fingerprinted_files(model_dir):
        digest.update(f"{path.name}\0{file_digest(path)}\n".encode())
    return f"sha256:{digest.hexdigest()}"


def clear_memo() -> None:
    """Forget memoized file digests (tests that rewrite a file within one mtime tick)."""
    _memo.clear()


def describe(fingerprint: str) -> str:
    """A short form for messages."""
    return fingerprint.split(":", 1)[-1][:12]


__all__ = ["clear_memo", "describe", "file_digest", "fingerprinted_files", "model_fingerprint"]
