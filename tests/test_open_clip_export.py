"""`longclip-export open_clip`: the real open_clip (3.x) loads the export through `local-dir:` and `hf-hub:` and gives
the folder's token ids at 248 tokens, text features and image features (real photos) at fp32 tolerance; the transform
it builds has the folder processor's settings. Families open_clip cannot hold, existing outputs and folders that are
not models are refused in one line with nothing written.

open_clip imports torchvision for its transforms, which cannot be installed beside this CPU torch: where it is
missing, `import_open_clip` lets open_clip import with a stand-in torchvision whose transform classes only record their
settings (so the transform is checked by its settings, not run); the model and tokenizer code is open_clip's own.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from cli_runner import run_console_script
from conftest import TINY_IMAGE_SIZE
from family_folders import convert_families
from PIL import Image
from skimage import data
from test_text_cleaning import HARD_CAPTIONS
from transformers import AutoModel, AutoProcessor, CLIPConfig, CLIPModel, CLIPProcessor

from modeling_longclip.converters.clip_preprocessing import build_clip_tokenizer, clip_image_processor
from modeling_longclip.export.cli import main as export_main
from modeling_longclip.export.open_clip import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    OpenCLIPExportError,
    export_open_clip,
    import_open_clip,
    transform_settings,
)

TOLERANCE = 1e-5  # fp32; measured about 1.2e-6 on these folders
RESAMPLE = {3: "bicubic", 2: "bilinear"}
CAPTIONS = [
    *HARD_CAPTIONS[:6],
    "a photo of a cat",
    " ".join(["a red bicycle by the wall"] * 12),
    " ".join(["a red bicycle by the wall"] * 60),
    HARD_CAPTIONS[-1],
]


@pytest.fixture(scope="module")
def open_clip():
    try:
        return import_open_clip()
    except OpenCLIPExportError as error:
        pytest.skip(str(error))


def stock_clip_folder(root):
    """A stock transformers CLIPModel folder as the Hub has them: 77 positions, exact GELU (LAION-style), the legacy
    eos_token_id 2 (pooling at the largest id), transformers' own tokenizer and image processor."""
    torch.manual_seed(4)
    tower = dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2, hidden_act="gelu")
    config = CLIPConfig(
        text_config={**tower, "max_position_embeddings": 77, "eos_token_id": 2},
        vision_config={**tower, "image_size": TINY_IMAGE_SIZE, "patch_size": 8},
        projection_dim=32,
    )
    CLIPModel(config).eval().save_pretrained(root / "stock")
    processor = CLIPProcessor(clip_image_processor(TINY_IMAGE_SIZE, "stock"), build_clip_tokenizer(77))
    processor.save_pretrained(root / "stock")
    return root / "stock"


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = convert_families(tmp_path_factory.mktemp("open_clip"))
    stock_clip_folder(root)
    return root


def refusal(run) -> str:
    """The one `error:` line a refused command printed (other lines on stderr are library notices, not ours)."""
    lines = [line for line in run.stderr.splitlines() if line.startswith("error: ")]
    assert run.returncode == 2 and len(lines) == 1 and "Traceback" not in run.stderr, run.stderr
    assert run.stderr.rstrip("\n").splitlines()[-1] == lines[0]
    return lines[0]


