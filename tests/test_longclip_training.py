"""longclip-train end to end on CPU: real photos (skimage) with generated captions, tiny models."""

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_image_processor, tiny_longclip_config
from PIL import Image
from safetensors.torch import load_file
from transformers import CLIPConfig, CLIPModel

from modeling_longclip import LongCLIPModel, LongCLIPProcessor
from modeling_longclip.common.clean_load import load_in_clean_process
from modeling_longclip.converters.clip_preprocessing import build_clip_tokenizer
from modeling_longclip.training.longclip_train import main as train_main

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera", "hubble_deep_field", "page", "retina", "horse", "moon")
COLORS = ("red", "green", "blue", "golden", "silver", "purple", "orange", "white", "black", "brown")


def write_photo_dataset(root: Path, extra_rows=()) -> Path:
    """skimage photos at 48 px and a JSON-lines caption file whose captions run past 20 tokens."""
    from skimage import data

    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for name, color in zip(PHOTOS, COLORS):
        pixels = getattr(data, name)()
        if pixels.ndim == 2:
            pixels = np.stack([pixels] * 3, axis=-1)
        Image.fromarray(pixels[..., :3].astype("uint8")).resize((48, 48)).save(root / "images" / f"{name}.jpg")
        caption = (
            f"A {color} toned photograph of the {name}. The frame shows the {name} in detail, with a {color} cast "
            f"over the whole scene, soft light from the left and a plain background behind the subject."
        )
        rows.append({"image": f"{name}.jpg", "caption": caption})
    rows.extend(extra_rows)
    path = root / "train.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture(scope="module")
def base_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("base") / "tiny-longclip"
    torch.manual_seed(0)
    LongCLIPModel(tiny_longclip_config()).save_pretrained(folder)
    LongCLIPProcessor(tiny_image_processor(), build_clip_tokenizer()).save_pretrained(folder)
    return folder


def run_training(output_dir, base, train_file, *extra):
    argv = [
        "--model_name_or_path",
        str(base),
        "--train_file",
        str(train_file),
        "--image_root",
        str(Path(train_file).parent / "images"),
        "--output_dir",
        str(output_dir),
        "--per_device_train_batch_size",
        "5",
        "--learning_rate",
        "3e-4",
        "--warmup_steps",
        "0",
        "--logging_steps",
        "1",
        "--report_to",
        "none",
        "--dataloader_num_workers",
        "0",
        "--seed",
        "7",
        "--use_cpu",
        "true",
        *extra,
    ]
    assert train_main(argv) == 0


def losses_from(output_dir: Path) -> list[float]:
    state = sorted(output_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))[-1] / "trainer_state.json"
    return [entry["loss"] for entry in json.loads(state.read_text())["log_history"] if "loss" in entry]


def test_end_to_end_loss_goes_down_and_output_is_hub_ready(tmp_path, base_folder):
    train_file = write_photo_dataset(tmp_path / "data")
    out = tmp_path / "run"
    run_training(out, base_folder, train_file, "--max_steps", "12", "--save_steps", "6")
    losses = losses_from(out)
    assert len(losses) == 12
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3])
    for folder in (out, out / "checkpoint-6"):
        assert (folder / "README.md").read_text().startswith("---")
        assert {
            "config.json",
            "model.safetensors",
            "tokenizer.json",
            "processor_config.json",
            "modeling_longclip.py",
            "modules.json",
            "sentence_bert_config.json",
            "1_Normalize",
        } <= {p.name for p in folder.iterdir()}
    result = load_in_clean_process(out, ["a golden toned photograph of the coffee"])
    assert result["model_class"] == "LongCLIPModel" and result["leaked_modules"] == []
    model = LongCLIPModel.from_pretrained(out)
    expected = model.encode_text(
        ["a golden toned photograph of the coffee"], processor=LongCLIPProcessor.from_pretrained(out)
    )
    torch.testing.assert_close(torch.tensor(result["encode_text"]), expected, rtol=0, atol=1e-6)


