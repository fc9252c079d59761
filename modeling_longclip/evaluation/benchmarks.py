"""Benchmark loaders: each official on-disk layout becomes a small, checked `RetrievalSet` or `ClassificationSet`.

Every loader reads its annotation file, checks that every referenced image exists before anything is encoded (an
evaluation that dies after an hour of encoding on image 4,817 helps nobody), and raises `BenchmarkError` naming the
file and the record (index, key or line) for anything missing or malformed. Captions are used as the annotation file
holds them, stripped of surrounding whitespace; no lower-casing or punctuation removal.
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..common.caption_data import load_sharegpt4v
from ..common.errors import DataError, LongCLIPError

GENERIC_FOLDERS = frozenset({"val", "valid", "validation", "test", "train", "images"})
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
MISSING_SHOWN = 5  # how many missing images an error message lists


class BenchmarkError(LongCLIPError, ValueError):
    """A benchmark's files are missing or malformed; the message names the file and the record."""


@dataclass
class RetrievalSet:
    """Images and captions for retrieval; `text_image[j]` is the index of text j's image (any number per image)."""

    name: str
    protocol: str
    image_paths: list[Path]
    texts: list[str]
    text_image: list[int]
    source: str = ""  # the annotation file or folder the set was read from, for the report

    def __post_init__(self):
        if len(self.texts) != len(self.text_image):
            raise ValueError(f"{len(self.texts)} texts but {len(self.text_image)} text -> image indices")
        if not self.image_paths or not self.texts:
            raise BenchmarkError(
                f"{self.name}/{self.protocol}: no images or no captions in {self.source or 'the set'}"
            )
        counts = [0] * len(self.image_paths)
        for index in self.text_image:
            if not 0 <= index < len(counts):
                raise ValueError(f"text -> image index {index} is out of range for {len(counts)} images")
            counts[index] += 1
        if 0 in counts:
            raise BenchmarkError(f"{self.name}: image {self.image_paths[counts.index(0)]} has no caption")

    @property
    def captions_per_image(self) -> tuple[int, int]:
        """(fewest, most) captions of any image: Karpathy COCO has 5 to 7, so I2T is not always 5 texts per image."""
        counts = [0] * len(self.image_paths)
        for index in self.text_image:
            counts[index] += 1
        return min(counts), max(counts)


@dataclass
class ClassificationSet:
    """Images with class labels (indices into `class_names`) for zero-shot classification."""

    name: str
    protocol: str
    image_paths: list[Path]
    labels: list[int]
    class_names: list[str]
    source: str = ""  # the image folder
    class_folders: list[str] = field(default_factory=list)
    class_names_file: str | None = None

    @property
    def dataset_name(self) -> str:
        """The folder's name for reports; a generic `val` / `test` keeps its parent (`imagenet/val`)."""
        root = Path(self.source)
        return f"{root.parent.name}/{root.name}" if root.name.lower() in GENERIC_FOLDERS else root.name


class _Builder:
    """Collects (image, captions) records, checks captions as they come and images all at once at the end."""

    def __init__(self, name: str, protocol: str, source: Path | str):
        self.name, self.protocol, self.source = name, protocol, str(source)
        self.image_paths: list[Path] = []
        self.texts: list[str] = []
        self.text_image: list[int] = []
        self.missing: list[tuple[str, Path]] = []

    def add(self, image_path: Path, captions, record: str) -> None:
        if isinstance(captions, str):
            captions = [captions]
        if not isinstance(captions, (list, tuple)) or not captions:
            raise BenchmarkError(f"{self.source}: {record} has no captions.")
        cleaned = []
        for caption in captions:
            if not isinstance(caption, str) or not caption.strip():
                raise BenchmarkError(f"{self.source}: {record} has an empty or non-text caption: {caption!r}")
            cleaned.append(caption.strip())
        if not image_path.is_file():
            self.missing.append((record, image_path))
        index = len(self.image_paths)
        self.image_paths.append(image_path)
        self.texts.extend(cleaned)
        self.text_image.extend([index] * len(cleaned))

    def build(self) -> RetrievalSet:
        raise_missing(self.missing, self.source)
        return RetrievalSet(self.name, self.protocol, self.image_paths, self.texts, self.text_image, self.source)


