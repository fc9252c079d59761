"""Loading the folder a training command starts from, refused in one line when it cannot be what the command needs.

`from_pretrained` would otherwise fail deep inside transformers (a path that does not exist is taken for a Hub id, a
truncated safetensors file fails in its Rust reader) or, worse, succeed: a folder of another model_type loads into the
wrong class with a warning, trains a randomly initialised head, and is only refused when the result is checked.
"""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path

from safetensors import SafetensorError

from ..common.errors import LongCLIPError
from ..common.folders import weight_file_problems
from ..common.loading import ModelFolderError

KINDS = {"longclip": "Long-CLIP", "llm2clip": "LLM2CLIP", "proclip": "ProCLIP", "clip": "stock CLIP"}
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def check_model_folder(path: str, model_types: tuple[str, ...], wanted: str) -> None:
    """Refuse `path` unless it is a model folder of one of `model_types` with readable weights; `wanted` says, for the
    message, what the command needs. A name that is no local path but looks like a Hub id is left to the Hub."""
    folder = Path(path).expanduser()
    if not folder.exists():
        if HUB_ID.fullmatch(path) and not path.startswith("."):
            return
        raise ModelFolderError(f"{path}: no such model folder; {wanted}.")
    if not folder.is_dir():
        raise ModelFolderError(f"{path}: a file, not a model folder; {wanted}.")
    config = folder / "config.json"
    if not config.is_file():
        raise ModelFolderError(f"{path}: not a model folder (no config.json); {wanted}.")
    try:
        model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError) as error:
        raise ModelFolderError(f"{config}: not a readable config ({one_line(error)}).") from None
    if model_type not in model_types:
        kind = KINDS.get(model_type, f"{model_type!r}") if model_type else "model_type-less"
        raise ModelFolderError(f"{path}: a {kind} folder (config.json model_type {model_type!r}); {wanted}.")
    problems = weight_file_problems(folder)  # every weight file's header against its size: a truncated copy
    if problems:
        raise ModelFolderError(f"{path}: {'; '.join(problems)}.")


@contextlib.contextmanager
def load_errors_in_one_line(path: str):
    """Around `from_pretrained` calls: what still fails while loading a checked folder (a Hub id offline, unreadable
    tokenizer files) becomes one line naming `path` instead of a traceback."""
    try:
        yield
    except LongCLIPError:
        raise
    except (OSError, ValueError, SafetensorError) as error:
        raise ModelFolderError(f"{path}: cannot be loaded ({one_line(error)}).") from None


__all__ = ["check_model_folder", "load_errors_in_one_line", "one_line"]
