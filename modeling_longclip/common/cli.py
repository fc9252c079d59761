"""One rule for every command line of the package.

- A refusal (`LongCLIPError`, or a file-system error that names its path) is one line, `error: ...`, on stderr and
  exit status 2; running out of accelerator memory is one line with what to lower.
- Ctrl-C (SIGINT) and SIGTERM stop the command cleanly: one line saying what was kept, exit 130 (SIGINT) or 143
  (SIGTERM). SIGTERM is raised as a `KeyboardInterrupt` subclass, so the same cleanup runs for both (staging folders
  removed, finished chunks kept).
- Anything else keeps its traceback: it is a bug.
- Flags are spelled with dashes (`--batch-size`); the underscore spelling (`--batch_size`, what transformers'
  `TrainingArguments` users type) is accepted everywhere and hidden from `--help`. A usage error is one line too.
"""

from __future__ import annotations

import argparse
import errno
import functools
import signal
import sys
import threading
from collections.abc import Callable

from transformers import HfArgumentParser

from .errors import LongCLIPError

EXIT_REFUSED = 2
EXIT_SIGINT = 130
EXIT_SIGTERM = 143


class Terminated(KeyboardInterrupt):
    """SIGTERM, delivered as the same clean stop as Ctrl-C."""


def _raise_terminated(signum, frame):
    raise Terminated()


def refusal_message(error: BaseException) -> str | None:
    """The one line a user gets for `error`, or None when it is a bug (which keeps its traceback)."""
    if isinstance(error, LongCLIPError):
        return str(error)
    if isinstance(error, OSError) and (error.filename is not None or error.errno == errno.ENOSPC):
        return f"{error.filename}: {error.strerror}" if error.filename is not None else str(error.strerror)
    if type(error).__name__ == "OutOfMemoryError":  # torch.OutOfMemoryError, without importing torch here
        return "out of memory on the device: lower --batch-size (or use a smaller --dtype) and run the command again"
    return None


def command(kept: str = "nothing was written") -> Callable:
    """Decorate a `main(argv=None) -> int` so it follows the rule above; `kept` says what an interrupt leaves behind.

    The decorated function still returns the exit status (tests call it directly); console scripts exit with it.
    """

    def decorate(main: Callable) -> Callable:
        @functools.wraps(main)
        def run(argv: list[str] | None = None) -> int:
            handle_sigterm = threading.current_thread() is threading.main_thread()
            previous = signal.signal(signal.SIGTERM, _raise_terminated) if handle_sigterm else None
            try:
                return main(argv) or 0
            except KeyboardInterrupt as stop:
                name, status = ("SIGTERM", EXIT_SIGTERM) if isinstance(stop, Terminated) else ("SIGINT", EXIT_SIGINT)
                print(f"interrupted ({name}): {kept}", file=sys.stderr)
                return status
            except Exception as error:
                message = refusal_message(error)
                if message is None:
                    raise
                print(f"error: {message}", file=sys.stderr)
                return EXIT_REFUSED
            finally:
                if handle_sigterm:
                    signal.signal(signal.SIGTERM, previous)

        run.__wrapped_main__ = main
        return run

    return decorate


def _underscore_twin(option: str) -> str | None:
    """`--batch-size` -> `--batch_size` (None for short options and names without a dash)."""
    if not option.startswith("--") or "-" not in option[2:]:
        return None
    return "--" + option[2:].replace("-", "_")


class _DashedHelpFormatter(argparse.HelpFormatter):
    """Shows one spelling of each flag: the dashed one when both exist."""

    def _format_action_invocation(self, action):
        shown = [
            option
            for option in action.option_strings
            if not (
                "_" in option[2:] and option.startswith("--") and option.replace("_", "-") in action.option_strings
            )
        ]
        if shown == action.option_strings or not shown:
            return super()._format_action_invocation(action)
        original = action.option_strings
        action.option_strings = shown
        try:
            return super()._format_action_invocation(action)
        finally:
            action.option_strings = original


class _DashedDefaultsHelpFormatter(_DashedHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """HfArgumentParser's help (defaults shown) with one spelling per flag."""


class _OneRuleMixin:
    """Underscore twins for dashed flags (rewritten to the dashed flag before parsing, so actions such as
    BooleanOptionalAction see the spelling they know), dashed help, one-line usage errors."""

    def add_argument(self, *args, **kwargs):
        action = super().add_argument(*args, **kwargs)
        action.option_strings.sort(key=lambda option: "_" in option)  # usage shows the first: the dashed one
        twins = self.__dict__.setdefault("_underscore_twins", {})
        for option in action.option_strings:
            twin = _underscore_twin(option)
            if twin and twin not in self._option_string_actions:
                twins[twin] = option
        return action

    def parse_known_args(self, args=None, namespace=None):
        twins = self.__dict__.get("_underscore_twins", {})
        args = list(sys.argv[1:] if args is None else args)
        if twins:
            rewritten = []
            for index, token in enumerate(args):
                if token == "--":
                    rewritten.extend(args[index:])
                    break
                name, equals, value = token.partition("=")
                rewritten.append(twins[name] + equals + value if name in twins else token)
            args = rewritten
        return super().parse_known_args(args, namespace)

    def error(self, message):
        self.exit(EXIT_REFUSED, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class ArgumentParser(_OneRuleMixin, argparse.ArgumentParser):
    """argparse with the package's flag rule (see the module docstring)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _DashedHelpFormatter)
        super().__init__(*args, **kwargs)


class DataclassArgumentParser(_OneRuleMixin, HfArgumentParser):
    """transformers' HfArgumentParser (TrainingArguments and friends) with the package's flag rule; unknown flags and
    the dataclasses' own checks (`__post_init__`) are usage errors too, before anything is loaded or created."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _DashedDefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def parse_args_into_dataclasses(self, args=None, **kwargs):
        try:
            return super().parse_args_into_dataclasses(args=args, **kwargs)
        except ValueError as error:
            self.error(" ".join(str(error).split()) or type(error).__name__)


__all__ = [
    "ArgumentParser",
    "DataclassArgumentParser",
    "EXIT_REFUSED",
    "EXIT_SIGINT",
    "EXIT_SIGTERM",
    "Terminated",
    "command",
    "refusal_message",
]