def test_frozen_position_rows_do_not_move(tmp_path, base_folder):
    train_file = write_photo_dataset(tmp_path / "data")
    out = tmp_path / "run"
    run_training(out, base_folder, train_file, "--max_steps", "4", "--weight_decay", "0.5", "--save_strategy", "no")
    key = "text_model.embeddings.position_embedding.weight"
    before, after = load_file(base_folder / "model.safetensors")[key], load_file(out / "model.safetensors")[key]
    assert torch.equal(after[:20], before[:20])
    assert not torch.equal(after[20:40], before[20:40])  # captions run past 20 tokens: those rows train


def test_resume_gives_the_same_final_weights(tmp_path, base_folder):
    train_file = write_photo_dataset(tmp_path / "data")
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    run_training(whole, base_folder, train_file, "--max_steps", "8", "--save_steps", "4")
    resumed.mkdir()
    subprocess.run(["cp", "-r", str(whole / "checkpoint-4"), str(resumed / "checkpoint-4")], check=True)
    run_training(
        resumed,
        base_folder,
        train_file,
        "--max_steps",
        "8",
        "--save_steps",
        "4",
        "--resume_from_checkpoint",
        str(resumed / "checkpoint-4"),
    )
    a, b = load_file(whole / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)
    assert not torch.equal(
        a["text_projection.weight"], load_file(base_folder / "model.safetensors")["text_projection.weight"]
    )


def test_broken_rows_are_skipped_and_counted(tmp_path, base_folder):
    (tmp_path / "data" / "images").mkdir(parents=True)
    (tmp_path / "data" / "images" / "corrupt.jpg").write_bytes(b"not a jpeg at all")
    bad = [
        {"image": "missing.jpg", "caption": "A photo that is not there."},
        {"image": "corrupt.jpg", "caption": "A photo that cannot be decoded."},
        {"image": "coffee.jpg", "caption": "   "},
    ]
    train_file = write_photo_dataset(tmp_path / "data", extra_rows=bad)
    out = tmp_path / "run"
    run_training(
        out,
        base_folder,
        train_file,
        "--num_train_epochs",
        "1",
        "--per_device_train_batch_size",
        "13",
        "--save_strategy",
        "no",
    )
    results = json.loads((out / "train_results.json").read_text())
    assert results["skipped_missing_image"] == 1
    assert results["skipped_corrupt_image"] == 1
    assert results["skipped_empty_caption"] == 1
    first_step = json.loads((out / "trainer_state.json").read_text())["log_history"][0]
    assert first_step["skipped_missing_image"] == 1  # the one batch held all 13 rows


def _stock_clip_folder(folder: Path) -> Path:
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=1),
        vision_config=dict(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=1,
            num_attention_heads=1,
            image_size=32,
            patch_size=16,
        ),
        projection_dim=16,
    )
    CLIPModel(config).save_pretrained(folder)
    build_clip_tokenizer(77).save_pretrained(folder)
    tiny_image_processor().save_pretrained(folder)
    return folder


def test_stretch_from_clip_uses_the_authors_fp16_arithmetic_unless_told(tmp_path):
    from transformers import HfArgumentParser

    from modeling_longclip import stretch_position_embeddings
    from modeling_longclip.training.longclip_train import ModelArguments, build_model_and_processor

    clip_folder = _stock_clip_folder(tmp_path / "clip")
    source = CLIPModel.from_pretrained(clip_folder).text_model.embeddings.position_embedding.weight.detach()
    parser = HfArgumentParser(ModelArguments)
    tables = {}
    for flags in ([], ["--no_exact_fp16"]):
        (args,) = parser.parse_args_into_dataclasses(
            ["--model_name_or_path", str(clip_folder), "--stretch_from_clip", "true", *flags]
        )
        model, _ = build_model_and_processor(args)
        tables[args.exact_fp16] = model.text_model.embeddings.position_embedding.weight.detach()
    assert torch.equal(tables[True], stretch_position_embeddings(source, exact_fp16=True))  # the default
    assert torch.equal(tables[False], stretch_position_embeddings(source))
    assert not torch.equal(tables[True], tables[False])


def test_stretch_from_stock_clip(tmp_path):
    clip_folder = _stock_clip_folder(tmp_path / "clip")
    train_file = write_photo_dataset(tmp_path / "data")
    out = tmp_path / "run"
    run_training(
        out,
        clip_folder,
        train_file,
        "--stretch_from_clip",
        "true",
        "--max_steps",
        "2",
        "--learning_rate",
        "1e-6",
        "--save_strategy",
        "no",
    )
    model = LongCLIPModel.from_pretrained(out)
    assert model.config.model_type == "longclip"
    assert model.config.text_config.max_position_embeddings == 248
    assert model.logit_scale.item() == pytest.approx(4.6052, abs=1e-3)
    assert LongCLIPProcessor.from_pretrained(out).tokenizer.model_max_length == 248


