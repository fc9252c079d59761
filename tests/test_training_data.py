"""Training data: every loader layout (`training/data.py`) and the lazy, skip-and-count collator (`training/collator.py`).

Real photos from `skimage.data` (resized to 48 px, saved as JPEG / PNG in tmp_path), generated multi-sentence captions
(some longer than 77 tokens), the real CLIP tokenizer at 248 tokens, and a real DataLoader with worker processes.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import os
import random
import tarfile
from pathlib import Path

import datasets
import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

from modeling_longclip.common.caption_data import (
    SHAREGPT4V_TEST_RECORDS,
    DataError,
    expand_braces,
    load_caption_file,
    load_imagefolder,
    load_sharegpt4v,
    load_webdataset,
    short_caption_of,
)
from modeling_longclip.training.collator import SKIP_REASONS, ImageCaptionCollator

PHOTO_SIZE = 48

SUBJECTS = {
    "astronaut": "A smiling astronaut in a white spacesuit holds a helmet in front of a flag",
    "chelsea": "A ginger tabby cat looks to the side in front of a grey background",
    "coffee": "A cup of coffee with latte art sits on a white saucer next to a spoon",
    "rocket": "A tall rocket stands on its launch pad under a clear blue sky",
    "camera": "A man in a dark coat looks through a camera on a tripod in a park",
    "hubble_deep_field": "Hundreds of faint galaxies are scattered across a black sky",
    "page": "A scanned page of printed text with uneven lighting across the paper",
    "retina": "A fundus photograph of a human retina with branching red blood vessels",
}

DETAILS = [
    "The light comes from the upper left and casts soft shadows",
    "Fine grain and small compression artifacts are visible in the darker regions",
    "The colors are slightly muted, with warm tones dominating the center",
    "In the background the details fade into a blurred, out of focus area",
    "The framing is tight, and the main subject fills most of the picture",
    "Thin edges and textures stand out clearly against the smoother surfaces",
    "A faint vignette darkens the corners of the frame",
    "Nothing in the scene suggests motion, and the composition feels calm and balanced",
    "Small highlights reflect on the glossy parts of the surfaces",
    "The overall contrast is moderate, neither washed out nor harsh",
]

# Number of detail sentences per photo: 6-7 make captions of ~100-120 CLIP tokens (past CLIP's 77, within 248).
N_DETAILS = {
    "astronaut": 7,
    "chelsea": 1,
    "coffee": 2,
    "rocket": 6,
    "camera": 0,
    "hubble_deep_field": 3,
    "page": 1,
    "retina": 4,
}


def caption_for(name: str, n_details: int | None = None) -> str:
    """A deterministic multi-sentence caption: the subject sentence, then `n_details` generated detail sentences."""
    n = N_DETAILS[name] if n_details is None else n_details
    rng = random.Random(f"caption-{name}-{n}")  # str seeds hash with sha512: stable across runs and interpreters
    sentences = [SUBJECTS[name], *rng.sample(DETAILS, n)]
    return ". ".join(sentences) + "."


@functools.cache
def photo(name: str) -> Image.Image:
    """A real photo from skimage.data as a 48x48 RGB image (grayscale ones converted)."""
    array = getattr(skimage.data, name)()
    return Image.fromarray(np.asarray(array)).convert("RGB").resize((PHOTO_SIZE, PHOTO_SIZE), Image.BICUBIC)


def encode(image: Image.Image, fmt: str = "JPEG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, quality=90) if fmt == "JPEG" else image.save(buffer, format=fmt)
    return buffer.getvalue()


def token_ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text)["input_ids"]


def unpadded(batch, key: str, mask_key: str) -> list[list[int]]:
    return [ids[mask.bool()].tolist() for ids, mask in zip(batch[key], batch[mask_key])]


@pytest.fixture(autouse=True)
def isolated_datasets_cache(tmp_path_factory, monkeypatch):
    """Keep `datasets`' Arrow cache out of ~/.cache (read at call time by every builder)."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path_factory.mktemp("hf_datasets_cache"))


