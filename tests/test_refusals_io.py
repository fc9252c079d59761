"""Issue 20, conversion / export / feature cache / evaluation / processors: every bad input is one line and exit 2
with nothing written, nothing misleads, nothing silent. Command-line cases run the console scripts in a subprocess
(a traceback would show); the rest call the same code in-process."""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from pathlib import Path

import pytest
import torch
from cli_runner import run_console_script
from llm_fixtures import tiny_image_processor, tiny_llama3_tokenizer, tiny_llama_config, tiny_llm2clip_config
from llm_fixtures import tiny_llm_folder as write_tiny_llm_folder

from modeling_longclip import LLM2CLIPModel, LLM2CLIPProcessor, LongCLIPModel, LongTextTruncationWarning
from modeling_longclip.common.errors import ConversionError
from modeling_longclip.common.folders import FolderNotLoadableError, validate_model_folder
from modeling_longclip.converters.longclip import convert_longclip
from modeling_longclip.converters.proclip import convert_proclip
from modeling_longclip.converters.synthetic import TINY_TEXT, random_openai_clip_state_dict
from modeling_longclip.converters.synthetic_zoo import write_llm2clip_clip_part
from modeling_longclip.export import onnx as onnx_export
from modeling_longclip.export.text_encoder_stretch import main as stretch_main
from modeling_longclip.features import FeatureCacheError, caption_key, run_extraction
from modeling_longclip.modeling_longclip import stretch_position_embeddings

KEEP = 20


def refused(result) -> str:
    """The one `error:` line of a refused console script (exit 2, no traceback); other stderr lines are library noise
    printed at import time, never the command's."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and result.stderr.strip().splitlines()[-1] == errors[0], result.stderr
    return errors[0]


def refused_in_process(main, argv, capsys) -> str:
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("error: ") and err.count("\n") == 1, err
    return err


def truncate(path: Path) -> None:
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size // 2)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The authors' formats (random, tiny) and one converted Long-CLIP folder, plus a copy with its weights cut."""
    root = tmp_path_factory.mktemp("io")
    torch.save(random_openai_clip_state_dict(seed=4), root / "longclip.pt")
    stock = random_openai_clip_state_dict(text=dataclasses.replace(TINY_TEXT, context_length=77), longclip=False)
    torch.save(stock, root / "openai-fp32.pt")
    convert_longclip(root / "longclip.pt", root / "longclip")
    truncated = root / "truncated"
    truncated.mkdir()
    for item in (root / "longclip").iterdir():
        if item.is_file():
            (truncated / item.name).write_bytes(item.read_bytes())
    truncate(truncated / "model.safetensors")
    write_tiny_llm_folder(root / "llm")
    write_llm2clip_clip_part(root / "released")
    return root


# --- conversion ---------------------------------------------------------------------------------------------------


def test_fp32_openai_clip_converts_with_the_default_fp16_stretch(files, tmp_path):
    """The README's stock-CLIP command on an fp32 state dict: converted, not refused with a parity error; the table is
    the authors' (their load_from_clip casts to fp16 before stretching), and the report says so."""
    result = run_console_script(
        "longclip-convert", "--checkpoint", files / "openai-fp32.pt", "--output", tmp_path / "out"
    )
    assert result.returncode == 0, result.stderr
    assert "rounded to fp16" in result.stdout and "--no-exact-fp16" in result.stdout
    source = torch.load(files / "openai-fp32.pt", weights_only=True)["positional_embedding"]
    model = LongCLIPModel.from_pretrained(tmp_path / "out")
    table = model.text_model.embeddings.position_embedding.weight.detach()
    authors = stretch_position_embeddings(source.half(), KEEP, 4, exact_fp16=True).float()
    assert table.shape == (248, source.shape[1]) and torch.equal(table, authors)

    convert_longclip(files / "openai-fp32.pt", tmp_path / "fp32", exact_fp16=False)  # the fp32 arithmetic
    exact = LongCLIPModel.from_pretrained(tmp_path / "fp32").text_model.embeddings.position_embedding.weight
    assert torch.equal(exact.detach()[:KEEP], source[:KEEP])


