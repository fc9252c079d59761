"""Test hook: hold a console script at a chosen function, so an interrupt test can signal it at a known point.

A test puts this folder on PYTHONPATH and sets LONGCLIP_TEST_PAUSE="package.module:function"; the function's call
number LONGCLIP_TEST_PAUSE_AFTER + 1 (default: the first) writes LONGCLIP_TEST_PAUSE_MARKER and sleeps until the
process is signalled. Without LONGCLIP_TEST_PAUSE this file does nothing. It patches the function in its module and
in every module already imported that holds it by name (`from .store import write_index`); later imports of it by
name get the patched one.
"""

import functools
import importlib
import os
import sys
import time
from pathlib import Path

_target = os.environ.get("LONGCLIP_TEST_PAUSE")
if _target:
    _module_name, _name = _target.split(":")
    _module = importlib.import_module(_module_name)
    _original = getattr(_module, _name)
    _after = int(os.environ.get("LONGCLIP_TEST_PAUSE_AFTER", "0"))
    _calls = [0]

    @functools.wraps(_original)
    def _paused(*args, **kwargs):
        _calls[0] += 1
        if _calls[0] == _after + 1:
            Path(os.environ["LONGCLIP_TEST_PAUSE_MARKER"]).write_text(str(os.getpid()))
            time.sleep(600)
        return _original(*args, **kwargs)

    for _holder in list(sys.modules.values()):
        if getattr(_holder, _name, None) is _original:
            setattr(_holder, _name, _paused)