def raise_missing(missing: list[tuple[str, Path]], source: str) -> None:
    """One error for every missing image: how many, and the first few with the record that names them."""
    if not missing:
        return
    shown = "; ".join(f"{record}: {path}" for record, path in missing[:MISSING_SHOWN])
    more = f" (and {len(missing) - MISSING_SHOWN} more)" if len(missing) > MISSING_SHOWN else ""
    noun = "image does" if len(missing) == 1 else "images do"
    raise BenchmarkError(f"{source}: {len(missing)} referenced {noun} not exist: {shown}{more}")


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise BenchmarkError(f"{path}: no such directory ({what}).")
    return path


def _require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise BenchmarkError(f"{path}: no such file ({what}).")
    return path


def read_json(path: Path, what: str):
    _require_file(path, what)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BenchmarkError(f"{path}: not valid JSON ({error}).") from None


def _find_file(data_root: Path, names: tuple[str, ...], what: str) -> Path:
    """The first of `names` found in the data root or its annotations/ or annotation/ folder (where BLIP keeps them)."""
    folders = (data_root, data_root / "annotations", data_root / "annotation")
    for name in names:
        for folder in folders:
            if (folder / name).is_file():
                return folder / name
    raise BenchmarkError(
        f"{data_root}: no {what} found (looked for {', '.join(names)} in the data root, annotations/ and annotation/); "
        "pass the file with --annotations."
    )


