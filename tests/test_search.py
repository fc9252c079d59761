"""Photo search end to end: index a folder of real photos (skimage.data, shrunk) in every format the indexer reads,
query it by text and by photo, and check the scores against a by-hand cosine with the model; incremental updates,
interrupt and resume, a full disk, compaction, the ANN index, the Python API and every refusal of the issue."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import signal
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from cli_runner import run_console_script, start_console_script
from conftest import tiny_image_processor, tiny_longclip_config
from PIL import Image, ImageOps
from safetensors.torch import save_file
from skimage import data

from modeling_longclip import LongCLIPModel, LongCLIPProcessor
from modeling_longclip.converters.clip_preprocessing import build_clip_tokenizer
from modeling_longclip.search import PhotoIndex, SearchHit, SearchIndexError, storage
from modeling_longclip.search.cli import INDEX_KEPT, ann_main, index_main, info_main, query_main
from modeling_longclip.search.photos import find_photos

SCENES = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field", "camera", "coins")
EXIF_ORIENTATION = 0x0112


def scene(name: str, size: int = 48) -> Image.Image:
    image = Image.fromarray(getattr(data, name)()).convert("RGB")
    return image.resize((size + 16, size), Image.BICUBIC)  # landscape, so a rotation is visible to the model


def save_rotated_twin(image: Image.Image, path: Path) -> None:
    """Pixels stored turned a quarter (as a phone does), with EXIF orientation 6 saying how to show them upright."""
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    image.transpose(Image.Transpose.ROTATE_90).save(path, exif=exif)


def write_collection(root: Path) -> Path:
    """12 decodable photos in nested folders, one broken file, a hidden folder and a link loop."""
    photos = root / "photos"
    (photos / "trips" / "2024").mkdir(parents=True)
    (photos / ".thumbnails").mkdir()
    for i, name in enumerate(SCENES[:6]):
        scene(name).save(photos / ("trips" if i % 2 else "") / f"{name}.jpg", quality=95)
    scene("camera").save(photos / "trips" / "2024" / "camera.PNG")
    scene("coins").save(photos / "trips" / "2024" / "coins.webp")
    scene("astronaut").save(photos / "astronaut.bmp")
    scene("coffee").save(photos / "trips" / "coffee.tiff")
    frames = [scene("rocket"), scene("chelsea")]
    frames[0].save(photos / "animated.gif", save_all=True, append_images=frames[1:])
    save_rotated_twin(scene("chelsea"), photos / "trips" / "chelsea-rotated.JPEG")
    (photos / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (photos / "notes.txt").write_text("not a photo")
    scene("coins").save(photos / ".thumbnails" / "hidden.jpg")
    os.symlink("../..", photos / "trips" / "2024" / "loop")  # a link back to the root: walked once
    return photos


def tiny_model_folder(folder: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    LongCLIPModel(tiny_longclip_config()).save_pretrained(folder)
    LongCLIPProcessor(tiny_image_processor(), build_clip_tokenizer(248)).save_pretrained(folder)
    return folder


def viewer_image(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return ImageOps.exif_transpose(image).convert("RGB")


@torch.no_grad()
def by_hand_scores(model, processor, text_inputs: dict, photos: Path, paths: list[str]) -> dict[str, float]:
    """Cosine of the model's own text and image features, computed without the search package."""
    text = F.normalize(pooled(model.get_text_features(**text_inputs)).float(), dim=-1)[0]
    scores = {}
    for path in paths:
        pixels = processor(images=[viewer_image(photos / path)], return_tensors="pt")
        inputs = {key: value for key, value in pixels.items() if isinstance(value, torch.Tensor)}
        image = F.normalize(pooled(model.get_image_features(**inputs)).float(), dim=-1)[0]
        scores[path] = float(text @ image)
    return scores


