"""How a photo index lives on disk, and the one way it changes: a chunk committed by one SQLite transaction.

```
INDEX_DIR/
  manifest.json          what the index is: format version, the model (folder path when built, its content
                         fingerprint, class), embedding size, the photos root; written once, atomically, on creation
  catalog.sqlite         the truth about what is indexed, changed only in transactions:
                           photos(path, size, mtime_ns, shard, row)   path relative to the photos root ("/"-separated)
                           shards(name, rows)                         every committed shard
                           skipped(path, size, mtime_ns, reason)      files that could not be decoded
                           state(key, value)                          generation: bumped by every change
  shards/<name>.safetensors   one tensor, "embeddings": float16 [rows, dim], L2-normalized; memory-mapped at query
  parts/                 shards and row lists written by the processes of a multi-process run, merged by the main one
  ann/                   the optional FAISS index (ann.py), tied to the generation it was built at
  lock                   held (flock) by the one process that writes
```

A chunk (up to `--chunk-size` newly embedded photos) is committed in two steps: its shard is written under a
temporary name, flushed and renamed into `shards/`; then one transaction inserts the shard and points the chunk's
rows at it (replacing the rows of changed files). A run killed before the transaction leaves at most a shard that no
row points to, which the next writer deletes; a killed transaction is rolled back by SQLite. A row whose file was
deleted or changed is dropped from `photos`, leaving a dead row in its shard; a shard whose rows are mostly dead is
rewritten (`compact`). The shard list lives in the catalog rather than the manifest so that one transaction is the
only commit point.

Size on disk: 2 x dim bytes per photo in the shards plus ~100 bytes of catalog (a 768-dim model: ~1.6 GB per
million photos; 512-dim: ~1.1 GB; 1280-dim: ~2.7 GB).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import sqlite3
import struct
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from ..common.errors import LongCLIPError
from ..common.files import TEMP_SUFFIX, atomic_write

FORMAT = "modeling_longclip.search"
VERSION = 1
MANIFEST, CATALOG, SHARDS, PARTS, LOCK = "manifest.json", "catalog.sqlite", "shards", "parts", "lock"
SCHEMA = """
CREATE TABLE photos (path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
                     shard TEXT NOT NULL, row INTEGER NOT NULL);
