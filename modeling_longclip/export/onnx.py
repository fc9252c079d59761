"""`longclip-export-onnx FOLDER`: the text and image feature paths of a model folder as two ONNX graphs.

Writes FOLDER/onnx/text_model.onnx (input_ids, attention_mask, and pooling_mask for LLM2CLIP / ProCLIP ->
text_features) and FOLDER/onnx/vision_model.onnx (pixel_values -> image_features): the projected, un-normalized
features of `get_text_features` / `get_image_features`, in float32, with dynamic batch and sequence axes. Before
anything is kept, onnxruntime runs both graphs on inputs of another batch size and length than the traced ones and
must agree with PyTorch within the tolerance; otherwise nothing is written. Not part of the model payload.

`--quantize int8` also writes text_model_int8.onnx and vision_model_int8.onnx beside them: onnxruntime's dynamic
quantization (int8 weights per output channel, activations quantized per batch at run time), about a quarter of the
size. They are run on the same check inputs and kept only when every embedding's cosine to PyTorch's float32 one
reaches `--min-cosine`.
"""

from __future__ import annotations

import logging
import sys
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..common.cli import ArgumentParser, command
from ..common.errors import ConversionError
from ..common.files import atomic_folder, ensure_writable
from ..common.loading import check_model_folder, load_model_folder

ONNX_FOLDER = "onnx"
OPSET = 18
# fp32 graphs of the same math in another kernel order: error grows with the feature scale, not with model size.
RELATIVE_TOLERANCE = 1e-4

# Traced with two padded captions; checked with three others (another batch size and length, one past CLIP's 77
# tokens) and one alone (no padding).
TRACE_TEXTS = ("a red car parked next to a green tree", "two dogs")
_HARBOUR = (
    "a wide photograph of a busy harbour at dawn, fishing boats moored along a wooden pier, gulls above the masts. "
)
CHECK_TEXTS = (
    ("a bowl of fruit", _HARBOUR * 4, "a cat on a sofa"),
    ("a lighthouse with a green lantern stands on the rocks at the far left of the bay",),
)
TEXT_INPUTS = ("input_ids", "attention_mask", "pooling_mask")
QUANTIZATIONS = ("int8",)
MIN_COSINE = 0.99  # an int8 graph whose embeddings stray further from float32 is refused


class ExportError(ConversionError):
    """The ONNX export was refused: the graphs disagree with PyTorch, or the folder cannot be exported."""


class TextFeatures(nn.Module):
    """get_text_features(...).pooler_output with positional inputs, as the tracer needs."""

    def __init__(self, model: nn.Module, input_names: tuple[str, ...]):
        super().__init__()
        self.model, self.input_names = model, input_names

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.model.get_text_features(**dict(zip(self.input_names, inputs)), return_dict=True).pooler_output


class ImageFeatures(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model.get_image_features(pixel_values=pixel_values, return_dict=True).pooler_output


@dataclass
class GraphCheck:
    """Largest |onnxruntime - PyTorch| over the check batches of one graph, and the tolerance it had to meet."""

    name: str
    inputs: tuple[str, ...]
    output: str
    max_abs_diff: float
    tolerance: float
    shapes: list[tuple[int, ...]]

    def line(self) -> str:
        shapes = ", ".join("x".join(map(str, s)) for s in self.shapes)
        return (
            f"{self.name}: ({', '.join(self.inputs)}) -> {self.output}; onnxruntime vs PyTorch max |diff| = "
            f"{self.max_abs_diff:.2e} (tolerance {self.tolerance:.1e}) on inputs {shapes}"
        )


@dataclass
class QuantizedCheck:
    """Smallest cosine between an int8 graph's embeddings and PyTorch's float32 ones over the check batches."""

    name: str
    min_cosine: float
    floor: float
    megabytes: float
    float32_megabytes: float
    shapes: list[tuple[int, ...]]

    def line(self) -> str:
        shapes = ", ".join("x".join(map(str, s)) for s in self.shapes)
        return (
            f"{self.name}: dynamic int8; cosine to PyTorch float32 >= {self.min_cosine:.5f} (floor {self.floor}) on "
            f"inputs {shapes}; {self.megabytes:.1f} MB (float32: {self.float32_megabytes:.1f} MB)"
        )


def _text_batch(processor, texts, names=None) -> dict[str, torch.Tensor]:
    encoded = processor(text=list(texts), return_tensors="pt", padding=True)
    names = names or tuple(n for n in TEXT_INPUTS if n in encoded)
    return {n: encoded[n] for n in names}


def _image_batch(processor, count: int, seed: int) -> torch.Tensor:
    from PIL import Image

    rng = np.random.RandomState(seed)
    images = [Image.fromarray((rng.rand(48 + 16 * i, 64, 3) * 255).astype("uint8")) for i in range(count)]
    return processor(images=images, return_tensors="pt")["pixel_values"].float()


def _export(module: nn.Module, args: tuple, path: Path, input_names, output_name: str, sequence: bool) -> None:
    axes = {name: ({0: "batch", 1: "sequence"} if sequence else {0: "batch"}) for name in input_names}
    axes[output_name] = {0: "batch"}
    with warnings.catch_warnings():  # the tracer's notes on shape-dependent Python code that it keeps symbolic
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=list(input_names),
            output_names=[output_name],
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )


