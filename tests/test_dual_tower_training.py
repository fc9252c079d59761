"""LLM2CLIP and ProCLIP training stages: the losses by hand, the EMA rule, and each stage end to end on CPU."""

import json
import math
import shutil

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_image_processor
from llm_fixtures import tiny_llama3_tokenizer, tiny_llama_config, tiny_llm2clip_config
from safetensors.torch import load_file
from test_longclip_training import write_photo_dataset
from torchrun import run_torchrun
from transformers import CLIPConfig, CLIPModel

from modeling_longclip import LLM2CLIPModel, LLM2CLIPProcessor, ProCLIPConfig, ProCLIPModel
from modeling_longclip.converters.clip_preprocessing import build_clip_tokenizer
from modeling_longclip.training.dual_tower_models import EMATeacherContrastiveModel
from modeling_longclip.training.dual_tower_train import llm2clip_main, proclip_main
from modeling_longclip.training.losses import (
    instance_distillation_loss,
    regularizer_weights,
    simcse_loss,
    structure_distillation_loss,
)
from modeling_longclip.training.trainer import ContrastiveTrainer, vision_layer_depth


def test_simcse_loss_by_hand():
    torch.manual_seed(0)
    a, p = torch.randn(4, 8), torch.randn(4, 8)
    cos = F.normalize(a, dim=-1) @ F.normalize(p, dim=-1).t()
    expected = sum(-torch.log_softmax(50 * cos[i], dim=0)[i] for i in range(4)) / 4
    assert simcse_loss(a, p, 50.0).item() == pytest.approx(expected.item(), rel=1e-5)


def test_distillation_losses_by_hand():
    torch.manual_seed(1)
    s, t = torch.randn(5, 6), torch.randn(5, 6)
    sn, tn = F.normalize(s, dim=-1), F.normalize(t, dim=-1)
    assert instance_distillation_loss(s, t).item() == pytest.approx(
        sum(((sn[i] - tn[i]) ** 2).sum().item() for i in range(5)), rel=1e-5
    )
    pairs = [(i, j) for i in range(5) for j in range(i + 1, 5)]
    gaps = [(sn[i] - sn[j]).norm().item() - (tn[i] - tn[j]).norm().item() for i, j in pairs]
    assert structure_distillation_loss(s, t, "squared").item() == pytest.approx(sum(g * g for g in gaps), rel=1e-5)
    smooth = sum(0.5 * g * g if abs(g) < 1 else abs(g) - 0.5 for g in gaps)
    assert structure_distillation_loss(s, t, "smooth_l1").item() == pytest.approx(smooth, rel=1e-5)
    with pytest.raises(ValueError, match="structure form"):
        structure_distillation_loss(s, t, "cubic")


def test_regularizer_weight_rule():
    assert regularizer_weights(4e-4, 512, 512) == pytest.approx((4e-4, 4e-4))
    ins, struct = regularizer_weights(4e-4, 128, 512)
    assert ins == pytest.approx(4e-4 * 4) and struct == pytest.approx(4e-4 * 512 * 511 / (128 * 127))
    assert regularizer_weights(1e-3, 64, None) == (1e-3, 1e-3)


def _tiny_proclip(seed=0):
    tokenizer = tiny_llama3_tokenizer()
    torch.manual_seed(seed)
    config = ProCLIPConfig(
        **{
            k: v
            for k, v in tiny_llm2clip_config(tiny_llama_config(len(tokenizer))).to_dict().items()
            if k in ("vision_config", "text_config", "adapter_blocks", "adapter_expansion")
        },
        projection_dim=32,
    )
    return ProCLIPModel(config), LLM2CLIPProcessor(tiny_image_processor(), tokenizer)


def test_ema_update_rule():
    model, _ = _tiny_proclip()
    wrapper = EMATeacherContrastiveModel(model, decay=0.9)
    before = {k: v.clone() for k, v in wrapper.teacher.state_dict().items()}
    with torch.no_grad():
        for param in model.vision_model.parameters():
            param.add_(1.0)
        model.visual_projection.weight.mul_(3.0)
    wrapper.update_teacher()
    student = {
        **{f"vision_model.{k}": v for k, v in model.vision_model.state_dict().items()},
        **{f"visual_projection.{k}": v for k, v in model.visual_projection.state_dict().items()},
    }
    for name, value in wrapper.teacher.state_dict().items():
        if name.endswith("position_ids"):
            continue
        torch.testing.assert_close(value, 0.9 * before[name] + 0.1 * student[name], msg=name)
    assert not any(p.requires_grad for p in wrapper.teacher.parameters())


