"""The embedded demos: the conversion round trip, and (reduced) what 248 tokens buy on synthetic scenes."""

import json
import random

import pytest

from modeling_longclip import conversion_demo
from modeling_longclip.converters.clip_preprocessing import build_clip_tokenizer
from modeling_longclip.scenes import make_scenes


def test_conversion_demo_round_trip(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    result = conversion_demo.run(tmp_path / "demo")
    assert result["report"].text_max_abs_diff <= 1e-5 and result["report"].image_max_abs_diff <= 1e-5
    assert result["remote_diff"] <= 1e-6
    assert result["similarity"].shape == (3, 3)
    assert "cosine similarity" in capsys.readouterr().out


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