def test_parity_failure_says_what_to_do(files, tmp_path, monkeypatch):
    from modeling_longclip.converters import longclip as longclip_converter

    real = longclip_converter.reference_text_features
    monkeypatch.setattr(longclip_converter, "reference_text_features", lambda *a, **k: real(*a, **k) + 1.0)
    with pytest.raises(ConversionError) as error:
        convert_longclip(files / "longclip.pt", tmp_path / "out")
    message = str(error.value)
    assert "nothing was written" in message and "report" in message and "\n" not in message
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


def test_dual_tower_parity_failure_says_what_to_do(files, tmp_path, monkeypatch):
    from modeling_longclip.converters import dual_tower
    from modeling_longclip.converters.synthetic import random_proclip_state_dict

    torch.save(random_proclip_state_dict(seed=2), tmp_path / "L14.pt")
    real = dual_tower.reference_adapter
    monkeypatch.setattr(dual_tower, "reference_adapter", lambda *a, **k: real(*a, **k) + 1.0)
    with pytest.raises(ConversionError, match="text path .*nothing was written.*please report"):
        convert_proclip(tmp_path / "L14.pt", files / "llm", tmp_path / "out")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


def test_a_merged_248_row_table_is_not_stretched_again(files, tmp_path):
    merged = torch.load(files / "longclip.pt", weights_only=True)
    merged["positional_embedding"] = torch.cat(
        [merged["positional_embedding"][:KEEP], merged.pop("positional_embedding_res")[KEEP:]]
    )
    torch.save(merged, tmp_path / "merged.pt")
    report = convert_longclip(tmp_path / "merged.pt", tmp_path / "out")
    assert report.stretched_from is None and any("not stretched again" in note for note in report.notes)
    table = LongCLIPModel.from_pretrained(tmp_path / "out").text_model.embeddings.position_embedding.weight
    assert torch.equal(table.detach(), merged["positional_embedding"])


def test_converted_config_pads_like_its_tokenizer(files):
    """CLIPTextConfig's default pad_token_id is 1; the tokenizer pads with 49407, so Trainer re-aligned and warned
    on every run."""
    from transformers import AutoTokenizer
    from transformers.trainer_utils import align_special_tokens

    config = json.loads((files / "longclip" / "config.json").read_text())["text_config"]
    tokenizer = AutoTokenizer.from_pretrained(files / "longclip")
    assert (config["pad_token_id"], config["bos_token_id"], config["eos_token_id"]) == (
        tokenizer.pad_token_id,
        tokenizer.bos_token_id,
        tokenizer.eos_token_id,
    )
    model = LongCLIPModel.from_pretrained(files / "longclip")
    before = model.config.text_config.to_dict()
    align_special_tokens(model, tokenizer)  # what Trainer does before training; it warns when it changes anything
    assert model.config.text_config.to_dict() == before


def test_dual_tower_converters_say_what_they_were_given(files, tmp_path, capsys):
    from modeling_longclip.converters.cli import convert_llm2clip_main, convert_proclip_main

    result = run_console_script(
        "longclip-convert-proclip",
        "--checkpoint",
        files / "longclip.pt",
        "--llm",
        files / "llm",
        "--output",
        tmp_path / "out",
    )
    line = refused(result)
    assert "a Long-CLIP checkpoint" in line and "longclip-convert" in line and "LayerNorm" not in line
    line = refused_in_process(
        convert_proclip_main,
        ["--checkpoint", files / "openai-fp32.pt", "--llm", files / "llm", "--output", tmp_path / "out"],
        capsys,
    )
    assert "OpenAI CLIP checkpoint" in line
    for main, flag in ((convert_proclip_main, "--checkpoint"), (convert_llm2clip_main, "--clip")):
        line = refused_in_process(
            main, [flag, files / "longclip", "--llm", files / "llm", "--output", tmp_path / "out"], capsys
        )
        assert "converted by this package (model_type longclip)" in line and "from_pretrained" in line
    line = refused_in_process(
        convert_llm2clip_main,
        ["--clip", files / "longclip.pt", "--llm", files / "llm", "--output", tmp_path / "out"],
        capsys,
    )
    assert "a Long-CLIP checkpoint" in line
    line = refused_in_process(
        convert_llm2clip_main,
        ["--clip", files / "longclip" / "model.safetensors", "--llm", files / "llm", "--output", tmp_path / "out"],
        capsys,
    )
    assert "transformers CLIPModel" in line
    assert not (tmp_path / "out").exists()


