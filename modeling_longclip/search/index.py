"""`PhotoIndex`: the Python API of photo search (the command line and the web page are built on it).

```python
from modeling_longclip.search import PhotoIndex

index = PhotoIndex.build("~/Pictures", "~/Pictures.index", model="LongCLIP-L-hf")  # or PhotoIndex.open(...)
for hit in index.search(text="the harbour at dawn, a red boat on the left, gulls over the masts, ...", k=5):
    print(f"{hit.score:.3f}", index.resolve(hit.path))
index.update()  # later: embeds only new or changed photos, forgets deleted ones
```

Scores are cosine similarities: the query's float32 embedding against the photo's stored float16 one, both
normalized in float32 (so a photo queried by itself scores 1.0).
Exact search is one matrix product over the memory-mapped shards (float16, float32 accumulation), whose best
candidates are re-scored in float32; `ann=True` asks the FAISS index instead (`build_ann`), whose hits are re-scored
the same way. A query text longer than the model's limit is encoded in windows by Long-CLIP (`long_text="window"`,
every token is read) and cut at the limit by other models (LLM2CLIP / ProCLIP: their processor's `max_length`,
stock CLIP / SigLIP: their tokenizer's); either way one `LongQueryWarning` says so. An index is opened with the model
folder recorded in its manifest unless `model=` names another folder; either must have the recorded fingerprint.
The model is loaded on the first query, so opening an index to list or resolve its photos is instant. A PhotoIndex
may be shared by threads (a web server): queries take a lock, and a change committed by another process (an update
while the server runs) is picked up on the next query.
"""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..common.loading import check_model_folder, load_model_folder, resolve_device
from ..evaluation.embed import embed_images, embed_texts, has_own_encoders, text_limit
from .ann import FOLDER as ANN_FOLDER
from .ann import AnnInfo, AnnSearcher, build_ann, read_ann_info
from .fingerprint import describe, model_fingerprint
from .indexer import DTYPES, IndexOptions, IndexReport, update_index
from .photos import UNREADABLE, load_photo
from .storage import CATALOG, SHARDS, Catalog, SearchIndexError, WriterLock, map_shard, read_manifest

RESCORED = 32  # extra candidates re-scored in float32 beyond k (float16 scores can tie-swap neighbours)


class LongQueryWarning(UserWarning):
    """A query text longer than the model's limit: how it was encoded."""


@dataclass(frozen=True)
class SearchHit:
    """One result: `path` relative to the photos root ("/"-separated, as indexed), `score` the cosine similarity."""

    path: str
    score: float


