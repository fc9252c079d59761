"""Issue 20, interrupts of conversion and feature extraction: Ctrl-C (SIGINT) and SIGTERM each end in one line saying
what was kept, the conversion's staging folder is removed, and an interrupted extraction resumes to the cache an
uninterrupted run makes. The console scripts run in a subprocess held at a known point by tests/pause_hook (a
sitecustomize that sleeps inside a chosen function) and are signalled there."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
import torch
from cli_runner import REPO, start_console_script
from llm_fixtures import tiny_image_processor, tiny_llama3_tokenizer, tiny_llama_config, tiny_llm2clip_config

from modeling_longclip import LLM2CLIPModel, LLM2CLIPProcessor
from modeling_longclip.converters.synthetic import random_openai_clip_state_dict
from modeling_longclip.features import TextFeatureCache, caption_key, iter_captions, run_extraction
from modeling_longclip.features.cli import main as extract_main

HOOK = Path(__file__).resolve().parent / "pause_hook"
SIGNALS = [(signal.SIGINT, 130, "SIGINT"), (signal.SIGTERM, 143, "SIGTERM")]


def paused_console_script(name: str, args, pause_at: str, marker: Path, after: int = 0):
    """`name ARGS` in a subprocess that stops inside `pause_at` ("module:function") on its call number `after` + 1,
    once `marker` exists."""
    env = {
        "PYTHONPATH": os.pathsep.join([str(REPO), str(HOOK)]),
        "LONGCLIP_TEST_PAUSE": pause_at,
        "LONGCLIP_TEST_PAUSE_AFTER": str(after),
        "LONGCLIP_TEST_PAUSE_MARKER": str(marker),
        "HF_HUB_OFFLINE": "1",
    }
    process = start_console_script(name, *args, env=env)
    deadline = time.monotonic() + 300
    while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    if not marker.exists():
        out, err = process.communicate(timeout=60)
        pytest.fail(f"{name} never reached {pause_at} (exit {process.returncode}):\n{err}")
    return process


def interrupted(process, sent, status: int, name: str) -> str:
    """Signal the paused process; its last stderr line, checked to be the one interrupt line."""
    process.send_signal(sent)
    _, err = process.communicate(timeout=120)
    assert process.returncode == status, err
    assert "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"interrupted ({name}): "), err
    return last


@pytest.mark.parametrize(("sent", "status", "name"), SIGNALS)
def test_interrupted_conversion_is_one_line_and_leaves_nothing(tmp_path, sent, status, name):
    torch.save(random_openai_clip_state_dict(seed=5), tmp_path / "longclip.pt")
    output = tmp_path / "LongCLIP-hf"
    process = paused_console_script(
        "longclip-convert",
        ["--checkpoint", tmp_path / "longclip.pt", "--output", output],
        "modeling_longclip.common.folders:validate_model_folder",  # called in the staging folder, before the rename
        tmp_path / "paused",
    )
    staging = list(tmp_path.glob(".LongCLIP-hf.tmp-*"))
    assert len(staging) == 1 and (staging[0] / "model.safetensors").is_file()  # signalled mid-write
    line = interrupted(process, sent, status, name)
    assert "nothing was written" in line
    assert not output.exists() and not list(tmp_path.glob(".LongCLIP-hf*"))


def tiny_llm2clip_folder(folder: Path) -> Path:
    tokenizer = tiny_llama3_tokenizer()
    torch.manual_seed(0)
    model = LLM2CLIPModel(tiny_llm2clip_config(tiny_llama_config(len(tokenizer)))).eval()
    model.save_pretrained(folder)
    LLM2CLIPProcessor(tiny_image_processor(), tokenizer).save_pretrained(folder)
    return folder


CAPTIONS = [
    f"caption {i}: a {colour} {thing}."
    for i, (colour, thing) in enumerate(
        [("red", "car"), ("green", "tree"), ("blue", "door"), ("white", "boat"), ("black", "cat"), ("grey", "wall")]
        * 2
    )
]


@pytest.fixture(scope="module")
def extraction_inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("extraction")
    tiny_llm2clip_folder(root / "model")
    rows = "".join(json.dumps({"caption": caption}) + "\n" for caption in CAPTIONS)
    (root / "captions.jsonl").write_text(rows)
    model = LLM2CLIPModel.from_pretrained(root / "model").eval()
    processor = LLM2CLIPProcessor.from_pretrained(root / "model")
    captions = iter_captions(root / "captions.jsonl", ["caption"])
    run_extraction(model, processor, captions, root / "uninterrupted", batch_size=2, shard_size=3, progress=False)
    return root


@pytest.mark.parametrize(("sent", "status", "name"), SIGNALS)
def test_interrupted_extraction_resumes_to_the_uninterrupted_cache(extraction_inputs, tmp_path, sent, status, name):
    root = extraction_inputs
    args = [
        "--model",
        root / "model",
        "--captions",
        root / "captions.jsonl",
        "--output",
        tmp_path / "cache",
        "--batch-size",
        "2",
        "--shard-size",
        "3",
        "--device",
        "cpu",
        "--no-progress",
    ]
    process = paused_console_script(
        "longclip-extract-text-features",
        args,
        "modeling_longclip.features.store:write_index",  # the second shard is on disk, not yet in the index
        tmp_path / "paused",
        after=1,
    )
    line = interrupted(process, sent, status, name)
    assert "every finished shard is kept" in line and "run the same command again" in line
    assert len(TextFeatureCache(tmp_path / "cache")) == 3  # the first shard survived

    assert extract_main([str(a) for a in args]) == 0  # the same command again
    resumed, reference = (
        json.loads((d / "index.json").read_text()) for d in (tmp_path / "cache", root / "uninterrupted")
    )
    assert resumed == reference
    keys = [caption_key(caption) for caption in CAPTIONS]
    assert torch.equal(
        TextFeatureCache(tmp_path / "cache").get(keys), TextFeatureCache(root / "uninterrupted").get(keys)
    )
