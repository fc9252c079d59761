"""The Long-CLIP loss against the written recipe (REFERENCE 1.5), PCA robustness, and 2-process equivalence."""

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_longclip_config
from torchrun import run_torchrun
from workers.longclip_two_process_loss import global_batch

from modeling_longclip import LongCLIPModel
from modeling_longclip.contrastive import contrastive_loss, long_clip_loss, primary_component_matching

TESTS = Path(__file__).resolve().parent


def smoothed_ce(logits: np.ndarray, targets: np.ndarray, eps: float) -> float:
    """Cross-entropy with label smoothing, written out: (1 - eps) * NLL(target) + eps * mean over classes of NLL."""
    logp = logits - logits.max(1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(1, keepdims=True))
    nll = -logp[np.arange(len(targets)), targets]
    return float(((1 - eps) * nll + eps * (-logp.mean(1))).mean())


def numpy_pca(f: np.ndarray, k: int) -> np.ndarray:
    mu = f.mean(0, keepdims=True)
    _, _, vt = np.linalg.svd(f - mu, full_matrices=False)
    v = vt[:k].T
    return (f - mu) @ v @ v.T + mu


def test_long_clip_loss_matches_the_recipe_by_hand():
    rng = np.random.default_rng(0)
    b, d, k, s, eps = 40, 64, 8, 100.0, 0.1
    f, tl, ts = (rng.normal(size=(b, d)) for _ in range(3))
    f, tl, ts = (x / np.linalg.norm(x, axis=1, keepdims=True) for x in (f, tl, ts))
    fs = numpy_pca(f, k)
    y = np.arange(b)
    expected = 0.5 * (smoothed_ce(s * f @ tl.T, y, eps) + smoothed_ce(s * tl @ f.T, y, eps))
    expected += 0.5 * (smoothed_ce(s * fs @ ts.T, y, eps) + smoothed_ce(s * ts @ fs.T, y, eps))
    t = lambda x: torch.tensor(x, dtype=torch.float32)  # noqa: E731
    ours = long_clip_loss(t(f), t(tl), torch.tensor(s), short_text_embeds=t(ts), pca_components=k, label_smoothing=eps)
    assert ours.item() == pytest.approx(expected, rel=1e-5)
    plain = contrastive_loss(t(f), t(tl), torch.tensor(s))
    assert plain.item() == pytest.approx(
        0.5 * (smoothed_ce(s * f @ tl.T, y, 0) + smoothed_ce(s * tl @ f.T, y, 0)), rel=1e-5
    )


def test_pca_is_fp32_not_renormalized_and_differentiable():
    torch.manual_seed(0)
    f = F.normalize(torch.randn(40, 64, dtype=torch.bfloat16), dim=-1).requires_grad_()
    fs = primary_component_matching(f, 8)
    assert fs.dtype == torch.bfloat16
    assert not torch.allclose(fs.float().norm(dim=-1), torch.ones(40), atol=1e-2)  # not re-normalized
    expected = numpy_pca(f.detach().float().numpy().astype(np.float64), 8)
    assert np.abs(fs.detach().float().numpy() - expected).max() < 1e-2  # bf16 output of an fp32 computation
    fs.float().pow(2).sum().backward()
    assert torch.isfinite(f.grad).all() and f.grad.abs().sum() > 0


def test_pca_is_the_identity_when_components_cover_the_batch():
    f = torch.randn(33, 64)
    assert primary_component_matching(f, 32) is f  # rank of the centred batch is 32
    assert primary_component_matching(f[:5], 32) is not None


def test_svd_failure_falls_back_and_logs(monkeypatch, caplog):
    def failing_svd(*args, **kwargs):
        raise torch.linalg.LinAlgError("The algorithm failed to converge")

    monkeypatch.setattr(torch.linalg, "svd", failing_svd)
    f = torch.randn(40, 64)
    with caplog.at_level(logging.WARNING):
        out = primary_component_matching(f, 8)
    assert out is f
    assert "SVD failed" in caplog.text


def test_forward_returns_long_clip_loss_with_short_captions_and_clip_loss_without():
    torch.manual_seed(0)
    model = LongCLIPModel(tiny_longclip_config(pca_components=4))
    ids, short, pixels = global_batch(8)
    with torch.no_grad():
        out = model(input_ids=ids, pixel_values=pixels, short_input_ids=short, return_loss=True)
        plain = model(input_ids=ids, pixel_values=pixels, return_loss=True)
        short_embeds = F.normalize(model.get_text_features(input_ids=short).pooler_output, dim=-1)
    scale = model.logit_scale.exp()
    expected = long_clip_loss(
        out.image_embeds, out.text_embeds, scale, short_embeds, pca_components=4, label_smoothing=0.1
    )
    torch.testing.assert_close(out.loss, expected)
    torch.testing.assert_close(plain.loss, contrastive_loss(out.image_embeds, out.text_embeds, scale, 0.0))
    assert out.loss > plain.loss  # the short-caption term is added


def test_two_processes_equal_one_process_on_the_same_split(tmp_path):
    batch = 16
    run = run_torchrun(
        [TESTS / "workers" / "longclip_two_process_loss.py", tmp_path / "out.pt", TESTS, batch],
        env={"PYTHONPATH": str(TESTS)},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    distributed = torch.load(tmp_path / "out.pt")

    torch.manual_seed(0)
    model = LongCLIPModel(tiny_longclip_config(pca_components=4))
    ids, short, pixels = global_batch(batch)
    image = F.normalize(model.get_image_features(pixel_values=pixels).pooler_output, dim=-1)
    text = F.normalize(model.get_text_features(input_ids=ids).pooler_output, dim=-1)
    short_text = F.normalize(model.get_text_features(input_ids=short).pooler_output, dim=-1)
    scale = model.logit_scale.exp()
    half = batch // 2
    losses = []
    for rank in range(2):  # local rows against global columns, PCA on the local half, labels offset by rank
        rows = slice(rank * half, (rank + 1) * half)
        targets = torch.arange(half) + rank * half
        reduced = primary_component_matching(image[rows], 4)
        reduced_all = torch.cat([primary_component_matching(image[r * half : (r + 1) * half], 4) for r in range(2)])
        loss = 0.5 * (
            F.cross_entropy(scale * image[rows] @ text.t(), targets, label_smoothing=0.1)
            + F.cross_entropy(scale * text[rows] @ image.t(), targets, label_smoothing=0.1)
        )
        loss = loss + 0.5 * (
            F.cross_entropy(scale * reduced @ short_text.t(), targets, label_smoothing=0.1)
            + F.cross_entropy(scale * short_text[rows] @ reduced_all.t(), targets, label_smoothing=0.1)
        )
        losses.append(loss)
    torch.testing.assert_close(distributed["losses"], torch.stack(losses).detach(), rtol=1e-5, atol=1e-6)
    torch.stack(losses).mean().backward()
    assert distributed["grads"].keys() == {n for n, p in model.named_parameters() if p.grad is not None}
    for name, param in model.named_parameters():
        if param.grad is not None:
            scale = param.grad.abs().max().item()  # fp32 sums in another order: compare against the tensor's scale
            assert (distributed["grads"][name] - param.grad).abs().max().item() <= 1e-5 * scale + 1e-6, name
