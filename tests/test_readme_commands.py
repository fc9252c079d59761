"""Issue 20: the README's conversion, evaluation, feature-cache, export and upload commands run as written.

Every ```bash line of README.md whose program is one of these is executed, in README order, in a folder that holds
tiny random stand-ins under the very names the README uses (`longclip-L.pt`, `microsoft/LLM2CLIP-Openai-L-14-336`,
`data/Urban1k`, ...): the authors' formats come from modeling_longclip/converters/synthetic*.py, the Hub is the loopback
fake of test_hub_upload. Optional `[...]` groups are kept unless they hold a placeholder (`BRANCH`, `...`). A command
that fails as written (a renamed flag, a default that refuses the documented input, a missing step) fails this test.
Training commands belong to the training tests; every other program the README names is listed below as not run here,
so a new one has to be placed in one list or the other.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import re
import runpy
import shlex
import sys
from pathlib import Path

import pytest
import torch
from cli_runner import REPO, entry_point
from eval_fixtures import write_coco_karpathy, write_docci, write_image_folder, write_urban1k
from llm_fixtures import tiny_llm_folder
from test_eval_baselines import siglip_folder, stock_clip_folder
from test_hub_upload import TOKEN, hub  # noqa: F401 - the fake Hub fixture

from modeling_longclip.converters.clip_preprocessing import build_clip_tokenizer
from modeling_longclip.converters.llm2clip import convert_llm2clip
from modeling_longclip.converters.longclip import convert_longclip
from modeling_longclip.converters.synthetic import (
    TINY_TEXT,
    random_openai_clip_state_dict,
    random_proclip_state_dict,
    write_eva02_release,
)
from modeling_longclip.converters.synthetic_zoo import (
    random_siglip2_release,
    write_llm2clip_clip_part,
    write_lora_adapter,
)

# Programs whose README commands this test runs.
RUN_HERE = (
    "python conversion/convert_longclip.py",
    "python conversion/convert_llm2clip.py",
    "python conversion/convert_proclip.py",
    "python conversion/convert_zoo.py",
    "python conversion/push_to_hub.py",
    "longclip-eval",
    "longclip-extract-text-features",
    "longclip-export-onnx",
    "longclip-export ",
    "longclip-stretch-text-encoder",
)
# Programs run elsewhere: the quick start by .ci/run itself, installs by scripts/bootstrap.sh, training (GPU flags
# such as --bf16 and multi-process launchers) by the training tests, photo search by the search tests.
NOT_RUN_HERE = (
    "bash scripts/",
    "pip install",
    "longclip-train",
    "llm2clip-train",
    "proclip-train",
    "torchrun",
    "accelerate launch",
    "longclip-search",  # tests/test_search*.py run its commands on real photos
    "curl ",  # the JSON API of longclip-search serve: tests/test_search_serve.py posts the same request
)
# A text tower quantized by torchao / bitsandbytes: tests/test_quantization.py runs these where the backends are.
QUANTIZED_TOWER = re.compile(r"--quantize (4bit|8bit)\b")
PLACEHOLDER = re.compile(r"\.\.\.|\b[A-Z][A-Z_]+\b")


TRAINING = ("longclip-train", "llm2clip-train", "proclip-train", "torchrun")


def readme_commands() -> list[str]:
    """Every command line of README.md's bash blocks: continuation lines joined, comments dropped. A block that holds
    a training command is left whole to tests/test_readme_training.py (its feature extractions read the stages'
    outputs)."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        lines = [line.split(" #", 1)[0].strip() for line in re.sub(r"\\\n\s*", " ", block).splitlines()]
        lines = [line for line in lines if line and not line.startswith("#")]
        if not any(line.startswith(TRAINING) for line in lines):
            commands.extend(lines)
    return commands


def as_written(command: str) -> list[str]:
    """The words of `command`, optional `[...]` groups kept unless they hold a placeholder."""
    kept = re.sub(r"\[([^\]]*)\]", lambda m: "" if PLACEHOLDER.search(m.group(1)) else m.group(1), command)
    return shlex.split(kept)


def run(words: list[str]) -> int:
    """A README command in this process, as its script would run it: `sys.argv` set, the exit status returned."""
    if words[0] == "python":
        program, argv = words[1], words[2:]

        def call():  # a script that ends without sys.exit succeeded
            runpy.run_path(str(REPO / program), run_name="__main__")
    else:
        module, function = entry_point(words[0]).split(":")
        program, argv, call = words[0], words[1:], getattr(importlib.import_module(module), function)
    saved = sys.argv
    sys.argv = [program, *argv]
    try:
        status = call()
    except SystemExit as stop:
        status = stop.code
    finally:
        sys.argv = saved
    return status or 0


