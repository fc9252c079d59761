"""Model cards: the templates in model_cards/ (installed as package data), filled per folder."""

from __future__ import annotations

import importlib.resources
import re
from pathlib import Path


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


__all__ = ["model_card_template", "render_model_card"]
