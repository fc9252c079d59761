"""The LLM text tower of LLM2CLIP / ProCLIP in 8 and 4 bits (common/quantization.py): only the text tower is quantized
(the image tower, projection and adapter keep their weights bit for bit), the features stay close to full precision,
a feature cache made with a quantized tower belongs to the same model, and a backend that is missing or cannot run is
refused in one line naming what to install. The backends' tests run where torchao / bitsandbytes are installed: in the
suite's own environment they are not (torchao slows every transformers import), so the last test runs this file again
in scripts/quantization_venv.sh's virtualenv (LONGCLIP_QUANTIZATION_PYTHON, set by scripts/test.sh)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from importlib.util import find_spec
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from cli_runner import run_console_script
from llm_fixtures import minilm_folder, tiny_image_processor, tiny_llama_config, tiny_llm2clip_config, tiny_llm_folder
from safetensors import safe_open
from test_llm2clip import write_released_clip_part

from modeling_longclip import LLM2CLIPModel, LLM2CLIPProcessor, ProCLIPConfig, ProCLIPModel
from modeling_longclip.common import quantization
from modeling_longclip.common.quantization import (
    KEPT_MODULES,
    QuantizationError,
    build_quantization_config,
    choose_backend,
    load_quantized_model,
    storage_bytes,
    text_tower_quantization_config,
)
from modeling_longclip.converters.llm2clip import convert_llm2clip
from modeling_longclip.features.extraction import check_compute_dtype
from modeling_longclip.features.fingerprint import model_fingerprint
from modeling_longclip.features.store import FeatureCacheError

TEXTS = [
    "a red car parked next to a green tree",
    "two dogs run across the beach while a man throws a ball into the waves",
    "a bowl of fruit",
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A converted LLM2CLIP folder with a tiny random Llama text tower."""
    root = tmp_path_factory.mktemp("quant")
    llm = tiny_llm_folder(root / "llm")
    from transformers import AutoTokenizer

    torch.manual_seed(1)
    vocab = len(AutoTokenizer.from_pretrained(llm))
    write_released_clip_part(root / "released", LLM2CLIPModel(tiny_llm2clip_config(tiny_llama_config(vocab))))
    convert_llm2clip(root / "released", llm, root / "llm2clip")
    return root / "llm2clip"


@pytest.fixture(scope="module")
def full_precision(folder):
    model = LLM2CLIPModel.from_pretrained(folder).eval()
    return model, model.get_processor()


def text_features(model, processor):
    inputs = processor(text=TEXTS, return_tensors="pt")
    with torch.no_grad():
        return model.get_text_features(**inputs).pooler_output.float()


def quantized_linear_names(model) -> set[str]:
    """Linear layers whose weight is no plain float tensor (torchao tensor subclass or bitsandbytes parameter)."""
    return {
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear)
        and (type(module.weight) not in (torch.Tensor, torch.nn.Parameter) or not module.weight.is_floating_point())
    }


def assert_only_the_text_tower_is_quantized(quantized, reference):
    linears = {n for n, m in reference.named_modules() if isinstance(m, torch.nn.Linear)}
    text_linears = {n for n in linears if n.startswith("text_model.")}
    assert quantized_linear_names(quantized) == text_linears
    kept = {k: v for k, v in quantized.state_dict().items() if k.split(".")[0] in KEPT_MODULES}
    assert kept and all(torch.equal(v, reference.state_dict()[k]) for k, v in kept.items())  # bit for bit


