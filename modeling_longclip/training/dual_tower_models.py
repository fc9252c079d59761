"""What each LLM2CLIP / ProCLIP training stage optimizes, as modules Trainer can drive.

Each wraps a converted model, freezes what the stage keeps fixed, and returns `.loss` from
`forward(..., return_loss=True)`. The final folder is always the wrapped model alone (`exportable()`), so stage-only
parts (the CLIP text teacher, the EMA image teacher) never reach it; Trainer checkpoints hold the whole wrapper, so
a resumed run continues with the same teacher.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers.utils import ModelOutput

from ..contrastive import contrastive_loss
from ..embedding import pooled_features
from .losses import (
    distillation_loss,
    instance_distillation_loss,
    regularizer_weights,
    simcse_loss,
    structure_distillation_loss,
)


@dataclass
class StageOutput(ModelOutput):
    loss: torch.FloatTensor | None = None


def freeze_all_but(model: nn.Module, *trainable: nn.Module) -> None:
    model.requires_grad_(False)
    for module in trainable:
        module.requires_grad_(True)


class _Wrapper(nn.Module):
    """Delegates what Trainer asks of a model (gradient checkpointing, config) to the wrapped one."""

    model: nn.Module

    @property
    def config(self):
        return self.model.config

    def activation_checkpointing_enable(self, **kwargs):
        """What Trainer calls from transformers 5.25 on (the wrapped model has the same method there)."""
        self.model.activation_checkpointing_enable(**kwargs)

    def gradient_checkpointing_enable(self, **kwargs):
        """What Trainer calls before transformers 5.25 (the name is deprecated, with a FutureWarning, from 5.25)."""
        self.model.gradient_checkpointing_enable(**kwargs)

    def exportable(self) -> nn.Module:
        return self.model


class CaptionContrastiveModel(_Wrapper):
    """LLM2CLIP stage 1: the (LoRA-adapted) text model learns to embed captions of one image together (SimCSE)."""

    def __init__(self, model, scale: float = 50.0):
        super().__init__()
        self.model, self.scale = model, scale

    def forward(
        self,
        input_ids,
        attention_mask,
        pooling_mask,
        positive_input_ids,
        positive_attention_mask,
        positive_pooling_mask,
        return_loss=True,
        **kwargs,
    ) -> StageOutput:
        anchors = self.model.encode_llm(input_ids, attention_mask, pooling_mask)
        positives = self.model.encode_llm(positive_input_ids, positive_attention_mask, positive_pooling_mask)
        return StageOutput(loss=simcse_loss(anchors, positives, self.scale))


class AdapterDistillationModel(_Wrapper):
    """ProCLIP stage 1: only the adapter trains, towards a frozen CLIP text tower's embeddings.

    Loss = L_ins + L_struct on the captions under the plain keys, plus L_ins on the `long_*` captions when the collator
    sends them (the authors' train.py: the instance term on both caption sets, the structure term on the short set).
    """

    def __init__(self, model, teacher, structure_form: str = "smooth_l1"):
        super().__init__()
        self.model, self.teacher, self.structure_form = model, teacher.eval(), structure_form
        freeze_all_but(self.model, self.model.text_adapter)
        self.teacher.requires_grad_(False)

    def _student_and_target(
        self, teacher_input_ids, teacher_attention_mask, input_ids, attention_mask, pooling_mask, text_embeds
    ):
        with torch.no_grad():
            target = pooled_features(
                self.teacher.get_text_features(input_ids=teacher_input_ids, attention_mask=teacher_attention_mask)
            )
            if text_embeds is None:
                text_embeds = self.model.encode_llm(input_ids, attention_mask, pooling_mask)
        return pooled_features(self.model.get_text_features(text_embeds=text_embeds)), target

    def forward(
        self,
        teacher_input_ids,
        teacher_attention_mask,
        input_ids=None,
        attention_mask=None,
        pooling_mask=None,
        text_embeds=None,
        long_teacher_input_ids=None,
        long_teacher_attention_mask=None,
        long_input_ids=None,
        long_attention_mask=None,
        long_pooling_mask=None,
        long_text_embeds=None,
        return_loss=True,
        **kwargs,
    ) -> StageOutput:
        student, target = self._student_and_target(
            teacher_input_ids, teacher_attention_mask, input_ids, attention_mask, pooling_mask, text_embeds
        )
        loss = distillation_loss(student, target, self.structure_form)
        if long_teacher_input_ids is not None:
            student, target = self._student_and_target(
                long_teacher_input_ids,
                long_teacher_attention_mask,
                long_input_ids,
                long_attention_mask,
                long_pooling_mask,
                long_text_embeds,
            )
            loss = loss + instance_distillation_loss(student, target)
        return StageOutput(loss=loss)


class EMATeacherContrastiveModel(_Wrapper):
    """ProCLIP stage 2: image tower + adapter train with InfoNCE over the global batch, regularized towards an EMA copy
    of the image tower (L_ins + L_struct on normalized image embeddings of the local batch).

    The teacher is updated after every optimizer step (`update_teacher`, called by EMATeacherCallback).
    """

    def __init__(
        self,
        model,
        decay: float = 0.999,
        reg_weight: float = 4e-4,
        reference_batch: int | None = 512,
        structure_form: str = "smooth_l1",
        max_logit_scale: float = math.log(100.0),
    ):
        super().__init__()
        self.model, self.decay, self.reg_weight = model, decay, reg_weight
        self.reference_batch, self.structure_form, self.max_logit_scale = (
            reference_batch,
            structure_form,
            max_logit_scale,
        )
        freeze_all_but(self.model, self.model.vision_model, self.model.visual_projection, self.model.text_adapter)
        self.model.logit_scale.requires_grad_(True)
        self.teacher = nn.ModuleDict(
            {
                "vision_model": copy.deepcopy(model.vision_model),
                "visual_projection": copy.deepcopy(model.visual_projection),
            }
        ).eval()
        self.teacher.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()
        return self

    @torch.no_grad()
    def update_teacher(self) -> None:
        student = dict(self.model.vision_model.named_parameters(prefix="vision_model"))
        student.update(self.model.visual_projection.named_parameters(prefix="visual_projection"))
        for name, teacher_param in self.teacher.named_parameters():
            teacher_param.mul_(self.decay).add_(student[name].detach().to(teacher_param.dtype), alpha=1 - self.decay)

    def forward(
        self,
        pixel_values,
        input_ids=None,
        attention_mask=None,
        pooling_mask=None,
        text_embeds=None,
        return_loss=True,
        **kwargs,
    ) -> StageOutput:
        image = F.normalize(pooled_features(self.model.get_image_features(pixel_values=pixel_values)), dim=-1)
        text = pooled_features(self.model.get_text_features(input_ids, attention_mask, pooling_mask, text_embeds))
        text = F.normalize(text, dim=-1)
        scale = self.model.logit_scale.clamp(max=self.max_logit_scale).exp()
        loss = contrastive_loss(image, text, scale)
        with torch.no_grad():
            pooled = self.teacher["vision_model"](pixel_values=pixel_values).pooler_output
            target = self.teacher["visual_projection"](pooled)
        w_ins, w_struct = regularizer_weights(self.reg_weight, image.shape[0], self.reference_batch)
        regularizer = w_ins * instance_distillation_loss(image, target)
        regularizer = regularizer + w_struct * structure_distillation_loss(image, target, self.structure_form)
        return StageOutput(loss=loss + regularizer)
