"""Whether a model folder would load with `AutoModel.from_pretrained(folder, trust_remote_code=True)`, checked
locally before a folder is kept or uploaded (converters, trainers, Hub upload): a folder without its payload code,
weights or tokenizer would otherwise only fail later, for whoever downloads it."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from pathlib import Path

from .errors import LongCLIPError


class FolderNotLoadableError(LongCLIPError, ValueError):
    """The folder would fail `AutoModel.from_pretrained(folder, trust_remote_code=True)`."""


CONFIG_FILES_WITH_AUTO_MAP = (
    "config.json",
    "processor_config.json",
    "preprocessor_config.json",
    "tokenizer_config.json",
)

# The two forms transformers' remote-code loader follows (dynamic_module_utils.get_relative_imports).
_RELATIVE_IMPORT = re.compile(r"^\s*(?:import\s+\.(\S+)\s*$|from\s+\.(\S+)\s+import)", re.MULTILINE)
_IDENTIFIER = re.compile(r"^[A-Za-z_]\w*$")


def _read_json(path: Path, problems: list[str]) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        problems.append(f"{path.name} cannot be parsed as JSON ({err})")
        return None
    if not isinstance(data, dict):
        problems.append(f"{path.name} is not a JSON object")
        return None
    return data


def _auto_map_references(data, where: str) -> Iterator[tuple[str, str]]:
    """Yield (where, reference) for every auto_map value, nested ones included (processor configs embed theirs)."""
    if isinstance(data, dict):
        for key, value in data.items():
            if key == "auto_map" and isinstance(value, dict):
                for auto_class, refs in value.items():
                    for ref in refs if isinstance(refs, (list, tuple)) else [refs]:
                        if ref is not None:  # tokenizers map [slow, fast] with None for a missing one
                            yield f"{where} auto_map[{auto_class!r}]", ref
            else:
                yield from _auto_map_references(value, where)
    elif isinstance(data, list):
        for item in data:
            yield from _auto_map_references(item, where)


# Bytes per element of each safetensors dtype (sub-byte and unknown dtypes skip the per-tensor size check).
SAFETENSORS_DTYPE_BYTES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E5M2": 1,
    "F8_E4M3": 1,
    "F8_E8M0": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
    "C64": 8,
}
_AGAIN = "copy or download it again (an interrupted copy or download?)"


def safetensors_problem(path: str | Path) -> str | None:
    """Why the safetensors file at `path` cannot be read whole, or None. Only the header is read: every tensor's byte
    range is checked against its dtype and shape, and the ranges against the file size, so a truncated copy is named
    before anything loads (or is uploaded) instead of failing deep inside safetensors."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        length = int.from_bytes(prefix, "little") if len(prefix) == 8 else None
        if length is None or length > size - 8:
            return f"{path.name} is truncated ({size} bytes, shorter than its own header); {_AGAIN}"
        try:
            header = json.loads(handle.read(length).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return f"{path.name} has no readable safetensors header (not a safetensors file, or damaged); {_AGAIN}"
    if not isinstance(header, dict):
        return f"{path.name} has no readable safetensors header; {_AGAIN}"
    end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            begin, stop = (int(offset) for offset in entry["data_offsets"])
            elements = math.prod(int(n) for n in entry["shape"])
        except (TypeError, KeyError, ValueError):
            return f"{path.name}: the header entry of `{name}` is malformed; {_AGAIN}"
        width = SAFETENSORS_DTYPE_BYTES.get(entry.get("dtype"))
        if width is not None and stop - begin != elements * width:
            return (
                f"{path.name}: tensor `{name}` spans {stop - begin} bytes, its dtype and shape need {elements * width}"
            )
        end = max(end, stop)
    expected = 8 + length + end
    if size < expected:
        return f"{path.name} is truncated: {size} of {expected} bytes; {_AGAIN}"
    if size > expected:
        return f"{path.name} has {size - expected} bytes after its last tensor (not a complete safetensors file)"
    return None


def weight_files(folder: str | Path) -> list[Path]:
    """The safetensors files `from_pretrained` reads from `folder`: model.safetensors, or the shards its index lists
    (those that exist)."""
    folder = Path(folder)
    if (folder / "model.safetensors").is_file():
        return [folder / "model.safetensors"]
    try:
        weight_map = json.loads((folder / "model.safetensors.index.json").read_text(encoding="utf-8"))["weight_map"]
        shards = sorted({str(shard) for shard in weight_map.values()})
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError):
        return []
    return [folder / shard for shard in shards if (folder / shard).is_file()]


def weight_file_problems(folder: str | Path) -> list[str]:
    """`safetensors_problem` of every weight file of `folder` (see `weight_files`)."""
    problems = [safetensors_problem(path) for path in weight_files(folder)]
    return [problem for problem in problems if problem]


