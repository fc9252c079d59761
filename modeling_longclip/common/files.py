"""Writing files and folders so that a reader (or a run that was killed halfway) sees the old version or the new one,
never half of one: used by every room that writes (caches, feature store, reports, model folders, exports, indexes)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

from .errors import ConversionError

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


def ensure_writable(output: str | Path, overwrite: bool) -> Path:
    """Refuse early, before any work, to replace an existing non-empty folder without `overwrite`."""
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise ConversionError(f"{output} exists and is not a folder.")
    if output.is_dir() and any(output.iterdir()) and not overwrite:
        raise ConversionError(f"{output} already exists and is not empty; pass --overwrite to replace it.")
    return output


STAGING_MARK = ".tmp-"
SET_ASIDE_MARK = ".old-"


_TAG = re.compile(r"^(?:(\d+)-)?[0-9a-f]{8}$")  # `<pid>-<hex>`, or `<hex>` alone as named before the pid was added


def _abandoned(tail: str) -> bool:
    """Whether a staging folder named `.NAME.tmp-<tail>` belongs to no running process on this machine: its pid is
    gone, or it was named before the pid was part of the name. A tail of another form is not one of ours."""
    match = _TAG.match(tail)
    if match is None:
        return False
    if match.group(1) is None:
        return True
    pid = int(match.group(1))
    if pid == os.getpid() or os.name == "nt":  # Windows' os.kill(pid, 0) would terminate the process
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # PermissionError: another user's process holds that pid, so it is alive
        return False
    return False


def remove_stale_staging(output: str | Path) -> list[Path]:
    """Remove the staging folders of `output` that a killed run left behind (SIGKILL, power loss, an older version),
    and set-aside copies of a replaced `output` once the new one is in place. A run still in progress (its pid is
    alive) keeps its own. Returns what was removed."""
    output = Path(output)
    if not output.parent.is_dir():
        return []
    removed = []
    for path in output.parent.iterdir():
        for mark in (STAGING_MARK, SET_ASIDE_MARK):
            prefix = f".{output.name}{mark}"
            if not path.name.startswith(prefix) or not path.is_dir():
                continue
            if mark == SET_ASIDE_MARK and not output.is_dir():
                continue  # the only copy of the previous folder: a user may still want it back
            if _abandoned(path.name[len(prefix) :]):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
    return removed


@contextlib.contextmanager
def atomic_folder(output: str | Path, overwrite: bool = False):
    """Yield a temporary sibling folder; on success it replaces `output` in one rename, on failure (an exception,
    Ctrl-C, or SIGTERM under common/cli.py's rule) it vanishes. Staging folders that killed runs left for the same
    `output` are removed first."""
    output = ensure_writable(output, overwrite)
    output.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(output)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    staging = output.parent / f".{output.name}{STAGING_MARK}{tag}"
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    old = output.parent / f".{output.name}{SET_ASIDE_MARK}{tag}"
    if output.exists():
        output.rename(old)
    staging.rename(output)
    shutil.rmtree(old, ignore_errors=True)


__all__ = [
    "TEMP_SUFFIX",
    "atomic_folder",
    "atomic_write",
    "current_umask",
    "ensure_writable",
    "new_file_mode",
    "remove_stale_staging",
]
