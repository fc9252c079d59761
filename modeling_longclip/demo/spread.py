"""How much the demo's figures move between machines: `python -m modeling_longclip.demo.spread`.

On one machine the demo's table is always the same (seeded, CPU, deterministic kernels, one thread). Between
machines the CPU's vector instructions change the rounding of matrix products and of elementwise kernels, the
trajectories of the two trainings drift apart, and the figures move. This runs the whole demo once per kernel set
this machine can emulate, each in its own process: the machine as it is, then ATen, MKL and oneDNN restricted to
AVX2, then to the x86-64 baseline (SSE4), as an AVX2-only or an older CPU would run them, and prints every run's
figures and the spread (largest minus smallest) of each column. `--runs native native` checks that two runs on the
same machine agree (a spread of 0).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..common.cli import ArgumentParser, command

KERNEL_SETS = {
    "native": {},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "sse4": {"ATEN_CPU_CAPABILITY": "default", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "ONEDNN_MAX_CPU_ISA": "SSE41"},
}


def run_demo(name: str, output_dir: Path, extra: list[str]) -> dict:
    """One whole demo in a fresh process with the kernel set `name`; its figures (comparison rows, search rates)."""
    folder = output_dir / name
    env = {**os.environ, **KERNEL_SETS[name.split("-")[0]], "HF_HUB_OFFLINE": "1"}
    command_line = [sys.executable, "-m", "modeling_longclip.demo", "--output-dir", str(folder), "--clean", *extra]
    with open(output_dir / f"{name}.log", "w") as log:
        subprocess.run(command_line, env=env, stdout=log, stderr=subprocess.STDOUT, check=True)
    table = json.loads((folder / "results.json").read_text())
    search = json.loads((folder / "search" / "search.json").read_text())
    figures = {}
    for model, row in zip(table["models"], table["rows"]):
        for column, value in row.items():
            if column != "Model" and isinstance(value, int | float):
                figures[f"{model}: {column}"] = float(value)
        found = search["models"][model]
        figures[f"{model}: search, right scene first"] = 100 * found["first"] / found["total"]
    return figures


def spread_table(runs: dict[str, dict]) -> str:
    """Markdown: one row per figure, one column per run, then the spread."""
    names = list(runs)
    lines = [f"| figure (%) | {' | '.join(names)} | spread |", "|---|" + "---:|" * (len(names) + 1)]
    for figure in next(iter(runs.values())):
        values = [runs[name][figure] for name in names]
        cells = " | ".join(f"{value:.1f}" for value in values)
        lines.append(f"| {figure} | {cells} | {max(values) - min(values):.1f} |")
    return "\n".join(lines)


@command(kept="the finished runs' folders are in --output-dir")
def main(argv=None) -> int:
    parser = ArgumentParser(prog="python -m modeling_longclip.demo.spread", description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", default="demo_spread", help="one demo folder and log per run")
    parser.add_argument(
        "--runs",
        nargs="+",
        default=list(KERNEL_SETS),
        help=f"kernel sets, any of {', '.join(KERNEL_SETS)} (repeatable)",
    )
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time (each uses one thread)")
    args, extra = parser.parse_known_args(argv)  # the rest goes to every demo run (--clip-steps, ...)
    unknown = [name for name in args.runs if name not in KERNEL_SETS]
    if unknown:
        parser.error(f"unknown kernel set {unknown[0]!r}; choose from {', '.join(KERNEL_SETS)}")
    names = [f"{name}-{n}" if args.runs.count(name) > 1 else name for n, name in enumerate(args.runs, 1)]
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    try:
        with ThreadPoolExecutor(max(1, args.jobs)) as pool:
            figures = dict(zip(names, pool.map(lambda name: run_demo(name, output_dir, extra), names)))
    except subprocess.CalledProcessError as failed:
        print(f"error: a demo run failed (exit {failed.returncode}); its log is in {output_dir}/", file=sys.stderr)
        return 1
    table = spread_table(figures)
    (output_dir / "spread.md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
