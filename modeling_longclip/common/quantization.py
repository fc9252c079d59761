"""The LLM text tower of an LLM2CLIP / ProCLIP folder in 8 or 4 bits, through transformers' own quantization configs.

A Llama-3-8B text tower is 16 GB in bfloat16; quantized on load it fits a smaller GPU (or a CPU's memory). Only the
text tower's linear layers are quantized: the image tower, the visual projection and the adapter are left out
(`KEPT_MODULES`) and stay in the model's dtype, since they are small and the adapter works on the pooled embedding.

Backends, chosen by `--quantize` and the device (`auto`):
  8bit on CUDA  bitsandbytes LLM.int8 (`BitsAndBytesConfig(load_in_8bit=True)`)
  4bit anywhere bitsandbytes NF4 with double quantization (`load_in_4bit=True`), computing in the model's dtype
  8bit on CPU   torchao int8 weight-only (`TorchAoConfig(Int8WeightOnlyConfig())`); bitsandbytes on request
torchao has no packed 4-bit weight format for the CPU (its int4 layouts need CUDA kernels), so 4-bit is bitsandbytes'.
A backend that is missing or cannot run on the device is refused in one line naming the package to install.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch
from packaging.version import Version

from .errors import LongCLIPError
from .loading import ModelFolderError, check_model_folder, load_model_folder, resolve_device

BITS = ("8bit", "4bit")
BACKENDS = ("auto", "bitsandbytes", "torchao")
# Everything of an LLM2CLIP / ProCLIP model but the LLM text tower; transformers matches these as module prefixes.
KEPT_MODULES = ("vision_model", "visual_projection", "text_adapter")
LLM_MODEL_TYPES = ("llm2clip", "proclip")
# The versions transformers' own quantizers require.
MINIMUM_VERSIONS = {"bitsandbytes": "0.46.1", "torchao": "0.15.0"}


class QuantizationError(LongCLIPError, RuntimeError):
    """A quantization that cannot run here: its backend is missing or has no kernels for the device, or the model has
    no LLM text tower to quantize."""


def installed_version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def choose_backend(bits: str, device: str, backend: str = "auto") -> str:
    """The backend for `bits` on `device`: bitsandbytes on CUDA and for 4 bits, torchao for 8 bits on a CPU."""
    if bits not in BITS:
        raise QuantizationError(f"--quantize {bits}: choose one of {', '.join(BITS)}.")
    if backend not in BACKENDS:
        raise QuantizationError(f"--quantization-backend {backend}: choose one of {', '.join(BACKENDS)}.")
    if backend == "auto":
        backend = "bitsandbytes" if torch.device(device).type == "cuda" or bits == "4bit" else "torchao"
    if backend == "torchao" and bits == "4bit":
        raise QuantizationError(
            "--quantize 4bit with torchao: torchao's int4 weight formats need CUDA kernels (or mslk), none runs "
            "on a CPU build of torch; use --quantization-backend bitsandbytes (NF4)."
        )
    return backend


def require_backend(backend: str, bits: str, device: str) -> None:
    """Refuse in one line, naming what to install, when `backend` cannot quantize on `device` here."""
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise QuantizationError(f"--quantize {bits} on {device}: needs a CUDA GPU, and CUDA is not available here.")
    found, minimum = installed_version(backend), MINIMUM_VERSIONS[backend]
    if found is None:
        raise QuantizationError(f"--quantize {bits} ({backend}) needs the {backend} package: pip install {backend}")
    if Version(found) < Version(minimum):
        raise QuantizationError(
            f"--quantize {bits} needs {backend} >= {minimum} (installed: {found}): pip install -U '{backend}>={minimum}'"
        )
    if backend == "bitsandbytes":
        import bitsandbytes

        device_type = torch.device(device).type
        supported = set(getattr(bitsandbytes, "supported_torch_devices", {"cuda"}))
        if device_type not in supported:
            raise QuantizationError(
                f"--quantize {bits}: bitsandbytes {found} has no kernels for {device_type} (it runs on "
                f"{', '.join(sorted(supported))}); it needs a CUDA GPU here."
            )


def text_tower_quantization_config(
    bits: str, device: str = "cpu", backend: str = "auto", compute_dtype: torch.dtype = torch.float32
):
    """transformers' quantization config that quantizes only the LLM text tower of an LLM2CLIP / ProCLIP model on
    `device`, refused in one line when its backend cannot run there."""
    backend = choose_backend(bits, device, backend)
    require_backend(backend, bits, device)
    return build_quantization_config(bits, backend, compute_dtype)


def build_quantization_config(bits: str, backend: str, compute_dtype: torch.dtype = torch.float32):
    """The config itself (no check that the backend runs here): every module but the text tower is left out."""
    if backend == "torchao":
        from torchao.quantization import Int8WeightOnlyConfig
        from transformers import TorchAoConfig

        return TorchAoConfig(Int8WeightOnlyConfig(), modules_to_not_convert=list(KEPT_MODULES))
    from transformers import BitsAndBytesConfig

    if bits == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=list(KEPT_MODULES))
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
        llm_int8_skip_modules=list(KEPT_MODULES),
    )


def describe_quantization(config) -> str:
    """One line for logs and cache metadata, e.g. "bitsandbytes 4-bit nf4 (double quantization)"."""
    method = str(getattr(config, "quant_method", "")).rsplit(".", 1)[-1].lower()
    if "torchao" in method:
        return f"torchao {type(config.quant_type).__name__}"
    if getattr(config, "load_in_8bit", False):
        return "bitsandbytes 8-bit (LLM.int8)"
    if getattr(config, "load_in_4bit", False):
        double = " (double quantization)" if config.bnb_4bit_use_double_quant else ""
        return f"bitsandbytes 4-bit {config.bnb_4bit_quant_type}{double}"
    return method or type(config).__name__


def check_quantizable_folder(model_dir: str | Path) -> dict:
    """The folder's config.json, refused in one line unless it is an LLM2CLIP / ProCLIP folder holding its text tower."""
    model_dir = check_model_folder(model_dir)
    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ModelFolderError(f"{model_dir / 'config.json'}: unreadable ({error}).") from None
    model_type = config.get("model_type")
    if model_type not in LLM_MODEL_TYPES:
        raise QuantizationError(
            f"{model_dir}: --quantize applies to the LLM text tower of LLM2CLIP / ProCLIP folders; this is a "
            f"{model_type!r} model."
        )
    if config.get("text_model_name_or_path"):
        raise QuantizationError(
            f"{model_dir}: the text tower's weights live in {config['text_model_name_or_path']}, outside the folder; "
            "quantized loading needs them inside it (convert without an external text tower)."
        )
    return config


