"""Convert LLM2CLIP's SigLIP2 release (Llama-3.1-8B + SigLIP2 SO400M/14-224) into one verified LLM2CLIP folder.

The release is eva_clip's `CustomCLIP` with a timm tower (`Llama3.1-8B-Siglip2-So-L-14-224.json`: timm
`vit_so400m_patch14_siglip_224.v2_webli`, `timm_pool: map`, `timm_proj: none`): keys `visual.trunk.*` (timm names),
`text.text_proj.text_adaptor.*` (the adapter), `logit_scale`, and possibly the merged LLM under `text.text.model.*`.
Its text path (`llm_model.py`) merges a PEFT LoRA into Llama-3.1-8B-Instruct and calls the adapter with
`l2_norm=False`; the LoRA is a folder of the release, not of the base LLM (lora.py finds it), and a release converted
without one is refused unless asked for (`no_lora`). Here the timm trunk maps onto transformers' `SiglipVisionModel`
(exact GELU, LayerNorm eps 1e-6, as timm builds it), the LoRA is merged with peft into the text tower (one plain
folder, like stage 1's merged weights), and everything is checked against plain-torch references written from the
formulas before anything is written.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import transformers
from PIL import Image

from ..common.errors import CheckpointError, ConversionError
from ..common.files import ensure_writable
from ..configuration_llm2clip import LLM2CLIPConfig
from ..embedding import pooled_features
from ..export.folder import write_model_folder
from ..modeling_llm2clip import LLM2CLIPModel
from .dual_tower import (
    PARITY_ADVICE,
    VERIFICATION_CAPTIONS,
    DualTowerParity,
    TextTower,
    adapter_shape,
    dual_tower_card,
    expected_adapter_shapes,
    load_text_tower,
    load_weights_folder,
    make_processor,
    resolve_source,
    stored_location,
)
from .lora import find_lora, lora_search_places, merge_lora_with_peft, reference_lora_merge
from .reference_llm import reference_adapter, reference_bidirectional_llama, reference_mean_pool
from .state_dicts import check_keys, count_layers, load_state_dict, patch_grid

TRUNK = "visual.trunk."
ADAPTER_PREFIX = "text.text_proj.text_adaptor."
LLM_PREFIX = "text.text.model."  # LLM2VecTextTransformer.text (LLM2Vec) .model: present if the file kept the LLM
# SigLIP towers in timm, by width (heads are not visible in the shapes): B 768/12, L 1024/16, SO400M 1152/16, g 1536/16.
HEADS_BY_WIDTH = {768: 12, 1024: 16, 1152: 16, 1536: 16}
LAYER_NORM_EPS = 1e-6  # timm's LayerNorm default, used by every SigLIP norm (blocks, final norm, attention pool)
SIGLIP_MEAN = SIGLIP_STD = (0.5, 0.5, 0.5)  # timm `v2_webli` / open_clip SigLIP config (eva_clip would use OpenAI's)
WEIGHT_FILE_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")
ADAPTER_WEIGHTS = "adapter_model."  # a PEFT adapter's weights (adapter_model.safetensors / .bin): not the release's


@dataclass(frozen=True)
class SiglipShape:
    width: int
    layers: int
    heads: int
    mlp_width: int
    patch_size: int
    image_size: int


# -- reading the release ---------------------------------------------------------------------------------------------


def weight_file(source: Path) -> Path:
    """The one weight file of a release: the file itself, or the single candidate in a folder."""
    if source.is_file():
        return source
    for name in ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"):
        if (source / name).is_file():
            return source / name
    candidates = sorted(
        p
        for p in source.iterdir()
        if p.is_file() and p.name.endswith(WEIGHT_FILE_SUFFIXES) and not p.name.startswith(ADAPTER_WEIGHTS)
    )
    if len(candidates) != 1:
        found = [p.name for p in candidates] or "none"
        raise CheckpointError(
            f"{source}: expected exactly one weight file ({'/'.join(WEIGHT_FILE_SUFFIXES)}), found {found}."
        )
    return candidates[0]


def _peek_keys(path: Path) -> list[str]:
    """Tensor names without reading the tensors (safetensors header, index, or a memory-mapped torch file)."""
    if path.name.endswith(".index.json"):
        return list(json.loads(path.read_text())["weight_map"])
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            return list(handle.keys())
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - a legacy (non-zip) file cannot be memory-mapped: read it whole
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - not ours to judge here; the converter that reads it says what is wrong
            return []
    for wrapper in ("state_dict", "model", "module"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    return [k.removeprefix("module.") for k in obj] if isinstance(obj, dict) else []


def is_siglip2_checkpoint(keys) -> bool:
    """True for eva_clip CustomCLIP weights with a timm trunk and attention pool (this release's layout)."""
    return any(k.startswith(TRUNK + "attn_pool.") for k in keys)


def is_siglip2_source(source: str | Path) -> bool:
    """Whether `convert_llm2clip` should hand `source` to this converter: local files are recognised by their keys
    (read cheaply); a Hub id by its name (the SigLIP2 repo is the only one of the family whose name says siglip)."""
    path = Path(source)
    if not path.exists():
        return "siglip" in str(source).lower()
    try:
        return is_siglip2_checkpoint(_peek_keys(weight_file(path)))
    except CheckpointError:
        return False


def read_release(source: str | Path) -> tuple[dict[str, torch.Tensor], Path]:
    """All tensors of the release in fp32 (wrapper and `module.` prefix removed) and the file they came from."""
    path = Path(source) if Path(source).exists() else resolve_source(source, "--clip")
    file = weight_file(path)
    if file.name.endswith(".index.json") or file.name in ("model.safetensors", "pytorch_model.bin"):
        weights = load_weights_folder(file.parent)
    elif file.suffix == ".safetensors":
        from safetensors.torch import load_file

        weights = load_file(file)
    else:
        weights = load_state_dict(file)
    weights = {k.removeprefix("module."): v.float() for k, v in weights.items()}
    if not is_siglip2_checkpoint(weights):
        raise CheckpointError(f"{file}: no `{TRUNK}attn_pool.*` keys: not LLM2CLIP's SigLIP2 release.")
    return weights, file


def infer_siglip_shape(weights: dict, num_heads: int | None = None) -> SiglipShape:
    """Width, depth, MLP width, patch and image size from the shapes; heads from timm's SigLIP definitions."""
    try:
        patch = weights[f"{TRUNK}patch_embed.proj.weight"]
        positions = weights[f"{TRUNK}pos_embed"].shape[1]
        mlp_width = weights[f"{TRUNK}blocks.0.mlp.fc1.weight"].shape[0]
    except KeyError as error:
        raise CheckpointError(f"missing key {error} (a truncated SigLIP2 checkpoint?).") from None
    width, patch_size = patch.shape[0], patch.shape[-1]
    grid = patch_grid(positions, f"{TRUNK}pos_embed", class_token=False)
    heads = num_heads or HEADS_BY_WIDTH.get(width) or (width // 64 if width % 64 == 0 else None)
    if not heads or width % heads:
        raise CheckpointError(
            f"cannot tell the head count of a {width}-wide SigLIP tower; pass --num-heads (num_heads= in Python)."
        )
    layers = count_layers({k: v for k, v in weights.items() if k.startswith(TRUNK + "blocks.")}, TRUNK + "blocks.")
    return SiglipShape(width, layers, heads, mlp_width, patch_size, grid * patch_size)


def expected_trunk_shapes(shape: SiglipShape) -> dict[str, tuple[int, ...]]:
    w, m, p = shape.width, shape.mlp_width, shape.patch_size
    grid = shape.image_size // p

    def linear(name, out, inp):
        return {f"{name}.weight": (out, inp), f"{name}.bias": (out,)}

    def norm(name):
        return {f"{name}.weight": (w,), f"{name}.bias": (w,)}

    shapes = {"patch_embed.proj.weight": (w, 3, p, p), "patch_embed.proj.bias": (w,), "pos_embed": (1, grid * grid, w)}
    for i in range(shape.layers):
        b = f"blocks.{i}."
        shapes.update({**norm(b + "norm1"), **linear(b + "attn.qkv", 3 * w, w), **linear(b + "attn.proj", w, w)})
        shapes.update({**norm(b + "norm2"), **linear(b + "mlp.fc1", m, w), **linear(b + "mlp.fc2", w, m)})
    shapes.update({**norm("norm"), "attn_pool.latent": (1, 1, w), **linear("attn_pool.q", w, w)})
    shapes.update({**linear("attn_pool.kv", 2 * w, w), **linear("attn_pool.proj", w, w), **norm("attn_pool.norm")})
    shapes.update({**linear("attn_pool.mlp.fc1", m, w), **linear("attn_pool.mlp.fc2", w, m)})
    return {TRUNK + k: v for k, v in shapes.items()}


# -- the key map -----------------------------------------------------------------------------------------------------


def timm_to_siglip(weights: dict, shape: SiglipShape) -> dict[str, torch.Tensor]:
    """timm SigLIP trunk + MAP head -> `SiglipVisionModel` names (without the model's own top-level prefix)."""
    t = {k[len(TRUNK) :]: v for k, v in weights.items() if k.startswith(TRUNK)}
    w = shape.width
    out = {
        "embeddings.patch_embedding.weight": t["patch_embed.proj.weight"],
        "embeddings.patch_embedding.bias": t["patch_embed.proj.bias"],
        "embeddings.position_embedding.weight": t["pos_embed"][0],
        "post_layernorm.weight": t["norm.weight"],
        "post_layernorm.bias": t["norm.bias"],
        "head.probe": t["attn_pool.latent"],
        "head.attention.in_proj_weight": torch.cat([t["attn_pool.q.weight"], t["attn_pool.kv.weight"]]),
        "head.attention.in_proj_bias": torch.cat([t["attn_pool.q.bias"], t["attn_pool.kv.bias"]]),
    }
    for source, target in (
        ("attn_pool.proj", "head.attention.out_proj"),
        ("attn_pool.norm", "head.layernorm"),
        ("attn_pool.mlp.fc1", "head.mlp.fc1"),
        ("attn_pool.mlp.fc2", "head.mlp.fc2"),
    ):
        out.update({f"{target}.{p}": t[f"{source}.{p}"] for p in ("weight", "bias")})
    for i in range(shape.layers):
        src, dst = f"blocks.{i}.", f"encoder.layers.{i}."
        for part in ("weight", "bias"):
            q, k, v = t[f"{src}attn.qkv.{part}"].split(w)
            out.update(
                {
                    f"{dst}self_attn.q_proj.{part}": q,
                    f"{dst}self_attn.k_proj.{part}": k,
                    f"{dst}self_attn.v_proj.{part}": v,
                }
            )
            for a, b in (
                ("norm1", "layer_norm1"),
                ("norm2", "layer_norm2"),
                ("attn.proj", "self_attn.out_proj"),
                ("mlp.fc1", "mlp.fc1"),
                ("mlp.fc2", "mlp.fc2"),
            ):
                out[f"{dst}{b}.{part}"] = t[f"{src}{a}.{part}"]
    return out


def siglip_vision_config(shape: SiglipShape) -> dict:
    """timm's tower as a SiglipVisionConfig: exact GELU (timm's nn.GELU default), not SigLIP's tanh approximation."""
    return dict(
        hidden_size=shape.width,
        intermediate_size=shape.mlp_width,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        image_size=shape.image_size,
        patch_size=shape.patch_size,
        hidden_act="gelu",
        layer_norm_eps=LAYER_NORM_EPS,
        vision_use_head=True,
    )


def load_vision_tower(model: LLM2CLIPModel, flat: dict) -> None:
    """Strict load into the SiglipVisionModel, whichever top-level prefix this transformers version gives it."""
    names = model.vision_model.state_dict().keys()
    prefix = "" if "embeddings.patch_embedding.weight" in names else "vision_model."
    missing, unexpected = model.vision_model.load_state_dict({prefix + k: v for k, v in flat.items()}, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise CheckpointError(f"SigLIP tower weights do not fit: missing {missing[:6]}, unexpected {unexpected[:6]}.")


# -- independent references (plain torch, timm's names, written from the formulas) ----------------------------------


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Multi-head attention on [B, heads, N, D] tensors, softmax(q k^T / sqrt(D)) v, heads merged back."""
    weights = (q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])).softmax(-1)
    out = weights @ v
    return out.transpose(1, 2).reshape(out.shape[0], out.shape[2], -1)


@torch.no_grad()
def reference_siglip_image_features(weights: dict, pixels: torch.Tensor, heads: int) -> torch.Tensor:
    """timm VisionTransformer(global_pool="map") forward: patch conv + position table, pre-LN blocks (exact GELU),
    final LN, then AttentionPoolLatent (latent query, q / kv projections, proj, x + mlp(norm(x)))."""
    t = {k[len(TRUNK) :]: v.float() for k, v in weights.items() if k.startswith(TRUNK)}

    def ln(x, name):
        return F.layer_norm(x, x.shape[-1:], t[f"{name}.weight"], t[f"{name}.bias"], LAYER_NORM_EPS)

    def lin(x, name):
        return x @ t[f"{name}.weight"].t() + t[f"{name}.bias"]

    def split(x):  # [B, N, W] -> [B, heads, N, W / heads]
        return x.view(x.shape[0], x.shape[1], heads, -1).transpose(1, 2)

    patch = t["patch_embed.proj.weight"].shape[-1]
    x = F.conv2d(pixels.float(), t["patch_embed.proj.weight"], t["patch_embed.proj.bias"], stride=patch)
    x = x.flatten(2).transpose(1, 2) + t["pos_embed"]
    width = x.shape[-1]
    block = 0
    while f"blocks.{block}.attn.qkv.weight" in t:
        b = f"blocks.{block}."
        q, k, v = lin(ln(x, b + "norm1"), b + "attn.qkv").split(width, dim=-1)
        x = x + lin(_attention(split(q), split(k), split(v)), b + "attn.proj")
        x = x + lin(F.gelu(lin(ln(x, b + "norm2"), b + "mlp.fc1")), b + "mlp.fc2")
        block += 1
    x = ln(x, "norm")
    query = lin(t["attn_pool.latent"], "attn_pool.q").expand(x.shape[0], -1, -1)
    key, value = lin(x, "attn_pool.kv").split(width, dim=-1)
    pooled = lin(_attention(split(query), split(key), split(value)), "attn_pool.proj")
    pooled = pooled + lin(F.gelu(lin(ln(pooled, "attn_pool.norm"), "attn_pool.mlp.fc1")), "attn_pool.mlp.fc2")
    return pooled[:, 0]


@torch.no_grad()
def reference_unnormalized_adapter(weights: dict, prefix: str, pooled: torch.Tensor) -> torch.Tensor:
    """eva_clip's TextProj with `l2_norm=False` (this release's text path): the shared reference, unnormalized."""
    return reference_adapter(weights, prefix, pooled, normalize=False)


def reference_squash_pixels(image: Image.Image, size: int) -> np.ndarray:
    """open_clip's SigLIP eval transform ("squash"): RGB, PIL bicubic resize to size x size, /255, (x - 0.5) / 0.5."""
    resized = np.asarray(image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC), dtype=np.float64)
    return ((resized / 255.0 - 0.5) / 0.5).transpose(2, 0, 1).astype(np.float32)


def siglip_image_processor(size: int):
    """SigLIP preprocessing as a transformers image processor: resize to size x size (no crop), bicubic, 0.5 / 0.5.
    The PIL backend where transformers has one, so the pixels equal PIL's like the original's torchvision-on-PIL."""
    cls = getattr(transformers, "SiglipImageProcessorPil", None) or transformers.SiglipImageProcessor
    return cls(
        size={"height": size, "width": size},
        resample=Image.Resampling.BICUBIC,
        image_mean=list(SIGLIP_MEAN),
        image_std=list(SIGLIP_STD),
        do_center_crop=False,
    )


# -- the conversion --------------------------------------------------------------------------------------------------


def _verification_image() -> Image.Image:
    """A non-square photo-like test image (gradients plus noise) whose resize exercises the bicubic filter."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:173, 0:261]
    base = np.stack([x / 261 * 255, y / 173 * 255, (x + y) % 256], axis=-1)
    return Image.fromarray(np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype("uint8"))


def verify_siglip2(model, processor, reference_llm: dict, tower: TextTower, weights: dict, shape: SiglipShape):
    """Text: reference Llama (+ reference LoRA merge) + mean pooling + un-normalized adapter; image: reference timm
    forward; pixels: the processor against PIL + numpy. Raises ConversionError on a disagreement."""
    if tower.config.model_type not in ("llama", "mistral", "qwen2"):
        raise ConversionError(
            f"the independent reference covers Llama-style text models, not {tower.config.model_type}."
        )
    text_inputs = processor(text=list(VERIFICATION_CAPTIONS))
    pixels = torch.randn(2, 3, shape.image_size, shape.image_size, generator=torch.Generator().manual_seed(0))
    image = _verification_image()
    with torch.no_grad():
        text = pooled_features(model.get_text_features(**text_inputs)).float()
        image_features = pooled_features(model.get_image_features(pixel_values=pixels)).float()
    hidden = reference_bidirectional_llama(
        reference_llm, tower.config, text_inputs["input_ids"], text_inputs["attention_mask"]
    )
    ref_text = reference_unnormalized_adapter(
        weights, ADAPTER_PREFIX, reference_mean_pool(hidden, text_inputs["pooling_mask"])
    )
    ref_image = reference_siglip_image_features(weights, pixels, shape.heads)
    ours_pixels = processor(images=[image])["pixel_values"][0].numpy()
    pixel_diff = float(np.abs(ours_pixels - reference_squash_pixels(image, shape.image_size)).max())
    parity = DualTowerParity((text - ref_text).abs().max().item(), (image_features - ref_image).abs().max().item())
    for name, ref, diff in (
        ("text", ref_text, parity.text_max_abs_diff),
        ("image", ref_image, parity.image_max_abs_diff),
    ):
        if not diff <= 1e-4 * max(1.0, ref.abs().max().item()):
            raise ConversionError(
                f"converted model disagrees with the reference {name} path (max |diff| = {diff:.3e}): {PARITY_ADVICE}"
            )
    if not pixel_diff <= 1e-5:
        raise ConversionError(
            f"the image processor disagrees with SigLIP's squash resize: max |diff| = {pixel_diff:.3e}."
        )
    parity.notes.append(
        f"pixels: max |diff| = {pixel_diff:.1e} against PIL bicubic squash resize + numpy normalisation"
    )
    return parity


def _text_tower(llm, weights: dict, file: Path, lora, no_lora: bool) -> tuple[TextTower, dict, list[str]]:
    """The text tower to write, the weights the reference runs on, and what was done, in words."""
    inner = {k[len(LLM_PREFIX) :]: v for k, v in weights.items() if k.startswith(LLM_PREFIX)}
    if lora is not None and no_lora:
        raise ConversionError("--lora and --no-lora contradict each other: give one.")
    if inner and lora is not None:
        raise ConversionError(
            f"--lora {lora}: {file.name} carries the merged LLM under `{LLM_PREFIX}`; merging a LoRA again is wrong."
        )
    llm_folder = resolve_source(llm, "--llm")
    adapter = None if inner or no_lora else find_lora(file.parent, llm_folder, lora)
    if adapter is None and not inner and not no_lora:
        raise CheckpointError(
            f"no PEFT LoRA for the SigLIP2 release (looked in {lora_search_places(file.parent, llm_folder)}): its "
            "text path merges one into the LLM; pass --lora PATH, or --no-lora to convert with the un-adapted LLM."
        )
    tower = load_text_tower(llm)
    if inner:  # the file kept LLM2Vec's (already merged) model: that is what the release ran
        tower = TextTower(tower.config, inner, tower.tokenizer, f"{file.name} ({LLM_PREFIX}*)")
        return (
            tower,
            inner,
            [
                f"text tower: the merged LLM stored in {file.name} under `{LLM_PREFIX}`; config and tokenizer from {llm}"
            ],
        )
    if adapter is None:
        return tower, tower.state_dict, [f"text tower: {llm} as is, without the release's LoRA (--no-lora)"]
    reference = reference_lora_merge(tower.state_dict, adapter)
    merged = merge_lora_with_peft(tower, adapter)
    return (
        merged,
        reference,
        [f"text tower: {llm} with the LoRA {adapter} merged by peft; reference merge W + scale * B A"],
    )


def convert_llm2clip_siglip2(
    clip: str | Path,
    llm: str | Path,
    output: str | Path,
    dtype: str = "float32",
    external_llm: bool = False,
    overwrite: bool = False,
    lora: str | Path | None = None,
    num_heads: int | None = None,
    no_lora: bool = False,
) -> DualTowerParity:
    """LLM2CLIP's SigLIP2 release (`visual.trunk.*`, `text.text_proj.text_adaptor.*`, `logit_scale`) + its LLM folder
    (+ PEFT LoRA, merged) -> one verified LLM2CLIP folder with a SigLIP tower and no visual projection.

    lora: the PEFT adapter folder; default: the one in the release, else beside the LLM (`find_lora`). Without one
    (and no merged LLM in the file) the conversion is refused unless `no_lora` (the un-adapted LLM's features).
    num_heads: the tower's head count, for widths timm's SigLIP definitions do not name."""
    ensure_writable(output, overwrite)
    weights, file = read_release(clip)
    shape = infer_siglip_shape(weights, num_heads)
    try:
        blocks, expansion, llm_width, projection_dim = adapter_shape(weights, ADAPTER_PREFIX)
    except CheckpointError as error:
        raise CheckpointError(f"{file}: {error}") from None
    if projection_dim != shape.width:
        raise CheckpointError(
            f"{file}: the adapter maps to {projection_dim} dims but the tower's pooled output (no projection) is {shape.width}."
        )
    expected = {
        **expected_trunk_shapes(shape),
        **expected_adapter_shapes(ADAPTER_PREFIX, blocks, expansion, llm_width, projection_dim),
    }
    expected.update({key: () for key in ("logit_scale", "logit_bias") if key in weights or key == "logit_scale"})
    check_keys(weights, expected, str(file), extra_ok=(LLM_PREFIX,))
    tower, reference_llm, notes = _text_tower(llm, weights, file, lora, no_lora)
    if tower.config.hidden_size != llm_width:
        raise CheckpointError(
            f"the adapter expects {llm_width}-d text embeddings but {llm} has hidden size {tower.config.hidden_size}."
        )
    if external_llm and tower.source != str(llm):
        raise ConversionError(
            f"--external-llm would point at {llm}, but the text weights differ from it ({tower.source})."
        )
    config = LLM2CLIPConfig(
        vision_tower="siglip2",
        vision_config=siglip_vision_config(shape),
        text_config=tower.config.to_dict(),
        projection_dim=projection_dim,
        use_visual_projection=False,
        adapter_blocks=blocks,
        adapter_expansion=expansion,
        logit_scale_init_value=float(weights["logit_scale"]),
        adapter_normalize_input=False,
    )
    model = LLM2CLIPModel(config).eval()
    load_vision_tower(model, timm_to_siglip(weights, shape))
    model.text_adapter.load_state_dict(
        {"adaptor." + k[len(ADAPTER_PREFIX) :]: v for k, v in weights.items() if k.startswith(ADAPTER_PREFIX)}
    )
    try:
        model.text_model.load_state_dict(tower.state_dict, strict=True)
    except RuntimeError as error:
        raise CheckpointError(
            f"the text weights ({tower.source}) do not fit the configured text model: {str(error)[:300]}"
        ) from None
    if external_llm:
        model.config.text_model_name_or_path = stored_location(tower.source)
    processor = make_processor(tower.tokenizer, shape.image_size, siglip_image_processor(shape.image_size))
    parity = verify_siglip2(model, processor, reference_llm, tower, weights, shape)
    parity.notes[:0] = [
        "image reference: plain-torch timm SigLIP trunk + attention-pool (MAP) head, exact GELU, LayerNorm eps 1e-6",
        "adapter input not L2-normalized (the release's llm_model.py calls TextProj with l2_norm=False)",
        *notes,
        f"preprocessing: SigLIP's (timm v2_webli, open_clip): resize to {shape.image_size}x{shape.image_size} without "
        "crop, bicubic, mean = std = 0.5; eva_clip's local-file loader would center-crop with OpenAI mean/std instead",
    ]
    if "logit_bias" in weights:
        parity.notes.append(
            f"logit_bias = {float(weights['logit_bias']):.4f} not kept: it shifts every logit equally, "
            "so rankings and the zero-shot softmax do not change (sigmoid probabilities would need it)"
        )
    vision = (
        f"SigLIP ViT (timm `vit_so400m`-style, MAP head, no projection), width {shape.width}, {shape.layers} layers, "
        f"{shape.heads} heads, patch {shape.patch_size}, {shape.image_size} px"
    )
    card = dual_tower_card("llm2clip_siglip2", f"`{file.name}` + `{llm}`", model, tower, vision, dtype, parity)
    write_model_folder(model, processor, output, card, dtype=dtype, overwrite=overwrite)
    return parity
