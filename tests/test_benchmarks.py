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


def test_cpu_peers_smoke_run_checks_equality_before_timing(tmp_path):
    stdout = run_script("cpu_peers.py", "--smoke", "--json", str(tmp_path / "cpu.json"))
    report = json.loads((tmp_path / "cpu.json").read_text())
    peers = {(r["section"], r["peer"].split(" (")[0]) for r in report["results"]}
    for section in ("image", "text"):
        expected = {"modeling_longclip", "stock CLIPModel", "open_clip", "ONNX Runtime fp32", "ONNX Runtime int8"}
        assert {peer for s, peer in peers if s == section} == expected
    for row in report["results"]:  # every float32 peer computed this package's embeddings; int8 stays close
        assert row["median"] > 0 and row["low"] <= row["median"] <= row["high"]
        limit = 0.99 if "int8" in row["peer"] else 1 - 1e-6
        assert row["agreement"]["min_cosine"] >= limit, row
    targets = "\n".join(report["targets"])
    for target in ("text vs stock CLIPModel padded to 248", "ONNX int8 image vs PyTorch fp32", "image vs open_clip"):
        assert f"tiny: {target}" in targets
    assert "| image | tiny | ONNX Runtime int8 (dynamic) |" in stdout


def test_quantization_smoke_run_reports_every_path(tmp_path):
    stdout = run_script("quantization.py", "--smoke", "--json", str(tmp_path / "quant.json"))
    report = json.loads((tmp_path / "quant.json").read_text())
    rows = {(r["section"], r["path"]): r for r in report["results"]}
    reference = rows[("minilm", "float32 (reference)")]
    assert reference["cosine_pooled"][0] > 0.9999 and reference["text_to_text"] == [1.0, 1.0]
    for (section, path), row in rows.items():  # measured, or the one-line refusal naming what to install
        assert row["speed"] or row["note"].startswith(("not run: ", "skipped: ")), (section, path)
        if row["note"].startswith("not run: "):
            assert "pip install" in row["note"]
    assert rows[("onnx", "text graph int8 (dynamic)")]["cosine_features"][0] > 0.95  # real MiniLM weights
    assert rows[("onnx", "vision graph int8 (dynamic)")]["cosine_features"][0] > 0.99
    assert "| minilm | bfloat16 |" in stdout