def test_layer_wise_decay_groups(tmp_path):
    model = LLM2CLIPModel(tiny_llm2clip_config(tiny_llama_config(420)))
    model.text_model.requires_grad_(False)
    from transformers import TrainingArguments

    trainer = ContrastiveTrainer(
        model=model,
        args=TrainingArguments(output_dir=str(tmp_path), learning_rate=1.0, use_cpu=True),
        vision_layer_decay=0.5,
    )
    optimizer = trainer.create_optimizer()
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert lr_of[id(named["vision_model.encoder.layers.1.mlp.fc1.weight"])] == 0.5  # top block of 2
    assert lr_of[id(named["vision_model.encoder.layers.0.mlp.fc1.weight"])] == 0.25
    assert lr_of[id(named["vision_model.embeddings.patch_embedding.weight"])] == 0.125
    assert lr_of[id(named["text_adapter.adaptor.0.fn.0.weight"])] == 1.0
    assert id(named["text_model.embed_tokens.weight"]) not in lr_of
    assert vision_layer_depth("visual_projection.weight", 2) == 0
    # SigLIP2 towers: the attention-pooling head follows the last block (full rate), the blocks decay as CLIP's
    assert vision_layer_depth("vision_model.head.attention.in_proj_weight", 27) == 0
    assert vision_layer_depth("vision_model.encoder.layers.26.mlp.fc1.weight", 27) == 1


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("dual")
    tokenizer = tiny_llama3_tokenizer()
    torch.manual_seed(0)
    LLM2CLIPModel(tiny_llm2clip_config(tiny_llama_config(len(tokenizer)))).save_pretrained(root / "llm2clip")
    LLM2CLIPProcessor(tiny_image_processor(), tokenizer).save_pretrained(root / "llm2clip")
    model, processor = _tiny_proclip(seed=1)
    model.save_pretrained(root / "proclip")
    processor.save_pretrained(root / "proclip")
    torch.manual_seed(2)
    clip = CLIPModel(
        CLIPConfig(
            text_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=1),
            vision_config=dict(
                hidden_size=64,
                intermediate_size=128,
                num_hidden_layers=1,
                num_attention_heads=1,
                image_size=32,
                patch_size=16,
            ),
            projection_dim=32,
        )
    )
    clip.save_pretrained(root / "clip")
    build_clip_tokenizer(77).save_pretrained(root / "clip")
    data = write_photo_dataset(root / "data")
    return root, data


def _args(base, data, out, *extra):
    return [
        "--model_name_or_path",
        str(base),
        "--train_file",
        str(data),
        "--image_root",
        str(data.parent / "images"),
        "--output_dir",
        str(out),
        "--per_device_train_batch_size",
        "5",
        "--warmup_steps",
        "0",
        "--logging_steps",
        "1",
        "--report_to",
        "none",
        "--use_cpu",
        "true",
        "--seed",
        "3",
        "--save_strategy",
        "no",
        *extra,
    ]


def _losses(out):
    return [e["loss"] for e in json.loads((out / "trainer_state.json").read_text())["log_history"] if "loss" in e]


def test_llm2clip_stage1_lora_caption_contrastive(tmp_path, folders):
    root, data = folders
    out = tmp_path / "s1"
    assert (
        llm2clip_main(
            ["--stage", "1", *_args(root / "llm2clip", data, out, "--max_steps", "10", "--learning_rate", "3e-3")]
        )
        == 0
    )
    losses = _losses(out)
    assert sum(losses[-3:]) < sum(losses[:3])
    assert (out / "text_model_lora" / "adapter_config.json").exists()
    before, after = load_file(root / "llm2clip" / "model.safetensors"), load_file(out / "model.safetensors")
    assert not torch.equal(
        before["text_model.layers.0.self_attn.q_proj.weight"], after["text_model.layers.0.self_attn.q_proj.weight"]
    )
    assert torch.equal(
        before["vision_model.embeddings.patch_embedding.weight"],
        after["vision_model.embeddings.patch_embedding.weight"],
    )
    assert not any("lora" in key for key in after)  # merged
    assert LLM2CLIPModel.from_pretrained(out).config.model_type == "llm2clip"