def _check(
    path: Path, module: nn.Module, batches: list[dict[str, torch.Tensor]], name: str, output: str
) -> GraphCheck:
    import onnx
    import onnxruntime

    onnx.checker.check_model(str(path))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst, tolerance, shapes = 0.0, 0.0, []
    for batch in batches:
        with torch.no_grad():
            expected = module(*batch.values()).float().numpy()
        got = session.run([output], {k: v.numpy() for k, v in batch.items()})[0]
        if got.shape != expected.shape:
            raise ExportError(f"{name}: onnxruntime gives shape {got.shape}, PyTorch {expected.shape}.")
        worst = max(worst, float(np.abs(got - expected).max()))
        tolerance = max(tolerance, RELATIVE_TOLERANCE * max(1.0, float(np.abs(expected).max())))
        shapes.append(tuple(next(iter(batch.values())).shape))
    return GraphCheck(name, tuple(batches[0]), output, worst, tolerance, shapes)


@contextmanager
def _without_preprocessing_advice():
    """onnxruntime's quantizer advises shape pre-processing on the root logger; measured on these graphs it changes
    neither speed nor cosine, so the advice is dropped rather than printed to every user."""

    def drop(record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()

    root = logging.getLogger()
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)


def quantize_graph(source: Path, target: Path) -> None:
    """onnxruntime's dynamic quantization: int8 weights with one scale per output channel, uint8 activations scaled
    per batch at run time; weight MatMuls, Conv and the embedding Gathers become integer kernels (Gemm and the
    attention's activation-activation MatMuls stay float32). One scale per tensor instead loses far more: cosine to
    float32 0.93 instead of 0.988 on all-MiniLM-L6-v2 (docs/benchmarks.md)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _without_preprocessing_advice():
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, per_channel=True)


def _check_quantized(
    path: Path, fp32_path: Path, module: nn.Module, batches, name: str, output: str, floor: float
) -> QuantizedCheck:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst, shapes = 1.0, []
    for batch in batches:
        with torch.no_grad():
            expected = module(*batch.values()).float()
        got = torch.from_numpy(session.run([output], {k: v.numpy() for k, v in batch.items()})[0])
        if got.shape != expected.shape or not torch.isfinite(got).all():
            raise ExportError(f"{name}: onnxruntime gives shape {tuple(got.shape)} or non-finite values.")
        worst = min(worst, torch.nn.functional.cosine_similarity(got, expected, dim=-1).min().item())
        shapes.append(tuple(next(iter(batch.values())).shape))
    megabytes = path.stat().st_size / 1e6
    return QuantizedCheck(name, worst, floor, megabytes, fp32_path.stat().st_size / 1e6, shapes)


def require_onnx_tools(quantize: str | None) -> None:
    """Refuse in one line, naming the package to install, when the export (or its quantization) cannot run here."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as error:
        raise ExportError(
            f"the ONNX export needs onnx and onnxruntime ({error}): pip install onnx onnxruntime"
        ) from None
    if quantize is None:
        return
    if quantize not in QUANTIZATIONS:
        raise ExportError(f"--quantize {quantize}: choose one of {', '.join(QUANTIZATIONS)}.")
    try:
        from onnxruntime.quantization import quantize_dynamic  # noqa: F401
    except ImportError as error:
        raise ExportError(
            f"--quantize {quantize} needs onnxruntime's quantization tools ({error}): pip install -U onnxruntime"
        ) from None


