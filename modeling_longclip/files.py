"""File writing shared by the caches, the feature store and the reports (not part of the Hub payload)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

TEMP_SUFFIX = ".tmp"


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """`write(temporary_path)` beside `path`, flushed to disk, then one rename.

    Readers (and a run that was killed halfway) see the old file or the new one, never half of one. The temporary
    file is named `.<name>.<random>.tmp`, so leftovers of a killed run are easy to recognise.
    """
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    os.close(handle)
    try:
        write(temporary)
        with open(temporary, "rb") as written:
            os.fsync(written.fileno())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


__all__ = ["TEMP_SUFFIX", "atomic_write"]