def test_llm2clip_stage1_with_two_processes(tmp_path, folders):
    """LoRA under DDP, caption negatives gathered across the two processes, the merged model written once."""
    root, data = folders
    out = tmp_path / "s1-ddp"
    args = _args(root / "llm2clip", data, out, "--max_steps", "3", "--learning_rate", "3e-3", "--log_level", "info")
    args[args.index("--per_device_train_batch_size") + 1] = "3"
    run = run_torchrun(["-m", "modeling_longclip.training.dual_tower_train", "llm2clip", "--stage", "1", *args])
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Total train batch size (w. parallel, distributed & accumulation) = 6" in run.stdout + run.stderr
    assert len(_losses(out)) == 3 and all(math.isfinite(loss) for loss in _losses(out))
    assert not any("lora" in key for key in load_file(out / "model.safetensors"))
    assert LLM2CLIPModel.from_pretrained(out).config.model_type == "llm2clip"


def test_llm2clip_stage2_on_the_fly(tmp_path, folders):
    root, data = folders
    out = tmp_path / "s2"
    argv = [
        "--stage",
        "2",
        *_args(
            root / "llm2clip",
            data,
            out,
            "--max_steps",
            "10",
            "--learning_rate",
            "1e-3",
            "--vision_layer_decay",
            "0.85",
        ),
    ]
    assert llm2clip_main(argv) == 0
    losses = _losses(out)
    assert sum(losses[-3:]) < sum(losses[:3])
    before, after = load_file(root / "llm2clip" / "model.safetensors"), load_file(out / "model.safetensors")
    assert torch.equal(
        before["text_model.layers.0.mlp.up_proj.weight"], after["text_model.layers.0.mlp.up_proj.weight"]
    )
    assert not torch.equal(before["text_adapter.adaptor.3.weight"], after["text_adapter.adaptor.3.weight"])
    assert not torch.equal(before["visual_projection.weight"], after["visual_projection.weight"])


def test_proclip_stage1_distillation_moves_only_the_adapter(tmp_path, folders):
    root, data = folders
    out = tmp_path / "p1"
    argv = [
        "--stage",
        "1",
        *_args(
            root / "proclip",
            data,
            out,
            "--max_steps",
            "12",
            "--learning_rate",
            "3e-3",
            "--teacher_model",
            str(root / "clip"),
            "--structure_loss",
            "squared",
        ),
    ]
    assert proclip_main(argv) == 0
    losses = _losses(out)
    assert sum(losses[-3:]) < 0.8 * sum(losses[:3])
    before, after = load_file(root / "proclip" / "model.safetensors"), load_file(out / "model.safetensors")
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("text_adapter.") for k in changed)


def test_proclip_stage2_teacher_checkpoints_resume_and_export(tmp_path, folders):
    root, data = folders
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    common = [
        "--stage",
        "2",
        "--max_steps",
        "6",
        "--save_strategy",
        "steps",
        "--save_steps",
        "3",
        "--learning_rate",
        "1e-3",
        "--ema_decay",
        "0.5",
    ]
    assert proclip_main([*_args(root / "proclip", data, whole), *common]) == 0
    checkpoint = load_file(whole / "checkpoint-3" / "model.safetensors")
    teacher_keys = [k for k in checkpoint if k.startswith("teacher.")]
    assert teacher_keys  # the EMA teacher is saved in checkpoints ...
    final = load_file(whole / "model.safetensors")
    assert not any(k.startswith(("teacher.", "model.")) for k in final)  # ... but the final folder is the student only
    assert ProCLIPModel.from_pretrained(whole).config.model_type == "proclip"
    resumed.mkdir()
    shutil.copytree(whole / "checkpoint-3", resumed / "checkpoint-3")
    assert (
        proclip_main(
            [
                *_args(root / "proclip", data, resumed),
                *common,
                "--resume_from_checkpoint",
                str(resumed / "checkpoint-3"),
            ]
        )
        == 0
    )
    a, b = (
        load_file(whole / "checkpoint-6" / "model.safetensors"),
        load_file(resumed / "checkpoint-6" / "model.safetensors"),
    )
    for key in teacher_keys:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)  # same teacher state after resuming
    assert {"modules.json", "sentence_bert_config.json", "README.md"} <= {p.name for p in whole.iterdir()}
    student = ProCLIPModel.from_pretrained(whole)
    teacher_patch = a["teacher.vision_model.embeddings.patch_embedding.weight"]
    assert not torch.equal(teacher_patch, student.vision_model.embeddings.patch_embedding.weight.detach())  # EMA lags
    assert math.isfinite(_losses(whole)[-1])


