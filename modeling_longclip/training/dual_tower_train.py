"""`llm2clip-train` and `proclip-train`: every LLM2CLIP / ProCLIP training stage through transformers' Trainer.

    llm2clip-train --stage 1 --model_name_or_path LLM2CLIP-hf --train_file captions.jsonl --output_dir runs/s1
        caption-contrastive fine-tuning of the text model with LoRA (SimCSE, cosine scale 50; positives are the
        captions of the same image, negatives every other caption of the global batch)
    llm2clip-train --stage 2 --model_name_or_path runs/s1 --train_file pairs.jsonl --image_root img/ \
        [--text_features cache/] [--vision_layer_decay 0.85] --output_dir runs/s2
        CLIP training with the text model frozen: image tower, projection, adapter and logit_scale; one of the long /
        short captions per sample; text embeddings from the feature cache or computed on the fly
    proclip-train --stage 1 --model_name_or_path ProCLIP-init --teacher_model clip-vit-large-patch14 \
        --train_file captions.jsonl --output_dir runs/p1
        adapter distillation towards a frozen CLIP text tower (L_ins on the short and the long captions, L_struct on
        the short ones, sum reductions; --distill_captions random: one caption per sample)
    proclip-train --stage 2 --model_name_or_path runs/p1 --train_file pairs.jsonl --image_root img/ --output_dir runs/p2
        contrastive tuning of image tower + adapter with an EMA self-distillation teacher

Every TrainingArguments flag keeps its transformers meaning; each stage's defaults follow its paper. LLM2CLIP and
ProCLIP stage 2 clamp `logit_scale` into [0, ln 100] after every optimizer step, as the authors' train.py does.
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from transformers import AutoModel, AutoTokenizer, set_seed

from ..common.cli import ArgumentParser, DataclassArgumentParser, command
from ..common.errors import DataError
from ..common.folders import validate_model_folder
from ..export.cards import render_model_card
from ..export.folder import write_sentence_transformers_files
from ..modeling_llm2clip import LLM2CLIPModel
from ..modeling_proclip import ProCLIPModel
from ..processing_llm2clip import LLM2CLIPProcessor
from .arguments import CheckedTrainingArguments, above, at_least, check_rules, fraction
from .collator import DISTILL_CAPTIONS, CaptionPairCollator, DistillationCollator, ImageCaptionCollator
from .dual_tower_models import AdapterDistillationModel, CaptionContrastiveModel, EMATeacherContrastiveModel
from .longclip_train import INTERRUPTED, DataArguments, data_source, load_training_data
from .losses import STRUCTURE_FORMS
from .pretrained import check_model_folder, load_errors_in_one_line, one_line
from .trainer import (
    WARMUP_CONVENTIONS,
    CollatorEpochCallback,
    ContrastiveTrainer,
    EMATeacherCallback,
    LogitScaleClampCallback,
    finish_distributed,
)


@dataclass
class DualTowerArguments:
    model_name_or_path: str = field(metadata={"help": "A converted (or earlier-stage) LLM2CLIP / ProCLIP folder."})
    text_features: str | None = field(
        default=None, metadata={"help": "Folder of cached text-model embeddings (longclip-extract-text-features)."}
    )
    lora_r: int = field(default=16, metadata={"help": "Stage 1 (LLM2CLIP): LoRA rank on every linear layer."})
    lora_alpha: int = field(default=32, metadata={"help": "Stage 1 (LLM2CLIP): LoRA alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Stage 1 (LLM2CLIP): LoRA dropout."})
    simcse_scale: float = field(default=50.0, metadata={"help": "Stage 1 (LLM2CLIP): cosine-similarity scale."})
    merge_lora: bool = field(
        default=True,
        metadata={
            "help": "Stage 1 (LLM2CLIP): merge LoRA into the text model (the adapter weights are "
            "also saved under text_model_lora/)."
        },
    )
    vision_layer_decay: float | None = field(
        default=None, metadata={"help": "Stage 2 (LLM2CLIP): layer-wise lr decay over the ViT, e.g. 0.85."}
    )
    teacher_model: str | None = field(
        default=None, metadata={"help": "Stage 1 (ProCLIP): CLIP or Long-CLIP folder whose text tower is the teacher."}
    )
    structure_loss: str = field(
        default="smooth_l1", metadata={"choices": STRUCTURE_FORMS, "help": "ProCLIP structure term (paper | code)."}
    )
    distill_captions: str = field(
        default="both",
        metadata={
            "choices": DISTILL_CAPTIONS,
            "help": "Stage 1 (ProCLIP): both: instance term on the short and the "
            "long caption of each sample, structure term on the short ones (the authors' code); random: one of "
            "the two per sample, both terms on it.",
        },
    )
    warmup_convention: str = field(
        default="authors",
        metadata={
            "choices": WARMUP_CONVENTIONS,
            "help": "authors: step k warms up at lr x (k + 1) / warmup, as the "
            "open_clip-style schedulers of both authors' code; transformers: k / warmup (step 0 at lr 0).",
        },
    )
    ema_decay: float = field(default=0.999, metadata={"help": "Stage 2 (ProCLIP): EMA decay of the image teacher."})
    reg_weight: float = field(default=4e-4, metadata={"help": "Stage 2 (ProCLIP): self-distillation weight."})
    reg_reference_batch: int = field(
        default=512,
        metadata={
            "help": "Stage 2 (ProCLIP): local batch the weight was tuned for (sum reductions); "
            "each term is rescaled to keep its per-element weight. 0: use the weight as is."
        },
    )

    def __post_init__(self):
        check_rules(
            self,
            {
                "lora_r": at_least(1),
                "lora_alpha": above(0),
                "lora_dropout": fraction(),
                "simcse_scale": above(0),
                "vision_layer_decay": (lambda value: 0 < value <= 1, "must be in (0, 1]"),
                "ema_decay": fraction(closed_top=True),
                "reg_weight": at_least(0),
                "reg_reference_batch": at_least(0),
            },
        )


@dataclass
class LLM2CLIPCaptionContrastiveArguments(CheckedTrainingArguments):
    learning_rate: float = field(default=2e-4, metadata={"help": "LLM2CLIP stage 1: 2e-4."})
    num_train_epochs: float = field(default=1.0)
    remove_unused_columns: bool = field(default=False)


@dataclass
class LLM2CLIPContrastiveArguments(CheckedTrainingArguments):
    learning_rate: float = field(default=1e-5, metadata={"help": "LLM2CLIP stage 2: 1e-5."})
    weight_decay: float = field(default=0.05)
    max_grad_norm: float = field(default=5.0)
    num_train_epochs: float = field(default=4.0)
    lr_scheduler_type: str = field(default="cosine")
    remove_unused_columns: bool = field(default=False)


@dataclass
class ProCLIPDistillationArguments(CheckedTrainingArguments):
    min_pairs_per_step = 1  # the instance term needs no negatives

    learning_rate: float = field(default=1e-5, metadata={"help": "ProCLIP stage 1: 1e-5."})
    adam_beta2: float = field(default=0.98)
    adam_epsilon: float = field(default=1e-6)
    weight_decay: float = field(default=0.05)
    num_train_epochs: float = field(default=4.0)
    lr_scheduler_type: str = field(default="cosine")
    remove_unused_columns: bool = field(default=False)


@dataclass
class ProCLIPContrastiveArguments(CheckedTrainingArguments):
    learning_rate: float = field(default=1e-5, metadata={"help": "ProCLIP stage 2: 1e-5."})
    weight_decay: float = field(default=0.05)
    num_train_epochs: float = field(default=4.0)
    lr_scheduler_type: str = field(default="cosine")
    remove_unused_columns: bool = field(default=False)


STAGES = {
    ("llm2clip", "1"): (
        "caption-contrastive fine-tuning of the text model (LoRA, SimCSE)",
        LLM2CLIPCaptionContrastiveArguments,
    ),
    ("llm2clip", "2"): ("CLIP training with the text model frozen", LLM2CLIPContrastiveArguments),
    ("proclip", "1"): ("adapter distillation from a CLIP text tower", ProCLIPDistillationArguments),
    ("proclip", "2"): ("contrastive tuning with an EMA image teacher", ProCLIPContrastiveArguments),
}
MODEL_CLASSES = {"llm2clip": LLM2CLIPModel, "proclip": ProCLIPModel}


def _text_features(args: DualTowerArguments, model, processor):
    """The feature cache, refused in one line unless it holds this very text tower's features: after LLM2CLIP stage 1
    the text model has changed, so stage 2's cache must be extracted from stage 1's output folder."""
    if not args.text_features:
        return None
    from ..features.store import TextFeatureCache

    try:
        cache = TextFeatureCache(args.text_features)
        cache.check_model(model, processor)
    except (OSError, ValueError) as error:
        raise DataError(
            f"--text-features: {one_line(error).rstrip('.')}. The cache must be extracted from "
            f"the folder this stage trains: longclip-extract-text-features --model {args.model_name_or_path} "
            f"--captions ... --output {args.text_features}"
        ) from None
    return cache


def build_stage(family: str, stage: str, args: DualTowerArguments, model, processor, training_args):
    """(module Trainer optimizes, collator, callbacks) for one stage."""
    if args.structure_loss not in STRUCTURE_FORMS:  # DualTowerArguments built in Python skip argparse's choices
        raise DataError(f"--structure-loss must be one of {STRUCTURE_FORMS}, got {args.structure_loss!r}.")
    if (family, stage) == ("llm2clip", "1"):
        from peft import LoraConfig, get_peft_model

        if args.text_features:
            raise DataError(
                "llm2clip-train --stage 1 trains the text model itself: cached text features do not apply."
            )

        lora = LoraConfig(
            r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout, target_modules="all-linear"
        )
        model.requires_grad_(False)
        with warnings.catch_warnings():  # peft still reads the name transformers 5.25 deprecated; nothing to act on
            warnings.filterwarnings(
                "ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning
            )
            model.text_model = get_peft_model(model.text_model, lora)
        return CaptionContrastiveModel(model, args.simcse_scale), CaptionPairCollator(processor), []
    cache = _text_features(args, model, processor)
    if stage == "1":  # proclip distillation
        if not args.teacher_model:
            raise DataError("proclip-train --stage 1 needs --teacher_model (a CLIP or Long-CLIP folder).")
        check_model_folder(
            args.teacher_model,
            ("clip", "longclip"),
            "--teacher-model needs a CLIP or Long-CLIP folder (its text tower is the teacher)",
        )
        with load_errors_in_one_line(args.teacher_model):
            teacher = AutoModel.from_pretrained(args.teacher_model, trust_remote_code=True)
            teacher_tokenizer = AutoTokenizer.from_pretrained(args.teacher_model)
        if teacher.config.projection_dim != model.config.projection_dim:
            raise DataError(
                f"the teacher embeds in {teacher.config.projection_dim} dims, the ProCLIP model in {model.config.projection_dim}."
            )
        collator = DistillationCollator(
            processor, teacher_tokenizer, cache, seed=training_args.seed, captions=args.distill_captions
        )
        return AdapterDistillationModel(model, teacher, args.structure_loss), collator, []
    collator = ImageCaptionCollator(
        processor, None, short_captions="random", text_features=cache, seed=training_args.seed
    )
    if family == "llm2clip":
        model.text_model.requires_grad_(False)
        return model, collator, [LogitScaleClampCallback()]
    wrapper = EMATeacherContrastiveModel(
        model, args.ema_decay, args.reg_weight, args.reg_reference_batch or None, args.structure_loss
    )
    return wrapper, collator, [EMATeacherCallback(), LogitScaleClampCallback()]


def _export(
    family: str, stage: str, trainable, processor, args: DualTowerArguments, data_args, training_args, steps: int
):
    model = trainable.exportable() if hasattr(trainable, "exportable") else trainable
    output = Path(training_args.output_dir)
    if (family, stage) == ("llm2clip", "1"):
        model.text_model.save_pretrained(output / "text_model_lora")
        if not args.merge_lora:
            return
        model.text_model = model.text_model.merge_and_unload()
    model.save_pretrained(output)
    processor.save_pretrained(output)
    description, _ = STAGES[(family, stage)]
    data = data_source(data_args)
    card = render_model_card(
        "dual_tower_finetuned",
        model_family={"llm2clip": "LLM2CLIP", "proclip": "ProCLIP"}[family],
        stage=f"{stage} ({description})",
        base_model=f"`{args.model_name_or_path}`",
        data=f"`{Path(str(data)).name}`" if data else "unknown",
        steps=steps,
        learning_rate=training_args.learning_rate,
        weight_decay=training_args.weight_decay,
    )
    (output / "README.md").write_text(card, encoding="utf-8")
    write_sentence_transformers_files(output, model, processor)
    validate_model_folder(output)


def load_stage_model(family: str, path: str):
    """The folder a stage starts from, refused in one line unless it is this family's (a Long-CLIP folder would load
    with a randomly initialised text tower and adapter)."""
    name = {"llm2clip": "LLM2CLIP", "proclip": "ProCLIP"}[family]
    check_model_folder(
        path, (family,), f"{family}-train needs a converted or earlier-stage {name} folder (model_type '{family}')"
    )
    with load_errors_in_one_line(path):
        return MODEL_CLASSES[family].from_pretrained(path), LLM2CLIPProcessor.from_pretrained(path)


def train_stage(family: str, stage: str, args: DualTowerArguments, data_args: DataArguments, training_args):
    set_seed(training_args.seed)
    model, processor = load_stage_model(family, args.model_name_or_path)
    text_only = stage == "1"
    dataset = load_training_data(data_args, training_args, text_only=text_only)
    trainable, collator, callbacks = build_stage(family, stage, args, model, processor, training_args)
    if isinstance(collator, ImageCaptionCollator):
        collator.image_root = data_args.image_root
        collator.set_fallback(dataset, source=data_source(data_args))
    trainer = ContrastiveTrainer(
        model=trainable,
        args=training_args,
        train_dataset=dataset,
        data_collator=collator,
        callbacks=[*callbacks, CollatorEpochCallback(collator)],
        vision_layer_decay=args.vision_layer_decay if (family, stage) == ("llm2clip", "2") else None,
        warmup_convention=args.warmup_convention,
    )
    result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_state()
    trainer.save_metrics("train", result.metrics)
    if trainer.is_world_process_zero():
        _export(family, stage, trainable, processor, args, data_args, training_args, trainer.state.global_step)
    finish_distributed(trainer)
    return trainer, result


def _main(family: str, argv=None) -> int:
    stage_parser = ArgumentParser(add_help=False, prog=f"{family}-train")
    stage_parser.add_argument("--stage", choices=["1", "2"], required="-h" not in (argv or sys.argv[1:]))
    known, rest = stage_parser.parse_known_args(argv)
    stage = known.stage or "1"
    description, training_class = STAGES[(family, stage)]
    parser = DataclassArgumentParser(
        (DualTowerArguments, DataArguments, training_class),
        description=f"{family} stage {stage}: {description} (pick the stage with --stage 1|2; options that name "
        "another stage are ignored).",
    )
    args, data_args, training_args = parser.parse_args_into_dataclasses(args=rest)
    train_stage(family, stage, args, data_args, training_args)
    return 0


@command(kept=INTERRUPTED)
def llm2clip_main(argv=None) -> int:
    return _main("llm2clip", argv)


@command(kept=INTERRUPTED)
def proclip_main(argv=None) -> int:
    return _main("proclip", argv)


if __name__ == "__main__":  # torchrun -m modeling_longclip.training.dual_tower_train {llm2clip,proclip} --stage N ...
    if len(sys.argv) < 2 or sys.argv[1] not in MODEL_CLASSES:
        raise SystemExit(f"usage: python -m {__spec__.name} {{{','.join(MODEL_CLASSES)}}} --stage {{1,2}} ...")
    raise SystemExit({"llm2clip": llm2clip_main, "proclip": proclip_main}[sys.argv[1]](sys.argv[2:]))
