"""`Trainer` glue for the contrastive families: no loop of our own, only what Trainer cannot know.

The loss comes from `model(**batch, return_loss=True)` (which gathers negatives across processes itself); rows the
collator skipped (its `skips` counts) are summed over processes into the logs; every checkpoint gets a model card so
it is Hub-ready like a converted folder.

Checkpoints are written atomically: Trainer's own `_save_checkpoint` writes into `tmp-checkpoint-N` (every process its
part), which is renamed to `checkpoint-N` once complete. An interrupt (Ctrl-C, SIGTERM, a killed job) therefore never
leaves a `checkpoint-N` that cannot be resumed; the newest `checkpoint-N` is always the one to resume from.

What surrounds the loss follows the authors where a recipe says so (see `decay_convention` / `warmup_convention`):
Long-CLIP's train.py builds one AdamW group over every parameter and sets lr x (k + 1) / warmup before step k;
transformers' convention leaves biases, LayerNorms (and here the position tables and `logit_scale`) undecayed and
starts its warmup at 0. LLM2CLIP and ProCLIP clamp `logit_scale` into [0, ln 100] after every optimizer step.
"""

from __future__ import annotations

import functools
import gc
import logging
import math
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
from torch.optim.lr_scheduler import LambdaLR
from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

from ..common.errors import LongCLIPError
from ..export.folder import write_sentence_transformers_files
from ..modeling_longclip import PartiallyFrozenEmbedding
from .arguments import STAGING_PREFIX, TRAINER_STATE, last_complete_checkpoint
from .collator import SKIP_REASONS

logger = logging.getLogger(__name__)

NO_DECAY_SUFFIXES = ("position_embedding.weight", "logit_scale")
DECAY_CONVENTIONS = ("authors", "trainer")
WARMUP_CONVENTIONS = ("authors", "transformers")


def vision_layer_depth(name: str, num_layers: int) -> int:
    """Exponent of the layer-wise decay for a parameter: block i (0-based) of L -> L - i, patch/position embeddings
    and the pre-LayerNorm -> L + 1, the post-LayerNorm, SigLIP's pooling head and everything outside the ViT -> 0
    (the full rate)."""
    if "vision_model." not in name or "post_layernorm" in name or "vision_model.head." in name:
        return 0  # SigLIP's attention-pooling head sits after the last block, like the post-LayerNorm
    match = re.search(r"vision_model\.encoder\.layers\.(\d+)\.", name)
    return num_layers - int(match.group(1)) if match else num_layers + 1


class RecipeError(LongCLIPError, ValueError):
    """A recipe option this setup cannot honour (e.g. under DeepSpeed ZeRO-3); the message names the option."""


def authors_warmup(step: int, warmup: int, after) -> float:
    """Long-CLIP's warmup factor (train/scheduler.py): (k + 1) / warmup before step k, then the schedule `after`."""
    return (step + 1) / warmup if step < warmup else after(step)


