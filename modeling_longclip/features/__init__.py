"""The LLM text-feature cache: LLM2CLIP / ProCLIP training and indexing run on pooled text-model embeddings computed
once per caption. `store` (folder layout, keys, `TextFeatureCache`), `extraction` (`run_extraction`), `fingerprint`
(what must match for features to be reused), `caption_sources` (`iter_captions`), `cli`
(`longclip-extract-text-features`)."""

from .caption_sources import CaptionSource, iter_captions, load_caption_table
from .extraction import ExtractionStats, extract_text_features, run_extraction
from .fingerprint import fingerprint_differences, model_fingerprint, text_weights_hash
from .store import FeatureCacheError, TextFeatureCache, caption_key

__all__ = [
    "CaptionSource",
    "ExtractionStats",
    "FeatureCacheError",
    "TextFeatureCache",
    "caption_key",
    "extract_text_features",
    "fingerprint_differences",
    "iter_captions",
    "load_caption_table",
    "model_fingerprint",
    "run_extraction",
    "text_weights_hash",
]
