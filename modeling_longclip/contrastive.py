"""Contrastive losses shared by every model family, with negatives across the global batch.

Part of the flat Hub payload: imports only torch and transformers. Features are gathered from every process of an
initialized process group *with gradients* (each process computes its local rows against the global columns, labels
offset by rank), so the gradient averaged by DDP equals the gradient of the mean of the per-process losses.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers.utils import logging

logger = logging.get_logger(__name__)


def distributed_world() -> tuple[int, int]:
    """(rank, world size) of the default process group, or (0, 1) when none is initialized."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class _AllGatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums every process's gradient for the local rows (all_reduce works on gloo too)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        ctx.rank, ctx.rows = torch.distributed.get_rank(), tensor.shape[0]
        parts = [torch.empty_like(tensor) for _ in range(torch.distributed.get_world_size())]
        torch.distributed.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        torch.distributed.all_reduce(grad)
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def gather_with_grad(tensor: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Concatenate `tensor` from all processes along dim 0, keeping the autograd graph to every copy.

    Local batches may differ in size (a process whose data loader skipped broken rows): they are padded for the
    collective and trimmed again. Returns the global tensor and the offset of this process's rows in it.
    """
    rank, world_size = distributed_world()
    if world_size == 1:
        return tensor, 0
    size = torch.tensor([tensor.shape[0]], device=tensor.device)
    sizes = [torch.zeros_like(size) for _ in range(world_size)]
    torch.distributed.all_gather(sizes, size)
    sizes = [int(s) for s in sizes]
    padded = F.pad(tensor, (0, 0, 0, max(sizes) - tensor.shape[0]))
    parts = _AllGatherWithGrad.apply(padded).split(max(sizes))
    return torch.cat([part[:n] for part, n in zip(parts, sizes)]), sum(sizes[:rank])


def contrastive_loss(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    logit_scale: torch.Tensor,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Symmetric InfoNCE over L2-normalized embeddings; local rows against global columns.

    `logit_scale` is the multiplier (already exponentiated). Each direction's cross-entropy is averaged (1/2).
    """
    all_images, offset = gather_with_grad(image_embeds)
    all_texts, _ = gather_with_grad(text_embeds)
    batch = image_embeds.shape[0]
    targets = torch.arange(batch, device=image_embeds.device) + offset
    logits_per_image = logit_scale * image_embeds @ all_texts.t()
    logits_per_text = logit_scale * text_embeds @ all_images.t()
    return 0.5 * (
        F.cross_entropy(logits_per_image.float(), targets, label_smoothing=label_smoothing)
        + F.cross_entropy(logits_per_text.float(), targets, label_smoothing=label_smoothing)
    )


def primary_component_matching(image_embeds: torch.Tensor, components: int) -> torch.Tensor:
    """Reconstruct the local batch of image features from its first `components` principal components.

    Computed in fp32 with gradients through the SVD and not re-normalized, as in Long-CLIP. When `components` covers
    the rank of the centred batch (min(batch - 1, dim)) the reconstruction is exactly the input, so it is returned
    as is, which also avoids SVD gradients of degenerate spectra. A failed or non-finite SVD falls back to the input
    with a warning instead of killing the run.
    """
    batch, dim = image_embeds.shape
    if components >= min(batch - 1, dim):
        return image_embeds
    features = image_embeds.float()
    mean = features.mean(dim=0, keepdim=True)
    centred = features - mean
    try:
        _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    except (RuntimeError, torch.linalg.LinAlgError) as error:  # LinAlgError subclasses RuntimeError on old torch
        logger.warning(f"Primary component matching: SVD failed ({error}); using the unreduced image features.")
        return image_embeds
    basis = vh[:components].t()
    reconstructed = centred @ basis @ basis.t() + mean
    if not torch.isfinite(reconstructed).all():
        logger.warning("Primary component matching: non-finite SVD result; using the unreduced image features.")
        return image_embeds
    return reconstructed.to(image_embeds.dtype)


def long_clip_loss(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    logit_scale: torch.Tensor,
    short_text_embeds: torch.Tensor | None = None,
    pca_components: int = 32,
    label_smoothing: float = 0.1,
    short_weight: float = 1.0,
) -> torch.Tensor:
    """Long-CLIP loss: CE(image, long text) + w * CE(PCA(image), short text); plain CLIP loss without short texts.

    All embeddings are L2-normalized; PCA runs on the local batch (per process), as in the original.
    """
    loss = contrastive_loss(image_embeds, text_embeds, logit_scale, label_smoothing)
    if short_text_embeds is None:
        return loss
    reduced = primary_component_matching(image_embeds, pca_components)
    return loss + short_weight * contrastive_loss(reduced, short_text_embeds, logit_scale, label_smoothing)


__all__ = ["contrastive_loss", "gather_with_grad", "long_clip_loss", "primary_component_matching"]
