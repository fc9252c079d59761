"""`longclip-export open_clip MODEL OUT`: a CLIP-style folder as an open_clip model directory.

Writes OUT/open_clip_config.json (`model_cfg` for open_clip's `CLIP` class, `preprocess_cfg` for its transform) and
OUT/open_clip_model.safetensors (open_clip's own state-dict keys), the layout open_clip 3.x reads for
`create_model_and_transforms("local-dir:OUT")` and, once uploaded, `"hf-hub:owner/name"`. Its `get_tokenizer` then
builds the CLIP BPE tokenizer at the folder's context length (248 for Long-CLIP) from `text_cfg`.

Before anything is kept, the staged directory is loaded by open_clip itself: its tokenizer must give the folder's ids,
its model the folder's text features (captions past 77 and past 248 tokens) and image features within fp32 tolerance,
and the transform it builds must use the folder processor's size, crop, resampling filter, mean and std.

open_clip's package imports torchvision for its image transforms. Where torchvision is not installed (CPU torch builds
it cannot sit beside), open_clip is imported with a small stand-in that only records the transforms' settings; the
model and tokenizer code paths are open_clip's own either way. Not part of the model payload.
"""

from __future__ import annotations

import enum
import importlib
import importlib.util
import json
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import torch

from ..common.errors import ConversionError
from ..common.files import atomic_folder, ensure_writable
from ..common.loading import check_model_folder, load_model_folder

CONFIG_NAME = "open_clip_config.json"
WEIGHTS_NAME = "open_clip_model.safetensors"
OPEN_CLIP_FAMILIES = ("longclip", "clip")  # config model_type: Long-CLIP remote code, stock CLIPModel (--format clip)
# Families whose text side open_clip's classes cannot hold, and why (one line for the refusal).
_LLM_TEXT_TOWER = (
    "its text tower is a decoder LLM run bidirectionally with llm2vec's instruction template, pooling mask and "
    "residual-MLP adapter; open_clip's text towers (CLIP transformer, or an HF encoder with a mean / CLS pooler and an "
    "MLP projection) have no place for the template, the pooling mask or the adapter"
)
INEXPRESSIBLE = {"llm2clip": _LLM_TEXT_TOWER, "proclip": _LLM_TEXT_TOWER}
RESAMPLE_NAMES = {3: "bicubic", 2: "bilinear"}  # PIL resampling ids open_clip's transform can express
TOLERANCE = 1e-4  # relative to max(1, max |feature|), as the ONNX export: fp32, another kernel order
CHECK_CAPTIONS = (
    "a photo of a cat",
    "a red bicycle leans against a stone wall in a narrow street; " * 4,  # past 77 tokens
    "a long walk along the harbour, past fishing boats, nets, gulls and a lighthouse at the far end, " * 12,  # > 248
)


class OpenCLIPExportError(ConversionError):
    """The open_clip export was refused (family open_clip cannot hold, open_clip disagrees, open_clip missing)."""


# --- open_clip without torchvision ----------------------------------------------------------------------------------


class InterpolationMode(enum.Enum):
    """The names torchvision's InterpolationMode has, for open_clip's transform module to refer to."""

    NEAREST = "nearest"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"


