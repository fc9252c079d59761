"""Indexing on several processes: `python -m modeling_longclip.search index ...` under torchrun (what
`accelerate launch --multi_gpu` starts; here 2 CPU processes on gloo) gives the index a one-process build gives, and
the parts an interrupted multi-process run leaves are merged by the next run."""

from __future__ import annotations

import sqlite3

import numpy as np
import torch
from test_search import (  # noqa: F401 - one_thread is an autouse fixture
    INDEXED,
    make_index,
    one_thread,
    stored_embeddings,
    tiny_model_folder,
    write_collection,
)
from torchrun import run_torchrun

from modeling_longclip.search import PhotoIndex
from modeling_longclip.search.embedder import Chunk
from modeling_longclip.search.indexer import PARTS, write_part
from modeling_longclip.search.photos import find_photos


def test_two_processes_build_the_index_one_process_builds(tmp_path):
    photos, model = write_collection(tmp_path), tiny_model_folder(tmp_path / "model")
    chunking = ["--batch-size", "2", "--chunk-size", "4", "--num-workers", "0"]
    run = run_torchrun(
        ["-m", "modeling_longclip.search", "index", photos, "--model", model, "--index", tmp_path / "two", *chunking],
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("photos indexed") == 1  # the main process reports for both
    assert f"{INDEXED} photos indexed ({INDEXED} added" in run.stdout and "broken.jpg" in run.stdout
    assert not (tmp_path / "two" / PARTS).exists()
    assert make_index(photos, tmp_path / "one", model, *chunking) == 0
    with PhotoIndex.open(tmp_path / "two") as two, PhotoIndex.open(tmp_path / "one") as one:
        parallel, single = stored_embeddings(two), stored_embeddings(one)
        assert two.catalog.skipped().keys() == one.catalog.skipped().keys() == {"broken.jpg"}
        assert two.catalog.records() == one.catalog.records()  # paths, sizes, mtimes
        assert two.manifest["model"] == one.manifest["model"] and two.dim == one.dim
        hits = [index.search(text="an astronaut on a rocket", k=5) for index in (two, one)]
    assert sorted(parallel) == sorted(single)
    # a photo's embedding depends on its batch only through float rounding: equal to the float16 it is stored in
    assert max(float(np.abs(parallel[p].astype(np.float32) - single[p]).max()) for p in single) <= 1e-3
    assert [h.path for h in hits[0]] == [h.path for h in hits[1]]


def test_parts_left_by_an_interrupted_multi_process_run_are_merged_by_the_next_run(tmp_path, capsys):
    photos, model = write_collection(tmp_path), tiny_model_folder(tmp_path / "model")
    index_dir = tmp_path / "index"
    assert make_index(photos, index_dir, model) == 0
    with PhotoIndex.open(index_dir) as index:
        reference = stored_embeddings(index)
    # a fresh index whose first run was "interrupted": process 1 had finished one part (shard + row list), process
    # 0 only the shard of another (no row list: unfinished)
    fresh = tmp_path / "fresh"
    found = {r.path: r for r in find_photos(photos)[0]}
    assert {"animated.gif", "chelsea.jpg", "trips/coffee.jpg"} <= set(found)
    assert make_index(photos, fresh, model) == 0  # the skeleton and a full build ...
    for path in (fresh / "shards").iterdir():  # ... emptied again, as if nothing had been committed
        path.unlink()
    with sqlite3.connect(fresh / "catalog.sqlite") as db:
        db.execute("DELETE FROM photos")
        db.execute("DELETE FROM shards")
        db.execute("DELETE FROM skipped")
    (fresh / PARTS).mkdir()
    finished = ["animated.gif", "chelsea.jpg"]
    chunk = Chunk(
        records=[found[p] for p in finished], embeddings=[torch.from_numpy(np.stack([reference[p] for p in finished]))]
    )
    write_part(fresh / PARTS, "part-00001-000000-aaaa", chunk)
    write_part(
        fresh / PARTS,
        "part-00000-000000-bbbb",
        Chunk(records=[found["trips/coffee.jpg"]], embeddings=[torch.zeros(1, 32)]),
    )
    (fresh / PARTS / "part-00000-000000-bbbb.json").unlink()  # unfinished
    capsys.readouterr()
    assert make_index(photos, fresh, model) == 0
    out = capsys.readouterr().out
    assert f"{INDEXED} photos indexed ({INDEXED - 2} added, 0 re-embedded, 0 forgotten, 2 unchanged)" in out
    assert not (fresh / PARTS).exists()
    with PhotoIndex.open(fresh) as index:
        merged = stored_embeddings(index)
    assert sorted(merged) == sorted(reference) and all(np.array_equal(merged[p], reference[p]) for p in reference)
