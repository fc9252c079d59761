"""The photo-search benchmark scripts in their smoke configurations, so they cannot rot (the numbers themselves are
measured by full runs, docs/benchmarks.md). Run in this process: the scripts' `main(argv)` is what their command
line calls."""

import importlib.util
import json
from pathlib import Path

from test_search import one_thread  # noqa: F401 - an autouse fixture: tiny models on one thread

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def run_script(name: str, *args: str, capsys) -> str:
    spec = importlib.util.spec_from_file_location(name.removesuffix(".py"), BENCHMARKS / name)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main(list(args)) == 0
    return capsys.readouterr().out


def test_latency_smoke_run_checks_exact_search_and_measures_both_ways(tmp_path, capsys):
    stdout = run_script("search_latency.py", "--smoke", "--json", str(tmp_path / "latency.json"), capsys=capsys)
    report = json.loads((tmp_path / "latency.json").read_text())
    (row,) = report["results"]
    assert row["photos"] == 2000 and row["ann"] == "hnsw" and row["exact_ms"] > 0 and row["ann_ms"] > 0
    assert 0.85 <= row["recall_at_10_heldout"] <= 1 and row["recall_at_10_build"] >= 0.95
    assert report["versions"]["faiss"] and "| 2,000 | 64 |" in stdout


def test_indexing_smoke_run_splits_the_time_and_names_the_bottleneck(tmp_path, capsys):
    stdout = run_script("search_indexing.py", "--smoke", "--json", str(tmp_path / "indexing.json"), capsys=capsys)
    report = json.loads((tmp_path / "indexing.json").read_text())
    assert report["check_max_difference"] <= 1e-3 and report["photos"] >= 4
    assert report["model_images_per_second"] > 0 and report["loader_images_per_second"] > 0
    assert set(report["split_seconds"]) == {"decode", "preprocess", "wait", "model", "write"}
    assert report["bottleneck"] in ("model", "decoding and preprocessing") and "| tiny | cpu |" in stdout
