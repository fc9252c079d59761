"""Caption sources for the feature cache: (key, text) pairs from JSON lines / JSON / CSV / TSV / Parquet tables or
datasets saved with `save_to_disk`."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from ..common.caption_data import TABLE_BUILDERS, read_table_file, short_caption_of
from ..common.errors import DataError
from .store import caption_key


def load_caption_table(path: str | Path):
    """A `datasets.Dataset` from JSON lines / JSON / CSV / TSV / Parquet, or a folder written by `save_to_disk`."""
    import datasets

    path = Path(path).expanduser()
    if path.is_dir():
        try:
            loaded = datasets.load_from_disk(str(path))
        except Exception as error:  # noqa: BLE001 - any unreadable folder: one clear message
            raise DataError(
                f"{path}: not a dataset saved with save_to_disk ({type(error).__name__}: {error})."
            ) from None
        if isinstance(loaded, datasets.DatasetDict):
            splits = list(loaded)
            if "train" in loaded:
                loaded = loaded["train"]
            elif len(splits) == 1:
                loaded = loaded[splits[0]]
            else:
                raise DataError(f"{path}: a DatasetDict with splits {splits}; save the split to encode on its own.")
        return loaded
    if not path.exists():
        raise DataError(f"{path}: no such caption file or dataset folder.")
    if path.suffix.lower() not in TABLE_BUILDERS:
        raise DataError(f"{path}: expected {', '.join(TABLE_BUILDERS)} or a folder saved with Dataset.save_to_disk.")
    return read_table_file(path)


class CaptionSource:
    """(key, text) pairs of a caption table, in row order; `len()` is the exact number of pairs (one counting pass).

    Per row, every caption column in turn, and with `derive_short` the short caption of each right after it. Keys:
    `caption_key(text)`, or with an id column `<id>` for the first caption column, `<id>:<column>` for the others,
    and `:short` appended for a derived short caption (Long-CLIP's, from the stripped caption, as the training collators
    derive it). Texts are yielded exactly as stored: empty and whitespace-only captions too, since llm2vec encodes
    them (the template alone, its end-of-turn token pooled); only missing (null) captions are left out.
    """

    def __init__(
        self, dataset, caption_columns: Sequence[str], id_column: str | None, derive_short: bool, source: str
    ):
        self.dataset, self.caption_columns, self.id_column = dataset, list(caption_columns), id_column
        self.derive_short, self.source = derive_short, source
        self._length: int | None = None

    def __iter__(self) -> Iterator[tuple[str, str]]:
        columns = list(self.caption_columns)
        if self.id_column and self.id_column not in columns:
            columns.append(self.id_column)
        row = 0
        for batch in self.dataset.select_columns(columns).iter(batch_size=1000):
            for i in range(len(batch[columns[0]])):
                row_id = None
                if self.id_column:
                    row_id = batch[self.id_column][i]
                    if row_id is None or (isinstance(row_id, str) and not row_id.strip()):
                        raise DataError(f"{self.source}: row {row} has no `{self.id_column}` id.")
                    row_id = str(row_id)
                for position, column in enumerate(self.caption_columns):
                    text = batch[column][i]
                    if text is None:
                        continue
                    if not isinstance(text, str):
                        raise DataError(
                            f"{self.source}: row {row}, column `{column}` holds {type(text).__name__}, not text."
                        )
                    key = None if row_id is None else (row_id if position == 0 else f"{row_id}:{column}")
                    yield (key or caption_key(text)), text
                    if self.derive_short:
                        short = short_caption_of(text.strip())
                        yield (f"{key}:short" if key else caption_key(short)), short
                row += 1

    def __len__(self) -> int:
        if self._length is None:
            self._length = sum(1 for _ in self)
        return self._length


def iter_captions(
    path: str | Path,
    caption_columns: Sequence[str] = ("caption",),
    id_column: str | None = None,
    derive_short: bool = False,
) -> CaptionSource:
    """(key, text) pairs of a caption file or saved dataset; see `CaptionSource` for the order and the keys."""
    if isinstance(caption_columns, str):
        caption_columns = [caption_columns]
    caption_columns = list(dict.fromkeys(caption_columns))
    if not caption_columns:
        raise DataError("name at least one caption column.")
    dataset = load_caption_table(path)
    names = list(dataset.column_names or [])
    for column, option in [*((c, "--caption-column") for c in caption_columns), (id_column, "--id-column")]:
        if column is not None and column not in names:
            raise DataError(f"{path}: no column `{column}` (columns: {names}); choose one with {option}.")
    return CaptionSource(dataset, caption_columns, id_column, derive_short, str(path))


__all__ = ["CaptionSource", "iter_captions", "load_caption_table"]
