"""An interrupted training job resumes to the same weights as an uninterrupted one: Ctrl-C in the middle of a checkpoint
save, SIGTERM between checkpoints (a separate process, as a scheduler sends it), then `--resume_from_checkpoint True`."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch
from conftest import tiny_image_processor, tiny_longclip_config
from preloaded_cli import last_line, training_scripts, wait_for
from safetensors.torch import load_file
from test_longclip_training import write_photo_dataset
from transformers import Trainer

from modeling_longclip import LongCLIPModel, LongCLIPProcessor
from modeling_longclip.converters.clip_preprocessing import build_clip_tokenizer
from modeling_longclip.training.longclip_train import INTERRUPTED
from modeling_longclip.training.longclip_train import main as train_main

STEPS = 6


class Setup:
    def __init__(self, root: Path):
        self.data = write_photo_dataset(root / "data")
        self.base = root / "base"
        torch.manual_seed(0)
        LongCLIPModel(tiny_longclip_config()).save_pretrained(self.base)
        LongCLIPProcessor(tiny_image_processor(), build_clip_tokenizer()).save_pretrained(self.base)
        self.reference = root / "uninterrupted"
        assert train_main(self.args(self.reference)) == 0

    def args(self, output: Path, *extra) -> list[str]:
        return [
            *("--model_name_or_path", str(self.base), "--train_file", str(self.data)),
            *("--image_root", str(self.data.parent / "images"), "--output_dir", str(output)),
            *("--max_steps", str(STEPS), "--save_steps", "2", "--save_total_limit", "2"),
            *("--per_device_train_batch_size", "5", "--learning_rate", "3e-4", "--warmup_steps", "0", "--seed", "7"),
            *("--report_to", "none", "--dataloader_num_workers", "0", "--disable_tqdm", "true"),
            *extra,
        ]

    def assert_same_result(self, output: Path) -> None:
        expected, resumed = load_file(self.reference / "model.safetensors"), load_file(output / "model.safetensors")
        assert expected.keys() == resumed.keys()
        for key in expected:
            torch.testing.assert_close(resumed[key], expected[key], rtol=0, atol=1e-6, msg=key)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return Setup(tmp_path_factory.mktemp("interrupts"))


def checkpoint_folders(output: Path) -> list[str]:
    names = [path.name for path in output.iterdir() if "checkpoint" in path.name]
    return sorted(names, key=lambda name: (len(name), name))


def assert_only_complete_checkpoints(output: Path) -> None:
    """What the interrupt line promises: every checkpoint folder left is complete, none is half-written."""
    names = checkpoint_folders(output)
    assert names and all(name.startswith("checkpoint-") for name in names), names
    assert all((output / name / "trainer_state.json").is_file() for name in names), names


def test_ctrl_c_during_a_checkpoint_save_keeps_the_previous_one_and_resumes_to_the_same_weights(
    setup, tmp_path, monkeypatch, capsys
):
    """The save of checkpoint-4 is cut between the optimizer and the RNG states (it used to leave a checkpoint-4
    without trainer_state.json, the newest one, from which resuming failed)."""
    save_rng_state = Trainer._save_rng_state

    def interrupted_at_step_4(self, output_dir):
        if self.state.global_step == 4:
            raise KeyboardInterrupt
        return save_rng_state(self, output_dir)

    output = tmp_path / "run"
    monkeypatch.setattr(Trainer, "_save_rng_state", interrupted_at_step_4)
    assert train_main(setup.args(output)) == 130
    assert last_line(capsys.readouterr().err) == f"interrupted (SIGINT): {INTERRUPTED}"
    assert checkpoint_folders(output) == ["checkpoint-2"]
    assert_only_complete_checkpoints(output)
    monkeypatch.undo()

    assert train_main(setup.args(output, "--resume_from_checkpoint", "True")) == 0
    assert checkpoint_folders(output) == [f"checkpoint-{STEPS - 2}", f"checkpoint-{STEPS}"]
    setup.assert_same_result(output)


def test_sigterm_stops_with_one_line_and_the_run_resumes_to_the_same_weights(setup, tmp_path):
    output = tmp_path / "run"
    run = training_scripts().start("longclip-train", *setup.args(output))
    wait_for(lambda: (output / "checkpoint-2").is_dir() or run.process.exitcode is not None)
    os.kill(run.pid, signal.SIGTERM)
    stopped = run.wait()
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    assert "Traceback" not in stopped.stderr
    assert last_line(stopped.stderr) == f"interrupted (SIGTERM): {INTERRUPTED}"
    assert not (output / "model.safetensors").exists()  # stopped before the end
    assert_only_complete_checkpoints(output)

    resumed = training_scripts().run("longclip-train", *setup.args(output, "--resume_from_checkpoint", "True"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    setup.assert_same_result(output)


def test_overwrite_output_dir_removes_the_previous_runs_checkpoints(setup, tmp_path):
    output = tmp_path / "reused"
    for leftover in ("checkpoint-9", "tmp-checkpoint-4/checkpoint-4"):  # another run's, and a killed save's
        (output / leftover).mkdir(parents=True)
        (output / leftover / "trainer_state.json").write_text("{}")
    argv = setup.args(output, "--max_steps", "2", "--save_steps", "1", "--overwrite_output_dir", "true")
    assert train_main(argv) == 0
    assert checkpoint_folders(output) == ["checkpoint-1", "checkpoint-2"]
    assert_only_complete_checkpoints(output)
