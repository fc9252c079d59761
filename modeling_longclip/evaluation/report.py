"""Results: one dict per run, written as results.json plus a Markdown table beside it, ready to paste into a card."""

from __future__ import annotations

import json
from pathlib import Path

from ..common.files import atomic_write
from ..common.result_tables import accuracy_cells, markdown_row, retrieval_cells


def base_result(task: str, model, model_name: str | None, dataset, settings: dict) -> dict:
    """The fields every result shares: what was evaluated, on what, how, and with which package version."""
    from .. import __version__

    name = model_name or getattr(model, "name_or_path", None) or type(model).__name__
    device = getattr(model, "device", None)
    settings = {"device": getattr(device, "type", device), "dtype": str(getattr(model, "dtype", None)), **settings}
    return {
        "task": task,
        "model": str(name),
        "model_name": Path(str(name)).name or str(name),
        "model_type": getattr(getattr(model, "config", None), "model_type", None),
        "benchmark": dataset.name,
        "protocol": dataset.protocol,
        "data": dataset.source,
        "settings": settings,
        "modeling_longclip_version": __version__,
    }


def _count(value) -> str:
    return f"{value:,}" if isinstance(value, int) else "-"


def _retrieval_row(result: dict) -> str:
    counts = result.get("counts", {})
    cells = [
        result.get("model_name") or result.get("model", "-"),
        result.get("benchmark", "-"),
        result.get("protocol", "-"),
        _count(counts.get("images")),
        _count(counts.get("texts")),
        *retrieval_cells(result),
    ]
    return markdown_row(cells)


def _classification_row(result: dict) -> str:
    counts = result.get("counts", {})
    benchmark = result.get("benchmark", "-")
    if result.get("dataset"):
        benchmark = f"{benchmark} ({result['dataset']})"
    cells = [
        result.get("model_name") or result.get("model", "-"),
        benchmark,
        result.get("protocol", "-"),
        _count(counts.get("images")),
        _count(counts.get("classes")),
        *accuracy_cells(result),
    ]
    return markdown_row(cells)


def long_text_notes(results: list[dict]) -> list[str]:
    """One line per result with texts past the model's limit: how many, and whether truncated or windowed (each line
    names the model when the results come from several)."""
    notes = []
    several = len({r.get("model") for r in results}) > 1
    for result in results:
        counts = result.get("counts", {})
        too_long, limit = counts.get("texts_too_long"), counts.get("text_limit")
        if too_long:
            mode = result.get("settings", {}).get("text_kwargs", {}).get("long_text", "truncate")
            handled = "encoded in windows" if mode == "window" else "truncated"
            model = f"{result.get('model_name') or result.get('model')}, " if several else ""
            where = f"{model}{result.get('benchmark')} ({result.get('protocol')})"
            notes.append(
                f"{where}: {too_long:,} of {counts.get('texts', 0):,} "
                f"texts exceed the model's {limit}-token limit and were {handled}."
            )
    return notes


def markdown_table(results: dict | list[dict]) -> str:
    """Markdown table(s) for one or several results (retrieval and classification get their own tables)."""
    results = [results] if isinstance(results, dict) else list(results)
    retrieval = [r for r in results if r.get("task") == "retrieval"]
    classification = [r for r in results if r.get("task") == "zero-shot classification"]
    blocks = []
    if retrieval:
        header = "| Model | Benchmark | Protocol | Images | Texts | I2T R@1 | I2T R@5 | I2T R@10 | T2I R@1 | T2I R@5 | T2I R@10 |"
        rule = "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
        blocks.append("\n".join([header, rule, *map(_retrieval_row, retrieval)]))
    if classification:
        header = "| Model | Benchmark | Protocol | Images | Classes | Top-1 | Top-5 |"
        rule = "|---|---|---|---:|---:|---:|---:|"
        blocks.append("\n".join([header, rule, *map(_classification_row, classification)]))
    notes = ["Recall and accuracy in percent."] + long_text_notes(results)
    return "\n\n".join(blocks + ["\n".join(notes)]) + "\n"


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda temporary: Path(temporary).write_text(text, encoding="utf-8"))


def markdown_path(output: str | Path) -> Path:
    """results.json -> results.md (any other name gets `.md` appended)."""
    output = Path(output)
    return output.with_suffix(".md") if output.suffix.lower() == ".json" else output.with_name(output.name + ".md")


def write_results(results: dict, output: str | Path) -> tuple[Path, Path]:
    """Write results.json and the Markdown table beside it, each atomically (temporary file, then rename)."""
    output = Path(output).expanduser()
    markdown = markdown_path(output)
    _write_text(output, json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    _write_text(markdown, markdown_table(results))
    return output, markdown


__all__ = ["base_result", "long_text_notes", "markdown_path", "markdown_table", "write_results"]