@pytest.fixture
def image_dir(tmp_path) -> Path:
    """tmp_path/images with every photo: JPEG for most, PNG for two; plus a corrupt and a truncated JPEG."""
    folder = tmp_path / "images"
    folder.mkdir()
    for name in SUBJECTS:
        ext = "png" if name in ("chelsea", "page") else "jpg"
        (folder / f"{name}.{ext}").write_bytes(encode(photo(name), "PNG" if ext == "png" else "JPEG"))
    (folder / "corrupt.jpg").write_bytes(b"this is not a JPEG, just some garbage bytes\x00\xff" * 20)
    full = encode(photo("retina"))
    (folder / "truncated.jpg").write_bytes(full[: len(full) // 2])
    return folder


def file_of(image_dir: Path, name: str) -> str:
    return next(p.name for p in image_dir.iterdir() if p.stem == name)


def decoded(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


def pixels(processor, images) -> torch.Tensor:
    return processor(images=list(images), return_tensors="pt")["pixel_values"]


def test_generated_captions_are_multi_sentence_and_some_exceed_77_tokens(clip_tokenizer):
    lengths = {name: len(token_ids(clip_tokenizer, caption_for(name))) for name in SUBJECTS}
    assert lengths["astronaut"] > 77 and lengths["rocket"] > 77
    assert max(lengths.values()) < 248  # no truncation warning anywhere below
    assert caption_for("astronaut").count(". ") == 7
    assert caption_for("astronaut") == caption_for("astronaut")  # deterministic


# --------------------------------------------------------------------------------------------------------------------
# 1. load_caption_file: JSON lines / JSON / CSV / TSV
# --------------------------------------------------------------------------------------------------------------------

CUSTOM = {"image": "file", "caption": "text", "short_caption": "brief"}


def caption_records() -> list[dict]:
    """Rows with custom column names, an unused extra column, commas/quotes-free punctuation and one empty short."""
    records = []
    for index, name in enumerate(["astronaut", "chelsea", "coffee", "rocket", "camera"]):
        records.append(
            {
                "file": f"sub dir/{name}.jpg",
                "text": caption_for(name),
                "brief": "" if name == "coffee" else f"{name}, briefly",
                "extra": index,
            }
        )
    return records


def write_caption_file(path: Path, records: list[dict]) -> Path:
    suffix = path.suffix
    columns = list(records[0])
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    elif suffix == ".json":
        path.write_text(json.dumps(records, indent=1), encoding="utf-8")
    elif suffix == ".csv":
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(records)
    elif suffix == ".tsv":  # plain TSV: tab separated, no quoting (the captions hold no tab, newline or quote)
        lines = ["\t".join(columns), *("\t".join(str(r[c]) for c in columns) for r in records)]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv", ".tsv"])
def test_load_caption_file_custom_columns(tmp_path, suffix):
    records = caption_records()
    path = write_caption_file(tmp_path / f"captions{suffix}", records)
    dataset = load_caption_file(path, image_column="file", caption_column="text", short_caption_column="brief")
    assert dataset.column_names == ["image", "caption", "short_caption"]
    assert len(dataset) == len(records)
    assert dataset["image"] == [r["file"] for r in records]
    assert dataset["caption"] == [r["text"] for r in records]
    shorts = dataset["short_caption"]
    # An empty cell is "" in JSON and missing (None) in CSV / TSV; the collator treats both as "derive it".
    assert shorts[2] in ("", None)
    assert [s for i, s in enumerate(shorts) if i != 2] == [r["brief"] for i, r in enumerate(records) if i != 2]
    assert dataset[1] == {
        "image": "sub dir/chelsea.jpg",
        "caption": caption_for("chelsea"),
        "short_caption": "chelsea, briefly",
    }


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv", ".tsv"])
def test_load_caption_file_default_columns_drop_the_rest(tmp_path, suffix):
    records = [
        {"id": i, "image": f"{name}.jpg", "caption": caption_for(name), "score": 0.5}
        for i, name in enumerate(SUBJECTS)
    ]
    dataset = load_caption_file(write_caption_file(tmp_path / f"c{suffix}", records))
    assert dataset.column_names == ["image", "caption"]
    assert dataset["image"] == [f"{name}.jpg" for name in SUBJECTS]
    assert dataset["caption"] == [caption_for(name) for name in SUBJECTS]


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
@pytest.mark.parametrize(
    "kwargs, missing, flag",
    [
        (dict(image_column="picture", caption_column="text"), "picture", "--image_column"),
        (dict(image_column="file", caption_column="caption"), "caption", "--caption_column"),
        (
            dict(image_column="file", caption_column="text", short_caption_column="short"),
            "short",
            "--short_caption_column",
        ),
    ],
)
def test_load_caption_file_missing_column_names_it_and_lists_columns(tmp_path, suffix, kwargs, missing, flag):
    path = write_caption_file(tmp_path / f"captions{suffix}", caption_records())
    with pytest.raises(DataError) as error:
        load_caption_file(path, **kwargs)
    message = str(error.value)
    assert f"`{missing}`" in message and flag in message and str(path) in message
    listed = message[message.index("(columns:") :]
    # The listing shows the columns as they are at that point (earlier ones may already be renamed).
    for column in ("brief", "extra"):
        assert repr(column) in listed
    assert ("'file'" in listed) or ("'image'" in listed)


def test_load_caption_file_missing_file(tmp_path):
    path = tmp_path / "nowhere" / "captions.jsonl"
    with pytest.raises(DataError, match="no such file") as error:
        load_caption_file(path)
    assert str(path) in str(error.value)


@pytest.mark.parametrize(
    "name, content, message",
    [
        (
            "broken.jsonl",
            b'{"image": "a.jpg", "caption": "ok"}\n\n{"image": "b.jpg", "caption": "x"}\n{not json at all\n[[[',
            ":4: not valid JSON lines (Expecting property name enclosed in double quotes at column 2).",
        ),
        ("broken.json", b'[{"image": "a.jpg",\n  "caption": "cut off', ":2: not valid JSON (Unterminated string"),
        (
            "pretty.json",
            b'[\n  {"image": "a.jpg", "caption": "ok"},\n  {"image": "b.jpg" "caption": "x"}\n]',
            ":3: not valid JSON (Expecting ',' delimiter at column 21).",
        ),
        ("broken.csv", b'image,caption\n"a.jpg,never closed\n\x00\xff,,,,\n', ": cannot be read as CSV"),
    ],
)
def test_load_caption_file_unparseable_file_names_it_and_the_line(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError) as error:
        load_caption_file(path)
    assert str(error.value).startswith(str(path) + message)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("empty.jsonl", b"", ": the file is empty (no rows to read)."),
        ("blank.jsonl", b"\n  \n", ": the file is empty (no rows to read)."),
        ("empty.csv", b"", ": the file is empty (no rows to read)."),
        ("header.csv", b"image,caption\n", ": no rows (the file holds a header or an empty list only)."),
        ("list.json", b"[]", ": no rows (the file holds a header or an empty list only)."),
    ],
)
def test_load_caption_file_without_rows_says_so(tmp_path, name, content, message):
    """An empty file used to be reported as "not valid JSON" (or as a CSV parse error)."""
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError) as error:
        load_caption_file(path)
    assert str(error.value) == str(path) + message