class _RecordedTransform:
    """Stands in for a torchvision transform: keeps the settings open_clip passes (as the real classes expose them,
    `size`, `interpolation`, `mean`, `std`, `transforms`) and refuses to run."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs
        names = {
            "Resize": ("size",),
            "CenterCrop": ("size",),
            "Normalize": ("mean", "std"),
            "Compose": ("transforms",),
        }
        for index, name in enumerate(names.get(type(self).__name__, ())):
            setattr(self, name, kwargs.get(name, args[index] if index < len(args) else None))
        if type(self).__name__ == "Resize":
            self.interpolation = kwargs.get("interpolation", args[1] if len(args) > 1 else InterpolationMode.BILINEAR)

    def __call__(self, *args, **kwargs):
        raise RuntimeError(
            f"torchvision is not installed: open_clip's {type(self).__name__} transform cannot run here "
            "(this stand-in only records its settings)."
        )


def _torchvision_stand_in() -> dict[str, types.ModuleType]:
    package, ops, misc = (types.ModuleType(n) for n in ("torchvision", "torchvision.ops", "torchvision.ops.misc"))
    misc.FrozenBatchNorm2d = type("FrozenBatchNorm2d", (torch.nn.Module,), {})  # ResNet towers only; never built here
    transforms, functional = (
        types.ModuleType("torchvision.transforms"),
        types.ModuleType("torchvision.transforms.functional"),
    )
    transforms.InterpolationMode = InterpolationMode
    for name in (
        "Normalize",
        "Compose",
        "RandomResizedCrop",
        "ToTensor",
        "Resize",
        "CenterCrop",
        "ColorJitter",
        "Grayscale",
    ):
        setattr(transforms, name, type(name, (_RecordedTransform,), {}))
    transforms.functional = functional
    package.ops, package.transforms, ops.misc = ops, transforms, misc
    return {
        "torchvision": package,
        "torchvision.ops": ops,
        "torchvision.ops.misc": misc,
        "torchvision.transforms": transforms,
        "torchvision.transforms.functional": functional,
    }


def import_open_clip():
    """open_clip's `factory` module (create_model, create_model_and_transforms, get_tokenizer, ...).

    With torchvision installed it is the plain import. Without it, a stand-in torchvision is present only while open_clip
    imports (transformers decides its own torchvision availability before, and never sees it), then removed again.
    """
    if importlib.util.find_spec("open_clip") is None:
        raise OpenCLIPExportError(
            "the open_clip export needs open-clip-torch: pip install --no-deps open-clip-torch (its tokenizer also needs "
            "ftfy and regex)."
        )
    import transformers  # noqa: F401  (settles transformers' torchvision check without the stand-in)

    stand_in = {} if importlib.util.find_spec("torchvision") is not None else _torchvision_stand_in()
    added = [name for name in stand_in if name not in sys.modules]
    sys.modules.update({name: stand_in[name] for name in added})
    try:
        return importlib.import_module("open_clip.factory")
    except ImportError as error:
        raise OpenCLIPExportError(f"open_clip cannot be imported here: {error}") from None
    finally:
        for name in added:
            sys.modules.pop(name, None)


def transform_settings(transform) -> dict:
    """size / crop / interpolation / mean / std of an open_clip inference transform (real torchvision or stand-in)."""
    settings = {}
    for step in getattr(transform, "transforms", []):
        kind = type(step).__name__
        if kind == "Resize":
            size = step.size
            settings["resize"] = list(size) if isinstance(size, (list, tuple)) else size
            settings["interpolation"] = getattr(step.interpolation, "value", str(step.interpolation))
        elif kind == "CenterCrop":
            size = step.size
            settings["crop"] = list(size) if isinstance(size, (list, tuple)) else [size, size]
        elif kind == "Normalize":
            settings["mean"], settings["std"] = [float(m) for m in step.mean], [float(s) for s in step.std]
    return settings


# --- configuration and weights ---------------------------------------------------------------------------------------


def _tower_fields(tower, name: str) -> dict:
    width, heads, hidden = tower.hidden_size, tower.num_attention_heads, tower.intermediate_size
    if width % heads:
        raise OpenCLIPExportError(f"{name} width {width} is not a multiple of its {heads} heads.")
    if hidden * width == 0 or int(width * (hidden / width)) != hidden:
        raise OpenCLIPExportError(f"{name} MLP width {hidden} is not expressible as width x mlp_ratio.")
    fields = {"width": width, "layers": tower.num_hidden_layers, "mlp_ratio": hidden / width}
    if tower.layer_norm_eps != 1e-5:
        fields["norm_kwargs"] = {"eps": tower.layer_norm_eps}
    return fields


def open_clip_model_config(config) -> dict:
    """open_clip's `model_cfg` for a CLIPConfig-shaped config (Long-CLIP's or stock CLIP's)."""
    text, vision = config.text_config, config.vision_config
    acts = {text.hidden_act, vision.hidden_act}
    if len(acts) != 1 or not acts <= {"quick_gelu", "gelu"}:
        raise OpenCLIPExportError(
            f"activations {sorted(acts)}: open_clip builds both towers with one of quick_gelu or exact gelu."
        )
    text_fields, vision_fields = _tower_fields(text, "text tower"), _tower_fields(vision, "vision tower")
    eos = getattr(text, "eos_token_id", None)
    # transformers pools at the largest id for the legacy eos_token_id 2, else at the first eos_token_id.
    if eos in (2, text.vocab_size - 1):
        pooling = {"pool_type": "argmax"}
    else:
        pooling = {"pool_type": "eos", "eos_id": eos}
    return {
        "embed_dim": config.projection_dim,
        "quick_gelu": acts == {"quick_gelu"},
        "vision_cfg": {
            "image_size": vision.image_size,
            "patch_size": vision.patch_size,
            "head_width": vision.hidden_size // vision.num_attention_heads,
            **vision_fields,
        },
        "text_cfg": {
            "context_length": text.max_position_embeddings,
            "vocab_size": text.vocab_size,
            "heads": text.num_attention_heads,
            **text_fields,
            **pooling,
        },
    }


