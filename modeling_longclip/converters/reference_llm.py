"""Independent references for the LLM2CLIP / ProCLIP text path, in plain torch on the original weight names.

`reference_bidirectional_llama` is a Llama decoder written from the architecture (RMSNorm, rotary embeddings with
optional Llama-3 frequency scaling, grouped-query attention without a causal mask, SwiGLU), run on a LlamaModel state
dict; `reference_adapter` is the LLM2CLIP adapter from REFERENCE 2.1 on `adaptor.*` keys. Converters check what they
built against these; they share no code with transformers' modeling or with modeling_llm2clip.py.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def _inverse_frequencies(head_dim: int, theta: float, rope_scaling: dict | None) -> torch.Tensor:
    inv = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    if rope_scaling and rope_scaling.get("rope_type", rope_scaling.get("type")) == "llama3":
        factor, low, high = rope_scaling["factor"], rope_scaling["low_freq_factor"], rope_scaling["high_freq_factor"]
        old = rope_scaling["original_max_position_embeddings"]
        wavelength = 2 * math.pi / inv
        smooth = (old / wavelength - low) / (high - low)
        scaled = torch.where(wavelength > old / low, inv / factor, inv)
        middle = (wavelength <= old / low) & (wavelength >= old / high)
        inv = torch.where(middle, (1 - smooth) * inv / factor + smooth * inv, scaled)
    return inv


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


@torch.no_grad()
def reference_bidirectional_llama(state_dict: dict, config, input_ids: torch.Tensor, attention_mask: torch.Tensor):
    """Final hidden states (after the last RMSNorm) of a Llama run with a padding mask and no causal mask, fp32.

    Positions are 0..n-1 over the padded row, as transformers and llm2vec use them with left padding (rotary
    attention only sees relative offsets, so the padding length does not change the result).
    """
    sd = {k.removeprefix("model."): v.float() for k, v in state_dict.items()}
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    eps = config.rms_norm_eps
    batch, length = input_ids.shape
    theta = getattr(config, "rope_theta", None) or (config.rope_parameters or {}).get("rope_theta", 10000.0)
    scaling = getattr(config, "rope_scaling", None) or getattr(config, "rope_parameters", None)
    angles = torch.arange(length, dtype=torch.float64).unsqueeze(1) * _inverse_frequencies(head_dim, theta, scaling)
    angles = torch.cat([angles, angles], dim=-1)
    cos, sin = angles.cos().float(), angles.sin().float()
    blocked = ~attention_mask.bool()[:, None, None, :]

    x = sd["embed_tokens.weight"][input_ids]
    layer = 0
    while f"layers.{layer}.input_layernorm.weight" in sd:
        p = f"layers.{layer}."
        h = _rms_norm(x, sd[f"{p}input_layernorm.weight"], eps)
        q, k, v = (
            F.linear(h, sd[f"{p}self_attn.{name}_proj.weight"], sd.get(f"{p}self_attn.{name}_proj.bias"))
            for name in ("q", "k", "v")
        )
        q = _rotate(q.view(batch, length, heads, head_dim).transpose(1, 2), cos, sin)
        k = _rotate(k.view(batch, length, kv_heads, head_dim).transpose(1, 2), cos, sin)
        v = v.view(batch, length, kv_heads, head_dim).transpose(1, 2)
        k, v = (t.repeat_interleave(heads // kv_heads, dim=1) for t in (k, v))
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(head_dim)
        attended = scores.masked_fill(blocked, float("-inf")).softmax(-1) @ v
        attended = attended.transpose(1, 2).reshape(batch, length, heads * head_dim)
        x = x + F.linear(attended, sd[f"{p}self_attn.o_proj.weight"], sd.get(f"{p}self_attn.o_proj.bias"))
        h = _rms_norm(x, sd[f"{p}post_attention_layernorm.weight"], eps)
        gate, up = F.linear(h, sd[f"{p}mlp.gate_proj.weight"]), F.linear(h, sd[f"{p}mlp.up_proj.weight"])
        x = x + F.linear(F.silu(gate) * up, sd[f"{p}mlp.down_proj.weight"])
        layer += 1
    return _rms_norm(x, sd["norm.weight"], eps)


def reference_mean_pool(hidden: torch.Tensor, pooling_mask: torch.Tensor) -> torch.Tensor:
    """llm2vec's mean: per row, `torch.mean` over the pooled positions in the hidden states' dtype, then float32."""
    rows = [h[m.bool()].mean(dim=0) if m.any() else h.new_zeros(h.shape[-1]) for h, m in zip(hidden, pooling_mask)]
    return torch.stack(rows).float()


@torch.no_grad()
def reference_adapter(state_dict: dict, prefix: str, pooled: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """REFERENCE 2.1: L2-normalize (not for LLM2CLIP's SigLIP2 release, whose TextProj runs with `l2_norm=False`),
    pre-LN residual MLP blocks (exact GELU), LayerNorm, Linear."""
    sd = {k[len(prefix) :]: v.float() for k, v in state_dict.items() if k.startswith(prefix)}
    x = pooled.float()
    x = x / x.norm(dim=-1, keepdim=True) if normalize else x
    block = 0
    while f"{block}.fn.0.weight" in sd:
        h = F.layer_norm(x, x.shape[-1:], sd[f"{block}.ln.weight"], sd[f"{block}.ln.bias"], 1e-5)
        h = F.linear(
            F.gelu(F.linear(h, sd[f"{block}.fn.0.weight"], sd[f"{block}.fn.0.bias"])),
            sd[f"{block}.fn.3.weight"],
            sd[f"{block}.fn.3.bias"],
        )
        x = x + h
        block += 1
    x = F.layer_norm(x, x.shape[-1:], sd[f"{block}.weight"], sd[f"{block}.bias"], 1e-5)
    return F.linear(x, sd[f"{block + 1}.weight"], sd[f"{block + 1}.bias"])
