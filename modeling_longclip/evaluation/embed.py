"""Embeddings from any transformers dual encoder, so baselines are evaluated by the same code as this package's models.

This package's families (Long-CLIP, LLM2CLIP, ProCLIP) carry `encode_text` / `encode_image` (embedding.py's
`EmbeddingMixin`): their processors know their own context, windows and caption templates, so they are used as they
are. Any other model with `get_text_features` / `get_image_features` and a processor (a stock `CLIPModel` folder such
as the converter's `--format clip` output, `SiglipModel`, `Siglip2Model`, ...) is encoded here the same way
`encode_text` does it (length-ordered batches, `pooled_features`, L2 normalization), with the processor's own padding
and truncation at the model's limit:

- CLIP-like text towers are causal and pooled at the end token: each batch is padded to its longest text;
- SigLIP / SigLIP 2 pool the last position and were trained on texts padded to the full length, so their texts are
  padded to `max_length` (the tokenizer's limit, 64 in the released models), as transformers' zero-shot pipeline does.

A text longer than the limit is truncated (the evaluation counts it); `long_text="window"` needs this package's
processor and is refused for other models.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..embedding import encode_in_length_order, pooled_features
from .benchmarks import BenchmarkError

# model_type -> how the text tower wants its padding; everything not listed pads to the longest text in the batch.
FIXED_LENGTH_TEXT_MODELS = frozenset({"siglip", "siglip2"})
NO_LIMIT = 1_000_000  # tokenizers without a real limit report ~1e30 as model_max_length


def has_own_encoders(model) -> bool:
    """True for this package's families (and test doubles) that bring `encode_text` / `encode_image`."""
    return callable(getattr(model, "encode_text", None)) and callable(getattr(model, "encode_image", None))


def _tokenizer_limit(processor) -> int | None:
    limit = getattr(getattr(processor, "tokenizer", None), "model_max_length", None)
    return int(limit) if isinstance(limit, int) and 0 < limit < NO_LIMIT else None


def _position_limit(model) -> int | None:
    config = getattr(model, "config", None)
    text_config = getattr(config, "text_config", None) or config
    positions = getattr(text_config, "max_position_embeddings", None)
    return int(positions) if isinstance(positions, int) and 0 < positions < NO_LIMIT else None


def text_limit(processor, model=None) -> int | None:
    """The number of tokens (special tokens included) a text may have before it is truncated; None if unknown.

    This package's processors cut at their tokenizer's limit. For other models the limit is the tokenizer's, or the
    text tower's position table when that is shorter (a 77-position CLIP with a tokenizer saved at 248 reads 77).
    """
    limits = [_tokenizer_limit(processor)]
    if model is not None and not has_own_encoders(model):
        limits.append(_position_limit(model))
    limits = [limit for limit in limits if limit is not None]
    return min(limits) if limits else None


def text_padding(model, processor) -> dict:
    """Padding and truncation keyword arguments for a foreign model's processor (see the module docstring)."""
    limit = text_limit(processor, model)
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type in FIXED_LENGTH_TEXT_MODELS:
        if limit is None:
            raise BenchmarkError(f"{type(model).__name__}: pads texts to a fixed length, but none is known.")
        return {"padding": "max_length", "max_length": limit, "truncation": True}
    return {"padding": True, "truncation": limit is not None, **({"max_length": limit} if limit else {})}


def encoder_signature(model, processor) -> dict:
    """How texts and images reach the model, for the embedding cache key (a change must not reuse old embeddings)."""
    if has_own_encoders(model):
        return {"encoder": "encode_text/encode_image"}
    return {"encoder": "get_features", "text": text_padding(model, processor)}


def _model_inputs(model, inputs) -> dict:
    """Tensors on the model's device; floating ones (pixels) in the model's dtype."""
    device, dtype = model.device, getattr(model, "dtype", None)
    return {
        key: value.to(device, dtype) if value.is_floating_point() and dtype is not None else value.to(device)
        for key, value in inputs.items()
        if isinstance(value, torch.Tensor)
    }


@torch.no_grad()
def embed_texts(model, processor, texts: Sequence[str], batch_size: int = 64, **processor_kwargs) -> torch.Tensor:
    """L2-normalized text embeddings [n, dim] (float32) in the order given, for any dual encoder."""
    texts = list(texts)
    if has_own_encoders(model):
        return model.encode_text(texts, processor=processor, batch_size=batch_size, **processor_kwargs)
    long_text = processor_kwargs.pop("long_text", "truncate")
    if long_text != "truncate":
        raise BenchmarkError(
            f"long_text={long_text!r} needs this package's processor; {type(model).__name__} texts past "
            f"{text_limit(processor, model)} tokens can only be truncated."
        )
    padding = {**text_padding(model, processor), **processor_kwargs}

    def encode_batch(batch: list[str]) -> torch.Tensor:
        inputs = processor(text=batch, return_tensors="pt", **padding)
        return F.normalize(pooled_features(model.get_text_features(**_model_inputs(model, inputs))).float(), dim=-1)

    embeddings = encode_in_length_order(processor, texts, encode_batch, batch_size)
    return embeddings if embeddings is not None else torch.zeros(0, 0)


@torch.no_grad()
def embed_images(model, processor, images, batch_size: int = 64) -> torch.Tensor:
    """L2-normalized image embeddings [n, dim] (float32) from PIL images, for any dual encoder.

    Every tensor the image processor returns goes to `get_image_features` (SigLIP 2 needs its
    `pixel_attention_mask` and `spatial_shapes` besides the pixels).
    """
    images = list(images)
    if has_own_encoders(model):
        return model.encode_image(images, processor=processor, batch_size=batch_size)
    chunks = []
    for start in range(0, len(images), batch_size):
        chunks.append(image_features(model, processor(images=images[start : start + batch_size], return_tensors="pt")))
    return torch.cat(chunks) if chunks else torch.zeros(0, 0)


@torch.no_grad()
def image_features(model, inputs) -> torch.Tensor:
    """L2-normalized image embeddings [n, dim] (float32) from an image processor's outputs, for any dual encoder.

    Every tensor the processor returned goes to `get_image_features`, on the model's device and (floats) dtype; this
    is what `encode_image` computes for this package's families, so callers that run the processor elsewhere (the
    photo indexer's DataLoader workers) get the same embeddings as `embed_images`.
    """
    return F.normalize(pooled_features(model.get_image_features(**_model_inputs(model, inputs))).float(), dim=-1)


__all__ = [
    "FIXED_LENGTH_TEXT_MODELS",
    "embed_images",
    "embed_texts",
    "encoder_signature",
    "has_own_encoders",
    "image_features",
    "text_limit",
    "text_padding",
]
