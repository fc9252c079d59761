"""Query latency of photo search, exact vs FAISS, at 10k, 100k and 1M synthetic photos, with FAISS's recall@10.

    python benchmarks/search_latency.py --json search_latency.json          # 10k, 100k, 1M, 768-dim
    python benchmarks/search_latency.py --smoke                             # 2k vectors, seconds (the tests run it)

For each size the script writes a real index folder (manifest, SQLite catalog, float16 shards of --shard-rows rows,
exactly what `longclip-search index` writes, minus the photos) holding synthetic embeddings, opens it with
`PhotoIndex`, and times `search_vector` (what `search` does once the query is encoded) both ways:

- exact: one float16 matrix product per shard over the memory maps, best candidates re-scored in float32;
- FAISS: `PhotoIndex.build_ann()` (HNSW up to 200k photos, IVF above, the breadth tuned to recall@10 >= 0.95 on
  indexed photos), then the same call with `ann=True` (candidates re-scored exactly from the shards).

Before timing, exact search is checked against a numpy brute force over the stored vectors (same top 10). The
synthetic embeddings lie near a low-dimensional continuum, as image embeddings do (24 random latent factors mapped
into the embedding space, plus isotropic noise of half the signal's norm): no cluster structure for IVF's lists to
line up with. The queries are held out, drawn the same way with more noise (0.8), as text queries land near photos
but on none of them; recall@10 is measured on them against exact search. Vectors spread uniformly over the sphere
would have no near neighbours to find and give lower recall with any index.
Latency is the median of single queries (one at a time, as a user types them) after one warm-up query. Exact search
runs on --threads torch threads (default 1: on a machine shared with other jobs, two threads wait for each other on
every small per-shard product; on an idle machine more threads help exact search at 1M photos). A single FAISS query
runs on one thread either way.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from modeling_longclip.search import PhotoIndex
from modeling_longclip.search.storage import (
    CATALOG,
    MANIFEST,
    SHARDS,
    Catalog,
    Record,
    new_shard_name,
    write_json,
    write_shard,
)

K = 10


RANK = 24  # intrinsic dimension of the synthetic embeddings


def basis(dim: int) -> np.ndarray:
    """The random linear map from RANK latent factors to embedding space (fixed: seed 0)."""
    return np.random.default_rng(0).standard_normal((RANK, dim)).astype(np.float32) / np.sqrt(RANK)


def synthetic(base: np.ndarray, n: int, noise: float, seed: int) -> np.ndarray:
    """n unit vectors on a RANK-dimensional continuum (random latent factors through `base`) plus isotropic noise of
    norm ~`noise` relative to the signal."""
    rng = np.random.default_rng(seed)
    signal = rng.standard_normal((n, RANK)).astype(np.float32) @ base
    signal /= np.linalg.norm(signal, axis=1, keepdims=True)
    points = signal + noise * rng.standard_normal(signal.shape).astype(np.float32) / np.sqrt(base.shape[1])
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


def write_index(folder: Path, n: int, base: np.ndarray, shard_rows: int) -> None:
    """An index folder as `longclip-search index` leaves it, holding n synthetic embeddings (path i -> row i)."""
    folder.mkdir(parents=True)
    (folder / SHARDS).mkdir()
    Catalog.create(folder / CATALOG)
    manifest = {
        "format": "modeling_longclip.search",
        "version": 1,
        "model": {"path": "synthetic", "fingerprint": "sha256:synthetic", "class": "synthetic"},
        "embedding_dim": base.shape[1],
        "stored_as": "float16, L2-normalized",
        "photos_root": str(folder / "photos"),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    write_json(folder / MANIFEST, manifest)
    catalog = Catalog(folder / CATALOG, writable=True)
    for start in range(0, n, shard_rows):
        count = min(shard_rows, n - start)
        vectors = synthetic(base, count, noise=0.5, seed=start + 1)
        name = new_shard_name()
        write_shard(folder / SHARDS / name, torch.from_numpy(vectors))
        catalog.commit_chunk(name, [Record(f"{i:08d}.jpg", 0, 0) for i in range(start, start + count)], [])
    catalog.close()


def brute_force(index: PhotoIndex, query: np.ndarray) -> list[str]:
    scores, paths = [], []
    for name, array, _ in index._shards:
        stored = np.asarray(array, dtype=np.float32)
        scores.append(stored @ query / np.linalg.norm(stored, axis=1))
        paths.extend(path for path, _ in index.catalog.located(name))
    order = np.argsort(-np.concatenate(scores), kind="stable")[:K]
    return [paths[i] for i in order]


def median_ms(fn, queries: np.ndarray) -> float:
    fn(queries[0])
    times = []
    for query in queries:
        started = time.perf_counter()
        fn(query)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def measure(n: int, args, workdir: Path) -> dict:
    folder = workdir / f"index-{n}"
    base = basis(args.dim)
    started = time.perf_counter()
    write_index(folder, n, base, args.shard_rows)
    written = time.perf_counter() - started
    queries = synthetic(base, args.queries, noise=0.8, seed=-1 % (1 << 32))  # a seed no shard uses
    index = PhotoIndex.open(folder, verify_model=False)
    for query in queries[:3]:
        got = [hit.path for hit in index.search_vector(query, k=K)]
        assert got == brute_force(index, query), "exact search differs from a brute force over the stored vectors"
    exact_ms = median_ms(lambda q: index.search_vector(q, k=K), queries[: args.exact_queries])
    info = index.build_ann()
    print(info.line(), file=sys.stderr)
    ann_ms = median_ms(lambda q: index.search_vector(q, k=K, ann=True), queries)
    found = 0
    for query in queries:
        truth = {hit.path for hit in index.search_vector(query, k=K)}
        found += len(truth & {hit.path for hit in index.search_vector(query, k=K, ann=True)})
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    index.close()
    shutil.rmtree(folder)
    return {
        "photos": n,
        "dim": args.dim,
        "shards": -(-n // args.shard_rows),
        "exact_ms": round(exact_ms, 2),
        "ann": info.kind,
        "ann_params": {**info.params, ("efSearch" if info.kind == "hnsw" else "nprobe"): info.breadth},
        "ann_ms": round(ann_ms, 2),
        "ann_build_s": info.seconds,
        "recall_at_10_heldout": round(found / (K * len(queries)), 4),
        "recall_at_10_build": info.recall_at_10,
        "index_bytes": size,
        "write_s": round(written, 1),
    }


def table(rows: list[dict]) -> str:
    lines = [
        "| photos | dim | exact (ms) | FAISS | FAISS (ms) | recall@10 (held-out queries) | FAISS build (s) | "
        "index on disk |",
        "|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        params = ", ".join(f"{k} {v}" for k, v in r["ann_params"].items())
        lines.append(
            f"| {r['photos']:,} | {r['dim']} | {r['exact_ms']} | {r['ann'].upper()} ({params}) | {r['ann_ms']} | "
            f"{r['recall_at_10_heldout']} | {r['ann_build_s']} | {r['index_bytes'] / 1e6:,.0f} MB |"
        )
    return "\n".join(lines)


def environment(args) -> dict:
    import faiss

    return {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "faiss": faiss.__version__,
            "numpy": np.__version__,
        },
        "settings": {k: v for k, v in vars(args).items() if k not in ("json", "workdir")},
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=768, help="embedding size (768: Long-CLIP-L; 512: B/16)")
    parser.add_argument("--shard-rows", type=int, default=4096, help="photos per shard (--chunk-size of the index)")
    parser.add_argument("--queries", type=int, default=100, help="held-out queries for FAISS latency and recall")
    parser.add_argument("--exact-queries", type=int, default=20, help="queries timed for exact search")
    parser.add_argument("--workdir", type=Path, help="where the indexes are written (default: a temporary folder)")
    parser.add_argument("--json", type=Path, help="write the results here (rewritten after each size)")
    parser.add_argument("--smoke", action="store_true", help="one 2,000-photo index, 64-dim (seconds)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for exact search (0: torch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.smoke:
        args.sizes, args.dim, args.shard_rows, args.queries, args.exact_queries = [2000], 64, 512, 20, 5
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="search-latency-"))
    report = {**environment(args), "results": []}
    for n in args.sizes:
        report["results"].append(measure(n, args, workdir))
        if args.json:
            args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(table(report["results"]))
    print(
        f"\n{report['machine']} · {report['date']} · " + ", ".join(f"{k} {v}" for k, v in report["versions"].items())
    )
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
