"""Reading OpenAI-format CLIP checkpoints (OpenAI CLIP, Long-CLIP, the vision half of ProCLIP).

Three jobs, each in one place: load a `.pt` safely and say clearly what is wrong with it; infer every dimension from
the tensor shapes; map the keys to the transformers `CLIPModel` layout. `reference_*` re-implement the original
forward directly on the original keys (plain torch, no transformers), so converters can verify what they built
against something that shares no code with it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..common.errors import CheckpointError
from .state_dicts import count_layers, patch_grid, require_tensor


def head_count(width: int, what: str) -> int:
    if width % 64:
        raise CheckpointError(f"{what} width {width} is not a multiple of 64 (heads = width / 64).")
    return width // 64


@dataclass(frozen=True)
class TowerShape:
    width: int
    layers: int
    heads: int
    mlp_width: int


@dataclass(frozen=True)
class VisionShape(TowerShape):
    patch_size: int
    image_size: int
    output_dim: int


@dataclass(frozen=True)
class TextShape(TowerShape):
    vocab_size: int
    context_length: int
    output_dim: int


def infer_vision_shape(state_dict: dict, prefix: str = "visual.") -> VisionShape:
    if any(k.startswith(f"{prefix}layer1.") for k in state_dict):
        raise CheckpointError("ResNet image towers (RN50, ...) are not supported: only ViT checkpoints.")
    conv = require_tensor(state_dict, f"{prefix}conv1.weight", 4)
    width, patch = conv.shape[0], conv.shape[-1]
    grid = patch_grid(
        require_tensor(state_dict, f"{prefix}positional_embedding", 2).shape[0], f"{prefix}positional_embedding"
    )
    layers = count_layers(state_dict, f"{prefix}transformer.resblocks.")
    mlp_width = require_tensor(state_dict, f"{prefix}transformer.resblocks.0.mlp.c_fc.weight", 2).shape[0]
    output_dim = require_tensor(state_dict, f"{prefix}proj", 2).shape[1]
    return VisionShape(width, layers, head_count(width, "vision"), mlp_width, patch, grid * patch, output_dim)


def infer_text_shape(state_dict: dict) -> TextShape:
    vocab_size, width = require_tensor(state_dict, "token_embedding.weight", 2).shape
    context_length = require_tensor(state_dict, "positional_embedding", 2).shape[0]
    layers = count_layers(state_dict, "transformer.resblocks.")
    mlp_width = require_tensor(state_dict, "transformer.resblocks.0.mlp.c_fc.weight", 2).shape[0]
    output_dim = require_tensor(state_dict, "text_projection", 2).shape[1]
    return TextShape(width, layers, head_count(width, "text"), mlp_width, vocab_size, context_length, output_dim)


def _block_shapes(prefix: str, shape: TowerShape) -> dict[str, tuple[int, ...]]:
    w, m = shape.width, shape.mlp_width
    shapes = {}
    for i in range(shape.layers):
        p = f"{prefix}{i}."
        shapes.update(
            {
                f"{p}ln_1.weight": (w,),
                f"{p}ln_1.bias": (w,),
                f"{p}ln_2.weight": (w,),
                f"{p}ln_2.bias": (w,),
                f"{p}attn.in_proj_weight": (3 * w, w),
                f"{p}attn.in_proj_bias": (3 * w,),
                f"{p}attn.out_proj.weight": (w, w),
                f"{p}attn.out_proj.bias": (w,),
                f"{p}mlp.c_fc.weight": (m, w),
                f"{p}mlp.c_fc.bias": (m,),
                f"{p}mlp.c_proj.weight": (w, m),
                f"{p}mlp.c_proj.bias": (w,),
            }
        )
    return shapes


def expected_vision_shapes(shape: VisionShape, prefix: str = "visual.") -> dict[str, tuple[int, ...]]:
    w = shape.width
    shapes = {
        f"{prefix}conv1.weight": (w, 3, shape.patch_size, shape.patch_size),
        f"{prefix}class_embedding": (w,),
        f"{prefix}positional_embedding": ((shape.image_size // shape.patch_size) ** 2 + 1, w),
        f"{prefix}ln_pre.weight": (w,),
        f"{prefix}ln_pre.bias": (w,),
        f"{prefix}ln_post.weight": (w,),
        f"{prefix}ln_post.bias": (w,),
        f"{prefix}proj": (w, shape.output_dim),
    }
    shapes.update(_block_shapes(f"{prefix}transformer.resblocks.", shape))
    return shapes


def expected_text_shapes(shape: TextShape, with_residual_table: bool) -> dict[str, tuple[int, ...]]:
    w = shape.width
    shapes = {
        "token_embedding.weight": (shape.vocab_size, w),
        "positional_embedding": (shape.context_length, w),
        "ln_final.weight": (w,),
        "ln_final.bias": (w,),
        "text_projection": (w, shape.output_dim),
    }
    if with_residual_table:
        shapes["positional_embedding_res"] = (shape.context_length, w)
    shapes.update(_block_shapes("transformer.resblocks.", shape))
    return shapes


def merged_position_table(state_dict: dict, keep: int) -> torch.Tensor:
    """Long-CLIP's effective text position table: rows < keep of the frozen table, the rest of the trained one."""
    table = state_dict["positional_embedding"]
    if "positional_embedding_res" not in state_dict:
        return table
    return torch.cat([table[:keep], state_dict["positional_embedding_res"][keep:]])


