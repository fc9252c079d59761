"""Writing model folders: atomically (temporary folder, then rename) and with a model card.

Every converter and the trainer's final export go through `write_model_folder`, so every folder has the same files:
config with auto_map, safetensors weights, tokenizer, processor, the flat payload code and README.md.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import re
import shutil
import uuid
from pathlib import Path

import torch

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class ConversionError(RuntimeError):
    """A conversion or export was refused; nothing was written."""


def ensure_writable(output: str | Path, overwrite: bool) -> Path:
    """Refuse early, before any work, to replace an existing non-empty folder without `overwrite`."""
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise ConversionError(f"{output} exists and is not a folder.")
    if output.is_dir() and any(output.iterdir()) and not overwrite:
        raise ConversionError(f"{output} already exists and is not empty; pass --overwrite to replace it.")
    return output


@contextlib.contextmanager
def atomic_folder(output: str | Path, overwrite: bool = False):
    """Yield a temporary sibling folder; on success it replaces `output` in one rename, on failure it vanishes."""
    output = ensure_writable(output, overwrite)
    output.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    staging = output.parent / f".{output.name}.tmp-{tag}"
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    old = output.parent / f".{output.name}.old-{tag}"
    if output.exists():
        output.rename(old)
    staging.rename(output)
    shutil.rmtree(old, ignore_errors=True)


def model_card_template(family: str) -> str:
    """The template from model_cards/ (installed as package data, or at the top of a checkout)."""
    name = f"{family}.md"
    try:
        return importlib.resources.files("modeling_longclip.model_cards").joinpath(name).read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError):
        return (Path(__file__).resolve().parents[2] / "model_cards" / name).read_text(encoding="utf-8")


def render_model_card(family: str, **fields) -> str:
    """Fill `{{name}}` placeholders; a placeholder left unfilled is a bug, so it raises."""
    text = model_card_template(family)
    for key, value in fields.items():
        text = text.replace("{{" + key + "}}", str(value))
    left = sorted(set(re.findall(r"\{\{(\w+)\}\}", text)))
    if left:
        raise KeyError(f"model card template {family}.md has unfilled placeholders: {left}")
    return text


def write_model_folder(model, processor, output: str | Path, card: str, dtype: str | None = None, overwrite=False):
    """Save model (safetensors), processor, payload code and README.md into `output`, atomically."""
    from ..hub import validate_model_folder

    with atomic_folder(output, overwrite) as staging:
        if dtype is not None:
            model = model.to(DTYPES[dtype])
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
        (staging / "README.md").write_text(card, encoding="utf-8")
        validate_model_folder(staging)
    return Path(output)
