"""What the training commands refuse while their command line is parsed, before a model loads or a folder is created.

Every argument dataclass of `longclip-train`, `llm2clip-train` and `proclip-train` checks itself in `__post_init__`:
numbers that make no sense (a negative learning rate, a batch of 0), GPU-only flags on a machine without a GPU, a
contrastive step with fewer than 2 pairs (its loss would be 0), `--resume-from-checkpoint` without a complete
checkpoint, and an output folder that already holds a run. `DataclassArgumentParser` turns the ValueError into one
usage line (exit 2); code that builds the dataclasses itself gets a `TrainingArgumentError` (a `LongCLIPError`).

On a machine without a GPU, `--use-cpu` is implied: under `torchrun` this makes accelerate set up a gloo process group
with one process per rank (without it, every rank would train alone and write the same folder).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch
from transformers import TrainingArguments

from ..common.errors import LongCLIPError

GPU_ONLY_FLAGS = ("bf16", "fp16", "tf32", "bf16_full_eval", "fp16_full_eval")
TRAINER_STATE = "trainer_state.json"
CHECKPOINT = re.compile(r"checkpoint-(\d+)")
STAGING_PREFIX = "tmp-"  # tmp-checkpoint-N: a checkpoint being written, renamed to checkpoint-N once complete


class TrainingArgumentError(LongCLIPError, ValueError):
    """A training option that makes no sense or cannot work here; the message names the flag."""


def dashed(name: str) -> str:
    return "--" + name.replace("_", "-")


def accelerator_available() -> bool:
    """Whether torch sees a GPU-like device (CUDA / ROCm, XPU, MPS, ...)."""
    accelerator = getattr(torch, "accelerator", None)
    if accelerator is not None and hasattr(accelerator, "is_available"):
        return bool(accelerator.is_available())
    mps = getattr(torch.backends, "mps", None)
    return torch.cuda.is_available() or bool(mps is not None and mps.is_available())


# (test, what the value must be): every rule lets None through (an unset optional value).
def at_least(low: float):
    return (lambda value: math.isfinite(value) and value >= low), f"must be a number >= {low:g}"


def above(low: float):
    return (lambda value: math.isfinite(value) and value > low), f"must be a number > {low:g}"


def fraction(closed_top: bool = False):
    if closed_top:
        return (lambda value: 0 <= value <= 1), "must be in [0, 1]"
    return (lambda value: 0 <= value < 1), "must be in [0, 1)"


def check_rules(arguments, rules: dict) -> None:
    for name, (test, rule) in rules.items():
        value = getattr(arguments, name, None)
        if value is not None and not test(value):
            raise TrainingArgumentError(f"{dashed(name)} {rule}, got {value!r}")


TRAINING_RULES = {
    "learning_rate": at_least(0),
    "weight_decay": at_least(0),
    "adam_beta1": fraction(),
    "adam_beta2": fraction(),
    "adam_epsilon": at_least(0),
    "max_grad_norm": at_least(0),
    "per_device_train_batch_size": at_least(1),
    "gradient_accumulation_steps": at_least(1),
    "dataloader_num_workers": at_least(0),
}


def last_complete_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest `checkpoint-N` of `output_dir` that holds trainer_state.json (the file a resume reads), or None."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return None
    steps = [
        (int(match.group(1)), path)
        for path in folder.iterdir()
        if (match := CHECKPOINT.fullmatch(path.name)) and (path / TRAINER_STATE).is_file()
    ]
    return max(steps, key=lambda step: step[0])[1] if steps else None


def resolve_resume(value, output_dir: str) -> str | None:
    """`--resume-from-checkpoint` as Trainer needs it: a complete checkpoint folder, or None.

    "True" (the spelling transformers' examples document) means the newest complete checkpoint of the output folder;
    "False" means none. A folder without trainer_state.json (one interrupted while being written by an older version,
    or copied in part) is refused here instead of failing halfway through loading.
    """
    if value is None or value is False:
        return None
    text = str(value)
    if value is True or text.lower() == "true":
        found = last_complete_checkpoint(output_dir)
        if found is None:
            raise TrainingArgumentError(
                f"--resume-from-checkpoint True: {output_dir} holds no complete checkpoint-N folder (one with "
                f"{TRAINER_STATE}) to resume from; start the run without it"
            )
        return str(found)
    if text.lower() == "false":
        return None
    path = Path(text).expanduser()
    if not path.is_dir():
        raise TrainingArgumentError(f"--resume-from-checkpoint {text}: no such checkpoint folder")
    if not (path / TRAINER_STATE).is_file():
        earlier = last_complete_checkpoint(path.parent)
        hint = f"; the newest complete one beside it is {earlier}" if earlier is not None else ""
        raise TrainingArgumentError(
            f"--resume-from-checkpoint {text}: not a complete training checkpoint (no {TRAINER_STATE}){hint}"
        )
    return str(path)


def check_output_dir_is_new(output_dir: str) -> None:
    """A run never writes into a folder that already holds something: checkpoints of two runs would mix, and
    `--resume-from-checkpoint True` would pick the other run's newest."""
    folder = Path(output_dir)
    if folder.exists() and not folder.is_dir():
        raise TrainingArgumentError(f"--output-dir {output_dir} is a file, not a folder")
    if folder.is_dir():
        entries = sorted(path.name for path in folder.iterdir())
        if entries:
            shown = ", ".join(entries[:4]) + (", ..." if len(entries) > 4 else "")
            raise TrainingArgumentError(
                f"--output-dir {output_dir} already holds {shown}: pass --overwrite-output-dir to train into it anyway "
                "(its checkpoint-N folders are removed first), --resume-from-checkpoint True to continue its run, or "
                "another --output-dir"
            )


def uses_activation_checkpointing_name() -> bool:
    """transformers 5.25 renamed `gradient_checkpointing` to `activation_checkpointing` (the old name warns)."""
    return "activation_checkpointing" in {f.name for f in fields(TrainingArguments)}


@dataclass
class CheckedTrainingArguments(TrainingArguments):
    """TrainingArguments that refuse, at parse time, what cannot work (see the module docstring).

    `min_pairs_per_step` (a class attribute, not a flag): the fewest image-caption pairs one step may see over all
    processes; 2 for a contrastive loss (with 1 pair there are no negatives and the loss is 0).
    """

    min_pairs_per_step = 2

    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Train into an --output-dir that already holds files; its checkpoint-N folders are removed when "
            "training starts, so checkpoints of two runs never mix."
        },
    )

    def __post_init__(self):
        check_rules(self, TRAINING_RULES)
        if self.max_steps == 0 or self.max_steps < -1:
            raise TrainingArgumentError(
                f"--max-steps must be a positive number of steps (or -1 to train for --num-train-epochs), "
                f"got {self.max_steps}"
            )
        if self.max_steps < 0:
            check_rules(self, {"num_train_epochs": above(0)})
        if not self.use_cpu and not accelerator_available():
            given = [dashed(name) for name in GPU_ONLY_FLAGS if getattr(self, name, None)]
            if given:
                raise TrainingArgumentError(
                    f"{' '.join(given)}: GPU-only, and this machine has no GPU; drop it to train in fp32 on the CPU "
                    f"(GPU-only flags: {', '.join(dashed(name) for name in GPU_ONLY_FLAGS)}; with --use-cpu, --bf16 "
                    "runs bf16 autocast on the CPU)"
                )
            self.use_cpu = True  # gloo process groups under torchrun, no pinned memory
        if uses_activation_checkpointing_name():
            for old, new in (
                ("gradient_checkpointing", "activation_checkpointing"),
                ("gradient_checkpointing_kwargs", "activation_checkpointing_kwargs"),
            ):
                if getattr(self, old) is not None and getattr(self, new) is None:
                    setattr(
                        self, new, getattr(self, old)
                    )  # the README's --gradient-checkpointing, without the warning
                    setattr(self, old, None)
        super().__post_init__()
        self.resume_from_checkpoint = resolve_resume(self.resume_from_checkpoint, self.output_dir)
        if self.resume_from_checkpoint is None and not self.overwrite_output_dir:
            check_output_dir_is_new(self.output_dir)
        pairs = self.per_device_train_batch_size * max(self.world_size, 1)
        if pairs < self.min_pairs_per_step:
            raise TrainingArgumentError(
                f"--per-device-train-batch-size {self.per_device_train_batch_size} on {max(self.world_size, 1)} "
                f"process(es) gives {pairs} pair per step: a contrastive loss needs at least {self.min_pairs_per_step} "
                "(the other pairs of the step are each pair's negatives; with one the loss is 0)"
            )


__all__ = [
    "GPU_ONLY_FLAGS",
    "STAGING_PREFIX",
    "TRAINER_STATE",
    "CheckedTrainingArguments",
    "TrainingArgumentError",
    "accelerator_available",
    "check_rules",
    "last_complete_checkpoint",
    "resolve_resume",
]
