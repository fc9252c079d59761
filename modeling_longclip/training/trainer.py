"""`Trainer` glue for the contrastive families: no loop of our own, only what Trainer cannot know.

The loss comes from `model(**batch, return_loss=True)` (which gathers negatives across processes itself); broken rows
the collator skipped are summed over processes into the logs; the frozen position rows and `logit_scale` get no weight
decay; every checkpoint gets a model card so it is Hub-ready like a converted folder.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback

from .collator import SKIP_REASONS

NO_DECAY_SUFFIXES = ("position_embedding.weight", "logit_scale")


class ContrastiveTrainer(Trainer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._skipped = torch.zeros(len(SKIP_REASONS), dtype=torch.long)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        skipped = inputs.pop("skipped", None)
        if skipped is not None:
            self._skipped += skipped.detach().long().cpu()
        outputs = model(**inputs, return_loss=True)
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    def get_decay_parameter_names(self, model) -> list[str]:
        # Position tables: their frozen rows must not move at all (decoupled weight decay would shrink them).
        return [name for name in super().get_decay_parameter_names(model) if not name.endswith(NO_DECAY_SUFFIXES)]

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        totals = self.accelerator.reduce(self._skipped.to(self.accelerator.device), reduction="sum")
        logs.update({f"skipped_{reason}": int(count) for reason, count in zip(SKIP_REASONS, totals.tolist())})
        super().log(logs, start_time)


class ModelCardCallback(TrainerCallback):
    """Writes README.md into every checkpoint folder (and the caller writes it into the final folder)."""

    def __init__(self, render_card):
        self.render_card = render_card

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if folder.is_dir():
                (folder / "README.md").write_text(self.render_card(state.global_step), encoding="utf-8")