def pooled(output) -> torch.Tensor:
    """transformers 5 returns a ModelOutput from get_*_features where 4.x returned the tensor."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def ranked(scores: dict[str, float], k: int) -> list[tuple[str, float]]:
    return sorted(scores.items(), key=lambda item: -item[1])[:k]


def stored_embeddings(index) -> dict[str, np.ndarray]:
    """path -> the float16 embedding an index stores (what two builds must agree on)."""
    out = {}
    arrays = {name: array for name, array, _ in index._shards}
    for path, shard, row in index.catalog.query("SELECT path, shard, row FROM photos"):
        out[path] = np.asarray(arrays[shard][row])
    return out


# -- the shared collection: built once by the console script, read by the tests below --------------------------------

ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # tiny models on a busy 2-core machine: extra threads only wait for each other


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


INDEXED = 12  # the decodable photos of write_collection
LONG_QUERY = " ".join(["a ginger cat lies on a wooden table next to a cup of coffee under a red rocket"] * 20)


def make_index(photos: Path, index: Path, model: Path, *extra) -> int:
    return index_main([str(photos), "--model", str(model), "--index", str(index), "--no-progress", *extra])


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("search")
    photos, model = write_collection(root), tiny_model_folder(root / "model")
    run = run_console_script(
        "longclip-search",
        "index",
        photos,
        "--model",
        model,
        "--index",
        root / "index",
        "--batch-size",
        "4",
        env=ONE_THREAD,
    )
    return {"root": root, "photos": photos, "model": model, "index": root / "index", "run": run}


def test_index_walks_every_format_reports_progress_and_names_the_broken_file(built):
    run = built["run"]
    assert run.returncode == 0, run.stderr[-3000:]
    assert "img/s" in run.stderr and "Traceback" not in run.stderr
    assert f"{INDEXED} photos indexed ({INDEXED} added, 0 re-embedded, 0 forgotten, 0 unchanged)" in run.stdout
    assert "skipped (cannot decode) broken.jpg: cannot identify image file" in run.stdout
    assert "1 files could not be decoded and were skipped" in run.stdout
    assert "time: decoding" in run.stdout and "model" in run.stdout
    with PhotoIndex.open(built["index"]) as index:
        assert len(index) == INDEXED
        paths = index.paths()
    assert "trips/2024/camera.PNG" in paths and "animated.gif" in paths and "trips/chelsea-rotated.JPEG" in paths
    assert not any("loop" in p or ".thumbnails" in p or p.endswith(".txt") for p in paths)


def test_text_query_scores_equal_a_by_hand_cosine(built, capsys):
    model = LongCLIPModel.from_pretrained(built["model"]).eval()
    processor = LongCLIPProcessor.from_pretrained(built["model"])
    query = "a ginger cat on a sofa"
    assert query_main([str(built["index"]), query, "-k", "5", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    with PhotoIndex.open(built["index"]) as index:
        expected = by_hand_scores(model, processor, processor(text=[query]), built["photos"], index.paths())
    assert [hit["path"] for hit in hits] == [path for path, _ in ranked(expected, 5)]
    np.testing.assert_allclose([hit["score"] for hit in hits], [s for _, s in ranked(expected, 5)], atol=2e-3)

    assert query_main([str(built["index"]), query, "-k", "3"]) == 0  # the table
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["rank", "score", "path"] and table[1].split()[2] == hits[0]["path"]


def test_a_query_past_248_tokens_is_read_in_windows_and_says_so_once(built, capsys):
    model = LongCLIPModel.from_pretrained(built["model"]).eval()
    processor = LongCLIPProcessor.from_pretrained(built["model"])
    assert query_main([str(built["index"]), LONG_QUERY, "-k", "3", "--json"]) == 0
    out, err = capsys.readouterr()
    tokens = processor.count_tokens([LONG_QUERY])[0]
    assert err.count("note:") == 1 and f"the query has {tokens} tokens, more than 248" in err and "window" in err
    text = model.encode_text([LONG_QUERY], processor=processor, long_text="window")[0]
    with PhotoIndex.open(built["index"]) as index:
        paths = index.paths()
        assert index.text_limit == 248 and index.count_tokens(LONG_QUERY) == tokens
    images = torch.cat([model.encode_image([viewer_image(built["photos"] / p)], processor=processor) for p in paths])
    expected = ranked(dict(zip(paths, (images @ text).tolist())), 3)
    hits = json.loads(out)
    assert [h["path"] for h in hits] == [p for p, _ in expected]
    np.testing.assert_allclose([h["score"] for h in hits], [s for _, s in expected], atol=2e-3)


def test_image_query_applies_exif_orientation_like_a_viewer(built, capsys):
    photos = built["photos"]
    assert query_main([str(built["index"]), "--image", str(photos / "chelsea.jpg"), "-k", "2", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert hits[0] == {"path": "chelsea.jpg", "score": pytest.approx(1.0, abs=1e-6)}
    # the twin stored turned a quarter with EXIF orientation 6 is the nearest other photo, as a viewer shows it
    assert hits[1]["path"] == "trips/chelsea-rotated.JPEG" and hits[1]["score"] > 0.99
    with PhotoIndex.open(built["index"]) as index:
        turned = index.embed_image(Image.open(photos / "trips" / "chelsea-rotated.JPEG").convert("RGB"))
        upright = index.embed_image(photos / "trips" / "chelsea-rotated.JPEG")
        assert float(turned @ upright) < hits[1]["score"] - 0.01  # without the EXIF turn it would be another picture


def test_the_gif_is_indexed_by_its_first_frame(built):
    with PhotoIndex.open(built["index"]) as index:
        first = index.embed_image(scene("rocket"))
        hits = index.search_vector(first, k=1)
    assert hits[0].path in ("animated.gif", "trips/rocket.jpg") and hits[0].score > 0.98


def test_python_api(built):
    with PhotoIndex.open(built["index"]) as index:
        assert index.photos_root == built["photos"].resolve() and len(index) == INDEXED and index.dim == 32
        hits = index.search(text="an astronaut", k=3)
        assert len(hits) == 3 and all(isinstance(h, SearchHit) for h in hits)
        assert hits[0].score >= hits[1].score >= hits[2].score
        assert index.resolve("trips/2024/camera.PNG") == built["photos"].resolve() / "trips/2024/camera.PNG"
        for outside in ("../model/config.json", "notes.txt", "broken.jpg"):
            with pytest.raises(SearchIndexError, match="not a photo of this index"):
                index.resolve(outside)
        assert index.search(image=built["photos"] / "chelsea.jpg", k=1)[0].path == "chelsea.jpg"
        with pytest.raises(SearchIndexError, match="one of them"):
            index.search(text="a", image=built["photos"] / "chelsea.jpg")
        info = index.info()
    assert info["photos"] == INDEXED and info["skipped"] == 1 and info["embedding_dim"] == 32


# -- changes, interrupts, full disks -----------------------------------------------------------------------------


def copy_collection(built, tmp_path) -> Path:
    photos = tmp_path / "photos"
    shutil.copytree(built["photos"], photos, symlinks=True)
    return photos


def test_update_embeds_only_new_and_changed_files_and_forgets_deleted_ones(built, tmp_path, capsys):
    photos = copy_collection(built, tmp_path)
    index_dir = tmp_path / "index"
    assert make_index(photos, index_dir, built["model"]) == 0
    with PhotoIndex.open(index_dir) as index:
        before = dict(index.catalog.query("SELECT path, shard || ':' || row FROM photos"))
    capsys.readouterr()
    (photos / "rocket.jpg").unlink() if (photos / "rocket.jpg").exists() else (
        photos / "trips" / "rocket.jpg"
    ).unlink()
    scene("coffee").transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(photos / "astronaut.jpg")  # changed content
    scene("hubble_deep_field", 40).save(photos / "trips" / "new.png")
    assert make_index(photos, index_dir, built["model"]) == 0
    out = capsys.readouterr().out
    assert f"{INDEXED} photos indexed (1 added, 1 re-embedded, 1 forgotten, {INDEXED - 2} unchanged)" in out
    assert "1 unchanged files that could not be decoded before were not retried" in out
    with PhotoIndex.open(index_dir) as index:
        after = dict(index.catalog.query("SELECT path, shard || ':' || row FROM photos"))
        assert index.search(image=photos / "astronaut.jpg", k=1)[0].path == "astronaut.jpg"
    unchanged = set(before) - {"astronaut.jpg", "rocket.jpg", "trips/rocket.jpg"}
    assert {p: after[p] for p in unchanged} == {p: before[p] for p in unchanged}  # not re-embedded, same rows
    assert "trips/new.png" in after and not {"rocket.jpg", "trips/rocket.jpg"} & set(after)


def clean_build(photos: Path, model: Path, index_dir: Path, *chunking) -> dict[str, np.ndarray]:
    assert make_index(photos, index_dir, model, *(chunking or CHUNKING)) == 0
    with PhotoIndex.open(index_dir) as index:
        return stored_embeddings(index)


CHUNKING = ("--batch-size", "2", "--chunk-size", "4")


def many_photos(root: Path, count: int) -> Path:
    rng = np.random.default_rng(0)
    photos = root / "photos"
    photos.mkdir()
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(photos / f"{i:04d}.png")
    return photos


def test_sigterm_stops_within_a_chunk_and_the_next_run_continues_to_a_clean_build(built, tmp_path):
    photos = many_photos(tmp_path, 240)
    index_dir = tmp_path / "index"
    chunking = ("--batch-size", "4", "--chunk-size", "24")
    args = ["index", photos, "--model", built["model"], "--index", index_dir, *chunking]
    process = start_console_script("longclip-search", *args, "--num-workers", "0", env=ONE_THREAD)
    catalog = index_dir / "catalog.sqlite"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if catalog.exists() and committed(catalog) >= 24:
            break
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr[-2000:]
    assert stderr.strip().splitlines()[-1] == "interrupted (SIGTERM): " + INDEX_KEPT
    kept = committed(catalog)
    assert 24 <= kept < 240 and kept % 24 == 0  # whole chunks only
    assert not list((index_dir / "shards").glob(".*"))  # no half-written shard
    assert make_index(photos, index_dir, built["model"], *chunking) == 0
    with PhotoIndex.open(index_dir) as index:
        resumed = stored_embeddings(index)
    clean = clean_build(photos, built["model"], tmp_path / "clean", *chunking)
    assert sorted(resumed) == sorted(clean) and len(clean) == 240
    assert all(np.array_equal(resumed[p], clean[p]) for p in clean)


def committed(catalog: Path) -> int:
    with contextlib.closing(sqlite3.connect(f"{catalog.as_uri()}?mode=ro", uri=True)) as db:
        try:
            return db.execute("SELECT COUNT(*) FROM photos").fetchone()[0]
        except sqlite3.Error:
            return 0


def test_a_full_disk_during_a_chunk_commits_nothing_of_it_and_the_index_stays_usable(
    built, tmp_path, monkeypatch, capsys
):
    photos = many_photos(tmp_path, 12)
    index_dir = tmp_path / "index"
    calls = []

    def full_disk(tensors, filename, metadata=None):
        calls.append(filename)
        if len(calls) == 2:
            Path(filename).write_bytes(b"\0" * 100)  # a partial file, as a real full disk leaves it
            raise OSError(errno.ENOSPC, "No space left on device")
        return save_file(tensors, filename, metadata=metadata)

    monkeypatch.setattr(storage, "save_file", full_disk)
    assert make_index(photos, index_dir, built["model"], *CHUNKING) == 2
    err = one_error_line(capsys)
    assert err.startswith(f"error: {index_dir / 'shards'}/shard-")
    assert "No space left on device; the chunk in progress (4 photos) was not committed" in err
    assert "the 4 photos committed before it are kept" in err
    assert len(list((index_dir / "shards").iterdir())) == 1  # neither the partial file nor the renamed shard
    with PhotoIndex.open(index_dir) as index:
        assert len(index) == 4 and len(index.search(text="noise", k=10)) == 4
    monkeypatch.undo()
    with PhotoIndex.open(index_dir) as index:
        resumed = index.update(progress=False, batch_size=2, chunk_size=4)
        assert resumed.added == 8 and len(index) == 12
        assert stored_embeddings(index).keys() == clean_build(photos, built["model"], tmp_path / "clean").keys()


def test_shards_of_mostly_deleted_photos_are_compacted(built, tmp_path):
    photos = many_photos(tmp_path, 16)
    index_dir = tmp_path / "index"
    with PhotoIndex.build(photos, index_dir, built["model"], batch_size=4, chunk_size=8, progress=False) as index:
        assert index.info()["shards"] == 2
        probe = index.embed_image(photos / "0007.png")
        for i in range(6):
            (photos / f"{i:04d}.png").unlink()  # 6 of the first shard's 8 rows die
        report = index.update(batch_size=4, chunk_size=8, progress=False)
        assert report.removed == 6 and report.compacted_shards == 1
        info = index.info()
        assert info["photos"] == 10 and info["dead_rows"] == 0 and info["shards"] == 2
        assert index.search_vector(probe, k=1) == [SearchHit("0007.png", pytest.approx(1.0, abs=1e-6))]


# -- the ANN index -----------------------------------------------------------------------------------------------


def test_ann_index_is_built_with_its_recall_used_on_request_and_dropped_when_the_index_changes(
    built, tmp_path, capsys
):
    photos = copy_collection(built, tmp_path)
    index_dir = tmp_path / "index"
    assert make_index(photos, index_dir, built["model"], "--ann") == 0
    out = capsys.readouterr().out
    assert re.search(r"ANN index: HNSW \(M 32, efConstruction 80, efSearch \d+\) over 12 photos", out)
    assert "recall@10 against exact search 1.000 on 12 queries around indexed photos (target 0.95)" in out
    results = []
    for flag in ([], ["--ann"]):
        assert query_main([str(index_dir), "a cup of coffee", "-k", "4", "--json", *flag]) == 0
        results.append(json.loads(capsys.readouterr().out))
    assert results[1] == results[0]  # the same photos, and scores re-computed exactly
    assert ann_main([str(index_dir), "--kind", "ivf"]) == 0
    assert "ANN index: IVF (nlist" in capsys.readouterr().out
    scene("coins", 40).save(photos / "more.png")
    assert make_index(photos, index_dir, built["model"]) == 0
    assert not (index_dir / "ann").exists()
    capsys.readouterr()
    assert query_main([str(index_dir), "coffee", "--ann"]) == 2
    assert one_error_line(capsys) == f"error: {index_dir}: no ANN index; build one with longclip-search ann."
    assert info_main([str(index_dir)]) == 0
    assert "ANN index:   none" in capsys.readouterr().out


# -- refusals: one line, exit 2, nothing written -----------------------------------------------------------------


PROGRESS_BAR = re.compile(r"^[\w ]+:\s+\d+%\|")  # transformers' loading bars, tiny_model_folder's writing bar


def one_error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.strip().splitlines() if not PROGRESS_BAR.match(line)]
    assert len(err) == 1, err
    return err[0]


def test_bad_photo_folders_model_folders_and_index_folders_are_refused(built, tmp_path, capsys):
    model, index_dir = built["model"], tmp_path / "index"
    assert make_index(tmp_path / "missing", index_dir, model) == 2
    assert one_error_line(capsys) == f"error: {tmp_path / 'missing'}: no such photos folder."
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "sub" / "notes.txt").write_text("x")
    assert make_index(tmp_path / "empty", index_dir, model) == 2
    assert one_error_line(capsys).startswith(f"error: {tmp_path / 'empty'}: no images found (bmp gif jpeg jpg png")
    (tmp_path / "not-a-model").mkdir()
    assert make_index(built["photos"], index_dir, tmp_path / "not-a-model") == 2
    line = one_error_line(capsys)  # common/loading.py's wording
    assert line.startswith(f"error: {tmp_path / 'not-a-model'}: ") and line.endswith("model folder (no config.json).")
    (tmp_path / "bad-model").mkdir()
    (tmp_path / "bad-model" / "config.json").write_text('{"model_type": "nonsense"}')
    assert make_index(built["photos"], index_dir, tmp_path / "bad-model") == 2
    assert one_error_line(capsys).startswith(
        f"error: {tmp_path / 'bad-model'}: cannot load the model or its processor"
    )
    (tmp_path / "a-file").write_text("x")
    assert make_index(built["photos"], tmp_path / "a-file", model) == 2
    assert one_error_line(capsys) == f"error: {tmp_path / 'a-file'}: is a file, not an index folder."
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "mine.txt").write_text("x")
    assert make_index(built["photos"], tmp_path / "busy", model) == 2
    assert "not a photo index (no manifest.json)" in one_error_line(capsys)
    assert not index_dir.exists() and sorted(p.name for p in (tmp_path / "busy").iterdir()) == ["mine.txt"]

    other = tiny_model_folder(tmp_path / "other-model", seed=1)
    assert make_index(built["photos"], built["index"], other) == 2
    line = one_error_line(capsys)
    assert line.startswith(f"error: {built['index']}: built with another model ({model.resolve()}, fingerprint ")
    assert query_main([str(built["index"]), "a cat", "--model", str(other)]) == 2
    assert "is another model (fingerprint" in one_error_line(capsys)
    assert make_index(built["photos"].parent / "model", built["index"], model) == 2  # another photos root
    assert one_error_line(capsys) == f"error: {built['index']}: indexes {built['photos']}, not {model.resolve()}."


def test_a_copied_model_folder_is_the_same_model_and_an_edited_one_is_not(built, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(built["model"], copy)
    with PhotoIndex.open(built["index"], copy) as index:
        assert len(index) == INDEXED
    config = json.loads((copy / "preprocessor_config.json").read_text())
    config["image_mean"] = [0.5, 0.5, 0.5]
    (copy / "preprocessor_config.json").write_text(json.dumps(config))
    assert query_main([str(built["index"]), "a cat", "--model", str(copy)]) == 2
    assert "is another model" in one_error_line(capsys)


def test_damaged_indexes_and_bad_queries_are_refused(built, tmp_path, capsys):
    damaged = tmp_path / "index"
    shutil.copytree(built["index"], damaged)
    good = str(built["index"])
    with pytest.raises(SystemExit) as usage:
        query_main([good, "a cat", "-k", "0"])
    assert usage.value.code == 2
    assert "argument -k: must be a positive whole number, got '0'" in one_error_line(capsys)
    assert query_main([good, "   "]) == 2
    assert one_error_line(capsys) == "error: the query text is empty."
    assert query_main([good, "--image", str(built["photos"] / "notes.txt")]) == 2
    assert one_error_line(capsys).startswith(f"error: {built['photos'] / 'notes.txt'}: cannot read the query image")
    assert query_main([good, "--image", str(tmp_path / "gone.jpg")]) == 2
    assert one_error_line(capsys).startswith(f"error: {tmp_path / 'gone.jpg'}: cannot read the query image")
    assert query_main([str(tmp_path / "nowhere"), "a cat"]) == 2
    assert one_error_line(capsys) == f"error: {tmp_path / 'nowhere'}: no such index folder."

    shard = next((damaged / "shards").iterdir())
    shard.write_bytes(shard.read_bytes()[:-10])
    assert query_main([str(damaged), "a cat"]) == 2
    assert one_error_line(capsys).startswith(f"error: {shard}: damaged shard")
    (damaged / "catalog.sqlite").write_bytes(b"garbage" * 100)
    assert query_main([str(damaged), "a cat"]) == 2
    assert one_error_line(capsys).startswith(f"error: {damaged / 'catalog.sqlite'}: damaged catalog")
    (damaged / "manifest.json").write_text("{ not json")
    assert query_main([str(damaged), "a cat"]) == 2
    assert one_error_line(capsys).startswith(f"error: {damaged / 'manifest.json'}: damaged manifest")
    assert make_index(built["photos"], damaged, built["model"]) == 2
    assert one_error_line(capsys).startswith(f"error: {damaged / 'manifest.json'}: damaged manifest")


def test_the_walk_survives_link_loops_and_skips_the_index_inside_the_photos(tmp_path):
    photos = tmp_path / "photos"
    (photos / "a" / "b").mkdir(parents=True)
    scene("coins", 16).save(photos / "a" / "b" / "x.JPG")
    os.symlink(photos / "a", photos / "a" / "b" / "up")  # a -> b -> up -> a ...
    os.symlink(photos / "a" / "b", photos / "alias")  # a second way into b: walked once
    os.symlink(tmp_path / "gone.jpg", photos / "dangling.jpg")
    (photos / "index").mkdir()
    scene("coins", 16).save(photos / "index" / "y.jpg")
    scene("coins", 16).save(os.path.join(os.fsencode(photos), b"caf\xe9.jpg"))  # a Latin-1 name, not UTF-8
    found, problems = find_photos(photos, exclude=photos / "index")
    assert [r.path for r in found] in (["a/b/x.JPG"], ["alias/x.JPG"])  # one real folder, one walk
    assert sorted(problems) == [
        f"{photos / 'caf'}\\udce9.jpg: name is not valid UTF-8",
        f"{photos / 'dangling.jpg'}: No such file or directory",
    ]
