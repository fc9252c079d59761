"""Run a console script the way a user does, in a subprocess, so a traceback shows up as one: the entry point named
in pyproject.toml's [project.scripts] is called exactly as the installed script calls it (no reinstall needed, so
it also runs the checkout under test)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[1]


def entry_point(name: str) -> str:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"][name]


def _process(name: str, args, env) -> tuple[list[str], dict]:
    module, function = entry_point(name).split(":")
    code = f"import sys; from {module} import {function} as main; sys.argv[0] = {name!r}; sys.exit(main())"
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    environment.update(env or {})
    return [sys.executable, "-c", code, *map(str, args)], environment


def run_console_script(name: str, *args, env=None, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    """`name ARGS...` as a process, waited for: returncode, stdout and stderr (text)."""
    command, environment = _process(name, args, env)
    return subprocess.run(command, env=environment, capture_output=True, text=True, timeout=timeout, **kwargs)


def start_console_script(name: str, *args, env=None, **kwargs) -> subprocess.Popen:
    """The same, started in the background (interrupt tests send it SIGINT / SIGTERM)."""
    command, environment = _process(name, args, env)
    return subprocess.Popen(
        command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs
    )