def test_load_caption_file_tsv_keeps_quotes_verbatim(tmp_path):
    captions = [
        '"Hello" says the sign. It hangs on a door.',
        '"Open 24 hours. A neon sign',
        'A "plain" caption. Nothing odd',
    ]
    lines = ["image\tcaption", *(f"{i}.jpg\t{c}" for i, c in enumerate(captions))]
    path = tmp_path / "quotes.tsv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    dataset = load_caption_file(path)
    assert dataset["image"] == ["0.jpg", "1.jpg", "2.jpg"]
    assert dataset["caption"] == captions


# --------------------------------------------------------------------------------------------------------------------
# 2. load_sharegpt4v
# --------------------------------------------------------------------------------------------------------------------


def sharegpt_record(index: int) -> dict:
    name = list(SUBJECTS)[index % len(SUBJECTS)]
    return {
        "id": f"sa_{index:06d}",
        "image": f"sam/images_{index // 500}/sa_{index:06d}.jpg",
        "conversations": [
            {"from": "human", "value": "<image>\nWhat is in the photo? Describe it in detail."},
            {
                "from": "gpt",
                "value": f"Record {index}: {caption_for(name, 2)}\nSecond line of {index}.\n\nAfter a blank line",
            },
        ],
    }


@pytest.fixture
def sharegpt_file(tmp_path) -> tuple[Path, list[dict]]:
    records = [sharegpt_record(i) for i in range(SHAREGPT4V_TEST_RECORDS + 3)]
    path = tmp_path / "share-captioner_coco_lcs_sam_1246k_1107.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    return path, records


def test_load_sharegpt4v_train_is_records_after_the_first_1000(sharegpt_file):
    path, records = sharegpt_file
    assert len(records) == 1003
    dataset = load_sharegpt4v(path)
    assert dataset.column_names == ["image", "caption"]
    assert len(dataset) == 3
    assert dataset["image"] == [f"sam/images_2/sa_{i:06d}.jpg" for i in (1000, 1001, 1002)]
    expected = [records[i]["conversations"][1]["value"].replace("\n", " ") for i in (1000, 1001, 1002)]
    assert dataset["caption"] == expected
    assert dataset[0]["caption"].startswith("Record 1000: ") and "\n" not in "".join(dataset["caption"])
    assert dataset[2]["caption"].endswith("Second line of 1002.  After a blank line")


def test_load_sharegpt4v_test_split_is_the_first_1000(sharegpt_file):
    path, records = sharegpt_file
    dataset = load_sharegpt4v(path, split="test")
    assert len(dataset) == 1000
    assert dataset["image"] == [records[i]["image"] for i in range(1000)]
    assert dataset[0]["caption"] == records[0]["conversations"][1]["value"].replace("\n", " ")
    assert dataset[999]["caption"].startswith("Record 999: ")
    assert not set(dataset["image"]) & set(load_sharegpt4v(path)["image"])


@pytest.mark.parametrize(
    "broken, split",
    [
        ({"from": "human", "value": "<image>\nonly a question"}, "train"),  # conversations has no [1]
        ("no conversations key", "train"),
        ({"from": "gpt", "text": "value under the wrong key"}, "train"),
        ({"from": "human", "value": "<image>\nonly a question"}, "test"),
    ],
)
def test_load_sharegpt4v_malformed_record_names_its_index(tmp_path, broken, split):
    records = [sharegpt_record(i) for i in range(1003)]
    index = 1001 if split == "train" else 7
    if broken == "no conversations key":
        del records[index]["conversations"]
    elif broken.get("from") == "human":
        records[index]["conversations"] = [broken]
    else:
        records[index]["conversations"][1] = broken
    path = tmp_path / "share.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    with pytest.raises(DataError, match=rf"record {index} has no `conversations\[1\]\.value`") as error:
        load_sharegpt4v(path, split=split)
    assert str(path) in str(error.value)


def test_load_sharegpt4v_null_caption_value_is_a_data_error(tmp_path):
    records = [sharegpt_record(i) for i in range(1003)]
    records[1002]["conversations"][1]["value"] = None
    path = tmp_path / "share.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    with pytest.raises(DataError, match="record 1002"):
        load_sharegpt4v(path)


def test_load_sharegpt4v_record_without_image_names_its_index(tmp_path):
    records = [sharegpt_record(i) for i in range(1002)]
    del records[1001]["image"]
    path = tmp_path / "share.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    with pytest.raises(DataError, match="record 1001 has no `image` field"):
        load_sharegpt4v(path)