def test_every_module_but_the_text_tower_is_left_out():
    for config_class, model_class in ((None, LLM2CLIPModel), (ProCLIPConfig, ProCLIPModel)):
        config = tiny_llm2clip_config(tiny_llama_config(64))
        if config_class is not None:
            config = config_class(**config.to_dict())
        children = {name for name, _ in model_class(config).named_children()}
        assert children - {"text_model"} == set(KEPT_MODULES)  # a new top-level module must be listed or quantized
    if quantization.installed_version("torchao"):  # TorchAoConfig itself needs torchao
        assert build_quantization_config("8bit", "torchao").modules_to_not_convert == list(KEPT_MODULES)
    eight = build_quantization_config("8bit", "bitsandbytes")
    four = build_quantization_config("4bit", "bitsandbytes", torch.bfloat16)
    assert eight.load_in_8bit and eight.llm_int8_skip_modules == list(KEPT_MODULES)
    assert four.load_in_4bit and four.llm_int8_skip_modules == list(KEPT_MODULES)
    assert (four.bnb_4bit_quant_type, four.bnb_4bit_use_double_quant, four.bnb_4bit_compute_dtype) == (
        "nf4",
        True,
        torch.bfloat16,
    )


def test_backend_choice():
    assert choose_backend("8bit", "cuda") == "bitsandbytes"
    assert choose_backend("4bit", "cuda:1") == "bitsandbytes"
    assert choose_backend("8bit", "cpu") == "torchao"
    assert choose_backend("4bit", "cpu") == "bitsandbytes"
    assert choose_backend("8bit", "cpu", "bitsandbytes") == "bitsandbytes"
    with pytest.raises(QuantizationError, match="use --quantization-backend bitsandbytes"):
        choose_backend("4bit", "cpu", "torchao")
    with pytest.raises(QuantizationError, match="choose one of 8bit, 4bit"):
        choose_backend("2bit", "cpu")