def export_onnx(
    folder: str | Path, overwrite: bool = False, quantize: str | None = None, min_cosine: float = MIN_COSINE
) -> list[GraphCheck | QuantizedCheck]:
    """Export FOLDER's text and image feature graphs into FOLDER/onnx, checked with onnxruntime; atomic. With
    `quantize="int8"`, dynamically quantized copies are written beside them, kept only at cosine >= `min_cosine`."""
    folder = check_model_folder(folder)  # missing, no config.json, truncated weights: one line, before any work
    require_onnx_tools(quantize)
    output = ensure_writable(folder / ONNX_FOLDER, overwrite)
    model, processor = load_model_folder(folder, "cpu", dtype=torch.float32, attn_implementation="eager")

    trace_text = _text_batch(processor, TRACE_TEXTS)
    names = tuple(trace_text)
    # In eval mode: torch.onnx.export restores the wrapper's mode afterwards, and a wrapper left in training mode would
    # switch dropout on in every tower (BERT-style text towers have it) for the checks that follow.
    text, image = TextFeatures(model, names).eval(), ImageFeatures(model).eval()
    text_batches = [_text_batch(processor, texts, names) for texts in CHECK_TEXTS]
    image_batches = [{"pixel_values": _image_batch(processor, n, seed=n)} for n in (3, 1)]
    with atomic_folder(output, overwrite) as staging:
        text_path, vision_path = staging / "text_model.onnx", staging / "vision_model.onnx"
        _export(text, tuple(trace_text.values()), text_path, names, "text_features", sequence=True)
        _export(
            image,
            (_image_batch(processor, 2, seed=0),),
            vision_path,
            ("pixel_values",),
            "image_features",
            sequence=False,
        )
        checks = [
            _check(text_path, text, text_batches, "text_model.onnx", "text_features"),
            _check(vision_path, image, image_batches, "vision_model.onnx", "image_features"),
        ]
        failed = [c for c in checks if not c.max_abs_diff <= c.tolerance]
        if failed:
            lines = "; ".join(c.line() for c in failed)
            raise ExportError(f"onnxruntime disagrees with PyTorch, nothing written: {lines}")
        if quantize:
            quantized = []
            for path, module, batches, output_name in (
                (text_path, text, text_batches, "text_features"),
                (vision_path, image, image_batches, "image_features"),
            ):
                target = path.with_name(f"{path.stem}_{quantize}.onnx")
                quantize_graph(path, target)
                quantized.append(_check_quantized(target, path, module, batches, target.name, output_name, min_cosine))
            strays = [c for c in quantized if not c.min_cosine >= min_cosine]
            if strays:
                lines = "; ".join(c.line() for c in strays)
                raise ExportError(
                    f"an int8 graph strays from float32 (below --min-cosine {min_cosine}), nothing written: {lines}"
                )
            checks += quantized
    return checks


@command(kept="nothing was written (FOLDER/onnx is replaced only after every graph passes)")
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(
        prog="longclip-export-onnx",
        description="Export a model folder's text and image feature paths to FOLDER/onnx/{text,vision}_model.onnx, "
        "checked with onnxruntime against PyTorch before anything is kept.",
    )
    parser.add_argument(
        "folder", help="a converted or fine-tuned model folder (Long-CLIP, stock CLIP, LLM2CLIP, ProCLIP)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing FOLDER/onnx")
    parser.add_argument(
        "--quantize",
        choices=QUANTIZATIONS,
        help="also write {text,vision}_model_int8.onnx: onnxruntime's dynamic int8 quantization, checked by cosine",
    )
    parser.add_argument(
        "--min-cosine",
        type=float,
        default=MIN_COSINE,
        help="smallest cosine between an int8 graph's and PyTorch's float32 embeddings that is kept "
        "(default: %(default)s)",
    )
    args = parser.parse_args(argv)
    checks = export_onnx(args.folder, overwrite=args.overwrite, quantize=args.quantize, min_cosine=args.min_cosine)
    for check in checks:
        print(check.line())
    print(f"wrote {Path(args.folder) / ONNX_FOLDER}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
