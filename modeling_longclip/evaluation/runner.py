"""The Python API: evaluate a loaded model on a loaded benchmark, or on a benchmark named by the registry."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import torch

from .benchmarks import ClassificationSet, RetrievalSet, load_benchmark
from .encoding import EmbeddingCache, encode_images, encode_texts, text_limit
from .metrics import retrieval_recall_from_embeddings
from .report import base_result
from .zeroshot import evaluate_zeroshot


def evaluate_retrieval(
    model,
    processor,
    dataset: RetrievalSet,
    *,
    batch_size: int = 64,
    cache: EmbeddingCache | None = None,
    text_kwargs: dict | None = None,
    progress: bool = True,
    model_name: str | None = None,
    ks: Sequence[int] = (1, 5, 10),
) -> dict:
    """Image->text and text->image recall@K (percent) of `model` on `dataset`, with counts and provenance.

    Similarities are computed chunk by chunk on the model's device, so the full matrix is never held.
    """
    start = time.perf_counter()
    images = encode_images(model, processor, dataset.image_paths, batch_size=batch_size, cache=cache, progress=progress)
    texts = encode_texts(
        model, processor, dataset.texts, batch_size=batch_size, cache=cache, progress=progress, text_kwargs=text_kwargs
    )
    device = getattr(model, "device", None) or torch.device("cpu")
    recall = retrieval_recall_from_embeddings(
        images.embeddings.to(device), texts.embeddings.to(device), dataset.text_image, ks
    )
    fewest, most = dataset.captions_per_image
    result = base_result(
        "retrieval", model, model_name, dataset, {"batch_size": batch_size, "text_kwargs": dict(text_kwargs or {})}
    )
    result.update(
        {
            "counts": {
                "images": len(dataset.image_paths),
                "texts": len(dataset.texts),
                "captions_per_image": {"min": fewest, "max": most},
                "texts_too_long": texts.too_long,
                "text_limit": text_limit(processor),
            },
            **recall,
            "ties": "expected value under uniformly random tie-breaking",
            "cache": {"images": images.cache, "texts": texts.cache},
            "seconds": round(time.perf_counter() - start, 3),
        }
    )
    return result


def evaluate(model, processor, dataset: RetrievalSet | ClassificationSet, **kwargs) -> dict:
    """`evaluate_retrieval` or `evaluate_zeroshot`, whichever the dataset calls for."""
    if isinstance(dataset, ClassificationSet):
        return evaluate_zeroshot(model, processor, dataset, **kwargs)
    return evaluate_retrieval(model, processor, dataset, **kwargs)


def evaluate_benchmark(
    model,
    processor,
    benchmark: str,
    data_root: str | Path,
    protocol: str | None = None,
    *,
    annotations: str | Path | None = None,
    class_names: str | Path | None = None,
    **kwargs,
) -> dict:
    """Load a registered benchmark (see `BENCHMARKS`) and evaluate on it; keyword arguments go to `evaluate`."""
    dataset = load_benchmark(benchmark, data_root, protocol, annotations=annotations, class_names=class_names)
    return evaluate(model, processor, dataset, **kwargs)


__all__ = ["evaluate", "evaluate_benchmark", "evaluate_retrieval"]
