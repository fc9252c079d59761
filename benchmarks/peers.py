"""Speed side by side, in one run: this package vs transformers' stock CLIPModel vs open_clip set up like the
original Long-CLIP (context 248, every text padded to 248).

    python benchmarks/peers.py --json peers.json   # a CUDA GPU: B/16-224 and L/14-336, bf16, a Llama-3-8B shape
    python benchmarks/peers.py --smoke             # anywhere: tiny shapes, fp32, seconds (the tests run this)

Sections (pick with --sections):
  image  images/s of the image tower, batch 256.
  text   texts/s of the text tower on a caption mix (half long captions of 80-248 tokens, half short of 8-25,
         shuffled). This package: batches cut from the length order, each padded to its longest, no padding mask
         (what `encode_text` does); stock CLIPModel and open_clip: every text padded to 248, in the given order.
  train  the Long-CLIP training step (image pass, long caption pass, short caption pass, both contrastive losses
         with PCA, backward, AdamW), samples/s and peak memory. This package pads each caption kind to its batch's
         longest; the peers pad every caption to 248 like the original.
  llm    LLM2CLIP text-feature extraction (bidirectional LLM + mean pooling) on the same caption mix: real tokens/s
         and the fraction of the device's bf16 peak they amount to (padding counted as waste). Length-bucketed
         batches vs the same model in the given order, each batch padded to its longest.
Random weights everywhere (speed does not depend on values). Each section checks that this package's outputs match
the stock path on a few inputs before timing. Prints a Markdown table; --json writes the results with the device,
versions and settings.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import platform
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
import transformers
from transformers import CLIPConfig, CLIPModel, LlamaConfig

from modeling_longclip import LLM2CLIPConfig, LLM2CLIPModel, LongCLIPConfig, LongCLIPModel
from modeling_longclip.contrastive import long_clip_loss
from modeling_longclip.embedding import order_by_length

SOT, EOT, CONTEXT = 49406, 49407, 248

CLIP_SHAPES = {
    "tiny": dict(
        vision=dict(
            hidden_size=64,
            intermediate_size=256,
            num_hidden_layers=2,
            num_attention_heads=1,
            image_size=32,
            patch_size=16,
        ),
        text=dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=1),
        projection_dim=32,
    ),
    "B/16": dict(
        vision=dict(
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            image_size=224,
            patch_size=16,
        ),
        text=dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8),
        projection_dim=512,
    ),
    "L/14-336": dict(
        vision=dict(
            hidden_size=1024,
            intermediate_size=4096,
            num_hidden_layers=24,
            num_attention_heads=16,
            image_size=336,
            patch_size=14,
        ),
        text=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12),
        projection_dim=768,
    ),
}
LLM_SHAPES = {
    "tiny-llama": dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=1000,
    ),
    "llama-3-8b": dict(
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
        rope_theta=500000.0,
        max_position_embeddings=8192,
    ),
}
# Dense bf16 tensor-core peaks (FLOP/s) from the vendors' data sheets, matched against the device name in order.
NOTES: set[str] = set()  # peers that could not run, printed under the table and kept in the JSON
BF16_PEAKS = (("H100 PCIe", 756e12), ("H100", 989.4e12), ("H200", 989.4e12), ("A100", 312e12), ("L40S", 362.05e12))


@dataclass
class Settings:
    smoke: bool
    device: str
    dtype: str
    shapes: list[str]
    llm_shape: str
    image_batch: int
    text_batch: int
    texts: int
    train_batches: dict[str, int]
    llm_batch: int
    llm_texts: int
    warmup: int
    repeats: int
    gradient_checkpointing: bool
    compile: bool
    seed: int = 0
    caption_mix: str = "50% long (80-248 tokens), 50% short (8-25 tokens), shuffled"

    @classmethod
    def for_mode(cls, smoke: bool, device: str, compile_: bool, gradient_checkpointing: bool) -> Settings:
        if smoke:
            return cls(
                smoke,
                device,
                "float32",
                ["tiny"],
                "tiny-llama",
                4,
                8,
                24,
                {"tiny": 8},
                4,
                12,
                1,
                2,
                gradient_checkpointing,
                compile_,
            )
        return cls(
            smoke,
            device,
            "bfloat16",
            ["B/16", "L/14-336"],
            "llama-3-8b",
            256,
            1024,
            4096,
            {"B/16": 256, "L/14-336": 128},
            64,
            1024,
            3,
            10,
            gradient_checkpointing,
            compile_,
        )


@dataclass
class Result:
    section: str
    shape: str
    peer: str
    throughput: float
    unit: str
    batch: int
    peak_gib: float | None = None
    extra: dict = field(default_factory=dict)


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure(fn, settings: Settings) -> tuple[float, float | None]:
    """Seconds per call after warm-up, and peak memory (GiB) over the timed calls on CUDA."""
    for _ in range(settings.warmup):
        fn()
    cuda = settings.device.startswith("cuda")
    synchronize(settings.device)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(settings.repeats):
        fn()
    synchronize(settings.device)
    seconds = (time.perf_counter() - start) / settings.repeats
    return seconds, (torch.cuda.max_memory_allocated() / 2**30 if cuda else None)


def autocast(settings: Settings):
    if settings.dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=settings.device.split(":")[0], dtype=getattr(torch, settings.dtype))


def caption_lengths(count: int, rng: random.Random, long=(80, CONTEXT), short=(8, 25)) -> list[int]:
    """Token counts (SOT and EOT included) of a shuffled half-long, half-short caption mix."""
    lengths = [rng.randint(*long) if i % 2 == 0 else rng.randint(*short) for i in range(count)]
    rng.shuffle(lengths)
    return lengths


def clip_ids(lengths: list[int], width: int, rng: torch.Generator) -> torch.Tensor:
    """Rows of SOT, random BPE ids, EOT, then id 0 up to `width` (the original tokenizer's padding)."""
    ids = torch.zeros(len(lengths), width, dtype=torch.long)
    for row, length in enumerate(lengths):
        ids[row, 0], ids[row, length - 1] = SOT, EOT
        ids[row, 1 : length - 1] = torch.randint(1, SOT, (length - 2,), generator=rng)
    return ids


def padding_mask(lengths: list[int], width: int) -> torch.Tensor:
    return (torch.arange(width).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)).long()


