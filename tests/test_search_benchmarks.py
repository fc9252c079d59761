"""The photo-search benchmark scripts in their smoke configurations, so they cannot rot (the numbers themselves are
measured by full runs, docs/benchmarks.md)."""

import json
import os
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def run_script(name: str, *args: str) -> str:
    env = {**os.environ, **ONE_THREAD}
    run = subprocess.run(
        [sys.executable, BENCHMARKS / name, *args], capture_output=True, text=True, timeout=600, env=env
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout


def test_latency_smoke_run_checks_exact_search_and_measures_both_ways(tmp_path):
    stdout = run_script("search_latency.py", "--smoke", "--json", str(tmp_path / "latency.json"))
    report = json.loads((tmp_path / "latency.json").read_text())
    (row,) = report["results"]
    assert row["photos"] == 2000 and row["ann"] == "hnsw" and row["exact_ms"] > 0 and row["ann_ms"] > 0
    assert 0.9 <= row["recall_at_10_heldout"] <= 1 and row["recall_at_10_build"] >= 0.95
    assert report["versions"]["faiss"] and "| 2,000 | 64 |" in stdout


def test_indexing_smoke_run_splits_the_time_and_names_the_bottleneck(tmp_path):
    stdout = run_script("search_indexing.py", "--smoke", "--json", str(tmp_path / "indexing.json"))
    report = json.loads((tmp_path / "indexing.json").read_text())
    assert report["check_max_difference"] <= 1e-3 and report["photos"] >= 4
    assert report["model_images_per_second"] > 0 and report["loader_images_per_second"] > 0
    assert set(report["split_seconds"]) == {"decode", "preprocess", "wait", "model", "write"}
    assert report["bottleneck"] in ("model", "decoding and preprocessing") and "| tiny | cpu |" in stdout
