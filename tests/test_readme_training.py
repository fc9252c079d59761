"""The training commands of README.md, run as written: every bash block that holds a training command is read from the
README itself and its commands run in order, in a folder where the README's names are tiny models and data. Only what
a CPU cannot do is adapted: GPU-only flags are dropped, torchrun starts 2 processes instead of 8, and each run is cut
to 2 steps of 4 pairs per process. A README command that fails as written fails here."""

from __future__ import annotations

import json
import math
import re
import shlex
import shutil
from pathlib import Path

import torch
from conftest import tiny_image_processor, tiny_longclip_config
from llm_fixtures import tiny_llama3_tokenizer, tiny_llama_config, tiny_llm2clip_config
from preloaded_cli import training_scripts
from test_dual_tower_training import _tiny_proclip
from test_longclip_training import write_photo_dataset
from torchrun import run_torchrun
from transformers import CLIPConfig, CLIPModel

from modeling_longclip import LLM2CLIPModel, LLM2CLIPProcessor, LongCLIPModel, LongCLIPProcessor, ProCLIPModel
from modeling_longclip.converters.clip_preprocessing import build_clip_tokenizer
from modeling_longclip.training.arguments import GPU_ONLY_FLAGS, accelerator_available

REPO = Path(__file__).resolve().parents[1]
TRAINING = ("longclip-train", "llm2clip-train", "proclip-train", "torchrun", "accelerate")
PROGRAMS = (*TRAINING, "longclip-extract-text-features")
NOT_RUN = {  # a word of the command -> why the suite does not run it
    "accelerate": "the same DDP job as the torchrun line before it (one multi-process run per suite)",
    "--deepspeed": "DeepSpeed is not among the test dependencies and shards across GPUs",
    "--fsdp": "FSDP shards across GPUs",
    "modeling_longclip.search": "multi-process photo indexing, not training (tests/test_search_multiprocess.py runs it)",
}
SHORT = "--max_steps 2 --per_device_train_batch_size 4 --logging_steps 1 --report_to none --dataloader_num_workers 0"


def readme_commands(readme: Path = REPO / "README.md") -> list[str]:
    """The commands of every bash block that holds a training command, in order; continuation lines are joined and
    comments dropped."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", readme.read_text(encoding="utf-8"), re.S):
        lines = [re.sub(r"\s+#.*$", "", line).strip() for line in block.replace("\\\n", " ").splitlines()]
        lines = [line for line in lines if line and not line.startswith("#")]
        if any(line.split()[0] in TRAINING for line in lines):
            commands += [line for line in lines if line.split()[0] in PROGRAMS]
    return commands


def adapted(command: str) -> list[str]:
    """The words of `command` as this machine runs them (see the module docstring)."""
    words = shlex.split(command)
    if not accelerator_available():
        gpu_only = {f"--{flag}" for flag in GPU_ONLY_FLAGS} | {
            f"--{flag.replace('_', '-')}" for flag in GPU_ONLY_FLAGS
        }
        words = [word for word in words if word not in gpu_only]
    if words[0] == "torchrun":
        words[words.index("--nproc_per_node") + 1] = "2"
        return [*words, *SHORT.split(), "--save_steps", "2", "--log_level", "info"]
    return [*words, *SHORT.split()] if words[0] in TRAINING else words


def _stock_clip(folder: Path, projection_dim: int) -> Path:
    torch.manual_seed(2)
    layers = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=1)
    config = CLIPConfig(
        text_config=layers, vision_config=dict(layers, image_size=32, patch_size=16), projection_dim=projection_dim
    )
    CLIPModel(config).save_pretrained(folder)
    build_clip_tokenizer(77).save_pretrained(folder)
    tiny_image_processor().save_pretrained(folder)
    return folder


def readme_folder(root: Path) -> Path:
    """The names the README's training commands use, as tiny models and data."""
    data = write_photo_dataset(root / "photos")
    shutil.copytree(data.parent / "images", root / "images")
    for name in ("captions.jsonl", "pairs.jsonl"):
        shutil.copy(data, root / name)
    torch.manual_seed(0)
    LongCLIPModel(tiny_longclip_config()).save_pretrained(root / "LongCLIP-B-hf")
    LongCLIPProcessor(tiny_image_processor(), build_clip_tokenizer()).save_pretrained(root / "LongCLIP-B-hf")
    _stock_clip(root / "clip-vit-base-patch16", 16)
    _stock_clip(root / "clip-vit-large-patch14", 32)  # ProCLIP's teacher embeds in ProCLIP's 32 dims
    tokenizer = tiny_llama3_tokenizer()
    LLM2CLIPModel(tiny_llm2clip_config(tiny_llama_config(len(tokenizer)))).save_pretrained(root / "LLM2CLIP-hf")
    LLM2CLIPProcessor(tiny_image_processor(), tokenizer).save_pretrained(root / "LLM2CLIP-hf")
    model, processor = _tiny_proclip(seed=1)
    model.save_pretrained(root / "ProCLIP-init")
    processor.save_pretrained(root / "ProCLIP-init")
    return root


def test_readme_lists_the_training_commands_this_test_runs():
    commands = readme_commands()
    programs = {command.split()[0] for command in commands}
    assert {"longclip-train", "llm2clip-train", "proclip-train", "torchrun"} <= programs
    for command in commands:
        skipped = [word for word in NOT_RUN if word in command.split()]
        assert skipped or "..." not in command, f"a README command that can run must be complete: {command}"


def test_every_readme_training_command_runs_as_written(tmp_path, monkeypatch):
    folder = readme_folder(tmp_path)
    monkeypatch.chdir(folder)  # torchrun's processes start here too
    ran = []
    for command in readme_commands():
        if any(word in command.split() for word in NOT_RUN):
            continue
        words = adapted(command)
        if words[0] == "torchrun":
            assert words[1] == "--nproc_per_node", command
            run = run_torchrun(words[3:], nproc=int(words[2]), env={"PYTHONPATH": str(REPO)})
            output = run.stdout + run.stderr
            assert run.returncode == 0, f"{command}\n{output[-4000:]}"
            assert "Total train batch size (w. parallel, distributed & accumulation) = 8" in output
            assert "parallel_mode != ParallelMode.DISTRIBUTED" not in output  # each rank used to train alone
            checkpoint = folder / words[words.index("--output_dir") + 1] / "checkpoint-2"
            assert {"rng_state_0.pth", "rng_state_1.pth", "trainer_state.json"} <= {
                p.name for p in checkpoint.iterdir()
            }
        else:
            run = training_scripts().run(words[0], *words[1:], cwd=folder)
            assert run.returncode == 0, f"{command}\n{run.stderr[-4000:]}"
        assert "Traceback" not in run.stderr, f"{command}\n{run.stderr[-4000:]}"
        ran.append(words[0])
    assert ran.count("torchrun") == 1 and ran.count("longclip-extract-text-features") == 2
    for output, family in (
        ("runs/longclip-b", LongCLIPModel),
        ("runs/longclip-b-stretched", LongCLIPModel),
        ("runs/stage2", LLM2CLIPModel),
        ("runs/p2", ProCLIPModel),
    ):
        assert family.from_pretrained(folder / output).config.model_type == family.config_class.model_type
        losses = [
            e["loss"]
            for e in json.loads((folder / output / "trainer_state.json").read_text())["log_history"]
            if "loss" in e
        ]
        assert len(losses) == 2 and all(math.isfinite(loss) for loss in losses), output
