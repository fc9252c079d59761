"""Random checkpoints in the authors' original formats, for the offline demo and the tests.

They exercise converters exactly like a downloaded file would: same keys, same shapes, same two position tables
(Long-CLIP), with the rows the original never reads filled with large garbage so a wrong merge cannot pass.
"""

from __future__ import annotations

import torch

from .openai_clip import TextShape, VisionShape, expected_text_shapes, expected_vision_shapes

TINY_VISION = VisionShape(width=64, layers=2, heads=1, mlp_width=256, patch_size=8, image_size=32, output_dim=32)
TINY_TEXT = TextShape(width=64, layers=2, heads=1, mlp_width=256, vocab_size=49408, context_length=248, output_dim=32)


def random_openai_clip_state_dict(
    vision: VisionShape = TINY_VISION,
    text: TextShape = TINY_TEXT,
    longclip: bool = True,
    keep: int = 20,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """A random fp32 state dict with OpenAI CLIP keys; `longclip=True` adds `positional_embedding_res`."""
    generator = torch.Generator().manual_seed(seed)
    shapes = {**expected_vision_shapes(vision), **expected_text_shapes(text, with_residual_table=longclip)}
    state_dict = {}
    for key, shape in shapes.items():
        if key.endswith(("ln_1.weight", "ln_2.weight", "ln_pre.weight", "ln_post.weight", "ln_final.weight")):
            value = 1.0 + 0.1 * torch.randn(shape, generator=generator)
        else:
            scale = shape[-1] ** -0.5 if len(shape) > 1 else 0.02
            value = scale * torch.randn(shape, generator=generator)
        state_dict[key] = value
    state_dict["logit_scale"] = torch.tensor(4.6052)
    if longclip:  # rows the original masks out: garbage that would dominate the features if read
        state_dict["positional_embedding"][keep:] = 50.0 * torch.randn(
            text.context_length - keep, text.width, generator=generator
        )
        state_dict["positional_embedding_res"][:keep] = -50.0 * torch.randn(keep, text.width, generator=generator)
    return state_dict


def random_proclip_state_dict(
    vision: VisionShape = TINY_VISION, llm_width: int = 64, blocks: int = 1, expansion: int = 8, seed: int = 0
) -> dict[str, torch.Tensor]:
    """A random ProCLIP release: OpenAI-style `visual.*`, `text.text_adaptor.*` (the authors' code default: one block,
    expansion 8) and `logit_scale`; the LLM is not part of it."""
    from .dual_tower import expected_adapter_shapes

    generator = torch.Generator().manual_seed(seed)
    state_dict = {k: v for k, v in random_openai_clip_state_dict(vision, seed=seed).items() if k.startswith("visual.")}
    for key, shape in expected_adapter_shapes(
        "text.text_adaptor.", blocks, expansion, llm_width, vision.output_dim
    ).items():
        base = 1.0 if key.endswith(("ln.weight", f"{blocks}.weight")) and len(shape) == 1 else 0.0
        state_dict[key] = base + 0.2 * torch.randn(shape, generator=generator)
    state_dict["logit_scale"] = torch.tensor(4.6052)
    return state_dict


TINY_EVA02 = dict(width=64, layers=2, mlp_width=170, patch_size=8, image_size=32, output_dim=32)


def random_eva02_clip_state_dict(
    width: int = 64,
    layers: int = 2,
    mlp_width: int = 170,
    patch_size: int = 8,
    image_size: int = 32,
    output_dim: int = 32,
    llm_width: int = 64,
    blocks: int = 4,
    expansion: int = 2,
    separate_biases: bool = False,
    with_rope_buffers: bool = True,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """A random eva_clip CustomCLIP release in fp16 (LLM2CLIP's EVA02 files, ProCLIP's Eva_L14): `visual.*` with the
    rotary buffers under `visual.rope` and every block, `text.text_adaptor.*`, `logit_scale`. `separate_biases`
    writes BAAI's `attn.q_bias` / `attn.v_bias` instead of `attn.q_proj.bias` / `attn.v_proj.bias`."""
    from ..configuration_eva02 import EVA02VisionConfig
    from ..modeling_eva02 import eva02_rotary_tables
    from .dual_tower import expected_adapter_shapes
    from .eva02 import EVA02Shape, expected_eva02_shapes

    generator = torch.Generator().manual_seed(seed)
    shape = EVA02Shape(width, layers, width // 64, mlp_width, patch_size, image_size, output_dim, separate_biases)
    shapes = {
        **expected_eva02_shapes(shape),
        **expected_adapter_shapes("text.text_adaptor.", blocks, expansion, llm_width, output_dim),
    }
    state_dict = {}
    for key, size in shapes.items():
        if len(size) == 1 and key.endswith("weight"):  # LayerNorms
            value = 1.0 + 0.1 * torch.randn(size, generator=generator)
        else:
            value = (size[-1] ** -0.5 if len(size) > 1 else 0.1) * torch.randn(size, generator=generator)
        state_dict[key] = value
    if with_rope_buffers:
        cos, sin = eva02_rotary_tables(EVA02VisionConfig(**shape.config()))
        for owner in ["visual.rope.", *(f"visual.blocks.{i}.attn.rope." for i in range(layers))]:
            state_dict[owner + "freqs_cos"], state_dict[owner + "freqs_sin"] = cos[1:].clone(), sin[1:].clone()
    state_dict["logit_scale"] = torch.tensor(4.6052)
    return {k: v.half() for k, v in state_dict.items()}


EVA02_WRAPPERS = ("none", "module", "proclip")


def write_eva02_release(path, wrapper: str = "none", **shape) -> dict[str, torch.Tensor]:
    """Save `random_eva02_clip_state_dict(**shape)` as the authors do: bare, as LLM2CLIP's eva_clip loader also accepts
    (`{"module": ...}` with `module.` prefixes), or as ProCLIP's training saves it
    (`{"epoch", "name", "state_dict", "optimizer"}`, `module.` prefixes). Returns the bare state dict."""
    if wrapper not in EVA02_WRAPPERS:
        raise ValueError(f"wrapper must be one of {EVA02_WRAPPERS}, got {wrapper!r}.")
    state_dict = random_eva02_clip_state_dict(**shape)
    prefixed = {f"module.{k}": v for k, v in state_dict.items()}
    packed = {
        "none": state_dict,
        "module": {"module": prefixed},
        "proclip": {
            "epoch": 4,
            "name": "proclip",
            "state_dict": prefixed,
            "optimizer": {"state": {}, "param_groups": []},
        },
    }[wrapper]
    torch.save(packed, path)
    return state_dict
