"""Tiny benchmark folders in each official layout, and a fake model whose embeddings the tests choose.

Images are small PIL drawings; the colour of the top-left pixel of a PNG is an id the fake model reads back, so a
test decides exactly which embedding each image gets.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

PALETTE = ["red", "green", "blue", "orange", "purple", "yellow", "cyan", "magenta", "brown", "gray"]


def draw_image(path: Path, index: int = 0, size: int = 40) -> Path:
    """A small drawing (background colour + a shape) saved as JPEG or PNG by suffix; the top-left pixel encodes
    `index` in its red channel (exact in PNG)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", (size, size), PALETTE[index % len(PALETTE)])
    draw = ImageDraw.Draw(image)
    offset = 4 + (index * 5) % (size // 2)
    draw.ellipse((offset, offset, offset + size // 3, offset + size // 3), fill="white", outline="black")
    image.putpixel((0, 0), (index % 256, 7, 7))
    image.save(path)
    return path


# --- official layouts ----------------------------------------------------------------------------------------------


def write_urban1k(root: Path, captions: dict[str, str]) -> Path:
    """`image/{stem}.jpg` + `caption/{stem}.txt` (caption on the first line, a second line that must be ignored)."""
    for index, (stem, caption) in enumerate(captions.items()):
        draw_image(root / "image" / f"{stem}.jpg", index)
        (root / "caption").mkdir(parents=True, exist_ok=True)
        (root / "caption" / f"{stem}.txt").write_text(f"{caption}\nsecond line, not part of the caption\n")
    return root


def sharegpt4v_record(index: int, image: str, caption: str) -> dict:
    return {
        "id": f"r{index}",
        "image": image,
        "conversations": [
            {"from": "human", "value": "<image>\nWhat is in this image?"},
            {"from": "gpt", "value": caption},
        ],
    }


def write_sharegpt4v(root: Path, n_records: int = 1003) -> Path:
    """The share-captioner json with `n_records` records; the first 1,000 share three images, later ones (training
    records) point at images that do not exist, which the test split must not care about."""
    for k in range(3):
        draw_image(root / "coco" / "train2017" / f"{k:012d}.jpg", k)
    records = [
        sharegpt4v_record(
            i,
            f"coco/train2017/{i % 3:012d}.jpg" if i < 1000 else f"sam/missing_{i}.jpg",
            f"Record {i} shows a scene.\nIt has two lines.",
        )
        for i in range(n_records)
    ]
    (root / "share-captioner_coco_lcs_sam_1246k_1107.json").write_text(json.dumps(records))
    return root


def write_dci(root: Path) -> Path:
    """`densely_captioned_images/{splits.json, annotations/*.json, photos/*.jpg}` with train / valid / test."""
    base = root / "densely_captioned_images"
    splits = {"train": ["sa_1.json", "sa_2.json"], "valid": ["sa_3.json"], "test": ["sa_4.json", "sa_5"]}
    for index in range(1, 6):
        draw_image(base / "photos" / f"sa_{index}.jpg", index)
        annotation = {
            "image": f"sa_{index}.jpg",
            "short_caption": f"Short caption {index}.",
            "extra_caption": f"Extra detail {index} about the scene.",
            "mask_data": {},
            "mask_keys": [],
        }
        (base / "annotations").mkdir(parents=True, exist_ok=True)
        (base / "annotations" / f"sa_{index}.json").write_text(json.dumps(annotation))
    (base / "splits.json").write_text(json.dumps(splits))
    return root


def write_docci(root: Path) -> Path:
    """`docci_descriptions.jsonlines` (train, qual and test records) + `images/` as docci_images.tar.gz extracts."""
    records = [
        {"example_id": "train_00000", "split": "train", "image_file": "train_00000.jpg", "description": "Train one."},
        {"example_id": "test_00000", "split": "test", "image_file": "test_00000.jpg", "description": "A red test."},
        {"example_id": "qual_dev_00000", "split": "qual_dev", "image_file": "qual_dev_00000.jpg", "description": "Q."},
        {"example_id": "test_00001", "split": "test", "image_file": "test_00001.jpg", "description": "A green test."},
    ]
    for index, record in enumerate(records):
        if record["split"] == "test":
            draw_image(root / "images" / record["image_file"], index)
    (root / "docci_descriptions.jsonlines").write_text("".join(json.dumps(r) + "\n" for r in records) + "\n")
    return root


def karpathy_image(index: int, split: str, filename: str, captions: list[str], filepath: str | None) -> dict:
    record = {
        "split": split,
        "filename": filename,
        "imgid": index,
        "sentences": [{"raw": c, "tokens": c.lower().split(), "imgid": index} for c in captions],
    }
    if filepath:
        record["filepath"] = filepath
    return record


def write_coco_karpathy(root: Path) -> Path:
    """dataset_coco.json (train / val / test, one test image with 7 captions) over val2014/ + train2014/."""
    images = [
        karpathy_image(0, "train", "COCO_train2014_0.jpg", ["train caption"], "train2014"),
        karpathy_image(1, "test", "COCO_val2014_1.jpg", [f"cat caption {k}" for k in range(7)], "val2014"),
        karpathy_image(2, "val", "COCO_val2014_2.jpg", ["val caption"], "val2014"),
        karpathy_image(3, "test", "COCO_val2014_3.jpg", [f"dog caption {k} " for k in range(5)], "val2014"),
        karpathy_image(4, "restval", "COCO_val2014_4.jpg", ["restval caption"], "val2014"),
    ]
    for record in images:
        if record["split"] == "test":
            draw_image(root / record["filepath"] / record["filename"], record["imgid"])
    (root / "dataset_coco.json").write_text(json.dumps({"images": images, "dataset": "coco"}))
    return root


def write_blip_test(root: Path, name: str, folder: str) -> Path:
    """BLIP's `{name}` list of {"image": folder/file, "caption": [...]} under annotation/."""
    records = [
        {"image": f"{folder}/a.jpg", "caption": ["first a", "second a", "third a", "fourth a", "fifth a", "sixth a"]},
        {"image": f"{folder}/b.jpg", "caption": ["first b", "second b"]},
    ]
    for index, record in enumerate(records):
        draw_image(root / record["image"], index)
    (root / "annotation").mkdir(parents=True, exist_ok=True)
    (root / "annotation" / name).write_text(json.dumps(records))
    return root


def write_coco_longclip(root: Path) -> Path:
    """annotations/captions_val2017.json: images out of id order, one image with 6 captions (first 5 are used)."""
    images = [{"id": 30, "file_name": "000000000030.jpg"}, {"id": 9, "file_name": "000000000009.jpg"}]
    annotations = [{"id": 100 + k, "image_id": 30, "caption": f"thirty caption {k}"} for k in range(6)]
    annotations[2:2] = [{"id": 200 + k, "image_id": 9, "caption": f"nine caption {k}"} for k in range(5)]
    for index, image in enumerate(images):
        draw_image(root / "val2017" / image["file_name"], index)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / "captions_val2017.json").write_text(
        json.dumps({"info": {}, "images": images, "annotations": annotations})
    )
    return root


def write_flickr_karpathy(root: Path) -> Path:
    images = [
        karpathy_image(0, "train", "100.jpg", ["train"], None),
        karpathy_image(1, "test", "200.jpg", [f"test two {k}" for k in range(5)], None),
        karpathy_image(2, "test", "300.jpg", [f"test three {k}" for k in range(5)], None),
    ]
    for record in images[1:]:
        draw_image(root / "flickr30k-images" / record["filename"], record["imgid"])
    (root / "dataset_flickr30k.json").write_text(json.dumps({"images": images, "dataset": "flickr30k"}))
    return root


def write_flickr_token(root: Path) -> Path:
    """results_20130124.token: `NAME.jpg#k<TAB>caption`, every image, 5 captions each (plus a blank line)."""
    lines = []
    for index, name in enumerate(["1000092795.jpg", "10002456.jpg", "1000268201.jpg"]):
        draw_image(root / "flickr30k-images" / name, index)
        lines += [f"{name}#{k}\tCaption {k} of {name} ." for k in range(5)]
    (root / "results_20130124.token").write_text("\n".join(lines) + "\n\n")
    return root


def write_image_folder(root: Path, classes: dict[str, list[int]]) -> Path:
    """One subfolder per class holding PNGs whose ids (top-left pixel) are listed."""
    for name, ids in classes.items():
        for image_id in ids:
            draw_image(root / name / f"img_{image_id}.png", image_id)
    return root


# --- a fake model whose embeddings the test decides ----------------------------------------------------------------


class FakeTokenizer:
    """Whitespace tokens plus start and end tokens; limit `model_max_length`."""

    def __init__(self, model_max_length: int = 8):
        self.model_max_length = model_max_length

    def __call__(self, texts, verbose=True, **kwargs):
        texts = [texts] if isinstance(texts, str) else texts
        return {"input_ids": [[0, *range(1, len(t.split()) + 1), 1] for t in texts]}

    def __len__(self):
        return 100


class FakeProcessor:
    def __init__(self, model_max_length: int = 8):
        self.tokenizer = FakeTokenizer(model_max_length)


class FakeModel:
    """encode_image: the row of `image_table` named by the image's top-left red value (or a hash of the pixels);
    encode_text: the row of `text_table` for the first key found in the text (or a hash of the text). Counts calls."""

    def __init__(self, dim: int = 8, image_table=None, text_table=None):
        self.dim = dim
        self.image_table = image_table or {}
        self.text_table = text_table or {}
        self.calls = {"text": 0, "image": 0}
        self.texts_seen: list[str] = []

    def _hashed(self, payload: bytes) -> torch.Tensor:
        generator = torch.Generator().manual_seed(zlib.crc32(payload))
        return torch.randn(self.dim, generator=generator)

    def encode_image(self, images, processor=None, batch_size=64):
        self.calls["image"] += 1
        rows = []
        for image in images:
            key = image.getpixel((0, 0))[0]
            rows.append(
                torch.as_tensor(self.image_table[key], dtype=torch.float32)
                if key in self.image_table
                else self._hashed(image.tobytes())
            )
        return F.normalize(torch.stack(rows), dim=-1)

    def encode_text(self, texts, processor=None, batch_size=64, **kwargs):
        self.calls["text"] += 1
        self.texts_seen.extend(texts)
        rows = []
        for text in texts:
            key = next((k for k in self.text_table if k in text), None)
            rows.append(
                torch.as_tensor(self.text_table[key], dtype=torch.float32)
                if key is not None
                else self._hashed(text.encode())
            )
        return F.normalize(torch.stack(rows), dim=-1)
