"""ProCLIP configuration: LLM2CLIP's shape with CLIP's own visual projection and output size.

Part of the flat Hub payload: imports only transformers and its sibling configuration_llm2clip.py.
"""

from .configuration_eva02 import EVA02VisionConfig  # noqa: F401  (transformers 4.x copies only direct imports)
from .configuration_llm2clip import LLM2CLIPConfig
from .transformers_compat import portable_config

PROCLIP_AUTO_MAP = {
    "AutoConfig": "configuration_proclip.ProCLIPConfig",
    "AutoModel": "modeling_proclip.ProCLIPModel",
    "AutoModelForZeroShotImageClassification": "modeling_proclip.ProCLIPModel",
}


@portable_config
class ProCLIPConfig(LLM2CLIPConfig):
    r"""
    Same fields as [`LLM2CLIPConfig`]. `projection_dim` is the CLIP model's own embedding size (512 for B/16 and B/32,
    768 for L/14) and the visual projection is CLIP's. The adapter depth varies between releases (the paper's 4 blocks
    with expansion 2, a 12-block large variant, the authors' code default of 1 block with expansion 8); converters read
    it from the checkpoint's shapes.
    """

    model_type = "proclip"
    projection_dim: int = 768
    default_auto_map = PROCLIP_AUTO_MAP


__all__ = ["ProCLIPConfig"]
