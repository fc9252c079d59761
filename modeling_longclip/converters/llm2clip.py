"""Convert LLM2CLIP (released CLIP part + LLM text repo) into one self-contained folder, verified first.

The pieces shared with the ProCLIP converter live here too: resolving local folders or Hub ids, reading weight
folders, telling the image tower from the keys, building the text tower and the processor, converting an EVA02-CLIP
release (both families ship one) and checking a dual-tower model against the references.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModel, AutoTokenizer

from ..configuration_llm2clip import LLM2CLIPConfig
from ..embedding import pooled_features
from ..modeling_llm2clip import LLM2CLIPModel
from ..processing_llm2clip import LLAMA3_TEXT_TEMPLATE, LLM2CLIPProcessor
from .clip_preprocessing import clip_image_processor
from .eva02 import (
    check_rope_buffers,
    eva02_to_hf,
    expected_eva02_shapes,
    hf_eva02_to_original,
    infer_eva02_shape,
    is_rope_buffer,
    reference_eva02_image_features,
)
from .export import ConversionError, ensure_writable, render_model_card, write_model_folder
from .openai_clip import (
    CheckpointError,
    check_keys,
    count_layers,
    expected_vision_shapes,
    hf_clip_config_fields,
    hf_vision_to_openai,
    infer_vision_shape,
    load_state_dict,
    reference_image_features,
    vision_to_hf,
)
from .reference_llm import reference_adapter, reference_bidirectional_llama, reference_mean_pool

VERIFICATION_CAPTIONS = (
    "A dog.",
    "A red bicycle leaning against a brick wall next to a blue door, with a basket of flowers on the handlebar.",
    "Aerial view of a harbour at dawn: fishing boats, a lighthouse, gulls over the masts and a van by the cafe. " * 4,
)
LLAMA3_SPECIAL_TOKENS = ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")


def resolve_source(source: str | Path, what: str) -> Path:
    """A local folder as is; otherwise a Hub repo id, downloaded (a clear error when offline or unreachable)."""
    path = Path(source)
    if path.is_dir():
        return path
    if path.exists():
        raise ConversionError(f"{what} {source} is a file; give the folder (or Hub repo id) that holds it.")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError

    try:
        return Path(snapshot_download(str(source), allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model", "*.bin", "*.pt"]))
    except HFValidationError:
        raise ConversionError(f"{what} {source}: no such folder, and not a valid Hub repo id.") from None
    except Exception as error:  # noqa: BLE001 - offline, unreachable, gated, missing: all one message
        raise ConversionError(
            f"{what} {source}: no such folder, and downloading it from the Hub failed "
            f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}). Offline, pass a local folder."
        ) from None


def load_weights_folder(folder: Path) -> dict[str, torch.Tensor]:
    """All tensors of a model folder: model.safetensors, sharded safetensors, or pytorch_model.bin (weights_only)."""
    index = folder / "model.safetensors.index.json"
    if (folder / "model.safetensors").is_file():
        return load_file(folder / "model.safetensors")
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return {k: v for shard in shards for k, v in load_file(folder / shard).items()}
    if (folder / "pytorch_model.bin").is_file():
        return torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise CheckpointError(f"{folder}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin.")


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


def adapter_shape(state_dict: dict, prefix: str) -> tuple[int, int, int, int]:
    """(blocks, expansion, input dim, output dim) of an `adaptor` Sequential, read from the shapes."""
    blocks = count_layers({k: v for k, v in state_dict.items() if k.endswith(".fn.0.weight")}, prefix)
    final = state_dict.get(f"{prefix}{blocks + 1}.weight")
    if f"{prefix}{blocks}.weight" not in state_dict or final is None:
        raise CheckpointError(f"adapter under `{prefix}` lacks its final LayerNorm ({blocks}) and Linear ({blocks + 1}).")
    width = state_dict[f"{prefix}{blocks}.weight"].shape[0]
    expansion = state_dict[f"{prefix}0.fn.0.weight"].shape[0] // width if blocks else 1
    return blocks, expansion, width, final.shape[0]


def expected_adapter_shapes(prefix: str, blocks: int, expansion: int, width: int, output_dim: int) -> dict:
    shapes = {}
    for i in range(blocks):
        shapes.update({
            f"{prefix}{i}.ln.weight": (width,), f"{prefix}{i}.ln.bias": (width,),
            f"{prefix}{i}.fn.0.weight": (width * expansion, width), f"{prefix}{i}.fn.0.bias": (width * expansion,),
            f"{prefix}{i}.fn.3.weight": (width, width * expansion), f"{prefix}{i}.fn.3.bias": (width,),
        })  # fmt: skip
    shapes.update({
        f"{prefix}{blocks}.weight": (width,), f"{prefix}{blocks}.bias": (width,),
        f"{prefix}{blocks + 1}.weight": (output_dim, width), f"{prefix}{blocks + 1}.bias": (output_dim,),
    })  # fmt: skip
    return shapes


@dataclass
class TextTower:
    config: object
    state_dict: dict
    tokenizer: object
    source: str


def load_text_tower(source: str | Path) -> TextTower:
    """The LLM's config (its auto_map ignored: no cross-repo code), weights and tokenizer."""
    folder = resolve_source(source, "--llm")
    config_dict = json.loads((folder / "config.json").read_text())
    config_dict.pop("auto_map", None)
    model_type = config_dict.pop("model_type", None)
    if model_type is None:
        raise CheckpointError(f"{folder}/config.json has no model_type.")
    config = AutoConfig.for_model(model_type, **{k: v for k, v in config_dict.items() if k != "architectures"})
    model = AutoModel.from_pretrained(folder, config=config, dtype=torch.float32)
    return TextTower(config, model.state_dict(), AutoTokenizer.from_pretrained(folder), str(source))


