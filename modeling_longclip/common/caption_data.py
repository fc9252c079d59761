"""Image-caption training data through `datasets`, in every layout users have.

Every loader returns a dataset whose rows hold an undecoded image reference (`image`: a path string, or a dict with
`path` / `bytes`) and the caption texts (`caption`, optional `short_caption`). Images are decoded later, in the
DataLoader workers, by the collator, which also skips and counts broken rows.
"""

from __future__ import annotations

import csv
import itertools
import json
import re
from pathlib import Path

import datasets

from .errors import DataError

SHAREGPT4V_TEST_RECORDS = 1000
DATASET_FORMATS = ("auto", "sharegpt4v", "imagefolder")


def short_caption_of(caption: str) -> str:
    """Long-CLIP's short caption: the text before the first ". " of the long caption."""
    return caption.split(". ", 1)[0]


def expand_braces(pattern: str) -> list[str]:
    """Expand webdataset shard patterns such as `data/{00000..00099}.tar` (zero padding kept) and `{a,b}`."""
    match = re.search(r"\{([^{}]*)\}", pattern)
    if not match:
        return [pattern]
    body, head, tail = match.group(1), pattern[: match.start()], pattern[match.end() :]
    numeric = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if numeric:
        first, last = numeric.groups()
        width = len(first) if first.startswith("0") else 0
        options = [str(i).zfill(width) for i in range(int(first), int(last) + 1)]
    else:
        options = body.split(",")
    return list(itertools.chain.from_iterable(expand_braces(head + option + tail) for option in options))


def _rename(dataset, column: str, target: str, source: str):
    names = dataset.column_names or []
    if column not in names:
        raise DataError(f"{source}: no column `{column}` (columns: {names}); set it with --{target}_column.")
    return dataset.rename_column(column, target) if column != target else dataset


NO_ROWS = "no rows (the file holds a header or an empty list only)."
TABLE_BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".tsv": "csv", ".parquet": "parquet"}


def is_blank(path: Path, chunk: int = 1 << 16) -> bool:
    """Whether a text file holds nothing but whitespace (read until the first other byte, not the whole file)."""
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            if block.strip():
                return False
    return True


def read_table_file(path: Path):
    """One `datasets.Dataset` from a JSON lines / JSON / CSV / TSV / Parquet file (other suffixes read as JSON)."""
    builder = TABLE_BUILDERS.get(path.suffix.lower(), "json")
    if builder != "parquet" and is_blank(path):
        raise DataError(f"{path}: the file is empty (no rows to read).")
    # Plain TSV has no quoting: a caption may start with a quote character.
    kwargs = {"delimiter": "\t", "quoting": csv.QUOTE_NONE} if path.suffix.lower() == ".tsv" else {}
    try:
        dataset = datasets.load_dataset(builder, data_files=str(path), split="train", **kwargs)
    except Exception as error:  # noqa: BLE001 - any parse failure: one clear message
        located = json_error_location(path) if builder == "json" else None
        if located:
            raise DataError(f"{path}:{located}") from None
        if "corresponds to no data" in str(error):  # how `datasets` reports a file that parses to 0 rows
            raise DataError(f"{path}: {NO_ROWS}") from None
        raise DataError(f"{path}: cannot be read as {builder.upper()} ({type(error).__name__}: {error}).") from None
    if len(dataset) == 0:
        raise DataError(f"{path}: {NO_ROWS}")
    return dataset


def json_error_location(path: Path) -> str | None:
    """`LINE: ...` for the first malformed line of a JSON lines file (or the error position in one JSON document);
    None when the text parses (the failure lies elsewhere, e.g. in the column types)."""
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        json.loads(text)
        return None
    except json.JSONDecodeError as document_error:
        lines = text.splitlines()
        first = next((line.strip() for line in lines if line.strip()), "")
        if not (_parses(first) or (first.startswith("{") and first != "{")):  # one (pretty-printed) document
            return _json_position(document_error, "not valid JSON")
    for number, line in enumerate(lines, start=1):
        if line.strip():
            try:
                json.loads(line)
            except json.JSONDecodeError as error:
                return _json_position(error, "not valid JSON lines", number)
    return None


def _parses(text: str) -> bool:
    try:
        json.loads(text)
        return True
    except json.JSONDecodeError:
        return False


def _json_position(error: json.JSONDecodeError, what: str, line: int | None = None) -> str:
    return f"{line or error.lineno}: {what} ({error.msg} at column {error.colno})."


