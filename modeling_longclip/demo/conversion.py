"""A conversion round trip on an embedded default, offline, in seconds (`python -m modeling_longclip.conversion_demo`).

Writes a small random checkpoint in the authors' original Long-CLIP format (two position tables, OpenAI keys),
converts it with the real converter (which checks it against an independent forward first), loads the folder back in
a process where this package cannot be imported, and prints the parity figures and a caption/image similarity table.
The weights are random, so the similarities show the pipeline working end to end, not a trained model's judgement.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..common.clean_load import load_in_clean_process
from ..common.cli import ArgumentParser, command
from ..converters.longclip import convert_longclip
from ..converters.openai_clip import TextShape, VisionShape
from ..converters.synthetic import random_openai_clip_state_dict

DEMO_VISION = VisionShape(width=128, layers=2, heads=2, mlp_width=512, patch_size=16, image_size=64, output_dim=64)
DEMO_TEXT = TextShape(width=128, layers=2, heads=2, mlp_width=512, vocab_size=49408, context_length=248, output_dim=64)

CAPTIONS = [
    "A red circle in the top left corner of a white canvas. Below it a small green square sits next to a blue "
    "triangle, and the bottom right corner holds a large yellow star with a thin black outline.",
    "A white canvas with a single blue triangle in the middle. "
    + "The rest of the canvas is empty and white. " * 12
    + "Only at the very end does a tiny red dot appear near the bottom edge.",
    "Three green squares in a row across the centre of the canvas, each a little larger than the one on its left.",
]


def shape_images() -> list[Image.Image]:
    """Three simple drawings loosely matching the captions."""
    images = []
    for draw_fn in (_red_circle_scene, _blue_triangle_scene, _green_squares_scene):
        image = Image.new("RGB", (96, 96), "white")
        draw_fn(ImageDraw.Draw(image))
        images.append(image)
    return images


def _red_circle_scene(draw):
    draw.ellipse((6, 6, 36, 36), fill="red")
    draw.rectangle((20, 50, 34, 64), fill="green")
    draw.polygon([(44, 64), (52, 48), (60, 64)], fill="blue")
    draw.regular_polygon((78, 78, 14), 5, fill="yellow", outline="black")


def _blue_triangle_scene(draw):
    draw.polygon([(30, 66), (48, 30), (66, 66)], fill="blue")
    draw.ellipse((46, 88, 50, 92), fill="red")


def _green_squares_scene(draw):
    for i, size in enumerate((10, 14, 18)):
        x = 10 + 30 * i
        draw.rectangle((x, 48 - size // 2, x + size, 48 + size // 2), fill="green")


def _table(rows: list[str], columns: list[str], values: np.ndarray) -> str:
    width = max(len(r) for r in rows)
    lines = [" " * width + " | " + " | ".join(f"{c:>8}" for c in columns)]
    lines.append("-" * len(lines[0]))
    for row, line in zip(rows, values):
        lines.append(f"{row:<{width}} | " + " | ".join(f"{v:8.3f}" for v in line))
    return "\n".join(lines)


def run(output_dir: Path) -> dict:
    output_dir = Path(output_dir).expanduser().resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = output_dir / "longclip-demo.pt"
    torch.save(random_openai_clip_state_dict(DEMO_VISION, DEMO_TEXT, longclip=True, seed=0), checkpoint)
    print(f"1. wrote an original-format Long-CLIP checkpoint: {checkpoint} ({checkpoint.stat().st_size / 1e6:.1f} MB)")

    folder = output_dir / "longclip-demo-hf"
    report = convert_longclip(checkpoint, folder, overwrite=True)
    print(f"2. converted it into {folder} after checking it against the reference forward:")
    for line in report.lines():
        print(f"     {line}")

    images = shape_images()
    for i, image in enumerate(images):
        image.save(output_dir / f"image_{i}.png")
    result = load_in_clean_process(folder, CAPTIONS)
    print(
        f"3. loaded it in a fresh process without modeling_longclip: {result['model_class']} from "
        f"{result['model_module'].rsplit('.', 1)[0]}, processor {result['processor_class']}"
    )
    from .. import LongCLIPModel, LongCLIPProcessor

    model = LongCLIPModel.from_pretrained(folder).eval()
    processor = LongCLIPProcessor.from_pretrained(folder)
    in_process = model.encode_text(CAPTIONS, processor=processor)
    remote_diff = (torch.tensor(result["encode_text"]) - in_process).abs().max().item()
    print(f"     text embeddings, clean process vs this one: max |diff| = {remote_diff:.2e}")

    token_counts = [len(ids) for ids in processor.tokenizer(CAPTIONS, verbose=False)["input_ids"]]
    similarity = (in_process @ model.encode_image(images, processor=processor).T).numpy()
    rows = [f"caption {i} ({n} tokens)" for i, n in enumerate(token_counts)]
    print("4. cosine similarity, captions x images (random weights: shows the path works, not a judgement)")
    print(_table(rows, [f"image {i}" for i in range(len(images))], similarity))
    return {"report": report, "remote_diff": remote_diff, "similarity": similarity, "folder": folder}


@command()
def main(argv=None) -> int:
    parser = ArgumentParser(prog="python -m modeling_longclip.demo.conversion", description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", default="demo_output/conversion", help="where the checkpoint and folder go")
    parser.add_argument("--clean", action="store_true", help="remove the output directory first")
    args = parser.parse_args(argv)
    output_dir = Path(args.output_dir).expanduser().resolve()  # printed and handed to a child process: absolute
    if args.clean:
        shutil.rmtree(output_dir, ignore_errors=True)
    run(output_dir)
    print(f"done: everything is in {output_dir}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