def test_external_llm_is_recorded_as_an_absolute_path(files, tmp_path, monkeypatch):
    from modeling_longclip.converters.llm2clip import convert_llm2clip

    monkeypatch.chdir(files)
    convert_llm2clip("released", "llm", tmp_path / "out", external_llm=True)  # paths as a user types them
    recorded = json.loads((tmp_path / "out" / "config.json").read_text())["text_model_name_or_path"]
    assert recorded == str(files / "llm")
    monkeypatch.chdir(tmp_path)  # another directory: the folder still loads in one call
    model = LLM2CLIPModel.from_pretrained(tmp_path / "out")
    assert model.text_model.embed_tokens.weight.shape[1] == 64


# --- model folders: eval, export, upload ----------------------------------------------------------------------------


def test_truncated_weights_are_one_line_for_eval_and_export(files, tmp_path):
    from eval_fixtures import write_urban1k

    data = write_urban1k(tmp_path / "urban", {"a": "a red square", "b": "a blue circle"})
    output = tmp_path / "results.json"
    line = refused(
        run_console_script(
            "longclip-eval",
            "--model",
            files / "truncated",
            "--benchmark",
            "urban1k",
            "--data-root",
            data,
            "--output",
            output,
            "--no-cache",
        )
    )
    assert "model.safetensors is truncated" in line and not output.exists()
    line = refused(run_console_script("longclip-export-onnx", files / "truncated"))
    assert "model.safetensors is truncated" in line and not (files / "truncated" / "onnx").exists()


@pytest.mark.parametrize("kind", ["missing", "file", "no-config"])
def test_paths_that_are_not_model_folders(files, tmp_path, capsys, kind):
    from modeling_longclip.evaluation.cli import main as eval_main

    path = {"missing": tmp_path / "nope", "file": files / "longclip.pt", "no-config": tmp_path}[kind]
    line = refused_in_process(
        eval_main,
        ["--model", path, "--benchmark", "urban1k", "--data-root", tmp_path, "--output", tmp_path / "r.json"],
        capsys,
    )
    assert str(path) in line
    assert str(path) in refused_in_process(onnx_export.main, [path], capsys)
    assert not (tmp_path / "r.json").exists() and not (tmp_path / "onnx").exists()


def test_upload_check_reads_every_weight_header(files, tmp_path):
    validate_model_folder(files / "longclip")
    with pytest.raises(FolderNotLoadableError, match="model.safetensors is truncated"):
        validate_model_folder(files / "truncated")
    sharded = tmp_path / "sharded"
    LongCLIPModel.from_pretrained(files / "longclip").save_pretrained(sharded, max_shard_size="2MB")
    for item in (files / "longclip").iterdir():
        if item.is_file() and not item.name.startswith("model."):
            (sharded / item.name).write_bytes(item.read_bytes())
    validate_model_folder(sharded)
    shard = sorted(sharded.glob("model-*.safetensors"))[-1]
    with open(shard, "ab") as handle:
        handle.write(b"\0" * 16)  # bytes past the last tensor: safetensors refuses these too
    with pytest.raises(FolderNotLoadableError, match=f"{shard.name} has 16 bytes after its last tensor"):
        validate_model_folder(sharded)


