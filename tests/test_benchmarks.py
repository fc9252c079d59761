"""The benchmark scripts in their CPU smoke configurations, so they cannot rot (speed itself is measured on a GPU)."""

import json
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def run_script(name: str, *args: str) -> str:
    run = subprocess.run([sys.executable, BENCHMARKS / name, *args], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout


def test_peers_smoke_run_measures_every_section_and_checks_numerics(tmp_path):
    stdout = run_script("peers.py", "--smoke", "--json", str(tmp_path / "peers.json"))
    report = json.loads((tmp_path / "peers.json").read_text())
    assert report["settings"]["smoke"] and report["versions"]["torch"] and report["device"]
    rows = {(r["section"], r["peer"]): r for r in report["results"]}
    assert {section for section, _ in rows} == {"image", "text", "train", "llm"}
    assert ("text", "open_clip (original, padded to 248)") in rows  # the original-style peer ran
    for row in report["results"]:
        assert row["throughput"] > 0 and row["unit"] in stdout
    ours = [r for r in report["results"] if r["peer"].startswith("modeling_longclip")]
    assert len(ours) == 4
    for row in ours:  # each fast path was checked against the stock path before it was timed
        difference = row["extra"].get("max_embedding_difference", row["extra"].get("loss_difference_vs_stock"))
        assert difference is not None and difference <= 1e-4
    stock_text = rows[("text", "stock CLIPModel (padded to 248)")]["extra"]["padding_waste"]
    assert rows[("text", "modeling_longclip (length-bucketed)")]["extra"]["padding_waste"] < stock_text
    llm = rows[("llm", "modeling_longclip (length-bucketed)")]["extra"]
    assert llm["padding_waste"] < rows[("llm", "in given order (padded per batch)")]["extra"]["padding_waste"]
    assert llm["fraction_of_bf16_peak"] is None  # no peak is claimed for a CPU
    assert "| text | tiny | modeling_longclip (length-bucketed) |" in stdout


def test_trainer_throughput_smoke_run():
    stdout = run_script("train_throughput.py", "--sizes", "tiny", "--attn", "sdpa", "--steps", "2", "--warmup", "1")
    assert "| tiny | sdpa | 16 |" in stdout


def test_eva02_vs_clip_smoke_run(tmp_path):
    stdout = run_script("eva02_vs_clip.py", "--smoke", "--json", str(tmp_path / "eva.json"))
    report = json.loads((tmp_path / "eva.json").read_text())
    towers = {r["tower"].split()[0] for r in report["results"]}
    assert towers == {"EVA02VisionModel", "CLIPVisionModel"} and all(
        r["images_per_second"] > 0 for r in report["results"]
    )
    assert "| tiny | EVA02VisionModel (modeling_longclip) | sdpa | 2 |" in stdout
