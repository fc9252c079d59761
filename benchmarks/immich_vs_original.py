"""What immich's reading of a `longclip-export immich` directory changes against the original Long-CLIP front end.

    python benchmarks/immich_vs_original.py --json immich.json     # Long-CLIP-B shapes (random weights), a minute or two
    python benchmarks/immich_vs_original.py --smoke                # tiny shapes, seconds (the tests run this)

immich reads the export with its own front end (`longclip-export immich` checks that, on inputs where both agree,
the directory gives the folder's embeddings): text is only whitespace-joined before `tokenizers` (no ftfy, no HTML
unescaping; the exported tokenizer.json does ftfy's character fixes, NFC and lower-casing in its normalizer), and
images are cropped at `int(n / 2 - size / 2)` (floored) where torchvision's CenterCrop rounds, after a resize whose
long side is `int(long / short * size)`.

On hard captions (tests/test_text_cleaning.py: HTML entities, ligatures, full-width letters, curly quotes, mojibake,
...) and real photos (skimage.data, scikit-learn's sample images, at their own sizes and at common camera aspect
ratios), it reports for each input whether the ids / pixels differ, and the cosine between the immich-path embedding
(its tokenization or preprocessing + the exported ONNX graphs) and the original-path embedding (the Long-CLIP folder's
processor, which reproduces the original, + PyTorch). Random weights of the real shapes: the ids and pixels are
exact statements; the cosines say how much a random network of this shape moves, not a trained one.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

SHAPES = {
    # name: (vision width, layers, heads, patch, image size, text width, layers, heads, projection)
    "longclip-b16": (768, 12, 12, 16, 224, 512, 12, 8, 512),
    "tiny": (64, 2, 1, 8, 32, 64, 2, 1, 32),
}
CAMERA_SIZES = ((1000, 667), (640, 427), (667, 1000), (4032, 3024), (1920, 1080), (1001, 1001))


def build_folder(shape: str, root: Path) -> Path:
    from modeling_longclip import LongCLIPConfig, LongCLIPModel, LongCLIPProcessor
    from modeling_longclip.converters.clip_preprocessing import build_clip_tokenizer, clip_image_processor

    vw, vl, vh, patch, size, tw, tl, th, projection = SHAPES[shape]
    config = LongCLIPConfig(
        text_config=dict(hidden_size=tw, intermediate_size=4 * tw, num_hidden_layers=tl, num_attention_heads=th),
        vision_config=dict(
            hidden_size=vw,
            intermediate_size=4 * vw,
            num_hidden_layers=vl,
            num_attention_heads=vh,
            patch_size=patch,
            image_size=size,
        ),
        projection_dim=projection,
    )
    torch.manual_seed(0)
    folder = root / shape
    LongCLIPModel(config).eval().save_pretrained(folder)
    LongCLIPProcessor(clip_image_processor(size), build_clip_tokenizer(248)).save_pretrained(folder)
    return folder


def photos() -> dict:
    import sklearn.datasets
    from PIL import Image
    from skimage import data

    images = {name: Image.fromarray(getattr(data, name)()) for name in ("astronaut", "chelsea", "coffee", "rocket")}
    images["camera (grey)"] = Image.fromarray(data.camera())
    for name in ("china.jpg", "flower.jpg"):
        images[name] = Image.open(Path(sklearn.datasets.__file__).parent / "images" / name).convert("RGB")
    for width, height in CAMERA_SIZES:
        images[f"coffee at {width}x{height}"] = images["coffee"].resize((width, height), Image.Resampling.BICUBIC)
    return images


def crop_corners(width: int, height: int, size: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """(left, top) of the crop: the original (torchvision: round) and immich (floor), after each one's resize."""
    from modeling_longclip.image_processing_longclip import resized_size

    w, h = resized_size(width, height, size)
    original = (int(round((w - size) / 2.0)), int(round((h - size) / 2.0)))
    iw, ih = (size, int(height / width * size)) if width < height else (int(width / height * size), size)
    return original, (int(iw / 2 - size / 2), int(ih / 2 - size / 2))


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float((a * b).sum() / (np.linalg.norm(a) * np.linalg.norm(b)))


