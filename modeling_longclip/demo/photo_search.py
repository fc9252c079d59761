"""The demo's last step: what 248 tokens buy in the product itself, long-text photo search.

Each model folder indexes the held-out scenes through `PhotoIndex.build` (what `longclip-search index` runs) and is
queried with every held-out long caption through `PhotoIndex.search` (what `longclip-search query` runs): the top 3 of
one query are printed for both models, and how often the described scene comes first. A scene's group-mates share
everything its caption says before token 77, so a model that reads 77 tokens finds the right group but not the scene.
"""

from __future__ import annotations

import json
import shlex
import warnings
from pathlib import Path

from ..search import LongQueryWarning, PhotoIndex


def held_out(test_file: Path) -> tuple[Path, list[dict]]:
    """(the folder of the held-out scene images (scenes.write_split puts a split's images in one folder), their rows
    with `image` relative to that folder)."""
    rows = [json.loads(line) for line in test_file.read_text().splitlines()]
    folder = Path(rows[0]["image"]).parent
    return test_file.parent / folder, [
        {**row, "image": Path(row["image"]).relative_to(folder).as_posix()} for row in rows
    ]


def search_scenes(folders: dict[str, Path], test_file: Path, output_dir: Path, per_group: int, query_row: int = 0):
    """Index the held-out scenes with each model folder and query them with their long captions (see the module
    docstring); `per_group` consecutive scenes form a group. Written to output_dir/search.json and returned:
    {"query": {"text", "image", "group_mates", "file"}, "models": {name: {"index", "tokens", "text_limit", "windows",
    "top3", "first", "total"}}}."""
    photos, rows = held_out(test_file)
    output_dir.mkdir(parents=True, exist_ok=True)
    query = rows[query_row]
    start = query_row - query_row % per_group
    mates = [row["image"] for row in rows[start : start + per_group] if row is not query]
    query_file = output_dir / "query.txt"
    query_file.write_text(query["caption"] + "\n")
    result = {
        "query": {"text": query["caption"], "image": query["image"], "group_mates": mates, "file": str(query_file)},
        "models": {},
    }
    for name, folder in folders.items():
        index_dir = output_dir / f"{folder.name}.index"
        with PhotoIndex.build(photos, index_dir, folder, device="cpu", num_workers=0, progress=False) as index:
            with warnings.catch_warnings():  # the 77-token model cuts every long caption: said once below instead
                warnings.simplefilter("ignore", LongQueryWarning)
                top3 = index.search(text=query["caption"], k=3)
                first = sum(index.search(text=row["caption"], k=1)[0].path == row["image"] for row in rows)
            result["models"][name] = {
                "index": str(index_dir),
                "tokens": index.count_tokens(query["caption"]),
                "text_limit": index.text_limit,
                "windows": index.reads_long_text(),
                "top3": [{"path": hit.path, "score": hit.score} for hit in top3],
                "first": first,
                "total": len(rows),
            }
    (output_dir / "search.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def search_report(result: dict) -> str:
    """The lines the demo prints for `search_scenes`' result."""
    query = result["query"]
    text = query["text"]
    shown = text if len(text) <= 150 else f"{text[:70]} ... {text[-70:]}"
    models = result["models"]
    tokens = next(iter(models.values()))["tokens"]
    lines = [f'   query: "{shown}" ({tokens} tokens; the scene described: {query["image"]})']
    for name, found in models.items():
        limit = found["text_limit"]
        reads = (
            "all of it"
            if tokens <= limit
            else ("all of it, in windows" if found["windows"] else f"the first {limit} tokens")
        )
        lines.append(f"   {name} (reads {reads}):")
        for rank, hit in enumerate(found["top3"], 1):
            mark = (
                "<- the scene described"
                if hit["path"] == query["image"]
                else "   same first 77 tokens, another bottom row"
                if hit["path"] in query["group_mates"]
                else ""
            )
            lines.append(f"     {rank}. {hit['score']:.4f}  {hit['path']}  {mark}".rstrip())
    rates = "; ".join(
        f"{name} {found['first']} of {found['total']} ({100 * found['first'] / found['total']:.0f} %)"
        for name, found in models.items()
    )
    lines.append(f"   the described scene first, over all {found['total']} held-out long captions: {rates}")
    last = next(reversed(models.values()))
    lines.append(
        f"   the same by hand: longclip-search query {shlex.quote(last['index'])} - -k 3 < {shlex.quote(query['file'])}"
    )
    lines.append(f'   browse it: longclip-search serve {shlex.quote(last["index"])}   (pip install -e ".[app]")')
    return "\n".join(lines)


__all__ = ["held_out", "search_report", "search_scenes"]