# (OpenAI name, transformers name) pairs: one table, read in both directions.
BLOCK_KEYS = tuple(
    (f"{openai}.{kind}", f"{hf}.{kind}")
    for openai, hf in (
        ("attn.out_proj", "self_attn.out_proj"),
        ("ln_1", "layer_norm1"),
        ("ln_2", "layer_norm2"),
        ("mlp.c_fc", "mlp.fc1"),
        ("mlp.c_proj", "mlp.fc2"),
    )
    for kind in ("weight", "bias")
)
VISION_HEAD_KEYS = (
    ("conv1.weight", "embeddings.patch_embedding.weight"),
    ("class_embedding", "embeddings.class_embedding"),
    ("positional_embedding", "embeddings.position_embedding.weight"),
    ("ln_pre.weight", "pre_layrnorm.weight"),
    ("ln_pre.bias", "pre_layrnorm.bias"),
    ("ln_post.weight", "post_layernorm.weight"),
    ("ln_post.bias", "post_layernorm.bias"),
)


def _map_blocks(state_dict: dict, source: str, target: str, layers: int) -> dict[str, torch.Tensor]:
    """OpenAI residual blocks -> transformers encoder layers (the fused in_proj split into q, k, v)."""
    mapped = {}
    for i in range(layers):
        s, t = f"{source}{i}.", f"{target}{i}."
        for name, weight in zip("qkv", state_dict[f"{s}attn.in_proj_weight"].chunk(3, dim=0)):
            mapped[f"{t}self_attn.{name}_proj.weight"] = weight
        for name, bias in zip("qkv", state_dict[f"{s}attn.in_proj_bias"].chunk(3, dim=0)):
            mapped[f"{t}self_attn.{name}_proj.bias"] = bias
        mapped.update({f"{t}{hf}": state_dict[f"{s}{openai}"] for openai, hf in BLOCK_KEYS})
    return mapped


def vision_to_hf(state_dict: dict, shape: VisionShape, prefix: str = "visual.") -> dict[str, torch.Tensor]:
    """OpenAI `visual.*` keys -> transformers `vision_model.*` + `visual_projection.weight`."""
    mapped = {f"vision_model.{hf}": state_dict[f"{prefix}{openai}"] for openai, hf in VISION_HEAD_KEYS}
    mapped["visual_projection.weight"] = state_dict[f"{prefix}proj"].t()
    mapped.update(
        _map_blocks(state_dict, f"{prefix}transformer.resblocks.", "vision_model.encoder.layers.", shape.layers)
    )
    return {k: v.contiguous() for k, v in mapped.items()}


def text_to_hf(state_dict: dict, shape: TextShape, keep: int) -> dict[str, torch.Tensor]:
    """OpenAI text keys -> transformers `text_model.*` + `text_projection.weight` (position tables merged)."""
    mapped = {
        "text_model.embeddings.token_embedding.weight": state_dict["token_embedding.weight"],
        "text_model.embeddings.position_embedding.weight": merged_position_table(state_dict, keep),
        "text_model.final_layer_norm.weight": state_dict["ln_final.weight"],
        "text_model.final_layer_norm.bias": state_dict["ln_final.bias"],
        "text_projection.weight": state_dict["text_projection"].t(),
    }
    mapped.update(_map_blocks(state_dict, "transformer.resblocks.", "text_model.encoder.layers.", shape.layers))
    return {k: v.contiguous() for k, v in mapped.items()}


def hf_vision_to_openai(state_dict: dict, layers: int, prefix: str = "vision_model.") -> dict[str, torch.Tensor]:
    """transformers `vision_model.*` keys -> OpenAI `visual.*` keys (projection excluded), to run the reference."""
    mapped = {f"visual.{openai}": state_dict[f"{prefix}{hf}"] for openai, hf in VISION_HEAD_KEYS}
    for i in range(layers):
        s, t = f"{prefix}encoder.layers.{i}.", f"visual.transformer.resblocks.{i}."
        mapped[f"{t}attn.in_proj_weight"] = torch.cat([state_dict[f"{s}self_attn.{n}_proj.weight"] for n in "qkv"])
        mapped[f"{t}attn.in_proj_bias"] = torch.cat([state_dict[f"{s}self_attn.{n}_proj.bias"] for n in "qkv"])
        mapped.update({f"{t}{openai}": state_dict[f"{s}{hf}"] for openai, hf in BLOCK_KEYS})
    return mapped