def load_caption_file(path: str | Path, image_column="image", caption_column="caption", short_caption_column=None):
    """JSON lines / JSON / CSV with an image path column and a caption column (and optionally a short caption).

    `image_column=None` reads text-only data (caption distillation and caption-contrastive stages).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file.")
    dataset = read_table_file(path)
    if image_column is not None:
        dataset = _rename(dataset, image_column, "image", str(path))
    dataset = _rename(dataset, caption_column, "caption", str(path))
    if short_caption_column:
        dataset = _rename(dataset, short_caption_column, "short_caption", str(path))
    keep = [c for c in ("image", "caption", "short_caption") if c in dataset.column_names]
    return dataset.select_columns(keep)


def sharegpt4v_caption(record: dict, index: int, source: str) -> str:
    try:
        caption = record["conversations"][1]["value"]
    except (KeyError, IndexError, TypeError):
        caption = None
    if not isinstance(caption, str):
        raise DataError(f"{source}: record {index} has no `conversations[1].value` caption.")
    return caption.replace("\n", " ")


def load_sharegpt4v(path: str | Path, split: str = "train"):
    """The authors' share-captioner json: records [0:1000] are the held-out test set, training uses the rest."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file.")
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise DataError(f"{path}:{_json_position(error, 'not valid JSON')}") from None
    if not isinstance(records, list):
        raise DataError(f"{path}: expected a JSON list of ShareGPT4V records, got {type(records).__name__}.")
    chosen = (
        range(SHAREGPT4V_TEST_RECORDS, len(records))
        if split == "train"
        else range(min(SHAREGPT4V_TEST_RECORDS, len(records)))
    )
    rows = {"image": [], "caption": []}
    for index in chosen:
        record = records[index]
        if not isinstance(record, dict) or "image" not in record:
            raise DataError(f"{path}: record {index} has no `image` field.")
        rows["image"].append(record["image"])
        rows["caption"].append(sharegpt4v_caption(record, index, str(path)))
    return datasets.Dataset.from_dict(rows)


def load_imagefolder(data_dir: str | Path, caption_column="caption", short_caption_column=None):
    """`imagefolder` with a metadata.jsonl (`file_name` + caption columns); images stay undecoded."""
    data_dir = Path(data_dir)
    if not (data_dir / "metadata.jsonl").is_file() and not (data_dir / "metadata.csv").is_file():
        raise DataError(
            f"{data_dir}: an imagefolder needs metadata.jsonl (or metadata.csv) with file_name and captions."
        )
    dataset = datasets.load_dataset("imagefolder", data_dir=str(data_dir), split="train")
    dataset = dataset.cast_column("image", datasets.Image(decode=False))
    dataset = _rename(dataset, caption_column, "caption", str(data_dir))
    if short_caption_column:
        dataset = _rename(dataset, short_caption_column, "short_caption", str(data_dir))
    keep = [c for c in ("image", "caption", "short_caption") if c in dataset.column_names]
    return dataset.select_columns(keep)


def load_webdataset(shards: str, caption_key: str = "txt", image_keys=("jpg", "jpeg", "png", "webp")):
    """Webdataset tar shards, streamed: each sample's image bytes and its caption (`.txt`, or `caption` in `.json`)."""
    files = expand_braces(shards)
    missing = [f for f in files if not Path(f).is_file()]
    if missing:
        raise DataError(f"{len(missing)} of {len(files)} shards do not exist, first: {missing[0]}")
    stream = datasets.load_dataset("webdataset", data_files={"train": files}, split="train", streaming=True)
    features = dict(stream.features or {})
    image_key = next((k for k in image_keys if k in features), None)
    if image_key is None:
        raise DataError(
            f"{files[0]}: no image entry ({', '.join(image_keys)}) in the samples; keys: {sorted(features)}"
        )
    if caption_key not in features and "json" not in features:
        raise DataError(f"{files[0]}: no `.{caption_key}` caption entry in the samples; keys: {sorted(features)}")
    stream = stream.cast_column(image_key, datasets.Image(decode=False))

    def to_row(sample):
        caption = sample.get(caption_key)
        if caption is None and isinstance(sample.get("json"), dict):
            caption = sample["json"].get("caption")
        return {"image": sample[image_key], "caption": caption or ""}

    return stream.map(to_row, remove_columns=list(features))
