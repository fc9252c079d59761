"""From raw strings and images to L2-normalized embeddings, the same way for every model family.

Part of the flat Hub payload: imports only torch and transformers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F


def pooled_features(output) -> torch.Tensor:
    """Projected features from `get_*_features`, which returns a tensor or (transformers 5) a pooled ModelOutput."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def scaled_similarity(image_embeds: torch.Tensor, text_embeds: torch.Tensor, logit_scale: torch.Tensor):
    """(normalized image embeds, normalized text embeds, logits_per_text) as CLIP's forward computes them."""
    image_embeds = image_embeds / image_embeds.norm(dim=-1, keepdim=True)
    text_embeds = text_embeds / text_embeds.norm(dim=-1, keepdim=True)
    logits_per_text = text_embeds @ image_embeds.t().to(text_embeds.device) * logit_scale.exp().to(text_embeds.device)
    return image_embeds, text_embeds, logits_per_text


def pool_text_windows(
    window_embeds: torch.Tensor, window_to_text: torch.Tensor, window_tokens: torch.Tensor, n_texts: int
):
    """Pool the windows of each long text: token-count-weighted mean of L2-normalized window embeddings, re-normalized.

    A window's weight is its number of caption tokens, so a short tail window counts for what it holds.
    """
    normalized = F.normalize(window_embeds.float(), dim=-1) * window_tokens.float().unsqueeze(-1)
    pooled = torch.zeros(n_texts, normalized.shape[-1], dtype=normalized.dtype, device=normalized.device)
    pooled.index_add_(0, window_to_text.to(normalized.device), normalized)
    return F.normalize(pooled, dim=-1)


def order_by_length(lengths: Sequence[int]) -> list[int]:
    """Positions sorted longest first (ties in the given order)."""
    return sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))


def length_order(processor, texts: Sequence[str]) -> list[int]:
    """Positions sorted by token count (the processor's `count_tokens` or its tokenizer, capped at its max_length),
    longest first.

    Batches cut from this order hold texts of similar length, so padding to the longest in each batch wastes little
    (a random mix of long and short captions otherwise pads most rows to the longest). Longest first makes the
    biggest batch the first one, so a batch size that does not fit fails at once. Without a tokenizer the character
    count is used.
    """
    tokenizer = getattr(processor, "tokenizer", None)
    stripped = [t.strip() for t in texts]
    if callable(getattr(processor, "count_tokens", None)):  # counts what the processor encodes (its text cleaning)
        lengths = processor.count_tokens(stripped, special_tokens=False)
    elif tokenizer is not None:
        lengths = [len(ids) for ids in tokenizer(stripped, add_special_tokens=False, verbose=False)["input_ids"]]
    else:
        return order_by_length([len(t) for t in stripped])
    limit = getattr(processor, "max_length", None)
    if isinstance(limit, int) and limit > 0:
        lengths = [min(n, limit) for n in lengths]
    return order_by_length(lengths)


def encode_in_length_order(
    processor, texts: Sequence[str], encode_batch: Callable[[list[str]], torch.Tensor], batch_size: int
) -> torch.Tensor | None:
    """`encode_batch(batch_texts) -> [b, dim]` over batches cut from `length_order` (similar lengths pad little), with
    the rows put back in the order given: [len(texts), dim] in the dtype and on the device of the batches; None
    without texts. The one place that sorts texts by length, for `encode_text`, the evaluation and the feature cache.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    order = length_order(processor, texts)
    rows = None
    for start in range(0, len(order), batch_size):
        positions = order[start : start + batch_size]
        embeds = encode_batch([texts[i] for i in positions])
        if rows is None:
            rows = torch.empty(len(texts), embeds.shape[-1], dtype=embeds.dtype, device=embeds.device)
        rows[torch.tensor(positions, device=rows.device)] = embeds.to(rows.device)
    return rows


class EmbeddingMixin:
    """`encode_text` / `encode_image` on top of `get_text_features` / `get_image_features`."""

    _processor = None
    # A causal text tower pooled at a token before the (right-side) padding never sees the padding, so the padding
    # mask can be left out; without a mask SDPA runs its causal flash kernel instead of a masked one.
    causal_text_tower = False

    def text_padding_mask_optional(self, processor) -> bool:
        """Whether this model's text features ignore right-side padding without a mask (see `causal_text_tower`)."""
        return self.causal_text_tower and getattr(getattr(processor, "tokenizer", None), "padding_side", "") == "right"

    def get_processor(self):
        """The processor saved beside the weights (loaded once from the model's folder or Hub repo)."""
        if self._processor is None:
            from transformers import AutoProcessor

            if not self.name_or_path:
                raise ValueError("This model was not loaded from a folder: pass `processor=` explicitly.")
            self._processor = AutoProcessor.from_pretrained(self.name_or_path, trust_remote_code=True)
        return self._processor

    @torch.no_grad()
    def encode_text(self, texts: str | Sequence[str], processor=None, batch_size: int = 64, **processor_kwargs):
        """L2-normalized text embeddings [n, dim] in float32, in the order given.

        Texts are batched by length (see `length_order`), each batch padded to its longest. Extra keyword arguments
        go to the processor, e.g. `long_text="window"` for texts past the context length.
        """
        processor = processor or self.get_processor()
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts:
            return torch.zeros(0, self.config.projection_dim, device=self.device)
        drop_mask = self.text_padding_mask_optional(processor)

        def encode_batch(batch: list[str]) -> torch.Tensor:
            inputs = processor(text=batch, return_tensors="pt", **processor_kwargs)
            window_to_text = inputs.pop("window_to_text", None)
            window_tokens = inputs.pop("window_tokens", None)
            if drop_mask:
                inputs.pop("attention_mask", None)
            inputs = {k: v.to(self.device) for k, v in inputs.items()}
            embeds = pooled_features(self.get_text_features(**inputs, return_dict=True))
            if window_to_text is not None:
                return pool_text_windows(embeds, window_to_text, window_tokens, len(batch))
            return F.normalize(embeds.float(), dim=-1)

        return encode_in_length_order(processor, texts, encode_batch, batch_size)

    @torch.no_grad()
    def encode_image(self, images, processor=None, batch_size: int = 64):
        """L2-normalized image embeddings [n, dim] in float32 from PIL images (or anything the processor takes); no
        images give an empty [0, dim], like `encode_text([])`."""
        images = list(images) if isinstance(images, (list, tuple)) else [images]
        if not images:
            return torch.zeros(0, self.config.projection_dim, device=self.device)
        processor = processor or self.get_processor()
        chunks = []
        for start in range(0, len(images), batch_size):
            inputs = processor(images=images[start : start + batch_size], return_tensors="pt")
            pixel_values = inputs["pixel_values"].to(self.device, self.dtype)
            features = pooled_features(self.get_image_features(pixel_values=pixel_values, return_dict=True))
            chunks.append(F.normalize(features.float(), dim=-1))
        return torch.cat(chunks)


__all__ = [
    "EmbeddingMixin",
    "encode_in_length_order",
    "length_order",
    "order_by_length",
    "pool_text_windows",
    "pooled_features",
    "scaled_similarity",
]