def length_batches(lengths: list[int], batch: int) -> list[list[int]]:
    """This package's batching: slices of the longest-first order (embedding.order_by_length)."""
    order = order_by_length(lengths)
    return [order[start : start + batch] for start in range(0, len(order), batch)]


def in_order_batches(count: int, batch: int) -> list[list[int]]:
    return [list(range(start, min(start + batch, count))) for start in range(0, count, batch)]


def clip_configs(shape: str) -> tuple[LongCLIPConfig, CLIPConfig]:
    spec = CLIP_SHAPES[shape]
    text = {**spec["text"], "max_position_embeddings": CONTEXT}
    ours = LongCLIPConfig(text_config=text, vision_config=spec["vision"], projection_dim=spec["projection_dim"])
    stock = CLIPConfig(text_config=text, vision_config=spec["vision"], projection_dim=spec["projection_dim"])
    return ours, stock


def clip_models(shape: str, settings: Settings) -> tuple[LongCLIPModel, CLIPModel]:
    """This package's model and a stock CLIPModel holding the same weights (the two are key-compatible)."""
    ours_config, stock_config = clip_configs(shape)
    torch.manual_seed(settings.seed)
    ours = LongCLIPModel(ours_config)
    stock = CLIPModel(stock_config)
    stock.load_state_dict(ours.state_dict())
    for model in (ours, stock):
        model.set_attn_implementation("sdpa")
    return ours.to(settings.device), stock.to(settings.device)