def make_processor(
    tokenizer, image_size: int, image_processor=None, max_length: int = 512, doc_max_length: int = 512
) -> LLM2CLIPProcessor:
    """llm2vec's encoding (Llama-3 template, separator, trailing strip, 512/512 as the released features were made;
    the 1B card uses doc_max_length 400) when the tokenizer has the Llama-3 special tokens; plain mean pooling over
    every token, no separator, otherwise."""
    image_processor = image_processor or clip_image_processor(image_size)
    vocab = tokenizer.get_vocab()
    lengths = dict(max_length=max_length, doc_max_length=doc_max_length)
    if all(token in vocab for token in LLAMA3_SPECIAL_TOKENS):
        return LLM2CLIPProcessor(image_processor, tokenizer, text_template=LLAMA3_TEXT_TEMPLATE, pooling_scope="caption", **lengths)
    return LLM2CLIPProcessor(
        image_processor, tokenizer, text_template="{caption}", pooling_scope="all", padding_side="right",
        instruction_separator=None, **lengths,
    )  # fmt: skip


@dataclass
class DualTowerParity:
    text_max_abs_diff: float
    image_max_abs_diff: float
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [
            f"text features:  max |diff| = {self.text_max_abs_diff:.3e} over {len(VERIFICATION_CAPTIONS)} captions",
            f"image features: max |diff| = {self.image_max_abs_diff:.3e}",
            *self.notes,
        ]


def verify_dual_tower(
    model: LLM2CLIPModel,
    processor: LLM2CLIPProcessor,
    tower: TextTower,
    adapter_weights: dict,
    adapter_prefix: str,
    image_reference: dict | Callable,
) -> DualTowerParity:
    """Text: reference Llama (bidirectional, fp32) + mean pooling + reference adapter; image: the reference tower
    (OpenAI-format `visual.*` weights for the OpenAI ViT, or a function of the pixels)."""
    if model.config.text_config.model_type not in ("llama", "mistral", "qwen2"):
        raise ConversionError(f"the independent reference covers Llama-style text models, not {model.config.text_config.model_type}.")
    text_inputs = processor(text=list(VERIFICATION_CAPTIONS))
    size = model.config.vision_config.image_size
    pixels = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        text = pooled_features(model.get_text_features(**text_inputs)).float()
        image = pooled_features(model.get_image_features(pixel_values=pixels)).float()
    hidden = reference_bidirectional_llama(tower.state_dict, tower.config, text_inputs["input_ids"], text_inputs["attention_mask"])
    pooled = reference_mean_pool(hidden, text_inputs["pooling_mask"]) if model.config.pooling == "mean" else None
    if pooled is None:
        raise ConversionError("the independent reference implements mean pooling only.")
    ref_text = reference_adapter(adapter_weights, adapter_prefix, pooled)
    if callable(image_reference):
        ref_image = image_reference(pixels)
    else:
        ref_image = reference_image_features(image_reference, pixels)
    parity = DualTowerParity((text - ref_text).abs().max().item(), (image - ref_image).abs().max().item())
    for name, ref, diff in (("text", ref_text, parity.text_max_abs_diff), ("image", ref_image, parity.image_max_abs_diff)):
        if not diff <= 1e-4 * max(1.0, ref.abs().max().item()):
            raise ConversionError(f"converted model disagrees with the reference {name} path: max |diff| = {diff:.3e}.")
    return parity


