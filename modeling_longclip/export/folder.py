"""Writing model folders: atomically (temporary folder, then rename) and with a model card.

Every converter and the trainer's final export go through `write_model_folder`, so every folder has the same files:
config with auto_map, safetensors weights, tokenizer, processor, the flat payload code, README.md, and the
sentence-transformers module files (`SentenceTransformer(folder, trust_remote_code=True)` then encodes texts and
images with the model's own feature methods, at its full text length, L2-normalized like `encode_text`).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..common.files import atomic_folder
from ..common.folders import validate_model_folder
from .cards import with_metadata

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


# sentence-transformers >= 6 reads these: a Transformer module over the folder itself (texts through
# get_text_features, images through get_image_features, their projected `pooler_output`), then Normalize.
SENTENCE_TRANSFORMERS_MODULES = [
    {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.base.modules.transformer.Transformer"},
    {"idx": 1, "name": "1", "path": "1_Normalize", "type": "sentence_transformers.base.modules.normalize.Normalize"},
]
SENTENCE_EMBEDDING = "sentence_embedding"


def text_length(model, processor) -> int:
    """The number of text tokens the model reads: the processor's budget (LLM2CLIP / ProCLIP) or the text tower's
    position table (CLIP, Long-CLIP: 248)."""
    budget = getattr(processor, "max_length", None)
    if isinstance(budget, int) and budget > 0:
        return budget
    return model.config.text_config.max_position_embeddings


def write_sentence_transformers_files(folder: str | Path, model, processor) -> None:
    """modules.json, sentence_bert_config.json, config_sentence_transformers.json and 1_Normalize/ in `folder`."""
    folder = Path(folder)
    features = {"method_output_name": "pooler_output"}
    module = {
        "transformer_task": "feature-extraction",
        "modality_config": {
            "text": {"method": "get_text_features", **features},
            "image": {"method": "get_image_features", **features},
        },
        "module_output_name": SENTENCE_EMBEDDING,
        "max_seq_length": text_length(model, processor),
    }
    package = {
        "model_type": "SentenceTransformer",
        "prompts": {},
        "default_prompt_name": None,
        "similarity_fn_name": "cosine",
    }
    normalize = {"module_input_name": SENTENCE_EMBEDDING, "module_output_name": SENTENCE_EMBEDDING}
    (folder / "1_Normalize").mkdir(exist_ok=True)
    for name, data in [
        ("modules.json", SENTENCE_TRANSFORMERS_MODULES),
        ("sentence_bert_config.json", module),
        ("config_sentence_transformers.json", package),
        ("1_Normalize/config.json", normalize),
    ]:
        (folder / name).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def write_model_folder(model, processor, output: str | Path, card: str, dtype: str | None = None, overwrite=False):
    """Save model (safetensors), processor, payload code, README.md (its metadata completed from the config: base models,
    datasets, licence) and the sentence-transformers files into `output`, atomically."""
    with atomic_folder(output, overwrite) as staging:
        if dtype is not None:
            model = model.to(DTYPES[dtype])
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
        (staging / "README.md").write_text(with_metadata(card, model.config), encoding="utf-8")
        write_sentence_transformers_files(staging, model, processor)
        validate_model_folder(staging)
    return Path(output)
