"""`longclip-train`: fine-tune Long-CLIP with the authors' recipe through transformers' Trainer.

    longclip-train --model_name_or_path LongCLIP-B-hf --train_file data.jsonl --image_root images/ \
        --output_dir runs/longclip --per_device_train_batch_size 128 --num_train_epochs 1 --bf16

Every standard `TrainingArguments` flag keeps its transformers meaning; the defaults follow the authors' train.py
(AdamW lr 1e-6 with weight decay 0.01 on every trainable tensor in one group, 200 warmup steps at lr x (k + 1) / 200
then cosine, no gradient clipping, fp16 stretching); `--decay_convention trainer`, `--warmup_convention transformers`
and `--no_exact_fp16` give transformers' conventions / fp32 arithmetic instead. Launch on several GPUs or nodes with
`torchrun` or `accelerate launch`; DeepSpeed and FSDP come through `--deepspeed` / `--fsdp` (configs/ has ready files).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from transformers import CLIPModel, CLIPProcessor, TrainingArguments, set_seed
from transformers.integrations import is_deepspeed_zero3_enabled

from ..common.caption_data import (
    DATASET_FORMATS,
    DataError,
    load_caption_file,
    load_imagefolder,
    load_sharegpt4v,
    load_webdataset,
)
from ..common.cli import DataclassArgumentParser, command
from ..common.folders import validate_model_folder
from ..export.cards import render_model_card
from ..export.folder import write_sentence_transformers_files
from ..modeling_longclip import LongCLIPModel
from ..processing_longclip import LongCLIPProcessor
from .arguments import CheckedTrainingArguments, above, at_least, check_rules, fraction
from .collator import ImageCaptionCollator
from .pretrained import check_model_folder, load_errors_in_one_line
from .trainer import (
    DECAY_CONVENTIONS,
    WARMUP_CONVENTIONS,
    ContrastiveTrainer,
    FrozenRowsCallback,
    RecipeError,
    finish_distributed,
)

INTERRUPTED = (
    "every complete checkpoint-N in --output-dir is kept (one being written is discarded); "
    "--resume-from-checkpoint True continues from the newest"
)


@dataclass
class ModelArguments:
    model_name_or_path: str = field(
        metadata={"help": "A converted Long-CLIP folder or Hub id; with --stretch_from_clip, a stock CLIP one."}
    )
    stretch_from_clip: bool = field(
        default=False, metadata={"help": "Stretch a stock CLIP (77 positions) into Long-CLIP before training."}
    )
    keep_positions: int = field(default=20, metadata={"help": "Position rows kept (and frozen) when stretching."})
    stretch_ratio: int = field(default=4, metadata={"help": "Stretch ratio: keep + (77 - keep) * ratio positions."})
    exact_fp16: bool = field(
        default=True,
        metadata={
            "help": "Stretch in fp16 with the authors' operation order (load_from_clip; bit-exact with their "
            "tables). --no_exact_fp16: the same formulas in fp32 (differs by ~1e-4)."
        },
    )
    logit_scale_init: float = field(default=4.6052, metadata={"help": "logit_scale after stretching (ln 100)."})
    pca_components: int | None = field(default=None, metadata={"help": "Override the config's PCA components."})
    short_caption_loss_weight: float | None = field(default=None, metadata={"help": "Override the short-term weight."})
    label_smoothing: float | None = field(default=None, metadata={"help": "Override the label smoothing."})
    attn_implementation: str | None = field(default=None, metadata={"help": "eager, sdpa, flash_attention_2, ..."})

    def __post_init__(self):
        check_rules(
            self,
            {
                "keep_positions": at_least(0),
                "stretch_ratio": at_least(1),
                "logit_scale_init": at_least(0),
                "pca_components": at_least(1),
                "short_caption_loss_weight": at_least(0),
                "label_smoothing": fraction(),
            },
        )


@dataclass
class DataArguments:
    train_file: str | None = field(default=None, metadata={"help": "JSON lines / JSON / CSV, or the ShareGPT4V json."})
    dataset_format: str = field(
        default="auto", metadata={"choices": DATASET_FORMATS, "help": "auto: by the file's suffix."}
    )
    train_dir: str | None = field(default=None, metadata={"help": "An imagefolder with metadata.jsonl."})
    train_shards: str | None = field(
        default=None, metadata={"help": 'Webdataset shards, e.g. "data/{00000..00099}.tar".'}
    )
    image_root: str | None = field(default=None, metadata={"help": "Folder that relative image paths start from."})
    image_column: str = field(default="image")
    caption_column: str = field(default="caption")
    short_caption_column: str | None = field(
        default=None, metadata={"help": 'Short captions; default: the text before the first ". " of the caption.'}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N examples."})

    def __post_init__(self):
        check_rules(self, {"max_train_samples": above(0)})


@dataclass
class LongCLIPTrainingArguments(CheckedTrainingArguments):
    """TrainingArguments with the Long-CLIP authors' defaults, checked at parse time (arguments.py)."""

    learning_rate: float = field(default=1e-6, metadata={"help": "AdamW learning rate (authors: 1e-6)."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay (authors: 0.01)."})
    warmup_steps: float = field(default=200, metadata={"help": "Linear warmup steps before the cosine decay."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "Learning-rate schedule after warmup."})
    max_grad_norm: float = field(default=0.0, metadata={"help": "Gradient clipping norm (authors: none, 0)."})
    decay_convention: str = field(
        default="authors",
        metadata={
            "choices": DECAY_CONVENTIONS,
            "help": "authors: weight decay on every trainable tensor, one AdamW "
            "group (the frozen position rows are written back after each step); trainer: transformers' groups "
            "(no decay on biases, LayerNorms, position tables and logit_scale).",
        },
    )
    warmup_convention: str = field(
        default="authors",
        metadata={
            "choices": WARMUP_CONVENTIONS,
            "help": "authors: warmup step k runs at lr x (k + 1) / warmup_steps; "
            "transformers: at lr x k / warmup_steps (the first step at 0).",
        },
    )
    remove_unused_columns: bool = field(default=False, metadata={"help": "Keep raw columns: the collator needs them."})


def build_model_and_processor(args: ModelArguments):
    path = args.model_name_or_path
    if args.stretch_from_clip:
        check_model_folder(
            path,
            ("clip",),
            "--stretch-from-clip needs a stock CLIP folder (model_type 'clip'; drop the flag for a "
            "converted Long-CLIP one)",
        )
        with load_errors_in_one_line(path):
            clip = CLIPModel.from_pretrained(path, attn_implementation=args.attn_implementation)
            clip_processor = CLIPProcessor.from_pretrained(path)  # without torchvision on every 5.x
        model = LongCLIPModel.from_clip(
            clip, keep=args.keep_positions, ratio=args.stretch_ratio, exact_fp16=args.exact_fp16
        )
        model.logit_scale.data.fill_(args.logit_scale_init)
        model.config.logit_scale_init_value = args.logit_scale_init
        tokenizer = clip_processor.tokenizer
        tokenizer.model_max_length = model.config.text_config.max_position_embeddings
        processor = LongCLIPProcessor(clip_processor.image_processor, tokenizer)
    else:
        check_model_folder(
            path,
            ("longclip",),
            "longclip-train needs a converted Long-CLIP folder (model_type 'longclip'), or a "
            "stock CLIP one with --stretch-from-clip",
        )
        kwargs = {"attn_implementation": args.attn_implementation} if args.attn_implementation else {}
        with load_errors_in_one_line(path):
            model = LongCLIPModel.from_pretrained(path, **kwargs)
            processor = LongCLIPProcessor.from_pretrained(path)
    for name in ("pca_components", "short_caption_loss_weight", "label_smoothing"):
        if getattr(args, name) is not None:
            setattr(model.config, name, getattr(args, name))
    return model, processor


def data_source(args: DataArguments) -> str | None:
    """The file, folder or shard pattern the rows come from, as messages and model cards name it."""
    return args.train_shards or args.train_dir or args.train_file


def load_training_data(args: DataArguments, training_args: TrainingArguments, text_only: bool = False):
    """The training rows for `args`; `text_only` stages read caption files without an image column."""
    if args.dataset_format not in DATASET_FORMATS:  # DataArguments built in Python skip argparse's choices
        raise DataError(f"--dataset-format must be one of {DATASET_FORMATS}, got {args.dataset_format!r}.")
    if args.train_shards:
        if training_args.max_steps <= 0:
            raise DataError("webdataset shards are streamed: give the run length with --max_steps.")
        return load_webdataset(args.train_shards)
    if args.dataset_format == "imagefolder" or args.train_dir:
        if not args.train_dir:
            raise DataError("--dataset_format imagefolder needs --train_dir.")
        dataset = load_imagefolder(args.train_dir, args.caption_column, args.short_caption_column)
    elif args.dataset_format == "sharegpt4v":
        if not args.train_file or not args.image_root:
            raise DataError("--dataset_format sharegpt4v needs --train_file (the json) and --image_root.")
        dataset = load_sharegpt4v(args.train_file)
    elif args.train_file:
        image_column = None if text_only else args.image_column
        dataset = load_caption_file(args.train_file, image_column, args.caption_column, args.short_caption_column)
    else:
        raise DataError("no training data: give --train_file, --train_dir or --train_shards.")
    if args.max_train_samples is not None:
        dataset = dataset.select(range(min(args.max_train_samples, len(dataset))))
    return dataset


def _card_renderer(model, model_args, data_args, training_args):
    data = data_source(data_args)

    def render(steps: int) -> str:
        world = max(training_args.world_size, 1)
        return render_model_card(
            "longclip_finetuned",
            context_length=model.config.text_config.max_position_embeddings,
            keep_positions=model.config.keep_positions,
            base_model=f"`{model_args.model_name_or_path}`"
            + (" (stretched from CLIP)" if model_args.stretch_from_clip else ""),
            data=f"`{Path(str(data)).name}`" if data else "unknown",
            steps=steps,
            learning_rate=training_args.learning_rate,
            weight_decay=training_args.weight_decay,
            batch=f"{training_args.per_device_train_batch_size} x {world} x {training_args.gradient_accumulation_steps}",
            short_weight=model.config.short_caption_loss_weight,
            pca_components=model.config.pca_components,
            label_smoothing=model.config.label_smoothing,
        )

    return render


def train(model_args: ModelArguments, data_args: DataArguments, training_args: LongCLIPTrainingArguments):
    if training_args.decay_convention == "authors" and is_deepspeed_zero3_enabled():
        raise RecipeError(
            "DeepSpeed ZeRO-3 partitions the position table, so its frozen rows cannot be written back after the "
            "decayed optimizer step: use ZeRO-1/2, or --decay_convention trainer (no decay on the position tables)."
        )
    set_seed(training_args.seed)
    dataset = load_training_data(data_args, training_args)  # bad data is refused before the model loads
    model, processor = build_model_and_processor(model_args)
    render_card = _card_renderer(model, model_args, data_args, training_args)
    drop_text_masks = model.text_padding_mask_optional(processor)
    collator = ImageCaptionCollator(
        processor, data_args.image_root, short_captions="pair", drop_text_masks=drop_text_masks
    )
    collator.set_fallback(dataset, source=data_source(data_args))
    trainer = ContrastiveTrainer(
        model=model,
        args=training_args,
        train_dataset=dataset,
        data_collator=collator,
        processing_class=processor,
        callbacks=[FrozenRowsCallback()],
        decay_convention=training_args.decay_convention,
        warmup_convention=training_args.warmup_convention,
        checkpoint_card=render_card,
    )
    result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model()
    trainer.save_state()
    trainer.save_metrics("train", result.metrics)
    if trainer.is_world_process_zero():
        (Path(training_args.output_dir) / "README.md").write_text(
            render_card(trainer.state.global_step), encoding="utf-8"
        )
        write_sentence_transformers_files(training_args.output_dir, trainer.model, processor)
        validate_model_folder(training_args.output_dir)
    finish_distributed(trainer)
    return trainer, result


@command(kept=INTERRUPTED)
def main(argv=None) -> int:
    parser = DataclassArgumentParser((ModelArguments, DataArguments, LongCLIPTrainingArguments), prog="longclip-train")
    model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    train(model_args, data_args, training_args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
