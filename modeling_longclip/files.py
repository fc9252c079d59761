"""File writing shared by the caches, the feature store and the reports (not part of the Hub payload)."""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

TEMP_SUFFIX = ".tmp"


def current_umask() -> int:
    """The process umask. Linux reports it in /proc without changing it; elsewhere it is set and restored at once."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def new_file_mode(path: str | Path) -> int:
    """The mode `open(path, "w")` would leave: an existing file keeps its own, a new one gets 0o666 minus the umask."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return 0o666 & ~current_umask()


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """`write(temporary_path)` beside `path`, flushed to disk, then one rename.

    Readers (and a run that was killed halfway) see the old file or the new one, never half of one. The temporary
    file is named `.<name>.<random>.tmp`, so leftovers of a killed run are easy to recognise. mkstemp creates it
    0600; the finished file gets the mode a plain `open()` would give it (reports stay readable by others).
    """
    path = Path(path)
    mode = new_file_mode(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    os.close(handle)
    try:
        write(temporary)
        os.chmod(temporary, mode)
        with open(temporary, "rb") as written:
            os.fsync(written.fileno())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


__all__ = ["TEMP_SUFFIX", "atomic_write", "current_umask", "new_file_mode"]
