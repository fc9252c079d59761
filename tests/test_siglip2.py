"""LLM2CLIP's SigLIP2 release: key map, LoRA merge, un-normalized adapter, SigLIP preprocessing, refusals, loading."""

import json
import shutil

import numpy as np
import pytest
import torch
from llm_fixtures import tiny_llm_folder
from PIL import Image
from transformers import AutoModel, AutoProcessor

from modeling_longclip import LLM2CLIPModel
from modeling_longclip.common.clean_load import load_in_clean_process
from modeling_longclip.common.errors import CheckpointError, ConversionError
from modeling_longclip.converters.cli import convert_llm2clip_main
from modeling_longclip.converters.dual_tower import load_text_tower
from modeling_longclip.converters.llm2clip import convert_llm2clip
from modeling_longclip.converters.reference_llm import (
    reference_adapter,
    reference_bidirectional_llama,
    reference_mean_pool,
)
from modeling_longclip.converters.siglip2 import (
    ADAPTER_PREFIX,
    convert_llm2clip_siglip2,
    merge_lora_with_peft,
    reference_lora_merge,
    reference_siglip_image_features,
    reference_squash_pixels,
    reference_unnormalized_adapter,
    siglip_vision_config,
    timm_to_siglip,
)
from modeling_longclip.converters.synthetic import random_proclip_state_dict
from modeling_longclip.converters.synthetic_zoo import TINY_SIGLIP, random_siglip2_release, write_lora_adapter

TEXTS = ["a red car parked next to a green tree", "two dogs run across the beach"]


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """A random release (.pt, with logit_bias), a tiny Llama folder with a PEFT LoRA in a subfolder, and the
    converted folder, built once for the module."""
    root = tmp_path_factory.mktemp("siglip2")
    llm = tiny_llm_folder(root / "llm")
    write_lora_adapter(llm, llm / "llm2clip-lora")
    weights = random_siglip2_release(seed=3, logit_bias=True)
    torch.save({"state_dict": {f"module.{k}": v for k, v in weights.items()}, "epoch": 1}, root / "siglip2.pt")
    parity = convert_llm2clip(root / "siglip2.pt", llm, root / "out")  # the dispatch in the existing command
    return root, llm, weights, parity


def reference_text(weights, llm, inputs):
    tower = load_text_tower(llm)
    merged = reference_lora_merge(tower.state_dict, llm / "llm2clip-lora")
    hidden = reference_bidirectional_llama(merged, tower.config, inputs["input_ids"], inputs["attention_mask"])
    return reference_unnormalized_adapter(weights, ADAPTER_PREFIX, reference_mean_pool(hidden, inputs["pooling_mask"]))


