"""Model cards: the templates in model_cards/ (installed as package data), filled per folder, with the metadata the
Hub reads and the measured results of the folder.

- `card_metadata(config)`: the YAML front matter the Hub uses to link and filter models (huggingface_hub's
  `ModelCardData` fields): `base_model` (the original CLIP / EVA02-CLIP / SigLIP2 repository, and the LLM repository
  for LLM2CLIP / ProCLIP) with `base_model_relation`, `datasets` the authors name, `license` per family (the Llama
  licence where the folder holds a Llama-3 text tower), and tags (`sentence-transformers`: every folder written here
  loads there). Base models are named only for the released shapes (conversion/zoo.json); other shapes get none.
- `update_card_results(folder, results)`: the measured `longclip-eval` table in the card, each row marked with its
  date and data; `longclip-eval --update-card` and `longclip-push-to-hub` (a results.json beside the folder) call it.
"""

from __future__ import annotations

import datetime
import importlib.resources
import json
import re
from pathlib import Path

from ..common.files import atomic_write
from ..common.result_tables import accuracy_cells, markdown_row, retrieval_cells

RESULTS_FILE = "longclip_eval_results.json"  # the measured results behind the card's table, kept in the folder
RESULTS_BEGIN = "<!-- longclip-eval results: begin -->"
RESULTS_END = "<!-- longclip-eval results: end -->"
RESULTS_HEADING = "## Measured results"

CC3M, CC12M = "google-research-datasets/conceptual_captions", "google-research-datasets/conceptual_12m"
FAMILIES = {
    # family: (licence of the authors' release, datasets they name that have a Hub id, family tag)
    "longclip": ("apache-2.0", ["Lin-Chen/ShareGPT4V"], "long-clip"),
    "llm2clip": ("apache-2.0", [CC3M, CC12M, "UCSC-VLAA/Recap-DataComp-1B"], "llm2clip"),
    "proclip": ("mit", [CC3M, CC12M], "proclip"),
}
COMMON_TAGS = ["clip", "long-text", "zero-shot-image-classification", "image-text-retrieval", "sentence-transformers"]
# (tower, width, layers, patch, image size) -> the repository of the image tower the authors started from
VISION_BASES = {
    ("clip", 768, 12, 16, 224): "openai/clip-vit-base-patch16",
    ("clip", 768, 12, 32, 224): "openai/clip-vit-base-patch32",
    ("clip", 1024, 24, 14, 224): "openai/clip-vit-large-patch14",
    ("clip", 1024, 24, 14, 336): "openai/clip-vit-large-patch14-336",
    ("eva02", 768, 12, 16, 224): "QuanSun/EVA-CLIP",
    ("eva02", 1024, 24, 14, 224): "QuanSun/EVA-CLIP",
    ("eva02", 1024, 24, 14, 336): "QuanSun/EVA-CLIP",
    ("siglip2", 1152, 27, 14, 224): "google/siglip2-so400m-patch14-224",
}
# (hidden, layers, Llama-3.1 style rope) of a Llama-3 text tower (vocabulary 128256) -> (repository, Hub licence id)
LLM_BASES = {
    (4096, 32, False): ("microsoft/LLM2CLIP-Llama-3-8B-Instruct-CC-Finetuned", "llama3"),
    (2048, 16, True): ("microsoft/LLM2CLIP-Llama-3.2-1B-Instruct-CC-Finetuned", "llama3.2"),
    (4096, 32, True): ("meta-llama/Llama-3.1-8B-Instruct", "llama3.1"),
}
LLAMA3_VOCABULARY = 128256


def model_card_template(family: str) -> str:
    """The template from model_cards/ (installed as package data, or at the top of a checkout)."""
    name = f"{family}.md"
    try:
        return importlib.resources.files("modeling_longclip.model_cards").joinpath(name).read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError):
        return (Path(__file__).resolve().parents[2] / "model_cards" / name).read_text(encoding="utf-8")


def render_model_card(family: str, **fields) -> str:
    """Fill `{{name}}` placeholders; a placeholder left unfilled is a bug, so it raises."""
    text = model_card_template(family)
    for key, value in fields.items():
        text = text.replace("{{" + key + "}}", str(value))
    left = sorted(set(re.findall(r"\{\{(\w+)\}\}", text)))
    if left:
        raise KeyError(f"model card template {family}.md has unfilled placeholders: {left}")
    return text


# --- metadata ------------------------------------------------------------------------------------------------------