def build_inputs(root: Path) -> None:
    """Tiny stand-ins for everything the README's commands read, under the README's own names."""
    torch.save(random_openai_clip_state_dict(seed=1), root / "longclip-L.pt")
    stock = dataclasses.replace(TINY_TEXT, context_length=77)  # a stock OpenAI CLIP's weights, fp32 as users save them
    torch.save(random_openai_clip_state_dict(text=stock, longclip=False), root / "clip-vit-l14-state-dict.pt")
    llm = tiny_llm_folder(root / "microsoft/LLM2CLIP-Llama-3-8B-Instruct-CC-Finetuned")
    write_llm2clip_clip_part(root / "microsoft/LLM2CLIP-Openai-L-14-336")
    convert_llm2clip(root / "microsoft/LLM2CLIP-Openai-L-14-336", llm, root / "LLM2CLIP-hf")
    stock_clip_folder(root / "clip-vit-large-patch14")
    siglip_folder(root / "siglip-so400m-patch14-384")
    write_urban1k(root / "data/Urban1k", {"a": "a red square on grass", "b": "a blue circle", "c": "a green tree"})
    write_coco_karpathy(root / "data/coco")
    write_docci(root / "data/docci")
    write_image_folder(root / "data/imagenet/val", {"cat": [0, 1], "dog": [2, 3]})
    (root / "classnames.txt").write_text("tabby cat\ngolden retriever\n")
    pairs = ["A red car parked by a tree. The street is empty.", "Two dogs on a beach. A ball in the waves."]
    (root / "pairs.jsonl").write_text("".join(json.dumps({"caption": c}) + "\n" for c in pairs))
    llama31 = tiny_llm_folder(root / "path/to/Llama-3.1-8B-Instruct")
    release = random_siglip2_release(seed=2)
    torch.save(release, root / "path/to/siglip2-release.pt")  # the file alone, its LoRA given with --lora
    write_lora_adapter(llama31, root / "path/to/LLM2CLIP-Llama-3.1-8B")
    (root / "path/to/siglip2-release").mkdir()  # the release as downloaded: the weights and the LoRA it found
    torch.save(release, root / "path/to/siglip2-release/siglip2-release.pt")
    write_lora_adapter(llama31, root / "path/to/siglip2-release/checkpoints/LLM2CLIP-Llama-3.1-8B")
    (root / "proclip/3m").mkdir(parents=True)
    torch.save(random_proclip_state_dict(seed=2), root / "proclip/3m/L14.pt")
    write_eva02_release(root / "LLM2CLIP-EVA02-L-14-336.pt", "module", seed=3)
    write_eva02_release(root / "proclip/3m/Eva_L14.pt", "proclip", blocks=1, expansion=8, separate_biases=True, seed=4)
    (root / "downloads/BeichenZhang/LongCLIP-L").mkdir(parents=True)
    torch.save(random_openai_clip_state_dict(seed=6), root / "downloads/BeichenZhang/LongCLIP-L/longclip-L.pt")
    checkpoint = root / "runs/longclip-b/checkpoint-500"
    convert_longclip(root / "longclip-L.pt", checkpoint)
    (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": 500}))
    torch.save({"state": {}}, checkpoint / "optimizer.pt")
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    torch.manual_seed(0)
    config = CLIPTextConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=1)
    CLIPTextModelWithProjection(config).save_pretrained(root / "sdxl-base/text_encoder_2")
    tokenizer = build_clip_tokenizer(77)
    tokenizer.pad_token = "!"  # SDXL's tokenizer_2 pads with "!" (id 0)
    tokenizer.save_pretrained(root / "sdxl-base/tokenizer_2")


def test_every_readme_command_is_placed():
    for command in readme_commands():
        assert command.startswith(RUN_HERE + NOT_RUN_HERE), f"README command run nowhere: {command}"
    assert len([c for c in readme_commands() if c.startswith(RUN_HERE)]) >= 15


def test_readme_commands_run_as_written(tmp_path, monkeypatch, hub):  # noqa: F811 - the fixture imported above
    build_inputs(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # the evaluation cache's default place
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    for command in readme_commands():
        if command.startswith(RUN_HERE) and not QUANTIZED_TOWER.search(command):
            assert run(as_written(command)) == 0, f"README command failed as written: {command}"
    assert json.loads(Path("results/urban1k-comparison.json").read_text())
    assert (tmp_path / "LongCLIP-L-hf/onnx/text_model.onnx").is_file()
    assert json.loads(Path("LLM2CLIP-L-336-hf/config.json").read_text())["text_model_name_or_path"] == str(
        tmp_path / "microsoft/LLM2CLIP-Llama-3-8B-Instruct-CC-Finetuned"
    )  # [--external-llm] as written: the folder loads from anywhere, as the feature extraction after it shows
    assert json.loads(Path("features/index.json").read_text())["compute_dtype"] == "bfloat16"
    assert [row["status"] for row in json.loads(Path("converted/zoo_report.json").read_text())].count("converted") == 1
    uploaded = hub.files("you/LongCLIP-B-ft")  # the training checkpoint: the model, not its training state
    assert "model.safetensors" in uploaded and "optimizer.pt" not in uploaded


@pytest.mark.parametrize("command", ["longclip-eval --model X [--dtype bfloat16] [--revision BRANCH] [--only a ...]"])
def test_optional_groups(command):
    assert as_written(command) == ["longclip-eval", "--model", "X", "--dtype", "bfloat16"]
