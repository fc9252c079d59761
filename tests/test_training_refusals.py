"""Every bad input to the training commands gets one line and exit status 2, with nothing written: each case runs the
console script as a separate process (a traceback would show), and the output folder must not appear."""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from conftest import tiny_image_processor, tiny_longclip_config
from llm_fixtures import tiny_llama3_tokenizer, tiny_llama_config, tiny_llm2clip_config
from preloaded_cli import last_line, training_scripts
from test_longclip_training import _stock_clip_folder, write_photo_dataset

from modeling_longclip import LLM2CLIPModel, LLM2CLIPProcessor, LongCLIPModel, LongCLIPProcessor
from modeling_longclip.converters.clip_preprocessing import build_clip_tokenizer
from modeling_longclip.training.arguments import GPU_ONLY_FLAGS, accelerator_available


class Setup:
    def __init__(self, root: Path):
        self.root = root
        self.data = write_photo_dataset(root / "data")
        self.base = root / "longclip"
        torch.manual_seed(0)
        LongCLIPModel(tiny_longclip_config()).save_pretrained(self.base)
        LongCLIPProcessor(tiny_image_processor(), build_clip_tokenizer()).save_pretrained(self.base)
        self.clip = _stock_clip_folder(root / "clip")
        tokenizer = tiny_llama3_tokenizer()
        for name, seed in (("llm2clip", 0), ("llm2clip-other", 5)):
            torch.manual_seed(seed)
            LLM2CLIPModel(tiny_llm2clip_config(tiny_llama_config(len(tokenizer)))).save_pretrained(root / name)
            LLM2CLIPProcessor(tiny_image_processor(), tokenizer).save_pretrained(root / name)
        self.llm2clip = root / "llm2clip"

    def args(self, model: Path, output: Path, *extra) -> list[str]:
        return [
            "--model_name_or_path",
            model,
            "--train_file",
            self.data,
            "--image_root",
            self.data.parent / "images",
            "--output_dir",
            output,
            "--per_device_train_batch_size",
            "5",
            "--max_steps",
            "1",
            "--save_strategy",
            "no",
            "--report_to",
            "none",
            "--dataloader_num_workers",
            "0",
            *extra,
        ]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return Setup(tmp_path_factory.mktemp("refusals"))


