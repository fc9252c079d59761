"""Turn rows of (image reference, captions) into model inputs inside the DataLoader workers.

Decoding happens here, lazily, so a broken row costs one skipped example instead of a crashed run; the per-reason
skip counts live in shared memory (`SkipCounts`) that the trainer adds to its logs. They travel beside the batches,
not in them: accelerate slices and pads every batch tensor along its first dimension.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import multiprocessing

from PIL import Image

from ..common.caption_data import short_caption_of
from ..common.errors import DataError
from ..common.images import DECODE_ERRORS, describe_image, open_image

logger = logging.getLogger(__name__)

SKIP_REASONS = ("missing_image", "corrupt_image", "empty_caption")
NAMED_SKIPS = 5  # the first skipped rows of a process are named in the log (reason and path); later ones only counted


class SkipCounts:
    """Running per-reason counts of skipped rows, shared by the DataLoader workers (each starts from a copy of the
    collator, so plain attributes would stay in the worker)."""

    def __init__(self):
        self._counts = multiprocessing.Array("q", len(SKIP_REASONS))
        self._named = multiprocessing.Value("q", 0)

    def name(self, reason: str, what: str) -> None:
        """Log one skipped row (reason and image) while fewer than NAMED_SKIPS were named by this process's workers."""
        with self._named.get_lock():
            if self._named.value >= NAMED_SKIPS:
                return
            self._named.value += 1
            last = self._named.value == NAMED_SKIPS
        logger.warning(
            "skipped a row: %s %s%s",
            reason.replace("_", " "),
            what,
            " (further skips are only counted)" if last else "",
        )

    def add(self, skipped: dict[str, int]) -> None:
        with self._counts.get_lock():
            for index, reason in enumerate(SKIP_REASONS):
                self._counts[index] += skipped.get(reason, 0)

    def totals(self) -> list[int]:
        with self._counts.get_lock():
            return list(self._counts)


def pick_caption(pair: tuple[str, str], seed: int, epoch: int) -> str:
    """One of (long, short), a fair coin per caption, seed and epoch.

    A hash rather than a generator: the pick does not depend on which process or DataLoader worker collates the row,
    or on how many batches a resumed run skipped, so an interrupted run continues exactly like an uninterrupted one.
    The trainer advances `epoch` on each collator (CollatorEpochCallback) so the picks change between epochs.
    """
    digest = hashlib.blake2b(f"{seed}:{epoch}:{pair[0]}".encode(), digest_size=1).digest()
    return pair[digest[0] & 1]


def load_row_image(row: dict, image_root) -> tuple[Image.Image | None, str | None]:
    """(decoded image, None) or (None, skip reason) for one row; the caption is checked first, like the collator."""
    if not (row.get("caption") or "").strip():
        return None, "empty_caption"
    try:
        return open_image(row.get("image"), image_root), None
    except FileNotFoundError:
        return None, "missing_image"
    except DECODE_ERRORS:
        return None, "corrupt_image"


class ImageCaptionCollator:
    """Decodes images, derives short captions and tokenizes; broken rows are skipped and counted.

    short_captions: "pair" gives Long-CLIP's (long, short) pair per image; "random" (LLM2CLIP / ProCLIP recipe)
    picks one of the two per sample as the only caption; "none" uses the long caption alone. See `pick_caption` for
    how the random pick stays reproducible. drop_text_masks: leave the captions' padding masks out, for a causal text
    tower pooled before the right padding (`model.text_padding_mask_optional(processor)`), so SDPA can run its causal
    kernel.
    """

    def __init__(
        self,
        processor,
        image_root=None,
        short_captions: str = "pair",
        text_features=None,
        seed: int = 0,
        drop_text_masks: bool = False,
    ):
        if short_captions not in ("pair", "random", "none"):
            raise ValueError(f"short_captions must be 'pair', 'random' or 'none', got {short_captions!r}")
        self.processor, self.image_root, self.short_captions = processor, image_root, short_captions
        self.text_features = text_features  # a TextFeatureCache: precomputed LLM embeddings instead of tokens
        self.seed, self.epoch = seed, 0
        self.drop_text_masks = drop_text_masks
        self.skips = SkipCounts()
        self._last_good = None  # refills a batch whose every row was broken, so no process ever sees an empty one

    def set_fallback(self, rows, max_rows: int = 100, source: str = "the training data") -> None:
        """Decode one usable row of `rows` now, so that an all-broken batch in any worker can be refilled.

        Each DataLoader worker starts from a copy of this collator, so a refill row learned in one worker is not seen
        by the others; this one travels with every copy. Data without any usable row among the first `max_rows` is
        refused here (a DataError naming `source` and the first failures), before training starts.
        """
        failures, tried = [], 0
        for index, row in enumerate(itertools.islice(iter(rows), max_rows)):
            tried += 1
            image, reason = load_row_image(row, self.image_root)
            if image is not None:
                caption = row["caption"]
                self._last_good = ([image], [caption], [short_caption_for(row, caption)])
                return
            if len(failures) < 3:
                what = "" if reason == "empty_caption" else " " + describe_image(row.get("image"), self.image_root)
                failures.append(f"row {index}: {reason.replace('_', ' ')}{what}")
        if not tried:
            raise DataError(f"{source}: no rows to train on.")
        raise DataError(
            f"{source}: none of the first {tried} rows has a loadable image and a caption ("
            + "; ".join(failures)
            + (f"; ... {tried - len(failures)} more" if tried > len(failures) else "")
            + f"); check --image_root{f' ({self.image_root})' if self.image_root else ''} and the image column."
        )

    def __call__(self, rows: list[dict]) -> dict:
        skipped = dict.fromkeys(SKIP_REASONS, 0)
        images, captions, shorts = [], [], []
        for row in rows:
            image, reason = load_row_image(row, self.image_root)
            if image is None:
                skipped[reason] += 1
                if reason != "empty_caption":
                    self.skips.name(reason, describe_image(row.get("image"), self.image_root))
                continue
            caption = row["caption"]
            short = short_caption_for(row, caption)
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
            captions = [pick_caption(pair, self.seed, self.epoch) for pair in zip(captions, shorts)]
        if self.text_features is not None:
            batch = dict(self.processor(images=images, return_tensors="pt"))
            batch["text_embeds"] = self.text_features.get_texts(captions)
        else:
            batch = dict(self.processor(text=captions, images=images, return_tensors="pt"))
        if self.short_captions == "pair":
            short = self.processor(text=shorts, return_tensors="pt")
            batch["short_input_ids"] = short["input_ids"]
            batch["short_attention_mask"] = short["attention_mask"]
        if self.drop_text_masks:
            batch.pop("attention_mask", None)
            batch.pop("short_attention_mask", None)
        self.skips.add(skipped)
        return batch