def _check_weights(folder: Path, problems: list[str]) -> None:
    if (folder / "model.safetensors").is_file():
        problems.extend(weight_file_problems(folder))
        return
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        data = _read_json(index, problems)
        if data is None:
            return
        weight_map = data.get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            problems.append(f"{index.name} has no weight_map")
            return
        missing = sorted({shard for shard in weight_map.values() if not (folder / str(shard)).is_file()})
        if missing:
            problems.append(f"weight shards listed in {index.name} are missing: {', '.join(missing)}")
        problems.extend(weight_file_problems(folder))
        return
    other = sorted(p.name for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt"))
    hint = (
        f" (found {', '.join(other)}: only safetensors weights are accepted, re-save them as safetensors)"
        if other
        else ""
    )
    problems.append(
        f"no weights: model.safetensors (or model.safetensors.index.json with its shards) is missing{hint}"
    )


def _check_tokenizer(folder: Path, problems: list[str]) -> None:
    if (folder / "tokenizer.json").is_file():
        return
    needed = ["tokenizer_config.json", "vocab.json", "merges.txt"]
    missing = [name for name in needed if not (folder / name).is_file()]
    if missing:
        problems.append(
            f"no tokenizer: neither tokenizer.json nor {' + '.join(needed)} "
            f"(missing: tokenizer.json, {', '.join(missing)})"
        )


def _check_payload_code(folder: Path, configs: dict[str, dict], problems: list[str]) -> None:
    """Every module auto_map names, and every sibling those modules import relatively, must travel in the folder."""
    modules: dict[str, str] = {}  # module name -> who needs it
    for config_name, data in configs.items():
        for where, ref in _auto_map_references(data, config_name):
            if not isinstance(ref, str):
                problems.append(f"{where} = {ref!r} is not a 'module.ClassName' string")
                continue
            if "--" in ref:
                # "owner/repo--module.Class": transformers fetches that code from the other repo, not this folder.
                ref = ref.split("--", 1)[1]
                local = False
            else:
                local = True
            module, dot, class_name = ref.partition(".")
            if not dot or not _IDENTIFIER.match(module) or not _IDENTIFIER.match(class_name):
                problems.append(f"{where} = {ref!r} is not a 'module.ClassName' reference")
            elif local:
                modules.setdefault(module, where)

    seen: set[str] = set()
    queue = list(modules.items())
    while queue:
        module, needed_by = queue.pop(0)
        if module in seen:
            continue
        seen.add(module)
        path = folder / f"{module}.py"
        if not path.is_file():
            problems.append(f"payload file {module}.py is missing (needed by {needed_by})")
            continue
        try:
            source = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            problems.append(f"payload file {module}.py cannot be read ({err})")
            continue
        for match in _RELATIVE_IMPORT.finditer(source):
            imported = match.group(1) or match.group(2)
            if _IDENTIFIER.match(imported):
                queue.append((imported, f"`from .{imported} import` in {module}.py"))
            else:
                problems.append(
                    f"{module}.py imports `.{imported}`: remote code only resolves flat sibling modules "
                    "(from .x import ...)"
                )


def validate_model_folder(folder: str | Path) -> None:
    """Refuse, with every problem named at once, a folder that `AutoModel.from_pretrained` could not load.

    Checked: config.json with a model_type; safetensors weights (all shards of an index, each file's header read and
    its size compared with what the header describes, so a truncated copy is caught); a tokenizer; and for remote
    code, each module named in an `auto_map` plus the siblings it imports relatively. Pickled weights (.bin, .pt) do
    not count: loading them runs arbitrary code, and the Hub flags them.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FolderNotLoadableError(f"{folder} is not a folder")

    problems: list[str] = []
    configs: dict[str, dict] = {}
    for name in CONFIG_FILES_WITH_AUTO_MAP:
        if (folder / name).is_file():
            data = _read_json(folder / name, problems)
            if data is not None:
                configs[name] = data
        elif name == "config.json":
            problems.append("config.json is missing")
    config = configs.get("config.json")
    if config is not None and not config.get("model_type"):
        problems.append("config.json has no model_type")

    _check_weights(folder, problems)
    _check_tokenizer(folder, problems)
    _check_payload_code(folder, configs, problems)

    if problems:
        listing = "\n".join(f"  - {problem}" for problem in problems)
        raise FolderNotLoadableError(
            f"{folder} would not load with AutoModel.from_pretrained(..., trust_remote_code=True):\n{listing}"
        )


__all__ = [
    "CONFIG_FILES_WITH_AUTO_MAP",
    "FolderNotLoadableError",
    "safetensors_problem",
    "validate_model_folder",
    "weight_file_problems",
    "weight_files",
]
