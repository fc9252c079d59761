"""The embedded default job: what 248 tokens buy, shown end to end on synthetic scenes, offline, in minutes.

1. Generate scenes whose members differ only in details described past token 77 (modeling_longclip.scenes).
2. Train a tiny CLIP at 77 tokens on them (each sample's short caption or its truncated long caption).
3. Stretch it to 248 positions (`LongCLIPModel.from_clip`) and fine-tune it with the Long-CLIP recipe through
   `longclip-train`, the same trainer a user runs.
4. Compare both folders on held-out scenes the way `longclip-eval --model A --model B` does (the stock CLIP folder is
   a baseline like any other) and print long- and short-caption R@1.
The final model is a Hub-ready folder; the comparison table (Markdown, JSON) and its bar chart are saved beside it.
"""

from __future__ import annotations

import json
import random
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import CLIPConfig, CLIPModel, set_seed

from ..common.caption_data import load_caption_file
from ..common.cli import ArgumentParser, command
from ..converters.clip_preprocessing import build_clip_tokenizer, clip_image_processor
from ..evaluation import RetrievalSet, comparison, comparison_markdown, evaluate_folders, write_comparison
from ..processing_longclip import LongCLIPProcessor, LongTextTruncationWarning
from ..training.collator import ImageCaptionCollator
from ..training.longclip_train import DataArguments, LongCLIPTrainingArguments, ModelArguments, train
from ..training.trainer import CollatorEpochCallback, ContrastiveTrainer
from .scenes import CELL, make_scenes, write_split


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
        text_config=dict(
            hidden_size=128,
            intermediate_size=512,
            num_hidden_layers=3,
            num_attention_heads=2,
            max_position_embeddings=77,
        ),
        vision_config=dict(
            hidden_size=128,
            intermediate_size=512,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=3 * CELL,
            patch_size=CELL,
        ),
        projection_dim=64,
    )


def _quiet_training_args(output_dir: Path, steps: int, settings: DemoSettings, learning_rate: float, **extra):
    return LongCLIPTrainingArguments(
        output_dir=str(output_dir),
        max_steps=steps,
        per_device_train_batch_size=settings.batch_size,
        learning_rate=learning_rate,
        warmup_steps=max(steps // 10, 1),
        lr_scheduler_type="cosine",
        weight_decay=0.01,
        save_strategy="no",
        report_to="none",
        logging_steps=max(steps // 5, 1),
        use_cpu=not torch.cuda.is_available(),
        seed=settings.seed,
        overwrite_output_dir=True,  # a rerun into the same demo folder replaces the last run
        dataloader_num_workers=0,
        disable_tqdm=True,
        **extra,
    )


def train_clip77(train_file: Path, output_dir: Path, settings: DemoSettings) -> Path:
    """A CLIP trained from scratch at 77 tokens on short captions and truncated long ones; saved as a stock folder."""
    set_seed(settings.seed)
    model = CLIPModel(tiny_clip_config())
    processor = LongCLIPProcessor(clip_image_processor(3 * CELL), build_clip_tokenizer(77))
    collator = ImageCaptionCollator(
        processor, train_file.parent / "images", short_captions="random", seed=settings.seed
    )
    dataset = load_caption_file(train_file, short_caption_column="short_caption")
    trainer = ContrastiveTrainer(
        model=model,
        args=_quiet_training_args(output_dir / "run", settings.clip_steps, settings, settings.clip_learning_rate),
        train_dataset=dataset,
        data_collator=collator,
        callbacks=[CollatorEpochCallback(collator)],
    )
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
    data_args = DataArguments(
        train_file=str(train_file), image_root=str(train_file.parent / "images"), short_caption_column="short_caption"
    )
    train(
        model_args,
        data_args,
        _quiet_training_args(folder, settings.longclip_steps, settings, settings.longclip_learning_rate),
    )
    return folder


def scene_sets(test_file: Path) -> list[RetrievalSet]:
    """The held-out scenes twice: with their long captions and with their short ones."""
    rows = [json.loads(line) for line in test_file.read_text().splitlines()]
    images = [test_file.parent / "images" / row["image"] for row in rows]
    return [
        RetrievalSet(
            f"{kind} captions",
            "held-out scenes",
            images,
            [row[column] for row in rows],
            list(range(len(rows))),
            str(test_file),
        )
        for kind, column in (("long", "caption"), ("short", "short_caption"))
    ]


def compare(folders: dict[str, Path], test_file: Path, output: Path) -> dict:
    """Both folders through `longclip-eval`'s own comparison path (the stock CLIP folder as a baseline): the R@1
    table, its JSON (with every full result) and the bar chart, written beside `output`."""
    results = evaluate_folders(list(folders.values()), scene_sets(test_file), names=list(folders), progress=False)
    table = comparison(results, ks=("R@1",))
    write_comparison(table, output, title="R@1 (%) on held-out scenes: 77-token CLIP vs 248-token Long-CLIP")
    return table


def run(output_dir: Path, settings: DemoSettings | None = None, log=print) -> dict:
    settings = settings or DemoSettings()
    output_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(settings.seed)
    train_scenes = make_scenes(settings.train_groups, settings.per_group, rng)
    test_scenes = make_scenes(settings.test_groups, settings.per_group, rng)
    data = output_dir / "scenes"
    train_file, test_file = write_split(train_scenes, data, "train"), write_split(test_scenes, data, "test")
    log(
        f"1. {len(train_scenes)} training and {len(test_scenes)} held-out scenes in {data}/ "
        f"(groups of {settings.per_group} differ only past token 77)"
    )
    clip_folder = train_clip77(train_file, output_dir, settings)
    log(f"2. trained a tiny CLIP at 77 tokens for {settings.clip_steps} steps: {clip_folder}")
    longclip_folder = finetune_longclip(clip_folder, train_file, output_dir, settings)
    log(
        f"3. stretched it to 248 positions and fine-tuned it with longclip-train for {settings.longclip_steps} steps: "
        f"{longclip_folder} (Hub-ready)"
    )
    folders = {"CLIP, 77 tokens": clip_folder, "Long-CLIP, 248 tokens": longclip_folder}
    table = compare(folders, test_file, output_dir / "results.json")
    log(
        f"4. retrieval on {len(test_scenes)} held-out scenes (R@1, %), as `longclip-eval --model {clip_folder} "
        f"--model {longclip_folder}` compares them:\n{comparison_markdown(table)}"
    )
    log(f"   saved {output_dir / 'results.md'}, results.json and results.png")
    return table


@command(kept="the finished steps' folders are in --output-dir; rerun with --clean to start over")
def main(argv=None) -> int:
    parser = ArgumentParser(prog="longclip-demo", description=__doc__.split("\n\n")[0])
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
