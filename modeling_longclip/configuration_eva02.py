"""EVA02-CLIP vision tower configuration (LLM2CLIP's EVA02 releases, ProCLIP's Eva_L14).

Part of the flat Hub payload: imports only transformers and transformers_compat.py. The fields mirror eva_clip's `vision_cfg` (model_configs/
EVA02-CLIP-*.json in microsoft/LLM2CLIP): `rope_pretrained_grid` is its `pt_hw_seq_len` and `rope_interpolate` its
`intp_freq`, which together decide the rotary tables a 224 or 336 px model was trained with.
"""

from .transformers_compat import PreTrainedConfig, finish_post_init, portable_config


@portable_config
class EVA02VisionConfig(PreTrainedConfig):
    r"""
    hidden_size (`int`, defaults to 1024): width W (B/16: 768, L/14: 1024).
    intermediate_size (`int`, defaults to 2730): SwiGLU hidden size, int(W * 2.6667) in the releases.
    num_hidden_layers (`int`, defaults to 24) / num_attention_heads (`int`, defaults to 16): head size W / heads (64).
    image_size (`int`, defaults to 224) / patch_size (`int`, defaults to 14) / num_channels (`int`, defaults to 3).
    layer_norm_eps (`float`, defaults to 1e-6): every LayerNorm of the tower.
    rope_theta (`float`, defaults to 10000.0): base of the rotary frequencies (half a head per image axis).
    rope_pretrained_grid (`int`, defaults to 16): eva_clip's `pt_hw_seq_len`, the grid the frequencies were made for.
    rope_interpolate (`bool`, defaults to True): eva_clip's `intp_freq`: positions arange(g) / g * rope_pretrained_grid
        for a g x g patch grid; without it, integer positions arange(g).
    attention_dropout (`float`, defaults to 0.0) / initializer_range (`float`, defaults to 0.02).
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