def test_load_sharegpt4v_rejects_non_list_invalid_and_missing_files(tmp_path):
    as_dict = tmp_path / "dict.json"
    as_dict.write_text(json.dumps({"records": [sharegpt_record(i) for i in range(3)]}), encoding="utf-8")
    with pytest.raises(DataError, match="expected a JSON list of ShareGPT4V records, got dict") as error:
        load_sharegpt4v(as_dict)
    assert str(as_dict) in str(error.value)

    invalid = tmp_path / "invalid.json"
    invalid.write_text('[{"id": "x", "image": "a.jpg"', encoding="utf-8")
    with pytest.raises(DataError, match="not valid JSON") as error:
        load_sharegpt4v(invalid)
    assert str(error.value).startswith(f"{invalid}:1: not valid JSON (Expecting ',' delimiter at column 30)")

    with pytest.raises(DataError, match="no such file"):
        load_sharegpt4v(tmp_path / "missing.json")


# --------------------------------------------------------------------------------------------------------------------
# 3. load_imagefolder
# --------------------------------------------------------------------------------------------------------------------


@pytest.fixture
def imagefolder(image_dir) -> Path:
    """An imagefolder: the photos (minus the broken files) plus metadata.jsonl with file_name, text, short."""
    (image_dir / "corrupt.jpg").unlink()
    (image_dir / "truncated.jpg").unlink()
    with (image_dir / "metadata.jsonl").open("w", encoding="utf-8") as handle:
        for name in SUBJECTS:
            row = {"file_name": file_of(image_dir, name), "text": caption_for(name), "short": f"{name} in short"}
            handle.write(json.dumps(row) + "\n")
    return image_dir


def test_load_imagefolder_keeps_images_undecoded(imagefolder):
    dataset = load_imagefolder(imagefolder, caption_column="text", short_caption_column="short")
    assert dataset.column_names == ["image", "caption", "short_caption"]
    assert dataset.features["image"].decode is False
    assert len(dataset) == len(SUBJECTS)
    by_name = {}
    for row in dataset:
        assert isinstance(row["image"], dict) and set(row["image"]) == {"path", "bytes"}
        assert not isinstance(row["image"], Image.Image)
        path = Path(row["image"]["path"])
        assert path.is_file() and path.parent == imagefolder
        by_name[path.stem] = row
    assert set(by_name) == set(SUBJECTS)
    for name, row in by_name.items():
        assert row["caption"] == caption_for(name)
        assert row["short_caption"] == f"{name} in short"
        assert Path(row["image"]["path"]).name == file_of(imagefolder, name)
    # The references decode to the photos that were written (PNG is lossless).
    assert np.array_equal(np.asarray(decoded(Path(by_name["chelsea"]["image"]["path"]))), np.asarray(photo("chelsea")))


def test_load_imagefolder_without_short_column_and_errors(imagefolder, tmp_path):
    dataset = load_imagefolder(imagefolder, caption_column="text")
    assert dataset.column_names == ["image", "caption"]
    assert sorted(dataset["caption"]) == sorted(caption_for(name) for name in SUBJECTS)

    with pytest.raises(DataError, match="no column `caption`") as error:
        load_imagefolder(imagefolder)  # the captions are under "text"
    assert "'text'" in str(error.value) and "--caption_column" in str(error.value)

    bare = tmp_path / "bare"
    bare.mkdir()
    photo("rocket").save(bare / "rocket.jpg")
    with pytest.raises(DataError, match="needs metadata.jsonl") as error:
        load_imagefolder(bare)
    assert str(bare) in str(error.value)


# --------------------------------------------------------------------------------------------------------------------
# 4. expand_braces and load_webdataset
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pattern, expected",
    [
        ("data/{00000..00002}.tar", ["data/00000.tar", "data/00001.tar", "data/00002.tar"]),
        ("{a,b}-{1..2}", ["a-1", "a-2", "b-1", "b-2"]),
        ("data/shard-00007.tar", ["data/shard-00007.tar"]),
        ("s{8..11}.tar", ["s8.tar", "s9.tar", "s10.tar", "s11.tar"]),
        ("s{098..101}.tar", ["s098.tar", "s099.tar", "s100.tar", "s101.tar"]),
        ("/abs/{train,val}/{0..1}.tar", ["/abs/train/0.tar", "/abs/train/1.tar", "/abs/val/0.tar", "/abs/val/1.tar"]),
    ],
)
def test_expand_braces(pattern, expected):
    assert expand_braces(pattern) == expected


def write_shard(path: Path, samples: list[tuple[str, dict[str, bytes]]]) -> None:
    with tarfile.open(path, "w") as tar:
        for key, members in samples:
            for ext, payload in members.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(payload)
                info.mtime = 0
                tar.addfile(info, io.BytesIO(payload))


@pytest.fixture
def shards(tmp_path) -> tuple[Path, list[tuple[str, bytes, str]]]:
    folder = tmp_path / "wds"
    folder.mkdir()
    names = list(SUBJECTS)
    expected = []
    for shard in range(2):
        samples = []
        for k in range(3):
            name = names[shard * 3 + k]
            key = f"{shard:05d}_{k:04d}"
            image = encode(photo(name))
            samples.append((key, {"jpg": image, "txt": caption_for(name).encode("utf-8")}))
            expected.append((key, image, caption_for(name)))
        write_shard(folder / f"shard-{shard:05d}.tar", samples)
    return folder, expected


