"""Loading a saved model folder for a tool (evaluation, feature extraction, exports, search): every family of this
package through its remote code, and any transformers dual encoder (CLIPModel, SiglipModel, ...), with one clear line
for each way a folder can be wrong instead of a traceback from deep inside transformers."""

from __future__ import annotations

from pathlib import Path

import torch

from .errors import LongCLIPError
from .folders import weight_file_problems


class ModelFolderError(LongCLIPError, ValueError):
    """The path is not a loadable model folder (missing, no config.json, unreadable weights or tokenizer)."""


def resolve_device(device: str | None) -> str:
    """`device`, or cuda when available; a CUDA device on a machine without one is refused in one line."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise ModelFolderError(f"--device {device}: CUDA is not available on this machine.")
    return device


def check_model_folder(model_dir: str | Path) -> Path:
    """The folder as a Path, refused in one line when it is missing, holds no config.json, or a safetensors weight
    file is truncated or damaged (read from its header, before anything loads)."""
    model_dir = Path(model_dir).expanduser()
    if not model_dir.is_dir():
        what = "a file, not a model folder" if model_dir.exists() else "no such model folder"
        raise ModelFolderError(f"{model_dir}: {what}.")
    if not (model_dir / "config.json").is_file():
        raise ModelFolderError(f"{model_dir}: not a model folder (no config.json).")
    problems = weight_file_problems(model_dir)
    if problems:
        raise ModelFolderError(f"{model_dir}: {'; '.join(problems)}.")
    return model_dir


def load_model_folder(
    model_dir: str | Path, device: str | None = None, dual_encoder: bool = True, model_class=None, **kwargs
):
    """(model in eval mode on `device`, processor) from a saved folder, remote code allowed; `kwargs` go to
    `AutoModel.from_pretrained` (dtype, quantization_config, ...), or to `model_class.from_pretrained` when a class
    is given. With `dual_encoder`, a model without `get_text_features` / `get_image_features` is refused."""
    from safetensors import SafetensorError
    from transformers import AutoModel, AutoProcessor

    model_dir = check_model_folder(model_dir)
    device = resolve_device(device)
    if model_class is None:
        model_class, kwargs = AutoModel, {"trust_remote_code": True, **kwargs}
    try:
        model = model_class.from_pretrained(str(model_dir), **kwargs).eval()
        processor = AutoProcessor.from_pretrained(str(model_dir), trust_remote_code=True)
    except (OSError, ValueError, SafetensorError) as error:  # unreadable weights or tokenizer, unknown model_type
        detail = " ".join(str(error).split())
        raise ModelFolderError(f"{model_dir}: cannot load the model or its processor ({detail}).") from None
    if "device_map" not in kwargs and "quantization_config" not in kwargs:
        model = model.to(device)
    if dual_encoder and not all(
        callable(getattr(model, name, None)) for name in ("get_text_features", "get_image_features")
    ):
        raise ModelFolderError(
            f"{model_dir}: {type(model).__name__} is not a dual encoder (no get_text_features / get_image_features)."
        )
    return model, processor


__all__ = ["ModelFolderError", "check_model_folder", "load_model_folder", "resolve_device"]
