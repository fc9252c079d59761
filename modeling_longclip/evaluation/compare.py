"""Several models on the same data side by side: one comparison table (Markdown + JSON) and a bar chart (PNG).

`longclip-eval --model A --model B ...` and the demo both go through `comparison` and `write_comparison`, so a user
sees Long-CLIP beside CLIP (or SigLIP) in the same table the demo prints. The chart is drawn with PIL: no plotting
dependency.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw

from ..common.files import atomic_write
from ..common.result_tables import ACCURACY_KS, RETRIEVAL_KS
from .report import long_text_notes, markdown_path

DIRECTIONS = (("image_to_text", "I2T"), ("text_to_image", "T2I"))
ACCURACY_LABELS = {"top1": "Top-1", "top5": "Top-5"}
PALETTE = [(90, 120, 200), (230, 120, 40), (60, 160, 90), (180, 60, 160), (200, 60, 60), (120, 120, 120)]


def _dataset_label(result: dict, unique_benchmarks: bool) -> str:
    benchmark = str(result.get("benchmark", "-"))
    if result.get("dataset"):
        benchmark = f"{benchmark} ({result['dataset']})"
    return benchmark if unique_benchmarks else f"{benchmark} {result.get('protocol', '-')}"


def _metrics(result: dict, ks: Sequence[str] | None) -> list[tuple[str, float | None]]:
    if result.get("task") == "zero-shot classification":
        accuracy = result.get("accuracy", {})
        return [(ACCURACY_LABELS.get(k, k), accuracy.get(k)) for k in (ks or ACCURACY_KS) if k in ACCURACY_KS]
    return [
        (f"{short} {k}", result.get(direction, {}).get(k))
        for direction, short in DIRECTIONS
        for k in (ks or RETRIEVAL_KS)
        if k in RETRIEVAL_KS
    ]


def _model_names(results: list[dict]) -> list[str]:
    """Each result's row name: the folder's name, or its full path where two folders share a name."""
    short = [str(r.get("model_name") or r.get("model", "-")) for r in results]
    full = {}
    for result, name in zip(results, short):
        full.setdefault(name, set()).add(str(result.get("model", name)))
    return [str(r.get("model", n)) if len(full[n]) > 1 else n for r, n in zip(results, short)]


def comparison(results: Sequence[dict], ks: Sequence[str] | None = None) -> dict:
    """One row per model, one column per (dataset, metric): `ks` picks the metrics (default: every recall@K, or
    top-1 / top-5), e.g. ("R@1",) for the headline. The full per-model results travel along under "results"."""
    results = list(results)
    if not results:
        raise ValueError("nothing to compare: no results")
    benchmarks = {}
    for result in results:
        benchmarks.setdefault(str(result.get("benchmark")), set()).add(str(result.get("protocol")))
    unique = all(len(protocols) == 1 for protocols in benchmarks.values())
    names = _model_names(results)
    rows: dict[str, dict] = {}
    columns: list[str] = []
    parts: list[list[str]] = []  # [dataset, metric] of each column, for the chart's two-line labels
    for name, result in zip(names, results):
        dataset = _dataset_label(result, unique)
        row = rows.setdefault(name, {"model": name})
        for metric, value in _metrics(result, ks):
            column = f"{dataset} {metric}"
            if column not in columns:
                columns.append(column)
                parts.append([dataset, metric])
            row[column] = value
    return {
        "task": "comparison",
        "models": list(rows),
        "columns": columns,
        "column_parts": parts,
        "rows": list(rows.values()),
        "results": results,
    }


def comparison_markdown(table: dict) -> str:
    """The comparison as a Markdown table (percent, one decimal), with the notes on texts past a model's limit."""
    header = "| Model | " + " | ".join(table["columns"]) + " |"
    rule = "|---|" + "---:|" * len(table["columns"])
    lines = [header, rule]
    for row in table["rows"]:
        cells = ["-" if row.get(c) is None else f"{row[c]:.1f}" for c in table["columns"]]
        lines.append(f"| {row['model']} | " + " | ".join(cells) + " |")
    notes = ["Recall and accuracy in percent."] + long_text_notes(table.get("results", []))
    return "\n".join(lines) + "\n\n" + "\n".join(notes) + "\n"


def bar_chart(table: dict, title: str | None = None) -> Image.Image:
    """Grouped bars: one group per column, one colour per model, 0-100 %."""
    columns, rows = table["columns"], table["rows"]
    bar, gap, scale, base = 36, 40, 2.4, 90 + 250
    group = bar * len(rows) + gap
    legend = 40 + 16 * len(rows)
    width = max(70 + group * len(columns), 420)
    image = Image.new("RGB", (width, base + 60), "white")
    draw = ImageDraw.Draw(image)
    draw.text((20, 10), title or "Recall / accuracy (%) per model", fill="black")
    for m, row in enumerate(rows):
        colour = PALETTE[m % len(PALETTE)]
        draw.rectangle((20, 30 + 16 * m, 30, 40 + 16 * m), fill=colour)
        draw.text((36, 28 + 16 * m), row["model"], fill="black")
    draw.line((50, base, width - 10, base), fill="black")
    for c, (column, (dataset, metric)) in enumerate(zip(columns, table["column_parts"])):
        x0 = 60 + c * group
        draw.text((x0, base + 8), dataset[: group // 6], fill="black")
        draw.text((x0, base + 22), metric, fill="black")
        for m, row in enumerate(rows):
            value = row.get(column)
            if value is None:
                continue
            x, top = x0 + m * bar, base - scale * max(0.0, min(float(value), 100.0))
            draw.rectangle((x, top, x + bar - 6, base), fill=PALETTE[m % len(PALETTE)])
            draw.text((x, max(top - 12, legend)), f"{value:.0f}", fill="black")
    return image


def chart_path(output: str | Path) -> Path:
    """results.json -> results.png (any other name gets `.png` appended)."""
    output = Path(output)
    return output.with_suffix(".png") if output.suffix.lower() == ".json" else output.with_name(output.name + ".png")


def write_comparison(table: dict, output: str | Path, title: str | None = None) -> tuple[Path, Path, Path]:
    """The comparison as JSON at `output`, Markdown and PNG beside it (results.md, results.png), each atomically."""
    output = Path(output).expanduser()
    output.parent.mkdir(parents=True, exist_ok=True)
    markdown, png = markdown_path(output), chart_path(output)
    text = json.dumps(table, indent=2, ensure_ascii=False) + "\n"
    atomic_write(output, lambda temporary: Path(temporary).write_text(text, encoding="utf-8"))
    table_text = comparison_markdown(table)
    atomic_write(markdown, lambda temporary: Path(temporary).write_text(table_text, encoding="utf-8"))
    buffer = io.BytesIO()
    bar_chart(table, title).save(buffer, format="PNG")
    atomic_write(png, lambda temporary: Path(temporary).write_bytes(buffer.getvalue()))
    return output, markdown, png


__all__ = ["bar_chart", "chart_path", "comparison", "comparison_markdown", "write_comparison"]