def refused(run, output: Path, listing_before: list[str] | None = None) -> str:
    """The one error line of a refused run; asserts exit 2, no traceback and nothing written to `output`."""
    assert run.returncode == 2, run.stderr[-3000:]
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    errors = [line for line in run.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and last_line(run.stderr) == errors[0], run.stderr[-3000:]
    if listing_before is None:
        assert not output.exists()
    else:
        assert sorted(p.name for p in output.iterdir()) == listing_before
    return errors[0]


@pytest.mark.skipif(accelerator_available(), reason="GPU-only flags are accepted where there is a GPU")
def test_gpu_only_flag_on_a_machine_without_a_gpu_names_the_gpu_only_flags(setup, tmp_path):
    run = training_scripts().run("longclip-train", *setup.args(setup.base, tmp_path / "out", "--bf16"))
    line = refused(run, tmp_path / "out")
    assert "--bf16: GPU-only, and this machine has no GPU; drop it" in line
    assert all(f"--{flag.replace('_', '-')}" in line for flag in GPU_ONLY_FLAGS)


def _truncated(setup) -> Path:
    folder = setup.root / "truncated"
    if not folder.exists():
        shutil.copytree(setup.base, folder)
        weights = folder / "model.safetensors"
        os.truncate(weights, weights.stat().st_size // 2)
    return folder


@pytest.mark.parametrize(
    "case, expected",
    [
        ("missing", "nope: no such model folder; longclip-train needs a converted Long-CLIP folder"),
        ("not a model folder", "data: not a model folder (no config.json)"),
        ("truncated weights", "truncated: model.safetensors is truncated: "),
        ("another model_type", "clip: a stock CLIP folder (config.json model_type 'clip'); longclip-train needs"),
    ],
)
def test_longclip_train_refuses_a_model_folder_it_cannot_train(setup, tmp_path, case, expected):
    model = {
        "missing": setup.root / "nope",
        "not a model folder": setup.data.parent,
        "truncated weights": _truncated(setup),
        "another model_type": setup.clip,  # a stock CLIP folder without --stretch-from-clip used to train and upload
    }[case]
    run = training_scripts().run("longclip-train", *setup.args(model, tmp_path / "out"))
    assert expected in refused(run, tmp_path / "out")


@pytest.mark.parametrize(
    "flag, value, expected",
    [
        ("--learning_rate", "-1", "--learning-rate must be a number >= 0, got -1.0"),
        ("--weight_decay", "-0.1", "--weight-decay must be a number >= 0"),
        ("--per_device_train_batch_size", "0", "--per-device-train-batch-size must be a number >= 1, got 0"),
        ("--max_steps", "0", "--max-steps must be a positive number of steps"),
        ("--adam_beta2", "1.5", "--adam-beta2 must be in [0, 1)"),
        ("--max_grad_norm", "-1", "--max-grad-norm must be a number >= 0"),
        ("--label_smoothing", "1.5", "--label-smoothing must be in [0, 1)"),
        ("--stretch_ratio", "0", "--stretch-ratio must be a number >= 1"),
        ("--per_device_train_batch_size", "1", "gives 1 pair per step: a contrastive loss needs at least 2"),
        ("--decay_convention", "decoupled", "invalid choice: 'decoupled' (choose from 'authors', 'trainer')"),
    ],
)
def test_hyper_parameters_that_make_no_sense_are_one_usage_line(setup, tmp_path, flag, value, expected):
    run = training_scripts().run("longclip-train", *setup.args(setup.base, tmp_path / "out"), flag, value)
    line = refused(run, tmp_path / "out")
    assert line.startswith("longclip-train: error: ") and expected in line and line.endswith("--help)")


@pytest.mark.parametrize(
    "family, flag, value, expected",
    [
        ("llm2clip", "--ema_decay", "2", "--ema-decay must be in [0, 1]"),
        ("llm2clip", "--lora_r", "0", "--lora-r must be a number >= 1"),
        ("llm2clip", "--vision_layer_decay", "0", "--vision-layer-decay must be in (0, 1]"),
        ("proclip", "--structure_loss", "cubic", "invalid choice: 'cubic'"),
        ("proclip", "--per_device_train_batch_size", "1", "a contrastive loss needs at least 2"),
    ],
)
def test_dual_tower_hyper_parameters_are_checked_at_parse_time(setup, tmp_path, family, flag, value, expected):
    run = training_scripts().run(
        f"{family}-train", "--stage", "2", *setup.args(setup.llm2clip, tmp_path / "out"), flag, value
    )
    assert expected in refused(run, tmp_path / "out")


def test_distillation_trains_on_one_caption_per_step_but_is_still_checked(setup, tmp_path):
    """ProCLIP stage 1 has no negatives: batch size 1 is allowed there, nonsense is not."""
    from modeling_longclip.training.dual_tower_train import ProCLIPDistillationArguments

    args = ProCLIPDistillationArguments(
        output_dir=str(tmp_path / "o"), per_device_train_batch_size=1, report_to="none"
    )
    assert args.per_device_train_batch_size == 1
    with pytest.raises(ValueError, match="--learning-rate must be a number >= 0"):
        ProCLIPDistillationArguments(output_dir=str(tmp_path / "o"), learning_rate=-1.0, report_to="none")


def test_resume_without_a_complete_checkpoint_is_refused_before_anything_runs(setup, tmp_path):
    run = training_scripts().run(
        "longclip-train", *setup.args(setup.base, tmp_path / "new"), "--resume_from_checkpoint", "True"
    )
    assert "--resume-from-checkpoint True: " in refused(run, tmp_path / "new")

    partial = tmp_path / "partial"  # what an interrupted save used to leave: weights, no trainer_state.json
    (partial / "checkpoint-2").mkdir(parents=True)
    shutil.copy(setup.base / "model.safetensors", partial / "checkpoint-2")
    run = training_scripts().run(
        "longclip-train", *setup.args(setup.base, partial), "--resume_from_checkpoint", "True"
    )
    assert "holds no complete checkpoint-N folder (one with trainer_state.json)" in refused(
        run, partial, ["checkpoint-2"]
    )

    checkpoint = partial / "checkpoint-2"
    run = training_scripts().run(
        "longclip-train", *setup.args(setup.base, tmp_path / "out"), "--resume_from_checkpoint", checkpoint
    )
    line = refused(run, tmp_path / "out")
    assert f"{checkpoint}: not a complete training checkpoint (no trainer_state.json)" in line


def test_a_finished_output_dir_is_not_reused_without_overwrite(setup, tmp_path):
    finished = tmp_path / "finished"
    (finished / "checkpoint-4").mkdir(parents=True)
    (finished / "checkpoint-4" / "trainer_state.json").write_text("{}")
    shutil.copy(setup.base / "model.safetensors", finished)
    run = training_scripts().run("longclip-train", *setup.args(setup.base, finished))
    line = refused(run, finished, ["checkpoint-4", "model.safetensors"])
    assert "already holds checkpoint-4, model.safetensors: pass --overwrite-output-dir" in line


def test_empty_caption_file_is_named_empty(setup, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    run = training_scripts().run("longclip-train", *setup.args(setup.base, tmp_path / "out"), "--train_file", empty)
    assert refused(run, tmp_path / "out") == f"error: {empty}: the file is empty (no rows to read)."


@pytest.mark.parametrize("family", ["llm2clip", "proclip"])
def test_dual_tower_stages_refuse_a_long_clip_folder(setup, tmp_path, family):
    """It used to train a randomly initialised text tower and adapter, and fail only when checking the result."""
    run = training_scripts().run(f"{family}-train", "--stage", "2", *setup.args(setup.base, tmp_path / "out"))
    line = refused(run, tmp_path / "out")
    assert f"longclip: a Long-CLIP folder (config.json model_type 'longclip'); {family}-train needs" in line


def test_text_features_must_be_this_models_cache(setup, tmp_path):
    from modeling_longclip.features import extract_text_features, iter_captions

    other = setup.root / "llm2clip-other"
    stale = extract_text_features(
        LLM2CLIPModel.from_pretrained(other),
        LLM2CLIPProcessor.from_pretrained(other),
        iter_captions(setup.data, derive_short=True),
        tmp_path / "stale",
        progress=False,
    )
    extract = f"longclip-extract-text-features --model {setup.llm2clip} --captions ... --output"
    for cache, expected in ((setup.data.parent, "no feature cache here"), (stale, "made with another model")):
        run = training_scripts().run(
            "llm2clip-train", "--stage", "2", *setup.args(setup.llm2clip, tmp_path / "out"), "--text_features", cache
        )
        line = refused(run, tmp_path / "out")
        assert line.startswith("error: --text-features: ") and expected in line and f"{extract} {cache}" in line


def test_gradient_checkpointing_uses_the_installed_name_without_a_warning(tmp_path):
    """transformers 5.25 renamed it activation_checkpointing; the README's --gradient_checkpointing keeps working on
    every supported version, and the stage wrappers answer both names."""
    from modeling_longclip.common.cli import DataclassArgumentParser
    from modeling_longclip.training.arguments import uses_activation_checkpointing_name
    from modeling_longclip.training.dual_tower_models import CaptionContrastiveModel
    from modeling_longclip.training.longclip_train import LongCLIPTrainingArguments

    parser = DataclassArgumentParser(LongCLIPTrainingArguments)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        (args,) = parser.parse_args_into_dataclasses(
            ["--output_dir", str(tmp_path / "o"), "--gradient_checkpointing", "--report_to", "none"]
        )
        name = "activation_checkpointing" if uses_activation_checkpointing_name() else "gradient_checkpointing"
        assert getattr(args, name) is True
        model = LLM2CLIPModel(tiny_llm2clip_config(tiny_llama_config(420)))
        wrapper = CaptionContrastiveModel(model)
        getattr(wrapper, f"{name}_enable")()
    assert any(getattr(m, "gradient_checkpointing", False) for m in model.text_model.modules())
