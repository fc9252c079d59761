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
    Configuration of a [`ProCLIPModel`]: the [`LLM2CLIPConfig`] shape (same fields, same defaults) with CLIP's own
    visual projection and output size. The adapter depth varies between releases (the paper's 4 blocks with expansion
    2, a 12-block large variant, the authors' code default of 1 block with expansion 8); converters read it from the
    checkpoint's shapes.

    Args:
        vision_tower (`str`, *optional*, defaults to `"clip"`):
            `"clip"` (the released ProCLIP towers) or `"eva02"` (Eva_L14); `"siglip2"` works as for LLM2CLIP.
        vision_config (`dict` or the tower's config class, *optional*, defaults to `None`):
            The image tower's configuration; `None` gives the tower class's defaults.
        text_config (`dict` or `PreTrainedConfig`, *optional*, defaults to `None`):
            The LLM embedder ProCLIP was trained with (Llama-3-8B-CC by default in the paper); `None` gives a default
            `LlamaConfig`.
        projection_dim (`int`, *optional*, defaults to 768):
            The CLIP model's own embedding size: 512 for B/16 and B/32, 768 for L/14.
        visual_projection_bias (`bool`, *optional*, defaults to `False`):
            Whether the visual projection has a bias (CLIP's has none).
        use_visual_projection (`bool`, *optional*, defaults to `True`):
            CLIP's visual projection; `False` only when the tower's pooled output is the joint embedding.
        adapter_blocks (`int`, *optional*, defaults to 4):
            Residual MLP blocks of the adapter.
        adapter_expansion (`int`, *optional*, defaults to 2):
            Hidden width of each adapter block, as a multiple of the text model's width.
        pooling (`str`, *optional*, defaults to `"mean"`):
            `"mean"` over the pooling mask, or `"last"` (Qwen3-Embedding-style embedders).
        text_model_name_or_path (`str`, *optional*, defaults to `None`):
            Where the text model's weights live when they are kept out of this folder.
        logit_scale_init_value (`float`, *optional*, defaults to 4.6052):
            Initial value of `logit_scale` (ln 100; stage 2 clamps it there).
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the normal initialisation of the adapter and the visual projection.
        pooling_dtype (`str`, *optional*, defaults to `"model"`):
            The dtype the pooled mean is computed in: `"model"` (the text model's) or `"float32"`.
        adapter_normalize_input (`bool`, *optional*, defaults to `True`):
            L2-normalize the pooled text embedding before the adapter (the authors' TextProj default).

    Example:

    ```python
    >>> from transformers import LlamaConfig
    >>> from modeling_longclip import ProCLIPConfig, ProCLIPModel

    >>> # a small random ProCLIP: the authors' 1-block adapter of expansion 8 into a 64-d CLIP space
    >>> text = LlamaConfig(vocab_size=1000, hidden_size=128, intermediate_size=256, num_hidden_layers=2)
    >>> vision = {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 2}
    >>> config = ProCLIPConfig(
    ...     vision_config=vision, text_config=text, projection_dim=64, adapter_blocks=1, adapter_expansion=8
    ... )
    >>> model = ProCLIPModel(config)
    >>> model.visual_projection.out_features
    64
    ```
    """

    model_type = "proclip"
    projection_dim: int = 768
    default_auto_map = PROCLIP_AUTO_MAP


__all__ = ["ProCLIPConfig"]