def refusal_in_process(capsys, *args) -> str:
    """`longclip-export ARGS` called in this process (the console script's own main): exit 2 and one error line."""
    assert export_main([str(a) for a in args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err.strip()


def photos():
    return [Image.fromarray(data.astronaut()), Image.fromarray(data.chelsea()), Image.fromarray(data.coffee())]


def folder_ids(processor, captions, context):
    encoded = processor.tokenizer(
        captions, padding="max_length", truncation=True, max_length=context, return_tensors="pt"
    )
    return encoded["input_ids"], encoded["attention_mask"]


def assert_open_clip_matches_the_folder(open_clip, folder, output):
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    theirs, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{output}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{output}")
    context = model.config.text_config.max_position_embeddings
    assert tokenizer.context_length == context and theirs.context_length == context

    # transformers' own CLIPTokenizer (stock and --format clip folders) skips ftfy / html cleaning, so those folders
    # get the captions it tokenizes like the original; Long-CLIP folders get the hard ones too
    remote_code = folder.name == "longclip"
    plain = CAPTIONS if remote_code else [c for c in CAPTIONS if not any(ord(ch) > 127 or ch == "&" for ch in c)]
    ids, mask = folder_ids(processor, plain, context)
    their_ids = tokenizer(plain)
    assert torch.equal(their_ids * mask, ids * mask) and not (their_ids * (1 - mask)).any()
    assert mask.sum(1).max() == context  # a caption was cut at the full context
    pixels = processor(images=photos(), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        text = model.get_text_features(input_ids=ids, attention_mask=mask).pooler_output
        image = model.get_image_features(pixel_values=pixels).pooler_output
        np.testing.assert_allclose(theirs.encode_text(their_ids).numpy(), text.numpy(), atol=TOLERANCE, rtol=0)
        np.testing.assert_allclose(theirs.encode_image(pixels).numpy(), image.numpy(), atol=TOLERANCE, rtol=0)
        assert torch.allclose(theirs.logit_scale, model.logit_scale)

    # the transform open_clip builds from the config, against the processor's own settings
    image_processor = processor.image_processor
    short = image_processor.size["shortest_edge"]
    crop = image_processor.crop_size
    assert transform_settings(preprocess) == {
        "resize": short,
        "interpolation": RESAMPLE[image_processor.resample],
        "crop": [crop["height"], crop["width"]],
        "mean": pytest.approx(list(image_processor.image_mean)),
        "std": pytest.approx(list(image_processor.image_std)),
    }


@pytest.mark.parametrize("family", ["longclip", "clip", "stock"])
def test_open_clip_gives_the_folders_ids_and_features(open_clip, folders, tmp_path, family):
    output = tmp_path / f"{family}-open_clip"
    if family == "longclip":  # the command a user types
        run = run_console_script("longclip-export", "open_clip", folders / family, output)
        assert run.returncode == 0, run.stderr
        assert "open_clip text features vs the folder" in run.stdout and f"wrote {output}" in run.stdout
    else:
        export_open_clip(folders / family, output)
    assert sorted(p.name for p in output.iterdir()) == [CONFIG_NAME, WEIGHTS_NAME]
    config = json.loads((output / CONFIG_NAME).read_text())
    assert config["model_cfg"]["text_cfg"]["context_length"] == (77 if family == "stock" else 248)
    assert config["model_cfg"]["quick_gelu"] is (family != "stock")
    assert config["preprocess_cfg"]["resize_mode"] == "shortest"
    assert_open_clip_matches_the_folder(open_clip, folders / family, output)


def test_hf_hub_loads_the_uploaded_files(open_clip, folders, tmp_path):
    """What `hf-hub:owner/name` reads once the directory is uploaded: the same two files from the Hub cache."""
    output = tmp_path / "exported"
    export_open_clip(folders / "longclip", output)
    commit = "0" * 40
    repo = tmp_path / "hub-cache" / "models--me--longclip-open_clip"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(output, repo / "snapshots" / commit)
    cache = str(tmp_path / "hub-cache")
    from_hub = open_clip.create_model("hf-hub:me/longclip-open_clip", cache_dir=cache).eval()
    local = open_clip.create_model(f"local-dir:{output}").eval()
    assert from_hub.state_dict().keys() == local.state_dict().keys()
    assert all(torch.equal(from_hub.state_dict()[k], v) for k, v in local.state_dict().items())
    tokenizer = open_clip.get_tokenizer("hf-hub:me/longclip-open_clip", cache_dir=cache)
    assert tokenizer.context_length == 248


def test_a_family_open_clip_cannot_hold_is_refused_in_one_line(folders, tmp_path, capsys):
    output = tmp_path / "out"
    line = refusal(run_console_script("longclip-export", "open_clip", folders / "llm2clip", output))
    assert "open_clip cannot express a llm2clip model" in line and "adapter" in line
    line = refusal_in_process(capsys, "open_clip", folders / "proclip", output)
    assert "open_clip cannot express a proclip model" in line
    assert not output.exists() and not list(tmp_path.glob(".out*"))


def test_existing_output_and_non_model_folders_are_refused(folders, tmp_path, capsys):
    output = tmp_path / "out"
    output.mkdir()
    (output / "keep.txt").write_text("mine")
    assert "--overwrite" in refusal_in_process(capsys, "open_clip", folders / "longclip", output)
    assert [p.name for p in output.iterdir()] == ["keep.txt"]
    not_a_model = tmp_path / "photos"
    not_a_model.mkdir()
    line = refusal_in_process(capsys, "open_clip", not_a_model, tmp_path / "out2")
    assert "not a model folder (no config.json)" in line
    (not_a_model / "config.json").write_text('{"model_type": "bert"}')  # a model, but no CLIP
    line = refusal_in_process(capsys, "open_clip", not_a_model, tmp_path / "out2")
    assert "model_type 'bert'; the open_clip export takes longclip, clip folders" in line
    assert not (tmp_path / "out2").exists()
    with pytest.raises(SystemExit) as exit_status:  # a usage error, as argparse exits: one line, status 2
        export_main(["jax", str(folders / "longclip"), str(tmp_path / "out3")])
    assert exit_status.value.code == 2 and "invalid choice: 'jax'" in capsys.readouterr().err


def test_missing_open_clip_is_named_with_the_command_that_installs_it(monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "open_clip" else find_spec(name, *a)
    )
    with pytest.raises(OpenCLIPExportError, match="pip install --no-deps open-clip-torch"):
        import_open_clip()
