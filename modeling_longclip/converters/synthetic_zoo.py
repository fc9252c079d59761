"""Random releases in the remaining original layouts, tiny, for tests and the offline zoo run: LLM2CLIP's SigLIP2
CustomCLIP file, a PEFT LoRA adapter for a Llama folder, and the LLM2CLIP CLIP-part repo (HF CLIP vision keys)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from .dual_tower import expected_adapter_shapes
from .openai_clip import VisionShape, vision_to_hf
from .siglip2 import ADAPTER_PREFIX, SiglipShape, expected_trunk_shapes
from .synthetic import TINY_VISION, random_openai_clip_state_dict

TINY_SIGLIP = SiglipShape(width=128, layers=2, heads=2, mlp_width=160, patch_size=8, image_size=32)  # heads: 128 // 64


def _random(shapes: dict, generator: torch.Generator, norm_suffixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Random tensors; LayerNorm weights near 1 so features stay well scaled through the blocks."""
    out = {}
    for key, shape in shapes.items():
        if key.endswith(norm_suffixes) and len(shape) == 1:
            out[key] = 1.0 + 0.1 * torch.randn(shape, generator=generator)
        else:
            scale = shape[-1] ** -0.5 if len(shape) > 1 else 0.05
            out[key] = scale * torch.randn(shape, generator=generator)
    return out


def random_siglip2_release(
    shape: SiglipShape = TINY_SIGLIP,
    llm_width: int = 64,
    blocks: int = 4,
    expansion: int = 2,
    seed: int = 0,
    logit_bias: bool = False,
) -> dict[str, torch.Tensor]:
    """LLM2CLIP's SigLIP2 CustomCLIP state dict: timm trunk under `visual.trunk.`, the TextProj adapter under
    `text.text_proj.text_adaptor.` (mapping to the tower width: no image projection), `logit_scale`."""
    generator = torch.Generator().manual_seed(seed)
    shapes = {
        **expected_trunk_shapes(shape),
        **expected_adapter_shapes(ADAPTER_PREFIX, blocks, expansion, llm_width, shape.width),
    }
    state_dict = _random(
        shapes, generator, ("norm1.weight", "norm2.weight", "norm.weight", "ln.weight", f"{blocks}.weight")
    )
    state_dict["logit_scale"] = torch.tensor(4.6052)
    if logit_bias:
        state_dict["logit_bias"] = torch.tensor(-10.0)
    return state_dict


def write_lora_adapter(llm_folder: str | Path, output: str | Path, r: int = 4, alpha: int = 8, seed: int = 0) -> Path:
    """A PEFT LoRA on every linear projection of the Llama in `llm_folder` (as LLM2CLIP's stage 1 trains it), with
    random A and B (peft starts B at zero, which would make the merge a no-op), saved with peft."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModel

    model = AutoModel.from_pretrained(llm_folder, dtype=torch.float32)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    peft_model = get_peft_model(model, LoraConfig(r=r, lora_alpha=alpha, target_modules=targets, lora_dropout=0.0))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.copy_(0.2 * torch.randn(param.shape, generator=generator))
    peft_model.save_pretrained(output)
    return Path(output)


def write_llm2clip_clip_part(
    folder: str | Path, vision: VisionShape = TINY_VISION, llm_width: int = 64, projection_dim: int = 40, seed: int = 0
) -> Path:
    """The LLM2CLIP CLIP repo (microsoft/LLM2CLIP-Openai-*): model.safetensors with HF CLIP `vision_model.*`, a new
    `visual_projection.weight` [projection_dim, width], `text_adapter.adaptor.*` (4 blocks x 2), `logit_scale`, and a
    config.json of model_type "clip"."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    visual = {k: v for k, v in random_openai_clip_state_dict(vision, seed=seed).items() if k.startswith("visual.")}
    weights = {k: v for k, v in vision_to_hf(visual, vision).items() if k != "visual_projection.weight"}
    weights["visual_projection.weight"] = vision.width**-0.5 * torch.randn(
        projection_dim, vision.width, generator=generator
    )
    adapter = expected_adapter_shapes("text_adapter.adaptor.", 4, 2, llm_width, projection_dim)
    weights.update(_random(adapter, generator, ("ln.weight", "4.weight")))
    weights["logit_scale"] = torch.tensor(4.6052)
    save_file({k: v.contiguous() for k, v in weights.items()}, folder / "model.safetensors")
    config = {
        "model_type": "clip",
        "projection_dim": projection_dim,
        "vision_config": {
            "hidden_size": vision.width,
            "num_attention_heads": vision.heads,
            "hidden_act": "quick_gelu",
            "layer_norm_eps": 1e-5,
        },
    }
    (folder / "config.json").write_text(json.dumps(config))
    return folder
