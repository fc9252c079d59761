"""The Python API: evaluate a loaded model on a loaded benchmark, a benchmark named by the registry, or several saved
model folders (this package's or any transformers dual encoder's) on the same data."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import torch

from ..common.loading import load_model_folder
from .benchmarks import ClassificationSet, RetrievalSet, load_benchmark
from .embed import has_own_encoders
from .encoding import EmbeddingCache, encode_images, encode_texts, model_fingerprint, text_limit
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
    images = encode_images(
        model, processor, dataset.image_paths, batch_size=batch_size, cache=cache, progress=progress
    )
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
                "text_limit": text_limit(processor, model),
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


def load_model(model_dir: str | Path, device: str | None = None):
    """AutoModel + AutoProcessor (trust_remote_code) from a saved folder, in eval mode on `device` (default: cuda when
    available). Any dual encoder loads: this package's families, CLIPModel, SiglipModel, ..."""
    return load_model_folder(model_dir, device)


def evaluate_folders(
    folders: Sequence[str | Path],
    datasets: Sequence[RetrievalSet | ClassificationSet],
    *,
    names: Sequence[str] | None = None,
    device: str | None = None,
    cache_dir: str | Path | None = None,
    text_kwargs: dict | None = None,
    **kwargs,
) -> list[dict]:
    """Every model folder on every dataset, one model in memory at a time; results in (folder, dataset) order.

    `names` replaces the folder paths in the reports; `cache_dir=None` turns the embedding cache off. `text_kwargs`
    (e.g. `long_text="window"`) go to this package's processors only: other models truncate at their limit.
    """
    if names is not None and len(names) != len(folders):
        raise ValueError(f"{len(names)} names for {len(folders)} model folders")
    results = []
    for index, folder in enumerate(folders):
        model, processor = load_model(folder, device)
        cache = EmbeddingCache(cache_dir, model_fingerprint(model, folder)) if cache_dir is not None else None
        own = dict(text_kwargs or {}) if has_own_encoders(model) else None
        name = names[index] if names is not None else str(Path(folder).expanduser())
        for dataset in datasets:
            results.append(
                evaluate(model, processor, dataset, cache=cache, text_kwargs=own, model_name=name, **kwargs)
            )
        del model, processor
    return results


__all__ = ["evaluate", "evaluate_benchmark", "evaluate_folders", "evaluate_retrieval", "load_model"]