def _edge(value, *keys) -> int | None:
    """An int size, or the first int under `keys` of a size dict (transformers 5's SizeDict has them as attributes)."""
    if isinstance(value, int):
        return value
    for key in keys:
        found = value.get(key) if isinstance(value, dict) else getattr(value, key, None)
        if isinstance(found, int):
            return found
    return None


def open_clip_preprocess_config(image_processor, image_size: int) -> dict:
    """open_clip's `preprocess_cfg` for the folder's image processor; refused where open_clip's transform differs in
    kind (a resize to another size than the crop, a filter other than bicubic / bilinear)."""
    resample = int(getattr(image_processor, "resample", 3))
    if resample not in RESAMPLE_NAMES:
        raise OpenCLIPExportError(
            f"the image processor resizes with PIL filter {resample}; open_clip's transform has bicubic or bilinear only."
        )
    size = getattr(image_processor, "size", None)
    crop = getattr(image_processor, "crop_size", None)
    short = _edge(size, "shortest_edge")
    center_crop = getattr(image_processor, "do_center_crop", True) and crop is not None
    if short is not None and center_crop:
        crop_h, crop_w = _edge(crop, "height"), _edge(crop, "width")
        if not short == crop_h == crop_w == image_size:
            raise OpenCLIPExportError(
                f"the image processor resizes the short side to {short} and crops {crop_h}x{crop_w}; open_clip's "
                f"transform resizes and crops to the model's {image_size} px."
            )
        mode = "shortest"
    elif _edge(size, "height") == _edge(size, "width") == image_size and not center_crop:
        mode = "squash"
    else:
        raise OpenCLIPExportError(f"image processor size {size!r} / crop {crop!r}: no open_clip resize mode matches.")
    return {
        "size": image_size,
        "mode": "RGB",
        "mean": [float(m) for m in image_processor.image_mean],
        "std": [float(s) for s in image_processor.image_std],
        "interpolation": RESAMPLE_NAMES[resample],
        "resize_mode": mode,
        "fill_color": 0,
    }


def _layers(prefix: str, target: str, count: int, get) -> dict[str, torch.Tensor]:
    state = {}
    for i in range(count):
        src, dst = f"{prefix}.encoder.layers.{i}", f"{target}transformer.resblocks.{i}"
        attention = [f"{src}.self_attn.{p}_proj" for p in "qkv"]
        state[f"{dst}.attn.in_proj_weight"] = torch.cat([get(f"{a}.weight") for a in attention])
        state[f"{dst}.attn.in_proj_bias"] = torch.cat([get(f"{a}.bias") for a in attention])
        for theirs, ours in (
            ("attn.out_proj", "self_attn.out_proj"),
            ("ln_1", "layer_norm1"),
            ("ln_2", "layer_norm2"),
            ("mlp.c_fc", "mlp.fc1"),
            ("mlp.c_proj", "mlp.fc2"),
        ):
            for p in ("weight", "bias"):
                state[f"{dst}.{theirs}.{p}"] = get(f"{src}.{ours}.{p}")
    return state


