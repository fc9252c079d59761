"""EVA02-CLIP vision tower as a transformers model, the image tower of LLM2CLIP's and ProCLIP's EVA02 releases.

Part of the flat Hub payload: imports only torch, transformers and configuration_eva02.py. Architecture as in
eva_clip's EVAVisionTransformer (microsoft/LLM2CLIP llm2clip/eva_clip/eva_vit_model.py, rope.py): patch embedding,
class token and absolute positions; pre-norm blocks whose attention has q and v biases only, 2-D rotary embeddings on
the patch tokens and a LayerNorm between the merged heads and the output projection (sub-LN); SwiGLU MLP with a
LayerNorm on its hidden units; a final LayerNorm, whose class token is the pooled output.

One deliberate departure from transformers' CLIP attention, to match eva_clip: the eager path scales q first and
takes the softmax in the input dtype, not in float32 (`eager_attention_forward`).

Names follow transformers' CLIP vision tower where a part exists there (embeddings.*, encoder.layers.{i}.layer_norm1/2,
self_attn.out_proj, post_layernorm), so layer-wise decay rules and `_no_split_modules` work alike. Layout choices
for speed: q, k and v share one `qkv` matrix (k's bias is a constant zero, never a parameter), as do
the SwiGLU's two input matrices (`w12`: w1 rows, w2 rows, zero rows up to a multiple of 64); and the rotary cos / sin
tables are computed from the config (fp32, then cast), cached per device and dtype, never saved.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GradientCheckpointingLayer, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from .configuration_eva02 import EVA02VisionConfig
from .transformers_compat import model_output
from .transformers_compat import weight_init as init


def eva02_rotary_tables(config: EVA02VisionConfig, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos / sin of shape (1 + g*g, head_dim), fp32: row 0 (the class token) is the identity rotation, then the patch
    grid row-major. Each head's first half rotates with the patch's row, the second half with its column; within a
    half, frequency j drives the interleaved pair (2j, 2j + 1)."""
    half = config.hidden_size // config.num_attention_heads // 2
    exponents = torch.arange(0, half, 2, device=device)[: half // 2].float() / half
    inv_freq = 1.0 / (config.rope_theta**exponents)
    grid = config.image_size // config.patch_size
    positions = torch.arange(grid, device=device, dtype=torch.float32)
    if config.rope_interpolate:  # eva_clip's intp_freq: the grid squeezed onto the pretraining grid
        positions = positions / grid * config.rope_pretrained_grid
    axis = (positions[:, None] * inv_freq[None, :]).repeat_interleave(2, dim=-1)  # (g, half)
    angles = torch.cat([axis[:, None, :].expand(grid, grid, half), axis[None, :, :].expand(grid, grid, half)], dim=-1)
    angles = angles.reshape(grid * grid, 2 * half)
    cos = torch.cat([angles.new_ones(1, 2 * half), angles.cos()])
    sin = torch.cat([angles.new_zeros(1, 2 * half), angles.sin()])
    return cos, sin


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """Rotate each interleaved pair: (x0, x1) -> (x0 cos - x1 sin, x1 cos + x0 sin). With the signs folded into
    `signed_sin` (-sin, +sin, ...) this is x * cos + swap_pairs(x) * signed_sin: three kernels."""
    swapped = x.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)
    return torch.addcmul(x * cos, swapped, signed_sin)


