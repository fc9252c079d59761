"""LLM2CLIP configuration: a CLIP vision tower plus any transformers text model used as a bidirectional encoder.

Part of the flat Hub payload: imports only transformers. ProCLIP reuses it (configuration_proclip.py). How captions
are wrapped and which tokens are pooled is the processor's business (processing_llm2clip.py); how pooled tokens are
combined ("mean" or "last") is the model's.
"""

import json

from transformers import AutoConfig, CLIPVisionConfig, SiglipVisionConfig

from .configuration_eva02 import EVA02VisionConfig
from .transformers_compat import PreTrainedConfig, finish_post_init, portable_config, with_legacy_rope_fields

POOLING_MODES = ("mean", "last")
# The image towers a folder can hold, by `vision_tower`: the config class of `vision_config` for each.
VISION_TOWER_CONFIGS = {"clip": CLIPVisionConfig, "siglip2": SiglipVisionConfig, "eva02": EVA02VisionConfig}

LLM2CLIP_AUTO_MAP = {
    "AutoConfig": "configuration_llm2clip.LLM2CLIPConfig",
    "AutoModel": "modeling_llm2clip.LLM2CLIPModel",
    "AutoModelForZeroShotImageClassification": "modeling_llm2clip.LLM2CLIPModel",
}


def _as_config(value, default_type: str, fixed_class=None):
    """A sub-config from a dict (or None for the default), as transformers 5.17 and 5.23 both accept."""
    if isinstance(value, PreTrainedConfig):
        return value
    value = dict(value or {})
    if fixed_class is not None:
        value.pop("model_type", None)
        return fixed_class(**value)
    return AutoConfig.for_model(value.pop("model_type", default_type), **value)