def short_caption_for(row: dict, caption: str, columns: tuple[str, ...] = ("short_caption",)) -> str:
    """The row's own short (or positive) caption as given, else the derived one (from the stripped caption, as the
    feature cache derives it). Captions are never stripped here: llm2vec embeds leading whitespace, so the cache
    keys on the exact text and training must look up the same text."""
    for column in columns:
        value = row.get(column) or ""
        if value.strip():
            return value
    return short_caption_of(caption.strip())


def _texts_of(rows: list[dict]) -> tuple[list[str], list[str], int]:
    """(captions, short or positive captions, number of rows skipped for an empty caption)."""
    captions, partners, empty = [], [], 0
    for row in rows:
        caption = row.get("caption") or ""
        if not caption.strip():
            empty += 1
            continue
        captions.append(caption)
        partners.append(short_caption_for(row, caption, columns=("positive", "short_caption")))
    if not captions:
        raise ValueError("a batch without any non-empty caption; check the caption column.")
    return captions, partners, empty


class CaptionPairCollator:
    """Text pairs for caption-contrastive training: each caption with another caption of the same image (the
    `positive` column, else the short caption, else the text before its first ". ")."""

    def __init__(self, processor):
        self.processor, self.skips = processor, SkipCounts()

    def __call__(self, rows: list[dict]) -> dict:
        captions, positives, empty = _texts_of(rows)
        anchor = self.processor(text=captions, return_tensors="pt")
        positive = self.processor(text=positives, return_tensors="pt")
        batch = {k: anchor[k] for k in ("input_ids", "attention_mask", "pooling_mask")}
        batch.update({f"positive_{k}": positive[k] for k in ("input_ids", "attention_mask", "pooling_mask")})
        self.skips.add({"empty_caption": empty})
        return batch


DISTILL_CAPTIONS = ("both", "random")


class DistillationCollator:
    """Captions for adapter distillation: LLM inputs (or cached LLM embeddings) and the CLIP teacher's tokens at the
    teacher's own context length.

    captions "both" (the authors' train.py): the short caption of every sample under the plain keys and its long
    caption under `long_*` keys; "random": one of the two per sample (`pick_caption`), like the image-text stages.
    """

    def __init__(self, processor, teacher_tokenizer, text_features=None, seed: int = 0, captions: str = "both"):
        if captions not in DISTILL_CAPTIONS:
            raise ValueError(f"captions must be one of {DISTILL_CAPTIONS}, got {captions!r}")
        self.processor, self.teacher_tokenizer, self.text_features = processor, teacher_tokenizer, text_features
        self.seed, self.epoch, self.skips, self.captions = seed, 0, SkipCounts(), captions

    def _encode(self, captions: list[str], prefix: str = "") -> dict:
        teacher = self.teacher_tokenizer(captions, padding=True, truncation=True, return_tensors="pt")
        batch = {"teacher_input_ids": teacher["input_ids"], "teacher_attention_mask": teacher["attention_mask"]}
        if self.text_features is not None:
            batch["text_embeds"] = self.text_features.get_texts(captions)
        else:
            encoded = self.processor(text=captions, return_tensors="pt")
            batch.update({k: encoded[k] for k in ("input_ids", "attention_mask", "pooling_mask")})
        return {prefix + key: value for key, value in batch.items()}

    def __call__(self, rows: list[dict]) -> dict:
        captions, shorts, empty = _texts_of(rows)
        if self.captions == "random":
            batch = self._encode([pick_caption(pair, self.seed, self.epoch) for pair in zip(captions, shorts)])
        else:
            batch = {**self._encode(shorts), **self._encode(captions, prefix="long_")}
        self.skips.add({"empty_caption": empty})
        return batch