def open_clip_towers(transformer, shape: str, vocab_size: int = 49408) -> torch.nn.ModuleDict:
    """open_clip's text and vision towers of `shape` as Long-CLIP sets them up (context 248, QuickGELU), random
    weights; `transformer` is open_clip's transformer module."""
    spec = CLIP_SHAPES[shape]
    vision, text = spec["vision"], spec["text"]
    return torch.nn.ModuleDict(
        {
            "text": transformer.TextTransformer(
                context_length=CONTEXT,
                vocab_size=vocab_size,
                width=text["hidden_size"],
                heads=text["num_attention_heads"],
                layers=text["num_hidden_layers"],
                mlp_ratio=text["intermediate_size"] / text["hidden_size"],
                output_dim=spec["projection_dim"],
                act_layer=transformer.QuickGELU,
            ),
            "vision": transformer.VisionTransformer(
                image_size=vision["image_size"],
                patch_size=vision["patch_size"],
                width=vision["hidden_size"],
                heads=vision["num_attention_heads"],
                layers=vision["num_hidden_layers"],
                mlp_ratio=vision["intermediate_size"] / vision["hidden_size"],
                output_dim=spec["projection_dim"],
                act_layer=transformer.QuickGELU,
            ),
        }
    )


def open_clip_model(shape: str, settings: Settings):
    """open_clip towers of the same shape, context 248 (random weights), or None when open_clip is not installed."""
    from modeling_longclip.converters.open_clip_modules import import_open_clip_modules

    try:
        transformer, _ = import_open_clip_modules()
    except ImportError as error:
        NOTES.add(f"open_clip peer skipped: {error}")
        return None
    torch.manual_seed(settings.seed)
    towers = open_clip_towers(transformer, shape)
    towers.logit_scale = torch.nn.Parameter(torch.tensor(math.log(100.0)))
    return towers.to(settings.device)


def maybe_compile(fn, settings: Settings, dynamic: bool | None = None):
    """torch.compile when asked; `dynamic=True` for text, whose batches come in many lengths."""
    return torch.compile(fn, dynamic=dynamic) if settings.compile else fn


def check_close(name: str, ours: torch.Tensor, reference: torch.Tensor, settings: Settings) -> float:
    """Largest difference between L2-normalized embeddings; refuses to time a fast path that computes something else."""
    difference = (F.normalize(ours.float(), dim=-1) - F.normalize(reference.float(), dim=-1)).abs().max().item()
    tolerance = 1e-4 if settings.dtype == "float32" else 3e-2
    if not difference <= tolerance:
        raise AssertionError(
            f"{name}: this package's path differs from the stock path by {difference:.2e} (> {tolerance})"
        )
    return difference


def bench_image(shape: str, settings: Settings) -> list[Result]:
    ours, stock = clip_models(shape, settings)
    towers = open_clip_model(shape, settings)
    batch, size = settings.image_batch, CLIP_SHAPES[shape]["vision"]["image_size"]
    pixels = torch.randn(batch, 3, size, size, device=settings.device)
    results = []
    with torch.no_grad(), autocast(settings):
        difference = check_close(
            "image",
            ours.get_image_features(pixel_values=pixels[:4]).pooler_output,
            stock.get_image_features(pixel_values=pixels[:4]).pooler_output,
            settings,
        )
        peers = {
            "stock CLIPModel": lambda: stock.get_image_features(pixel_values=pixels),
            "modeling_longclip": maybe_compile(lambda: ours.get_image_features(pixel_values=pixels), settings),
        }
        if towers is not None:
            peers["open_clip (original)"] = lambda: towers["vision"](pixels)
        for peer, fn in peers.items():
            seconds, peak = measure(fn, settings)
            results.append(
                Result(
                    "image",
                    shape,
                    peer,
                    batch / seconds,
                    "images/s",
                    batch,
                    peak,
                    {"max_embedding_difference": difference} if peer == "modeling_longclip" else {},
                )
            )
    return results


