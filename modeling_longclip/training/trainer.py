"""`Trainer` glue for the contrastive families: no loop of our own, only what Trainer cannot know.

The loss comes from `model(**batch, return_loss=True)` (which gathers negatives across processes itself); rows the
collator skipped (its `skips` counts) are summed over processes into the logs; the frozen position rows and
`logit_scale` get no weight decay; every checkpoint gets a model card so it is Hub-ready like a converted folder.
"""

from __future__ import annotations

import gc
import re
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback

from .collator import SKIP_REASONS

NO_DECAY_SUFFIXES = ("position_embedding.weight", "logit_scale")


def vision_layer_depth(name: str, num_layers: int) -> int:
    """Exponent of the layer-wise decay for a parameter: block i (0-based) of L -> L - i, patch/position embeddings
    and the pre-LayerNorm -> L + 1, the post-LayerNorm and everything outside the ViT -> 0 (the full rate)."""
    if "vision_model." not in name or "post_layernorm" in name:
        return 0
    match = re.search(r"vision_model\.encoder\.layers\.(\d+)\.", name)
    return num_layers - int(match.group(1)) if match else num_layers + 1


class ContrastiveTrainer(Trainer):
    def __init__(self, *args, vision_layer_decay: float | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.vision_layer_decay = vision_layer_decay

    def create_optimizer(self, model=None):
        """AdamW as Trainer builds it, plus optional layer-wise learning-rate decay over the ViT (LLM2CLIP stage 2)."""
        if self.vision_layer_decay is None or self.optimizer is not None:
            return super().create_optimizer(model)
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
            lr=self.args.learning_rate, betas=(self.args.adam_beta1, self.args.adam_beta2), eps=self.args.adam_epsilon,
        )  # fmt: skip
        return self.optimizer

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(**inputs, return_loss=True)
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    def get_decay_parameter_names(self, model) -> list[str]:
        # Position tables: their frozen rows must not move at all (decoupled weight decay would shrink them).
        return [name for name in super().get_decay_parameter_names(model) if not name.endswith(NO_DECAY_SUFFIXES)]

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        skips = getattr(self.data_collator, "skips", None)
        local = torch.tensor(skips.totals() if skips is not None else [0] * len(SKIP_REASONS), device=self.accelerator.device)
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


class ModelCardCallback(TrainerCallback):
    """Writes README.md into every checkpoint folder (and the caller writes it into the final folder)."""

    def __init__(self, render_card):
        self.render_card = render_card

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if folder.is_dir():
                (folder / "README.md").write_text(self.render_card(state.global_step), encoding="utf-8")


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