class ContrastiveTrainer(Trainer):
    """decay_convention: "trainer" (transformers: no decay on biases, LayerNorms, position tables, logit_scale) or
    "authors" (one group, every trainable tensor decayed; pair it with FrozenRowsCallback so decoupled decay cannot
    shrink frozen rows). warmup_convention: "transformers" (factor k / warmup) or "authors" ((k + 1) / warmup).
    checkpoint_card: step -> README.md text, written with the sentence-transformers files into every checkpoint
    before it is renamed into place (so each checkpoint is a complete, Hub-ready model folder)."""

    def __init__(
        self,
        *args,
        vision_layer_decay: float | None = None,
        decay_convention: str = "trainer",
        warmup_convention: str = "transformers",
        checkpoint_card: Callable[[int], str] | None = None,
        **kwargs,
    ):
        if decay_convention not in DECAY_CONVENTIONS:
            raise ValueError(f"decay_convention must be one of {DECAY_CONVENTIONS}, got {decay_convention!r}.")
        if warmup_convention not in WARMUP_CONVENTIONS:
            raise ValueError(f"warmup_convention must be one of {WARMUP_CONVENTIONS}, got {warmup_convention!r}.")
        if vision_layer_decay is not None and decay_convention == "authors":
            raise ValueError("layer-wise lr decay builds its own groups: use it with decay_convention='trainer'.")
        super().__init__(*args, **kwargs)
        self.vision_layer_decay = vision_layer_decay
        self.decay_convention, self.warmup_convention = decay_convention, warmup_convention
        self.checkpoint_card = checkpoint_card
        self._staging_run_dir: str | None = None

    def train(self, resume_from_checkpoint=None, *args, **kwargs):
        """Trainer's loop. `True` resumes from the newest COMPLETE checkpoint; leftovers of an interrupted save are
        removed; with `overwrite_output_dir` (and no resume) the folder's earlier checkpoints go first, so the
        checkpoints of two runs never mix."""
        if resume_from_checkpoint is True:
            resume_from_checkpoint = last_complete_checkpoint(self.args.output_dir)
            if resume_from_checkpoint is None:
                raise RecipeError(f"{self.args.output_dir} holds no complete checkpoint-N folder to resume from.")
            resume_from_checkpoint = str(resume_from_checkpoint)
        if self.args.should_save and Path(self.args.output_dir).is_dir():
            output = Path(self.args.output_dir)
            stale = list(output.glob(f"{STAGING_PREFIX}{PREFIX_CHECKPOINT_DIR}-*"))
            if not resume_from_checkpoint and getattr(self.args, "overwrite_output_dir", False):
                stale += [path for path in output.glob(f"{PREFIX_CHECKPOINT_DIR}-*") if path.is_dir()]
            for path in stale:
                shutil.rmtree(path, ignore_errors=True)
        self.accelerator.wait_for_everyone()
        try:
            return super().train(resume_from_checkpoint, *args, **kwargs)
        except KeyboardInterrupt:  # Ctrl-C / SIGTERM: close the progress bar, so the command's last line is its own
            for callback in self.callback_handler.callbacks:
                if getattr(callback, "training_bar", None) is not None:
                    callback.training_bar.close()
                    callback.training_bar = None
            raise

    def _get_output_dir(self, trial) -> str:
        return self._staging_run_dir or super()._get_output_dir(trial)

    def _save_checkpoint(self, model, trial) -> None:
        """Trainer's checkpoint, written into `tmp-checkpoint-N/checkpoint-N` by every process, completed with the
        model card, then renamed to `checkpoint-N` by the process that saves; checkpoint rotation runs after."""
        run_dir = Path(super()._get_output_dir(trial))
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        staging, final = run_dir / f"{STAGING_PREFIX}{name}", run_dir / name
        if self.args.should_save:
            shutil.rmtree(staging, ignore_errors=True)  # a leftover of a save that was killed at this very step
        self.accelerator.wait_for_everyone()
        self._staging_run_dir = str(staging)
        try:
            super()._save_checkpoint(model, trial)  # its rotation runs inside the staging folder: a no-op
            self.accelerator.wait_for_everyone()  # every process's part (RNG states, shards) is written
            if self.args.should_save:
                self._complete_checkpoint(staging / name)
                if final.exists():  # saved again at the same step (a resumed run): the new one replaces it
                    os.replace(final, staging / "replaced")
                os.replace(staging / name, final)
                shutil.rmtree(staging)
                if self.state.best_model_checkpoint == str(staging / name):
                    self.state.best_model_checkpoint = str(final)
                    self.state.save_to_json(str(final / TRAINER_STATE))
        except BaseException:
            if self.args.should_save:
                shutil.rmtree(staging, ignore_errors=True)
            raise
        finally:
            self._staging_run_dir = None
        if self.args.should_save:
            rotate_checkpoints(
                output_dir=str(run_dir),
                save_total_limit=self.args.save_total_limit,
                best_model_checkpoint=self.state.best_model_checkpoint,
                use_mtime=True,
            )
        self.accelerator.wait_for_everyone()

    def _complete_checkpoint(self, folder: Path) -> None:
        if self.checkpoint_card is None:
            return
        (folder / "README.md").write_text(self.checkpoint_card(self.state.global_step), encoding="utf-8")
        if self.processing_class is not None:
            write_sentence_transformers_files(folder, _unwrapped(self.model), self.processing_class)

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        """Trainer's schedule; with the authors' warmup convention every warmup step k runs at lr x (k + 1) / warmup
        (the first step already moves the weights) and the steps after follow Trainer's schedule unchanged."""
        created = self.lr_scheduler is None
        scheduler = super().create_scheduler(num_training_steps, optimizer)
        warmup = self.args.get_warmup_steps(num_training_steps)
        if not created or self.warmup_convention != "authors" or warmup <= 0:
            return scheduler
        if not isinstance(scheduler, LambdaLR):
            raise ValueError(
                f"--warmup_convention authors shifts a LambdaLR schedule; `{self.args.lr_scheduler_type}` is "
                f"{type(scheduler).__name__}: use --warmup_convention transformers with it."
            )
        if any(after(0) != 0 for after in scheduler.lr_lambdas):  # e.g. `constant`: this schedule has no warmup
            return scheduler
        lambdas = [functools.partial(authors_warmup, warmup=warmup, after=after) for after in scheduler.lr_lambdas]
        self.lr_scheduler = LambdaLR(scheduler.optimizer, lambdas)
        return self.lr_scheduler

    def create_optimizer(self, model=None):
        """Trainer's optimizer (one AdamW group under the authors' decay convention), or layer-wise learning-rate decay
        over the ViT (LLM2CLIP stage 2)."""
        if self.vision_layer_decay is None or self.optimizer is not None:
            optimizer = super().create_optimizer(model)
            if self.decay_convention == "authors" and isinstance(getattr(optimizer, "param_groups", None), list):
                optimizer.param_groups[:] = [group for group in optimizer.param_groups if group["params"]]
            return optimizer
        model = model or self.model
        decay_names = set(self.get_decay_parameter_names(model))
        num_layers = model.config.vision_config.num_hidden_layers
        groups: dict[tuple[float, float], list] = {}
        for name, param in model.named_parameters():
            if param.requires_grad:
                scale = self.vision_layer_decay ** vision_layer_depth(name, num_layers)
                key = (self.args.learning_rate * scale, self.args.weight_decay if name in decay_names else 0.0)
                groups.setdefault(key, []).append(param)
        self.optimizer = torch.optim.AdamW(
            [{"params": params, "lr": lr, "weight_decay": wd} for (lr, wd), params in groups.items()],
            lr=self.args.learning_rate,
            betas=(self.args.adam_beta1, self.args.adam_beta2),
            eps=self.args.adam_epsilon,
        )
        return self.optimizer

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(**inputs, return_loss=True)
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    def get_decay_parameter_names(self, model) -> list[str]:
        if self.decay_convention == "authors":  # the authors' `AdamW(model.parameters(), weight_decay=...)`
            return [name for name, _ in model.named_parameters()]
        # Position tables: their frozen rows must not move at all (decoupled weight decay would shrink them).
        return [name for name in super().get_decay_parameter_names(model) if not name.endswith(NO_DECAY_SUFFIXES)]

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        skips = getattr(self.data_collator, "skips", None)
        local = torch.tensor(
            skips.totals() if skips is not None else [0] * len(SKIP_REASONS), device=self.accelerator.device
        )
        totals = self.accelerator.reduce(local, reduction="sum")
        logs.update({f"skipped_{reason}": int(count) for reason, count in zip(SKIP_REASONS, totals.tolist())})
        super().log(logs, start_time)