def bench_text(shape: str, settings: Settings) -> list[Result]:
    ours, stock = clip_models(shape, settings)
    towers = open_clip_model(shape, settings)
    rng = random.Random(settings.seed)
    lengths = caption_lengths(settings.texts, rng)
    ids = clip_ids(lengths, CONTEXT, torch.Generator().manual_seed(settings.seed))
    mask = padding_mask(lengths, CONTEXT)
    device = settings.device
    # Inputs are built before timing: the tower is measured, the same way for every peer.
    bucketed = [
        (ids[rows, : max(lengths[i] for i in rows)].to(device), rows)
        for rows in length_batches(lengths, settings.text_batch)
    ]
    padded = [
        (ids[rows].to(device), mask[rows].to(device)) for rows in in_order_batches(len(lengths), settings.text_batch)
    ]
    ours_text = maybe_compile(
        lambda input_ids: ours.get_text_features(input_ids=input_ids).pooler_output, settings, dynamic=True
    )

    def run_ours():
        return [ours_text(batch) for batch, _ in bucketed]

    results = []
    with torch.no_grad(), autocast(settings):
        first, rows = bucketed[0]
        difference = check_close(
            "text",
            ours.get_text_features(input_ids=first[:4]).pooler_output,
            stock.get_text_features(
                input_ids=ids[rows[:4]].to(device), attention_mask=mask[rows[:4]].to(device)
            ).pooler_output,
            settings,
        )
        peers = {
            "stock CLIPModel (padded to 248)": lambda: [
                stock.get_text_features(input_ids=i, attention_mask=m) for i, m in padded
            ],
            "modeling_longclip (length-bucketed)": run_ours,
        }
        if towers is not None:
            peers["open_clip (original, padded to 248)"] = lambda: [towers["text"](i) for i, _ in padded]
        real = sum(lengths)
        for peer, fn in peers.items():
            seconds, peak = measure(fn, settings)
            tokens = sum(b.numel() for b, _ in bucketed) if "bucketed" in peer else len(lengths) * CONTEXT
            extra = {"padding_waste": 1 - real / tokens}
            if "bucketed" in peer:
                extra["max_embedding_difference"] = difference
            results.append(
                Result("text", shape, peer, len(lengths) / seconds, "texts/s", settings.text_batch, peak, extra)
            )
    return results


def training_batch(shape: str, batch: int, settings: Settings) -> dict:
    rng = random.Random(settings.seed)
    size = CLIP_SHAPES[shape]["vision"]["image_size"]
    generator = torch.Generator().manual_seed(settings.seed)
    long_lengths = [rng.randint(80, CONTEXT) for _ in range(batch)]
    short_lengths = [rng.randint(8, 25) for _ in range(batch)]
    return {
        "pixels": torch.randn(batch, 3, size, size, generator=generator),
        "long": clip_ids(long_lengths, CONTEXT, generator),
        "long_lengths": long_lengths,
        "short": clip_ids(short_lengths, CONTEXT, generator),
        "short_lengths": short_lengths,
    }