def test_stage2_and_distillation_read_the_feature_cache(tmp_path, folders, monkeypatch):
    from modeling_longclip.features import extract_text_features, iter_captions

    root, data = folders
    model = LLM2CLIPModel.from_pretrained(root / "llm2clip")
    processor = LLM2CLIPProcessor.from_pretrained(root / "llm2clip")
    cache = extract_text_features(
        model, processor, iter_captions(data, derive_short=True), tmp_path / "cache", progress=False
    )
    proclip, proclip_processor = (
        ProCLIPModel.from_pretrained(root / "proclip"),
        LLM2CLIPProcessor.from_pretrained(root / "proclip"),
    )
    proclip_cache = extract_text_features(
        proclip, proclip_processor, iter_captions(data, derive_short=True), tmp_path / "pcache", progress=False
    )

    def no_llm(*args, **kwargs):
        raise AssertionError("the text model ran although cached features were given")

    monkeypatch.setattr(LLM2CLIPModel, "run_text_model", no_llm)
    out = tmp_path / "s2"
    argv = [
        "--stage",
        "2",
        *_args(
            root / "llm2clip", data, out, "--max_steps", "8", "--learning_rate", "1e-3", "--text_features", str(cache)
        ),
    ]
    assert llm2clip_main(argv) == 0
    losses = _losses(out)
    assert sum(losses[-3:]) < sum(losses[:3])
    out = tmp_path / "p1"
    argv = [
        "--stage",
        "1",
        *_args(
            root / "proclip",
            data,
            out,
            "--max_steps",
            "6",
            "--learning_rate",
            "3e-3",
            "--teacher_model",
            str(root / "clip"),
            "--text_features",
            str(proclip_cache),
        ),
    ]
    assert proclip_main(argv) == 0
    assert (
        llm2clip_main(["--stage", "1", *_args(root / "llm2clip", data, tmp_path / "x", "--text_features", str(cache))])
        == 2
    )


def test_proclip_stage1_loss_follows_the_authors_caption_sets(folders):
    """The authors' train.py: mse(sum) on the short and on the second caption set, smooth-L1 over pdist on the short
    set, on L2-normalized student (adapter) and teacher (CLIP text tower) embeddings."""
    from transformers import AutoTokenizer

    from modeling_longclip.training.collator import DistillationCollator
    from modeling_longclip.training.dual_tower_models import AdapterDistillationModel

    root, data = folders
    model, processor = (
        ProCLIPModel.from_pretrained(root / "proclip"),
        LLM2CLIPProcessor.from_pretrained(root / "proclip"),
    )
    teacher, teacher_tokenizer = CLIPModel.from_pretrained(root / "clip"), AutoTokenizer.from_pretrained(root / "clip")
    rows = [json.loads(line) for line in data.read_text().splitlines()][:4]
    wrapper = AdapterDistillationModel(model, teacher)
    with torch.no_grad():
        loss = wrapper(**DistillationCollator(processor, teacher_tokenizer, captions="both")(rows)).loss

        def embeddings(captions):
            llm = processor(text=captions, return_tensors="pt")
            student = model.get_text_features(
                llm["input_ids"], llm["attention_mask"], llm["pooling_mask"]
            ).pooler_output
            tokens = teacher_tokenizer(captions, padding=True, truncation=True, return_tensors="pt")
            target = teacher.get_text_features(**tokens).pooler_output
            return F.normalize(student, dim=-1), F.normalize(target, dim=-1)

        short_s, short_t = embeddings([row["caption"].split(". ")[0] for row in rows])
        long_s, long_t = embeddings([row["caption"] for row in rows])
        expected = F.mse_loss(short_s, short_t, reduction="sum") + F.mse_loss(long_s, long_t, reduction="sum")
        expected = expected + F.smooth_l1_loss(F.pdist(short_s), F.pdist(short_t), reduction="sum")
        assert loss.item() == pytest.approx(expected.item(), rel=1e-5)

        batch = DistillationCollator(processor, teacher_tokenizer, captions="random")(
            rows
        )  # the documented alternative
        assert not any(key.startswith("long_") for key in batch)
        one_set = wrapper(**batch).loss
        assert one_set.item() != pytest.approx(loss.item(), rel=1e-3)


