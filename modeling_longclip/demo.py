"""The embedded default job: what 248 tokens buy, shown end to end on synthetic scenes, offline, in minutes.

1. Generate scenes whose members differ only in details described past token 77 (modeling_longclip.scenes).
2. Train a tiny CLIP at 77 tokens on them (each sample's short caption or its truncated long caption).
3. Stretch it to 248 positions (`LongCLIPModel.from_clip`) and fine-tune it with the Long-CLIP recipe through
   `longclip-train`, the same trainer a user runs.
4. Evaluate both on held-out scenes with `longclip-eval`'s retrieval code and print long- and short-caption R@1.
The final model is a Hub-ready folder; the table (Markdown, JSON) and a bar chart are saved beside it.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, ImageDraw
from transformers import CLIPConfig, CLIPModel, set_seed

from .converters.clip_preprocessing import build_clip_tokenizer, clip_image_processor
from .evaluation import RetrievalSet, evaluate_retrieval
from .modeling_longclip import LongCLIPModel
from .processing_longclip import LongCLIPProcessor, LongTextTruncationWarning
from .scenes import CELL, make_scenes, write_split
from .training.collator import ImageCaptionCollator
from .training.data import load_caption_file
from .training.longclip_train import DataArguments, LongCLIPTrainingArguments, ModelArguments, train
from .training.trainer import CollatorEpochCallback, ContrastiveTrainer


@dataclass
class DemoSettings:
    train_groups: int = 160
    test_groups: int = 25
    per_group: int = 4
    clip_steps: int = 500
    longclip_steps: int = 500
    batch_size: int = 64
    clip_learning_rate: float = 1e-3
    longclip_learning_rate: float = 1e-3  # the authors' 1e-6 is for a pretrained CLIP, not a tiny one
    seed: int = 0


def tiny_clip_config() -> CLIPConfig:
    return CLIPConfig(
        text_config=dict(hidden_size=128, intermediate_size=512, num_hidden_layers=3, num_attention_heads=2,
                         max_position_embeddings=77),
        vision_config=dict(hidden_size=128, intermediate_size=512, num_hidden_layers=2, num_attention_heads=2,
                           image_size=3 * CELL, patch_size=CELL),
        projection_dim=64,
    )  # fmt: skip


def _quiet_training_args(output_dir: Path, steps: int, settings: DemoSettings, learning_rate: float, **extra):
    return LongCLIPTrainingArguments(
        output_dir=str(output_dir), max_steps=steps, per_device_train_batch_size=settings.batch_size,
        learning_rate=learning_rate, warmup_steps=max(steps // 10, 1), lr_scheduler_type="cosine", weight_decay=0.01,
        save_strategy="no", report_to="none", logging_steps=max(steps // 5, 1), use_cpu=not torch.cuda.is_available(),
        seed=settings.seed, dataloader_num_workers=0, disable_tqdm=True, **extra,
    )  # fmt: skip


def train_clip77(train_file: Path, output_dir: Path, settings: DemoSettings) -> Path:
    """A CLIP trained from scratch at 77 tokens on short captions and truncated long ones; saved as a stock folder."""
    set_seed(settings.seed)
    model = CLIPModel(tiny_clip_config())
    processor = LongCLIPProcessor(clip_image_processor(3 * CELL), build_clip_tokenizer(77))
    collator = ImageCaptionCollator(processor, train_file.parent / "images", short_captions="random", seed=settings.seed)
    dataset = load_caption_file(train_file, short_caption_column="short_caption")
    trainer = ContrastiveTrainer(
        model=model, args=_quiet_training_args(output_dir / "run", settings.clip_steps, settings, settings.clip_learning_rate),
        train_dataset=dataset, data_collator=collator, callbacks=[CollatorEpochCallback(collator)],
    )  # fmt: skip
    with warnings.catch_warnings():  # truncating long captions to 77 tokens is the point of this baseline
        warnings.simplefilter("ignore", LongTextTruncationWarning)
        trainer.train()
    folder = output_dir / "clip-77"
    model.save_pretrained(folder)
    processor.tokenizer.save_pretrained(folder)
    processor.image_processor.save_pretrained(folder)
    return folder


def finetune_longclip(clip_folder: Path, train_file: Path, output_dir: Path, settings: DemoSettings) -> Path:
    """Stretch to 248 positions and fine-tune with the Long-CLIP recipe, exactly as `longclip-train` runs it."""
    folder = output_dir / "longclip-248"
    model_args = ModelArguments(model_name_or_path=str(clip_folder), stretch_from_clip=True, pca_components=16)
    data_args = DataArguments(train_file=str(train_file), image_root=str(train_file.parent / "images"),
                              short_caption_column="short_caption")  # fmt: skip
    train(model_args, data_args, _quiet_training_args(folder, settings.longclip_steps, settings, settings.longclip_learning_rate))
    return folder


def evaluate_models(models: dict, test_file: Path) -> dict:
    """Long- and short-caption R@1 (both directions) of each (model, processor) on the held-out scenes."""
    rows = [json.loads(line) for line in test_file.read_text().splitlines()]
    images = [test_file.parent / "images" / row["image"] for row in rows]
    sets = {
        kind: RetrievalSet("synthetic-scenes", kind, images, [row[column] for row in rows], list(range(len(rows))), str(test_file))
        for kind, column in (("long", "caption"), ("short", "short_caption"))
    }  # fmt: skip
    results = {}
    for name, (model, processor) in models.items():
        results[name] = {}
        for kind, dataset in sets.items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", LongTextTruncationWarning)
                metrics = evaluate_retrieval(model.eval(), processor, dataset, progress=False, model_name=name)
            results[name][kind] = {
                "image_to_text_R@1": metrics["image_to_text"]["R@1"],
                "text_to_image_R@1": metrics["text_to_image"]["R@1"],
                "texts_too_long": metrics["counts"]["texts_too_long"],
            }
    return results


def results_table(results: dict) -> str:
    lines = [
        "| model | long captions I2T R@1 | long captions T2I R@1 | short captions I2T R@1 | short captions T2I R@1 |",
        "|---|---|---|---|---|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['long']['image_to_text_R@1']:.1f} | {r['long']['text_to_image_R@1']:.1f} | "
            f"{r['short']['image_to_text_R@1']:.1f} | {r['short']['text_to_image_R@1']:.1f} |"
        )
    return "\n".join(lines)


def bar_chart(results: dict, path: Path) -> None:
    """Grouped bars of the four R@1 columns per model, drawn with PIL (no plotting dependency)."""
    columns = [("long", "image_to_text_R@1"), ("long", "text_to_image_R@1"), ("short", "image_to_text_R@1"), ("short", "text_to_image_R@1")]
    labels = ["long I2T", "long T2I", "short I2T", "short T2I"]
    palette = [(90, 120, 200), (230, 120, 40), (60, 160, 90), (180, 60, 160)]
    width, height, base = 640, 360, 300
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((20, 10), "R@1 (%) on held-out scenes: 77-token CLIP vs 248-token Long-CLIP", fill="black")
    draw.line((50, base, width - 20, base), fill="black")
    names = list(results)
    for c, ((kind, key), label) in enumerate(zip(columns, labels)):
        x0 = 70 + c * 140
        draw.text((x0, base + 10), label, fill="black")
        for m, name in enumerate(names):
            value = results[name][kind][key]
            x = x0 + m * 50
            draw.rectangle((x, base - 2.4 * value, x + 40, base), fill=palette[m % len(palette)])
            draw.text((x, base - 2.4 * value - 12), f"{value:.0f}", fill="black")
    for m, name in enumerate(names):
        draw.rectangle((20, 30 + 16 * m, 30, 40 + 16 * m), fill=palette[m % len(palette)])
        draw.text((36, 28 + 16 * m), name, fill="black")
    image.save(path)


def run(output_dir: Path, settings: DemoSettings = DemoSettings(), log=print) -> dict:
    output_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(settings.seed)
    train_scenes = make_scenes(settings.train_groups, settings.per_group, rng)
    test_scenes = make_scenes(settings.test_groups, settings.per_group, rng)
    data = output_dir / "scenes"
    train_file, test_file = write_split(train_scenes, data, "train"), write_split(test_scenes, data, "test")
    log(f"1. {len(train_scenes)} training and {len(test_scenes)} held-out scenes in {data}/ "
        f"(groups of {settings.per_group} differ only past token 77)")  # fmt: skip
    clip_folder = train_clip77(train_file, output_dir, settings)
    log(f"2. trained a tiny CLIP at 77 tokens for {settings.clip_steps} steps: {clip_folder}")
    longclip_folder = finetune_longclip(clip_folder, train_file, output_dir, settings)
    log(f"3. stretched it to 248 positions and fine-tuned it with longclip-train for {settings.longclip_steps} steps: "
        f"{longclip_folder} (Hub-ready)")  # fmt: skip
    clip77 = LongCLIPModel.from_clip(CLIPModel.from_pretrained(clip_folder), keep=20, ratio=1)  # same weights, 77 rows
    processor77 = LongCLIPProcessor(clip_image_processor(3 * CELL), build_clip_tokenizer(77))
    models = {
        "CLIP, 77 tokens": (clip77, processor77),
        "Long-CLIP, 248 tokens": (LongCLIPModel.from_pretrained(longclip_folder), LongCLIPProcessor.from_pretrained(longclip_folder)),
    }
    results = evaluate_models(models, test_file)
    table = results_table(results)
    (output_dir / "results.md").write_text(table + "\n")
    (output_dir / "results.json").write_text(json.dumps(results, indent=2))
    bar_chart(results, output_dir / "results.png")
    log(f"4. retrieval on {len(test_scenes)} held-out scenes (R@1, %):\n{table}")
    log(f"   saved {output_dir / 'results.md'}, results.json and results.png")
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", default="demo_output", help="where data, models and results go")
    parser.add_argument("--clean", action="store_true", help="remove the output directory first")
    parser.add_argument("--clip-steps", type=int, default=DemoSettings.clip_steps)
    parser.add_argument("--longclip-steps", type=int, default=DemoSettings.longclip_steps)
    parser.add_argument("--seed", type=int, default=DemoSettings.seed)
    args = parser.parse_args(argv)
    output_dir = Path(args.output_dir)
    if args.clean:
        shutil.rmtree(output_dir, ignore_errors=True)
    run(output_dir, DemoSettings(clip_steps=args.clip_steps, longclip_steps=args.longclip_steps, seed=args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
