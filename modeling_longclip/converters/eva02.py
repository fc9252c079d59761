"""Reading EVA02-CLIP image towers (eva_clip's CustomCLIP `visual.*`, as in LLM2CLIP's and ProCLIP's `.pt` releases).

Three jobs, as openai_clip.py does for OpenAI towers: infer the shape from the tensors, map the keys onto
`EVA02VisionModel` (modeling_eva02.py) + the visual projection, and an independent reference forward on the original
keys (plain torch, fp32, separate q / k / v, rotary pairs as complex numbers) that converters verify against.

Original tower keys (microsoft/LLM2CLIP llm2clip/eva_clip/eva_vit_model.py): cls_token (1, 1, W), pos_embed (1, g*g+1, W),
patch_embed.proj, blocks.{i}.{norm1, norm2}, attn.{q_proj, k_proj (no bias), v_proj, inner_attn_ln, proj},
mlp.{w1, w2, ffn_ln, w3}, norm, head (W -> D, with bias). The q / v biases are either `attn.q_proj.bias` /
`attn.v_proj.bias` (LLM2CLIP's sub-LN layout) or `attn.q_bias` / `attn.v_bias` (BAAI's); eva_clip's loader renames
the latter into the former. The rotary tables (`rope.freqs_cos` / `freqs_sin`, also under every block) are buffers:
they are not copied, but when present they are checked against the tables the config computes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..common.errors import CheckpointError
from ..configuration_eva02 import EVA02VisionConfig
from ..modeling_eva02 import eva02_rotary_tables, stacked_rows
from .state_dicts import count_layers, patch_grid, require_tensor

EVA02_PREFIX = "visual."
ROPE_BUFFERS = ("rope.freqs_cos", "rope.freqs_sin")
LAYER_NORM_EPS = 1e-6


@dataclass(frozen=True)
class EVA02Shape:
    width: int
    layers: int
    heads: int
    mlp_width: int
    patch_size: int
    image_size: int
    output_dim: int
    separate_biases: bool  # attn.q_bias / attn.v_bias rather than attn.q_proj.bias / attn.v_proj.bias

    def config(self) -> dict:
        """EVA02VisionConfig fields (eva_clip's EVA02 configs: pt_hw_seq_len 16, intp_freq on, eps 1e-6)."""
        return dict(
            hidden_size=self.width,
            intermediate_size=self.mlp_width,
            num_hidden_layers=self.layers,
            num_attention_heads=self.heads,
            patch_size=self.patch_size,
            image_size=self.image_size,
            layer_norm_eps=LAYER_NORM_EPS,
            rope_pretrained_grid=16,
            rope_interpolate=True,
        )

    def describe(self) -> str:
        return (
            f"EVA02 ViT, width {self.width}, {self.layers} layers, {self.heads} heads, patch {self.patch_size}, "
            f"{self.image_size} px, SwiGLU {self.mlp_width}, 2-D rotary"
        )


def infer_eva02_shape(state_dict: dict, prefix: str = EVA02_PREFIX) -> EVA02Shape:
    """Every dimension from the tensors; heads = width / 64 (the head size of every EVA02-CLIP release)."""
    conv = require_tensor(state_dict, f"{prefix}patch_embed.proj.weight", 4)
    width, patch = conv.shape[0], conv.shape[-1]
    grid = patch_grid(require_tensor(state_dict, f"{prefix}pos_embed", 3).shape[1], f"{prefix}pos_embed")
    layers = count_layers(
        {k: v for k, v in state_dict.items() if k.startswith(f"{prefix}blocks.")}, f"{prefix}blocks."
    )
    if layers == 0:
        raise CheckpointError(f"no `{prefix}blocks.*` in the checkpoint.")
    if width % 64:
        raise CheckpointError(f"EVA02 width {width} is not a multiple of 64 (heads = width / 64).")
    mlp_width = require_tensor(state_dict, f"{prefix}blocks.0.mlp.w1.weight", 2).shape[0]
    output_dim = require_tensor(state_dict, f"{prefix}head.weight", 2).shape[0]
    separate = f"{prefix}blocks.0.attn.q_bias" in state_dict
    return EVA02Shape(width, layers, width // 64, mlp_width, patch, grid * patch, output_dim, separate)


def expected_eva02_shapes(shape: EVA02Shape, prefix: str = EVA02_PREFIX) -> dict[str, tuple[int, ...]]:
    """Every weight key of the original tower (rotary buffers excluded: they are optional)."""
    w, m, g = shape.width, shape.mlp_width, shape.image_size // shape.patch_size
    shapes = {
        f"{prefix}cls_token": (1, 1, w),
        f"{prefix}pos_embed": (1, g * g + 1, w),
        f"{prefix}patch_embed.proj.weight": (w, 3, shape.patch_size, shape.patch_size),
        f"{prefix}patch_embed.proj.bias": (w,),
        f"{prefix}norm.weight": (w,),
        f"{prefix}norm.bias": (w,),
        f"{prefix}head.weight": (shape.output_dim, w),
        f"{prefix}head.bias": (shape.output_dim,),
    }
    q_bias, v_bias = (
        ("attn.q_bias", "attn.v_bias") if shape.separate_biases else ("attn.q_proj.bias", "attn.v_proj.bias")
    )
    for i in range(shape.layers):
        p = f"{prefix}blocks.{i}."
        for norm, size in (("norm1", w), ("norm2", w), ("attn.inner_attn_ln", w), ("mlp.ffn_ln", m)):
            shapes[f"{p}{norm}.weight"] = shapes[f"{p}{norm}.bias"] = (size,)
        shapes.update(
            {
                f"{p}attn.q_proj.weight": (w, w),
                f"{p}attn.k_proj.weight": (w, w),
                f"{p}attn.v_proj.weight": (w, w),
                f"{p}{q_bias}": (w,),
                f"{p}{v_bias}": (w,),
                f"{p}attn.proj.weight": (w, w),
                f"{p}attn.proj.bias": (w,),
                f"{p}mlp.w1.weight": (m, w),
                f"{p}mlp.w1.bias": (m,),
                f"{p}mlp.w2.weight": (m, w),
                f"{p}mlp.w2.bias": (m,),
                f"{p}mlp.w3.weight": (w, m),
                f"{p}mlp.w3.bias": (w,),
            }
        )
    return shapes


def is_rope_buffer(key: str) -> bool:
    return key.endswith(ROPE_BUFFERS)


def check_rope_buffers(state_dict: dict, shape: EVA02Shape, source: str, prefix: str = EVA02_PREFIX) -> None:
    """Saved rotary tables (if any) must equal the ones the config computes: a check of the pt_hw_seq_len /
    intp_freq rule on the real file. They are fp16 in fp16 files, hence the tolerance."""
    cos, sin = eva02_rotary_tables(EVA02VisionConfig(**shape.config()))
    for key, value in state_dict.items():
        if key.startswith(prefix) and is_rope_buffer(key):
            table = cos[1:] if key.endswith("freqs_cos") else sin[1:]
            if tuple(value.shape) != tuple(table.shape) or not torch.allclose(value.float(), table, atol=2e-3):
                raise CheckpointError(
                    f"{source}: `{key}` ({list(value.shape)}) differs from the rotary table computed for "
                    f"{shape.image_size} px / patch {shape.patch_size} (pt_hw_seq_len 16, intp_freq)."
                )


def eva02_to_hf(state_dict: dict, shape: EVA02Shape, prefix: str = EVA02_PREFIX) -> dict[str, torch.Tensor]:
    """Original `visual.*` -> `vision_model.*` (EVA02VisionModel) + `visual_projection.{weight,bias}` (the head);
    q / k / v weights stacked into `qkv`, w1 / w2 into `w12` (plus its zero rows)."""
    sd = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
    q_bias, v_bias = (
        ("attn.q_bias", "attn.v_bias") if shape.separate_biases else ("attn.q_proj.bias", "attn.v_proj.bias")
    )
    mapped = {
        "vision_model.embeddings.class_embedding": sd["cls_token"].reshape(-1),
        "vision_model.embeddings.position_embedding.weight": sd["pos_embed"][0],
        "vision_model.embeddings.patch_embedding.weight": sd["patch_embed.proj.weight"],
        "vision_model.embeddings.patch_embedding.bias": sd["patch_embed.proj.bias"],
        "vision_model.post_layernorm.weight": sd["norm.weight"],
        "vision_model.post_layernorm.bias": sd["norm.bias"],
        "visual_projection.weight": sd["head.weight"],
        "visual_projection.bias": sd["head.bias"],
    }
    renames = (
        ("norm1", "layer_norm1"),
        ("norm2", "layer_norm2"),
        ("attn.inner_attn_ln", "self_attn.inner_attn_ln"),
        ("attn.proj", "self_attn.out_proj"),
        ("mlp.ffn_ln", "mlp.ffn_ln"),
        ("mlp.w3", "mlp.w3"),
    )
    for i in range(shape.layers):
        s, t = f"blocks.{i}.", f"vision_model.encoder.layers.{i}."
        mapped[f"{t}self_attn.qkv.weight"] = torch.cat([sd[f"{s}attn.{n}_proj.weight"] for n in "qkv"])
        mapped[f"{t}self_attn.q_bias"] = sd[f"{s}{q_bias}"]
        mapped[f"{t}self_attn.v_bias"] = sd[f"{s}{v_bias}"]
        for kind in ("weight", "bias"):
            w1, w2 = sd[f"{s}mlp.w1.{kind}"], sd[f"{s}mlp.w2.{kind}"]
            padding = w1.new_zeros(stacked_rows(shape.mlp_width) - 2 * shape.mlp_width, *w1.shape[1:])
            mapped[f"{t}mlp.w12.{kind}"] = torch.cat([w1, w2, padding])
        for old, new in renames:
            for kind in ("weight", "bias"):
                mapped[f"{t}{new}.{kind}"] = sd[f"{s}{old}.{kind}"]
    return {k: v.contiguous() for k, v in mapped.items()}


# The HF EvaCLIP port's names (BAAI's configuration_evaclip.py / modeling_evaclip.py, which LLM2CLIP's HF EVA02 repos
# name) for the same tensors, per block and outside the blocks.
HF_EVACLIP_BLOCK_KEYS = (
    ("layer_norm1", "norm1"),
    ("layer_norm2", "norm2"),
    ("self_attn.q_proj", "attn.q_proj"),
    ("self_attn.k_proj", "attn.k_proj"),
    ("self_attn.v_proj", "attn.v_proj"),
    ("self_attn.inner_attn_ln", "attn.inner_attn_ln"),
    ("self_attn.out_proj", "attn.proj"),
    ("mlp.fc1", "mlp.w1"),
    ("mlp.fc2", "mlp.w2"),
    ("mlp.ffn_ln", "mlp.ffn_ln"),
    ("mlp.fc3", "mlp.w3"),
)
HF_EVACLIP_KEYS = (
    ("vision_model.embeddings.patch_embedding.", "visual.patch_embed.proj."),
    ("vision_model.post_layernorm.", "visual.norm."),
    ("visual_projection.", "visual.head."),
    ("text_adapter.adaptor.", "text.text_adaptor."),
)


def hf_eva02_to_original(weights: dict, source: str) -> dict[str, torch.Tensor]:
    """HF EvaCLIP layout (vision_model.embeddings / encoder.layers.{i}.self_attn, mlp.fc1/fc2/fc3, post_layernorm) +
    `visual_projection` + `text_adapter.adaptor.*` -> eva_clip's keys, so one path converts and verifies both. A k bias
    is dropped: q . (k + b) shifts every score of a query by the same q . b, which softmax ignores. Keys it does not
    know keep their names, so the key check names them."""
    if not any(k.startswith("text_adapter.adaptor.") for k in weights):
        raise CheckpointError(
            f"{source}: HF EVA02 weights without a text adapter (`text_adapter.adaptor.*`): LLM2CLIP's HF EVA02 files "
            "hold the vision tower only; convert the eva_clip .pt release (or the folder holding it) instead."
        )
    if "visual_projection.weight" not in weights:
        raise CheckpointError(f"{source}: HF EVA02 weights without `visual_projection.weight` (the EVA head).")
    out = {}
    for key, value in weights.items():
        if key.endswith("position_ids") or (
            key.startswith("vision_model.encoder.layers.") and key.endswith("k_proj.bias")
        ):
            continue
        new = key
        if key == "vision_model.embeddings.class_embedding":
            new, value = "visual.cls_token", value.reshape(1, 1, -1)
        elif key == "vision_model.embeddings.position_embedding.weight":
            new, value = "visual.pos_embed", value.unsqueeze(0)
        elif key.startswith("vision_model.encoder.layers."):
            index, rest = key[len("vision_model.encoder.layers.") :].split(".", 1)
            for hf, original in HF_EVACLIP_BLOCK_KEYS:
                if rest.startswith(hf + "."):
                    new = f"visual.blocks.{index}.{original}{rest[len(hf) :]}"
        else:
            for hf, original in HF_EVACLIP_KEYS:
                if key.startswith(hf):
                    new = original + key[len(hf) :]
        out[new] = value
    if "visual.head.bias" not in out:
        out["visual.head.bias"] = torch.zeros(
            out["visual.head.weight"].shape[0], dtype=out["visual.head.weight"].dtype
        )
    return out


# ---------------------------------------------------------------------------------------------------------------
# Independent reference: EVA02-CLIP's forward written from the formulas on the original keys, fp32, no transformers.


def _rotary_angles(grid: int, half: int, pretrained_grid: int = 16, theta: float = 10000.0) -> torch.Tensor:
    """(g*g, half) angles per patch: first half / 2 frequencies by row, last half / 2 by column (one per pair)."""
    frequencies = theta ** (-torch.arange(half // 2, dtype=torch.float64) * 2 / half)
    rows, cols = torch.meshgrid(
        torch.arange(grid, dtype=torch.float64), torch.arange(grid, dtype=torch.float64), indexing="ij"
    )
    scale = pretrained_grid / grid
    by_row = (rows.reshape(-1, 1) * scale) * frequencies
    by_col = (cols.reshape(-1, 1) * scale) * frequencies
    return torch.cat([by_row, by_col], dim=1).float()


def _rotate_patch_tokens(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """x: (batch, heads, 1 + g*g, head_dim); pairs (2j, 2j+1) of each patch token multiplied by exp(i * angle_j)."""
    patches = torch.view_as_complex(x[:, :, 1:].reshape(*x.shape[:2], x.shape[2] - 1, -1, 2).contiguous())
    rotated = torch.view_as_real(patches * torch.polar(torch.ones_like(angles), angles)).flatten(-2)
    return torch.cat([x[:, :, :1], rotated], dim=2)


@torch.no_grad()
def reference_eva02_image_features(
    state_dict: dict, pixel_values: torch.Tensor, prefix: str = EVA02_PREFIX
) -> torch.Tensor:
    """eva_clip EVAVisionTransformer + head: patchify, class token, positions, blocks, norm, class token, head."""
    sd = {k[len(prefix) :]: v.float() for k, v in state_dict.items() if k.startswith(prefix) and not is_rope_buffer(k)}
    shape = infer_eva02_shape({prefix + k: v for k, v in sd.items()}, prefix)
    heads, head_dim = shape.heads, shape.width // shape.heads
    x = F.conv2d(
        pixel_values.float(), sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=shape.patch_size
    )
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([sd["cls_token"].expand(x.shape[0], -1, -1), x], dim=1) + sd["pos_embed"]
    angles = _rotary_angles(shape.image_size // shape.patch_size, head_dim // 2)  # one angle per pair of a head
    b, n, w = x.shape

    def ln(t, name):
        return F.layer_norm(t, t.shape[-1:], sd[f"{name}.weight"], sd[f"{name}.bias"], LAYER_NORM_EPS)

    def split(t):
        return t.reshape(b, n, heads, head_dim).transpose(1, 2)

    for i in range(shape.layers):
        p = f"blocks.{i}."
        q_bias = sd.get(f"{p}attn.q_bias", sd.get(f"{p}attn.q_proj.bias"))
        v_bias = sd.get(f"{p}attn.v_bias", sd.get(f"{p}attn.v_proj.bias"))
        h = ln(x, f"{p}norm1")
        q = split(F.linear(h, sd[f"{p}attn.q_proj.weight"], q_bias))
        k = split(F.linear(h, sd[f"{p}attn.k_proj.weight"]))
        v = split(F.linear(h, sd[f"{p}attn.v_proj.weight"], v_bias))
        q, k = _rotate_patch_tokens(q, angles), _rotate_patch_tokens(k, angles)
        attention = ((q @ k.transpose(-1, -2)) / math.sqrt(head_dim)).softmax(dim=-1)
        merged = (attention @ v).transpose(1, 2).reshape(b, n, w)
        x = x + F.linear(ln(merged, f"{p}attn.inner_attn_ln"), sd[f"{p}attn.proj.weight"], sd[f"{p}attn.proj.bias"])
        h = ln(x, f"{p}norm2")
        gated = F.silu(F.linear(h, sd[f"{p}mlp.w1.weight"], sd[f"{p}mlp.w1.bias"])) * F.linear(
            h, sd[f"{p}mlp.w2.weight"], sd[f"{p}mlp.w2.bias"]
        )
        x = x + F.linear(ln(gated, f"{p}mlp.ffn_ln"), sd[f"{p}mlp.w3.weight"], sd[f"{p}mlp.w3.bias"])
    pooled = ln(x, "norm")[:, 0]
    return F.linear(pooled, sd["head.weight"], sd["head.bias"])
