"""Module paths that moved when the package root became the Hub payload alone, kept importable (and runnable with
`python -m`) under their old names, so users' scripts and documented commands keep working.

The old name resolves to the same module object as the new one (no second copy of its classes); `python -m OLD` runs
the new module as `__main__`.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

MOVED_MODULES = {
    "modeling_longclip.hub": "modeling_longclip.export.hub",
    "modeling_longclip.onnx_export": "modeling_longclip.export.onnx",
    "modeling_longclip.text_encoder_stretch": "modeling_longclip.export.text_encoder_stretch",
    "modeling_longclip.conversion_demo": "modeling_longclip.demo.conversion",
    "modeling_longclip.clean_load": "modeling_longclip.common.clean_load",
    "modeling_longclip.files": "modeling_longclip.common.files",
    "modeling_longclip.scenes": "modeling_longclip.demo.scenes",
    "modeling_longclip.feature_store": "modeling_longclip.features.store",
    "modeling_longclip.feature_extraction": "modeling_longclip.features.extraction",
    "modeling_longclip.feature_fingerprint": "modeling_longclip.features.fingerprint",
    "modeling_longclip.caption_sources": "modeling_longclip.features.caption_sources",
    "modeling_longclip.training.data": "modeling_longclip.common.caption_data",
    "modeling_longclip.converters.export": "modeling_longclip.export.folder",
}


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target: str):
        self.target = target

    def create_module(self, spec):
        return None  # a placeholder module; exec_module swaps in the real one

    def exec_module(self, module):
        sys.modules[module.__name__] = importlib.import_module(self.target)

    def get_code(self, fullname):  # `python -m old.name`: run the moved module as __main__
        return compile(
            f"import runpy\nrunpy.run_module({self.target!r}, run_name='__main__', alter_sys=True)\n",
            f"<{fullname} -> {self.target}>",
            "exec",
        )


class _MovedModuleFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        moved = MOVED_MODULES.get(fullname)
        return importlib.util.spec_from_loader(fullname, _AliasLoader(moved)) if moved else None


def install() -> None:
    """Resolve the old module paths (idempotent)."""
    if not any(isinstance(finder, _MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.append(_MovedModuleFinder())


__all__ = ["MOVED_MODULES", "install"]
