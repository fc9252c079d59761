"""CPU speed side by side, in one run: this package's image and text paths vs transformers' stock CLIPModel vs
open_clip set up like the original Long-CLIP vs the ONNX float32 and int8 graphs of `longclip-export-onnx`.

    python benchmarks/cpu_peers.py --json cpu_peers.json          # B/16-224 batch 8, L/14-336 batch 2, 2 threads
    python benchmarks/cpu_peers.py --smoke                        # tiny shapes, seconds (the tests run this)

Every peer holds the same random weights (speed does not depend on values): open_clip's towers get this package's
weights in the original key layout, the ONNX graphs are exported from this package's model. Before any timing each
peer's embeddings are compared with this package's: float32 peers must agree within 1e-4 (normalized embeddings),
the int8 graphs report their smallest cosine. Timing: the peers take turns, one call each per round, so a change in
machine load hits all of them alike; each row gives the median and the spread (min-max) over the rounds.

  image  images/s of `get_image_features` on a fixed batch (what `encode_image` runs after preprocessing).
  text   texts/s on a shuffled caption mix (half 80-248 tokens, half 8-25), Long-CLIP text at 248 positions. This
         package: batches cut from the length order, each padded to its longest, no padding mask (what
         `encode_text` does); stock CLIPModel and open_clip: every text padded to 248, in the given order; the ONNX
         graphs: this package's batches, with their padding mask.
Targets (ratios of medians in the same run): long-caption text >= 1.8x stock CLIPModel padded to 248; ONNX int8 image
encoding >= 1.5x this package's PyTorch float32 at cosine >= 0.99; this package's PyTorch paths never slower than
open_clip. `--profile DIR` writes torch.profiler tables of the PyTorch peers, to see where the time goes.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from peers import (
    CLIP_SHAPES,
    CONTEXT,
    NOTES,
    caption_lengths,
    clip_ids,
    clip_models,
    environment,
    in_order_batches,
    length_batches,
    open_clip_towers,
    padding_mask,
)

from modeling_longclip.converters.open_clip_modules import import_open_clip_modules
from modeling_longclip.export.onnx import ImageFeatures, TextFeatures, _export, quantize_graph
from modeling_longclip.export.open_clip import open_clip_state_dict

FP32_TOLERANCE = 1e-4


@dataclass
class Settings:
    shapes: list[str]
    image_batches: dict[str, int]
    texts: int
    text_batch: int
    threads: int
    rounds: int
    warmup: int
    smoke: bool = False
    seed: int = 0
    device: str = "cpu"
    dtype: str = "float32"
    caption_mix: str = "50% long (80-248 tokens), 50% short (8-25 tokens), shuffled"


@dataclass
class Row:
    section: str
    shape: str
    peer: str
    unit: str
    median: float
    low: float
    high: float
    batch: int
    agreement: dict = field(default_factory=dict)


def open_clip_towers_holding(model, shape: str):
    """(text, vision): open_clip's towers (context 248, QuickGELU) holding `model`'s weights in the original layout,
    mapped by the open_clip export (`open_clip_state_dict`: fused in_proj, projections as x @ W)."""
    transformer, _ = import_open_clip_modules()
    state = open_clip_state_dict(model)
    towers = open_clip_towers(transformer, shape, vocab_size=state["token_embedding.weight"].shape[0])
    visual = {k.removeprefix("visual."): v for k, v in state.items() if k.startswith("visual.")}
    towers["vision"].load_state_dict(visual, strict=True)
    text = {k: v for k, v in state.items() if not k.startswith("visual.") and k != "logit_scale"}
    towers["text"].load_state_dict(text, strict=True)
    return towers["text"].eval(), towers["vision"].eval()


def onnx_sessions(model, shape: str, folder: Path, threads: int) -> dict[str, dict]:
    """{"fp32": {"text": session, "vision": session}, "int8": ...}: this package's model exported the way
    `longclip-export-onnx` does (eager attention, TorchScript exporter), quantized with its `--quantize int8`."""
    import onnxruntime

    model.set_attn_implementation("eager")
    size = CLIP_SHAPES[shape]["vision"]["image_size"]
    ids = clip_ids([7, 12], 12, torch.Generator().manual_seed(1))
    names = ("input_ids", "attention_mask")
    text_args = (ids, padding_mask([7, 12], 12))
    paths = {"text": folder / "text_model.onnx", "vision": folder / "vision_model.onnx"}
    _export(TextFeatures(model, names), text_args, paths["text"], names, "text_features", sequence=True)
    image = (torch.randn(2, 3, size, size),)
    _export(ImageFeatures(model), image, paths["vision"], ("pixel_values",), "image_features", sequence=False)
    model.set_attn_implementation("sdpa")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    sessions = {"fp32": {}, "int8": {}}
    for tower, path in paths.items():
        quantized = path.with_name(f"{path.stem}_int8.onnx")
        quantize_graph(path, quantized)
        for kind, graph in (("fp32", path), ("int8", quantized)):
            sessions[kind][tower] = onnxruntime.InferenceSession(
                str(graph), options, providers=["CPUExecutionProvider"]
            )
    return sessions


def rounds(peers: dict, settings: Settings) -> dict[str, list[float]]:
    """Seconds per call of every peer, taken in turns (one call each per round, order rotated)."""
    names = list(peers)
    for _ in range(settings.warmup):
        for name in names:
            peers[name]()
    seconds = {name: [] for name in names}
    for index in range(settings.rounds):
        for name in names[index % len(names) :] + names[: index % len(names)]:
            start = time.perf_counter()
            peers[name]()
            seconds[name].append(time.perf_counter() - start)
    return seconds


def agreement(name: str, got: torch.Tensor, reference: torch.Tensor, quantized: bool) -> dict:
    """How the peer's embeddings compare with this package's; a float32 peer that differs is refused."""
    got, reference = F.normalize(got.float(), dim=-1), F.normalize(reference.float(), dim=-1)
    difference = (got - reference).abs().max().item()
    cosine = (got * reference).sum(-1).min().item()
    if not quantized and not difference <= FP32_TOLERANCE:
        raise AssertionError(f"{name}: differs from this package's embeddings by {difference:.2e} > {FP32_TOLERANCE}")
    return {"max_abs_diff": difference, "min_cosine": cosine}


def to_rows(section, shape, unit, count, batch, seconds, agreements) -> list[Row]:
    rows = []
    for peer, times in seconds.items():
        rates = [count / t for t in times]
        rows.append(
            Row(section, shape, peer, unit, statistics.median(rates), min(rates), max(rates), batch, agreements[peer])
        )
    return rows


def bench_image(shape, ours, stock, vision_tower, sessions, settings) -> list[Row]:
    size, batch = CLIP_SHAPES[shape]["vision"]["image_size"], settings.image_batches[shape]
    pixels = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(settings.seed))
    feed = {"pixel_values": pixels.numpy()}
    peers = {
        "modeling_longclip (PyTorch fp32)": lambda: ours.get_image_features(pixel_values=pixels).pooler_output,
        "stock CLIPModel (PyTorch fp32)": lambda: stock.get_image_features(pixel_values=pixels).pooler_output,
        "open_clip (original)": lambda: vision_tower(pixels),
        "ONNX Runtime fp32": lambda: torch.from_numpy(sessions["fp32"]["vision"].run(None, feed)[0]),
        "ONNX Runtime int8 (dynamic)": lambda: torch.from_numpy(sessions["int8"]["vision"].run(None, feed)[0]),
    }
    with torch.inference_mode():
        reference = peers["modeling_longclip (PyTorch fp32)"]()
        agreements = {name: agreement(name, fn(), reference, "int8" in name) for name, fn in peers.items()}
        seconds = rounds(peers, settings)
    return to_rows("image", shape, "images/s", batch, batch, seconds, agreements)


def bench_text(shape, ours, stock, text_tower, sessions, settings) -> list[Row]:
    rng = random.Random(settings.seed)
    lengths = caption_lengths(settings.texts, rng)
    ids = clip_ids(lengths, CONTEXT, torch.Generator().manual_seed(settings.seed))
    mask = padding_mask(lengths, CONTEXT)
    bucketed = []
    for rows in length_batches(lengths, settings.text_batch):
        width = max(lengths[i] for i in rows)
        bucketed.append((rows, ids[rows, :width], mask[rows, :width]))
    padded = [(rows, ids[rows], mask[rows]) for rows in in_order_batches(len(lengths), settings.text_batch)]

    def gather(outputs, batches):
        """Rows back in the given order, to compare peers that batch differently."""
        result = torch.empty(len(lengths), outputs[0].shape[-1])
        for out, (rows, *_) in zip(outputs, batches):
            result[torch.tensor(rows)] = out.float()
        return result

    def onnx(kind):
        session = sessions[kind]["text"]
        return lambda: [
            torch.from_numpy(session.run(None, {"input_ids": i.numpy(), "attention_mask": m.numpy()})[0])
            for _, i, m in bucketed
        ]

    peers = {
        "modeling_longclip (PyTorch fp32, length-bucketed)": lambda: [
            ours.get_text_features(input_ids=i).pooler_output for _, i, _ in bucketed
        ],
        "stock CLIPModel (PyTorch fp32, padded to 248)": lambda: [
            stock.get_text_features(input_ids=i, attention_mask=m).pooler_output for _, i, m in padded
        ],
        "open_clip (original, padded to 248)": lambda: [text_tower(i) for _, i, _ in padded],
        "ONNX Runtime fp32 (length-bucketed)": onnx("fp32"),
        "ONNX Runtime int8 (dynamic, length-bucketed)": onnx("int8"),
    }
    batches_of = {name: (padded if "padded" in name else bucketed) for name in peers}
    with torch.inference_mode():
        reference = gather(peers["modeling_longclip (PyTorch fp32, length-bucketed)"](), bucketed)
        agreements = {
            name: agreement(name, gather(fn(), batches_of[name]), reference, "int8" in name)
            for name, fn in peers.items()
        }
        seconds = rounds(peers, settings)
    waste = {
        name: 1 - sum(lengths) / sum(i.numel() for _, i, _ in batches_of[name]) for name in peers
    }  # padded tokens run for nothing
    for name in peers:
        agreements[name]["padding_waste"] = waste[name]
    return to_rows("text", shape, "texts/s", len(lengths), settings.text_batch, seconds, agreements)


def profile_towers(shape, ours, stock, vision_tower, text_tower, settings, folder: Path) -> None:
    """torch.profiler op tables (self CPU time) of one image batch and one long-caption batch per PyTorch peer."""
    from torch.profiler import ProfilerActivity, profile

    size, batch = CLIP_SHAPES[shape]["vision"]["image_size"], settings.image_batches[shape]
    pixels = torch.randn(batch, 3, size, size)
    ids = clip_ids([CONTEXT] * settings.text_batch, CONTEXT, torch.Generator().manual_seed(0))
    runs = {
        "image-modeling_longclip": lambda: ours.get_image_features(pixel_values=pixels),
        "image-open_clip": lambda: vision_tower(pixels),
        "text248-modeling_longclip": lambda: ours.get_text_features(input_ids=ids),
        "text248-stock": lambda: stock.get_text_features(input_ids=ids, attention_mask=torch.ones_like(ids)),
        "text248-open_clip": lambda: text_tower(ids),
    }
    folder.mkdir(parents=True, exist_ok=True)
    with torch.inference_mode():
        for name, fn in runs.items():
            fn()
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                fn()
            table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)
            (folder / f"{shape.replace('/', '_')}-{name}.txt").write_text(table)


def table(rows: list[Row]) -> str:
    lines = [
        "| section | shape | peer | throughput (median) | spread (min-max) | vs this package | agreement |",
        "|---|---|---|---|---|---|---|",
    ]
    ours = {(r.section, r.shape): r.median for r in rows if r.peer.startswith("modeling_longclip")}
    for r in rows:
        notes = ", ".join(f"{k} {v:.3g}" for k, v in r.agreement.items())
        lines.append(
            f"| {r.section} | {r.shape} | {r.peer} | {r.median:.3g} {r.unit} | {r.low:.3g}-{r.high:.3g} | "
            f"{r.median / ours[(r.section, r.shape)]:.2f}x | {notes} |"
        )
    return "\n".join(lines)


def targets(rows: list[Row]) -> list[str]:
    """The issue's targets as ratios of medians in this run, each met or missed by how much."""
    by = {(r.section, r.shape, r.peer.split(" (")[0]): r for r in rows}
    lines = []
    for shape in sorted({r.shape for r in rows}):
        ours_text, stock_text = (
            by.get(("text", shape, "modeling_longclip")),
            by.get(("text", shape, "stock CLIPModel")),
        )
        ours_image, int8_image = (
            by.get(("image", shape, "modeling_longclip")),
            by.get(("image", shape, "ONNX Runtime int8")),
        )
        checks = []
        if ours_text and stock_text:
            checks.append(("text vs stock CLIPModel padded to 248", ours_text.median / stock_text.median, 1.8))
        if ours_image and int8_image:
            cosine = int8_image.agreement["min_cosine"]
            name = f"ONNX int8 image vs PyTorch fp32 (cosine {cosine:.4f}, target >= 0.99)"
            checks.append((name, int8_image.median / ours_image.median, 1.5))
        for section in ("image", "text"):
            ours, original = by.get((section, shape, "modeling_longclip")), by.get((section, shape, "open_clip"))
            if ours and original:
                checks.append((f"{section} vs open_clip", ours.median / original.median, 1.0))
        for name, ratio, goal in checks:
            verdict = "met" if ratio >= goal else f"MISSED by {100 * (1 - ratio / goal):.0f}%"
            lines.append(f"{shape}: {name}: {ratio:.2f}x (target >= {goal}x): {verdict}")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny shapes, 2 rounds: checks the script itself")
    parser.add_argument("--shapes", nargs="+", choices=["B/16", "L/14-336", "tiny"])
    parser.add_argument("--threads", type=int, default=2, help="torch and onnxruntime intra-op threads")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--texts", type=int, default=32, help="captions in the mix (default: %(default)s)")
    parser.add_argument("--text-batch", type=int, default=16)
    parser.add_argument("--sections", nargs="+", default=["image", "text"], choices=["image", "text"])
    parser.add_argument("--profile", type=Path, help="write torch.profiler tables of the PyTorch peers here")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    shapes = args.shapes or (["tiny"] if args.smoke else ["B/16", "L/14-336"])
    settings = Settings(
        shapes=shapes,
        image_batches={"B/16": 8, "L/14-336": 2, "tiny": 4},
        texts=8 if args.smoke else args.texts,
        text_batch=4 if args.smoke else args.text_batch,
        threads=args.threads,
        rounds=2 if args.smoke else args.rounds,
        warmup=1,
        smoke=args.smoke,
    )
    torch.set_num_threads(settings.threads)
    import onnxruntime

    info = environment(settings)
    info["versions"]["onnxruntime"] = onnxruntime.__version__
    info["threads"] = settings.threads
    rows: list[Row] = []

    def write_json() -> None:  # after every shape, so a run cut short keeps what it measured
        if args.json:
            report = {**info, "notes": sorted(NOTES), "targets": targets(rows), "results": [asdict(r) for r in rows]}
            args.json.write_text(json.dumps(report, indent=2))

    for shape in shapes:
        ours, stock = clip_models(shape, settings)
        ours, stock = ours.eval(), stock.eval()
        text_tower, vision_tower = open_clip_towers_holding(ours, shape)
        with tempfile.TemporaryDirectory() as folder:
            sessions = onnx_sessions(ours, shape, Path(folder), settings.threads)
            if "image" in args.sections:
                rows += bench_image(shape, ours, stock, vision_tower, sessions, settings)
            if "text" in args.sections:
                rows += bench_text(shape, ours, stock, text_tower, sessions, settings)
        write_json()
        print(table([r for r in rows if r.shape == shape]), file=sys.stderr, flush=True)
        if args.profile:
            profile_towers(shape, ours, stock, vision_tower, text_tower, settings, args.profile)
        del ours, stock, text_tower, vision_tower, sessions
    print(f"\n{info['device']} · {info['date']} · " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()))
    print(f"fp32, {settings.threads} threads, {settings.rounds} rounds, caption mix: {settings.caption_mix}\n")
    print(table(rows))
    print("\n" + "\n".join(targets(rows)))
    for note in sorted(NOTES):
        print(f"\nnote: {note}")
    write_json()
    return 0


if __name__ == "__main__":
    sys.exit(main())
