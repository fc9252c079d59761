"""Long-CLIP converter: parity with open_clip at fp32, both output formats, every refusal, atomic writes."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from openclip_reference import open_clip_tokenize, open_clip_towers
from safetensors.torch import load_file
from transformers import AutoModel, CLIPModel

from modeling_longclip import LongCLIPModel, LongCLIPProcessor
from modeling_longclip.common.errors import CheckpointError, ConversionError
from modeling_longclip.converters.longclip import convert_longclip
from modeling_longclip.converters.synthetic import TINY_TEXT, random_openai_clip_state_dict

REPO = Path(__file__).resolve().parents[1]
SHORT = "A red bicycle leaning against a brick wall."
SCENE = (
    "A kitchen seen from the doorway: a wooden table with four chairs, a bowl of green apples, a kettle on a gas "
    "stove, a window with white curtains, a calendar on the wall, a cat asleep on the chair by the radiator. "
)
CAPTIONS = [SHORT, SCENE * 2, SCENE * 6]  # ~10, >77 and >248 tokens


@pytest.fixture
def longclip_checkpoint(tmp_path):
    path = tmp_path / "longclip-tiny.pt"
    state_dict = random_openai_clip_state_dict(seed=1)
    torch.save(state_dict, path)
    return path, state_dict


def _features(model, processor, pixels):
    with torch.no_grad():
        inputs = processor(text=CAPTIONS)
        text = model.get_text_features(
            input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]
        ).pooler_output
        image = model.get_image_features(pixel_values=pixels).pooler_output
    return text, image


def _open_clip_features(state_dict, pixels):
    text_tower, vision_tower = open_clip_towers(state_dict)
    with torch.no_grad():
        return text_tower(open_clip_tokenize(CAPTIONS, 248)), vision_tower(pixels)


def test_parity_with_open_clip_at_fp32(tmp_path, longclip_checkpoint):
    path, state_dict = longclip_checkpoint
    report = convert_longclip(path, tmp_path / "out")
    assert report.text_max_abs_diff <= 1e-5 and report.image_max_abs_diff <= 1e-5
    model = LongCLIPModel.from_pretrained(tmp_path / "out").eval()
    processor = LongCLIPProcessor.from_pretrained(tmp_path / "out")
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    with pytest.warns(UserWarning, match="truncated"):
        text, image = _features(model, processor, pixels)
    ref_text, ref_image = _open_clip_features(state_dict, pixels)
    assert (text - ref_text).abs().max() <= 1e-5
    assert (image - ref_image).abs().max() <= 1e-5
    assert processor.tokenizer(CAPTIONS[1], verbose=False)["input_ids"].__len__() > 77
    assert text.abs().max() > 0.1  # the features are not trivially zero


def test_copying_only_the_frozen_table_is_caught(tmp_path, longclip_checkpoint):
    """A converter that ignores positional_embedding_res (as one third-party one does) must fail the parity check."""
    path, state_dict = longclip_checkpoint
    convert_longclip(path, tmp_path / "out")
    model = LongCLIPModel.from_pretrained(tmp_path / "out").eval()
    with torch.no_grad():
        model.text_model.embeddings.position_embedding.weight.copy_(state_dict["positional_embedding"])
    processor = LongCLIPProcessor.from_pretrained(tmp_path / "out")
    with pytest.warns(UserWarning):
        text, _ = _features(model, processor, torch.zeros(1, 3, 32, 32))
    ref_text, _ = _open_clip_features(state_dict, torch.zeros(1, 3, 32, 32))
    assert (text - ref_text).abs().max() > 1e-2


def test_clip_format_loads_with_plain_clipmodel(tmp_path, longclip_checkpoint):
    path, state_dict = longclip_checkpoint
    convert_longclip(path, tmp_path / "clip", output_format="clip")
    config = json.loads((tmp_path / "clip" / "config.json").read_text())
    assert config["model_type"] == "clip" and "auto_map" not in config
    assert not list((tmp_path / "clip").glob("*.py"))
    model = CLIPModel.from_pretrained(tmp_path / "clip").eval()
    assert model.config.text_config.max_position_embeddings == 248
    convert_longclip(path, tmp_path / "longclip")
    longclip = LongCLIPModel.from_pretrained(tmp_path / "longclip").eval()
    processor = LongCLIPProcessor.from_pretrained(tmp_path / "longclip")
    pixels = torch.randn(2, 3, 32, 32)
    with pytest.warns(UserWarning):
        a, b = _features(model, processor, pixels), _features(longclip, processor, pixels)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_dtype_option_writes_half_weights(tmp_path, longclip_checkpoint):
    from safetensors import safe_open

    path, _ = longclip_checkpoint
    convert_longclip(path, tmp_path / "fp16", dtype="float16")
    with safe_open(tmp_path / "fp16" / "model.safetensors", "pt") as weights:
        assert weights.get_tensor("text_projection.weight").dtype == torch.float16
    assert AutoModel.from_pretrained(tmp_path / "fp16").dtype == torch.float16


def _stock_checkpoint(tmp_path, dtype=torch.float16):
    """A 77-position OpenAI CLIP state dict, fp16 like OpenAI's released files."""
    stock = random_openai_clip_state_dict(
        text=TINY_TEXT.__class__(**{**TINY_TEXT.__dict__, "context_length": 77}), longclip=False
    )
    stock = {k: v.to(dtype) for k, v in stock.items()}
    torch.save(stock, tmp_path / "ViT-tiny.pt")
    return tmp_path / "ViT-tiny.pt", stock


