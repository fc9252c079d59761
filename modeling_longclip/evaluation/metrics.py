"""Exact recall@K and top-K accuracy, computed in row chunks so 31k x 159k similarity matrices never exist at once.

Ties: a query's hit at K is its expected value when tied scores are ordered uniformly at random. With g candidates
scoring strictly above the query's best target, and t other candidates and m targets tied with that best target, the
hit probability is 0 if g >= K, 1 if g + t < K, and otherwise 1 - C(t, r) / C(t + m, r) with r = K - g (the chance
that the first r of the tied items are all non-targets). Without ties this is the usual 0/1 hit; with them the result
does not depend on the order of the data, and a model that scores everything the same gets exactly chance level
(instead of 0 % or 100 %).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch

CHUNK_ELEMENTS = 1 << 24  # similarity entries held at once (64 MB of float32)


def _hit_probability(scores: torch.Tensor, targets: torch.Tensor, ks: Sequence[int]) -> torch.Tensor:
    """[rows, len(ks)] expected hits for score rows and boolean target masks of the same shape."""
    if torch.isnan(scores).any():
        raise ValueError("the similarity scores contain NaN; the embeddings are broken.")
    best = torch.where(targets, scores, torch.full_like(scores, float("-inf"))).amax(dim=1, keepdim=True)
    above = (scores > best).sum(dim=1)  # only non-targets can score above the best target
    tied = scores == best
    tied_targets = (tied & targets).sum(dim=1)
    tied_others = (tied & ~targets).sum(dim=1)
    hits = []
    for k in ks:
        room = k - above  # how many of the tied items fit in the top K
        p = (room > tied_others).double()
        partial = (room > 0) & (room <= tied_others)
        if partial.any():
            t, m, r = tied_others[partial].double(), tied_targets[partial].double(), room[partial]
            all_others_first = torch.ones_like(t)
            for i in range(int(r.max())):
                factor = (t - i) / (t + m - i)
                all_others_first = torch.where(r > i, all_others_first * factor, all_others_first)
            p[partial] = 1.0 - all_others_first
        hits.append(p)
    return torch.stack(hits, dim=1)


def _recall(
    rows: Iterator[tuple[torch.Tensor, torch.Tensor]], n_rows: int, ks: Sequence[int], prefix: str
) -> dict[str, float]:
    if n_rows == 0:
        raise ValueError("no queries to score")
    total = torch.zeros(len(ks), dtype=torch.float64)
    for scores, targets in rows:
        if not targets.any(dim=1).all():
            raise ValueError("every query needs at least one target (an image without captions?)")
        total += _hit_probability(scores, targets, ks).sum(dim=0).cpu()
    return {f"{prefix}{k}": 100.0 * float(value) / n_rows for k, value in zip(ks, total)}


def _chunks(n_rows: int, n_columns: int, chunk_size: int | None) -> Iterator[tuple[int, int]]:
    step = chunk_size or max(1, CHUNK_ELEMENTS // max(n_columns, 1))
    for start in range(0, n_rows, step):
        yield start, min(start + step, n_rows)


def _directions(
    image_rows: Callable[[int, int], torch.Tensor],
    text_rows: Callable[[int, int], torch.Tensor],
    n_images: int,
    text_image: torch.Tensor,
    ks: Sequence[int],
    chunk_size: int | None,
) -> dict[str, dict[str, float]]:
    n_texts = text_image.numel()
    if text_image.numel() and (text_image.min() < 0 or text_image.max() >= n_images):
        raise ValueError(f"text_image holds indices outside 0..{n_images - 1}")
    device = image_rows(0, 1).device
    text_image = text_image.to(device)
    image_ids = torch.arange(n_images, device=device)

    def i2t():
        for start, stop in _chunks(n_images, n_texts, chunk_size):
            yield image_rows(start, stop), text_image.unsqueeze(0) == image_ids[start:stop].unsqueeze(1)

    def t2i():
        for start, stop in _chunks(n_texts, n_images, chunk_size):
            yield text_rows(start, stop), image_ids.unsqueeze(0) == text_image[start:stop].unsqueeze(1)

    return {"image_to_text": _recall(i2t(), n_images, ks, "R@"), "text_to_image": _recall(t2i(), n_texts, ks, "R@")}


def retrieval_recall(
    similarity: torch.Tensor, text_image: Sequence[int] | torch.Tensor, ks: Sequence[int] = (1, 5, 10), chunk_size=None
) -> dict[str, dict[str, float]]:
    """Recall@K in percent from a [n_images, n_texts] similarity matrix; `text_image[j]` is text j's image.

    I2T: an image is a hit at K if any of its captions is among its K best texts (averaged over images).
    T2I: a text is a hit at K if its image is among its K best images (averaged over texts).
    K larger than the number of candidates counts every query as a hit.
    """
    similarity = torch.as_tensor(similarity)
    text_image = torch.as_tensor(text_image, dtype=torch.long)
    if similarity.dim() != 2 or similarity.shape[1] != text_image.numel():
        raise ValueError(f"similarity {tuple(similarity.shape)} does not match {text_image.numel()} texts")
    return _directions(
        lambda a, b: similarity[a:b],
        lambda a, b: similarity[:, a:b].T,
        similarity.shape[0],
        text_image,
        ks,
        chunk_size,
    )


def retrieval_recall_from_embeddings(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    text_image: Sequence[int] | torch.Tensor,
    ks: Sequence[int] = (1, 5, 10),
    chunk_size=None,
) -> dict[str, dict[str, float]]:
    """`retrieval_recall` of image_embeds @ text_embeds.T, built chunk by chunk on the embeddings' device."""
    text_embeds = text_embeds.to(image_embeds.device, image_embeds.dtype)
    text_image = torch.as_tensor(text_image, dtype=torch.long)
    if text_embeds.shape[0] != text_image.numel():
        raise ValueError(f"{text_embeds.shape[0]} text embeddings for {text_image.numel()} text -> image indices")
    return _directions(
        lambda a, b: image_embeds[a:b] @ text_embeds.T,
        lambda a, b: text_embeds[a:b] @ image_embeds.T,
        image_embeds.shape[0],
        text_image,
        ks,
        chunk_size,
    )


def topk_accuracy(
    scores: torch.Tensor, labels: Sequence[int] | torch.Tensor, ks: Sequence[int] = (1, 5), chunk_size=None
) -> dict[str, float]:
    """Top-K accuracy in percent ({"top1": ..., "top5": ...}) from [n_samples, n_classes] scores, same tie rule."""
    scores = torch.as_tensor(scores)
    labels = torch.as_tensor(labels, dtype=torch.long).to(scores.device)
    n, n_classes = scores.shape
    if labels.numel() != n:
        raise ValueError(f"{labels.numel()} labels for {n} score rows")
    classes = torch.arange(n_classes, device=scores.device)
    rows = (
        (scores[a:b], classes.unsqueeze(0) == labels[a:b].unsqueeze(1)) for a, b in _chunks(n, n_classes, chunk_size)
    )
    return _recall(rows, n, ks, "top")


__all__ = ["retrieval_recall", "retrieval_recall_from_embeddings", "topk_accuracy"]
