"""What decides a cached text feature: the text tower's weights, its pooling, and how the processor encodes captions.

A feature cache records this fingerprint when it is made and compares it whenever it is extended or read for
training (`TextFeatureCache.check_model`), so features of one model never mix with, or stand in for, another's.
"""

from __future__ import annotations

import hashlib
import json

import torch

from ..common.quantization import checkpoint_text_tensors, is_quantized

# Recorded in the index for people reading it, but not compared: a copied or moved model folder is the same model.
INFORMATIONAL_FIELDS = frozenset({"name_or_path"})
HASH_CHUNK = 1 << 24  # elements per host copy while hashing weights
# Processor settings read when a processor has no `encoding_settings()` (an older or foreign processor class).
PROCESSOR_FIELDS = ("text_template", "pooling_scope", "max_length")


def text_tower(model):
    """The module that makes the cached features: `model.text_model`, or the model itself."""
    tower = getattr(model, "text_model", None)
    return tower if isinstance(tower, torch.nn.Module) else model


def text_weights_hash(model) -> str:
    """SHA-256 of the text tower's parameter names, shapes and values, floats taken as bfloat16.

    Casting to bfloat16 first makes the hash the same whether the weights were loaded in bfloat16 or float32 (for a
    bfloat16 checkpoint the two hold the same values; for a float32 checkpoint both round to the same bfloat16), and
    on any device, so features extracted in bf16 on a GPU are recognised by a float32 model on the CPU. A text tower
    quantized on load (`--quantize`) is hashed from the full-precision weights in its folder, which it approximates
    the way a bf16 run approximates a float32 one: its features stand for the same model.
    """
    if is_quantized(model):
        tensors = checkpoint_text_tensors(model.name_or_path)
    else:
        tensors = sorted(text_tower(model).state_dict().items())
    digest = hashlib.sha256()
    for name, tensor in tensors:
        tensor = tensor.detach()
        kind = "float" if tensor.is_floating_point() else str(tensor.dtype)
        digest.update(f"{name}\t{tuple(tensor.shape)}\t{kind}\n".encode())
        flat = tensor.reshape(-1)
        for start in range(0, flat.numel(), HASH_CHUNK):
            chunk = flat[start : start + HASH_CHUNK]
            if chunk.is_floating_point():
                chunk = chunk.to(torch.bfloat16)
            digest.update(chunk.to("cpu").contiguous().view(torch.uint8).numpy())
    return digest.hexdigest()


def tokenizer_hash(tokenizer) -> str | None:
    if tokenizer is None or not hasattr(tokenizer, "get_vocab"):
        return None
    vocab = sorted(tokenizer.get_vocab().items())
    return hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode("utf-8")).hexdigest()


def processor_settings(processor) -> dict:
    settings = getattr(processor, "encoding_settings", None)
    if callable(settings):
        return dict(settings())
    return {name: getattr(processor, name, None) for name in PROCESSOR_FIELDS}


def model_fingerprint(model, processor) -> dict:
    """What decides the cached embeddings: text tower (type, size, weights), pooling (mode and dtype), and every
    processor setting that changes a caption's tokens or pooled positions (template, scope, both length limits,
    padding side, strip, separator)."""
    config = getattr(model, "config", None)
    text_config = getattr(config, "text_config", None) or config
    return {
        "name_or_path": str(getattr(model, "name_or_path", "") or ""),
        "text_model_type": getattr(text_config, "model_type", None),
        "hidden_size": getattr(text_config, "hidden_size", None),
        "pooling": getattr(config, "pooling", None),
        "pooling_dtype": getattr(config, "pooling_dtype", None),
        **processor_settings(processor),
        "tokenizer": tokenizer_hash(getattr(processor, "tokenizer", None)),
        "text_weights": text_weights_hash(model),
    }


def fingerprint_differences(stored: dict, current: dict) -> list[str]:
    """Names of the compared fingerprint fields whose values differ."""
    fields = (set(stored) | set(current)) - INFORMATIONAL_FIELDS
    return sorted(f for f in fields if stored.get(f) != current.get(f))


def describe_differences(stored: dict, current: dict, fields: list[str]) -> str:
    def short(value):
        text = json.dumps(value)
        return text if len(text) <= 60 else text[:57] + "..."

    return "; ".join(f"{f}: cached {short(stored.get(f))}, now {short(current.get(f))}" for f in fields)


__all__ = ["fingerprint_differences", "describe_differences", "model_fingerprint", "text_tower", "text_weights_hash"]
