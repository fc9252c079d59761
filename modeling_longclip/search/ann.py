"""An approximate nearest-neighbour index (FAISS) beside the shards, for collections where exact search slows down.

Exact search reads every embedding once per query (about 0.3 s per million 768-dim photos on 2 CPU cores); FAISS
reads a small part. `longclip-search ann INDEX_DIR` (or `index ... --ann`) builds one, by size:

- up to 200,000 photos: HNSW (`IndexHNSWFlat`, M 32, efConstruction 80): no training, high recall;
- more: IVF (`IndexIVFScalarQuantizer`, fp16 codes, which hold the shards' float16 values exactly) with
  nlist = sqrt(n) rounded to a power of two, trained on 64 photos per list (10 k-means iterations).

Its search breadth (HNSW efSearch, IVF nprobe) is tuned when it is built: the smallest value whose recall@10 against
exact search reaches `target_recall` (0.95) on 200 queries made from indexed photos moved far away by noise (cosine
~0.45 to the photo: like a text query, which sits apart from the photos it describes; photos used as their own
queries would be found far more easily and make the recall look better than queries see). The recall is printed and stored in `ann/ann.json` with the catalog generation the index was
built at; any later change to the index (a run of `longclip-search index` that commits anything) removes it, and a
query never uses an ANN index of another generation. Hits found through FAISS are re-scored exactly from the shards,
so their scores are the same cosines exact search gives; only which photos are found can differ.

Files: `ann/index.faiss` (faiss.write_index), `ann/rows.npy` (int64 [n, 2]: shard number in ann.json's list, row),
`ann/ann.json`. faiss-cpu is an optional dependency (`pip install "modeling-longclip[search]"`).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..common.files import atomic_folder
from .storage import SearchIndexError

FOLDER = "ann"
HNSW_LIMIT = 200_000
HNSW_M, HNSW_EF_CONSTRUCTION = 32, 80
IVF_TRAIN_PER_LIST, IVF_ITERATIONS = 64, 10
RECALL_QUERIES, RECALL_AT = 200, 10
HNSW_BREADTHS = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
IVF_BREADTHS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256)
BLOCK = 65536
TIE = 1e-6
QUERY_NOISE = 2.0


def require_faiss():
    try:
        import faiss
    except ImportError:
        raise SearchIndexError(
            'approximate search needs faiss-cpu: pip install "modeling-longclip[search]" (or pip install faiss-cpu).'
        ) from None
    return faiss


@dataclass
class AnnInfo:
    """What ann.json records about an ANN index."""

    kind: str
    photos: int
    params: dict
    breadth: int
    recall_at_10: float
    recall_queries: int
    target_recall: float
    generation: int
    shards: list
    seconds: float
    faiss_version: str

    def line(self) -> str:
        breadth = "efSearch" if self.kind == "hnsw" else "nprobe"
        params = ", ".join(f"{k} {v}" for k, v in self.params.items())
        return (
            f"ANN index: {self.kind.upper()} ({params}, {breadth} {self.breadth}) over {self.photos} photos in "
            f"{self.seconds:.1f} s; recall@10 against exact search {self.recall_at_10:.3f} on {self.recall_queries} "
            f"queries around indexed photos (target {self.target_recall})"
        )


def choose_kind(n: int, kind: str = "auto") -> str:
    if kind not in ("auto", "hnsw", "ivf"):
        raise SearchIndexError(f"--kind must be auto, hnsw or ivf, got {kind!r}.")
    return ("hnsw" if n <= HNSW_LIMIT else "ivf") if kind == "auto" else kind


def ivf_lists(n: int) -> int:
    """sqrt(n) rounded to a power of two (1024 lists for a million photos): adding a million photos costs one
    1024-way assignment each, minutes on 2 CPU cores, and a query scans a few thousand photos per list probed."""
    return int(min(max(2 ** round(math.log2(max(math.sqrt(n), 1))), 1), max(n // 39, 1), 65536))


def _set_breadth(index, kind: str, breadth: int) -> None:
    if kind == "hnsw":
        index.hnsw.efSearch = breadth
    else:
        index.nprobe = breadth


def exact_neighbours(vectors: np.ndarray, queries: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores, ids) [q, depth] of the best inner products, by brute force in blocks (float32)."""
    best_scores = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    best_ids = np.zeros((len(queries), 0), dtype=np.int64)
    for start in range(0, len(vectors), BLOCK):
        scores = queries @ vectors[start : start + BLOCK].astype(np.float32).T
        ids = np.broadcast_to(np.arange(start, start + scores.shape[1]), scores.shape)
        scores, ids = np.concatenate([best_scores, scores], 1), np.concatenate([best_ids, ids], 1)
        keep = np.argsort(-scores, axis=1, kind="stable")[:, :depth]
        best_scores, best_ids = np.take_along_axis(scores, keep, 1), np.take_along_axis(ids, keep, 1)
    return best_scores, best_ids


