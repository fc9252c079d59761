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

    settings = DemoSettings(train_groups=80, test_groups=15, clip_steps=200, longclip_steps=200, batch_size=32, seed=0)
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
    assert json.loads((tmp_path / "demo" / "results.json").read_text()) == table
    assert (tmp_path / "demo" / "results.png").stat().st_size > 1000
    markdown = (tmp_path / "demo" / "results.md").read_text()
    assert markdown.startswith("| Model | long captions I2T R@1 | long captions T2I R@1 | short captions I2T R@1 |")
    assert "| CLIP, 77 tokens |" in markdown
    folder = tmp_path / "demo" / "longclip-248"
    from modeling_longclip.common.folders import validate_model_folder

    validate_model_folder(folder)
