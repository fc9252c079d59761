"""Evaluation suite for every model family and for baselines (any transformers dual encoder: CLIPModel, SiglipModel).

- `benchmarks`: loaders for the official layouts (Urban-1k, ShareGPT4V-1k, DCI, DOCCI, COCO and Flickr30k under the
  Karpathy and the Long-CLIP authors' protocols, image folders for zero-shot) and the `BENCHMARKS` registry;
- `metrics`: exact, chunked recall@K and top-K accuracy;
- `embed`: embeddings from any dual encoder (this package's `encode_text` / `encode_image`, or `get_*_features` with
  the model's own processor, padding and limit);
- `encoding`: batched encoding with progress bars and an on-disk embedding cache;
- `zeroshot`: the 80 CLIP templates and template-averaged class embeddings;
- `report`: results.json and the Markdown table; `compare`: several models side by side (table, JSON, bar chart);
- `runner`: the Python API (`evaluate`, `evaluate_folders`); `cli`: `longclip-eval`.
"""

from .benchmarks import (
    BENCHMARKS,
    DEFAULT_PROTOCOLS,
    BenchmarkError,
    ClassificationSet,
    RetrievalSet,
    load_benchmark,
)
from .compare import bar_chart, comparison, comparison_markdown, write_comparison
from .embed import embed_images, embed_texts, text_limit
from .encoding import EmbeddingCache, encode_images, encode_texts, model_fingerprint
from .metrics import retrieval_recall, retrieval_recall_from_embeddings, topk_accuracy
from .report import markdown_table, write_results
from .runner import evaluate, evaluate_benchmark, evaluate_folders, evaluate_retrieval, load_model
from .zeroshot import OPENAI_IMAGENET_TEMPLATES, evaluate_zeroshot

__all__ = [
    "BENCHMARKS",
    "DEFAULT_PROTOCOLS",
    "OPENAI_IMAGENET_TEMPLATES",
    "BenchmarkError",
    "ClassificationSet",
    "EmbeddingCache",
    "RetrievalSet",
    "bar_chart",
    "comparison",
    "comparison_markdown",
    "embed_images",
    "embed_texts",
    "encode_images",
    "encode_texts",
    "evaluate",
    "evaluate_benchmark",
    "evaluate_folders",
    "evaluate_retrieval",
    "evaluate_zeroshot",
    "load_benchmark",
    "load_model",
    "markdown_table",
    "model_fingerprint",
    "retrieval_recall",
    "retrieval_recall_from_embeddings",
    "text_limit",
    "topk_accuracy",
    "write_comparison",
    "write_results",
]