def _field(obj, name: str, default=None):
    """A config field, from a config object or from its config.json dict."""
    return obj.get(name, default) if isinstance(obj, dict) else getattr(obj, name, default)


def _family(config) -> str | None:
    model_type = _field(config, "model_type")
    if model_type in ("longclip", "llm2clip", "proclip"):
        return model_type
    positions = _field(_field(config, "text_config", {}), "max_position_embeddings", 77)
    return "longclip" if model_type == "clip" and positions > 77 else None  # a --format clip Long-CLIP folder


def _vision_base(config) -> str | None:
    vision = _field(config, "vision_config", {})
    shape = ("hidden_size", "num_hidden_layers", "patch_size", "image_size")
    return VISION_BASES.get((_field(config, "vision_tower", "clip"), *(_field(vision, k) for k in shape)))


def _llm_base(text) -> tuple[str, str] | None:
    if _field(text, "model_type") != "llama" or _field(text, "vocab_size") != LLAMA3_VOCABULARY:
        return None
    rope = _field(text, "rope_parameters") or _field(text, "rope_scaling") or {}
    llama31_rope = _field(rope, "rope_type", _field(rope, "type")) == "llama3"
    return LLM_BASES.get((_field(text, "hidden_size"), _field(text, "num_hidden_layers"), llama31_rope))


def card_metadata(config) -> dict:
    """Front-matter fields (huggingface_hub `ModelCardData` names) for a folder holding a model of `config` (a config
    object or the folder's config.json as a dict)."""
    family = _family(config)
    metadata = {"library_name": "transformers", "pipeline_tag": "zero-shot-image-classification"}
    if family is None:
        return {**metadata, "tags": list(COMMON_TAGS)}
    licence, datasets, tag = FAMILIES[family]
    bases = [_vision_base(config)]
    if family != "longclip":
        llm = _llm_base(_field(config, "text_config", {}))
        bases.append(llm[0] if llm else None)
        if llm and not _field(config, "text_model_name_or_path"):  # the Llama weights are in this folder
            licence = llm[1]
    metadata.update(license=licence, datasets=list(datasets), tags=[COMMON_TAGS[0], tag, *COMMON_TAGS[1:]])
    known = [base for base in bases if base]
    if known:
        metadata.update(base_model=known, base_model_relation="finetune")
    return metadata


def with_metadata(card: str, config) -> str:
    """`card` with its YAML front matter completed from `card_metadata(config)`: fields the card already sets are kept
    (a card edited by hand keeps its edits), missing ones are filled in, and the tags are the union."""
    from huggingface_hub import ModelCard, ModelCardData

    parsed = ModelCard(card, ignore_metadata_errors=True)
    fields, computed = parsed.data.to_dict(), card_metadata(config)
    tags = list(dict.fromkeys([*(fields.get("tags") or []), *computed.pop("tags")]))
    parsed.data = ModelCardData(
        **{**computed, **{k: v for k, v in fields.items() if v not in (None, [])}, "tags": tags}
    )
    return str(parsed)


# --- measured results ----------------------------------------------------------------------------------------------


def _cells(result: dict) -> list[str]:
    data = Path(str(result.get("data") or "-")).name or "-"
    benchmark = str(result.get("benchmark", "-"))
    if result.get("dataset"):
        benchmark += f" ({result['dataset']})"
    return [benchmark, str(result.get("protocol", "-")), f"`{data}`", str(result.get("date", "-"))]


def _retrieval_row(result: dict) -> str:
    counts = result.get("counts", {})
    cells = _cells(result) + [str(counts.get("images", "-")), str(counts.get("texts", "-"))]
    return markdown_row(cells + retrieval_cells(result))


def _classification_row(result: dict) -> str:
    counts = result.get("counts", {})
    cells = _cells(result) + [str(counts.get("images", "-")), str(counts.get("classes", "-"))]
    return markdown_row(cells + accuracy_cells(result))


