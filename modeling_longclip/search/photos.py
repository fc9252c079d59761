"""Finding and decoding the photos of a folder tree the way a photo viewer shows them.

- Suffixes `.jpg .jpeg .png .webp .bmp .tif .tiff .gif`, in any case; names starting with "." (hidden files and
  folders, `.thumbnails`, editors' caches) and the index folder itself (when it lies inside the photos) are left out.
- Symbolic links are followed, to files and to folders; each real folder is walked once, so a link loop or two links
  to one folder cost nothing. A photo reached through a link is indexed under the path it was found at.
- Decoding applies the EXIF orientation (`PIL.ImageOps.exif_transpose`), takes the first frame of a GIF (or of a
  multi-page TIFF), and converts to RGB; anything PIL cannot decode raises one of `UNREADABLE`.
"""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image, ImageOps

from ..common.images import DECODE_ERRORS
from .storage import Record, SearchIndexError

PHOTO_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"})
UNREADABLE = (*DECODE_ERRORS, Image.DecompressionBombError, MemoryError)


def load_photo(path: str | Path) -> Image.Image:
    """The photo as a viewer shows it: EXIF orientation applied, first frame, RGB."""
    with Image.open(path) as image:
        image.seek(0)
        return ImageOps.exif_transpose(image).convert("RGB")


def find_photos(root: Path, exclude: Path | None = None) -> tuple[list[Record], list[str]]:
    """(every photo under `root` as a Record with its path relative to `root`, sorted; the problems met: unreadable
    folders and broken links, one line each)."""
    root = root.resolve()
    visited = {os.path.realpath(root)}
    excluded = os.path.realpath(exclude) if exclude is not None else None
    found, problems = [], []

    def note(error: OSError) -> None:
        problems.append(f"{error.filename}: {error.strerror}")

    for folder, subfolders, files in os.walk(root, followlinks=True, onerror=note):
        keep = []
        for name in sorted(subfolders):
            real = os.path.realpath(os.path.join(folder, name))
            if name.startswith(".") or real in visited or real == excluded:
                continue
            visited.add(real)
            keep.append(name)
        subfolders[:] = keep
        for name in files:
            if name.startswith(".") or os.path.splitext(name)[1].lower() not in PHOTO_SUFFIXES:
                continue
            full = os.path.join(folder, name)
            try:
                full.encode("utf-8")
            except UnicodeEncodeError:  # bytes that are not UTF-8 in the name: the catalog stores text
                problems.append(f"{full.encode('utf-8', 'backslashreplace').decode()}: name is not valid UTF-8")
                continue
            try:
                stat = os.stat(full)
            except OSError as error:
                problems.append(f"{full}: {error.strerror}")
                continue
            relative = Path(os.path.relpath(full, root)).as_posix()
            found.append(Record(relative, stat.st_size, stat.st_mtime_ns))
    found.sort(key=lambda record: record.path)
    return found, problems


def check_photos_dir(photos_dir: str | Path) -> Path:
    photos = Path(photos_dir).expanduser()
    if not photos.exists():
        raise SearchIndexError(f"{photos}: no such photos folder.")
    if not photos.is_dir():
        raise SearchIndexError(f"{photos}: not a folder.")
    return photos.resolve()


def no_photos_message(photos: Path) -> str:
    return (
        f"{photos}: no images found ({' '.join(sorted(s[1:] for s in PHOTO_SUFFIXES))}, any case, in any subfolder)."
    )


__all__ = ["PHOTO_SUFFIXES", "UNREADABLE", "check_photos_dir", "find_photos", "load_photo", "no_photos_message"]