def test_data_errors_exit_cleanly(tmp_path, base_folder, capsys):
    argv = ["--model_name_or_path", str(base_folder), "--output_dir", str(tmp_path / "o"), "--use_cpu", "true"]
    assert train_main([*argv, "--train_file", str(tmp_path / "nope.jsonl")]) == 2
    assert "nope.jsonl: no such file" in capsys.readouterr().err
    assert train_main(argv) == 2
    assert "no training data" in capsys.readouterr().err

    unloadable = (
        tmp_path / "unloadable.jsonl"
    )  # every image missing: refused before training, not a collator traceback
    unloadable.write_text("".join(json.dumps({"image": f"gone{i}.jpg", "caption": "A cat."}) + "\n" for i in range(7)))
    assert train_main([*argv, "--train_file", str(unloadable), "--image_root", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the weight-loading progress bar
    assert err.startswith(f"error: {unloadable}: none of the first 7 rows has a loadable image")
    assert f"row 0: missing image {tmp_path / 'gone0.jpg'}" in err

    malformed = tmp_path / "malformed.jsonl"
    malformed.write_text('{"image": "a.jpg", "caption": "A cat."}\n{"image": "b.jpg", "caption": "A dog."\n')
    assert train_main([*argv, "--train_file", str(malformed)]) == 2
    assert (
        capsys.readouterr()
        .err.strip()
        .splitlines()[-1]
        .startswith(f"error: {malformed}:2: not valid JSON lines (Expecting ',' delimiter")
    )


def test_shipped_launch_configs_parse():
    from modeling_longclip.training.longclip_train import LongCLIPTrainingArguments

    configs = Path(__file__).resolve().parents[1] / "configs"
    fsdp = LongCLIPTrainingArguments(
        output_dir="unused", fsdp=True, fsdp_config=str(configs / "fsdp.json"), use_cpu=True
    )
    assert fsdp.fsdp_config["transformer_layer_cls_to_wrap"] == ["CLIPEncoderLayer"]
    zero2 = json.loads((configs / "ds_zero2.json").read_text())
    assert zero2["zero_optimization"]["stage"] == 2
    assert zero2["train_micro_batch_size_per_gpu"] == "auto"  # filled from TrainingArguments by transformers


def test_streamed_webdataset_shards_and_sharegpt4v_json(tmp_path, base_folder):
    import io
    import tarfile

    train_file = write_photo_dataset(tmp_path / "data")
    rows = [json.loads(line) for line in train_file.read_text().splitlines()]
    for shard in range(2):
        with tarfile.open(tmp_path / f"shard-{shard:05d}.tar", "w") as tar:
            for i, row in enumerate(rows[shard * 5 : shard * 5 + 5]):
                for suffix, payload in (
                    ("jpg", (train_file.parent / "images" / row["image"]).read_bytes()),
                    ("txt", row["caption"].encode()),
                ):
                    info = tarfile.TarInfo(f"{shard}_{i:03d}.{suffix}")
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
    out = tmp_path / "wds"
    argv = [
        "--model_name_or_path",
        str(base_folder),
        "--train_shards",
        str(tmp_path / "shard-{00000..00001}.tar"),
        "--output_dir",
        str(out),
        "--max_steps",
        "3",
        "--per_device_train_batch_size",
        "4",
        "--learning_rate",
        "1e-4",
        "--warmup_steps",
        "0",
        "--save_strategy",
        "no",
        "--report_to",
        "none",
        "--use_cpu",
        "true",
    ]
    assert train_main(argv) == 0
    assert json.loads((out / "train_results.json").read_text())["skipped_corrupt_image"] == 0
    assert LongCLIPModel.from_pretrained(out).config.model_type == "longclip"

    records = [
        {
            "id": str(i),
            "image": rows[i % 10]["image"],
            "conversations": [
                {"from": "human", "value": "<image>\nDescribe."},
                {"from": "gpt", "value": rows[i % 10]["caption"]},
            ],
        }
        for i in range(1006)
    ]
    share = tmp_path / "share-captioner.json"
    share.write_text(json.dumps(records))
    out = tmp_path / "share"
    argv = [
        "--model_name_or_path",
        str(base_folder),
        "--dataset_format",
        "sharegpt4v",
        "--train_file",
        str(share),
        "--image_root",
        str(train_file.parent / "images"),
        "--output_dir",
        str(out),
        "--max_steps",
        "2",
        "--per_device_train_batch_size",
        "3",
        "--warmup_steps",
        "0",
        "--save_strategy",
        "no",
        "--report_to",
        "none",
        "--use_cpu",
        "true",
        "--logging_steps",
        "1",
    ]
    assert train_main(argv) == 0
    assert (
        json.loads((out / "trainer_state.json").read_text())["log_history"][0]["epoch"] == 0.5
    )  # 6 rows after the 1000 held out


def _gradients_on_all_rows(base, train_file):
    """Loss gradients of the base model on all ten rows (the contrastive loss does not depend on the row order)."""
    from modeling_longclip.training.collator import ImageCaptionCollator

    model, processor = LongCLIPModel.from_pretrained(base), LongCLIPProcessor.from_pretrained(base)
    rows = [json.loads(line) for line in train_file.read_text().splitlines()]
    collator = ImageCaptionCollator(
        processor, train_file.parent / "images", drop_text_masks=model.text_padding_mask_optional(processor)
    )
    model.train()
    model(**collator(rows), return_loss=True).loss.backward()
    return {name: param.grad for name, param in model.named_parameters()}


def test_authors_weight_decay_and_warmup_by_hand(tmp_path, base_folder):
    """One step of the authors' recipe, recomputed by hand: AdamW's first update is g / (|g| + eps); the authors'
    train.py decays every trainable tensor (one group, wd) and runs step 0 at lr x 1 / warmup; their frozen rows sit in
    a separate parameter, so rows < keep do not move at all."""
    train_file = write_photo_dataset(tmp_path / "data")
    grads = _gradients_on_all_rows(base_folder, train_file)
    lr, wd, warmup = 1e-3, 0.5, 4
    out = tmp_path / "authors"
    run_training(
        out,
        base_folder,
        train_file,
        "--max_steps",
        "1",
        "--per_device_train_batch_size",
        "10",
        "--learning_rate",
        str(lr),
        "--weight_decay",
        str(wd),
        "--warmup_steps",
        str(warmup),
        "--save_strategy",
        "no",
    )
    before, after = load_file(base_folder / "model.safetensors"), load_file(out / "model.safetensors")
    step_lr = lr * (0 + 1) / warmup
    key = "text_model.embeddings.position_embedding.weight"
    undecayed_by_trainer = 0
    for name, grad in grads.items():
        expected = before[name] * (1 - step_lr * wd) - step_lr * grad / (grad.abs() + 1e-8)
        if name == key:
            expected[:20] = before[name][:20]
        # g / (|g| + eps) is only reproducible where g is not rounding noise (a key bias's gradient is ~1e-10)
        stable = grad.abs() > 1e-4
        torch.testing.assert_close(after[name][stable], expected[stable], rtol=0, atol=2e-7, msg=name)
        noise = after[name][~stable] - (before[name] * (1 - step_lr * wd))[~stable]
        assert noise.abs().le(step_lr * 1.0001).all(), name
        undecayed_by_trainer += name.endswith(("bias", "weight")) and (
            "norm" in name or name.endswith("bias") or "position_embedding" in name
        )
    assert torch.equal(after[key][:20], before[key][:20])
    assert undecayed_by_trainer > 10  # the tensors transformers' convention would have left undecayed

    out = tmp_path / "transformers"  # transformers' warmup starts at lr 0: the first step moves nothing
    run_training(
        out,
        base_folder,
        train_file,
        "--max_steps",
        "1",
        "--per_device_train_batch_size",
        "10",
        "--learning_rate",
        str(lr),
        "--weight_decay",
        str(wd),
        "--warmup_steps",
        str(warmup),
        "--warmup_convention",
        "transformers",
        "--decay_convention",
        "trainer",
        "--save_strategy",
        "no",
    )
    unchanged = load_file(out / "model.safetensors")
    assert all(torch.equal(unchanged[name], before[name]) for name in grads)


def test_decay_conventions_build_the_documented_groups(tmp_path, base_folder):
    from modeling_longclip.training.longclip_train import LongCLIPTrainingArguments
    from modeling_longclip.training.trainer import ContrastiveTrainer

    model = LongCLIPModel.from_pretrained(base_folder)
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = {}
    for convention in ("authors", "trainer"):
        args = LongCLIPTrainingArguments(
            output_dir=str(tmp_path), use_cpu=True, report_to="none", decay_convention=convention
        )
        trainer = ContrastiveTrainer(model=model, args=args, decay_convention=convention)
        groups[convention] = [(g["weight_decay"], len(g["params"])) for g in trainer.create_optimizer().param_groups]
    assert groups["authors"] == [(0.01, len(trainable))]  # the authors' AdamW(model.parameters(), weight_decay=0.01)
    (decayed_wd, decayed), (zero_wd, undecayed) = groups["trainer"]
    assert (decayed_wd, zero_wd) == (0.01, 0.0) and (decayed, undecayed) == (29, 49) == (len(trainable) - 49, 49)


def test_authors_warmup_then_cosine_matches_their_scheduler(tmp_path, base_folder):
    import math

    from modeling_longclip.training.longclip_train import LongCLIPTrainingArguments
    from modeling_longclip.training.trainer import ContrastiveTrainer

    base_lr, warmup, steps = 1e-3, 3, 10

    def authors(step):  # train/scheduler.py: _warmup_lr, then cosine over the steps after warmup
        if step < warmup:
            return base_lr * (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / (steps - warmup))) * base_lr

    lrs = {}
    for convention in ("authors", "transformers"):
        args = LongCLIPTrainingArguments(
            output_dir=str(tmp_path), use_cpu=True, report_to="none", learning_rate=base_lr, warmup_steps=warmup
        )
        trainer = ContrastiveTrainer(
            model=LongCLIPModel.from_pretrained(base_folder), args=args, warmup_convention=convention
        )
        trainer.create_optimizer_and_scheduler(num_training_steps=steps)
        lrs[convention] = []
        for _ in range(steps):
            lrs[convention].append(trainer.optimizer.param_groups[0]["lr"])
            trainer.optimizer.step()
            trainer.lr_scheduler.step()
    assert lrs["authors"] == pytest.approx([authors(k) for k in range(steps)], rel=1e-12, abs=1e-15)
    assert lrs["transformers"][0] == 0 and lrs["transformers"][warmup:] == lrs["authors"][warmup:]
    args = LongCLIPTrainingArguments(
        output_dir=str(tmp_path),
        use_cpu=True,
        report_to="none",
        learning_rate=base_lr,
        warmup_steps=warmup,
        lr_scheduler_type="constant",
    )
    trainer = ContrastiveTrainer(
        model=LongCLIPModel.from_pretrained(base_folder), args=args, warmup_convention="authors"
    )
    trainer.create_optimizer_and_scheduler(num_training_steps=steps)
    assert trainer.optimizer.param_groups[0]["lr"] == base_lr  # a schedule without warmup gets none added


def test_zero3_cannot_write_back_the_frozen_rows_and_is_refused(tmp_path, base_folder, monkeypatch, capsys):
    import modeling_longclip.training.longclip_train as longclip_train
    from modeling_longclip.training.trainer import FrozenRowsCallback, RecipeError

    monkeypatch.setattr(longclip_train, "is_deepspeed_zero3_enabled", lambda: True)
    argv = ["--model_name_or_path", str(base_folder), "--output_dir", str(tmp_path / "o"), "--use_cpu", "true"]
    assert train_main([*argv, "--train_file", str(tmp_path / "unused.jsonl")]) == 2
    assert "ZeRO-3 partitions the position table" in capsys.readouterr().err
    model = LongCLIPModel.from_pretrained(base_folder)
    model.text_model.embeddings.position_embedding.weight.ds_id = 0  # how DeepSpeed marks a partitioned parameter
    with pytest.raises(RecipeError, match="--decay_convention trainer"):
        FrozenRowsCallback().on_train_begin(None, None, None, model=model)