def test_load_webdataset_streams_every_sample_of_every_shard(shards):
    folder, expected = shards
    stream = load_webdataset(str(folder / "shard-{00000..00001}.tar"))
    assert isinstance(stream, datasets.IterableDataset)
    rows = list(stream)
    assert len(rows) == 6
    assert {tuple(sorted(row)) for row in rows} == {("caption", "image")}
    assert [row["caption"] for row in rows] == [caption for _, _, caption in expected]
    for row, (key, image, _) in zip(rows, expected):
        assert isinstance(row["image"], dict) and row["image"]["bytes"] == image
        assert row["image"]["path"] == f"{key}.jpg"
    assert Image.open(io.BytesIO(rows[0]["image"]["bytes"])).size == (PHOTO_SIZE, PHOTO_SIZE)


def test_load_webdataset_json_captions(tmp_path):
    samples = [
        (f"k{i:03d}", {"png": encode(photo(n), "PNG"), "json": json.dumps({"caption": caption_for(n)}).encode()})
        for i, n in enumerate(["page", "retina"])
    ]
    write_shard(tmp_path / "only.tar", samples)
    rows = list(load_webdataset(str(tmp_path / "only.tar")))
    assert [row["caption"] for row in rows] == [caption_for("page"), caption_for("retina")]
    assert rows[1]["image"]["bytes"] == samples[1][1]["png"]


def test_load_webdataset_missing_shard_is_named(shards):
    folder, _ = shards
    with pytest.raises(DataError, match="1 of 3 shards do not exist") as error:
        load_webdataset(str(folder / "shard-{00000..00002}.tar"))
    assert str(folder / "shard-00002.tar") in str(error.value)


# --------------------------------------------------------------------------------------------------------------------
# 5. short_caption_of
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "caption, short",
    [
        ("A cat sits on a red mat. It is asleep. The mat is worn.", "A cat sits on a red mat"),
        ("A single sentence without any period", "A single sentence without any period"),
        ("One sentence that ends with a period.", "One sentence that ends with a period."),
        (
            "Tools, e.g. hammers and saws, lie on a bench. More text.",
            "Tools, e.g",
        ),  # the original recipe: split(". ")[0]
        ("e.g. foo", "e.g"),
        ("Version 2.0 of the app.Next to it a logo", "Version 2.0 of the app.Next to it a logo"),
        ("A dog.  Two spaces follow. Then more", "A dog"),
        ("", ""),
        (caption_for("astronaut"), SUBJECTS["astronaut"]),
    ],
)
def test_short_caption_of(caption, short):
    assert short_caption_of(caption) == short


# --------------------------------------------------------------------------------------------------------------------
# 6. ImageCaptionCollator with the real Long-CLIP processor
# --------------------------------------------------------------------------------------------------------------------


def test_collator_skips_and_counts_broken_rows(tiny_longclip, clip_tokenizer, image_dir):
    _, processor = tiny_longclip
    astronaut, chelsea, coffee = (image_dir / file_of(image_dir, n) for n in ("astronaut", "chelsea", "coffee"))
    camera_gray = Image.fromarray(skimage.data.camera()).resize((PHOTO_SIZE, PHOTO_SIZE))  # mode "L"
    assert camera_gray.mode == "L"
    rows = [
        {"image": astronaut.name, "caption": caption_for("astronaut")},  # relative to image_root, >77 tokens
        {"image": "no_such_photo.jpg", "caption": caption_for("rocket")},  # missing
        {"image": str(chelsea), "caption": caption_for("chelsea"), "short_caption": "A ginger cat"},  # absolute
        {"image": "corrupt.jpg", "caption": caption_for("page")},  # garbage bytes
        {"image": {"bytes": coffee.read_bytes(), "path": None}, "caption": "  " + caption_for("coffee") + "\n"},
        {"image": "truncated.jpg", "caption": caption_for("retina")},  # JPEG cut in half
        {"image": file_of(image_dir, "rocket"), "caption": "  \t\n "},  # whitespace caption
        {"image": camera_gray, "caption": caption_for("camera"), "short_caption": "   "},  # PIL, blank short
        {"image": file_of(image_dir, "hubble_deep_field"), "caption": None},  # no caption at all
    ]
    collator = ImageCaptionCollator(processor, image_root=image_dir)
    batch = collator(rows)

    assert SKIP_REASONS == ("missing_image", "corrupt_image", "empty_caption")
    assert collator.skips.totals() == [1, 2, 2]  # counted beside the batch, not in it

    kept_images = [decoded(astronaut), decoded(chelsea), decoded(coffee), camera_gray.convert("RGB")]
    kept_captions = [caption_for(n) for n in ("astronaut", "chelsea", "coffee", "camera")]
    # camera's caption is one sentence (no ". "): its short caption is the whole caption, final period included.
    kept_shorts = [SUBJECTS["astronaut"], "A ginger cat", SUBJECTS["coffee"], SUBJECTS["camera"] + "."]

    assert batch["pixel_values"].shape == (4, 3, 32, 32)
    assert torch.allclose(batch["pixel_values"], pixels(processor, kept_images))

    lengths = [len(token_ids(clip_tokenizer, c)) for c in kept_captions]
    assert lengths[0] > 77
    assert batch["input_ids"].shape == (4, max(lengths)) and max(lengths) < 248
    assert batch["attention_mask"].sum(1).tolist() == lengths
    assert unpadded(batch, "input_ids", "attention_mask") == [token_ids(clip_tokenizer, c) for c in kept_captions]

    short_lengths = [len(token_ids(clip_tokenizer, s)) for s in kept_shorts]
    assert batch["short_input_ids"].shape == (4, max(short_lengths))
    assert unpadded(batch, "short_input_ids", "short_attention_mask") == [
        token_ids(clip_tokenizer, s) for s in kept_shorts
    ]
    decoded_short = clip_tokenizer.decode(
        batch["short_input_ids"][0][batch["short_attention_mask"][0].bool()], skip_special_tokens=True
    )
    assert decoded_short.strip() == SUBJECTS["astronaut"].lower()
    assert set(batch) == {"input_ids", "attention_mask", "pixel_values", "short_input_ids", "short_attention_mask"}


