"""Launching CPU torchrun jobs from tests, with the workers' stacks in the failure if a job hangs."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest


def child_pids(parent: int) -> list[int]:
    """Direct children of `parent`, from /proc (Linux)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == parent:
                children.append(int(stat.parent.name))
    return children


def run_torchrun(args, nproc: int = 2, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m torch.distributed.run --standalone` on gloo/CPU.

    A job still running after `timeout` seconds has its workers sent SIGABRT: with PYTHONFAULTHANDLER set, each
    prints its threads' stacks first, so the test fails saying where it hung instead of only that it timed out.
    """
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1", **(env or {})}
    with subprocess.Popen(
        [*command, *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    ) as process:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            workers = child_pids(process.pid)  # torchrun starts each worker in a session of its own
            for pid in workers:
                os.kill(pid, signal.SIGABRT)
            try:
                stdout, stderr = process.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                for pid in [process.pid, *workers]:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                stdout, stderr = process.communicate()
            pytest.fail(f"torchrun still running after {timeout} s; the workers' stacks:\n{stderr[-8000:]}")
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
