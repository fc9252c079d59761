"""Long-text CLIP models (Long-CLIP, LLM2CLIP, ProCLIP) as first-class Hugging Face models.

Importing the package registers every family with the transformers Auto classes; saved folders carry the same
registration in `auto_map`, so they also load with `trust_remote_code=True` where this package is not installed.

Where things live (each room imports only the rooms above it in this list; tests/test_layout.py checks it):

- the package root is the Hub payload and nothing else: `configuration_*`, `modeling_*`, `processing_*`,
  `tokenization_*`, `image_processing_*` and the flat siblings they import (`contrastive`, `embedding`,
  `processing_options`, `transformers_compat`). Converters copy exactly these files into every model folder, so
  they import only torch, transformers and each other.
- `common/`: the shared low layer: errors, atomic writes, image opening, caption tables, loading a model folder
  (also with its LLM text tower in 8 / 4 bits), the command-line rule, module paths that moved.
- `export/`: the folder writer, model cards, Hub upload, ONNX graphs, 248-position text encoders for diffusers.
- `converters/`, `evaluation/`, `features/`: the authors' checkpoints -> folders (with independent references);
  benchmarks and metrics (`longclip-eval`); the LLM text-feature cache (`longclip-extract-text-features`).
- `training/`: `Trainer` glue and the training commands (`longclip-train`, `llm2clip-train`, `proclip-train`).
- `search/`: long-text photo search (`longclip-search index / query / ann / info / serve`, `PhotoIndex`).
- `demo/`: the embedded default jobs (`python -m modeling_longclip.demo`), photo search included.
- `cli/`: the `longclip` command, whose subcommands are the commands above.
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForZeroShotImageClassification,
    AutoProcessor,
)

from .common import legacy_paths
from .configuration_eva02 import EVA02VisionConfig
from .configuration_llm2clip import LLM2CLIPConfig
from .configuration_longclip import LongCLIPConfig
from .configuration_proclip import ProCLIPConfig
from .modeling_eva02 import EVA02VisionModel
from .modeling_llm2clip import LLM2CLIPModel
from .modeling_longclip import LongCLIPModel, stretch_position_embeddings
from .modeling_proclip import ProCLIPModel
from .processing_llm2clip import LLAMA3_TEXT_TEMPLATE, LLM2CLIPProcessor
from .processing_longclip import LongCLIPProcessor, LongTextTruncationWarning

__version__ = "0.1.0"

# (config, model, processor) of every family; the payload files that define them travel into saved folders.
MODEL_FAMILIES = {
    "longclip": (LongCLIPConfig, LongCLIPModel, LongCLIPProcessor),
    "llm2clip": (LLM2CLIPConfig, LLM2CLIPModel, LLM2CLIPProcessor),
    "proclip": (ProCLIPConfig, ProCLIPModel, LLM2CLIPProcessor),
}


def _register() -> None:
    for model_type, (config_class, model_class, processor_class) in MODEL_FAMILIES.items():
        AutoConfig.register(model_type, config_class, exist_ok=True)
        AutoModel.register(config_class, model_class, exist_ok=True)
        AutoModelForZeroShotImageClassification.register(config_class, model_class, exist_ok=True)
        AutoProcessor.register(config_class, processor_class, exist_ok=True)
        # The configs write their own auto_map (generic and zero-shot classes); these make save_pretrained copy
        # the payload files into the folder.
        config_class.register_for_auto_class()
        model_class.register_for_auto_class("AutoModel")
        processor_class.register_for_auto_class()


_register()
legacy_paths.install()

__all__ = [
    "EVA02VisionConfig",
    "EVA02VisionModel",
    "LLAMA3_TEXT_TEMPLATE",
    "LLM2CLIPConfig",
    "LLM2CLIPModel",
    "LLM2CLIPProcessor",
    "ProCLIPConfig",
    "ProCLIPModel",
    "LongCLIPConfig",
    "LongCLIPModel",
    "LongCLIPProcessor",
    "LongTextTruncationWarning",
    "MODEL_FAMILIES",
    "stretch_position_embeddings",
]
