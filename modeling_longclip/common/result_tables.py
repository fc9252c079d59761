"""The metric cells of a `longclip-eval` result, written one way wherever a table shows them: the evaluation report
(evaluation/report.py) and the measured-results block of a model card (export/cards.py) each add their own leading
columns (model, or data and date) and counts, then these."""

from __future__ import annotations

RETRIEVAL_KS = ("R@1", "R@5", "R@10")
ACCURACY_KS = ("top1", "top5")


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def retrieval_cells(result: dict) -> list[str]:
    """I2T R@1, R@5, R@10, then T2I R@1, R@5, R@10 (percent, one decimal; "-" when missing)."""
    return [
        percent(result.get(direction, {}).get(k))
        for direction in ("image_to_text", "text_to_image")
        for k in RETRIEVAL_KS
    ]


def accuracy_cells(result: dict) -> list[str]:
    """Top-1, Top-5 (percent, one decimal; "-" when missing)."""
    return [percent(result.get("accuracy", {}).get(k)) for k in ACCURACY_KS]


def markdown_row(cells) -> str:
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


__all__ = ["ACCURACY_KS", "RETRIEVAL_KS", "accuracy_cells", "markdown_row", "percent", "retrieval_cells"]