def _natural_key(path: Path):
    """'2.txt' before '10.txt', so Urban-1k's numbered files keep their numeric order."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.stem)]


def _record_field(record, key: str, source: Path | str, where: str, kind=str):
    if not isinstance(record, dict) or key not in record or not isinstance(record[key], kind):
        raise BenchmarkError(f"{source}: {where} has no `{key}` field of type {kind.__name__}.")
    return record[key]


# --- long-caption retrieval -------------------------------------------------------------------------------------


def load_urban1k(data_root: Path) -> RetrievalSet:
    """Urban-1k: `caption/{stem}.txt` (caption = first line) paired with `image/{stem}.jpg`, in numeric stem order.

    The pairs are defined by the caption files; images without a caption file are ignored.
    """
    caption_dir = _require_dir(data_root / "caption", "Urban-1k captions")
    image_dir = _require_dir(data_root / "image", "Urban-1k images")
    files = sorted(caption_dir.glob("*.txt"), key=_natural_key)
    if not files:
        raise BenchmarkError(f"{caption_dir}: no .txt caption files.")
    builder = _Builder("urban1k", "default", data_root)
    for file in files:
        lines = file.read_text(encoding="utf-8").splitlines()
        first = lines[0].strip() if lines else ""
        if not first:
            raise BenchmarkError(f"{file}: the first line (the caption) is empty.")
        builder.add(image_dir / f"{file.stem}.jpg", first, f"caption {file.name}")
    return builder.build()


def _find_sharegpt4v_json(data_root: Path) -> Path:
    candidates = sorted(data_root.glob("share-captioner*.json")) or sorted(data_root.glob("*.json"))
    if len(candidates) == 1:
        return candidates[0]
    found = f"found {len(candidates)}: {', '.join(p.name for p in candidates)}" if candidates else "found none"
    raise BenchmarkError(
        f"{data_root}: expected one ShareGPT4V share-captioner json in the data root ({found}); pass it with --annotations."
    )


def load_sharegpt4v_1k(data_root: Path, annotations: Path | None = None) -> RetrievalSet:
    """ShareGPT4V-1k: the first 1,000 records of the share-captioner json, images relative to the data root.

    Records and captions come from the training loader (`load_sharegpt4v(..., split="test")`), so train and test
    can never disagree on which records are held out or how a caption is read. The records stay 1,000 pairs, as in
    the authors' script, even if two of them share an image.
    """
    path = annotations or _find_sharegpt4v_json(data_root)
    try:
        records = load_sharegpt4v(path, split="test")
    except DataError as error:
        raise BenchmarkError(str(error)) from None
    builder = _Builder("sharegpt4v-1k", "default", path)
    for index, (image, caption) in enumerate(zip(records["image"], records["caption"])):
        if not isinstance(image, str) or not image:
            raise BenchmarkError(f"{path}: record {index} has an empty `image` field.")
        builder.add(data_root / image, caption, f"record {index} ({image})")
    return builder.build()


def _dci_base(data_root: Path, annotations: Path | None) -> Path:
    """The DCI folder: the data root itself or its `densely_captioned_images/` (where the DCI tarball extracts)."""
    for base in (data_root, data_root / "densely_captioned_images"):
        has_annotations = (base / "annotations").is_dir() or (base / "complete").is_dir()
        if (base / "splits.json").is_file() or (annotations and has_annotations):
            return base
    raise BenchmarkError(
        f"{data_root}: no DCI splits.json (looked in the data root and densely_captioned_images/); "
        "pass it with --annotations."
    )


def _load_dci(
    data_root: Path, annotations: Path | None, protocol: str, splits: tuple[str, ...] | None
) -> RetrievalSet:
    """DCI as released by facebookresearch/DCI: `densely_captioned_images/{splits.json, annotations/, photos/}`.

    Layout assumptions (dci.tar.gz extracts `densely_captioned_images/` with splits.json and annotations/; the photos
    come separately from SA-1B's sa_000138.tar, extracted into photos/): splits.json maps a split name (train / valid /
    test) to a list of annotation file names (with or without `.json`) under `annotations/` (or `complete/`, the
    copy with summaries, when there is no annotations/); each annotation holds `image` (a file name under `photos/`),
    `short_caption` and `extra_caption`. Caption = short_caption + newline + extra_caption. "all" takes every split
    in file order (the 7,805 images long-caption papers report); an annotation listed twice is used once.
    """
    base = _dci_base(data_root, annotations)
    splits_file = annotations or base / "splits.json"
    listing = read_json(splits_file, "DCI splits")
    if not isinstance(listing, dict) or not all(isinstance(v, list) for v in listing.values()):
        raise BenchmarkError(
            f"{splits_file}: expected a JSON object mapping split names to lists of annotation files."
        )
    chosen = splits or tuple(listing)
    for split in chosen:
        if split not in listing:
            raise BenchmarkError(f"{splits_file}: no `{split}` split (splits: {', '.join(listing)}).")
    annotation_dir = base / "annotations"
    if not annotation_dir.is_dir() and (base / "complete").is_dir():
        annotation_dir = base / "complete"
    _require_dir(annotation_dir, "DCI annotations")
    photo_dir = base / "photos"
    builder = _Builder("dci", protocol, splits_file)
    seen = set()
    for split in chosen:
        for position, name in enumerate(listing[split]):
            where = f"{split}[{position}]"
            if not isinstance(name, str) or not name:
                raise BenchmarkError(f"{splits_file}: {where} is not an annotation file name: {name!r}")
            if name in seen:
                continue
            seen.add(name)
            path = annotation_dir / name
            if not path.is_file() and not name.endswith(".json"):
                path = annotation_dir / f"{name}.json"
            if not path.is_file():
                raise BenchmarkError(
                    f"{splits_file}: {where} names {name}, but {annotation_dir / name} does not exist."
                )
            record = read_json(path, "DCI annotation")
            image = _record_field(record, "image", path, "the annotation")
            short = _record_field(record, "short_caption", path, "the annotation")
            extra = _record_field(record, "extra_caption", path, "the annotation")
            builder.add(photo_dir / image, f"{short}\n{extra}", f"{where} ({name})")
    return builder.build()


def load_dci_all(data_root: Path, annotations: Path | None = None) -> RetrievalSet:
    """DCI, every annotation listed in splits.json (the 7,805-image set long-caption papers report)."""
    return _load_dci(data_root, annotations, "all", None)


def load_dci_test(data_root: Path, annotations: Path | None = None) -> RetrievalSet:
    """DCI, the `test` split of splits.json only (112 images per the DCI README)."""
    return _load_dci(data_root, annotations, "test", ("test",))


def load_docci(data_root: Path, annotations: Path | None = None) -> RetrievalSet:
    """DOCCI: `docci_descriptions.jsonlines` records with split == "test" (5,000), `image_file` under `images/`.

    `images/` is where `docci_images.tar.gz` extracts; without that folder the images are looked up in the data root.
    """
    path = annotations or data_root / "docci_descriptions.jsonlines"
    _require_file(path, "DOCCI descriptions")
    image_dir = data_root / "images" if (data_root / "images").is_dir() else data_root
    builder = _Builder("docci", "test", path)
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise BenchmarkError(f"{path}: line {number} is not valid JSON ({error}).") from None
            split = _record_field(record, "split", path, f"line {number}")
            if split != "test":
                continue
            where = f"line {number}" + (f" ({record['example_id']})" if "example_id" in record else "")
            image = _record_field(record, "image_file", path, where)
            builder.add(image_dir / image, _record_field(record, "description", path, where), where)
    if not builder.image_paths:
        raise BenchmarkError(f"{path}: no records with split == 'test'.")
    return builder.build()


# --- short-caption retrieval --------------------------------------------------------------------------------------

KARPATHY_FILES = {
    "coco": ("dataset_coco.json", "coco_karpathy_test.json"),
    "flickr30k": ("dataset_flickr30k.json", "flickr30k_test.json"),
}


def _load_karpathy(name: str, data_root: Path, annotations: Path | None, default_folder: str) -> RetrievalSet:
    """Karpathy test split from either official file: Karpathy's `dataset_*.json` or BLIP's `*_test.json` list.

    dataset_*.json: `images[]` with `split`, `filename`, optional `filepath` (COCO: val2014) and `sentences[].raw`;
    every caption of a test image is used (COCO: 5,000 images, 25,010 captions; some images have 6 or 7).
    Image path = data_root / filepath (or `default_folder`) / filename.
    BLIP-style: a list of {"image": path relative to the data root, "caption": [captions]}.
    """
    path = annotations or _find_file(data_root, KARPATHY_FILES[name], f"{name} Karpathy test annotation")
    data = read_json(path, f"{name} Karpathy annotation")
    builder = _Builder(name, "karpathy", path)
    if isinstance(data, dict) and "images" in data:
        if not isinstance(data["images"], list):
            raise BenchmarkError(f"{path}: `images` is not a list.")
        for index, image in enumerate(data["images"]):
            split = _record_field(image, "split", path, f"images[{index}]")
            if split != "test":
                continue
            filename = _record_field(image, "filename", path, f"images[{index}]")
            where = f"images[{index}] ({filename})"
            sentences = _record_field(image, "sentences", path, where, list)
            captions = [_record_field(s, "raw", path, f"{where} sentences[{k}]") for k, s in enumerate(sentences)]
            folder = image.get("filepath") or default_folder
            builder.add(data_root / folder / filename, captions, where)
    elif isinstance(data, list):
        for index, record in enumerate(data):
            image = _record_field(record, "image", path, f"record {index}")
            captions = record.get("caption")
            builder.add(data_root / image, captions, f"record {index} ({image})")
    else:
        raise BenchmarkError(
            f"{path}: expected Karpathy's {{'images': [...]}} or a BLIP-style list of {{'image', 'caption'}} records."
        )
    if not builder.image_paths:
        raise BenchmarkError(f"{path}: no test images.")
    return builder.build()


def load_coco_karpathy(data_root: Path, annotations: Path | None = None) -> RetrievalSet:
    """COCO Karpathy 5k test (LLM2CLIP and most papers); dataset_coco.json or BLIP's coco_karpathy_test.json."""
    return _load_karpathy("coco", data_root, annotations, "val2014")