@portable_config
class LLM2CLIPConfig(PreTrainedConfig):
    r"""
    Configuration of an [`LLM2CLIPModel`]: an image tower, a visual projection, any transformers text model run as a
    bidirectional encoder, and the residual-MLP adapter from its pooled output to the joint embedding. The defaults
    describe the released LLM2CLIP shape (a CLIP ViT, Llama at 4096 wide, 4 adapter blocks of expansion 2, 1280-d).

    Args:
        vision_tower (`str`, *optional*, defaults to `"clip"`):
            Which image tower `vision_config` describes: `"clip"` (OpenAI-CLIP ViT, transformers'
            `CLIPVisionModel`), `"siglip2"` (transformers' `SiglipVisionModel` with its attention-pooling head) or
            `"eva02"` (EVA02-CLIP, this payload's `EVA02VisionModel`).
        vision_config (`dict` or the tower's config class, *optional*, defaults to `None`):
            The image tower's configuration (`CLIPVisionConfig`, `SiglipVisionConfig` or `EVA02VisionConfig`, by
            `vision_tower`); `None` gives that class's defaults.
        text_config (`dict` or `PreTrainedConfig`, *optional*, defaults to `None`):
            The text model (Llama, Qwen2/3, Mistral, BERT, ...), run bidirectionally; a dict names its `model_type`.
            `None` gives a default `LlamaConfig`.
        projection_dim (`int`, *optional*, defaults to 1280):
            Size of the joint embedding (LLM2CLIP: 1280; ProCLIP: the CLIP model's own).
        visual_projection_bias (`bool`, *optional*, defaults to `False`):
            Whether the visual projection has a bias (the releases' has none).
        use_visual_projection (`bool`, *optional*, defaults to `True`):
            A Linear from the tower's pooled output to `projection_dim`; `False` when the pooled output already is the
            joint embedding (LLM2CLIP's SigLIP2 release).
        adapter_blocks (`int`, *optional*, defaults to 4):
            Residual MLP blocks of the adapter (y = x + fc2(GELU(fc1(LN(x))))), before its final LayerNorm + Linear.
        adapter_expansion (`int`, *optional*, defaults to 2):
            Hidden width of each adapter block, as a multiple of the text model's width.
        pooling (`str`, *optional*, defaults to `"mean"`):
            How the pooled tokens (the processor's pooling mask) are combined: `"mean"`, or `"last"` (the last one).
        text_model_name_or_path (`str`, *optional*, defaults to `None`):
            Where the text model's weights live when they are kept out of this folder; `from_pretrained` then loads
            them from there.
        logit_scale_init_value (`float`, *optional*, defaults to 4.6052):
            Initial value of `logit_scale` (ln 100, where the released models end up).
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the normal initialisation of the adapter and the visual projection.
        pooling_dtype (`str`, *optional*, defaults to `"model"`):
            The dtype the pooled mean is computed in: `"model"` (the text model's output dtype, as llm2vec does: bf16
            in the released recipe) or `"float32"`; the result is float32 either way.
        adapter_normalize_input (`bool`, *optional*, defaults to `True`):
            L2-normalize the pooled text embedding before the adapter, as every release does except LLM2CLIP's SigLIP2
            one (its text path calls the adapter with `l2_norm=False`).

    Example:

    ```python
    >>> from transformers import LlamaConfig
    >>> from modeling_longclip import LLM2CLIPConfig, LLM2CLIPModel

    >>> # a small random LLM2CLIP: CLIP ViT image tower, 2-layer Llama text tower, adapter to a 64-d joint space
    >>> text = LlamaConfig(vocab_size=1000, hidden_size=128, intermediate_size=256, num_hidden_layers=2)
    >>> config = LLM2CLIPConfig(
    ...     vision_config={"hidden_size": 128, "intermediate_size": 256, "num_attention_heads": 2},
    ...     text_config=text,
    ...     projection_dim=64,
    ... )
    >>> model = LLM2CLIPModel(config)
    >>> model.text_adapter.adaptor[-1].out_features
    64
    ```
    """

    model_type = "llm2clip"
    sub_configs = {"vision_config": CLIPVisionConfig, "text_config": AutoConfig}

    vision_tower: str = "clip"
    vision_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    projection_dim: int = 1280
    visual_projection_bias: bool = False
    use_visual_projection: bool = True
    adapter_blocks: int = 4
    adapter_expansion: int = 2
    pooling: str = "mean"
    text_model_name_or_path: str | None = None
    logit_scale_init_value: float = 4.6052
    initializer_range: float = 0.02
    pooling_dtype: str = "model"
    adapter_normalize_input: bool = True

    default_auto_map = LLM2CLIP_AUTO_MAP

    def __post_init__(self, **kwargs):
        if self.vision_tower not in VISION_TOWER_CONFIGS:
            raise ValueError(f"vision_tower must be one of {tuple(VISION_TOWER_CONFIGS)}, got {self.vision_tower!r}.")
        tower_config = VISION_TOWER_CONFIGS[self.vision_tower]
        self.vision_config = _as_config(self.vision_config, tower_config.model_type, tower_config)
        self.text_config = _as_config(self.text_config, "llama")
        self.auto_map = {**self.default_auto_map, **(getattr(self, "auto_map", None) or {})}
        finish_post_init(super(), kwargs)
        if self.pooling not in POOLING_MODES:
            raise ValueError(f"pooling must be one of {POOLING_MODES}, got {self.pooling!r}.")
        if not self.use_visual_projection and self.vision_config.hidden_size != self.projection_dim:
            raise ValueError(
                f"without a visual projection the tower's width ({self.vision_config.hidden_size}) is the joint "
                f"embedding size, but projection_dim is {self.projection_dim}."
            )
        if self.adapter_blocks < 0 or self.adapter_expansion < 1:
            raise ValueError(f"bad adapter shape: {self.adapter_blocks} blocks, expansion {self.adapter_expansion}.")

    def to_json_string(self, use_diff: bool = True) -> str:
        """transformers' JSON plus the 4.x names of the text model's rope settings (`rope_theta`, `rope_scaling`):
        4.57 reads only those, 5.x folds them back into `rope_parameters`. Only the file carries them, so the config
        loaded back equals this one (`to_dict` is transformers' own)."""
        data = json.loads(super().to_json_string(use_diff=use_diff))
        if isinstance(data.get("text_config"), dict):
            rope = getattr(self.text_config, "rope_parameters", None)
            data["text_config"] = with_legacy_rope_fields(data["text_config"], rope)
        return json.dumps(data, indent=2, sort_keys=True) + "\n"


__all__ = ["LLM2CLIPConfig", "VISION_TOWER_CONFIGS"]
