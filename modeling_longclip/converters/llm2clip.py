"""Convert LLM2CLIP (released CLIP part + LLM text repo) into one self-contained folder, verified first.

Besides the HF-layout OpenAI-ViT release, this reads eva_clip `CustomCLIP` files (`convert_release`: the EVA02
releases, and ProCLIP's files through converters/proclip.py) and hands LLM2CLIP's SigLIP2 release to siglip2.py.
The pieces every dual-tower converter shares live in dual_tower.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..common.errors import CheckpointError, ConversionError
from ..common.files import ensure_writable
from ..configuration_llm2clip import LLM2CLIPConfig
from ..export.folder import write_model_folder
from ..modeling_llm2clip import LLM2CLIPModel
from .clip_preprocessing import clip_image_processor
from .dual_tower import (
    DualTowerParity,
    adapter_shape,
    dual_tower_card,
    expected_adapter_shapes,
    load_into,
    load_text_tower,
    load_weights_folder,
    make_processor,
    refuse_converted_folder,
    refuse_without_adapter,
    resolve_source,
    verify_dual_tower,
)
from .eva02 import (
    check_rope_buffers,
    eva02_to_hf,
    expected_eva02_shapes,
    hf_eva02_to_original,
    infer_eva02_shape,
    is_rope_buffer,
    reference_eva02_image_features,
)
from .openai_clip import (
    expected_vision_shapes,
    hf_clip_config_fields,
    hf_vision_to_openai,
    infer_vision_shape,
    vision_to_hf,
)
from .state_dicts import check_keys, count_layers, load_state_dict


def detect_vision_tower(weights: dict) -> str:
    """Which image tower a checkpoint holds, from its keys: "siglip2" (timm trunk under `visual.trunk.`), "eva02"
    (eva_clip's `visual.pos_embed` / `visual.blocks.*`, or the HF EvaCLIP port's sub-LN keys) or "clip" (OpenAI
    `visual.conv1` or transformers' `vision_model.*`)."""
    keys = list(weights)
    if any(k.startswith("visual.trunk.") for k in keys):
        return "siglip2"
    if "visual.pos_embed" in weights or any(k.startswith("visual.blocks.") for k in keys):
        return "eva02"
    if any(k.startswith("vision_model.encoder.layers.") and ".inner_attn_ln." in k for k in keys):
        return "eva02"
    return "clip"


ADAPTER_KEYS = ("text_adapter.adaptor.", "text.text_adaptor.")


def load_clip_part(clip: str | Path) -> tuple[dict[str, torch.Tensor], Path | None]:
    """The released weights: a `.pt` file itself, or a folder / Hub repo holding safetensors / pytorch_model.bin /
    `.pt` files; where several exist, the one that carries the text adapter (the vision-only HF files of the EVA02
    repos do not)."""
    path = Path(clip)
    if path.is_file():
        return load_state_dict(path), None
    refuse_converted_folder(path, "--clip")
    folder = resolve_source(clip, "--clip")
    candidates = []
    try:
        candidates.append(load_weights_folder(folder))
    except CheckpointError:
        pass
    if not candidates or not _has_adapter(candidates[0]):
        for file in sorted([*folder.glob("*.pt"), *folder.glob("*.pth")]):
            weights = load_state_dict(file)
            if _has_adapter(weights):
                return weights, folder
            candidates.append(weights)
    if not candidates:
        raise CheckpointError(f"{folder}: no model.safetensors, pytorch_model.bin or .pt checkpoint.")
    return candidates[0], folder


def _has_adapter(weights: dict) -> bool:
    return any(k.startswith(ADAPTER_KEYS) for k in weights)


def convert_llm2clip(
    clip: str | Path,
    llm: str | Path,
    output: str | Path,
    dtype: str = "float32",
    external_llm: bool = False,
    overwrite: bool = False,
    lora: str | Path | None = None,
    no_lora: bool = False,
    num_heads: int | None = None,
) -> DualTowerParity:
    """Released LLM2CLIP CLIP part + LLM folder -> one verified LLM2CLIP folder. The CLIP part is the OpenAI-ViT HF
    repo (model_type "clip": vision_model.*, visual_projection.weight, text_adapter.adaptor.*, logit_scale), or an
    eva_clip CustomCLIP `.pt` (visual.*, text.text_adaptor.*, logit_scale; EVA02 or OpenAI-style ViT), a folder
    holding it, or EVA02 weights in the HF EvaCLIP layout with an adapter; or the SigLIP2 release (siglip2.py), the
    only one `lora`, `no_lora` and `num_heads` apply to (see `convert_llm2clip_siglip2`)."""
    from .siglip2 import convert_llm2clip_siglip2, is_siglip2_source

    siglip2_options = {"lora": lora, "no_lora": no_lora, "num_heads": num_heads}
    if is_siglip2_source(clip):  # the SigLIP2 release is an eva_clip CustomCLIP file with a timm tower
        return convert_llm2clip_siglip2(
            clip, llm, output, dtype=dtype, external_llm=external_llm, overwrite=overwrite, **siglip2_options
        )
    given = [f"--{name.replace('_', '-')}" for name, value in siglip2_options.items() if value not in (None, False)]
    if given:
        raise ConversionError(
            f"{' / '.join(given)}: only for LLM2CLIP's SigLIP2 release, and --clip {clip} is not it."
        )
    ensure_writable(output, overwrite)
    raw, clip_folder = load_clip_part(clip)
    tower = detect_vision_tower(raw)
    if tower == "siglip2":  # a SigLIP2 trunk in a file is_siglip2_source did not recognise as the release
        raise ConversionError(
            f"--clip {clip}: a siglip2 image tower, but not in the layout of LLM2CLIP's SigLIP2 release."
        )
    if tower == "eva02" and "visual.pos_embed" not in raw:
        raw = hf_eva02_to_original(raw, str(clip))
    if any(k.startswith("visual.") for k in raw):  # an eva_clip CustomCLIP file (EVA02 releases, retrained baselines)
        return convert_release(
            raw,
            str(clip),
            llm,
            output,
            LLM2CLIPConfig,
            LLM2CLIPModel,
            "llm2clip",
            dtype=dtype,
            external_llm=external_llm,
            overwrite=overwrite,
        )
    clip_folder = clip_folder or Path(clip)
    refuse_without_adapter(raw, ADAPTER_KEYS, str(clip_folder))
    weights = {k: v.float() for k, v in raw.items() if not k.endswith("position_ids")}
    for key in ("vision_model.embeddings.patch_embedding.weight", "visual_projection.weight", "logit_scale"):
        if key not in weights:
            raise CheckpointError(f"{clip_folder}: missing key `{key}` (not an LLM2CLIP CLIP checkpoint?).")
    blocks, expansion, llm_width, projection_dim = adapter_shape(weights, "text_adapter.adaptor.")
    tower = load_text_tower(llm)
    if tower.config.hidden_size != llm_width:
        raise CheckpointError(
            f"the adapter expects {llm_width}-d text embeddings but {llm} has hidden size {tower.config.hidden_size}."
        )
    vision_config = vision_config_from(weights, clip_folder if clip_folder.is_dir() else None)
    config = LLM2CLIPConfig(
        vision_config=vision_config,
        text_config=tower.config.to_dict(),
        projection_dim=projection_dim,
        adapter_blocks=blocks,
        adapter_expansion=expansion,
        logit_scale_init_value=float(weights["logit_scale"]),
    )
    model = LLM2CLIPModel(config).eval()
    load_into(model, weights, tower, external_llm)
    processor = make_processor(
        tower.tokenizer, vision_config["image_size"], clip_image_processor(vision_config["image_size"], "transformers")
    )
    openai_vision = hf_vision_to_openai(weights, vision_config["num_hidden_layers"])
    openai_vision["visual.proj"] = weights["visual_projection.weight"].t()
    parity = verify_dual_tower(model, processor, tower, weights, "text_adapter.adaptor.", openai_vision)
    vision = (
        f"ViT, width {vision_config['hidden_size']}, {vision_config['num_hidden_layers']} layers, "
        f"patch {vision_config['patch_size']}, {vision_config['image_size']} px"
    )
    card = dual_tower_card("llm2clip", f"`{clip}` + `{llm}`", model, tower, vision, dtype, parity)
    write_model_folder(model, processor, output, card, dtype=dtype, overwrite=overwrite)
    return parity


def vision_config_from(weights: dict, folder: Path | None = None, prefix: str = "vision_model.") -> dict:
    """CLIPVisionConfig fields from the shapes (activation and LayerNorm epsilon from config.json when present)."""
    patch = weights[f"{prefix}embeddings.patch_embedding.weight"]
    width, patch_size = patch.shape[0], patch.shape[-1]
    positions = weights[f"{prefix}embeddings.position_embedding.weight"].shape[0]
    layers = count_layers({k: v for k, v in weights.items() if k.startswith(prefix)}, f"{prefix}encoder.layers.")
    saved = {}
    if folder is not None and (folder / "config.json").is_file():
        saved = json.loads((folder / "config.json").read_text()).get("vision_config", {}) or {}
    return dict(
        hidden_size=width,
        patch_size=patch_size,
        image_size=int(round((positions - 1) ** 0.5)) * patch_size,
        num_hidden_layers=layers,
        num_attention_heads=saved.get("num_attention_heads", width // 64),
        intermediate_size=weights[f"{prefix}encoder.layers.0.mlp.fc1.weight"].shape[0],
        hidden_act=saved.get("hidden_act", "quick_gelu"),
        layer_norm_eps=saved.get("layer_norm_eps", 1e-5),
    )


@dataclass
class ReleasedImageTower:
    """One released image tower as a converter needs it; `weights` is called only after the key check passed."""

    expected: dict
    ignored: frozenset
    weights: Callable[[], dict]
    config: dict
    output_dim: int
    image_size: int
    description: str
    reference: Callable


def released_image_tower(state_dict: dict) -> ReleasedImageTower:
    """The image tower of an authors' `.pt` (fp32 state dict): OpenAI-style `visual.*` (ProCLIP) or eva_clip's EVA02."""
    tower = detect_vision_tower(state_dict)
    if tower == "eva02":
        eva = infer_eva02_shape(state_dict)
        check_rope_buffers(state_dict, eva, "the checkpoint")
        return ReleasedImageTower(
            expected_eva02_shapes(eva),
            frozenset(k for k in state_dict if is_rope_buffer(k)),
            lambda: eva02_to_hf(state_dict, eva),
            dict(vision_tower="eva02", vision_config=eva.config(), visual_projection_bias=True),
            eva.output_dim,
            eva.image_size,
            eva.describe(),
            lambda pixels: reference_eva02_image_features(state_dict, pixels),
        )
    if tower != "clip":
        raise CheckpointError(f"a {tower} image tower; these releases use OpenAI-CLIP or EVA02 towers.")
    vit = infer_vision_shape(state_dict)
    return ReleasedImageTower(
        expected_vision_shapes(vit),
        frozenset(),
        lambda: vision_to_hf(state_dict, vit),
        dict(vision_config=hf_clip_config_fields(vit, None)["vision_config"]),
        vit.output_dim,
        vit.image_size,
        f"ViT, width {vit.width}, {vit.layers} layers, patch {vit.patch_size}, {vit.image_size} px",
        state_dict,
    )


def convert_release(
    state_dict: dict,
    source: str,
    llm: str | Path,
    output: str | Path,
    config_class,
    model_class,
    card_template: str,
    dtype: str = "float32",
    external_llm: bool = False,
    overwrite: bool = False,
    adapter_prefix: str = "text.text_adaptor.",
) -> DualTowerParity:
    """An authors' CustomCLIP state dict (visual.*, text.text_adaptor.*, logit_scale: ProCLIP's files, LLM2CLIP's EVA02
    files) + its LLM -> one verified folder. Every key and shape is checked before the LLM is even read."""
    state_dict = {k: v.float() for k, v in state_dict.items()}
    refuse_without_adapter(state_dict, (adapter_prefix,), source)
    try:
        image = released_image_tower(state_dict)
        blocks, expansion, width, output_dim = adapter_shape(state_dict, adapter_prefix)
    except CheckpointError as error:
        raise CheckpointError(f"{source}: {error}") from None
    if output_dim != image.output_dim:
        raise CheckpointError(
            f"{source}: the adapter maps to {output_dim} dims but the image tower projects to {image.output_dim}."
        )
    expected = {
        **image.expected,
        **expected_adapter_shapes(adapter_prefix, blocks, expansion, width, output_dim),
        "logit_scale": (),
    }
    check_keys({k: v for k, v in state_dict.items() if k not in image.ignored}, expected, source)
    tower = load_text_tower(llm)
    if tower.config.hidden_size != width:
        raise CheckpointError(
            f"the adapter expects {width}-d text embeddings but {llm} has hidden size {tower.config.hidden_size}."
        )
    weights = image.weights()
    weights.update(
        {
            "text_adapter.adaptor." + k[len(adapter_prefix) :]: v
            for k, v in state_dict.items()
            if k.startswith(adapter_prefix)
        }
    )
    weights["logit_scale"] = state_dict["logit_scale"]
    config = config_class(
        **image.config,
        text_config=tower.config.to_dict(),
        projection_dim=output_dim,
        adapter_blocks=blocks,
        adapter_expansion=expansion,
        logit_scale_init_value=float(state_dict["logit_scale"]),
    )
    model = model_class(config).eval()
    load_into(model, weights, tower, external_llm)
    processor = make_processor(tower.tokenizer, image.image_size)
    parity = verify_dual_tower(model, processor, tower, state_dict, adapter_prefix, image.reference)
    card = dual_tower_card(
        card_template, f"`{Path(source).name}` + `{llm}`", model, tower, image.description, dtype, parity
    )
    write_model_folder(model, processor, output, card, dtype=dtype, overwrite=overwrite)
    return parity