# --- the text-encoder stretcher -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def text_encoders(files):
    from transformers import CLIPTextConfig, CLIPTextModel

    from modeling_longclip.converters.clip_preprocessing import build_clip_tokenizer

    torch.manual_seed(0)
    config = CLIPTextConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=1)
    CLIPTextModel(config).save_pretrained(files / "text_encoder")
    build_clip_tokenizer(77).save_pretrained(files / "tokenizer")
    broken = files / "broken_tokenizer"
    broken.mkdir()
    (broken / "tokenizer_config.json").write_text("{not json")
    return files


def test_stretcher_refuses_an_unreadable_tokenizer(text_encoders, tmp_path):
    result = run_console_script(
        "longclip-stretch-text-encoder",
        text_encoders / "text_encoder",
        tmp_path / "out",
        "--tokenizer",
        text_encoders / "broken_tokenizer",
    )
    line = refused(result)
    assert "broken_tokenizer" in line and "cannot read a tokenizer" in line
    assert not (tmp_path / "out").exists() and not list(tmp_path.iterdir())


def test_stretcher_refuses_to_stretch_twice(text_encoders, tmp_path, capsys):
    assert stretch_main([str(text_encoders / "text_encoder"), str(tmp_path / "248")]) == 0
    capsys.readouterr()
    line = refused_in_process(stretch_main, [tmp_path / "248", tmp_path / "932"], capsys)
    assert "already has 248 rows" in line and "932" in line
    assert not (tmp_path / "932").exists()


# --- processors -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_llm2clip():
    tokenizer = tiny_llama3_tokenizer()
    torch.manual_seed(0)
    model = LLM2CLIPModel(tiny_llm2clip_config(tiny_llama_config(len(tokenizer)))).eval()
    return model, LLM2CLIPProcessor(tiny_image_processor(), tokenizer)


def test_processors_check_their_text(tiny_longclip, tiny_llm2clip):
    for model, processor in (tiny_longclip, tiny_llm2clip):
        name = type(processor).__name__
        with pytest.raises(TypeError, match=f"{name}: text must be a string or a list of strings, got int 123"):
            processor(text=123)
        with pytest.raises(ValueError, match=f"{name} got an empty list of texts"):
            processor(text=[])
        with pytest.raises(TypeError, match="1 item\\(s\\) of another type \\(the first: NoneType\\)"):
            processor(text=["a cat", None])
        assert model.encode_image([], processor=processor).shape == (0, model.config.projection_dim)
        assert model.encode_text([], processor=processor).shape == (0, model.config.projection_dim)


def test_pipeline_truncation_warning_says_what_pipeline_users_can_do(tiny_longclip):
    _, processor = tiny_longclip
    long_text = "a photo of a cat " * 80
    with pytest.warns(LongTextTruncationWarning) as tokenizer_call:
        processor.tokenizer([long_text, "a dog"], padding=True, return_tensors="pt")  # what the pipeline sends
    message = str(tokenizer_call[0].message)
    assert "model.encode_text(texts, long_text='window')" in message and "to the processor" not in message
    with pytest.warns(LongTextTruncationWarning) as processor_call:
        processor(text=[long_text])
    assert "Pass long_text='window' to the processor" in str(processor_call[0].message)


