"""EVA02-CLIP image tower (this package's EVA02VisionModel) vs the OpenAI-CLIP tower (transformers' CLIPVisionModel) of
the same width, depth and image size, side by side in one run.

    python benchmarks/eva02_vs_clip.py                          # B/16-224, fp32, CPU (or --device cuda --dtype bfloat16)
    python benchmarks/eva02_vs_clip.py --sizes B/16 L/14-336 --device cuda --dtype bfloat16 --batch 64
    python benchmarks/eva02_vs_clip.py --smoke                  # tiny shapes, seconds (the tests run this)

Both towers get random weights (speed does not depend on values), the same pixels and the same attention backend
(--attn, default sdpa: torch's scaled_dot_product_attention, whichever kernel torch picks for the device). Forward
only, under inference_mode. The two towers are timed in alternation, one batch each per round, and the median per
tower is reported, so load from other processes on a shared machine hits both alike. The EVA02 tower does the same
matmul work as CLIP's (q/k/v/out 4 W^2 + SwiGLU 3 * 2.67 W^2 vs MLP 2 * 4 W^2 per token) plus its rotary embedding and
two extra LayerNorms per block. Prints a Markdown table; --json writes it with the device, versions and settings.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import transformers
from transformers import CLIPVisionConfig, CLIPVisionModel

from modeling_longclip.configuration_eva02 import EVA02VisionConfig
from modeling_longclip.modeling_eva02 import EVA02VisionModel

SHAPES = {  # (width, layers, heads, patch, image, EVA SwiGLU hidden)
    "tiny": (64, 2, 1, 8, 32, 170),
    "B/16": (768, 12, 12, 16, 224, 2048),
    "L/14": (1024, 24, 16, 14, 224, 2730),
    "L/14-336": (1024, 24, 16, 14, 336, 2730),
}
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def build_towers(size: str, attn: str, device: str, dtype: torch.dtype) -> dict[str, torch.nn.Module]:
    width, layers, heads, patch, image, swiglu = SHAPES[size]
    common = dict(
        hidden_size=width, num_hidden_layers=layers, num_attention_heads=heads, patch_size=patch, image_size=image
    )
    torch.manual_seed(0)
    clip = CLIPVisionModel._from_config(
        CLIPVisionConfig(**common, intermediate_size=4 * width), attn_implementation=attn
    )
    eva = EVA02VisionModel._from_config(
        EVA02VisionConfig(**common, intermediate_size=swiglu), attn_implementation=attn
    )
    return {
        "EVA02VisionModel (modeling_longclip)": eva.to(device, dtype).eval(),
        "CLIPVisionModel (transformers)": clip.to(device, dtype).eval(),
    }


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@torch.inference_mode()
def time_towers(towers: dict, pixels: torch.Tensor, rounds: int, warmup: int, device: str) -> dict[str, list[float]]:
    for _ in range(warmup):
        for tower in towers.values():
            tower(pixel_values=pixels)
    seconds = {name: [] for name in towers}
    for _ in range(rounds):
        for name, tower in towers.items():
            synchronize(device)
            start = time.perf_counter()
            tower(pixel_values=pixels)
            synchronize(device)
            seconds[name].append(time.perf_counter() - start)
    return seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", choices=sorted(SHAPES), default=["B/16"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--attn", choices=["sdpa", "eager"], default="sdpa")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes, batch 2, 2 rounds")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    if args.smoke:
        args.sizes, args.batch, args.rounds, args.warmup = ["tiny"], 2, 2, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    device_name = (
        torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else platform.processor() or "cpu"
    )
    results = []
    for size in args.sizes:
        towers = build_towers(size, args.attn, args.device, DTYPES[args.dtype])
        image = SHAPES[size][4]
        pixels = torch.randn(args.batch, 3, image, image, generator=torch.Generator().manual_seed(1))
        pixels = pixels.to(args.device, DTYPES[args.dtype])
        seconds = time_towers(towers, pixels, args.rounds, args.warmup, args.device)
        for name, times in seconds.items():
            median = statistics.median(times)
            results.append(
                dict(
                    size=size,
                    tower=name,
                    attn=args.attn,
                    batch=args.batch,
                    seconds_per_batch=median,
                    images_per_second=args.batch / median,
                    rounds=args.rounds,
                )
            )
    threads = torch.get_num_threads()
    print(
        f"device: {args.device} ({device_name}, {threads} threads), dtype {args.dtype}, torch {torch.__version__}, "
        f"transformers {transformers.__version__}; median of {args.rounds} alternating rounds"
    )
    print("| size | tower | attn | batch | images/s | ms/batch | EVA02 / CLIP |")
    print("|---|---|---|---|---|---|---|")
    for size in args.sizes:
        rows = [r for r in results if r["size"] == size]
        clip = next(r for r in rows if r["tower"].startswith("CLIP"))
        for row in rows:
            ratio = row["images_per_second"] / clip["images_per_second"]
            print(
                f"| {size} | {row['tower']} | {row['attn']} | {row['batch']} | {row['images_per_second']:.2f} | "
                f"{1000 * row['seconds_per_batch']:.1f} | {ratio:.2f} |"
            )
    if args.json:
        report = dict(
            device=args.device,
            device_name=device_name,
            threads=threads,
            dtype=args.dtype,
            versions=dict(
                torch=torch.__version__, transformers=transformers.__version__, python=sys.version.split()[0]
            ),
            settings=vars(args) | {"json": str(args.json), "smoke": args.smoke},
            results=results,
        )
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
