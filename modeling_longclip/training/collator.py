"""Turn rows of (image reference, captions) into model inputs inside the DataLoader workers.

Decoding happens here, lazily, so a broken row costs one skipped example instead of a crashed run; the batch
carries the per-reason skip counts to the trainer, which adds them to its logs.
"""

from __future__ import annotations

import io
import itertools
import random
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError

from .data import short_caption_of

SKIP_REASONS = ("missing_image", "corrupt_image", "empty_caption")


def open_image(reference, image_root: str | Path | None = None) -> Image.Image:
    """A decoded RGB image from a path (relative to `image_root`), a `{"path", "bytes"}` dict or a PIL image."""
    if isinstance(reference, Image.Image):
        return reference.convert("RGB")
    if isinstance(reference, dict):
        if reference.get("bytes"):
            return Image.open(io.BytesIO(reference["bytes"])).convert("RGB")
        reference = reference.get("path")
    if not reference:
        raise FileNotFoundError("row has no image")
    path = Path(image_root) / reference if image_root and not Path(reference).is_absolute() else Path(reference)
    with Image.open(path) as image:
        return image.convert("RGB")


class ImageCaptionCollator:
    """Decodes images, derives short captions and tokenizes; broken rows are skipped and counted.

    short_captions: "pair" gives Long-CLIP's (long, short) pair per image; "random" (LLM2CLIP / ProCLIP recipe)
    picks one of the two per sample as the only caption; "none" uses the long caption alone.
    """

    def __init__(self, processor, image_root=None, short_captions: str = "pair", seed: int = 0):
        if short_captions not in ("pair", "random", "none"):
            raise ValueError(f"short_captions must be 'pair', 'random' or 'none', got {short_captions!r}")
        self.processor, self.image_root, self.short_captions = processor, image_root, short_captions
        self.seed, self.rng, self._rng_worker = seed, random.Random(seed), None
        self._last_good = None  # refills a batch whose every row was broken, so no process ever sees an empty one

    def set_fallback(self, rows, max_rows: int = 100) -> None:
        """Decode one usable row of `rows` now, so that an all-broken batch in any worker can be refilled.

        Each DataLoader worker starts from a copy of this collator, so a refill row learned in one worker is not seen
        by the others; this one travels with every copy.
        """
        for row in itertools.islice(iter(rows), max_rows):
            caption = (row.get("caption") or "").strip()
            try:
                image = open_image(row.get("image"), self.image_root) if caption else None
            except (OSError, ValueError, SyntaxError):
                continue
            if image is not None:
                self._last_good = ([image], [caption], [(row.get("short_caption") or "").strip() or short_caption_of(caption)])
                return
        raise ValueError(f"none of the first {max_rows} rows has a readable image and a caption; check the data paths.")

    def _worker_rng(self) -> random.Random:
        # Workers inherit copies of one generator: reseed each from its own DataLoader seed (new every epoch).
        info = torch.utils.data.get_worker_info()
        if info is not None and self._rng_worker != (info.id, info.seed):
            self._rng_worker, self.rng = (info.id, info.seed), random.Random(info.seed + self.seed)
        return self.rng

    def __call__(self, rows: list[dict]) -> dict:
        skipped = dict.fromkeys(SKIP_REASONS, 0)
        images, captions, shorts = [], [], []
        for row in rows:
            caption = (row.get("caption") or "").strip()
            if not caption:
                skipped["empty_caption"] += 1
                continue
            try:
                image = open_image(row.get("image"), self.image_root)
            except FileNotFoundError:
                skipped["missing_image"] += 1
                continue
            except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
                skipped["corrupt_image"] += 1
                continue
            short = (row.get("short_caption") or "").strip() or short_caption_of(caption)
            images.append(image)
            captions.append(caption)
            shorts.append(short)
        if not images:
            if self._last_good is None:
                raise ValueError(
                    f"every row of a worker's first batch is unusable ({skipped}) and no refill row was set "
                    "(ImageCaptionCollator.set_fallback); check the data paths."
                )
            images, captions, shorts = self._last_good
        self._last_good = (images[:1], captions[:1], shorts[:1])
        if self.short_captions == "random":
            rng = self._worker_rng()
            captions = [rng.choice(pair) for pair in zip(captions, shorts)]
        batch = dict(self.processor(text=captions, images=images, return_tensors="pt"))
        if self.short_captions == "pair":
            short = self.processor(text=shorts, return_tensors="pt")
            batch["short_input_ids"] = short["input_ids"]
            batch["short_attention_mask"] = short["attention_mask"]
        batch["skipped"] = torch.tensor([skipped[r] for r in SKIP_REASONS])
        return batch