CREATE UNIQUE INDEX photos_location ON photos (shard, row);
CREATE TABLE shards (name TEXT PRIMARY KEY, rows INTEGER NOT NULL);
CREATE TABLE skipped (path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, reason TEXT NOT NULL);
CREATE TABLE state (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO state VALUES ('generation', 0);
"""


class SearchIndexError(LongCLIPError, ValueError):
    """An index folder that is missing, damaged, another model's, or not an index: one line naming it."""


@dataclass(frozen=True)
class Record:
    """A photo as indexed: path relative to the photos root, and the stat that says whether it changed."""

    path: str
    size: int
    mtime_ns: int


def write_json(path: Path, value) -> None:
    atomic_write(path, lambda temporary: Path(temporary).write_text(json.dumps(value, indent=2) + "\n"))


def write_shard(path: Path, embeddings: torch.Tensor) -> None:
    """`embeddings` as a float16 safetensors shard, written beside `path` and renamed into place.

    A full disk (or any error without a file name) is reported with the shard's path."""
    tensor = embeddings.detach().to("cpu", torch.float16).contiguous()
    try:
        atomic_write(path, lambda temporary: save_file({"embeddings": tensor}, temporary, metadata={"format": FORMAT}))
    except OSError as error:
        if error.filename is None:
            raise OSError(error.errno or errno.EIO, error.strerror or str(error), str(path)) from None
        raise


def map_shard(path: Path, rows: int, dim: int) -> np.ndarray:
    """The shard's embeddings as a read-only float16 memory map [rows, dim], after checking its header and size."""
    try:
        with open(path, "rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(length))
        entry = header["embeddings"]
        begin, end = entry["data_offsets"]
        ok = entry["dtype"] == "F16" and entry["shape"] == [rows, dim] and end - begin == rows * dim * 2
        ok = ok and path.stat().st_size >= 8 + length + end
    except (OSError, ValueError, KeyError, TypeError, struct.error) as error:
        raise SearchIndexError(f"{path}: damaged shard ({type(error).__name__}: {error}).") from None
    if not ok:
        raise SearchIndexError(f"{path}: damaged shard (expected float16 [{rows}, {dim}] embeddings).")
    if rows == 0:
        return np.zeros((0, dim), dtype=np.float16)
    return np.memmap(path, dtype=np.float16, mode="r", offset=8 + length + begin, shape=(rows, dim))


def new_manifest(model_path: Path, fingerprint: str, model_class: str, dim: int, photos_root: Path) -> dict:
    return {
        "format": FORMAT,
        "version": VERSION,
        "model": {"path": str(model_path.resolve()), "fingerprint": fingerprint, "class": model_class},
        "embedding_dim": dim,
        "stored_as": "float16, L2-normalized",
        "photos_root": str(photos_root.resolve()),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def read_manifest(index_dir: Path) -> dict:
    """The manifest, refused in one line when the folder is not an index or the file is damaged."""
    if index_dir.exists() and not index_dir.is_dir():
        raise SearchIndexError(f"{index_dir}: is a file, not an index folder.")
    path = index_dir / MANIFEST
    if not path.is_file():
        raise SearchIndexError(
            f"{index_dir}: not a photo index (no {MANIFEST}); build one with longclip-search index."
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        valid = (
            manifest["format"] == FORMAT
            and isinstance(manifest["embedding_dim"], int)
            and isinstance(manifest["model"]["fingerprint"], str)
            and isinstance(manifest["photos_root"], str)
        )
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise SearchIndexError(f"{path}: damaged manifest ({type(error).__name__}: {error}).") from None
    if not valid:
        raise SearchIndexError(f"{path}: damaged manifest (not a {FORMAT} manifest).")
    if manifest.get("version") != VERSION:
        raise SearchIndexError(f"{path}: index format version {manifest.get('version')}; this code reads {VERSION}.")
    return manifest


class Catalog:
    """The SQLite catalog (see the module docstring). Writers change it only through the methods below, each one
    transaction that also bumps the generation."""

    def __init__(self, path: Path, writable: bool):
        self.path = path
        if not path.is_file():
            raise SearchIndexError(f"{path}: missing catalog; the index is damaged.")
        uri = f"{path.resolve().as_uri()}?mode={'rw' if writable else 'ro'}"
        try:
            self.db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
            tables = {row[0] for row in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.Error as error:
            raise SearchIndexError(f"{path}: damaged catalog ({error}).") from None
        if not {"photos", "shards", "skipped", "state"} <= tables:
            raise SearchIndexError(f"{path}: damaged catalog (tables missing).")

    @staticmethod
    def create(path: Path) -> None:
        temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}{TEMP_SUFFIX}")
        db = sqlite3.connect(temporary)
        try:
            db.executescript(SCHEMA)
            db.commit()
        finally:
            db.close()
        os.replace(temporary, path)

    def close(self) -> None:
        self.db.close()

    @contextlib.contextmanager
    def transaction(self):
        try:
            self.db.execute("BEGIN IMMEDIATE")
            yield self.db
            self.db.execute("UPDATE state SET value = value + 1 WHERE key = 'generation'")
            self.db.execute("COMMIT")
        except BaseException as error:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            if isinstance(error, sqlite3.Error):
                raise SearchIndexError(f"{self.path}: {error}; the change was rolled back.") from None
            raise

    def query(self, sql: str, parameters: Sequence = ()) -> list[tuple]:
        try:
            return self.db.execute(sql, parameters).fetchall()
        except sqlite3.Error as error:
            raise SearchIndexError(f"{self.path}: damaged catalog ({error}).") from None

    def generation(self) -> int:
        return self.query("SELECT value FROM state WHERE key = 'generation'")[0][0]

    def count(self) -> int:
        return self.query("SELECT COUNT(*) FROM photos")[0][0]

    def records(self) -> dict[str, Record]:
        return {
            path: Record(path, size, mtime)
            for path, size, mtime in self.query("SELECT path, size, mtime_ns FROM photos")
        }

    def skipped(self) -> dict[str, tuple[Record, str]]:
        rows = self.query("SELECT path, size, mtime_ns, reason FROM skipped ORDER BY path")
        return {path: (Record(path, size, mtime), reason) for path, size, mtime, reason in rows}

    def shards(self) -> list[tuple[str, int]]:
        return self.query("SELECT name, rows FROM shards ORDER BY name")

    def live_rows(self) -> dict[str, int]:
        return dict(self.query("SELECT shard, COUNT(*) FROM photos GROUP BY shard"))

    def locations(self) -> list[tuple[str, int]]:
        return self.query("SELECT shard, row FROM photos")

    def located(self, shard: str) -> list[tuple[str, int]]:
        return self.query("SELECT path, row FROM photos WHERE shard = ? ORDER BY row", (shard,))

    def path_at(self, shard: str, row: int) -> str | None:
        found = self.query("SELECT path FROM photos WHERE shard = ? AND row = ?", (shard, row))
        return found[0][0] if found else None

    def commit_chunk(
        self, shard: str | None, records: Sequence[Record], failures: Sequence[tuple[Record, str]]
    ) -> None:
        """Point `records` at rows 0.. of the (already written) `shard` and note `failures`, in one transaction."""
        with self.transaction() as db:
            if shard is not None:
                db.execute("INSERT INTO shards VALUES (?, ?)", (shard, len(records)))
            db.executemany(
                "INSERT OR REPLACE INTO photos VALUES (?, ?, ?, ?, ?)",
                [(r.path, r.size, r.mtime_ns, shard, row) for row, r in enumerate(records)],
            )
            db.executemany("DELETE FROM skipped WHERE path = ?", [(r.path,) for r in records])
            db.executemany("DELETE FROM photos WHERE path = ?", [(r.path,) for r, _ in failures])
            db.executemany(
                "INSERT OR REPLACE INTO skipped VALUES (?, ?, ?, ?)",
                [(r.path, r.size, r.mtime_ns, reason) for r, reason in failures],
            )

    def forget(self, paths: Iterable[str]) -> None:
        """Drop rows (and skipped entries) of files that are gone."""
        paths = [(p,) for p in paths]
        if paths:
            with self.transaction() as db:
                db.executemany("DELETE FROM photos WHERE path = ?", paths)
                db.executemany("DELETE FROM skipped WHERE path = ?", paths)

    def replace_shards(self, old: Sequence[str], new: Sequence[tuple[str, Sequence[str]]]) -> None:
        """Compaction: each (shard, paths) of `new` now holds those paths at rows 0..; the `old` shards are dropped."""
        with self.transaction() as db:
            for name, paths in new:
                db.execute("INSERT INTO shards VALUES (?, ?)", (name, len(paths)))
                db.executemany(
                    "UPDATE photos SET shard = ?, row = ? WHERE path = ?", [(name, i, p) for i, p in enumerate(paths)]
                )
            db.executemany("DELETE FROM shards WHERE name = ?", [(name,) for name in old])


class WriterLock:
    """An exclusive flock on INDEX_DIR/lock: one writer at a time, refused in one line otherwise."""

    def __init__(self, index_dir: Path):
        self.handle = open(index_dir / LOCK, "a+")  # noqa: SIM115 - held for the writer's lifetime
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.close()
            raise SearchIndexError(f"{index_dir}: another process is updating this index.") from None

    def release(self) -> None:
        with contextlib.suppress(OSError):
            fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


def new_shard_name(prefix: str = "shard") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:16]}.safetensors"


__all__ = [
    "CATALOG",
    "Catalog",
    "FORMAT",
    "LOCK",
    "MANIFEST",
    "PARTS",
    "Record",
    "SHARDS",
    "SearchIndexError",
    "VERSION",
    "WriterLock",
    "map_shard",
    "new_manifest",
    "new_shard_name",
    "read_manifest",
    "write_json",
    "write_shard",
]