def load_flickr30k_karpathy(data_root: Path, annotations: Path | None = None) -> RetrievalSet:
    """Flickr30k Karpathy 1k test; dataset_flickr30k.json (images in flickr30k-images/) or BLIP's flickr30k_test.json."""
    return _load_karpathy("flickr30k", data_root, annotations, "flickr30k-images")


def load_coco_longclip(data_root: Path, annotations: Path | None = None) -> RetrievalSet:
    """The Long-CLIP authors' COCO: `annotations/captions_val2017.json` over `val2017/` (5,000 images).

    Like torchvision's CocoCaptions in their script: images in ascending id order, each image's captions in
    annotation order, the first 5 kept.
    """
    path = annotations or data_root / "annotations" / "captions_val2017.json"
    data = read_json(path, "COCO captions")
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("images"), list)
        or not isinstance(data.get("annotations"), list)
    ):
        raise BenchmarkError(f"{path}: expected a COCO captions file with `images` and `annotations` lists.")
    files = {}
    for index, image in enumerate(data["images"]):
        image_id = _record_field(image, "id", path, f"images[{index}]", int)
        files[image_id] = _record_field(image, "file_name", path, f"images[{index}] (id {image_id})")
    captions: dict[int, list[str]] = {image_id: [] for image_id in files}
    for index, annotation in enumerate(data["annotations"]):
        image_id = _record_field(annotation, "image_id", path, f"annotations[{index}]", int)
        where = f"annotations[{index}] (id {annotation.get('id')})"
        caption = _record_field(annotation, "caption", path, where)
        if image_id not in captions:
            raise BenchmarkError(f"{path}: {where} refers to image id {image_id}, which is not in `images`.")
        captions[image_id].append(caption)
    builder = _Builder("coco", "longclip", path)
    for image_id in sorted(files):
        builder.add(data_root / "val2017" / files[image_id], captions[image_id][:5], f"image id {image_id}")
    return builder.build()


