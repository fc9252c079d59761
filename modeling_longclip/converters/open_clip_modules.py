"""open_clip's OpenAI-CLIP towers and tokenizer without torchvision: the independent reference for tests and the
original-style peer in the benchmarks.

open_clip's package __init__ (and its utils module) import torchvision, which cannot be installed beside the CPU
torch used here, although nothing the ViT and text towers run needs it. So the towers are imported as plain
submodules, with a throwaway `torchvision.ops.misc` placeholder present only while they import (its one name is
used by ResNet batch-norm freezing, which ViTs never call), and removed again so transformers never sees it.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import sys
import types
from pathlib import Path

import torch
import transformers  # noqa: F401  (decides torchvision availability before the placeholder exists)


@functools.cache
def import_open_clip_modules():
    """(open_clip.transformer, open_clip.tokenizer); ImportError when open-clip-torch is not installed."""
    if "open_clip" not in sys.modules:
        spec = importlib.util.find_spec("open_clip")
        if spec is None:
            raise ImportError("open-clip-torch is not installed (pip install --no-deps open-clip-torch)")
        package = types.ModuleType("open_clip")
        package.__path__ = [str(Path(spec.origin).parent)]
        package.__spec__ = spec
        sys.modules["open_clip"] = package
    placeholders = {}
    if importlib.util.find_spec("torchvision") is None:
        misc = types.ModuleType("torchvision.ops.misc")
        misc.FrozenBatchNorm2d = type("FrozenBatchNorm2d", (torch.nn.Module,), {})
        placeholders = {
            "torchvision": types.ModuleType("torchvision"),
            "torchvision.ops": types.ModuleType("torchvision.ops"),
            "torchvision.ops.misc": misc,
        }
        sys.modules.update(placeholders)
    try:
        transformer = importlib.import_module("open_clip.transformer")
        tokenizer = importlib.import_module("open_clip.tokenizer")
    finally:
        for name in placeholders:
            sys.modules.pop(name, None)
    return transformer, tokenizer
