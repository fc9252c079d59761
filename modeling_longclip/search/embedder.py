"""Photos to embeddings: decoding and the model's own image processor in DataLoader workers, the model in this process.

The work is split so the model never waits on a single core: each worker opens a photo (`photos.load_photo`) and
runs the processor on it; the main process stacks what the workers send and runs `evaluation.embed.image_features`
(the same normalized `get_image_features` that `embed_images` and `encode_image` compute) on `--device` in
`--dtype`. Chunks are cut from the stream every `chunk_size` photos (a multiple of the batch size), so the
embeddings of a photo do not depend on where a run was interrupted. The time spent in each stage is counted
(`Timings`): decoding and preprocessing in worker CPU-seconds, and, in the main process, the time it waited for
the workers and the time the model took.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..evaluation.embed import image_features
from .photos import UNREADABLE, load_photo
from .storage import Record


@dataclass
class Timings:
    """Seconds per stage (see the module docstring)."""

    decode: float = 0.0
    preprocess: float = 0.0
    wait: float = 0.0
    model: float = 0.0
    write: float = 0.0

    def add(self, other: Timings) -> None:
        for name in vars(self):
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class Chunk:
    """A chunk's embedded photos (embeddings in the same order) and the ones that could not be decoded."""

    records: list[Record] = field(default_factory=list)
    embeddings: list[torch.Tensor] = field(default_factory=list)
    failures: list[tuple[Record, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.records) + len(self.failures)

    def stacked(self) -> torch.Tensor:
        return torch.cat(self.embeddings).to(torch.float16) if self.embeddings else torch.zeros(0)


class PhotoDataset(Dataset):
    """Item i: (i, the processor's tensors for photo i without the batch dimension or None, the error, decode s,
    preprocess s)."""

    def __init__(self, root: Path, records: Sequence[Record], processor):
        self.root, self.records, self.processor = root, list(records), processor

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int):
        start = time.perf_counter()
        try:
            image = load_photo(self.root / self.records[index].path)
        except UNREADABLE as error:
            return index, None, describe_error(error), time.perf_counter() - start, 0.0
        except Exception as error:  # a file that trips the decoder in another way is still the file's fault
            return index, None, f"{type(error).__name__}: {describe_error(error)}", time.perf_counter() - start, 0.0
        decoded = time.perf_counter()
        try:
            inputs = self.processor(images=[image], return_tensors="pt")
        except (ValueError, TypeError, OSError) as error:  # e.g. a 1-pixel image the processor cannot crop
            return index, None, describe_error(error), decoded - start, time.perf_counter() - decoded
        tensors = {key: value[0] for key, value in inputs.items() if isinstance(value, torch.Tensor)}
        return index, tensors, None, decoded - start, time.perf_counter() - decoded


def describe_error(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def collate(items):
    good = [item for item in items if item[1] is not None]
    batch = {key: torch.stack([item[1][key] for item in good]) for key in good[0][1]} if good else {}
    failed = [(item[0], item[2]) for item in items if item[1] is None]
    return [item[0] for item in good], batch, failed, sum(i[3] for i in items), sum(i[4] for i in items)


def _worker_init(_):
    torch.set_num_threads(1)  # each worker decodes one photo at a time; the cores belong to the model and the others


def embed_chunks(
    model,
    processor,
    root: Path,
    records: Sequence[Record],
    batch_size: int,
    num_workers: int,
    chunk_size: int,
    timings: Timings,
    progress: Callable[[int], None] | None = None,
) -> Iterator[Chunk]:
    """Yield the chunks of `records` in order, each embedded (see the module docstring)."""
    loader = DataLoader(
        PhotoDataset(root, records, processor),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=collate,
        worker_init_fn=_worker_init if num_workers else None,
        prefetch_factor=4 if num_workers else None,
    )
    chunk = Chunk()
    waited = time.perf_counter()
    for indices, batch, failed, decode, preprocess in loader:
        timings.wait += time.perf_counter() - waited
        timings.decode += decode
        timings.preprocess += preprocess
        if indices:
            started = time.perf_counter()
            features = image_features(model, batch)
            if features.device.type == "cuda":
                torch.cuda.synchronize(features.device)
            timings.model += time.perf_counter() - started
            chunk.records.extend(records[i] for i in indices)
            chunk.embeddings.append(features.to("cpu"))
        chunk.failures.extend((records[i], error) for i, error in failed)
        if progress is not None:
            progress(len(indices) + len(failed))
        if len(chunk) >= chunk_size:
            yield chunk
            chunk = Chunk()
        waited = time.perf_counter()
    if len(chunk):
        yield chunk


def progress_bar(total: int, description: str, enabled: bool = True):
    """The tqdm bar of an indexing run: photos done of `total`, with images/s."""
    return tqdm(total=total, desc=description, unit="img", disable=not enabled, dynamic_ncols=True, smoothing=0.1)


__all__ = ["Chunk", "PhotoDataset", "Timings", "embed_chunks", "progress_bar"]
