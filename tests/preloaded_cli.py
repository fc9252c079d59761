"""Console scripts run as separate processes, as a user runs them, without paying their imports every time.

`tests/cli_runner.py` starts a fresh interpreter per run; importing transformers' Trainer alone takes 5-15 s on a
busy 2-core machine, which dominates tests that run a dozen refusals. Here one forkserver imports the entry points'
modules once, and every run is a fresh fork of it that calls the entry point exactly as the installed script does
(`sys.argv = [name, *args]`, `sys.exit(main())`), with its own stdout / stderr files and exit status. An uncaught
exception still prints its traceback and exits 1, a signal reaches the run's own process (`.pid`).
"""

from __future__ import annotations

import functools
import importlib
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cli_runner import entry_point


def _run(name: str, args: list[str], out: str, err: str, cwd: str | None, env: dict) -> None:
    for path, fd in ((out, 1), (err, 2)):
        handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(handle, fd)
        os.close(handle)
    os.environ.update(env)
    if cwd is not None:
        os.chdir(cwd)
    module, function = entry_point(name).split(":")
    main = getattr(importlib.import_module(module), function)
    sys.argv = [name, *args]
    sys.exit(main())


class Run:
    """A started console script: `.pid`, `.wait()` -> CompletedProcess (text stdout / stderr)."""

    def __init__(self, process, args, folder: Path):
        self.process, self.args, self.folder = process, args, folder

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait(self, timeout: float = 600) -> subprocess.CompletedProcess:
        self.process.join(timeout)
        if self.process.exitcode is None:
            self.process.kill()
            self.process.join()
            raise subprocess.TimeoutExpired(self.args, timeout)
        out, err = ((self.folder / name).read_text(errors="replace") for name in ("stdout", "stderr"))
        return subprocess.CompletedProcess(self.args, self.process.exitcode, out, err)


class PreloadedScripts:
    def __init__(self, modules: list[str]):
        self.context = multiprocessing.get_context("forkserver")
        self.context.set_forkserver_preload(modules)
        self.scratch = Path(tempfile.mkdtemp(prefix="preloaded-cli-"))
        self.count = 0

    def start(self, name: str, *args, cwd=None, env: dict | None = None) -> Run:
        self.count += 1
        folder = self.scratch / str(self.count)
        folder.mkdir()
        argv = [str(arg) for arg in args]
        process = self.context.Process(
            target=_run,
            args=(name, argv, str(folder / "stdout"), str(folder / "stderr"), cwd and str(cwd), env or {}),
        )
        process.start()
        return Run(process, [name, *argv], folder)

    def run(self, name: str, *args, cwd=None, env: dict | None = None, timeout: float = 600):
        return self.start(name, *args, cwd=cwd, env=env).wait(timeout)


def wait_for(predicate, timeout: float = 120, interval: float = 0.02) -> None:
    """Poll until `predicate()` holds (for interrupt tests that wait for a checkpoint to appear)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"still waiting after {timeout} s")
        time.sleep(interval)


def last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


@functools.cache
def training_scripts() -> PreloadedScripts:
    """The training commands (and the feature extraction between LLM2CLIP's stages), one forkserver per session:
    `set_forkserver_preload` only counts before the server starts, so every test module shares this one."""
    return PreloadedScripts(
        [
            "modeling_longclip.training.longclip_train",
            "modeling_longclip.training.dual_tower_train",
            "modeling_longclip.features.cli",
        ]
    )
