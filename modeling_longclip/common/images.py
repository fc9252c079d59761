"""Opening images from the references that data tables, datasets and users hand us (paths, `{"path", "bytes"}` dicts,
PIL images): one place, so training, evaluation and search decode and name images the same way."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, UnidentifiedImageError

# What a broken or unsupported image file raises when PIL opens or decodes it.
DECODE_ERRORS = (UnidentifiedImageError, OSError, ValueError, SyntaxError)


def image_path(reference, image_root: str | Path | None = None) -> Path | None:
    """Where a path reference (or a `{"path"}` dict) points, relative to `image_root`; None for in-memory images."""
    if isinstance(reference, dict):
        reference = reference.get("path")
    if not isinstance(reference, (str, Path)) or not str(reference):
        return None
    return Path(image_root) / reference if image_root and not Path(reference).is_absolute() else Path(reference)


def describe_image(reference, image_root: str | Path | None = None) -> str:
    """How a log line or an error names an image reference."""
    path = image_path(reference, image_root)
    if isinstance(reference, dict) and reference.get("bytes"):
        return f"<{len(reference['bytes'])} bytes{f' from {path}' if path else ''}>"
    if isinstance(reference, Image.Image):
        return "<PIL image>"
    return str(path) if path else "<no image>"


def open_image(reference, image_root: str | Path | None = None) -> Image.Image:
    """A decoded RGB image from a path (relative to `image_root`), a `{"path", "bytes"}` dict or a PIL image."""
    if isinstance(reference, Image.Image):
        return reference.convert("RGB")
    if isinstance(reference, dict) and reference.get("bytes"):
        return Image.open(io.BytesIO(reference["bytes"])).convert("RGB")
    path = image_path(reference, image_root)
    if path is None:
        raise FileNotFoundError("row has no image")
    with Image.open(path) as image:
        return image.convert("RGB")


__all__ = ["DECODE_ERRORS", "describe_image", "image_path", "open_image"]