def open_clip_state_dict(model) -> dict[str, torch.Tensor]:
    """open_clip `CLIP` keys from a transformers CLIPModel state dict (q/k/v joined, projections transposed)."""
    source = model.state_dict()

    def get(key: str) -> torch.Tensor:
        return source[key].detach()

    text, vision = model.config.text_config, model.config.vision_config
    state = {
        "token_embedding.weight": get("text_model.embeddings.token_embedding.weight"),
        "positional_embedding": get("text_model.embeddings.position_embedding.weight"),
        "ln_final.weight": get("text_model.final_layer_norm.weight"),
        "ln_final.bias": get("text_model.final_layer_norm.bias"),
        "text_projection": get("text_projection.weight").t(),
        "logit_scale": get("logit_scale"),
        "visual.conv1.weight": get("vision_model.embeddings.patch_embedding.weight"),
        "visual.class_embedding": get("vision_model.embeddings.class_embedding"),
        "visual.positional_embedding": get("vision_model.embeddings.position_embedding.weight"),
        "visual.ln_pre.weight": get("vision_model.pre_layrnorm.weight"),
        "visual.ln_pre.bias": get("vision_model.pre_layrnorm.bias"),
        "visual.ln_post.weight": get("vision_model.post_layernorm.weight"),
        "visual.ln_post.bias": get("vision_model.post_layernorm.bias"),
        "visual.proj": get("visual_projection.weight").t(),
        **_layers("text_model", "", text.num_hidden_layers, get),
        **_layers("vision_model", "visual.", vision.num_hidden_layers, get),
    }
    return {key: value.contiguous() for key, value in state.items()}


# --- the check ---------------------------------------------------------------------------------------------------------


@dataclass
class OpenCLIPCheck:
    """What open_clip gave on the staged directory, against the folder."""

    output: Path
    context_length: int
    token_counts: list[int]
    text_max_abs_diff: float
    image_max_abs_diff: float
    tolerance: float
    transform: dict

    def lines(self) -> list[str]:
        counts = ", ".join(map(str, self.token_counts))
        return [
            f"open_clip tokenizer (context {self.context_length}): the folder's ids on captions of {counts} tokens",
            f"open_clip text features vs the folder: max |diff| = {self.text_max_abs_diff:.2e} "
            f"(tolerance {self.tolerance:.1e})",
            f"open_clip image features vs the folder: max |diff| = {self.image_max_abs_diff:.2e}",
            "open_clip transform: " + ", ".join(f"{k} {v}" for k, v in self.transform.items()),
            f"wrote {self.output}",
        ]


def _folder_ids(processor, texts, context: int):
    encoded = processor.tokenizer(
        list(texts), padding="max_length", truncation=True, max_length=context, return_tensors="pt"
    )
    return encoded["input_ids"], encoded["attention_mask"]


def _check_transform(open_model, preprocess_cfg: dict) -> dict:
    """The inference transform open_clip builds from the staged config must carry the folder's settings."""
    transform_module = importlib.import_module("open_clip.transform")
    built = open_model.visual.preprocess_cfg
    transform = transform_module.image_transform_v2(transform_module.PreprocessCfg(**built), is_train=False)
    settings = transform_settings(transform)
    size = preprocess_cfg["size"]
    expected = {"interpolation": preprocess_cfg["interpolation"], "mean": preprocess_cfg["mean"]}
    expected["std"] = preprocess_cfg["std"]
    if preprocess_cfg["resize_mode"] == "shortest":
        expected.update(resize=size, crop=[size, size])
    else:
        expected["resize"] = [size, size]
    wrong = {k: (settings.get(k), v) for k, v in expected.items() if not _same(settings.get(k), v)}
    if wrong:
        raise OpenCLIPExportError(f"open_clip builds another transform than the folder's processor: {wrong}.")
    return settings


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and abs(a - b) < 1e-7
    return a == b