class PhotoIndex:
    """An index folder, opened for search (see the module docstring); `build` / `open` make one."""

    def __init__(self, index_dir: Path, manifest: dict, model_dir: Path | None, device: str | None, dtype: str):
        self.index_dir, self.manifest, self.model_path = index_dir, manifest, model_dir
        self.photos_root = Path(manifest["photos_root"])
        self.dim = int(manifest["embedding_dim"])
        self.device, self.dtype = device, dtype
        self.catalog = Catalog(index_dir / CATALOG, writable=False)
        self._lock = threading.RLock()
        self._loaded = None
        self._generation = None
        self._shards: list[tuple[str, np.ndarray, torch.Tensor | None]] = []
        self._ann: AnnSearcher | None = None

    # -- opening -------------------------------------------------------------------------------------------------

    @classmethod
    def open(
        cls, index_dir, model=None, *, device: str | None = None, dtype: str = "auto", verify_model: bool = True
    ) -> PhotoIndex:
        """Open an index for search. `model`: a model folder with the fingerprint the index records (default: the
        folder it was built with). Refused in one line: a missing or damaged index, another model. `verify_model=False`
        skips the model (for tools that never encode a query: `info`, `ann`); such an index refuses to encode."""
        index_dir = Path(index_dir).expanduser().resolve()
        if not index_dir.exists():
            raise SearchIndexError(f"{index_dir}: no such index folder.")
        manifest = read_manifest(index_dir)
        recorded = manifest["model"]
        if not verify_model:
            index = cls(index_dir, manifest, None, device, dtype)
            with index._lock:
                index._refresh()
            return index
        if model is None and not Path(recorded["path"]).is_dir():
            raise SearchIndexError(
                f"{index_dir}: the model it was built with ({recorded['path']}) is gone; pass the model folder "
                "(--model) with the same weights."
            )
        model_dir = check_model_folder(model if model is not None else recorded["path"])
        fingerprint = model_fingerprint(model_dir)
        if fingerprint != recorded["fingerprint"]:
            what = "another model" if model is not None else "the model folder it was built with, which has changed"
            raise SearchIndexError(
                f"{index_dir}: built with {recorded['path']} (fingerprint {describe(recorded['fingerprint'])}); "
                f"{model_dir} is {what} (fingerprint {describe(fingerprint)})."
            )
        if dtype != "auto" and dtype not in DTYPES:
            raise SearchIndexError(f"--dtype must be auto or one of {', '.join(DTYPES)}, got {dtype!r}.")
        index = cls(index_dir, manifest, model_dir.resolve(), device, dtype)
        with index._lock:
            index._refresh()
        return index

    @classmethod
    def build(
        cls,
        photos_dir,
        index_dir,
        model,
        *,
        device: str | None = None,
        dtype: str = "auto",
        batch_size: int = 32,
        num_workers: int = 2,
        chunk_size: int = 1024,
        progress: bool = True,
    ) -> PhotoIndex:
        """Index `photos_dir` into `index_dir` with the model folder `model` (creating the index, or continuing and
        updating one built with the same model and photos) and open it; `last_report` says what was done."""
        options = IndexOptions(device, dtype, batch_size, num_workers, chunk_size, progress)
        report = update_index(photos_dir, index_dir, model, options)
        index = cls.open(index_dir, model, device=device, dtype=dtype)
        index.last_report = report
        return index

    def update(
        self, *, batch_size: int = 32, num_workers: int = 2, chunk_size: int = 1024, progress: bool = True
    ) -> IndexReport:
        """Embed the photos added or changed under `photos_root` since the last run and forget deleted ones."""
        options = IndexOptions(self.device, self.dtype, batch_size, num_workers, chunk_size, progress)
        report = update_index(self.photos_root, self.index_dir, self.model_path, options)
        with self._lock:
            self._refresh()
        return report

    def close(self) -> None:
        self.catalog.close()

    def __enter__(self) -> PhotoIndex:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- what the index holds ------------------------------------------------------------------------------------

    def __len__(self) -> int:
        with self._lock:
            return self.catalog.count()

    @property
    def generation(self) -> int:
        with self._lock:
            return self.catalog.generation()

    def paths(self) -> list[str]:
        """Every indexed path, sorted."""
        with self._lock:
            return [row[0] for row in self.catalog.query("SELECT path FROM photos ORDER BY path")]

    def resolve(self, path: str) -> Path:
        """The absolute file of an indexed `path` (what a thumbnail server may open); anything that is not an indexed
        photo (a path that leaves the root, a file never indexed) is refused."""
        with self._lock:
            found = self.catalog.query("SELECT 1 FROM photos WHERE path = ?", (str(path),))
        if not found:
            raise SearchIndexError(f"{path}: not a photo of this index.")
        return self.photos_root / path

    def ann_info(self) -> AnnInfo | None:
        """The current ANN index's description, or None when there is none (or it was built for an older state)."""
        info = read_ann_info(self.index_dir)
        return info if info is not None and info.generation == self.generation else None

    def info(self) -> dict:
        """A summary for `longclip-search info` and the web page."""
        with self._lock:
            self._refresh()
            shards = self.catalog.shards()
            ann = read_ann_info(self.index_dir)
            return {
                "index": str(self.index_dir),
                "photos_root": str(self.photos_root),
                "photos": self.catalog.count(),
                "model": self.manifest["model"],
                "embedding_dim": self.dim,
                "text_limit": self.text_limit if self._loaded else None,
                "shards": len(shards),
                "dead_rows": sum(rows for _, rows in shards) - self.catalog.count(),
                "skipped": len(self.catalog.skipped()),
                "bytes": sum(p.stat().st_size for p in self.index_dir.rglob("*") if p.is_file()),
                "generation": self._generation,
                "ann": None if ann is None else {**ann.__dict__, "current": ann.generation == self._generation},
            }

    # -- the model -----------------------------------------------------------------------------------------------

    def model_and_processor(self):
        """(model, processor), loaded on first use on `device` in `dtype`."""
        with self._lock:
            if self.model_path is None:
                raise SearchIndexError(f"{self.index_dir}: opened without its model (verify_model=False).")
            if self._loaded is None:
                device = resolve_device(self.device)
                dtype = torch.float32 if self.dtype == "auto" else DTYPES[self.dtype]
                self._loaded = load_model_folder(self.model_path, device, dtype=dtype)
            return self._loaded

    @property
    def text_limit(self) -> int | None:
        """Tokens a query may have before the model windows it (Long-CLIP) or cuts it (the others)."""
        model, processor = self.model_and_processor()
        limit = getattr(processor, "max_length", None)  # LLM2CLIP / ProCLIP: the processor's max_length
        return limit if isinstance(limit, int) else text_limit(processor, model)

    def reads_long_text(self) -> bool:
        """Whether texts past the limit are encoded in windows (this package's Long-CLIP processor)."""
        model, processor = self.model_and_processor()
        return has_own_encoders(model) and hasattr(processor, "context_length")

    def count_tokens(self, text: str) -> int:
        """The tokens the model's processor makes of `text`, special tokens included (shown against `text_limit`)."""
        _, processor = self.model_and_processor()
        if callable(getattr(processor, "count_tokens", None)):
            return int(processor.count_tokens([text])[0])
        if callable(getattr(processor, "texts_to_tokenize", None)):  # LLM2CLIP: its caption template, uncut
            text = processor.texts_to_tokenize(text, max_length=1 << 30, doc_max_length=1 << 30)[0]
        return len(processor.tokenizer(text, verbose=False)["input_ids"])

    def embed_text(self, text: str) -> np.ndarray:
        """The L2-normalized float32 embedding of a query text (see the module docstring for long texts)."""
        if not isinstance(text, str) or not text.strip():
            raise SearchIndexError("the query text is empty.")
        model, processor = self.model_and_processor()
        with self._lock:
            tokens, limit = self.count_tokens(text), self.text_limit
            options = {}
            if limit is not None and tokens > limit:
                name = type(model).__name__
                if self.reads_long_text():
                    options["long_text"] = "window"
                    note = f"encoded in windows ({name}, long_text='window'): every token is read"
                else:
                    note = f"{name} reads only the first {limit}; the rest is cut"
                warnings.warn(f"the query has {tokens} tokens, more than {limit}: {note}.", LongQueryWarning, 2)
            return embed_texts(model, processor, [text], **options)[0].float().cpu().numpy()

    def embed_image(self, image) -> np.ndarray:
        """The L2-normalized float32 embedding of a query image (a path, EXIF orientation applied, or a PIL image)."""
        if not hasattr(image, "convert"):
            try:
                image = load_photo(image)
            except UNREADABLE as error:
                detail = " ".join(str(error).split()) or type(error).__name__
                raise SearchIndexError(f"{image}: cannot read the query image ({detail}).") from None
        model, processor = self.model_and_processor()
        with self._lock:
            return embed_images(model, processor, [image.convert("RGB")])[0].float().cpu().numpy()

    # -- searching -----------------------------------------------------------------------------------------------

    def search(self, text: str | None = None, image=None, k: int = 10, ann: bool = False) -> list[SearchHit]:
        """The `k` photos closest to a query text or a query image (exactly one of them), best first."""
        if (text is None) == (image is None):
            raise SearchIndexError("give a query text or a query image (one of them).")
        self._check_k(k)
        vector = self.embed_text(text) if text is not None else self.embed_image(image)
        return self.search_vector(vector, k=k, ann=ann)

    def search_vector(self, vector, k: int = 10, ann: bool = False) -> list[SearchHit]:
        """The `k` photos closest to an embedding (normalized here); what `search` does after encoding the query."""
        self._check_k(k)
        vector = np.asarray(vector, dtype=np.float32).reshape(-1)
        if vector.shape != (self.dim,):
            raise SearchIndexError(f"a query embedding must have {self.dim} values, got {vector.shape[0]}.")
        vector = vector / max(float(np.linalg.norm(vector)), 1e-12)
        with self._lock:
            self._refresh()
            depth = k + RESCORED
            found = self._ann_candidates(vector, depth) if ann else self._exact_candidates(vector, depth)
            return self._rescore(vector, found, k)

    @staticmethod
    def _check_k(k) -> None:
        if not isinstance(k, int) or k < 1:
            raise SearchIndexError(f"k must be a positive number of results, got {k!r}.")

    def _refresh(self) -> None:
        """Map the shards (and their live rows) again when the catalog changed since the last query."""
        generation = self.catalog.generation()
        if generation == self._generation:
            return
        shards = self.catalog.shards()
        live = self.catalog.count()
        masks = {}
        if live != sum(rows for _, rows in shards):  # dead rows exist: mark the live ones
            masks = {name: torch.zeros(rows, dtype=torch.bool) for name, rows in shards}
            for name, row in self.catalog.locations():
                masks[name][row] = True
        mapped = []
        for name, rows in shards:
            array = map_shard(self.index_dir / SHARDS / name, rows, self.dim)
            mapped.append((name, array, masks.get(name)))
        self._shards, self._generation, self._ann = mapped, generation, None

    def _exact_candidates(self, vector: np.ndarray, depth: int) -> list[tuple[str, int]]:
        query = torch.from_numpy(vector).to(torch.float16)
        best: list[tuple[float, str, int]] = []
        for name, array, mask in self._shards:
            if len(array) == 0:
                continue
            with warnings.catch_warnings():  # a read-only memory map; torch never writes to it here
                warnings.simplefilter("ignore", UserWarning)
                scores = (torch.from_numpy(array) @ query).float()
            if mask is not None:
                scores[~mask] = -torch.inf
            top = torch.topk(scores, min(depth, len(scores)))
            best.extend((s, name, r) for s, r in zip(top.values.tolist(), top.indices.tolist()) if s > -np.inf)
            best = sorted(best, reverse=True)[:depth]
        return [(name, row) for _, name, row in best]

    def _ann_candidates(self, vector: np.ndarray, depth: int) -> list[tuple[str, int]]:
        if self._ann is None:
            info = read_ann_info(self.index_dir)
            if info is None:
                raise SearchIndexError(f"{self.index_dir}: no ANN index; build one with longclip-search ann.")
            if info.generation != self._generation:
                raise SearchIndexError(
                    f"{self.index_dir / ANN_FOLDER}: built for an older state of the index; rebuild it with "
                    "longclip-search ann."
                )
            self._ann = AnnSearcher(self.index_dir, info)
        return self._ann.candidates(vector, depth)

    def _rescore(self, vector: np.ndarray, candidates: list[tuple[str, int]], k: int) -> list[SearchHit]:
        arrays = {name: array for name, array, _ in self._shards}
        scored = []
        for name, row in candidates:
            stored = arrays[name][row].astype(np.float32)  # re-normalized: float16 rounding moves the norm off 1
            score = float(np.dot(stored, vector) / max(float(np.linalg.norm(stored)), 1e-12))
            scored.append((-score, name, row))
        hits = []
        for negative, name, row in sorted(scored):
            path = self.catalog.path_at(name, row)
            if path is not None:
                hits.append(SearchHit(path, -negative))
            if len(hits) == k:
                break
        return hits

    # -- approximate search --------------------------------------------------------------------------------------

    def build_ann(self, kind: str = "auto", target_recall: float = 0.95) -> AnnInfo:
        """Build (or rebuild) the FAISS index for the current state; its recall@10 is measured and returned."""
        if not 0 < target_recall <= 1:
            raise SearchIndexError(f"--target-recall must be in (0, 1], got {target_recall}.")
        with self._lock:
            writer = WriterLock(self.index_dir)  # an update cannot commit (and drop the ANN index) meanwhile
            try:
                return self._build_ann(kind, target_recall)
            finally:
                writer.release()

    def _build_ann(self, kind: str, target_recall: float) -> AnnInfo:
        self._refresh()
        names, vectors, rows = [], [], []
        for number, (name, array, mask) in enumerate(self._shards):
            keep = np.arange(len(array)) if mask is None else np.flatnonzero(mask.numpy())
            if len(keep):
                vectors.append(np.asarray(array[keep]))
                rows.append(np.stack([np.full(len(keep), number), keep], 1))
            names.append(name)
        if not vectors:
            raise SearchIndexError(f"{self.index_dir}: the index is empty; nothing to build an ANN index over.")
        info = build_ann(
            self.index_dir,
            np.concatenate(vectors),
            np.concatenate(rows).astype(np.int64),
            names,
            self._generation,
            kind,
            target_recall,
        )
        self._ann = None
        return info


__all__ = ["LongQueryWarning", "PhotoIndex", "SearchHit"]