def is_quantized(model) -> bool:
    return getattr(getattr(model, "config", None), "quantization_config", None) is not None


def load_quantized_model(
    model_dir: str | Path,
    bits: str,
    device: str | None = None,
    backend: str = "auto",
    dtype: torch.dtype | None = None,
    **kwargs,
):
    """(model, processor) of an LLM2CLIP / ProCLIP folder with its LLM text tower in `bits`, everything else in `dtype`
    (default: bfloat16 on CUDA, float32 on a CPU). Loaded with this package's model class rather than the folder's
    copy of it, so folders written before transformers' quantizers could ask for the input embeddings load too."""
    from .. import LLM2CLIPModel, ProCLIPModel

    config = check_quantizable_folder(model_dir)
    device = resolve_device(device)
    dtype = dtype or (torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32)
    quantization_config = text_tower_quantization_config(bits, device, backend, compute_dtype=dtype)
    target = torch.device(device)
    if target.type == "cuda" and target.index is None:
        target = torch.device("cuda", torch.cuda.current_device())
    model_class = {"llm2clip": LLM2CLIPModel, "proclip": ProCLIPModel}[config["model_type"]]
    return load_model_folder(
        model_dir,
        device,
        model_class=model_class,
        dtype=dtype,
        quantization_config=quantization_config,
        device_map={"": str(target)},
        **kwargs,
    )


def plain_tensors(name: str, tensor: torch.Tensor) -> Iterator[tuple[str, torch.Tensor]]:
    """A tensor as the plain tensors that hold it: itself, or a tensor subclass's (torchao's) inner tensors."""
    flatten = getattr(type(tensor), "__tensor_flatten__", None)
    if flatten is None or type(tensor) in (torch.Tensor, torch.nn.Parameter):
        yield name, tensor
        return
    inner_names, _ = tensor.__tensor_flatten__()
    for inner in inner_names:
        yield from plain_tensors(f"{name}.{inner}", getattr(tensor, inner))


def stored_tensors(module: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """The module's state dict as plain tensors (bitsandbytes already keeps its scales there; torchao's are inside
    tensor subclasses)."""
    for name, tensor in module.state_dict().items():
        yield from plain_tensors(name, tensor)


def storage_bytes(module: torch.nn.Module) -> int:
    """Bytes of the module's weights and buffers as held in memory: quantized values, scales and all."""
    return sum(t.numel() * t.element_size() for _, t in stored_tensors(module))


def checkpoint_text_tensors(model_dir: str | Path, prefix: str = "text_model.") -> Iterator[tuple[str, torch.Tensor]]:
    """The text tower's full-precision tensors as the folder's safetensors hold them (names without `prefix`), in
    name order, read one at a time: what a quantized tower was made from."""
    from safetensors import safe_open

    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        raise ModelFolderError(f"{model_dir}: no safetensors weights to read the text tower from.")
    where: dict[str, Path] = {}
    for file in files:
        with safe_open(str(file), framework="pt") as weights:
            where.update({key: file for key in weights.keys() if key.startswith(prefix)})  # noqa: SIM118
    for key in sorted(where):
        with safe_open(str(where[key]), framework="pt") as weights:
            yield key[len(prefix) :], weights.get_tensor(key)


__all__ = [
    "BACKENDS",
    "BITS",
    "KEPT_MODULES",
    "QuantizationError",
    "build_quantization_config",
    "check_quantizable_folder",
    "checkpoint_text_tensors",
    "choose_backend",
    "describe_quantization",
    "installed_version",
    "is_quantized",
    "load_quantized_model",
    "plain_tensors",
    "require_backend",
    "storage_bytes",
    "stored_tensors",
    "text_tower_quantization_config",
]