def test_collator_accepts_every_image_reference_form(tiny_longclip, image_dir, monkeypatch, tmp_path):
    _, processor = tiny_longclip
    path = image_dir / file_of(image_dir, "rocket")
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # relative paths must resolve against image_root, not the working directory
    caption = caption_for("rocket")
    references = [
        str(path),  # absolute path string
        path,  # absolute Path
        path.name,  # relative to image_root
        {"bytes": path.read_bytes()},  # bytes only
        {"path": path.name, "bytes": None},  # imagefolder / Image(decode=False) style
        {"path": str(path), "bytes": None},
        decoded(path),  # PIL image
    ]
    collator = ImageCaptionCollator(processor, image_root=str(image_dir))
    batch = collator([{"image": r, "caption": caption} for r in references])
    assert collator.skips.totals() == [0, 0, 0]
    expected = pixels(processor, [decoded(path)])
    assert batch["pixel_values"].shape[0] == len(references)
    for row in batch["pixel_values"]:
        assert torch.equal(row, expected[0])

    # Without image_root the relative reference is looked up in the working directory: missing.
    collator = ImageCaptionCollator(processor)
    batch = collator([{"image": path.name, "caption": caption}, {"image": str(path), "caption": caption}])
    assert collator.skips.totals() == [1, 0, 0] and batch["pixel_values"].shape[0] == 1


def test_collator_random_mode_picks_long_or_short_per_sample(tiny_longclip, clip_tokenizer, image_dir):
    _, processor = tiny_longclip
    names = ["astronaut", "chelsea", "coffee", "rocket"]
    rows = [{"image": file_of(image_dir, n), "caption": caption_for(n)} for n in names]
    long_ids = [token_ids(clip_tokenizer, caption_for(n)) for n in names]
    short_ids = [token_ids(clip_tokenizer, SUBJECTS[n]) for n in names]

    def picks(seed: int) -> list[list[str]]:
        collator = ImageCaptionCollator(processor, image_root=image_dir, short_captions="random", seed=seed)
        result = []
        for epoch in range(5):
            collator.epoch = epoch
            batch = collator(rows)
            assert set(batch) == {"input_ids", "attention_mask", "pixel_values"}
            assert batch["pixel_values"].shape[0] == len(rows)
            chosen = []
            for ids, long, short in zip(unpadded(batch, "input_ids", "attention_mask"), long_ids, short_ids):
                assert ids in (long, short)
                chosen.append("long" if ids == long else "short")
            # Padding follows the longest caption actually chosen.
            assert batch["input_ids"].shape[1] == max(
                len(ids) for ids in unpadded(batch, "input_ids", "attention_mask")
            )
            result.append(chosen)
        return result

    first = picks(seed=0)
    flat = [choice for call in first for choice in call]
    assert "long" in flat and "short" in flat
    assert len({tuple(call) for call in first}) > 1  # the choice changes between epochs
    assert picks(seed=0) == first  # deterministic for a seed
    assert picks(seed=1) != first


def test_collator_none_mode_uses_long_captions_only(tiny_longclip, clip_tokenizer, image_dir):
    _, processor = tiny_longclip
    names = ["rocket", "page", "retina"]
    rows = [{"image": file_of(image_dir, n), "caption": caption_for(n), "short_caption": "ignored"} for n in names]
    batch = ImageCaptionCollator(processor, image_root=image_dir, short_captions="none")(rows)
    assert set(batch) == {"input_ids", "attention_mask", "pixel_values"}
    assert unpadded(batch, "input_ids", "attention_mask") == [token_ids(clip_tokenizer, caption_for(n)) for n in names]
    assert batch["input_ids"].shape[1] == max(len(token_ids(clip_tokenizer, caption_for(n))) for n in names)

    with pytest.raises(ValueError, match="short_captions must be"):
        ImageCaptionCollator(processor, short_captions="both")


def test_collator_can_drop_text_masks_for_a_causal_tower_with_the_same_loss(tiny_longclip, image_dir):
    model, processor = tiny_longclip
    assert model.text_padding_mask_optional(processor)
    names = ["rocket", "page", "retina", "coffee"]
    rows = [{"image": file_of(image_dir, n), "caption": caption_for(n) + " and more" * i} for i, n in enumerate(names)]
    masked = ImageCaptionCollator(processor, image_root=image_dir)(rows)
    unmasked = ImageCaptionCollator(processor, image_root=image_dir, drop_text_masks=True)(rows)
    assert set(masked) - set(unmasked) == {"attention_mask", "short_attention_mask"}
    assert masked["attention_mask"].min() == 0  # the batch really has padding
    with torch.no_grad():
        torch.testing.assert_close(model(**unmasked, return_loss=True).loss, model(**masked, return_loss=True).loss)