def test_a_backend_that_cannot_run_is_refused_naming_what_to_install(monkeypatch):
    monkeypatch.setattr(quantization, "installed_version", lambda package: None)
    with pytest.raises(QuantizationError, match=r"needs the bitsandbytes package: pip install bitsandbytes$"):
        text_tower_quantization_config("4bit", "cpu")
    with pytest.raises(QuantizationError, match=r"pip install torchao$"):
        text_tower_quantization_config("8bit", "cpu")
    monkeypatch.setattr(quantization, "installed_version", lambda package: "0.40.0")
    with pytest.raises(QuantizationError, match=r"bitsandbytes >= 0.46.1 \(installed: 0.40.0\)"):
        text_tower_quantization_config("8bit", "cpu", "bitsandbytes")
    monkeypatch.setattr(quantization, "installed_version", lambda package: "0.50.0")
    monkeypatch.setitem(sys.modules, "bitsandbytes", types.SimpleNamespace(supported_torch_devices={"cuda"}))
    with pytest.raises(QuantizationError, match="no kernels for cpu .* needs a CUDA GPU"):
        text_tower_quantization_config("4bit", "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(QuantizationError, match="needs a CUDA GPU"):
            text_tower_quantization_config("8bit", "cuda")


def test_torchao_int8_quantizes_only_the_text_tower(folder, full_precision):
    pytest.importorskip("torchao")
    reference, processor = full_precision
    model, quantized_processor = load_quantized_model(folder, "8bit", "cpu")
    assert type(model) is LLM2CLIPModel and model.config.quantization_config.quant_method == "torchao"
    assert_only_the_text_tower_is_quantized(model, reference)
    cosine = F.cosine_similarity(text_features(model, quantized_processor), text_features(reference, processor))
    assert cosine.min() > 0.999
    assert storage_bytes(model.text_model) < 0.5 * storage_bytes(reference.text_model)
    image = torch.rand(2, 3, 32, 32)
    with torch.no_grad():  # the image tower was not touched
        torch.testing.assert_close(
            model.get_image_features(pixel_values=image).pooler_output,
            reference.get_image_features(pixel_values=image).pooler_output,
            rtol=0,
            atol=0,
        )


@pytest.mark.parametrize("bits", ["8bit", "4bit"])
def test_bitsandbytes_quantizes_only_the_text_tower(folder, full_precision, bits):
    pytest.importorskip("bitsandbytes", reason="bitsandbytes is not installed (pip install bitsandbytes)")
    reference, processor = full_precision
    try:
        model, _ = load_quantized_model(folder, bits, "cpu", "bitsandbytes")
    except QuantizationError as error:  # a bitsandbytes build without CPU kernels
        pytest.skip(str(error))
    assert_only_the_text_tower_is_quantized(model, reference)
    cosine = F.cosine_similarity(text_features(model, processor), text_features(reference, processor))
    assert cosine.min() > (0.99 if bits == "8bit" else 0.9)
    assert storage_bytes(model.text_model) < 0.6 * storage_bytes(reference.text_model)


def test_real_minilm_tower_in_int8_keeps_its_embeddings(tmp_path):
    """all-MiniLM-L6-v2 as the text tower: torchao int8 keeps its pooled embeddings at cosine > 0.999."""
    pytest.importorskip("torchao")
    from transformers import AutoModel, AutoTokenizer

    from modeling_longclip.export.folder import write_model_folder

    encoder, tokenizer = AutoModel.from_pretrained(minilm_folder()), AutoTokenizer.from_pretrained(minilm_folder())
    model = LLM2CLIPModel(tiny_llm2clip_config(encoder.config, projection_dim=16)).eval()
    model.text_model.load_state_dict(encoder.state_dict())
    processor = LLM2CLIPProcessor(
        tiny_image_processor(), tokenizer, text_template="{caption}", pooling_scope="all", padding_side="right"
    )
    write_model_folder(model, processor, tmp_path / "minilm", card="# test\n")
    quantized, _ = load_quantized_model(tmp_path / "minilm", "8bit", "cpu")
    inputs = processor(text=TEXTS, return_tensors="pt")
    with torch.no_grad():
        cosine = F.cosine_similarity(quantized.encode_llm(**inputs), model.encode_llm(**inputs))
    assert cosine.min() > 0.999


def test_quantized_features_belong_to_the_same_model(folder, full_precision):
    """The cache fingerprint of a quantized tower is read from the full-precision weights it was made from."""
    pytest.importorskip("torchao")
    reference, processor = full_precision
    quantized, _ = load_quantized_model(folder, "8bit", "cpu")
    assert model_fingerprint(quantized, processor) == model_fingerprint(reference, processor)
    bf16 = LLM2CLIPModel.from_pretrained(folder, dtype=torch.bfloat16)
    assert (
        model_fingerprint(bf16, processor)["text_weights"] == model_fingerprint(reference, processor)["text_weights"]
    )


def test_extraction_command_with_a_quantized_tower(folder, full_precision, tmp_path):
    pytest.importorskip("torchao")
    captions = tmp_path / "captions.jsonl"
    captions.write_text("".join(json.dumps({"caption": t}) + "\n" for t in TEXTS))
    from modeling_longclip.features import cli

    args = ["--model", str(folder), "--captions", str(captions), "--output", str(tmp_path / "cache")]
    assert cli.main([*args, "--quantize", "8bit", "--device", "cpu", "--no-progress"]) == 0
    shard = tmp_path / "cache" / json.loads((tmp_path / "cache" / "index.json").read_text())["shards"][0]
    with safe_open(str(shard), framework="pt") as stored:
        assert "torchao Int8WeightOnlyConfig" in stored.metadata()["compute_dtype"]
        rows = stored.get_tensor(next(iter(stored.keys())))
    reference, processor = full_precision
    inputs = processor(text=TEXTS, return_tensors="pt")
    with torch.no_grad():
        expected = reference.encode_llm(**inputs)
    assert F.cosine_similarity(rows, expected).min() > 0.999  # rows in the order the captions came
    more = tmp_path / "more.jsonl"
    more.write_text(json.dumps({"caption": "a lighthouse"}) + "\n")
    args[3] = str(more)  # the cache is continued only by a tower quantized the same way
    assert cli.main([*args, "--device", "cpu", "--no-progress"]) == 2
    assert cli.main([*args, "--quantize", "8bit", "--device", "cpu", "--no-progress"]) == 0
    assert len(json.loads((tmp_path / "cache" / "index.json").read_text())["keys"]) == len(TEXTS) + 1


def test_a_cache_holds_the_rows_of_one_quantization(tmp_path):
    index = {"keys": {"a": 0}, "compute_dtype": "float32, text tower torchao Int8WeightOnlyConfig"}
    check_compute_dtype(tmp_path, index, "float32, text tower torchao Int8WeightOnlyConfig")
    check_compute_dtype(tmp_path, index, "float32", check_quantization=False)  # before the model loads: dtype only
    with pytest.raises(
        FeatureCacheError, match="with the text tower torchao Int8WeightOnlyConfig, this run's is in full"
    ):
        check_compute_dtype(tmp_path, index, "float32")
    with pytest.raises(FeatureCacheError, match="computed in float32, this run would compute in bfloat16"):
        check_compute_dtype(tmp_path, index, "bfloat16, text tower torchao Int8WeightOnlyConfig")


def test_extraction_refusals_write_nothing(folder, tmp_path, monkeypatch):
    from modeling_longclip.features import cli

    captions = tmp_path / "captions.jsonl"
    captions.write_text(json.dumps({"caption": "a cat"}) + "\n")
    args = ["--model", str(folder), "--captions", str(captions), "--output", str(tmp_path / "cache"), "--no-progress"]
    monkeypatch.setattr(quantization, "installed_version", lambda package: None)
    assert cli.main([*args, "--quantize", "4bit", "--device", "cpu"]) == 2
    assert not (tmp_path / "cache").exists()
    longclip = tmp_path / "longclip"
    longclip.mkdir()
    (longclip / "config.json").write_text(json.dumps({"model_type": "longclip"}))
    with pytest.raises(QuantizationError, match="applies to the LLM text tower of LLM2CLIP / ProCLIP"):
        quantization.check_quantizable_folder(longclip)


def test_missing_bitsandbytes_from_the_command_line(folder, tmp_path):
    if quantization.installed_version("bitsandbytes") is not None:
        pytest.skip("bitsandbytes is installed here")
    captions = tmp_path / "captions.jsonl"
    captions.write_text(json.dumps({"caption": "a cat"}) + "\n")
    run = run_console_script(
        "longclip-extract-text-features",
        *("--model", folder, "--captions", captions, "--output", tmp_path / "cache"),
        *("--quantize", "4bit", "--device", "cpu"),
    )
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1] == (
        "error: --quantize 4bit (bitsandbytes) needs the bitsandbytes package: pip install bitsandbytes"
    )
    assert not (tmp_path / "cache").exists()


