"""Reading released state dicts, for every converter: a `.pt` loaded safely (with one clear line for what it is when it
is not a state dict), keys and shapes checked with every problem named at once, block counts and patch grids read
from the shapes."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from ..common.errors import CheckpointError

# Entries some OpenAI exports keep in the state dict although they are not weights.
NON_WEIGHT_KEYS = {"input_resolution", "context_length", "vocab_size"}


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a raw `.pt` state dict with `weights_only=True`, unwrapping `{"state_dict": ...}` and `module.` prefixes.

    A TorchScript archive or a pickled object (a whole `nn.Module`) is refused in one line with an export hint.
    """
    import warnings

    from .torch_files import is_torchscript_archive, unreadable_checkpoint_message

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file.")
    if is_torchscript_archive(path):  # before torch.load, which would warn and dispatch to torch.jit.load
        raise CheckpointError(unreadable_checkpoint_message(path, RuntimeError("TorchScript archive")))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - every unreadable file gets one clear line
        raise CheckpointError(unreadable_checkpoint_message(path, error)) from None
    for wrapper in ("state_dict", "model", "module"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict) and not torch.is_tensor(obj.get(wrapper)):
            obj = obj[wrapper]
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(
            f"{path}: expected a state dict (a mapping of names to tensors), got {type(obj).__name__}."
        )
    state_dict = {}
    for key, value in obj.items():
        key = key[len("module.") :] if key.startswith("module.") else key
        if key in NON_WEIGHT_KEYS:
            continue
        if not torch.is_tensor(value):
            raise CheckpointError(f"{path}: entry `{key}` is a {type(value).__name__}, not a tensor.")
        state_dict[key] = value
    return state_dict


def count_layers(state_dict: dict, prefix: str) -> int:
    """Number of `{prefix}{i}.` blocks; their indices must run 0..n-1."""
    indices = {int(k[len(prefix) :].split(".")[0]) for k in state_dict if k.startswith(prefix)}
    if indices != set(range(len(indices))):
        raise CheckpointError(f"blocks under `{prefix}` are not numbered 0..n-1: {sorted(indices)}")
    return len(indices)


def require_tensor(state_dict: dict, key: str, ndim: int | None = None) -> torch.Tensor:
    if key not in state_dict:
        raise CheckpointError(f"missing key `{key}`.")
    tensor = state_dict[key]
    if ndim is not None and tensor.ndim != ndim:
        raise CheckpointError(f"`{key}` has shape {list(tensor.shape)}, expected {ndim} dimensions.")
    return tensor


def patch_grid(rows: int, key: str, class_token: bool = True) -> int:
    """The side of the square patch grid a position table of `rows` rows covers (after the class token's row)."""
    cells = rows - 1 if class_token else rows
    grid = math.isqrt(max(cells, 0))
    if grid * grid != cells or grid == 0:
        raise CheckpointError(f"`{key}` has {rows} rows, not a square grid{' + 1' if class_token else ''}.")
    return grid


def check_keys(state_dict: dict, expected: dict[str, tuple[int, ...]], source: str, extra_ok: tuple[str, ...] = ()):
    """One error naming every missing key, unexpected key and wrong shape."""
    problems = []
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(k for k in set(state_dict) - set(expected) if not k.startswith(extra_ok))
    if missing:
        problems.append(f"missing keys {missing[:8]}{' ...' if len(missing) > 8 else ''}")
    if unexpected:
        problems.append(f"unexpected keys {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}")
    for key, shape in expected.items():
        if key in state_dict and tuple(state_dict[key].shape) != shape:
            problems.append(f"`{key}` has shape {list(state_dict[key].shape)}, expected {list(shape)}")
    if problems:
        raise CheckpointError(f"{source}: " + "; ".join(problems) + ".")


__all__ = ["NON_WEIGHT_KEYS", "check_keys", "count_layers", "load_state_dict", "patch_grid", "require_tensor"]
