"""ProCLIP: the LLM2CLIP model shape with CLIP's native image projection (512 / 768-d joint space).

Part of the flat Hub payload: imports only torch, transformers and sibling payload files. Everything runs through
`LLM2CLIPModel`; the training stages that make ProCLIP different (distillation from a CLIP text tower, contrastive
tuning with an EMA image teacher) live in the training package, not in the model.
"""

# transformers 4.x copies into its module cache only the files a remote-code file imports itself, so the files
# modeling_llm2clip.py imports are named here too.
from .configuration_eva02 import EVA02VisionConfig  # noqa: F401, E402
from .configuration_llm2clip import LLM2CLIPConfig  # noqa: F401, E402
from .configuration_proclip import ProCLIPConfig
from .contrastive import contrastive_loss  # noqa: F401, E402
from .embedding import EmbeddingMixin  # noqa: F401, E402
from .modeling_eva02 import EVA02VisionModel  # noqa: F401, E402
from .modeling_llm2clip import LLM2CLIPModel
from .transformers_compat import PreTrainedConfig  # noqa: F401, E402


class ProCLIPModel(LLM2CLIPModel):
    config_class = ProCLIPConfig
    config: ProCLIPConfig
    base_model_prefix = "proclip"


__all__ = ["ProCLIPModel"]