def finish_distributed(trainer) -> None:
    """Let every process wait for the main one's final writes, then close the process group safely.

    The DDP wrapper goes first, while the process group registry still holds the group: otherwise the wrapper's
    Reducer is the group's last owner, and freeing it (with the GIL held) runs the gloo destructor, which joins a
    worker thread that may itself be waiting for the GIL to free the last barrier's tensors. That deadlock hung
    2-process runs after training, intermittently. `end_training` then destroys the group on a path that releases
    the GIL, so a process never leaves with the group open (which can abort at exit instead).
    """
    trainer.accelerator.wait_for_everyone()
    trainer.model_wrapped = trainer.model
    trainer.accelerator.free_memory()  # drops the accelerator's references to the wrapped model and optimizer
    gc.collect()
    trainer.accelerator.end_training()


def _unwrapped(model):
    while hasattr(model, "module"):  # DDP / DeepSpeed engines keep the model in `.module`
        model = model.module
    return model


def _partitioned(param) -> bool:
    """DeepSpeed ZeRO-3 keeps only a shard of each parameter on a process (the local tensor is empty)."""
    return getattr(param, "ds_id", None) is not None


class FrozenRowsCallback(TrainerCallback):
    """Writes the frozen first rows of every `PartiallyFrozenEmbedding` back after each optimizer step.

    The rows get no gradient, but decoupled weight decay (the authors' decay convention decays the position table)
    would still shrink them. The authors keep them in a separate parameter the optimizer never sees; writing the rows
    back gives the same weights: rows < keep bit-exact, the later rows decayed and trained like theirs.
    """

    def __init__(self):
        self.frozen: list[tuple[torch.nn.Parameter, torch.Tensor]] = []

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.frozen = []
        for module in _unwrapped(model).modules():
            if isinstance(module, PartiallyFrozenEmbedding) and module.keep and module.weight.requires_grad:
                if _partitioned(module.weight):
                    raise RecipeError(
                        "DeepSpeed ZeRO-3 partitions the position table, so its frozen rows cannot be written back after "
                        "each step: train with ZeRO-1/2, or with --decay_convention trainer (no decay on it)."
                    )
                self.frozen.append((module.weight, module.weight[: module.keep].detach().clone()))

    @torch.no_grad()
    def on_optimizer_step(self, args, state, control, **kwargs):
        for weight, rows in self.frozen:
            weight[: rows.shape[0]].copy_(rows)