def check_open_clip_directory(directory: Path, model, processor, preprocess_cfg: dict) -> OpenCLIPCheck:
    """Load `directory` the way an open_clip user does and compare tokens, features and transform with the folder."""
    factory = import_open_clip()
    spec = f"local-dir:{directory}"
    try:
        open_model = factory.create_model(spec, device="cpu", precision="fp32").eval()
        tokenizer = factory.get_tokenizer(spec)
    except (RuntimeError, ValueError, KeyError) as error:  # strict state-dict load, bad config
        raise OpenCLIPExportError(f"open_clip cannot load the exported directory: {error}") from None
    context = model.config.text_config.max_position_embeddings
    ids, mask = _folder_ids(processor, CHECK_CAPTIONS, context)
    theirs = tokenizer(list(CHECK_CAPTIONS))
    if theirs.shape != ids.shape or not torch.equal(theirs * mask, ids * mask) or (theirs * (1 - mask)).any():
        raise OpenCLIPExportError(
            "open_clip's CLIP tokenizer gives other ids than the folder's tokenizer: the folder's vocabulary is not "
            "CLIP's BPE, or its tokenizer cleans text differently."
        )
    size = model.config.vision_config.image_size
    pixels = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        text_ours = model.get_text_features(input_ids=ids, attention_mask=mask, return_dict=True).pooler_output
        image_ours = model.get_image_features(pixel_values=pixels, return_dict=True).pooler_output
        text_theirs, image_theirs = open_model.encode_text(theirs), open_model.encode_image(pixels)
    text_diff = float((text_ours - text_theirs).abs().max())
    image_diff = float((image_ours - image_theirs).abs().max())
    scale = max(1.0, float(text_ours.abs().max()), float(image_ours.abs().max()))
    if not (text_diff <= TOLERANCE * scale and image_diff <= TOLERANCE * scale):
        raise OpenCLIPExportError(
            f"open_clip's features disagree with the folder's (text max |diff| {text_diff:.2e}, image "
            f"{image_diff:.2e}, tolerance {TOLERANCE * scale:.1e}); nothing written."
        )
    return OpenCLIPCheck(
        output=directory,
        context_length=context,
        token_counts=[int(m.sum()) for m in mask],
        text_max_abs_diff=text_diff,
        image_max_abs_diff=image_diff,
        tolerance=TOLERANCE * scale,
        transform=_check_transform(open_model, preprocess_cfg),
    )


# --- the export ----------------------------------------------------------------------------------------------------------


def refuse_inexpressible(folder: Path, target: str, reasons: dict[str, str], supported) -> str:
    """The folder's model_type, read before any weight; a family the target cannot hold is refused in one line."""
    try:
        model_type = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("model_type")
    except (OSError, json.JSONDecodeError) as error:
        raise ConversionError(f"{folder / 'config.json'} cannot be read as JSON ({error}).") from None
    if model_type in reasons:
        raise ConversionError(f"{folder}: {target} cannot express a {model_type} model: {reasons[model_type]}.")
    if model_type not in supported:
        raise ConversionError(
            f"{folder}: model_type {model_type!r}; the {target} export takes {', '.join(supported)} folders."
        )
    return model_type


def export_open_clip(folder: str | Path, output: str | Path, overwrite: bool = False) -> OpenCLIPCheck:
    """Write `output` (open_clip_config.json + open_clip_model.safetensors) from a Long-CLIP or CLIP folder, checked
    by open_clip itself before it replaces anything (atomic)."""
    from safetensors.torch import save_file

    folder, output = check_model_folder(folder), Path(output).expanduser()
    refuse_inexpressible(folder, "open_clip", INEXPRESSIBLE, OPEN_CLIP_FAMILIES)
    ensure_writable(output, overwrite)
    import_open_clip()  # missing open_clip is said before the weights are read
    model, processor = load_model_folder(folder, device="cpu", dtype=torch.float32)
    model_cfg = open_clip_model_config(model.config)
    preprocess_cfg = open_clip_preprocess_config(processor.image_processor, model.config.vision_config.image_size)
    dtype = getattr(model.config, "dtype", None) or "float32"
    stored = getattr(torch, str(dtype).removeprefix("torch."), torch.float32)
    state = {key: value.to(stored) for key, value in open_clip_state_dict(model).items()}
    with atomic_folder(output, overwrite) as staging:
        config = {"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg}
        (staging / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        save_file(state, str(staging / WEIGHTS_NAME), metadata={"format": "pt"})
        check = check_open_clip_directory(staging, model, processor, preprocess_cfg)
    check.output = output
    return check


__all__ = [
    "CONFIG_NAME",
    "INEXPRESSIBLE",
    "OpenCLIPCheck",
    "OpenCLIPExportError",
    "WEIGHTS_NAME",
    "check_open_clip_directory",
    "export_open_clip",
    "import_open_clip",
    "open_clip_model_config",
    "open_clip_preprocess_config",
    "open_clip_state_dict",
    "refuse_inexpressible",
    "transform_settings",
]