def hf_clip_config_fields(vision: VisionShape, text: TextShape | None) -> dict:
    """`CLIPConfig` keyword arguments (text_config, vision_config, projection_dim) for these shapes."""
    fields = {
        "vision_config": dict(
            hidden_size=vision.width,
            intermediate_size=vision.mlp_width,
            num_hidden_layers=vision.layers,
            num_attention_heads=vision.heads,
            patch_size=vision.patch_size,
            image_size=vision.image_size,
            projection_dim=vision.output_dim,
            hidden_act="quick_gelu",
            layer_norm_eps=1e-5,
        ),
        "projection_dim": vision.output_dim,
    }
    if text is not None:
        fields["text_config"] = dict(
            hidden_size=text.width,
            intermediate_size=text.mlp_width,
            num_hidden_layers=text.layers,
            num_attention_heads=text.heads,
            vocab_size=text.vocab_size,
            max_position_embeddings=text.context_length,
            projection_dim=text.output_dim,
            hidden_act="quick_gelu",
            layer_norm_eps=1e-5,
        )
    return fields


# ---------------------------------------------------------------------------------------------------------------
# Independent reference: the original OpenAI / Long-CLIP forward on the original keys, fp32, no transformers.


def _reference_blocks(x: torch.Tensor, state_dict: dict, prefix: str, layers: int, heads: int, causal: bool):
    for i in range(layers):
        p = f"{prefix}{i}."
        h = F.layer_norm(x, x.shape[-1:], state_dict[f"{p}ln_1.weight"], state_dict[f"{p}ln_1.bias"], 1e-5)
        q, k, v = F.linear(h, state_dict[f"{p}attn.in_proj_weight"], state_dict[f"{p}attn.in_proj_bias"]).chunk(3, -1)
        b, n, w = q.shape
        q, k, v = (t.reshape(b, n, heads, w // heads).transpose(1, 2) for t in (q, k, v))
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(w // heads)
        if causal:
            scores = scores.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
        attended = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, n, w)
        x = x + F.linear(attended, state_dict[f"{p}attn.out_proj.weight"], state_dict[f"{p}attn.out_proj.bias"])
        h = F.layer_norm(x, x.shape[-1:], state_dict[f"{p}ln_2.weight"], state_dict[f"{p}ln_2.bias"], 1e-5)
        h = F.linear(h, state_dict[f"{p}mlp.c_fc.weight"], state_dict[f"{p}mlp.c_fc.bias"])
        h = h * torch.sigmoid(1.702 * h)  # QuickGELU
        x = x + F.linear(h, state_dict[f"{p}mlp.c_proj.weight"], state_dict[f"{p}mlp.c_proj.bias"])
    return x


@torch.no_grad()
def reference_text_features(state_dict: dict, token_ids: torch.Tensor, keep: int = 20) -> torch.Tensor:
    """Original Long-CLIP text forward: ids padded with 0 to the full context, 0/1 masks over the two tables."""
    sd = {k: v.float() for k, v in state_dict.items()}
    context = sd["positional_embedding"].shape[0]
    ids = F.pad(token_ids, (0, context - token_ids.shape[1]), value=0)
    rows = torch.arange(context).unsqueeze(1)
    positions = (
        sd["positional_embedding"] * (rows < keep) if "positional_embedding_res" in sd else sd["positional_embedding"]
    )
    if "positional_embedding_res" in sd:
        positions = positions + sd["positional_embedding_res"] * (rows >= keep)
    x = sd["token_embedding.weight"][ids] + positions
    layers = count_layers(sd, "transformer.resblocks.")
    x = _reference_blocks(x, sd, "transformer.resblocks.", layers, sd["ln_final.weight"].shape[0] // 64, causal=True)
    x = F.layer_norm(x, x.shape[-1:], sd["ln_final.weight"], sd["ln_final.bias"], 1e-5)
    return x[torch.arange(x.shape[0]), ids.argmax(dim=-1)] @ sd["text_projection"]


@torch.no_grad()
def reference_image_features(state_dict: dict, pixel_values: torch.Tensor, prefix: str = "visual.") -> torch.Tensor:
    """Original OpenAI ViT forward: patchify, class token, positions, ln_pre, blocks, ln_post on the class token."""
    sd = {k[len(prefix) :]: v.float() for k, v in state_dict.items() if k.startswith(prefix)}
    x = F.conv2d(pixel_values.float(), sd["conv1.weight"], stride=sd["conv1.weight"].shape[-1])
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([sd["class_embedding"].expand(x.shape[0], 1, -1), x], dim=1) + sd["positional_embedding"]
    x = F.layer_norm(x, x.shape[-1:], sd["ln_pre.weight"], sd["ln_pre.bias"], 1e-5)
    layers = count_layers(sd, "transformer.resblocks.")
    x = _reference_blocks(x, sd, "transformer.resblocks.", layers, sd["ln_pre.weight"].shape[0] // 64, causal=False)
    x = F.layer_norm(x[:, 0], x.shape[-1:], sd["ln_post.weight"], sd["ln_post.bias"], 1e-5)
    return x @ sd["proj"]