def eager_attention_forward(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """softmax(q k^T * scale) v with the weights returned; (batch, heads, tokens, head_dim) in, (batch, tokens, ...)
    out.

    Departs from transformers' CLIP / SigLIP eager attention on purpose, to follow eva_clip's `Attention`: the scale
    multiplies q before the product (not the product), and the softmax runs in the input dtype (transformers computes
    it in float32, then casts back). In float32 the two agree to rounding; in bf16 / fp16 this is what the released
    EVA02 towers computed. SDPA / flash backends run their own kernels either way.
    """
    weights = torch.matmul(query * scaling, key.transpose(-1, -2))
    if attention_mask is not None:
        weights = weights + attention_mask
    weights = weights.softmax(dim=-1)
    weights = F.dropout(weights, p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


class EVA02VisionEmbeddings(nn.Module):
    def __init__(self, config: EVA02VisionConfig):
        super().__init__()
        self.embed_dim = config.hidden_size
        self.patch_embedding = nn.Conv2d(
            config.num_channels, config.hidden_size, kernel_size=config.patch_size, stride=config.patch_size
        )
        self.class_embedding = nn.Parameter(torch.zeros(config.hidden_size))
        self.num_positions = (config.image_size // config.patch_size) ** 2 + 1
        self.position_embedding = nn.Embedding(self.num_positions, config.hidden_size)
        self.image_size = config.image_size

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if pixel_values.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(
                f"EVA02 tower expects {self.image_size}x{self.image_size} images, got {tuple(pixel_values.shape[-2:])}."
            )
        weight = self.patch_embedding.weight
        patches = self.patch_embedding(pixel_values.to(weight.device, weight.dtype)).flatten(2).transpose(1, 2)
        cls = self.class_embedding.to(patches.dtype).expand(patches.shape[0], 1, -1)
        return torch.cat([cls, patches], dim=1) + self.position_embedding.weight


class EVA02Attention(nn.Module):
    """One fused q/k/v matmul (bias: q_bias, zeros, v_bias), rotary q and k, attention, sub-LN, output projection."""

    def __init__(self, config: EVA02VisionConfig):
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.dropout = config.attention_dropout
        self.is_causal = False
        width = config.hidden_size
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(width))
        self.v_bias = nn.Parameter(torch.zeros(width))
        self.inner_attn_ln = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.out_proj = nn.Linear(width, width)

    def forward(self, hidden_states, rotary, output_attentions: bool = False):
        batch, tokens, width = hidden_states.shape
        bias = torch.cat([self.q_bias, self.q_bias.new_zeros(width), self.v_bias])
        qkv = F.linear(hidden_states, self.qkv.weight, bias).view(batch, tokens, 3, self.num_heads, self.head_dim)
        qkv = qkv.permute(2, 0, 3, 1, 4)  # (3, batch, heads, tokens, head_dim)
        # a no-op unless autocast changed the dtype or a device map put this layer elsewhere
        cos, signed_sin = (table.to(qkv.device, qkv.dtype) for table in rotary)
        qk = apply_rotary(qkv[:2], cos, signed_sin)  # q and k at once; the class token's row is the identity
        query, key, value = qk[0], qk[1], qkv[2]
        implementation = self.config._attn_implementation
        if output_attentions or implementation in (None, "eager"):
            attention = eager_attention_forward
        else:
            attention = ALL_ATTENTION_FUNCTIONS[implementation]  # 4.x's registry has no get_interface
        out, weights = attention(
            self, query, key, value, None, scaling=self.scaling, dropout=self.dropout if self.training else 0.0
        )
        out = self.out_proj(self.inner_attn_ln(out.reshape(batch, tokens, width)))
        return out, weights


def stacked_rows(intermediate_size: int) -> int:
    """Rows of `w12`: w1's and w2's, then zero rows up to a multiple of 64."""
    return 2 * intermediate_size + (-2 * intermediate_size) % 64


class EVA02SwiGLU(nn.Module):
    """w3(ffn_ln(silu(w1 x) * w2 x)), with w1 and w2 stacked into one matmul `w12` (BAAI's fused name).

    `w12` ends in zero rows up to a multiple of 64 outputs (L/14: 2 x 2730 = 5460 -> 5504; B/16's 4096 needs none):
    their outputs are never read, so they get no gradient and stay zero, and GEMM kernels run about a quarter faster
    on that width (measured on CPU, fp32) than on 5460."""

    def __init__(self, config: EVA02VisionConfig):
        super().__init__()
        self.hidden = config.intermediate_size
        self.w12 = nn.Linear(config.hidden_size, stacked_rows(config.intermediate_size))
        self.w12.used_rows = 2 * config.intermediate_size  # what _init_weights keeps; the rest starts at zero
        self.ffn_ln = nn.LayerNorm(config.intermediate_size, eps=config.layer_norm_eps)
        self.w3 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stacked = self.w12(x)
        gate, up = stacked[..., : self.hidden], stacked[..., self.hidden : 2 * self.hidden]
        return self.w3(self.ffn_ln(F.silu(gate) * up))


class EVA02EncoderLayer(GradientCheckpointingLayer):
    """x + attn(norm1(x)), then x + mlp(norm2(x)); no layer scale, no drop path at inference."""

    def __init__(self, config: EVA02VisionConfig):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.self_attn = EVA02Attention(config)
        self.layer_norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = EVA02SwiGLU(config)

    def forward(self, hidden_states, cos, signed_sin, output_attentions: bool = False):
        attended, weights = self.self_attn(self.layer_norm1(hidden_states), (cos, signed_sin), output_attentions)
        hidden_states = hidden_states + attended
        hidden_states = hidden_states + self.mlp(self.layer_norm2(hidden_states))
        return hidden_states, weights


class EVA02Encoder(nn.Module):
    def __init__(self, config: EVA02VisionConfig):
        super().__init__()
        self.layers = nn.ModuleList([EVA02EncoderLayer(config) for _ in range(config.num_hidden_layers)])


class EVA02PreTrainedModel(PreTrainedModel):
    config_class = EVA02VisionConfig
    config: EVA02VisionConfig
    base_model_prefix = "eva02"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _no_split_modules = ["EVA02EncoderLayer"]

    def _init_weights(self, module):
        """Linear / conv normal(initializer_range), zero biases, unit LayerNorms; the class token and positions as
        EVA initialises them (std 0.02)."""
        super()._init_weights(module)
        std = self.config.initializer_range
        if isinstance(module, EVA02VisionEmbeddings):
            init.trunc_normal_(module.class_embedding, std=std)
            init.trunc_normal_(module.position_embedding.weight, std=std)
        elif isinstance(module, EVA02Attention):
            init.zeros_(module.q_bias)
            init.zeros_(module.v_bias)
        elif isinstance(module, nn.Linear) and getattr(module, "used_rows", None) is not None:  # w12's zero rows
            init.zeros_(module.weight[module.used_rows :])
            init.zeros_(module.bias[module.used_rows :])


class EVA02VisionModel(EVA02PreTrainedModel):
    """Returns `BaseModelOutputWithPooling` like `CLIPVisionModel`: last_hidden_state (before the final norm, as
    CLIP's), pooler_output = post_layernorm(class token), hidden_states / attentions when asked."""

    def __init__(self, config: EVA02VisionConfig):
        super().__init__(config)
        self.embeddings = EVA02VisionEmbeddings(config)
        self.encoder = EVA02Encoder(config)
        self.post_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self._rotary_cache: dict = {}
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings.patch_embedding

    def rotary_tables(self, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """The config's cos and signed sin (-sin, +sin per pair) on `device` in `dtype`, computed once in fp32."""
        key = (str(device), dtype)
        if key not in self._rotary_cache:
            cos, sin = eva02_rotary_tables(self.config, device)
            signs = torch.tensor([-1.0, 1.0], device=device).repeat(sin.shape[-1] // 2)
            self._rotary_cache[key] = (cos.to(dtype), (sin * signs).to(dtype))
        return self._rotary_cache[key]

    @model_output
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        *,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling | tuple:
        if pixel_values is None:
            raise ValueError("EVA02VisionModel needs pixel_values.")
        hidden_states = self.embeddings(pixel_values)
        cos, signed_sin = self.rotary_tables(hidden_states.device, hidden_states.dtype)
        all_hidden = (hidden_states,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for layer in self.encoder.layers:
            hidden_states, weights = layer(hidden_states, cos, signed_sin, output_attentions=bool(output_attentions))
            if output_hidden_states:
                all_hidden += (hidden_states,)
            if output_attentions:
                all_attentions += (weights,)
        return BaseModelOutputWithPooling(
            last_hidden_state=hidden_states,
            pooler_output=self.post_layernorm(hidden_states[:, 0]),
            hidden_states=all_hidden,
            attentions=all_attentions,
        )


__all__ = ["EVA02PreTrainedModel", "EVA02VisionModel", "eva02_rotary_tables", "stacked_rows"]
