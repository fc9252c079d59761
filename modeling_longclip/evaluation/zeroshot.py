"""Zero-shot classification the CLIP way: 80 prompt templates per class, averaged into one class embedding."""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .benchmarks import ClassificationSet
from .encoding import EmbeddingCache, encode_images, encode_texts, text_limit
from .metrics import topk_accuracy
from .report import base_result

# The 80 prompt templates OpenAI used for ImageNet (CLIP's "Prompt_Engineering_for_ImageNet" notebook), in order.
OPENAI_IMAGENET_TEMPLATES = (
    "a bad photo of a {}.",
    "a photo of many {}.",
    "a sculpture of a {}.",
    "a photo of the hard to see {}.",
    "a low resolution photo of the {}.",
    "a rendering of a {}.",
    "graffiti of a {}.",
    "a bad photo of the {}.",
    "a cropped photo of the {}.",
    "a tattoo of a {}.",
    "the embroidered {}.",
    "a photo of a hard to see {}.",
    "a bright photo of a {}.",
    "a photo of a clean {}.",
    "a photo of a dirty {}.",
    "a dark photo of the {}.",
    "a drawing of a {}.",
    "a photo of my {}.",
    "the plastic {}.",
    "a photo of the cool {}.",
    "a close-up photo of a {}.",
    "a black and white photo of the {}.",
    "a painting of the {}.",
    "a painting of a {}.",
    "a pixelated photo of the {}.",
    "a sculpture of the {}.",
    "a bright photo of the {}.",
    "a cropped photo of a {}.",
    "a plastic {}.",
    "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.",
    "a photo of the {}.",
    "a good photo of the {}.",
    "a rendering of the {}.",
    "a {} in a video game.",
    "a photo of one {}.",
    "a doodle of a {}.",
    "a close-up photo of the {}.",
    "a photo of a {}.",
    "the origami {}.",
    "the {} in a video game.",
    "a sketch of a {}.",
    "a doodle of the {}.",
    "a origami {}.",
    "a low resolution photo of a {}.",
    "the toy {}.",
    "a rendition of the {}.",
    "a photo of the clean {}.",
    "a photo of a large {}.",
    "a rendition of a {}.",
    "a photo of a nice {}.",
    "a photo of a weird {}.",
    "a blurry photo of a {}.",
    "a cartoon {}.",
    "art of a {}.",
    "a sketch of the {}.",
    "a embroidered {}.",
    "a pixelated photo of a {}.",
    "itap of the {}.",
    "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.",
    "a plushie {}.",
    "a photo of the nice {}.",
    "a photo of the small {}.",
    "a photo of the weird {}.",
    "the cartoon {}.",
    "art of the {}.",
    "a drawing of the {}.",
    "a photo of the large {}.",
    "a black and white photo of a {}.",
    "the plushie {}.",
    "a dark photo of a {}.",
    "itap of a {}.",
    "graffiti of the {}.",
    "a toy {}.",
    "itap of my {}.",
    "a photo of a cool {}.",
    "a photo of a small {}.",
    "a tattoo of the {}.",
)


def class_prompts(class_names: Sequence[str], templates: Sequence[str] = OPENAI_IMAGENET_TEMPLATES) -> list[str]:
    """Every template filled with every class name, class-major: class c's prompts are [c * T, (c + 1) * T)."""
    return [template.format(name) for name in class_names for template in templates]


def class_embeddings(text_embeddings: torch.Tensor, n_classes: int) -> torch.Tensor:
    """[n_classes, dim]: per class, the mean of its (already normalized) template embeddings, re-normalized."""
    per_class = F.normalize(text_embeddings.float(), dim=-1).reshape(n_classes, -1, text_embeddings.shape[-1])
    return F.normalize(per_class.mean(dim=1), dim=-1)


def evaluate_zeroshot(
    model,
    processor,
    dataset: ClassificationSet,
    *,
    templates: Sequence[str] = OPENAI_IMAGENET_TEMPLATES,
    batch_size: int = 64,
    cache: EmbeddingCache | None = None,
    text_kwargs: dict | None = None,
    progress: bool = True,
    model_name: str | None = None,
    ks: Sequence[int] = (1, 5),
) -> dict:
    """Top-1 / top-5 accuracy (percent) of cosine similarity against the template-averaged class embeddings."""
    start = time.perf_counter()
    prompts = class_prompts(dataset.class_names, templates)
    texts = encode_texts(
        model, processor, prompts, batch_size=batch_size, cache=cache, progress=progress, text_kwargs=text_kwargs
    )
    images = encode_images(
        model, processor, dataset.image_paths, batch_size=batch_size, cache=cache, progress=progress
    )
    classes = class_embeddings(texts.embeddings, len(dataset.class_names))
    accuracy = topk_accuracy(images.embeddings @ classes.T, dataset.labels, ks)
    settings = {"batch_size": batch_size, "text_kwargs": dict(text_kwargs or {}), "templates": len(templates)}
    result = base_result("zero-shot classification", model, model_name, dataset, settings)
    result.update(
        {
            "dataset": dataset.dataset_name,
            "class_names_file": dataset.class_names_file,
            "counts": {
                "images": len(dataset.image_paths),
                "classes": len(dataset.class_names),
                "templates": len(templates),
                "texts": len(prompts),
                "texts_too_long": texts.too_long,
                "text_limit": text_limit(processor, model),
            },
            "accuracy": accuracy,
            "ties": "expected value under uniformly random tie-breaking",
            "cache": {"images": images.cache, "texts": texts.cache},
            "seconds": round(time.perf_counter() - start, 3),
        }
    )
    return result


__all__ = ["OPENAI_IMAGENET_TEMPLATES", "class_embeddings", "class_prompts", "evaluate_zeroshot"]