def test_converted_folder_matches_the_references(release):
    root, llm, weights, parity = release
    assert parity.text_max_abs_diff <= 1e-5 and parity.image_max_abs_diff <= 1e-5
    assert any("logit_bias = -10.0000 not kept" in line for line in parity.lines())
    card = (root / "out" / "README.md").read_text()
    assert "SigLIP2 image tower" in card and "logit_bias = -10.0000 not kept" in card and "{{" not in card
    config = json.loads((root / "out" / "config.json").read_text())
    assert config["vision_tower"] == "siglip2" and config["use_visual_projection"] is False
    assert config["adapter_normalize_input"] is False and config["projection_dim"] == TINY_SIGLIP.width
    assert config["vision_config"]["hidden_act"] == "gelu" and config["vision_config"]["layer_norm_eps"] == 1e-6
    model = AutoModel.from_pretrained(root / "out", trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(root / "out", trust_remote_code=True)
    inputs = processor(text=TEXTS)
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        text = model.get_text_features(**inputs).pooler_output
        image = model.get_image_features(pixel_values=pixels).pooler_output
    torch.testing.assert_close(text, reference_text(weights, llm, inputs), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        image, reference_siglip_image_features(weights, pixels, TINY_SIGLIP.heads), rtol=1e-5, atol=1e-5
    )
    torch.testing.assert_close(model.logit_scale, weights["logit_scale"])


def test_clean_process_load_and_zero_shot(release, tmp_path, monkeypatch):
    root, llm, weights, _ = release
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    result = load_in_clean_process(root / "out", TEXTS)
    assert result["model_class"] == "LLM2CLIPModel" and result["leaked_modules"] == []
    assert result["model_module"].startswith("transformers_modules.")
    assert sorted(s["label"] for s in result["zero_shot_scores"]) == ["a car", "a cat", "a dog"]
    assert abs(sum(s["score"] for s in result["zero_shot_scores"]) - 1) < 1e-5
    pixels = torch.tensor(result["pixel_values"])
    expected = reference_siglip_image_features(weights, pixels, TINY_SIGLIP.heads)
    torch.testing.assert_close(torch.tensor(result["image_features"]), expected, rtol=1e-5, atol=1e-5)
    model = LLM2CLIPModel.from_pretrained(root / "out")
    torch.testing.assert_close(torch.tensor(result["encode_text"]), model.encode_text(TEXTS), rtol=0, atol=1e-5)


@pytest.mark.parametrize("mode", ["RGB", "L", "P"])
def test_pixels_equal_the_squash_resize(release, mode):
    processor = AutoProcessor.from_pretrained(release[0] / "out", trust_remote_code=True)
    rng = np.random.default_rng(7)
    image = Image.fromarray((rng.random((61, 97, 3)) * 255).astype("uint8")).convert(mode)
    ours = processor(images=[image])["pixel_values"][0].numpy()
    np.testing.assert_allclose(ours, reference_squash_pixels(image, 32), rtol=0, atol=1e-6)
    assert ours.shape == (3, 32, 32)  # squashed, not cropped: the whole 97x61 picture is in it


def test_lora_merge_matches_the_formula_and_changes_the_weights(release):
    _, llm, _, _ = release
    tower = load_text_tower(llm)
    base = {k: v.clone() for k, v in tower.state_dict.items()}
    reference = reference_lora_merge(tower.state_dict, llm / "llm2clip-lora")
    merged = merge_lora_with_peft(tower, llm / "llm2clip-lora")  # merges tower's tensors in place
    assert set(merged.state_dict) == set(base)
    for name, value in merged.state_dict.items():
        torch.testing.assert_close(value, reference[name], rtol=1e-5, atol=1e-6, msg=name)
    changed = [n for n in base if not torch.equal(base[n], merged.state_dict[n])]
    assert len(changed) == 7 * 2 and all(n.endswith("proj.weight") for n in changed)  # 7 projections x 2 layers


def test_the_decisions_are_visible_to_the_references(release):
    """Each fidelity choice changes the numbers by more than the converter's tolerance, so a wrong one would be caught."""
    _, _, weights, _ = release
    pooled = 3.0 * torch.randn(2, 64, generator=torch.Generator().manual_seed(0))
    plain = reference_unnormalized_adapter(weights, ADAPTER_PREFIX, pooled)
    assert (plain - reference_adapter(weights, ADAPTER_PREFIX, pooled)).abs().max() > 1e-2  # l2_norm=False matters
    from transformers import SiglipVisionConfig, SiglipVisionModel

    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    reference = reference_siglip_image_features(weights, pixels, TINY_SIGLIP.heads)
    for act, close in (("gelu", True), ("gelu_pytorch_tanh", False)):
        tower = SiglipVisionModel(
            SiglipVisionConfig(**{**siglip_vision_config(TINY_SIGLIP), "hidden_act": act})
        ).eval()
        names = tower.state_dict().keys()
        prefix = "" if "embeddings.patch_embedding.weight" in names else "vision_model."
        tower.load_state_dict({prefix + k: v for k, v in timm_to_siglip(weights, TINY_SIGLIP).items()}, strict=False)
        with torch.no_grad():
            diff = (tower(pixel_values=pixels).pooler_output - reference).abs().max().item()
        assert (diff <= 1e-5) == close, (act, diff)


def test_llm_weights_inside_the_checkpoint_are_used(tmp_path, release):
    _, llm, _, _ = release
    tower = load_text_tower(llm)
    inner = {k: v + 0.01 * torch.randn_like(v) for k, v in tower.state_dict.items()}  # differs from the folder
    weights = {**random_siglip2_release(seed=4), **{f"text.text.model.{k}": v for k, v in inner.items()}}
    torch.save(weights, tmp_path / "with-llm.pt")
    parity = convert_llm2clip_siglip2(tmp_path / "with-llm.pt", llm, tmp_path / "out")
    assert any("merged LLM stored in with-llm.pt" in line for line in parity.lines())
    model = LLM2CLIPModel.from_pretrained(tmp_path / "out")
    for name, value in model.text_model.state_dict().items():
        torch.testing.assert_close(value, inner[name], rtol=0, atol=0, msg=name)


def test_heads_override_and_the_command_line(tmp_path, release, capsys):
    _, llm, _, _ = release
    shape = TINY_SIGLIP.__class__(width=48, layers=1, heads=4, mlp_width=80, patch_size=8, image_size=16)
    torch.save(random_siglip2_release(shape, seed=6), tmp_path / "narrow.pt")
    assert (
        convert_llm2clip_main(
            ["--clip", str(tmp_path / "narrow.pt"), "--llm", str(llm), "--output", str(tmp_path / "x")]
        )
        == 2
    )
    assert "cannot tell the head count of a 48-wide SigLIP tower" in capsys.readouterr().err
    parity = convert_llm2clip_siglip2(tmp_path / "narrow.pt", llm, tmp_path / "out", num_heads=4)
    assert parity.image_max_abs_diff <= 1e-5
    assert LLM2CLIPModel.from_pretrained(tmp_path / "out").config.vision_config.num_attention_heads == 4
    torch.save(
        random_siglip2_release(seed=2), tmp_path / "so.pt", _use_new_zipfile_serialization=False
    )  # legacy format
    argv = [
        "--clip",
        str(tmp_path / "so.pt"),
        "--llm",
        str(llm),
        "--output",
        str(tmp_path / "cli"),
        "--dtype",
        "bfloat16",
    ]
    assert convert_llm2clip_main(argv) == 0
    assert "text features:  max |diff|" in capsys.readouterr().out
    assert LLM2CLIPModel.from_pretrained(tmp_path / "cli").dtype == torch.bfloat16


def test_refusals_leave_nothing_behind(tmp_path, release):
    _, llm, weights, _ = release
    out = tmp_path / "out"
    cases = {
        "truncated": (
            {k: v for k, v in weights.items() if k != "visual.trunk.blocks.1.mlp.fc2.bias"},
            "missing keys .*blocks.1.mlp.fc2.bias",
        ),
        "projection": (
            {**weights, "visual.head.proj.weight": torch.zeros(8, 128)},
            "unexpected keys .*visual.head.proj.weight",
        ),
        "adapter": (
            {**weights, f"{ADAPTER_PREFIX}5.weight": torch.zeros(96, 64), f"{ADAPTER_PREFIX}5.bias": torch.zeros(96)},
            "adapter maps to 96 dims but the tower's pooled output",
        ),
        "pos_embed": ({**weights, "visual.trunk.pos_embed": torch.zeros(1, 17, 128)}, "not a square grid"),
    }
    for name, (state_dict, message) in cases.items():
        torch.save(state_dict, tmp_path / f"{name}.pt")
        with pytest.raises(CheckpointError, match=message):
            convert_llm2clip(tmp_path / f"{name}.pt", llm, out)
    torch.save(weights, tmp_path / "good.pt")
    with pytest.raises(ConversionError, match="--external-llm would point at"):
        convert_llm2clip(tmp_path / "good.pt", llm, out, external_llm=True)  # the written weights are LoRA-merged
    bad_lora = tmp_path / "bad-lora"
    bad_lora.mkdir()
    config = json.loads((llm / "llm2clip-lora" / "adapter_config.json").read_text())
    (bad_lora / "adapter_config.json").write_text(json.dumps({**config, "use_dora": True}))
    with pytest.raises(CheckpointError, match="only plain LoRA adapters are supported.*use_dora"):
        convert_llm2clip_siglip2(tmp_path / "good.pt", llm, out, lora=bad_lora)
    (bad_lora / "config.json").write_text("{}")  # an adapter next to a model config, llm2vec's same-folder layout
    with pytest.raises(CheckpointError, match="holds a PEFT adapter_config.json"):
        convert_llm2clip(tmp_path / "good.pt", bad_lora, out)
    assert not out.exists() and not list(tmp_path.glob(".out*"))


@pytest.fixture(scope="module")
def plain_llm(release, tmp_path_factory):
    """The release fixture's LLM without the LoRA subfolder (the base model, as downloaded)."""
    folder = tmp_path_factory.mktemp("plain") / "llm"
    shutil.copytree(release[1], folder, ignore=shutil.ignore_patterns("llm2clip-lora"))
    return folder


def test_the_lora_in_the_release_is_merged(tmp_path, release, plain_llm):
    """The authors' text path reads its LoRA from a folder of the release (checkpoints/LLM2CLIP-Llama-3.1-8B), not of
    the base LLM: a release carrying it beside its weights converts with it merged."""
    _, llm, weights, _ = release
    shutil.copytree(llm / "llm2clip-lora", tmp_path / "release" / "checkpoints" / "LLM2CLIP-Llama-3.1-8B")
    torch.save(weights, tmp_path / "release" / "siglip2.pt")
    parity = convert_llm2clip(tmp_path / "release", plain_llm, tmp_path / "out")  # the release folder as --clip
    assert any("LLM2CLIP-Llama-3.1-8B merged by peft" in line for line in parity.lines())
    model = LLM2CLIPModel.from_pretrained(tmp_path / "out").eval()
    inputs = AutoProcessor.from_pretrained(tmp_path / "out", trust_remote_code=True)(text=TEXTS)
    with torch.no_grad():
        text = model.get_text_features(**inputs).pooler_output
    torch.testing.assert_close(text, reference_text(weights, llm, inputs), rtol=1e-5, atol=1e-5)


def test_no_lora_found_is_refused_in_one_line_unless_asked(tmp_path, release, plain_llm, capsys):
    _, llm, weights, _ = release
    torch.save(weights, tmp_path / "siglip2.pt")
    argv = ["--clip", str(tmp_path / "siglip2.pt"), "--llm", str(plain_llm), "--output", str(tmp_path / "out")]
    assert convert_llm2clip_main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "no PEFT LoRA for the SigLIP2 release" in error
    assert f"looked in {tmp_path} and two levels of subfolders and the subfolders of {plain_llm}" in error
    assert "--lora PATH, or --no-lora" in error and not (tmp_path / "out").exists()

    assert convert_llm2clip_main([*argv, "--no-lora"]) == 0
    assert "without the release's LoRA (--no-lora)" in capsys.readouterr().out
    unadapted = LLM2CLIPModel.from_pretrained(tmp_path / "out")
    for name, value in load_text_tower(plain_llm).state_dict.items():
        torch.testing.assert_close(unadapted.text_model.state_dict()[name], value, rtol=0, atol=0, msg=name)

    assert convert_llm2clip_main([*argv[:-1], str(tmp_path / "given"), "--lora", str(llm / "llm2clip-lora")]) == 0
    given = LLM2CLIPModel.from_pretrained(tmp_path / "given").eval()
    inputs = AutoProcessor.from_pretrained(tmp_path / "given", trust_remote_code=True)(text=TEXTS)
    with torch.no_grad():
        text = given.get_text_features(**inputs).pooler_output
    torch.testing.assert_close(text, reference_text(weights, llm, inputs), rtol=1e-5, atol=1e-5)


def test_lora_options_that_cannot_apply_are_refused(tmp_path, release, plain_llm, capsys):
    _, llm, weights, _ = release
    (tmp_path / "two" / "a").mkdir(parents=True)
    shutil.copytree(llm / "llm2clip-lora", tmp_path / "two" / "a" / "lora")
    shutil.copytree(llm / "llm2clip-lora", tmp_path / "two" / "b")
    torch.save(weights, tmp_path / "two" / "siglip2.pt")
    with pytest.raises(CheckpointError, match=r"several PEFT adapters \['a/lora', 'b'\]; pass --lora PATH"):
        convert_llm2clip(tmp_path / "two" / "siglip2.pt", plain_llm, tmp_path / "out")
    with pytest.raises(ConversionError, match="--lora and --no-lora contradict"):
        convert_llm2clip(tmp_path / "two" / "siglip2.pt", plain_llm, tmp_path / "out", lora=llm / "x", no_lora=True)
    merged_inside = {**weights, **{f"text.text.model.{k}": v for k, v in load_text_tower(llm).state_dict.items()}}
    torch.save(merged_inside, tmp_path / "merged.pt")
    with pytest.raises(ConversionError, match="carries the merged LLM under `text.text.model.`"):
        convert_llm2clip(tmp_path / "merged.pt", llm, tmp_path / "out", lora=llm / "llm2clip-lora")
    proclip_like = tmp_path / "other.pt"
    torch.save(random_proclip_state_dict(seed=1), proclip_like)
    argv = ["--clip", str(proclip_like), "--llm", str(llm), "--output", str(tmp_path / "out"), "--num_heads", "4"]
    assert convert_llm2clip_main([*argv, "--no-lora"]) == 2
    assert "--no-lora / --num-heads: only for LLM2CLIP's SigLIP2 release" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_every_converter_option_has_a_flag():
    """Each keyword a converter function takes is reachable from its command (dashed spelling)."""
    import inspect

    from modeling_longclip.converters import cli
    from modeling_longclip.converters.longclip import convert_longclip
    from modeling_longclip.converters.proclip import convert_proclip
    from modeling_longclip.converters.zoo import main as zoo_main
    from modeling_longclip.converters.zoo import run_zoo

    renamed = {"output_format": "--format", "online": "--offline"}  # --offline sets online=False
    commands = [
        (convert_longclip, cli.convert_longclip_main),
        (convert_llm2clip, cli.convert_llm2clip_main),
        (convert_llm2clip_siglip2, cli.convert_llm2clip_main),
        (convert_proclip, cli.convert_proclip_main),
        (run_zoo, zoo_main),
    ]
    for function, main in commands:
        help_text = _help(main)
        for name in inspect.signature(function).parameters:
            assert renamed.get(name, "--" + name.replace("_", "-")) in help_text, (function.__name__, name)


def _help(main) -> str:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        main(["--help"])
    return out.getvalue()