def test_collator_all_broken_batch_reuses_last_good_row(tiny_longclip, clip_tokenizer, image_dir):
    _, processor = tiny_longclip
    collator = ImageCaptionCollator(processor, image_root=image_dir)
    good = [
        {"image": file_of(image_dir, "chelsea"), "caption": caption_for("chelsea")},
        {"image": file_of(image_dir, "coffee"), "caption": caption_for("coffee")},
    ]
    first = collator(good)
    assert first["pixel_values"].shape[0] == 2

    broken = [
        {"image": "gone.jpg", "caption": caption_for("rocket")},
        {"image": "corrupt.jpg", "caption": caption_for("rocket")},
        {"image": "truncated.jpg", "caption": caption_for("rocket")},
        {"image": file_of(image_dir, "rocket"), "caption": ""},
    ]
    refilled = collator(broken)
    assert collator.skips.totals() == [1, 2, 1]
    assert refilled["pixel_values"].shape[0] == 1
    assert torch.equal(refilled["pixel_values"][0], first["pixel_values"][0])
    assert unpadded(refilled, "input_ids", "attention_mask") == [token_ids(clip_tokenizer, caption_for("chelsea"))]
    assert unpadded(refilled, "short_input_ids", "short_attention_mask") == [
        token_ids(clip_tokenizer, SUBJECTS["chelsea"])
    ]

    again = collator(broken[:1])  # still the same row after a refill
    assert collator.skips.totals() == [2, 2, 1]  # running totals
    assert torch.equal(again["input_ids"], refilled["input_ids"])

    after = collator([{"image": file_of(image_dir, "page"), "caption": caption_for("page")}])
    assert collator.skips.totals() == [2, 2, 1]
    assert unpadded(after, "input_ids", "attention_mask") == [token_ids(clip_tokenizer, caption_for("page"))]


def test_collator_all_broken_first_batch_raises(tiny_longclip, image_dir):
    _, processor = tiny_longclip
    collator = ImageCaptionCollator(processor, image_root=image_dir)
    rows = [
        {"image": "gone.jpg", "caption": "A caption. More."},
        {"image": "corrupt.jpg", "caption": "x"},
        {"image": "x", "caption": " "},
    ]
    with pytest.raises(ValueError, match="first batch is unusable"):
        collator(rows)
    # A later good batch still works.
    batch = collator([{"image": file_of(image_dir, "page"), "caption": "A page."}])
    assert batch["pixel_values"].shape[0] == 1


def test_data_without_a_loadable_image_is_refused_in_one_line(tiny_longclip, image_dir):
    from modeling_longclip.common.errors import DataError

    _, processor = tiny_longclip
    collator = ImageCaptionCollator(processor, image_root=image_dir)
    rows = [{"image": f"gone{i}.jpg", "caption": "A caption."} for i in range(3)] + [
        {"image": "corrupt.jpg", "caption": "x"}
    ]
    with pytest.raises(DataError) as error:
        collator.set_fallback(rows, source="train.jsonl")
    message = str(error.value)
    assert message.startswith("train.jsonl: none of the first 4 rows has a loadable image and a caption (")
    assert (
        f"row 0: missing image {image_dir / 'gone0.jpg'}; row 1: missing image" in message and "... 1 more" in message
    )
    assert f"check --image_root ({image_dir})" in message and "\n" not in message
    with pytest.raises(DataError, match=f"row 0: corrupt image {image_dir / 'corrupt.jpg'}; row 1: empty caption"):
        collator.set_fallback([rows[3], {"image": "x.jpg", "caption": " "}], source="s")


def test_first_skipped_images_are_named_in_the_log(tiny_longclip, image_dir, caplog):
    from modeling_longclip.training.collator import NAMED_SKIPS

    _, processor = tiny_longclip
    collator = ImageCaptionCollator(processor, image_root=image_dir)
    good = {"image": file_of(image_dir, "page"), "caption": "A page."}
    broken = [{"image": "corrupt.jpg", "caption": "x"}] + [{"image": f"gone{i}.jpg", "caption": "x"} for i in range(6)]
    with caplog.at_level("WARNING", logger="modeling_longclip.training.collator"):
        collator([good, *broken[:3], {"image": "gone.jpg", "caption": ""}])
        collator([good, *broken[3:]])
    named = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipped a row")]
    assert len(named) == NAMED_SKIPS == 5
    assert named[0] == f"skipped a row: corrupt image {image_dir / 'corrupt.jpg'}"
    assert named[1] == f"skipped a row: missing image {image_dir / 'gone0.jpg'}"
    assert named[-1].endswith("gone3.jpg (further skips are only counted)")
    assert collator.skips.totals() == [6, 1, 1]  # every skip is still counted


def test_collator_on_imagefolder_and_webdataset_rows(tiny_longclip, clip_tokenizer, imagefolder, shards):
    _, processor = tiny_longclip
    collator = ImageCaptionCollator(processor)  # imagefolder paths are absolute, webdataset rows carry bytes
    folder_rows = list(load_imagefolder(imagefolder, caption_column="text", short_caption_column="short"))[:3]
    batch = collator(folder_rows)
    assert collator.skips.totals() == [0, 0, 0] and batch["pixel_values"].shape[0] == 3
    assert unpadded(batch, "short_input_ids", "short_attention_mask") == [
        token_ids(clip_tokenizer, r["short_caption"]) for r in folder_rows
    ]
    assert torch.allclose(
        batch["pixel_values"], pixels(processor, [decoded(Path(r["image"]["path"])) for r in folder_rows])
    )

    folder, expected = shards
    wds_rows = list(load_webdataset(str(folder / "shard-{00000..00001}.tar")))
    batch = collator(wds_rows)
    assert batch["pixel_values"].shape[0] == 6
    assert torch.allclose(
        batch["pixel_values"],
        pixels(processor, [Image.open(io.BytesIO(image)).convert("RGB") for _, image, _ in expected]),
    )
    assert unpadded(batch, "input_ids", "attention_mask") == [token_ids(clip_tokenizer, c) for _, _, c in expected]


