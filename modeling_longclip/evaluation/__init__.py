"""Evaluation suite for every model family, through the shared feature API (`encode_text` / `encode_image`).

- `benchmarks`: loaders for the official layouts (Urban-1k, ShareGPT4V-1k, DCI, DOCCI, COCO and Flickr30k under the
  Karpathy and the Long-CLIP authors' protocols, image folders for zero-shot) and the `BENCHMARKS` registry;
- `metrics`: exact, chunked recall@K and top-K accuracy;
- `encoding`: batched encoding with progress bars and an on-disk embedding cache;
- `zeroshot`: the 80 CLIP templates and template-averaged class embeddings;
- `report`: results.json and the Markdown table; `cli`: `longclip-eval`.
"""

from .benchmarks import (
    BENCHMARKS,
    DEFAULT_PROTOCOLS,
    BenchmarkError,
    ClassificationSet,
    RetrievalSet,
    load_benchmark,
)
from .encoding import EmbeddingCache, encode_images, encode_texts, model_fingerprint
from .metrics import retrieval_recall, retrieval_recall_from_embeddings, topk_accuracy
from .report import markdown_table, write_results
from .runner import evaluate, evaluate_benchmark, evaluate_retrieval
from .zeroshot import OPENAI_IMAGENET_TEMPLATES, evaluate_zeroshot

__all__ = [
    "BENCHMARKS",
    "DEFAULT_PROTOCOLS",
    "OPENAI_IMAGENET_TEMPLATES",
    "BenchmarkError",
    "ClassificationSet",
    "EmbeddingCache",
    "RetrievalSet",
    "encode_images",
    "encode_texts",
    "evaluate",
    "evaluate_benchmark",
    "evaluate_retrieval",
    "evaluate_zeroshot",
    "load_benchmark",
    "markdown_table",
    "model_fingerprint",
    "retrieval_recall",
    "retrieval_recall_from_embeddings",
    "topk_accuracy",
    "write_results",
]