def bench_train(shape: str, settings: Settings) -> list[Result]:
    batch = settings.train_batches[shape]
    data = training_batch(shape, batch, settings)
    device = settings.device
    pixels = data["pixels"].to(device)
    long_full, short_full = data["long"].to(device), data["short"].to(device)
    long_mask = padding_mask(data["long_lengths"], CONTEXT).to(device)
    short_mask = padding_mask(data["short_lengths"], CONTEXT).to(device)
    long_tight = long_full[:, : max(data["long_lengths"])]  # the collator pads to the batch's longest
    short_tight = short_full[:, : max(data["short_lengths"])]
    pca = LongCLIPConfig().pca_components
    results = []

    def stepper(model, loss_fn):
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6, weight_decay=0.01)

        def step():
            with autocast(settings):
                loss = loss_fn()
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return loss

        return step

    peers = {}
    ours, stock = clip_models(shape, settings)
    for model in (ours, stock):
        model.train()
        if settings.gradient_checkpointing:
            model.gradient_checkpointing_enable()

    def ours_loss():
        return ours(input_ids=long_tight, pixel_values=pixels, short_input_ids=short_tight, return_loss=True).loss

    def stock_loss():
        image = F.normalize(stock.get_image_features(pixel_values=pixels).pooler_output, dim=-1)
        text = F.normalize(
            stock.get_text_features(input_ids=long_full, attention_mask=long_mask).pooler_output, dim=-1
        )
        short = F.normalize(
            stock.get_text_features(input_ids=short_full, attention_mask=short_mask).pooler_output, dim=-1
        )
        return long_clip_loss(image, text, stock.logit_scale.exp(), short, pca_components=pca, label_smoothing=0.1)

    with torch.no_grad():
        difference = abs(ours_loss().item() - stock_loss().item())
    peers["stock CLIPModel (padded to 248)"] = stepper(stock, stock_loss)
    peers["modeling_longclip (padded per batch)"] = stepper(ours, ours_loss)
    towers = open_clip_model(shape, settings)
    if towers is not None:
        towers.train()
        if settings.gradient_checkpointing:
            towers["text"].set_grad_checkpointing(True)
            towers["vision"].set_grad_checkpointing(True)

        def open_clip_loss():
            image = F.normalize(towers["vision"](pixels), dim=-1)
            text = F.normalize(towers["text"](long_full), dim=-1)
            short = F.normalize(towers["text"](short_full), dim=-1)
            return long_clip_loss(
                image, text, towers.logit_scale.exp(), short, pca_components=pca, label_smoothing=0.1
            )

        peers["open_clip (original, padded to 248)"] = stepper(towers, open_clip_loss)
    for peer, step in peers.items():
        seconds, peak = measure(step, settings)
        extra = {"loss_difference_vs_stock": difference} if peer.startswith("modeling_longclip") else {}
        results.append(Result("train", shape, peer, batch / seconds, "samples/s", batch, peak, extra))
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    return results


def bf16_peak(device: str) -> float | None:
    if not device.startswith("cuda"):
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in BF16_PEAKS if key in name), None)


def llm_model(settings: Settings) -> LLM2CLIPModel:
    """An LLM2CLIP model whose text tower has the chosen LLM shape, built with random weights directly on the device
    in the compute dtype (an 8B model is never materialized in float32 or on the host)."""
    text = LlamaConfig(**LLM_SHAPES[settings.llm_shape])
    config = LLM2CLIPConfig(text_config=text, vision_config=CLIP_SHAPES["tiny"]["vision"], projection_dim=64)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(getattr(torch, settings.dtype))
    try:
        with torch.device(settings.device):
            torch.manual_seed(settings.seed)
            model = LLM2CLIPModel(config)
    finally:
        torch.set_default_dtype(previous)
    model.set_attn_implementation("sdpa")
    return model.eval()


def bench_llm(settings: Settings) -> list[Result]:
    model = llm_model(settings)
    text_model = model.text_model
    spec = LLM_SHAPES[settings.llm_shape]
    layers, width = spec["num_hidden_layers"], spec["hidden_size"]
    dense = sum(p.numel() for name, p in text_model.named_parameters() if "embed_tokens" not in name)
    rng = random.Random(settings.seed)
    lengths = caption_lengths(settings.llm_texts, rng)
    generator = torch.Generator().manual_seed(settings.seed)
    ids = torch.randint(1, spec["vocab_size"], (len(lengths), CONTEXT), generator=generator)
    mask = padding_mask(lengths, CONTEXT)
    flops = sum(2 * dense * n + 4 * layers * width * n * n for n in lengths)  # matmuls + bidirectional attention
    real = sum(lengths)
    peak = bf16_peak(settings.device)

    def prepared(batches):
        out = []
        for rows in batches:
            width_ = max(lengths[i] for i in rows)
            out.append((ids[rows, :width_].to(settings.device), mask[rows, :width_].to(settings.device)))
        return out

    peers = {
        "in given order (padded per batch)": prepared(in_order_batches(len(lengths), settings.llm_batch)),
        "modeling_longclip (length-bucketed)": prepared(length_batches(lengths, settings.llm_batch)),
    }
    results = []
    with torch.no_grad():
        single = [model.encode_llm(input_ids=ids[i : i + 1, : lengths[i]].to(settings.device)) for i in range(2)]
        batched = model.encode_llm(*peers["in given order (padded per batch)"][0])[:2]
        difference = check_close("llm", batched, torch.cat(single), settings)
        for peer, batches in peers.items():
            seconds, memory = measure(
                lambda batches=batches: [model.encode_llm(input_ids=i, attention_mask=m) for i, m in batches], settings
            )
            padded_tokens = sum(i.numel() for i, _ in batches)
            extra = {
                "padding_waste": 1 - real / padded_tokens,
                "tflops": flops / seconds / 1e12,
                "fraction_of_bf16_peak": (flops / seconds / peak) if peak else None,
                "dense_parameters": dense,
            }
            if peer.startswith("modeling_longclip"):
                extra["max_embedding_difference"] = difference
            results.append(
                Result("llm", settings.llm_shape, peer, real / seconds, "tokens/s", settings.llm_batch, memory, extra)
            )
    return results


