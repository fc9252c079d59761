"""The embedded demos: the conversion round trip, and (reduced) what 248 tokens buy on synthetic scenes."""

import json
import os
import random
import subprocess
import sys
from pathlib import Path

from modeling_longclip import conversion_demo
from modeling_longclip.converters.clip_preprocessing import build_clip_tokenizer
from modeling_longclip.demo.scenes import make_scenes


def test_conversion_demo_round_trip(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    result = conversion_demo.run(tmp_path / "demo")
    assert result["report"].text_max_abs_diff <= 1e-5 and result["report"].image_max_abs_diff <= 1e-5
    assert result["remote_diff"] <= 1e-6
    assert result["similarity"].shape == (3, 3)
    assert "cosine similarity" in capsys.readouterr().out


def test_conversion_demo_as_the_readme_runs_it(tmp_path):
    """`python -m modeling_longclip.conversion_demo` with no arguments, from a fresh folder: the default output folder
    is relative, and the clean-process load (run in a temporary cwd) must still find it."""
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")])
    run = subprocess.run(
        [sys.executable, "-m", "modeling_longclip.conversion_demo"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    folder = (tmp_path / "demo_output" / "conversion" / "longclip-demo-hf").resolve()
    assert f"converted it into {folder}" in run.stdout and "loaded it in a fresh process" in run.stdout
    assert (folder / "config.json").is_file()


def test_scene_groups_differ_only_past_token_77():
    tokenizer = build_clip_tokenizer(248)
    scenes = make_scenes(groups=5, per_group=4, rng=random.Random(1))
    for group in range(5):
        members = scenes[4 * group : 4 * group + 4]
        truncated = {tuple(tokenizer(s.long_caption(), truncation=True, max_length=77)["input_ids"]) for s in members}
        full = {tuple(tokenizer(s.long_caption())["input_ids"]) for s in members}
        assert len(truncated) == 1 and len(full) == 4  # identical within 77 tokens, different within 248
        assert len({s.short_caption() for s in members}) == 1
        assert len({s.render().tobytes() for s in members}) == 4
    assert max(len(tokenizer(s.long_caption())["input_ids"]) for s in scenes) <= 248


def test_reduced_demo_248_tokens_beat_77_on_long_captions(tmp_path):
    """The main job, scaled down (fixed seed): the stretched and fine-tuned model must clearly win on long captions,
    where the scenes differ only past token 77, without losing on the short ones."""
    from modeling_longclip.demo.long_text_demo import DemoSettings, run

    settings = DemoSettings(
        train_groups=80, test_groups=15, clip_steps=200, longclip_steps=200, batch_size=32, seed=0, progress=False
    )
    table = run(tmp_path / "demo", settings, log=lambda *args: None)
    assert table["models"] == ["CLIP, 77 tokens", "Long-CLIP, 248 tokens"]
    clip, longclip = table["rows"]
    for direction in ("I2T R@1", "T2I R@1"):
        assert longclip[f"long captions {direction}"] >= clip[f"long captions {direction}"] + 20, table
        assert longclip[f"short captions {direction}"] >= clip[f"short captions {direction}"] - 5, table
    results = {(r["model_name"], r["benchmark"]): r for r in table["results"]}
    assert results["CLIP, 77 tokens", "long captions"]["model_type"] == "clip"  # the stock folder, as a baseline
    assert results["CLIP, 77 tokens", "long captions"]["counts"]["texts_too_long"] == 60
    assert results["Long-CLIP, 248 tokens", "long captions"]["counts"]["texts_too_long"] == 0
    search = table.pop("search")
    assert json.loads((tmp_path / "demo" / "results.json").read_text()) == table
    assert json.loads((tmp_path / "demo" / "search" / "search.json").read_text()) == search
    assert (tmp_path / "demo" / "results.png").stat().st_size > 1000
    markdown = (tmp_path / "demo" / "results.md").read_text()
    assert markdown.startswith("| Model | long captions I2T R@1 | long captions T2I R@1 | short captions I2T R@1 |")
    assert "| CLIP, 77 tokens |" in markdown
    folder = tmp_path / "demo" / "longclip-248"
    from modeling_longclip.common.folders import validate_model_folder

    validate_model_folder(folder)

    # Step 5, long-text photo search through longclip-search's PhotoIndex over the 60 held-out scenes.
    found = {name: search["models"][name] for name in table["models"]}
    total = found["CLIP, 77 tokens"]["total"]
    assert (
        total == 60
        and sorted(p.name for p in (tmp_path / "demo" / "scenes" / "test").iterdir())[0] == "test-00000.png"
    )
    for name, row in zip(table["models"], table["rows"]):  # the search agrees with the evaluation (float16 index)
        rate = 100 * found[name]["first"] / total
        assert abs(rate - row["long captions T2I R@1"]) <= 100 * 2 / total, (name, rate, row)
        assert len(found[name]["top3"]) == 3 and Path(found[name]["index"], "manifest.json").is_file()
    # a 77-token model sees the four scenes of a group as one: at most one per group comes first
    assert found["CLIP, 77 tokens"]["first"] <= total // 4 < found["Long-CLIP, 248 tokens"]["first"] - 10
    assert found["CLIP, 77 tokens"]["tokens"] == found["Long-CLIP, 248 tokens"]["tokens"] > 77
    assert found["CLIP, 77 tokens"]["text_limit"] == 77 and found["Long-CLIP, 248 tokens"]["text_limit"] == 248


def test_the_demo_is_reproducible_and_shows_progress(tmp_path, capfd):
    """Same versions, same machine: the same table, search results and weights, bit for bit (seeded, CPU, deterministic
    kernels, one thread); each training shows Trainer's progress bar; the caller's thread settings are restored."""
    import torch

    from modeling_longclip.demo.long_text_demo import DemoSettings, run

    threads = torch.get_num_threads()
    settings = dict(train_groups=8, test_groups=3, clip_steps=6, longclip_steps=6, batch_size=16)
    first = run(tmp_path / "a", DemoSettings(**settings, progress=True), log=lambda *args: None)
    assert capfd.readouterr().err.count("6/6 [") >= 2  # tqdm: one bar per training
    second = run(tmp_path / "b", DemoSettings(**settings, progress=False), log=lambda *args: None)
    assert torch.get_num_threads() == threads and not torch.are_deterministic_algorithms_enabled()
    assert first["rows"] == second["rows"]
    for name, found in first["search"]["models"].items():
        assert found["top3"] == second["search"]["models"][name]["top3"]
        assert found["first"] == second["search"]["models"][name]["first"]
    for folder in ("clip-77", "longclip-248"):
        assert (tmp_path / "a" / folder / "model.safetensors").read_bytes() == (
            tmp_path / "b" / folder / "model.safetensors"
        ).read_bytes()