def recall_queries(vectors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Query vectors apart from the photos, as text queries are: each a random photo moved by Gaussian noise of norm
    2 (cosine ~0.45 to it; a text's cosine to the photos it describes is ~0.3 with CLIP models). Such queries have
    many nearly equal neighbours, which makes them much harder for an ANN index than the photos themselves."""
    picked = np.sort(rng.choice(len(vectors), size=min(len(vectors), RECALL_QUERIES), replace=False))
    queries = np.asarray(vectors[picked], dtype=np.float32)
    noise = rng.standard_normal(queries.shape).astype(np.float32) * (QUERY_NOISE / np.sqrt(queries.shape[1]))
    queries = queries + noise
    return np.ascontiguousarray(queries / np.linalg.norm(queries, axis=1, keepdims=True))


def recall_at_10(found: np.ndarray, found_scores: np.ndarray, truth: np.ndarray, truth_scores: np.ndarray) -> float:
    """Mean share of the exact 10 nearest that the ANN lists find; a found photo whose score ties the exact 10th
    counts (duplicates in a collection make several photos equally near)."""
    total, depth = 0, truth.shape[1]  # 10, or every photo of a smaller index
    for ids, scores, exact, exact_scores in zip(found, found_scores, truth, truth_scores):
        bar, wanted = exact_scores[-1] - TIE, set(exact.tolist())
        total += min(sum(i in wanted or s >= bar for i, s in zip(ids, scores) if i >= 0), depth)
    return total / (depth * len(found))


def build_ann(
    index_dir: Path, vectors: np.ndarray, rows: np.ndarray, shards: list, generation: int, kind="auto", target=0.95
) -> AnnInfo:
    """Build, tune and save an ANN index over `vectors` (float16 [n, dim], the live rows in `rows` order)."""
    faiss = require_faiss()
    started = time.perf_counter()
    n, dim = vectors.shape
    if n == 0:
        raise SearchIndexError(f"{index_dir}: the index is empty; nothing to build an ANN index over.")
    kind = choose_kind(n, kind)
    rng = np.random.default_rng(0)
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        params, breadths = {"M": HNSW_M, "efConstruction": HNSW_EF_CONSTRUCTION}, HNSW_BREADTHS
    else:
        lists = ivf_lists(n)
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFScalarQuantizer(
            quantizer, dim, lists, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT
        )
        index.cp.niter = IVF_ITERATIONS
        index.cp.min_points_per_centroid = 1  # a small index forced to IVF trains on what it has, without a warning
        sample = rng.choice(n, size=min(n, lists * IVF_TRAIN_PER_LIST), replace=False)
        index.train(np.ascontiguousarray(vectors[np.sort(sample)], dtype=np.float32))
        params, breadths = {"nlist": lists}, tuple(b for b in IVF_BREADTHS if b <= lists) or (lists,)
    for start in range(0, n, BLOCK):
        index.add(np.ascontiguousarray(vectors[start : start + BLOCK], dtype=np.float32))
    queries = recall_queries(vectors, rng)
    depth = min(RECALL_AT, n)
    truth_scores, truth = exact_neighbours(vectors, queries, depth)
    recall, breadth = 0.0, breadths[-1]
    for breadth in breadths:
        _set_breadth(index, kind, breadth)
        scores, found = index.search(queries, depth)
        recall = recall_at_10(found, scores, truth, truth_scores)
        if recall >= target:
            break
    info = AnnInfo(
        kind=kind,
        photos=n,
        params=params,
        breadth=breadth,
        recall_at_10=round(float(recall), 4),
        recall_queries=len(queries),
        target_recall=target,
        generation=generation,
        shards=list(shards),
        seconds=round(time.perf_counter() - started, 2),
        faiss_version=faiss.__version__,
    )
    with atomic_folder(index_dir / FOLDER, overwrite=True) as staging:
        faiss.write_index(index, str(staging / "index.faiss"))
        np.save(staging / "rows.npy", rows)
        (staging / "ann.json").write_text(json.dumps(asdict(info), indent=2) + "\n")
    return info


def read_ann_info(index_dir: Path) -> AnnInfo | None:
    path = index_dir / FOLDER / "ann.json"
    if not path.is_file():
        return None
    try:
        return AnnInfo(**json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, TypeError) as error:
        raise SearchIndexError(
            f"{path}: damaged ANN description ({error}); rebuild it with longclip-search ann."
        ) from None


class AnnSearcher:
    """A loaded ANN index: `candidates(vector, depth)` -> [(shard name, row)]."""

    def __init__(self, index_dir: Path, info: AnnInfo):
        faiss = require_faiss()
        folder = index_dir / FOLDER
        try:
            try:
                self.index = faiss.read_index(str(folder / "index.faiss"), faiss.IO_FLAG_MMAP)
            except RuntimeError:  # index types without memory-mapped reading
                self.index = faiss.read_index(str(folder / "index.faiss"))
            self.rows = np.load(folder / "rows.npy")
        except (RuntimeError, OSError, ValueError) as error:
            detail = " ".join(str(error).split())[:200]
            raise SearchIndexError(
                f"{folder}: damaged ANN index ({detail}); rebuild it with longclip-search ann."
            ) from None
        if self.index.ntotal != len(self.rows) or self.rows.shape[1:] != (2,):
            raise SearchIndexError(
                f"{folder}: damaged ANN index (ids do not match); rebuild it with longclip-search ann."
            )
        self.info = info
        _set_breadth(self.index, info.kind, info.breadth)

    def candidates(self, vector: np.ndarray, depth: int) -> list[tuple[str, int]]:
        _, ids = self.index.search(np.ascontiguousarray(vector[None], dtype=np.float32), depth)
        return [(self.info.shards[self.rows[i][0]], int(self.rows[i][1])) for i in ids[0] if i >= 0]


__all__ = ["AnnInfo", "AnnSearcher", "build_ann", "choose_kind", "read_ann_info", "require_faiss"]