def load_into(model: LLM2CLIPModel, weights: dict, tower: TextTower, external: bool) -> None:
    """Load non-text weights strictly, then the text tower (unless it stays external)."""
    missing, unexpected = model.load_state_dict(weights, strict=False)
    missing = [k for k in missing if not k.startswith("text_model.")]
    if missing or unexpected:
        raise CheckpointError(f"weights do not fit the model: missing {missing[:6]}, unexpected {unexpected[:6]}.")
    model.text_model.load_state_dict(tower.state_dict, strict=True)
    if external:
        model.config.text_model_name_or_path = tower.source


def dual_tower_card(template: str, source: str, model, tower: TextTower, vision: str, dtype: str, parity) -> str:
    """The converted folder's README from model_cards/{template}.md (LLM2CLIP and ProCLIP share the fields)."""
    config = model.config
    external = f" (weights kept in `{tower.source}`)" if config.text_model_name_or_path else ""
    return render_model_card(
        template,
        source=source,
        text_model=f"{tower.config.model_type}, hidden {tower.config.hidden_size}, {tower.config.num_hidden_layers} layers{external}",
        vision=vision,
        adapter=f"{config.adapter_blocks} residual blocks, expansion {config.adapter_expansion}, "
        f"{tower.config.hidden_size} -> {config.projection_dim}",
        projection_dim=config.projection_dim,
        dtype=dtype,
        parity="\n".join(f"- {line}" for line in parity.lines()),
    )


