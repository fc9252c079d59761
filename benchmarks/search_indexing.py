"""Indexing throughput of `longclip-search index`, split into decoding, preprocessing and the model, to show which one
limits it.

    python benchmarks/search_indexing.py --shape b16 --json search_indexing.json          # this CPU, 12 MP photos
    python benchmarks/search_indexing.py --shape l14-336 --device cuda --images 4096 --num-workers 16 --batch-size 256
    python benchmarks/search_indexing.py --smoke                                          # seconds (the tests run it)

A Long-CLIP folder with random weights and the image tower of the chosen shape (b16: ViT-B/16 at 224 px, 512-dim
output; l14-336: ViT-L/14 at 336 px, 768-dim; the text tower is tiny, indexing never runs it) is written with this
package's processor, and a folder of JPEGs of --photo-size (default 4032x3024, a 12 MP phone photo, quality 90, made
from skimage's photos) is generated. Then, in one run:

1. check: the indexer's stored embeddings of two photos equal `embed_images` on the same decoded photos;
2. model alone: `get_image_features` on ready pixel batches (images/s);
3. loader alone: the indexer's DataLoader (decode + the model's image processor in --num-workers workers), no model;
4. the real thing: `update_index` over the folder into a fresh index: images/s, and its own split (decode and
   preprocess CPU-seconds in the workers, the time the main process waited for them, the model's time).

The verdict names the slower stage: the model when its images/s (2) is below the loader's (3). The number of photos is
--images, lowered so that the run fits --budget seconds at the model's measured speed; --json is rewritten after
each stage, so a run stopped early keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import transformers
from PIL import Image
from skimage import data

from modeling_longclip import LongCLIPConfig, LongCLIPModel, LongCLIPProcessor
from modeling_longclip.converters.clip_preprocessing import build_clip_tokenizer, clip_image_processor
from modeling_longclip.evaluation.embed import embed_images, image_features
from modeling_longclip.search import PhotoIndex
from modeling_longclip.search.embedder import PhotoDataset, collate
from modeling_longclip.search.indexer import IndexOptions, update_index
from modeling_longclip.search.photos import find_photos, load_photo

SHAPES = {  # width, layers, heads, patch, image size, projection
    "tiny": (64, 2, 1, 8, 32, 32),
    "b16": (768, 12, 12, 16, 224, 512),
    "l14-336": (1024, 24, 16, 14, 336, 768),
}
SCENES = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field")


def model_folder(folder: Path, shape: str) -> Path:
    width, layers, heads, patch, size, projection = SHAPES[shape]
    config = LongCLIPConfig(
        text_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=1),
        vision_config=dict(
            hidden_size=width,
            intermediate_size=4 * width,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            patch_size=patch,
            image_size=size,
        ),
        projection_dim=projection,
    )
    torch.manual_seed(0)
    LongCLIPModel(config).save_pretrained(folder)
    LongCLIPProcessor(clip_image_processor(size), build_clip_tokenizer(248)).save_pretrained(folder)
    return folder


def write_photos(folder: Path, count: int, size: tuple[int, int]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    bases = [Image.fromarray(getattr(data, name)()).convert("RGB").resize(size, Image.BICUBIC) for name in SCENES]
    for i in range(count):
        pixels = np.asarray(bases[i % len(bases)], dtype=np.int16)
        grain = rng.integers(-12, 13, pixels.shape, dtype=np.int16)  # sensor-like grain: every photo differs
        Image.fromarray(np.clip(pixels + grain, 0, 255).astype(np.uint8)).save(folder / f"IMG_{i:05d}.jpg", quality=90)


def synchronize(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def model_alone(model, processor, batch_size: int, device: str, batches: int) -> float:
    inputs = processor(images=[Image.fromarray(data.astronaut())] * batch_size, return_tensors="pt")
    image_features(model, inputs)  # warm-up
    synchronize(device)
    started = time.perf_counter()
    for _ in range(batches):
        image_features(model, inputs)
    synchronize(device)
    return batches * batch_size / (time.perf_counter() - started)


def loader_alone(photos: Path, processor, batch_size: int, workers: int) -> float:
    records = find_photos(photos)[0]
    loader = torch.utils.data.DataLoader(
        PhotoDataset(photos, records, processor),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=collate,
        prefetch_factor=4 if workers else None,
    )
    started = time.perf_counter()
    count = sum(len(batch[0]) for batch in loader)
    return count / (time.perf_counter() - started)


def check_embeddings(model_dir: Path, photos: Path, workdir: Path, device: str, dtype: str) -> float:
    """Max difference between the indexer's stored embeddings and `embed_images` on the same two photos."""
    sample = workdir / "check-photos"
    sample.mkdir()
    for path in sorted(photos.iterdir())[:2]:
        shutil.copy(path, sample / path.name)
    options = IndexOptions(device=device, dtype=dtype, num_workers=0, progress=False)
    update_index(sample, workdir / "check-index", model_dir, options)
    with PhotoIndex.open(workdir / "check-index", device=device, dtype=dtype) as index:
        model, processor = index.model_and_processor()
        names = sorted(p.name for p in sample.iterdir())
        expected = embed_images(model, processor, [load_photo(sample / name) for name in names]).cpu().numpy()
        arrays = {name: array for name, array, _ in index._shards}
        stored = {
            path: np.asarray(arrays[shard][row], dtype=np.float32)
            for path, shard, row in index.catalog.query("SELECT path, shard, row FROM photos")
        }
    return float(max(np.abs(stored[name] - expected[i]).max() for i, name in enumerate(names)))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="b16")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto", help="auto: float16 on CUDA, float32 on the CPU")
    parser.add_argument("--images", type=int, default=512, help="at most this many photos (see --budget)")
    parser.add_argument("--budget", type=float, default=300, help="seconds the indexing run should take at most")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--photo-size", default="4032x3024", help="WIDTHxHEIGHT of the generated JPEGs")
    parser.add_argument("--workdir", type=Path, help="where the model, photos and index go (default: temporary)")
    parser.add_argument("--json", type=Path, help="results, rewritten after each stage")
    parser.add_argument("--smoke", action="store_true", help="tiny model, 8 small photos, no workers (seconds)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.shape, args.images, args.batch_size, args.num_workers, args.photo_size = "tiny", 8, 4, 0, "96x64"
    size = tuple(int(v) for v in args.photo_size.lower().split("x"))
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="search-indexing-"))
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads",
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "settings": {k: str(v) for k, v in vars(args).items() if k not in ("json", "workdir")},
    }

    def save(**values):
        report.update(values)
        if args.json:
            args.json.write_text(json.dumps(report, indent=2) + "\n")

    model_dir = model_folder(workdir / "model", args.shape)
    photos = workdir / "photos"
    write_photos(photos, 2, size)
    difference = check_embeddings(model_dir, photos, workdir, args.device, args.dtype)
    tolerance = 1e-3 if args.dtype in ("auto", "float32") and args.device == "cpu" else 2e-2
    assert difference <= tolerance, f"stored embeddings differ from embed_images by {difference}"
    save(check_max_difference=difference)

    dtype = IndexOptions(dtype=args.dtype).torch_dtype(args.device)
    model = LongCLIPModel.from_pretrained(model_dir, dtype=dtype).to(args.device).eval()
    processor = LongCLIPProcessor.from_pretrained(model_dir)
    model_rate = model_alone(model, processor, args.batch_size, args.device, batches=2 if args.smoke else 3)
    del model
    count = max(args.batch_size, min(args.images, int(args.budget * model_rate)))
    save(model_images_per_second=round(model_rate, 2), photos=count)
    print(f"model alone: {model_rate:.1f} images/s; indexing {count} photos of {args.photo_size}", file=sys.stderr)

    write_photos(photos, count, size)
    loader_rate = loader_alone(photos, processor, args.batch_size, args.num_workers)
    save(loader_images_per_second=round(loader_rate, 2))

    options = IndexOptions(args.device, args.dtype, args.batch_size, args.num_workers, progress=not args.smoke)
    run = update_index(photos, workdir / "index", model_dir, options)
    t = run.timings
    save(
        index_images_per_second=round(run.images_per_second, 2),
        index_seconds=round(run.seconds, 2),
        split_seconds={k: round(v, 2) for k, v in vars(t).items()},
        per_image_ms={k: round(1000 * v / count, 1) for k, v in vars(t).items()},
        bottleneck="model" if model_rate < loader_rate else "decoding and preprocessing",
    )
    print(
        "| shape | device | photos | photo size | workers | batch | model alone (img/s) | loader alone (img/s) | "
        "indexing (img/s) | decode (ms/img, CPU) | preprocess (ms/img, CPU) | model (ms/img) | waited (ms/img) | "
        "limited by |"
    )
    print("|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    per = report["per_image_ms"]
    print(
        f"| {args.shape} | {report['device']} | {count} | {args.photo_size} | {args.num_workers} | {args.batch_size} | "
        f"{model_rate:.1f} | {loader_rate:.1f} | {run.images_per_second:.1f} | {per['decode']} | {per['preprocess']} "
        f"| {per['model']} | {per['wait']} | {report['bottleneck']} |"
    )
    print(f"\n{report['machine']} · {report['device']} · {report['date']} · torch {torch.__version__}")
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