def load_flickr30k_longclip(data_root: Path, annotations: Path | None = None) -> RetrievalSet:
    """The Long-CLIP authors' Flickr30k: every image of `results_20130124.token` (31,783 images, 158,915 captions).

    Lines are `NAME.jpg#k<TAB>caption`; captions are grouped by image in order of first appearance, images read from
    `flickr30k-images/`.
    """
    path = annotations or data_root / "results_20130124.token"
    _require_file(path, "Flickr30k captions")
    groups: dict[str, list[str]] = {}
    first_line: dict[str, int] = {}
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            key, tab, caption = line.partition("\t")
            name, hash_, k = key.rpartition("#")
            if not tab or not hash_ or not name or not k.isdigit() or not caption.strip():
                raise BenchmarkError(f"{path}: line {number} is not `NAME.jpg#k<TAB>caption`: {line[:80]!r}")
            groups.setdefault(name, []).append(caption)
            first_line.setdefault(name, number)
    if not groups:
        raise BenchmarkError(f"{path}: no captions.")
    builder = _Builder("flickr30k", "longclip", path)
    for name, captions in groups.items():
        builder.add(data_root / "flickr30k-images" / name, captions, f"line {first_line[name]} ({name})")
    return builder.build()


# --- zero-shot classification --------------------------------------------------------------------------------------

CLASS_NAME_FILES = ("classnames.txt", "class_names.txt")


