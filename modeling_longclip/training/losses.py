"""Training losses of the LLM2CLIP and ProCLIP stages (the CLIP-style losses live in contrastive.py, beside the models).

Written from the papers' formulas (REFERENCE 2.3 and 3); sum reductions where the authors use them, so their loss
weights keep their meaning.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..contrastive import gather_with_grad

STRUCTURE_FORMS = ("squared", "smooth_l1")


def simcse_loss(anchors: torch.Tensor, positives: torch.Tensor, scale: float = 50.0) -> torch.Tensor:
    """Supervised SimCSE (llm2vec): each anchor's positive is its own row, every other positive in the global batch is
    a negative; cosine similarity times `scale`, cross-entropy over local anchors against global positives."""
    anchors, positives = F.normalize(anchors, dim=-1), F.normalize(positives, dim=-1)
    all_positives, offset = gather_with_grad(positives)
    targets = torch.arange(anchors.shape[0], device=anchors.device) + offset
    return F.cross_entropy(scale * anchors.float() @ all_positives.float().t(), targets)


def instance_distillation_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """L_ins = sum over the batch of ||s_i - t_i||^2 on L2-normalized embeddings (sum reduction, as in ProCLIP)."""
    return (F.normalize(student.float(), dim=-1) - F.normalize(teacher.float(), dim=-1)).pow(2).sum()


def structure_distillation_loss(student: torch.Tensor, teacher: torch.Tensor, form: str = "smooth_l1") -> torch.Tensor:
    """L_struct: pairwise Euclidean distances (i < j) of the normalized student embeddings should match the teacher's.

    form "squared": sum of squared differences (the paper); "smooth_l1": smooth-L1 with sum reduction over `pdist`
    (the authors' code).
    """
    if form not in STRUCTURE_FORMS:
        raise ValueError(f"structure form must be one of {STRUCTURE_FORMS}, got {form!r}.")
    s = F.pdist(F.normalize(student.float(), dim=-1))
    t = F.pdist(F.normalize(teacher.float(), dim=-1))
    if form == "squared":
        return (s - t).pow(2).sum()
    return F.smooth_l1_loss(s, t, reduction="sum")


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, form: str = "smooth_l1") -> torch.Tensor:
    """L_ins + L_struct (ProCLIP stage 1 against the CLIP text tower, and the stage-2 regularizer on images)."""
    return instance_distillation_loss(student, teacher) + structure_distillation_loss(student, teacher, form)


def regularizer_weights(weight: float, batch: int, reference_batch: int | None) -> tuple[float, float]:
    """Per-term weights (instance, structure) of the stage-2 regularizer for a local batch of `batch`.

    The authors' 4e-4 is tuned for sum reductions over a local batch of 512. With `reference_batch` set, each term is
    rescaled so every element keeps the weight it had there: the instance term (B terms) by reference / B, the
    structure term (B (B - 1) / 2 pairs) by reference (reference - 1) / (B (B - 1)). With None, `weight` is used as is.
    """
    if reference_batch is None or batch < 2:
        return weight, weight
    pairs = reference_batch * (reference_batch - 1) / (batch * (batch - 1))
    return weight * reference_batch / batch, weight * pairs


__all__ = [
    "distillation_loss",
    "instance_distillation_loss",
    "regularizer_weights",
    "simcse_loss",
    "structure_distillation_loss",
]