def test_llm2clip_warns_once_with_the_count(tiny_llm2clip):
    _, processor = tiny_llm2clip
    huge = "word " * 20_000
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        inputs = processor(text=[huge, "a dog", huge[:50]])
    cut = [w for w in caught if issubclass(w.category, LongTextTruncationWarning)]
    assert len(cut) == 1 and inputs["input_ids"].shape[1] == 512
    full = len(processor.tokenizer(processor.texts_to_tokenize(huge)[0])["input_ids"])
    assert f"1 of 3 captions exceed the 512-token limit and lost their end: {full - 512} tokens dropped" in str(
        cut[0].message
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        processor(text=["a dog", "word " * 100])  # within the limit: no warning
    word_cut = LLM2CLIPProcessor(tiny_image_processor(), tiny_llama3_tokenizer(), doc_max_length=40)
    with pytest.warns(LongTextTruncationWarning, match="1 of 1 captions"):
        word_cut(text=["word " * 100])  # llm2vec's word cut (the 1B card's 512 / 400 setting) loses words too


# --- feature cache --------------------------------------------------------------------------------------------------


def test_a_cache_is_resumed_only_in_the_dtype_that_made_it(tiny_llm2clip, tmp_path):
    model, processor = tiny_llm2clip
    captions = [(caption_key(t), t) for t in ("a red car", "two dogs", "a bowl of fruit", "a tree")]
    run_extraction(model, processor, captions[:2], tmp_path, dtype="bfloat16", progress=False)
    assert json.loads((tmp_path / "index.json").read_text())["compute_dtype"] == "bfloat16"
    with pytest.raises(FeatureCacheError, match="computed in bfloat16, this run would compute in float32") as error:
        run_extraction(model, processor, captions, tmp_path, dtype="float32", progress=False)
    assert "--dtype bfloat16" in str(error.value) and "--overwrite" in str(error.value)
    stats = run_extraction(model, processor, captions, tmp_path, dtype="bfloat16", progress=False)
    assert (stats.cached, stats.encoded) == (2, 2)
    index = json.loads((tmp_path / "index.json").read_text())
    del index["compute_dtype"]  # a cache made before the index recorded it: read from the first shard
    (tmp_path / "index.json").write_text(json.dumps(index))
    with pytest.raises(FeatureCacheError, match="computed in bfloat16"):
        run_extraction(model, processor, captions, tmp_path, dtype="float32", progress=False)


def test_the_command_refuses_another_dtype_before_loading_the_model(tiny_llm2clip, tmp_path, capsys, monkeypatch):
    from modeling_longclip.features import cli as features_cli

    model, processor = tiny_llm2clip
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    (tmp_path / "captions.jsonl").write_text('{"caption": "a red car"}\n{"caption": "two dogs"}\n')
    args = ["--model", tmp_path / "model", "--captions", tmp_path / "captions.jsonl", "--output", tmp_path / "cache"]
    assert features_cli.main([str(a) for a in [*args, "--dtype", "bfloat16", "--no-progress"]]) == 0
    capsys.readouterr()
    monkeypatch.setattr(features_cli, "load_model", lambda *a, **k: pytest.fail("loaded the model first"))
    line = refused_in_process(features_cli.main, [*args, "--device", "cpu"], capsys)  # --dtype auto: float32 here
    assert "computed in bfloat16, this run would compute in float32" in line and "--dtype bfloat16" in line


def test_feature_cli_loads_through_the_shared_loader(files, tmp_path, capsys):
    from modeling_longclip.features.cli import main as features_main

    captions = tmp_path / "captions.jsonl"
    captions.write_text('{"caption": "a red car"}\n')
    line = refused_in_process(
        features_main, ["--model", files / "truncated", "--captions", captions, "--output", tmp_path / "f"], capsys
    )
    assert "model.safetensors is truncated" in line and not (tmp_path / "f").exists()


def test_staging_folders_of_killed_runs_are_removed(tmp_path):
    import subprocess
    import sys

    from modeling_longclip.common.files import atomic_folder

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    killed = tmp_path / f".out.tmp-{dead.stdout.strip()}-0badc0de"  # what SIGKILL or a power cut leaves
    older = tmp_path / ".out.tmp-0badc0de"  # named before the pid was part of the name
    running = tmp_path / f".out.tmp-{os.getppid()}-c0ffee00"  # a run still going (its pid is alive): kept
    other = tmp_path / f".other.tmp-{dead.stdout.strip()}-0badc0de"  # another output's: not ours to touch
    unknown = tmp_path / ".out.tmp-notes"  # not a name atomic_folder gives
    for folder in (killed, older, running, other, unknown):
        folder.mkdir()
        (folder / "config.json").write_text("{}")
    with atomic_folder(tmp_path / "out") as staging:
        (staging / "weights").write_text("new")
    assert (tmp_path / "out" / "weights").read_text() == "new"
    assert not killed.exists() and not older.exists()
    assert running.exists() and other.exists() and unknown.exists()