class LogitScaleClampCallback(TrainerCallback):
    """Clamps the `logit_scale` parameter into [low, high] after every optimizer step, written back into the
    parameter (LLM2CLIP's and ProCLIP's train.py: `unwrap_model(model).logit_scale.clamp_(0, math.log(100))`).

    Under DeepSpeed ZeRO-3 the parameter is partitioned: the clamp is skipped with a warning (the ProCLIP forward
    still caps the scale it uses). Under ZeRO-1/2 it clamps the module's copy, as the authors' DeepSpeed runs did.
    """

    def __init__(self, low: float = 0.0, high: float = math.log(100.0)):
        self.low, self.high, self.warned = low, high, False

    @torch.no_grad()
    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        for name, param in _unwrapped(model).named_parameters():
            if param.requires_grad and (name == "logit_scale" or name.endswith(".logit_scale")):
                if _partitioned(param):
                    if not self.warned:
                        logger.warning("logit_scale is partitioned by DeepSpeed ZeRO-3: its clamp is skipped.")
                        self.warned = True
                    continue
                param.clamp_(self.low, self.high)


class EMATeacherCallback(TrainerCallback):
    """Moves the EMA teacher towards the student after every optimizer step (not after accumulation micro-steps)."""

    def on_step_end(self, args, state, control, model=None, **kwargs):
        model.update_teacher()


class CollatorEpochCallback(TrainerCallback):
    """Tells a collator the epoch so its random caption picks change between epochs (see collator.pick_caption)."""

    def __init__(self, collator):
        self.collator = collator

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.collator.epoch = int(state.epoch or 0)
