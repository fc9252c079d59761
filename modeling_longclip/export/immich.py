"""`longclip-export immich MODEL OUT`: a Long-CLIP or CLIP folder in the layout immich's machine-learning server loads
for an OpenCLIP-style CLIP model.

    OUT/config.json                    open_clip's model config: embed_dim, vision_cfg, text_cfg.context_length (248)
    OUT/textual/model.onnx             input `text` (int32 token ids [1, context_length]) -> `embedding` (L2-normalized)
    OUT/textual/tokenizer.json         the CLIP BPE tokenizer, as `tokenizers.Tokenizer.from_file` reads it
    OUT/textual/tokenizer_config.json  with `pad_token` (immich pads every text to context_length with it)
    OUT/visual/model.onnx              input `image` (float32 [1, 3, S, S]) -> `embedding` (L2-normalized)
    OUT/visual/preprocess_cfg.json     size, mean, std, interpolation, resize_mode

How immich reads it (its `immich_ml/models/clip/textual.py`, `visual.py`, `transforms.py`): text is whitespace-joined
(no ftfy, no HTML unescaping), tokenized by `tokenizers` with padding and truncation to `text_cfg.context_length`,
and run as `text` (the exported tokenizer.json's normalizer does ftfy's character fixes, see `ftfy_character_fixes`); images are decoded to RGB, resized with PIL (short side to `size`, long side
`int(long / short * size)`, the filter named by `interpolation`), cropped at `int(n / 2 - size / 2)`, scaled to [0, 1]
and normalized, and run as `image`. `immich_text_ids` / `immich_pixels` below do the same, and before anything is kept
the staged directory is run that way with onnxruntime and must agree with the folder's PyTorch features (captions past
77 and 248 tokens, images whose crop needs no rounding); the graphs also pass export/onnx.py's onnxruntime check.

The graphs are export/onnx.py's traced feature paths with the int32 input and the normalization immich expects. Not
part of the model payload.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..common.errors import ConversionError
from ..common.files import atomic_folder, ensure_writable
from ..common.loading import check_model_folder, load_model_folder
from ..tokenization_longclip import clean_caption
from .onnx import RELATIVE_TOLERANCE, GraphCheck, _check, _export
from .open_clip import OPEN_CLIP_FAMILIES, open_clip_model_config, open_clip_preprocess_config, refuse_inexpressible

_LLM_TEXT_TOWER = (
    "immich's textual model gets one input, `text` (token ids padded to context_length by a tokenizer.json), while "
    "this text tower needs llm2vec's instruction template, left padding, an attention mask and a pooling mask"
)
INEXPRESSIBLE = {"llm2clip": _LLM_TEXT_TOWER, "proclip": _LLM_TEXT_TOWER}
CHECK_CAPTIONS = (
    "a photo of a cat",
    "“Don’t” say ‘ﬁve’: ＦＵＬＬ－ＷＩＤＴＨ letters…",  # quotes, ligature, width: ftfy's fixes
    "  a red bicycle leans against a stone wall\tin a narrow street; " * 4,  # past 77 tokens, whitespace runs
    "a long walk along the harbour, past fishing boats, nets, gulls and a lighthouse at the far end, " * 12,  # > 248
)
# (height, width) of the check images for a model of n px: landscape, portrait, square, each resized to an exact long
# side n + even slack, so immich's floored crop corner and the original's rounded one coincide and pixels must agree.
CHECK_IMAGE_SHAPES = (lambda n: (2 * n, 2 * n + 8), lambda n: (3 * n + 6, 3 * n), lambda n: (n + 10, n + 10))
PIL_FILTERS = {"bicubic": 3, "bilinear": 2, "nearest": 0, "lanczos": 1, "box": 4, "hamming": 5}


class ImmichExportError(ConversionError):
    """The immich export was refused: a family immich cannot run, or the immich-style check disagrees."""


class ImmichText(nn.Module):
    """int32 token ids [batch, context_length] -> L2-normalized text embedding (immich's `text` input). The text tower is
    causal and pooled at the end token, so the pad token after it changes nothing; no attention mask is needed."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        features = self.model.get_text_features(input_ids=text.long(), return_dict=True).pooler_output
        return nn.functional.normalize(features, dim=-1)


class ImmichImage(nn.Module):
    """float32 pixels [batch, 3, S, S] -> L2-normalized image embedding (immich's `image` input)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        features = self.model.get_image_features(pixel_values=image, return_dict=True).pooler_output
        return nn.functional.normalize(features, dim=-1)


# --- how immich reads the directory --------------------------------------------------------------------------------


def immich_tokenizer(directory: Path, context_length: int):
    """textual/tokenizer.json as immich loads it: padding and truncation to the context length, with the pad token of
    textual/tokenizer_config.json."""
    from tokenizers import Tokenizer

    pad_token = json.loads((directory / "textual" / "tokenizer_config.json").read_text(encoding="utf-8"))["pad_token"]
    tokenizer = Tokenizer.from_file(str(directory / "textual" / "tokenizer.json"))
    tokenizer.enable_padding(length=context_length, pad_token=pad_token, pad_id=tokenizer.token_to_id(pad_token))
    tokenizer.enable_truncation(max_length=context_length)
    return tokenizer


def immich_text_ids(tokenizer, text: str) -> np.ndarray:
    """immich's text path: whitespace runs joined (its `clean_text` without canonicalization), then the tokenizer."""
    return np.array([tokenizer.encode(" ".join(text.split())).ids], dtype=np.int32)


def immich_pixels(image, preprocess_cfg: dict) -> np.ndarray:
    """immich's image path for an OpenCLIP model: RGB, PIL resize, floored centre crop, [0, 1], normalize; [1, 3, S, S]."""
    from PIL import Image

    size = preprocess_cfg["size"]
    size = size[0] if isinstance(size, list) else size
    resample = Image.Resampling(PIL_FILTERS[preprocess_cfg["interpolation"].lower()])
    image = image if image.mode == "RGB" else image.convert("RGB")
    mode = preprocess_cfg.get("resize_mode", "shortest")
    if mode == "squash":
        image = image.resize((size, size), resample=resample)
    elif mode == "shortest":
        width, height = image.size
        if width < height:
            image = image.resize((size, int(height / width * size)), resample=resample)
        else:
            image = image.resize((int(width / height * size), size), resample=resample)
        left, top = int(image.size[0] / 2 - size / 2), int(image.size[1] / 2 - size / 2)
        image = image.crop((left, top, left + size, top + size))
    else:
        raise ImmichExportError(f"immich has no resize_mode {mode!r}.")
    array = np.asarray(image, dtype=np.float32) / 255.0
    mean, std = (np.array(preprocess_cfg[k], dtype=np.float32) for k in ("mean", "std"))
    array *= 1.0 / std
    array -= mean / std
    return array.transpose(2, 0, 1)[None]


# --- export and check ----------------------------------------------------------------------------------------------


@dataclass
class ImmichReport:
    output: Path
    context_length: int
    embed_dim: int
    graphs: list[GraphCheck]
    text_max_abs_diff: float
    image_max_abs_diff: float
    token_counts: list[int]
    image_sizes: list[tuple[int, int]]

    def lines(self) -> list[str]:
        counts = ", ".join(map(str, self.token_counts))
        sizes = ", ".join(f"{w}x{h}" for w, h in self.image_sizes)
        return [
            *(graph.line() for graph in self.graphs),
            f"immich path (tokenizers + onnxruntime) vs the original tokenization and the folder's PyTorch features: "
            f"same ids on captions of {counts} tokens, embedding max |diff| = {self.text_max_abs_diff:.2e}",
            f"immich path (PIL resize + crop + normalize + onnxruntime) vs the folder on {sizes} images: embedding "
            f"max |diff| = {self.image_max_abs_diff:.2e}",
            f"wrote {self.output} (embed_dim {self.embed_dim}, context_length {self.context_length})",
        ]


def ftfy_character_fixes() -> list:
    """`tokenizers` normalizers doing what ftfy's character fixes do to typed text before CLIP's BPE: Latin ligatures
    split, half- and full-width forms (and the ideographic space) to standard width, curly quotes straightened. immich
    runs no ftfy, so these go into the exported tokenizer.json (built from ftfy's own tables); HTML entities and
    mojibake, which typed queries do not hold, stay as immich reads them."""
    from ftfy import chardata
    from tokenizers import Regex, normalizers

    table = {**chardata.LIGATURES, **chardata.WIDTH_MAP}
    steps = [normalizers.Replace(chr(code), text) for code, text in sorted(table.items())]
    steps.append(normalizers.Replace(Regex(chardata.DOUBLE_QUOTE_RE.pattern), '"'))
    steps.append(normalizers.Replace(Regex(chardata.SINGLE_QUOTE_RE.pattern), "'"))
    return steps


def _write_tokenizer(processor, textual: Path, context_length: int) -> None:
    from tokenizers import Tokenizer, normalizers

    tokenizer = processor.tokenizer
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ImmichExportError(
            f"{type(tokenizer).__name__} has no tokenizers backend to write a tokenizer.json from."
        )
    standalone = Tokenizer.from_str(backend.to_str())
    standalone.no_padding()
    standalone.no_truncation()
    steps = [standalone.normalizer] if standalone.normalizer is not None else []
    standalone.normalizer = normalizers.Sequence([*ftfy_character_fixes(), *steps])
    standalone.save(str(textual / "tokenizer.json"))
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": context_length,
        **{name: str(getattr(tokenizer, name)) for name in ("bos_token", "eos_token", "unk_token", "pad_token")},
    }
    (textual / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def _check_images(n: int) -> list:
    from PIL import Image

    rng = np.random.RandomState(0)
    shapes = [shape(n) for shape in CHECK_IMAGE_SHAPES]
    return [Image.fromarray((rng.rand(h, w, 3) * 255).astype("uint8")) for h, w in shapes]


def check_immich_directory(directory: Path, model, processor) -> tuple[float, float, list[int], list]:
    """Run `directory` the way immich does and compare with the folder's normalized PyTorch features; returns the max
    differences, the token counts and the image sizes checked."""
    import onnxruntime

    config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    context = config["text_cfg"]["context_length"]
    preprocess_cfg = json.loads((directory / "visual" / "preprocess_cfg.json").read_text(encoding="utf-8"))
    tokenizer = immich_tokenizer(directory, context)
    textual = onnxruntime.InferenceSession(
        str(directory / "textual" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    visual = onnxruntime.InferenceSession(str(directory / "visual" / "model.onnx"), providers=["CPUExecutionProvider"])
    text_diff, counts = 0.0, []
    for caption in CHECK_CAPTIONS:
        ids = immich_text_ids(tokenizer, caption)
        # the original's cleaning first (a --format clip folder's stock tokenizer skips it; Long-CLIP's repeats it)
        ours = processor.tokenizer([clean_caption(caption)], truncation=True, max_length=context, return_tensors="pt")
        n = ours["input_ids"].shape[1]
        if ids.shape != (1, context) or not np.array_equal(ids[0, :n], ours["input_ids"][0].numpy()):
            raise ImmichExportError(
                "immich's tokenization of textual/tokenizer.json differs from the folder's tokenizer."
            )
        with torch.no_grad():
            expected = model.get_text_features(**ours, return_dict=True).pooler_output
        expected = nn.functional.normalize(expected, dim=-1).numpy()
        got = textual.run(None, {"text": ids})[0]
        text_diff, counts = max(text_diff, float(np.abs(got - expected).max())), counts + [n]
    image_diff, sizes = 0.0, []
    for image in _check_images(model.config.vision_config.image_size):
        pixels = processor(images=[image], return_tensors="pt")["pixel_values"]
        if not np.allclose(immich_pixels(image, preprocess_cfg), pixels.numpy(), atol=1e-5):
            raise ImmichExportError("immich's preprocessing from visual/preprocess_cfg.json gives other pixels.")
        with torch.no_grad():
            expected = nn.functional.normalize(model.get_image_features(pixel_values=pixels).pooler_output, dim=-1)
        got = visual.run(None, {"image": immich_pixels(image, preprocess_cfg)})[0]
        image_diff, sizes = max(image_diff, float(np.abs(got - expected.numpy()).max())), sizes + [image.size]
    if not (text_diff <= RELATIVE_TOLERANCE and image_diff <= RELATIVE_TOLERANCE):
        raise ImmichExportError(
            f"read the way immich reads it, the export disagrees with the folder (text max |diff| {text_diff:.2e}, "
            f"image {image_diff:.2e}, tolerance {RELATIVE_TOLERANCE:.0e}); nothing written."
        )
    return text_diff, image_diff, counts, sizes


def export_immich(folder: str | Path, output: str | Path, overwrite: bool = False) -> ImmichReport:
    """Write `output` in immich's CLIP model layout from a Long-CLIP or CLIP folder, checked the way immich reads it
    before it replaces anything (atomic)."""
    folder, output = check_model_folder(folder), Path(output).expanduser()
    refuse_inexpressible(folder, "immich", INEXPRESSIBLE, OPEN_CLIP_FAMILIES)
    ensure_writable(output, overwrite)
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import tokenizers  # noqa: F401
    except ImportError as error:
        raise ImmichExportError(f"the immich export needs onnx, onnxruntime and tokenizers ({error}).") from None
    model, processor = load_model_folder(folder, device="cpu", dtype=torch.float32, attn_implementation="eager")
    model_cfg = open_clip_model_config(model.config)
    size = model.config.vision_config.image_size
    preprocess_cfg = open_clip_preprocess_config(processor.image_processor, size)
    preprocess_cfg["size"] = [size, size]  # as immich's exporter writes open_clip's preprocess config
    context = model_cfg["text_cfg"]["context_length"]
    text, image = ImmichText(model), ImmichImage(model)
    ids = processor.tokenizer(list(CHECK_CAPTIONS[:2]), padding="max_length", max_length=context, truncation=True)
    text_batches = [{"text": torch.tensor(ids["input_ids"], dtype=torch.int32)}]
    image_batches = [{"image": torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))}]
    with atomic_folder(output, overwrite) as staging:
        (staging / "textual").mkdir()
        (staging / "visual").mkdir()
        (staging / "config.json").write_text(json.dumps(model_cfg, indent=2) + "\n", encoding="utf-8")
        (staging / "visual" / "preprocess_cfg.json").write_text(json.dumps(preprocess_cfg, indent=2) + "\n")
        _write_tokenizer(processor, staging / "textual", context)
        text_path, visual_path = staging / "textual" / "model.onnx", staging / "visual" / "model.onnx"
        trace_ids = text_batches[0]["text"][:1]
        _export(text, (trace_ids,), text_path, ("text",), "embedding", sequence=False)
        _export(image, (torch.zeros(1, 3, size, size),), visual_path, ("image",), "embedding", sequence=False)
        graphs = [
            _check(text_path, text, text_batches, "textual/model.onnx", "embedding"),
            _check(visual_path, image, image_batches, "visual/model.onnx", "embedding"),
        ]
        failed = [g for g in graphs if not g.max_abs_diff <= g.tolerance]
        if failed:
            raise ImmichExportError("onnxruntime disagrees with PyTorch: " + "; ".join(g.line() for g in failed))
        text_diff, image_diff, counts, sizes = check_immich_directory(staging, model, processor)
    return ImmichReport(output, context, model_cfg["embed_dim"], graphs, text_diff, image_diff, counts, sizes)


__all__ = [
    "INEXPRESSIBLE",
    "ImmichExportError",
    "ImmichImage",
    "ImmichReport",
    "ImmichText",
    "check_immich_directory",
    "export_immich",
    "immich_pixels",
    "immich_text_ids",
    "immich_tokenizer",
]
