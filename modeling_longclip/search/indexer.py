"""Building and updating an index: check everything, create the folder, embed what is new or changed, commit chunks.

One run (`update_index`), in one process or in several started by `accelerate launch` / `torchrun`:

1. the main process checks the inputs before anything is written (the photos folder exists and holds photos, the
   model folder loads, an existing index was built with the same model and photos root), creates a new index's
   folder skeleton (catalog, manifest) in a temporary sibling and renames it into place, takes the writer lock,
   merges what an interrupted multi-process run left in `parts/`, and deletes shards no row points to;
2. it compares the folder with the catalog by (path, size, mtime_ns): new and changed files are to do, files gone
   are forgotten, unchanged files (and unchanged files that could not be decoded before) are left alone;
3. the files to do are split across the processes (every n-th file, sorted by path); each embeds its share in
   chunks. One process commits each chunk at once (shard renamed into place, then one transaction); several write
   their chunks to `parts/` (a shard, then its row list, the marker of a finished part) and the main process merges
   them when all are done, so the result holds the same paths and embeddings as a one-process build;
4. shards whose rows are mostly dead (files deleted or re-embedded) are rewritten, and an ANN index built for an
   older generation is removed (`longclip-search ann` rebuilds it).

An interrupt (Ctrl-C, SIGTERM) or an error loses at most the chunk in progress: the next run starts where it stopped.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..common.files import atomic_folder
from ..common.loading import check_model_folder, load_model_folder, resolve_device
from ..evaluation.embed import image_features
from .embedder import Timings, embed_chunks, progress_bar
from .fingerprint import describe, model_fingerprint
from .photos import check_photos_dir, find_photos, no_photos_message
from .storage import (
    CATALOG,
    MANIFEST,
    PARTS,
    SHARDS,
    Catalog,
    Record,
    SearchIndexError,
    WriterLock,
    map_shard,
    new_manifest,
    new_shard_name,
    read_manifest,
    write_json,
    write_shard,
)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
SHOWN_FAILURES = 5
ANN_FOLDER = "ann"


@dataclass
class IndexOptions:
    """How a run embeds: the knobs of `longclip-search index`."""

    device: str | None = None
    dtype: str = "auto"
    batch_size: int = 32
    num_workers: int = 2
    chunk_size: int = 1024
    progress: bool = True

    def __post_init__(self):
        for name in ("batch_size", "chunk_size"):
            if getattr(self, name) < 1:
                raise SearchIndexError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}.")
        if self.num_workers < 0:
            raise SearchIndexError(f"--num-workers must be 0 or more, got {self.num_workers}.")
        if self.dtype != "auto" and self.dtype not in DTYPES:
            raise SearchIndexError(f"--dtype must be auto or one of {', '.join(DTYPES)}, got {self.dtype!r}.")
        # chunks are whole batches, so a photo's batch (and its embedding) does not depend on where a run stopped
        self.chunk_size = math.ceil(self.chunk_size / self.batch_size) * self.batch_size

    def torch_dtype(self, device: str) -> torch.dtype:
        if self.dtype == "auto":
            return torch.float16 if torch.device(device).type == "cuda" else torch.float32
        return DTYPES[self.dtype]


@dataclass
class IndexReport:
    """What a run did; `lines()` is what the command prints after the progress bar."""

    index_dir: str
    main_process: bool = True  # False in the other processes of a multi-process run (the main one reports)
    photos: int = 0
    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    skipped: int = 0
    skipped_examples: list[str] = field(default_factory=list)
    skipped_before: int = 0
    problems: list[str] = field(default_factory=list)
    compacted_shards: int = 0
    seconds: float = 0.0
    timings: Timings = field(default_factory=Timings)

    @property
    def images_per_second(self) -> float:
        embedded = self.added + self.updated + self.skipped
        return embedded / self.seconds if self.seconds > 0 else 0.0

    def lines(self) -> list[str]:
        lines = [
            f"{self.index_dir}: {self.photos} photos indexed ({self.added} added, {self.updated} re-embedded, "
            f"{self.removed} forgotten, {self.unchanged} unchanged) in {self.seconds:.1f} s"
        ]
        for example in self.skipped_examples:
            lines.append(f"skipped (cannot decode) {example}")
        if self.skipped:
            more = self.skipped - len(self.skipped_examples)
            lines.append(
                f"{self.skipped} files could not be decoded and were skipped"
                + (f" ({more} not named)" if more > 0 else "")
            )
        if self.skipped_before:
            lines.append(f"{self.skipped_before} unchanged files that could not be decoded before were not retried")
        lines.extend(f"not read: {problem}" for problem in self.problems[:SHOWN_FAILURES])
        return lines


class Distributed:
    """The processes of an `accelerate launch` / `torchrun` run (accelerate's PartialState); one process: a no-op."""

    def __init__(self, device: str | None = None):
        self.state = None
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world > 1:
            from accelerate import PartialState

            # without cpu=True accelerate treats a CPU-only torchrun job as one process per worker
            self.state = PartialState(cpu=device == "cpu" or not torch.cuda.is_available())
            if self.state.num_processes != world:
                raise SearchIndexError(
                    f"WORLD_SIZE is {world} but accelerate set up {self.state.num_processes} process(es) "
                    f"({self.state.distributed_type}); start the run with accelerate launch or torchrun."
                )
        self.rank = self.state.process_index if self.state else 0
        self.size = self.state.num_processes if self.state else 1
        self.is_main = self.rank == 0

    def broadcast(self, value):
        if self.state is None:
            return value
        from accelerate.utils import broadcast_object_list

        return broadcast_object_list([value], from_process=0)[0]

    def gather(self, value) -> list:
        if self.state is None:
            return [value]
        from accelerate.utils import gather_object

        return gather_object([value])

    def barrier(self) -> None:
        if self.state is not None:
            self.state.wait_for_everyone()

    def finish(self) -> None:
        """Wait for the main process's merge, then close the process group (a process that leaves while another
        still talks to it makes gloo abort)."""
        if self.state is not None:
            self.state.wait_for_everyone()
            self.state.destroy_process_group()

    def device(self, requested: str | None) -> str:
        if self.state is not None and requested in (None, "cuda") and self.state.device.type == "cuda":
            return str(self.state.device)
        return resolve_device(requested)


class Quiet(Exception):
    """A non-main process stops because the main process refused the run (the main process says why)."""


def check_index_target(index_dir: Path, fingerprint: str, photos: Path) -> dict | None:
    """The manifest of an existing index that this model and photos folder may update; None for a new index."""
    if index_dir.exists() and not index_dir.is_dir():
        raise SearchIndexError(f"{index_dir}: is a file, not an index folder.")
    if not index_dir.exists() or (not (index_dir / MANIFEST).exists() and not any(index_dir.iterdir())):
        return None
    manifest = read_manifest(index_dir)
    if manifest["model"]["fingerprint"] != fingerprint:
        raise SearchIndexError(
            f"{index_dir}: built with another model ({manifest['model']['path']}, fingerprint "
            f"{describe(manifest['model']['fingerprint'])}; this one is {describe(fingerprint)}); "
            "use another --index folder."
        )
    if Path(manifest["photos_root"]) != photos:
        raise SearchIndexError(f"{index_dir}: indexes {manifest['photos_root']}, not {photos}.")
    return manifest


def embedding_dim(model, processor) -> int:
    """The model's image embedding size, from one blank image (also checks the image path runs at all)."""
    from PIL import Image

    inputs = processor(images=[Image.new("RGB", (64, 64), (128, 128, 128))], return_tensors="pt")
    return int(image_features(model, inputs).shape[-1])


def create_index(index_dir: Path, manifest: dict) -> None:
    with atomic_folder(index_dir) as staging:
        (staging / SHARDS).mkdir()
        Catalog.create(staging / CATALOG)
        write_json(staging / MANIFEST, manifest)


def remove_leftovers(index_dir: Path, catalog: Catalog) -> None:
    """Delete shards that no committed chunk points to (a run killed between rename and commit) and temp files."""
    committed = {name for name, _ in catalog.shards()}
    for path in (index_dir / SHARDS).iterdir():
        if path.name not in committed:
            path.unlink()


def commit_part(index_dir: Path, catalog: Catalog, marker: Path, dim: int) -> None:
    """Merge one finished part of a multi-process run (its shard and row list) into the index."""
    part = json.loads(marker.read_text(encoding="utf-8"))
    records = [Record(*r) for r in part["records"]]
    failures = [(Record(*r), reason) for *r, reason in part["failures"]]
    shard = marker.with_suffix(".safetensors")
    name = None
    if records:
        map_shard(shard, len(records), dim)  # refuses a damaged part before it joins the index
        name = shard.name
        os.replace(shard, index_dir / SHARDS / name)
    catalog.commit_chunk(name, records, failures)
    marker.unlink()


def merge_parts(index_dir: Path, catalog: Catalog, dim: int) -> int:
    """Merge every finished part in `parts/` (sorted by name); unfinished ones are deleted. Returns the parts merged."""
    parts = index_dir / PARTS
    if not parts.is_dir():
        return 0
    markers = sorted(parts.glob("*.json"))
    for marker in markers:
        commit_part(index_dir, catalog, marker, dim)
    shutil.rmtree(parts)
    return len(markers)


def write_part(parts: Path, tag: str, chunk) -> None:
    if chunk.records:
        write_shard(parts / f"{tag}.safetensors", chunk.stacked())
    rows = {
        "records": [[r.path, r.size, r.mtime_ns] for r in chunk.records],
        "failures": [[r.path, r.size, r.mtime_ns, reason] for r, reason in chunk.failures],
    }
    write_json(parts / f"{tag}.json", rows)


def compact(index_dir: Path, catalog: Catalog, dim: int, chunk_size: int) -> int:
    """Rewrite the shards whose rows are mostly dead (one transaction); returns how many were replaced."""
    live = catalog.live_rows()
    victims = [(name, rows) for name, rows in catalog.shards() if 2 * live.get(name, 0) < rows]
    if not victims:
        return 0
    paths, vectors = [], []
    for name, rows in victims:
        located = catalog.located(name)
        if located:
            embeddings = map_shard(index_dir / SHARDS / name, rows, dim)
            vectors.append(np.asarray(embeddings[[row for _, row in located]]))
            paths.extend(path for path, _ in located)
    new = []
    if paths:
        stacked = torch.from_numpy(np.concatenate(vectors))
        for start in range(0, len(paths), chunk_size):
            name = new_shard_name()
            write_shard(index_dir / SHARDS / name, stacked[start : start + chunk_size])
            new.append((name, paths[start : start + chunk_size]))
    catalog.replace_shards([name for name, _ in victims], new)
    for name, _ in victims:
        (index_dir / SHARDS / name).unlink(missing_ok=True)
    return len(victims)


def drop_stale_ann(index_dir: Path, generation: int) -> None:
    meta = index_dir / ANN_FOLDER / "ann.json"
    if meta.is_file():
        try:
            built = json.loads(meta.read_text(encoding="utf-8")).get("generation")
        except ValueError:
            built = None
        if built == generation:
            return
    if (index_dir / ANN_FOLDER).exists():
        shutil.rmtree(index_dir / ANN_FOLDER)


def _prepare(photos_dir, index_dir: Path, model_dir, options: IndexOptions, dist: Distributed, report: IndexReport):
    """The main process's checks and bookkeeping before embedding (steps 1 and 2 of the module docstring)."""
    photos = check_photos_dir(photos_dir)
    model_dir = check_model_folder(model_dir)
    fingerprint = model_fingerprint(model_dir)
    manifest = check_index_target(index_dir, fingerprint, photos)
    found, report.problems = find_photos(photos, exclude=index_dir)
    if not found:
        suffix = f"; refusing to empty {index_dir}" if manifest else ""
        raise SearchIndexError(no_photos_message(photos) + suffix)
    device = dist.device(options.device)
    model, processor = load_model_folder(model_dir, device, dtype=options.torch_dtype(device))
    if manifest is None:
        dim = embedding_dim(model, processor)
        create_index(index_dir, new_manifest(model_dir, fingerprint, type(model).__name__, dim, photos))
        manifest = read_manifest(index_dir)
    lock, catalog = WriterLock(index_dir), None
    try:
        catalog = Catalog(index_dir / CATALOG, writable=True)
        plan = _plan(index_dir, catalog, manifest, found, report, model_dir)
    except BaseException:
        if catalog is not None:
            catalog.close()
        lock.release()
        raise
    return plan, (model, processor), lock, catalog


def _plan(
    index_dir: Path, catalog: Catalog, manifest: dict, found: list, report: IndexReport, model_dir: Path
) -> Plan:
    """Merge what an interrupted run left, forget deleted files, and list the files to embed."""
    merge_parts(index_dir, catalog, manifest["embedding_dim"])
    remove_leftovers(index_dir, catalog)
    indexed, skipped = catalog.records(), catalog.skipped()
    on_disk = {record.path for record in found}
    gone = [path for path in set(indexed) | set(skipped) if path not in on_disk]
    catalog.forget(sorted(gone))
    report.removed = sum(path in indexed for path in gone)
    todo = []
    for record in found:
        if indexed.get(record.path) == record:
            report.unchanged += 1
        elif record.path in skipped and skipped[record.path][0] == record:
            report.skipped_before += 1
        else:
            todo.append(record)
    changed = {record.path for record in todo if record.path in indexed}
    return Plan(Path(manifest["photos_root"]), model_dir, manifest["embedding_dim"], todo, changed)


@dataclass
class Plan:
    """What the main process tells every process: where, which model, and the files to embed."""

    photos: Path
    model_dir: Path
    dim: int
    todo: list[Record]
    changed: set[str]


def update_index(photos_dir, index_dir, model_dir, options: IndexOptions | None = None) -> IndexReport:
    """Build or update the index at `index_dir` (see the module docstring); returns what was done."""
    options = options or IndexOptions()
    index_dir = Path(index_dir).expanduser().resolve()
    dist = Distributed(options.device)
    report = IndexReport(str(index_dir), main_process=dist.is_main)
    started = time.perf_counter()
    plan, error, lock, catalog, loaded = None, None, None, None, None
    try:
        if dist.is_main:
            try:
                plan, loaded, lock, catalog = _prepare(photos_dir, index_dir, model_dir, options, dist, report)
            except Exception as failure:  # every process must hear that the run stops
                error = failure
        plan = dist.broadcast(plan)
        if plan is None:
            if error is not None:
                raise error
            raise Quiet()
        if loaded is None:
            device = dist.device(options.device)
            loaded = load_model_folder(plan.model_dir, device, dtype=options.torch_dtype(device))
        _embed_share(index_dir, plan, loaded, plan.todo[dist.rank :: dist.size], options, dist, catalog, report)
        dist.barrier()
        gathered = dist.gather(report.timings)
        if dist.is_main:
            if dist.size > 1:
                report.timings = Timings()
                for timings in gathered:
                    report.timings.add(timings)
                merge_parts(index_dir, catalog, plan.dim)
            report.compacted_shards = compact(index_dir, catalog, plan.dim, options.chunk_size)
            drop_stale_ann(index_dir, catalog.generation())
            _count(report, plan, catalog)
        dist.finish()
        report.seconds = time.perf_counter() - started
        return report
    finally:
        if catalog is not None:
            catalog.close()
        if lock is not None:
            lock.release()


def _count(report: IndexReport, plan: Plan, catalog: Catalog) -> None:
    skipped = catalog.skipped()
    failed = [(r, skipped[r.path][1]) for r in plan.todo if r.path in skipped and skipped[r.path][0] == r]
    failed_paths = {r.path for r, _ in failed}
    report.skipped = len(failed)
    report.skipped_examples = [f"{r.path}: {reason}" for r, reason in failed[:SHOWN_FAILURES]]
    report.updated = sum(r.path in plan.changed and r.path not in failed_paths for r in plan.todo)
    report.added = len(plan.todo) - len(failed) - report.updated
    report.photos = catalog.count()


def _embed_share(index_dir, plan, loaded, mine, options, dist, catalog, report) -> int:
    """Embed this process's files in chunks: commit each (one process) or write it to parts/ (several)."""
    model, processor = loaded
    parts = index_dir / PARTS
    if dist.size > 1:
        parts.mkdir(exist_ok=True)
    description = "indexing" if dist.size == 1 else f"indexing (process 1 of {dist.size})"
    bar = progress_bar(len(mine), description, enabled=options.progress and dist.is_main)
    done = 0
    try:
        for number, chunk in enumerate(
            embed_chunks(
                model,
                processor,
                plan.photos,
                mine,
                options.batch_size,
                options.num_workers,
                options.chunk_size,
                report.timings,
                progress=bar.update,
            )
        ):
            started = time.perf_counter()
            if dist.size > 1:
                write_part(parts, f"part-{dist.rank:05d}-{number:06d}-{os.urandom(4).hex()}", chunk)
            else:
                commit_chunk(index_dir, catalog, chunk)
            report.timings.write += time.perf_counter() - started
            done += 1
    finally:
        bar.close()
    return done


def commit_chunk(index_dir: Path, catalog: Catalog, chunk) -> None:
    """One chunk: its shard written and renamed into place, then one transaction; a failure deletes the shard and
    says what was kept."""
    name = new_shard_name() if chunk.records else None
    try:
        if name is not None:
            write_shard(index_dir / SHARDS / name, chunk.stacked())
        catalog.commit_chunk(name, chunk.records, chunk.failures)
    except (OSError, SearchIndexError) as error:
        if name is not None:
            (index_dir / SHARDS / name).unlink(missing_ok=True)
        cause = f"{error.filename}: {error.strerror}" if isinstance(error, OSError) and error.filename else str(error)
        raise SearchIndexError(
            f"{cause}; the chunk in progress ({len(chunk)} photos) was not committed, the {catalog.count()} photos "
            "committed before it are kept: run the command again to continue."
        ) from None
    except BaseException:
        if name is not None:
            (index_dir / SHARDS / name).unlink(missing_ok=True)
        raise


__all__ = ["IndexOptions", "IndexReport", "Quiet", "update_index"]
