"""One-line explanations for `.pt` files that a weights-only `torch.load` refuses (converters read nothing else).

torch's own refusal is several lines with terminal colour codes and advice (`weights_only=False`) a converter cannot
take; users need to know what the file is and how to export a plain state dict from it.
"""

from __future__ import annotations

import pickletools
import re
import zipfile
from pathlib import Path

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_UNSUPPORTED_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")
# What torch itself writes into a plain state-dict pickle (tensor rebuild functions, storages, OrderedDict).
_STATE_DICT_MODULES = ("torch._utils", "torch", "collections", "torch.serialization", "_codecs")
EXPORT_HINT = "save a plain state dict instead, e.g. `torch.save(model.state_dict(), 'weights.pt')`"


def is_torchscript_archive(path: Path) -> bool:
    """torch.jit.save archives (OpenAI's released ViT files, scripted or traced models) carry `constants.pkl`."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("constants.pkl") for name in archive.namelist())


def pickled_globals(path: Path) -> list[str]:
    """The classes and functions the pickle of a zip checkpoint names, read with pickletools (nothing is imported)."""
    if not zipfile.is_zipfile(path):
        return []
    with zipfile.ZipFile(path) as archive:
        name = next((n for n in archive.namelist() if n.split("/")[-1] == "data.pkl"), None)
        payload = archive.read(name) if name else b""
    names, strings = [], []
    try:
        for opcode, arg, _ in pickletools.genops(payload):
            if opcode.name == "GLOBAL":
                names.append(arg.replace(" ", "."))
            elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                names.append(".".join(strings[-2:]))
            elif isinstance(arg, str):
                strings.append(arg)
    except Exception:  # noqa: BLE001 - a damaged pickle: fall back to torch's own message
        pass
    return names


def foreign_class(path: Path, error: Exception) -> str | None:
    """The first pickled class that is not part of a plain state dict (e.g. `torch.nn.modules.linear.Linear`)."""
    match = _UNSUPPORTED_GLOBAL.search(str(error))
    if match:
        return match.group(1)
    for name in pickled_globals(path):
        module = name.rsplit(".", 1)[0]
        if module not in _STATE_DICT_MODULES:
            return name
    return None


def unreadable_checkpoint_message(path: Path, error: Exception) -> str:
    """One line saying what `path` is and how to turn it into a state dict, for a refused weights-only load."""
    if is_torchscript_archive(path):
        return (
            f"{path}: a TorchScript archive (like OpenAI's released ViT files), not a state dict; export its weights "
            f"once with `torch.save(torch.jit.load(path, map_location='cpu').state_dict(), 'weights.pt')`."
        )
    cls = foreign_class(path, error)
    if cls:
        return (
            f"{path}: holds a pickled `{cls}` object (e.g. a whole model saved with `torch.save(model, ...)`), which a "
            f"weights-only load refuses because unpickling it could run code; {EXPORT_HINT}."
        )
    first_line = _ANSI.sub("", str(error)).strip().splitlines()[0] if str(error).strip() else ""
    return f"{path}: not a readable PyTorch checkpoint ({type(error).__name__}: {first_line})."