def convert_llm2clip(
    clip: str | Path,
    llm: str | Path,
    output: str | Path,
    dtype: str = "float32",
    external_llm: bool = False,
    overwrite: bool = False,
) -> DualTowerParity:
    """Released LLM2CLIP CLIP part + LLM folder -> one verified LLM2CLIP folder. The CLIP part is the OpenAI-ViT HF
    repo (model_type "clip": vision_model.*, visual_projection.weight, text_adapter.adaptor.*, logit_scale), or an
    eva_clip CustomCLIP `.pt` (visual.*, text.text_adaptor.*, logit_scale; EVA02 or OpenAI-style ViT), a folder
    holding it, or EVA02 weights in the HF EvaCLIP layout with an adapter; or the SigLIP2 release (siglip2.py)."""
    from .siglip2 import convert_llm2clip_siglip2, is_siglip2_source

    if is_siglip2_source(clip):  # the SigLIP2 release is an eva_clip CustomCLIP file with a timm tower
        return convert_llm2clip_siglip2(clip, llm, output, dtype=dtype, external_llm=external_llm, overwrite=overwrite)
    ensure_writable(output, overwrite)
    raw, clip_folder = load_clip_part(clip)
    tower = detect_vision_tower(raw)
    if tower == "siglip2":  # a SigLIP2 trunk in a file is_siglip2_source did not recognise as the release
        raise ConversionError(f"--clip {clip}: a siglip2 image tower, but not in the layout of LLM2CLIP's SigLIP2 release.")
    if tower == "eva02" and "visual.pos_embed" not in raw:
        raw = hf_eva02_to_original(raw, str(clip))
    if any(k.startswith("visual.") for k in raw):  # an eva_clip CustomCLIP file (EVA02 releases, retrained baselines)
        return convert_release(raw, str(clip), llm, output, LLM2CLIPConfig, LLM2CLIPModel, "llm2clip",
                               dtype=dtype, external_llm=external_llm, overwrite=overwrite)  # fmt: skip
    clip_folder = clip_folder or Path(clip)
    weights = {k: v.float() for k, v in raw.items() if not k.endswith("position_ids")}
    for key in ("vision_model.embeddings.patch_embedding.weight", "visual_projection.weight", "logit_scale"):
        if key not in weights:
            raise CheckpointError(f"{clip_folder}: missing key `{key}` (not an LLM2CLIP CLIP checkpoint?).")
    blocks, expansion, llm_width, projection_dim = adapter_shape(weights, "text_adapter.adaptor.")
    tower = load_text_tower(llm)
    if tower.config.hidden_size != llm_width:
        raise CheckpointError(f"the adapter expects {llm_width}-d text embeddings but {llm} has hidden size {tower.config.hidden_size}.")
    vision_config = vision_config_from(weights, clip_folder if clip_folder.is_dir() else None)
    config = LLM2CLIPConfig(
        vision_config=vision_config, text_config=tower.config.to_dict(), projection_dim=projection_dim,
        adapter_blocks=blocks, adapter_expansion=expansion, logit_scale_init_value=float(weights["logit_scale"]),
    )  # fmt: skip
    model = LLM2CLIPModel(config).eval()
    load_into(model, weights, tower, external_llm)
    processor = make_processor(tower.tokenizer, vision_config["image_size"], clip_image_processor(vision_config["image_size"], "transformers"))
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
        hidden_size=width, patch_size=patch_size, image_size=int(round((positions - 1) ** 0.5)) * patch_size,
        num_hidden_layers=layers, num_attention_heads=saved.get("num_attention_heads", width // 64),
        intermediate_size=weights[f"{prefix}encoder.layers.0.mlp.fc1.weight"].shape[0],
        hidden_act=saved.get("hidden_act", "quick_gelu"), layer_norm_eps=saved.get("layer_norm_eps", 1e-5),
    )  # fmt: skip


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
            expected_eva02_shapes(eva), frozenset(k for k in state_dict if is_rope_buffer(k)),
            lambda: eva02_to_hf(state_dict, eva),
            dict(vision_tower="eva02", vision_config=eva.config(), visual_projection_bias=True),
            eva.output_dim, eva.image_size, eva.describe(), lambda pixels: reference_eva02_image_features(state_dict, pixels),
        )  # fmt: skip
    if tower != "clip":
        raise CheckpointError(f"a {tower} image tower; these releases use OpenAI-CLIP or EVA02 towers.")
    vit = infer_vision_shape(state_dict)
    return ReleasedImageTower(
        expected_vision_shapes(vit), frozenset(), lambda: vision_to_hf(state_dict, vit),
        dict(vision_config=hf_clip_config_fields(vit, None)["vision_config"]), vit.output_dim, vit.image_size,
        f"ViT, width {vit.width}, {vit.layers} layers, patch {vit.patch_size}, {vit.image_size} px", state_dict,
    )  # fmt: skip


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
    try:
        image = released_image_tower(state_dict)
        blocks, expansion, width, output_dim = adapter_shape(state_dict, adapter_prefix)
    except CheckpointError as error:
        raise CheckpointError(f"{source}: {error}") from None
    if output_dim != image.output_dim:
        raise CheckpointError(f"{source}: the adapter maps to {output_dim} dims but the image tower projects to {image.output_dim}.")
    expected = {**image.expected, **expected_adapter_shapes(adapter_prefix, blocks, expansion, width, output_dim), "logit_scale": ()}
    check_keys({k: v for k, v in state_dict.items() if k not in image.ignored}, expected, source)
    tower = load_text_tower(llm)
    if tower.config.hidden_size != width:
        raise CheckpointError(f"the adapter expects {width}-d text embeddings but {llm} has hidden size {tower.config.hidden_size}.")
    weights = image.weights()
    weights.update({"text_adapter.adaptor." + k[len(adapter_prefix) :]: v for k, v in state_dict.items() if k.startswith(adapter_prefix)})
    weights["logit_scale"] = state_dict["logit_scale"]
    config = config_class(
        **image.config, text_config=tower.config.to_dict(), projection_dim=output_dim, adapter_blocks=blocks,
        adapter_expansion=expansion, logit_scale_init_value=float(state_dict["logit_scale"]),
    )  # fmt: skip
    model = model_class(config).eval()
    load_into(model, weights, tower, external_llm)
    processor = make_processor(tower.tokenizer, image.image_size)
    parity = verify_dual_tower(model, processor, tower, state_dict, adapter_prefix, image.reference)
    card = dual_tower_card(card_template, f"`{Path(source).name}` + `{llm}`", model, tower, image.description, dtype, parity)
    write_model_folder(model, processor, output, card, dtype=dtype, overwrite=overwrite)
    return parity