def environment(settings: Settings) -> dict:
    device = (
        torch.cuda.get_device_name(settings.device)
        if settings.device.startswith("cuda")
        else (platform.processor() or "cpu")
    )
    versions = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    with contextlib.suppress(Exception):
        from importlib.metadata import version

        versions["open_clip_torch"] = version("open_clip_torch")
    return {"device": device, "date": time.strftime("%Y-%m-%d"), "versions": versions, "settings": asdict(settings)}


def table(results: list[Result]) -> str:
    lines = [
        "| section | shape | peer | throughput | vs first peer | peak memory (GiB) | notes |",
        "|---|---|---|---|---|---|---|",
    ]
    baseline = {}
    for r in results:
        key = (r.section, r.shape)
        baseline.setdefault(key, r.throughput)
        notes = ", ".join(
            f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in r.extra.items() if v is not None
        )
        peak = f"{r.peak_gib:.1f}" if r.peak_gib is not None else "-"
        lines.append(
            f"| {r.section} | {r.shape} | {r.peer} | {r.throughput:,.1f} {r.unit} | "
            f"{r.throughput / baseline[key]:.2f}x | {peak} | {notes} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="tiny shapes in fp32 on CPU: checks the script itself")
    parser.add_argument(
        "--sections", nargs="+", default=["image", "text", "train", "llm"], choices=["image", "text", "train", "llm"]
    )
    parser.add_argument(
        "--shapes",
        nargs="+",
        choices=sorted(CLIP_SHAPES),
        help="CLIP shapes (default: B/16 and L/14-336; tiny with --smoke)",
    )
    parser.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="torch.compile this package's encode paths (default: on with CUDA, off otherwise)",
    )
    parser.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    cuda = torch.cuda.is_available() and not args.smoke
    device = "cuda" if cuda else "cpu"
    settings = Settings.for_mode(
        args.smoke or not cuda, device, cuda if args.compile is None else args.compile, args.gradient_checkpointing
    )
    if not cuda and not args.smoke:
        print("no CUDA device: running the smoke configuration", file=sys.stderr)
    if args.shapes:
        settings.shapes = args.shapes
        settings.train_batches = {s: settings.train_batches.get(s, 8) for s in args.shapes}
    results: list[Result] = []
    for section in args.sections:
        if section == "llm":
            results += bench_llm(settings)
            continue
        for shape in settings.shapes:
            results += {"image": bench_image, "text": bench_text, "train": bench_train}[section](shape, settings)
    info = environment(settings)
    print(f"\n{info['device']} · {info['date']} · " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()))
    print(
        f"dtype {settings.dtype}, compile {settings.compile}, gradient checkpointing {settings.gradient_checkpointing}, "
        f"caption mix: {settings.caption_mix}\n"
    )
    print(table(results))
    for note in sorted(NOTES):
        print(f"\nnote: {note}")
    if args.json:
        report = {**info, "notes": sorted(NOTES), "results": [asdict(r) for r in results]}
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