def test_stock_openai_clip_is_accepted_and_stretched(tmp_path):
    path, stock = _stock_checkpoint(tmp_path)
    report = convert_longclip(path, tmp_path / "out")
    assert report.stretched_from == 77
    assert "stretched in fp16 with the authors' operation order" in report.lines()
    model = LongCLIPModel.from_pretrained(tmp_path / "out")
    assert model.config.text_config.max_position_embeddings == 248
    table = model.text_model.embeddings.position_embedding.weight
    assert torch.equal(table[:20], stock["positional_embedding"][:20].float())
    assert torch.equal(table[20::4][:57], stock["positional_embedding"][20:].float())


def test_stretch_is_bit_exact_with_the_authors_fp16_arithmetic_and_fp32_on_request(tmp_path):
    """Default: the authors' load_from_clip arithmetic (fp16, one rounding per operation); --no-exact-fp16: fp32."""
    from modeling_longclip import stretch_position_embeddings
    from modeling_longclip.converters.cli import convert_longclip_main

    path, stock = _stock_checkpoint(tmp_path)
    key = "text_model.embeddings.position_embedding.weight"
    assert convert_longclip_main(["--checkpoint", str(path), "--output", str(tmp_path / "fp16")]) == 0
    assert (
        convert_longclip_main(["--checkpoint", str(path), "--output", str(tmp_path / "fp32"), "--no-exact-fp16"]) == 0
    )
    exact, fp32 = (
        load_file(tmp_path / "fp16" / "model.safetensors")[key],
        load_file(tmp_path / "fp32" / "model.safetensors")[key],
    )
    authors = stretch_position_embeddings(stock["positional_embedding"], exact_fp16=True)
    assert authors.dtype == torch.float16 and torch.equal(exact, authors.float())
    assert torch.equal(fp32, stretch_position_embeddings(stock["positional_embedding"].float()))
    interpolated = [20 + 4 * i + j for i in range(56) for j in (1, 2, 3)]
    assert torch.equal(exact[:20], fp32[:20]) and torch.equal(exact[20::4][:57], fp32[20::4][:57])  # copied rows agree
    assert (exact[interpolated] - fp32[interpolated]).abs().max() > 0  # fp16 rounds the 3a/4 + b/4 rows


def _broken(state_dict, how):
    sd = dict(state_dict)
    if how == "missing":
        del sd["transformer.resblocks.1.mlp.c_fc.bias"]
    elif how == "unexpected":
        sd["visual.extra_head.weight"] = torch.zeros(2)
    elif how == "shape":
        sd["ln_final.bias"] = torch.zeros(63)
    return sd