def _with_logit_scale(source, target, value):
    shutil.copytree(source, target)
    cls = ProCLIPModel if "proclip" in source.name else LLM2CLIPModel
    model = cls.from_pretrained(source)
    model.logit_scale.data.fill_(value)
    model.save_pretrained(target)
    return target


@pytest.mark.parametrize("family,start,bound", [("llm2clip", 5.0, math.log(100)), ("proclip", -1.0, 0.0)])
def test_stage2_clamps_logit_scale_after_the_optimizer_step(tmp_path, folders, family, start, bound):
    """`unwrap_model(model).logit_scale.clamp_(0, math.log(100))` after every step: one step of lr 1e-3 moves the
    scale by about 1e-3, so a start outside [0, ln 100] must end exactly on the bound."""
    root, data = folders
    base = _with_logit_scale(root / family, tmp_path / family, start)
    main = llm2clip_main if family == "llm2clip" else proclip_main
    out = tmp_path / "out"
    assert main(["--stage", "2", *_args(base, data, out, "--max_steps", "1", "--learning_rate", "1e-3")]) == 0
    assert load_file(out / "model.safetensors")["logit_scale"].item() == torch.tensor(bound).item()


def test_logit_scale_clamp_unwraps_and_writes_into_the_parameter():
    from modeling_longclip.training.trainer import LogitScaleClampCallback

    model, _ = _tiny_proclip()
    wrapped = torch.nn.Module()
    wrapped.module = EMATeacherContrastiveModel(model)  # like DDP(wrapper): the parameter is model.model.logit_scale
    model.logit_scale.data.fill_(7.0)
    LogitScaleClampCallback().on_optimizer_step(None, None, None, model=wrapped)
    assert model.logit_scale.item() == torch.tensor(math.log(100)).item()


def test_logit_scale_clamp_skips_a_zero3_partitioned_parameter(caplog):
    from modeling_longclip.training.trainer import LogitScaleClampCallback

    model, _ = _tiny_proclip()
    model.logit_scale.data.fill_(7.0)
    model.logit_scale.ds_id = 0  # partitioned by DeepSpeed ZeRO-3: the local tensor is not the value
    callback = LogitScaleClampCallback()
    with caplog.at_level("WARNING", logger="modeling_longclip.training.trainer"):
        callback.on_optimizer_step(None, None, None, model=model)
        callback.on_optimizer_step(None, None, None, model=model)
    assert model.logit_scale.item() == 7.0
    assert [r.getMessage() for r in caplog.records] == [
        "logit_scale is partitioned by DeepSpeed ZeRO-3: its clamp is skipped."
    ]


@pytest.mark.parametrize("convention, moves", [("authors", True), ("transformers", False)])
def test_stage2_warmup_convention(tmp_path, folders, convention, moves):
    """The authors' open_clip-style schedulers run step 0 at lr x 1 / warmup; transformers' at lr 0 (nothing moves)."""
    root, data = folders
    out = tmp_path / convention
    argv = [
        "--stage",
        "2",
        *_args(root / "llm2clip", data, out, "--max_steps", "1", "--learning_rate", "1e-2"),
        "--warmup_steps",
        "4",
        "--warmup_convention",
        convention,
    ]
    assert llm2clip_main(argv) == 0
    before = load_file(root / "llm2clip" / "model.safetensors")["visual_projection.weight"]
    after = load_file(out / "model.safetensors")["visual_projection.weight"]
    assert (not torch.equal(before, after)) == moves