def results_section(results: list[dict]) -> str:
    """The card's measured-results block (between markers, so a later update replaces it): one table for retrieval,
    one for zero-shot classification, each row with the date it was measured and the data it was read from."""
    ordered = sorted(results, key=lambda r: (str(r.get("benchmark")), str(r.get("protocol"))))
    retrieval = [r for r in ordered if r.get("task") != "zero-shot classification"]
    classification = [r for r in ordered if r.get("task") == "zero-shot classification"]
    blocks = []
    if retrieval:
        header = "| Benchmark | Protocol | Data | Date | Images | Texts | I2T R@1 | I2T R@5 | I2T R@10 | T2I R@1 | T2I R@5 | T2I R@10 |"
        rule = "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
        blocks.append("\n".join([header, rule, *map(_retrieval_row, retrieval)]))
    if classification:
        header = "| Benchmark | Protocol | Data | Date | Images | Classes | Top-1 | Top-5 |"
        rule = "|---|---|---|---|---:|---:|---:|---:|"
        blocks.append("\n".join([header, rule, *map(_classification_row, classification)]))
    versions = sorted({str(r["modeling_longclip_version"]) for r in results if r.get("modeling_longclip_version")})
    notes = [
        f"Measured on this folder with `longclip-eval` (modeling_longclip {', '.join(versions) or 'version unknown'}); "
        "recall and accuracy in percent; Data is the annotation file or folder each row was read from."
    ]
    for result in ordered:
        counts = result.get("counts", {})
        if counts.get("texts_too_long"):
            notes.append(
                f"{result.get('benchmark')} ({result.get('protocol')}): {counts['texts_too_long']:,} texts exceed the "
                f"model's {counts.get('text_limit')}-token limit."
            )
    body = "\n\n".join(blocks + [" ".join(notes)])
    return f"{RESULTS_BEGIN}\n{RESULTS_HEADING}\n\n{body}\n{RESULTS_END}\n"


def _key(result: dict) -> tuple:
    return (result.get("task"), result.get("benchmark"), result.get("protocol"), result.get("dataset"))


def _with_section(card: str, section: str) -> str:
    if RESULTS_BEGIN in card and RESULTS_END in card:
        start, end = card.index(RESULTS_BEGIN), card.index(RESULTS_END) + len(RESULTS_END)
        return card[:start] + section.rstrip("\n") + card[end:]
    anchor = card.find("\n## Citation")
    if anchor == -1:
        return card.rstrip("\n") + "\n\n" + section
    return card[: anchor + 1] + section + "\n" + card[anchor + 1 :]


def _write(path: Path, text: str) -> None:
    atomic_write(path, lambda temporary: Path(temporary).write_text(text, encoding="utf-8"))


def update_card_results(folder: str | Path, results: list[dict], date: str | None = None) -> Path:
    """Record `results` (longclip-eval result dicts of this folder) in FOLDER/longclip_eval_results.json and rewrite
    the card's measured-results table from it: a new benchmark / protocol adds a row, a re-run replaces its row. A row
    without a date gets `date` (default: today). The front matter is completed from FOLDER/config.json on the way
    (`with_metadata`). Returns the card's path."""
    folder = Path(folder)
    stored_path = folder / RESULTS_FILE
    stored = json.loads(stored_path.read_text(encoding="utf-8")) if stored_path.is_file() else []
    today = date or datetime.date.today().isoformat()
    fresh = [{**r, "date": r.get("date") or today} for r in results]
    keys = {_key(r) for r in fresh}
    merged = [r for r in stored if _key(r) not in keys] + fresh
    card_path = folder / "README.md"
    card = _with_section(card_path.read_text(encoding="utf-8") if card_path.is_file() else "", results_section(merged))
    config_path = folder / "config.json"
    if config_path.is_file():  # the metadata is refreshed with the table (older cards lack base_model, datasets, ...)
        card = with_metadata(card, json.loads(config_path.read_text(encoding="utf-8")))
    _write(stored_path, json.dumps(merged, indent=2, ensure_ascii=False) + "\n")
    _write(card_path, card)
    return card_path


def results_for_folder(data, folder: str | Path, base: str | Path | None = None) -> list[dict]:
    """The results of `folder` in a longclip-eval results.json (one result, or a comparison with `results`): matched by
    the evaluated path (as given, or relative to `base`), else by the folder's name when that is unambiguous."""
    results = data.get("results", [data]) if isinstance(data, dict) else list(data)
    results = [r for r in results if isinstance(r, dict) and ("image_to_text" in r or "accuracy" in r)]
    folder = Path(folder).resolve()
    candidates = [Path(str(r.get("model", ""))) for r in results]
    exact = [
        r
        for r, path in zip(results, candidates)
        if path.resolve() == folder or (base is not None and (Path(base) / path).resolve() == folder)
    ]
    if exact:
        return exact
    named = [r for r in results if r.get("model_name") == folder.name]
    return named if len({str(r.get("model")) for r in named}) == 1 else []


__all__ = [
    "RESULTS_FILE",
    "card_metadata",
    "model_card_template",
    "render_model_card",
    "results_for_folder",
    "results_section",
    "update_card_results",
    "with_metadata",
]
