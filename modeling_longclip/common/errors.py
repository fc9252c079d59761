"""The refusals every room shares.

`LongCLIPError` marks a problem with the user's input or environment, said in one line that names the offending thing
(file, key, shape, flag): command lines print it without a traceback and exit 2 (common/cli.py). Anything else that
escapes a command is a bug and keeps its traceback. Each subclass also derives from the builtin error a caller would
catch for it (ValueError, RuntimeError), so `except ValueError` keeps working.
"""

from __future__ import annotations


class LongCLIPError(Exception):
    """A refusal of this package: one line for the user, exit status 2, nothing half-written."""


class DataError(LongCLIPError, ValueError):
    """Image-caption data is missing or malformed; the message names the file, column or record."""


class CheckpointError(LongCLIPError, ValueError):
    """The input is not a checkpoint this converter understands; the message names the file, key or shape."""


class ConversionError(LongCLIPError, RuntimeError):
    """A conversion or export was refused; nothing was written."""


__all__ = ["CheckpointError", "ConversionError", "DataError", "LongCLIPError"]