def load_image_folder(data_root: Path, class_names: Path | None = None) -> ClassificationSet:
    """An image folder with one subfolder per class (sorted by name; images found recursively).

    Class names: from `class_names` (or a `classnames.txt` / `class_names.txt` in the folder), one name per line in
    sorted-subfolder order, e.g. ImageNet's readable names for its wnid folders; otherwise the folder name with `_`
    read as a space.
    """
    _require_dir(data_root, "image folder")
    folders = sorted(p for p in data_root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise BenchmarkError(f"{data_root}: no class subfolders.")
    if class_names is None:
        class_names = next((data_root / n for n in CLASS_NAME_FILES if (data_root / n).is_file()), None)
    if class_names is not None:
        _require_file(class_names, "class names")
        names = [line.strip() for line in class_names.read_text(encoding="utf-8").splitlines() if line.strip()]
        if len(names) != len(folders):
            raise BenchmarkError(
                f"{class_names}: {len(names)} class names for {len(folders)} class subfolders of {data_root}; "
                "give one name per line, in sorted-subfolder order."
            )
    else:
        names = [folder.name.replace("_", " ") for folder in folders]
    paths, labels = [], []
    for label, folder in enumerate(folders):
        found = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        paths.extend(found)
        labels.extend([label] * len(found))
    if not paths:
        raise BenchmarkError(f"{data_root}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in the class subfolders.")
    return ClassificationSet(
        "zeroshot",
        "imagefolder",
        paths,
        labels,
        names,
        str(data_root),
        [f.name for f in folders],
        str(class_names) if class_names else None,
    )


# --- registry -------------------------------------------------------------------------------------------------------

BENCHMARKS: dict[str, dict[str, Callable]] = {
    "urban1k": {"default": load_urban1k},
    "sharegpt4v-1k": {"default": load_sharegpt4v_1k},
    "dci": {"all": load_dci_all, "test": load_dci_test},
    "docci": {"test": load_docci},
    "coco": {"karpathy": load_coco_karpathy, "longclip": load_coco_longclip},
    "flickr30k": {"karpathy": load_flickr30k_karpathy, "longclip": load_flickr30k_longclip},
    "zeroshot": {"imagefolder": load_image_folder},
}
DEFAULT_PROTOCOLS = {
    "urban1k": "default",
    "sharegpt4v-1k": "default",
    "dci": "all",
    "docci": "test",
    "coco": "karpathy",
    "flickr30k": "karpathy",
    "zeroshot": "imagefolder",
}


def load_benchmark(
    name: str,
    data_root: str | Path,
    protocol: str | None = None,
    *,
    annotations: str | Path | None = None,
    class_names: str | Path | None = None,
) -> RetrievalSet | ClassificationSet:
    """Load a registered benchmark; an option the chosen loader does not take is an error, not silently ignored."""
    if name not in BENCHMARKS:
        raise BenchmarkError(f"unknown benchmark {name!r}; choose from {', '.join(BENCHMARKS)}.")
    protocol = protocol or DEFAULT_PROTOCOLS[name]
    if protocol not in BENCHMARKS[name]:
        raise BenchmarkError(f"{name} has no protocol {protocol!r}; choose from {', '.join(BENCHMARKS[name])}.")
    loader = BENCHMARKS[name][protocol]
    options = {"annotations": annotations, "class_names": class_names}
    options = {key: Path(value).expanduser() for key, value in options.items() if value is not None}
    accepted = inspect.signature(loader).parameters
    for key in options:
        if key not in accepted:
            raise BenchmarkError(f"--{key.replace('_', '-')} does not apply to {name} ({protocol}).")
    root = Path(data_root).expanduser()
    if not root.is_dir():
        raise BenchmarkError(f"{root}: data root does not exist or is not a directory.")
    return loader(root, **options)


__all__ = [
    "BENCHMARKS",
    "DEFAULT_PROTOCOLS",
    "BenchmarkError",
    "ClassificationSet",
    "RetrievalSet",
    "load_benchmark",
    "load_coco_karpathy",
    "load_coco_longclip",
    "load_dci_all",
    "load_dci_test",
    "load_docci",
    "load_flickr30k_karpathy",
    "load_flickr30k_longclip",
    "load_image_folder",
    "load_sharegpt4v_1k",
    "load_urban1k",
]