def measure(shape: str, work: Path) -> dict:
    import onnxruntime
    from test_text_cleaning import HARD_CAPTIONS
    from transformers import AutoModel, AutoProcessor

    from modeling_longclip.export.immich import export_immich, immich_pixels, immich_text_ids, immich_tokenizer

    folder = build_folder(shape, work)
    report = export_immich(folder, work / "immich")
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    directory, context = work / "immich", report.context_length
    tokenizer = immich_tokenizer(directory, context)
    textual = onnxruntime.InferenceSession(str(directory / "textual" / "model.onnx"))
    visual = onnxruntime.InferenceSession(str(directory / "visual" / "model.onnx"))
    preprocess_cfg = json.loads((directory / "visual" / "preprocess_cfg.json").read_text())

    texts = []
    for caption in HARD_CAPTIONS:
        ids = immich_text_ids(tokenizer, caption)
        original = processor(text=[caption], return_tensors="pt", padding="max_length", max_length=context)
        with torch.no_grad():
            expected = model.get_text_features(**original).pooler_output[0].numpy()
        pad = tokenizer.token_to_id(
            json.loads((directory / "textual" / "tokenizer_config.json").read_text())["pad_token"]
        )
        same = np.array_equal(
            np.where(original["attention_mask"][0].numpy() == 1, original["input_ids"][0].numpy(), pad), ids[0]
        )
        texts.append(
            {
                "caption": caption[:60] + ("..." if len(caption) > 60 else ""),
                "same_ids": bool(same),
                "cosine": cosine(textual.run(None, {"text": ids})[0][0], expected),
            }
        )
    images = []
    size = model.config.vision_config.image_size
    for name, image in photos().items():
        original = processor(images=[image], return_tensors="pt")["pixel_values"]
        theirs = immich_pixels(image, preprocess_cfg)
        with torch.no_grad():
            expected = model.get_image_features(pixel_values=original).pooler_output[0].numpy()
        corner, immich_corner = crop_corners(*image.size, size)
        images.append(
            {
                "photo": f"{name} ({image.size[0]}x{image.size[1]}, {image.mode})",
                "crop_original": corner,
                "crop_immich": immich_corner,
                "pixel_max_abs_diff": float(np.abs(theirs - original.numpy()).max()),
                "cosine": cosine(visual.run(None, {"image": theirs})[0][0], expected),
            }
        )
    return {"shape": shape, "check": report.lines(), "texts": texts, "images": images}


def markdown(result: dict) -> str:
    texts, images = result["texts"], result["images"]
    differ = [t for t in texts if not t["same_ids"]]
    shifted = [i for i in images if i["crop_original"] != i["crop_immich"]]
    lines = [
        f"shape {result['shape']} (random weights); cosine of immich-path vs original-path embeddings",
        "",
        "| inputs | differ | cosine where they differ (min / mean) | cosine where they agree (min) |",
        "|---|---:|---:|---:|",
    ]
    for label, rows, changed in (
        (f"{len(texts)} hard captions (ids)", texts, differ),
        (f"{len(images)} photos (crop corner)", images, shifted),
    ):
        same = [r for r in rows if r not in changed]
        worst = (
            f"{min(r['cosine'] for r in changed):.4f} / {np.mean([r['cosine'] for r in changed]):.4f}"
            if changed
            else "-"
        )
        agree = f"{min(r['cosine'] for r in same):.6f}" if same else "-"
        lines.append(f"| {label} | {len(changed)} | {worst} | {agree} |")
    lines += ["", "| photo | crop (original) | crop (immich) | max pixel diff | cosine |", "|---|---|---|---:|---:|"]
    for row in images:
        lines.append(
            f"| {row['photo']} | {tuple(row['crop_original'])} | {tuple(row['crop_immich'])} | "
            f"{row['pixel_max_abs_diff']:.3f} | {row['cosine']:.4f} |"
        )
    lines += ["", "| caption | same ids | cosine |", "|---|---|---:|"]
    lines += [f"| {t['caption']!r} | {t['same_ids']} | {t['cosine']:.4f} |" for t in texts]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny shapes, seconds")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # truncation notes on the >248-token captions: the truncation is what is compared
    with tempfile.TemporaryDirectory() as work:
        result = measure("tiny" if args.smoke else "longclip-b16", Path(work))
    import onnxruntime
    import transformers

    result.update(
        date=datetime.date.today().isoformat(),
        machine=f"{platform.machine()}, {torch.get_num_threads()} threads",
        versions={
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "onnxruntime": onnxruntime.__version__,
        },
    )
    print(markdown(result), end="")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