# --------------------------------------------------------------------------------------------------------------------
# 7. Inside a real DataLoader with worker processes
# --------------------------------------------------------------------------------------------------------------------


class PidCollator(ImageCaptionCollator):
    """Records which process decoded the batch (module level, so it pickles into the workers)."""

    def __call__(self, rows):
        assert all(isinstance(row["image"], str) for row in rows)  # nothing was decoded before the worker
        batch = super().__call__(rows)
        batch["pid"] = torch.tensor(os.getpid())
        batch["worker"] = torch.tensor(torch.utils.data.get_worker_info().id)
        return batch


def test_collator_in_dataloader_with_two_workers(tiny_longclip, clip_tokenizer, image_dir, tmp_path):
    _, processor = tiny_longclip
    names = list(SUBJECTS)
    records = []
    for i in range(12):
        name = names[i % len(names)]
        records.append({"file": file_of(image_dir, name), "text": caption_for(name)})
    # One broken row of each kind, in different batches (batch_size 4): rows 1, 6, 11.
    records[1]["file"] = "missing_photo.jpg"
    records[6]["file"] = "corrupt.jpg"
    records[11]["text"] = "   "
    records.append({"file": "truncated.jpg", "text": caption_for("retina")})  # row 12 (last batch: 12, 13)
    records.append({"file": file_of(image_dir, "page"), "text": caption_for("page")})
    path = write_caption_file(tmp_path / "train.jsonl", records)
    dataset = load_caption_file(path, image_column="file", caption_column="text")

    collator = PidCollator(processor, image_root=image_dir)
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, shuffle=False, num_workers=2, collate_fn=collator)
    batches = list(loader)
    assert len(batches) == 4
    assert collator.skips.totals() == [1, 2, 1]  # the workers' counts reach the main process
    assert [b["pixel_values"].shape[0] for b in batches] == [3, 3, 3, 1]
    assert {int(b["pid"]) for b in batches}.isdisjoint({os.getpid()})
    assert [int(b["worker"]) for b in batches] == [0, 1, 0, 1]

    good = [r for i, r in enumerate(records) if i not in (1, 6, 11, 12)]
    got = [ids for b in batches for ids in unpadded(b, "input_ids", "attention_mask")]
    assert got == [token_ids(clip_tokenizer, r["text"]) for r in good]
    expected_pixels = pixels(processor, [decoded(image_dir / r["file"]) for r in good])
    assert torch.allclose(torch.cat([b["pixel_values"] for b in batches]), expected_pixels)


def test_dataloader_all_broken_batch_in_second_worker_is_refilled(tiny_longclip, image_dir, tmp_path):
    _, processor = tiny_longclip
    records = [
        {"image": file_of(image_dir, "astronaut"), "caption": caption_for("astronaut")},
        {"image": file_of(image_dir, "chelsea"), "caption": caption_for("chelsea")},
        {"image": "missing.jpg", "caption": caption_for("rocket")},  # batch 1 (worker 1's first batch): all broken
        {"image": "corrupt.jpg", "caption": caption_for("rocket")},
        {"image": file_of(image_dir, "coffee"), "caption": caption_for("coffee")},
        {"image": file_of(image_dir, "page"), "caption": caption_for("page")},
    ]
    dataset = load_caption_file(write_caption_file(tmp_path / "train.jsonl", records))
    collator = ImageCaptionCollator(processor, image_root=image_dir)
    collator.set_fallback(dataset)
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=2, collate_fn=collator)
    batches = list(loader)
    assert collator.skips.totals() == [1, 1, 0]
    assert all(b["pixel_values"].shape[0] >= 1 for b in batches)


def test_cached_training_looks_up_the_exact_caption(tmp_path):
    """llm2vec embeds leading whitespace, so the feature cache keys on the exact text: the collator must not strip."""

    class RecordingCache:
        def __init__(self):
            self.asked = []

        def get_texts(self, texts):
            self.asked.extend(texts)
            return torch.zeros(len(texts), 4)

    image = Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8))
    rows = [
        {"image": image, "caption": "  Leading space. Then more\n"},
        {"image": image, "caption": "Given short. Long part", "short_caption": " own short "},
    ]
    cache = RecordingCache()
    from conftest import tiny_image_processor

    from modeling_longclip import LongCLIPProcessor
    from modeling_longclip.converters.clip_preprocessing import build_clip_tokenizer

    processor = LongCLIPProcessor(tiny_image_processor(), build_clip_tokenizer(248))
    collator = ImageCaptionCollator(processor, short_captions="random", text_features=cache, seed=3)
    for epoch in range(6):  # the random pick visits both captions of each row
        collator.epoch = epoch
        collator(rows)
    assert set(cache.asked) == {
        "  Leading space. Then more\n",
        "Leading space",
        "Given short. Long part",
        " own short ",
    }