def test_the_readme_quantized_extraction_runs_as_written(folder, tmp_path, monkeypatch):
    pytest.importorskip("bitsandbytes", reason="bitsandbytes is not installed (pip install bitsandbytes)")
    from test_readme_commands import QUANTIZED_TOWER, as_written, readme_commands

    from modeling_longclip.features import cli

    complete = [c for c in readme_commands() if QUANTIZED_TOWER.search(c) and "..." not in c]
    assert complete, "the README shows no complete --quantize command"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "LLM2CLIP-L-336-hf").symlink_to(folder)
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps({"caption": t}) + "\n" for t in TEXTS))
    for command in complete:
        words = as_written(command)
        assert words[0] == "longclip-extract-text-features", command
        assert cli.main([*words[1:], "--no-progress"]) == 0, command
    assert len(json.loads((tmp_path / "features" / "index.json").read_text())["keys"]) == len(TEXTS)


@pytest.mark.skipif(find_spec("torchao") is not None, reason="torchao is installed here: the tests above ran with it")
def test_the_backend_tests_pass_where_the_backends_are_installed():
    python = os.environ.get("LONGCLIP_QUANTIZATION_PYTHON")
    if not python:
        pytest.skip("LONGCLIP_QUANTIZATION_PYTHON is not set (scripts/test.sh builds that virtualenv and sets it)")
    run = subprocess.run(
        [python, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", __file__],
        cwd=Path(__file__).parent.parent,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    skipped = [line for line in run.stdout.splitlines() if line.startswith("SKIPPED")]
    # there, only the tests that need a backend to be missing are skipped
    assert all("is installed here" in line for line in skipped), skipped
