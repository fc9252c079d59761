"""EVA02-CLIP vision tower configuration (LLM2CLIP's EVA02 releases, ProCLIP's Eva_L14).

Part of the flat Hub payload: imports only transformers and transformers_compat.py. The fields mirror eva_clip's `vision_cfg` (model_configs/
EVA02-CLIP-*.json in microsoft/LLM2CLIP): `rope_pretrained_grid` is its `pt_hw_seq_len` and `rope_interpolate` its
`intp_freq`, which together decide the rotary tables a 224 or 336 px model was trained with.
"""

from .transformers_compat import PreTrainedConfig, finish_post_init, portable_config


@portable_config
class EVA02VisionConfig(PreTrainedConfig):
    r"""
    Configuration of an [`EVA02VisionModel`], the EVA02-CLIP image tower of LLM2CLIP's EVA02 releases and ProCLIP's
    Eva_L14. The defaults describe EVA02-CLIP-L/14 at 224 px (eva_clip's `EVA02-CLIP-L-14.json`).

    Args:
        hidden_size (`int`, *optional*, defaults to 1024):
            Width W of the tower (B/16: 768, L/14: 1024).
        intermediate_size (`int`, *optional*, defaults to 2730):
            Hidden size of the SwiGLU MLP, int(W * 2.6667) in the releases (B/16: 2048).
        num_hidden_layers (`int`, *optional*, defaults to 24):
            Number of encoder layers (B/16: 12).
        num_attention_heads (`int`, *optional*, defaults to 16):
            Attention heads per layer; the head size W / heads (64 in the releases) must be divisible by 4.
        image_size (`int`, *optional*, defaults to 224):
            Side of the square input image in pixels (224 or 336).
        patch_size (`int`, *optional*, defaults to 14):
            Side of the square patches (B/16: 16).
        num_channels (`int`, *optional*, defaults to 3):
            Channels of the input image.
        layer_norm_eps (`float`, *optional*, defaults to 1e-06):
            Epsilon of every LayerNorm of the tower (blocks, sub-LN, SwiGLU norm, final norm).
        rope_theta (`float`, *optional*, defaults to 10000.0):
            Base of the 2-D rotary frequencies (half a head per image axis).
        rope_pretrained_grid (`int`, *optional*, defaults to 16):
            eva_clip's `pt_hw_seq_len`: the patch grid the rotary frequencies were made for.
        rope_interpolate (`bool`, *optional*, defaults to `True`):
            eva_clip's `intp_freq`: positions arange(g) / g * rope_pretrained_grid for a g x g patch grid; without it,
            integer positions arange(g).
        attention_dropout (`float`, *optional*, defaults to 0.0):
            Dropout on the attention weights (training only).
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the normal initialisation of weights, class token and positions.

    Example:

    ```python
    >>> from modeling_longclip import EVA02VisionConfig, EVA02VisionModel

    >>> # an EVA02-CLIP-B/16 tower at 224 px, randomly initialised
    >>> config = EVA02VisionConfig(
    ...     hidden_size=768, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=12, patch_size=16
    ... )
    >>> model = EVA02VisionModel(config)
    >>> model.config.image_size // model.config.patch_size
    14
    ```
    """

    model_type = "eva02_clip_vision"
    base_config_key = "vision_config"

    hidden_size: int = 1024
    intermediate_size: int = 2730
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    image_size: int = 224
    patch_size: int = 14
    num_channels: int = 3
    layer_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_pretrained_grid: int = 16
    rope_interpolate: bool = True
    attention_dropout: float = 0.0
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        finish_post_init(super(), kwargs)
        head_dim, rest = divmod(self.hidden_size, self.num_attention_heads)
        if rest or head_dim % 4:
            raise ValueError(
                f"EVA02 needs a head size divisible by 4 (two rotary axes of pairs): hidden_size {self.hidden_size}, "
                f"{self.num_attention_heads} heads."
            )
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}.")


__all__ = ["EVA02VisionConfig"]