@pytest.mark.parametrize(
    "how,message",
    [
        ("missing", "missing keys .*transformer.resblocks.1.mlp.c_fc.bias"),
        ("unexpected", "unexpected keys .*visual.extra_head.weight"),
        ("shape", r"`ln_final.bias` has shape \[63\], expected \[64\]"),
    ],
)
def test_bad_checkpoints_are_refused_and_nothing_is_written(tmp_path, longclip_checkpoint, how, message):
    _, state_dict = longclip_checkpoint
    torch.save(_broken(state_dict, how), tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=message):
        convert_longclip(tmp_path / "bad.pt", tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.pt", "longclip-tiny.pt"]


def test_not_a_checkpoint_is_refused(tmp_path):
    (tmp_path / "notes.pt").write_text("hello")
    with pytest.raises(CheckpointError, match="notes.pt: not a readable PyTorch checkpoint"):
        convert_longclip(tmp_path / "notes.pt", tmp_path / "out")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="expected a state dict"):
        convert_longclip(tmp_path / "list.pt", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_existing_output_needs_overwrite(tmp_path, longclip_checkpoint):
    path, _ = longclip_checkpoint
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(ConversionError, match="--overwrite"):
        convert_longclip(path, tmp_path / "out")
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"
    convert_longclip(path, tmp_path / "out", overwrite=True)
    assert not (tmp_path / "out" / "keep.txt").exists() and (tmp_path / "out" / "model.safetensors").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_parity_failure_writes_nothing(tmp_path, longclip_checkpoint, monkeypatch):
    import modeling_longclip.converters.longclip as converter

    path, _ = longclip_checkpoint
    real = converter.reference_image_features
    monkeypatch.setattr(converter, "reference_image_features", lambda sd, px: real(sd, px) + 1.0)
    with pytest.raises(ConversionError, match="disagrees with the reference"):
        convert_longclip(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli_reports_parity_and_refuses_cleanly(tmp_path, longclip_checkpoint):
    path, state_dict = longclip_checkpoint
    script = REPO / "conversion" / "convert_longclip.py"
    ok = subprocess.run(
        [sys.executable, script, "--checkpoint", path, "--output", tmp_path / "out"], capture_output=True, text=True
    )
    assert ok.returncode == 0, ok.stderr
    assert "text features:  max |diff|" in ok.stdout and "wrote" in ok.stdout
    torch.save(_broken(state_dict, "missing"), tmp_path / "bad.pt")
    bad = subprocess.run(
        [sys.executable, script, "--checkpoint", tmp_path / "bad.pt", "--output", tmp_path / "bad"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2
    assert bad.stderr.startswith("error: ") and "Traceback" not in bad.stderr
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("kind", ["module", "legacy_module", "script", "trace"])
def test_pickled_modules_and_torchscript_are_refused_in_one_line(tmp_path, kind, capsys):
    """torch's refusal is five lines with colour codes and a `weights_only=False` advice the command cannot take."""
    import warnings

    from modeling_longclip.converters.cli import convert_longclip_main

    module = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    path = tmp_path / f"{kind}.pt"
    if kind == "module":
        torch.save(module, path)
    elif kind == "legacy_module":
        torch.save(module, path, _use_new_zipfile_serialization=False)
    else:
        scripted = torch.jit.script(module) if kind == "script" else torch.jit.trace(module, torch.zeros(1, 4))
        torch.jit.save(scripted, path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no torch warning reaches the user
        assert convert_longclip_main(["--checkpoint", str(path), "--output", str(tmp_path / "out")]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: ") and "\x1b" not in captured.err
    assert "weights_only" not in captured.err
    if kind.endswith("module"):
        assert "pickled `torch.nn.modules.container.Sequential` object" in lines[0]
        if kind == "module":  # read from the pickle itself when torch's message changes wording
            from modeling_longclip.converters.torch_files import foreign_class

            assert foreign_class(path, RuntimeError("refused")) == "torch.nn.modules.container.Sequential"
        assert "torch.save(model.state_dict(), 'weights.pt')" in lines[0]
    else:
        assert (
            "a TorchScript archive" in lines[0] and "torch.jit.load(path, map_location='cpu').state_dict()" in lines[0]
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]
