"""`longclip-export immich`: the layout immich's machine-learning server loads, read here the way immich reads it
(written from immich_ml's clip/textual.py, clip/visual.py and transforms.py: `tokenizers` with padding and truncation to
config.json's context_length and tokenizer_config.json's pad token, onnxruntime, PIL resize + floored centre crop +
normalize from preprocess_cfg.json), gives the folder's PyTorch embeddings on captions past 77 and 248 tokens and on
real photos; what immich's front end does differently (text cleaning, crop rounding) is measured by
benchmarks/immich_vs_original.py, run here on tiny shapes. Refusals leave nothing written."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_runner import run_console_script
from family_folders import convert_families
from PIL import Image
from skimage import data
from test_open_clip_export import refusal, refusal_in_process
from transformers import AutoModel, AutoProcessor, AutoTokenizer

from modeling_longclip.export import immich as immich_export
from modeling_longclip.export.immich import ImmichExportError, export_immich

onnx = pytest.importorskip("onnx", reason="onnx is not installed (CI's test extra has it)")
onnxruntime = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (CI's test extra has it)")
tokenizers = pytest.importorskip("tokenizers")

TOLERANCE = 1e-5  # normalized embeddings, fp32; measured 3e-7 at most on these folders
CAPTIONS = [
    "a photo of a cat",
    "Two dogs  run\tacross the BEACH while a man throws a ball",
    " ".join(["a red bicycle leans against a stone wall in a narrow street"] * 8),  # past 77 tokens
    " ".join(["a lighthouse on the rocks at the far end of the bay"] * 30),  # past 248 tokens: truncated
]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return convert_families(tmp_path_factory.mktemp("immich"))


def read_like_immich(directory: Path):
    """(embed text, embed image) as immich's OpenClipTextualEncoder / OpenClipVisualEncoder do."""
    config = json.loads((directory / "config.json").read_text())
    context = config["text_cfg"].get("context_length", 77)
    pad_token = json.loads((directory / "textual" / "tokenizer_config.json").read_text())["pad_token"]
    tokenizer = tokenizers.Tokenizer.from_file(str(directory / "textual" / "tokenizer.json"))
    tokenizer.enable_padding(length=context, pad_token=pad_token, pad_id=tokenizer.token_to_id(pad_token))
    tokenizer.enable_truncation(max_length=context)
    textual = onnxruntime.InferenceSession(str(directory / "textual" / "model.onnx"))
    visual = onnxruntime.InferenceSession(str(directory / "visual" / "model.onnx"))
    cfg = json.loads((directory / "visual" / "preprocess_cfg.json").read_text())
    size = cfg["size"][0] if isinstance(cfg["size"], list) else cfg["size"]
    resample = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}[cfg["interpolation"]]
    mean, std = np.array(cfg["mean"], dtype=np.float32), np.array(cfg["std"], dtype=np.float32)

    def text(caption: str):
        ids = np.array([tokenizer.encode(" ".join(caption.split())).ids], dtype=np.int32)
        return ids, textual.run(None, {"text": ids})[0][0]

    def image(photo: Image.Image):
        photo = photo.convert("RGB")
        w, h = photo.size
        photo = photo.resize((size, int(h / w * size)) if w < h else (int(w / h * size), size), resample=resample)
        left, top = int(photo.size[0] / 2 - size / 2), int(photo.size[1] / 2 - size / 2)
        array = np.asarray(photo.crop((left, top, left + size, top + size)), dtype=np.float32) / 255.0
        array = (array * (1.0 / std) - mean / std).transpose(2, 0, 1)[None]
        return visual.run(None, {"image": array})[0][0]

    return text, image


def graph_io(path: Path):
    graph = onnx.load(str(path)).graph
    shapes = {
        v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in [*graph.input, *graph.output]
    }
    types = {v.name: v.type.tensor_type.elem_type for v in graph.input}
    return [i.name for i in graph.input], [o.name for o in graph.output], shapes, types


@pytest.mark.parametrize("family", ["longclip", "clip"])
def test_immich_reads_the_folders_embeddings(folders, tmp_path, family):
    output = tmp_path / "LongCLIP-immich"
    if family == "longclip":
        run = run_console_script("longclip-export", "immich", folders / family, output)
        assert run.returncode == 0, run.stderr
        assert "immich path (tokenizers + onnxruntime) vs the original tokenization" in run.stdout
    else:
        export_immich(folders / family, output)
    files = sorted(str(p.relative_to(output)) for p in output.rglob("*") if p.is_file())
    assert files == [
        "config.json",
        "textual/model.onnx",
        "textual/tokenizer.json",
        "textual/tokenizer_config.json",
        "visual/model.onnx",
        "visual/preprocess_cfg.json",
    ]
    config = json.loads((output / "config.json").read_text())
    assert config["embed_dim"] == 32 and config["text_cfg"]["context_length"] == 248
    inputs, outputs, shapes, types = graph_io(output / "textual" / "model.onnx")
    assert inputs == ["text"] and outputs == ["embedding"] and shapes["text"][1] == 248
    assert types["text"] == onnx.TensorProto.INT32
    inputs, outputs, shapes, types = graph_io(output / "visual" / "model.onnx")
    assert inputs == ["image"] and shapes["image"][1:] == [3, 32, 32] and types["image"] == onnx.TensorProto.FLOAT
    assert json.loads((output / "visual" / "preprocess_cfg.json").read_text())["resize_mode"] == "shortest"

    model = AutoModel.from_pretrained(folders / family, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(folders / family, trust_remote_code=True)
    embed_text, embed_image = read_like_immich(output)
    for caption in CAPTIONS:
        ids, got = embed_text(caption)
        ours = processor.tokenizer([caption], truncation=True, max_length=248, return_tensors="pt")
        n = ours["input_ids"].shape[1]
        assert np.array_equal(ids[0, :n], ours["input_ids"][0].numpy()) and ids.shape == (1, 248)
        with torch.no_grad():
            expected = torch.nn.functional.normalize(model.get_text_features(**ours).pooler_output, dim=-1)[0]
        np.testing.assert_allclose(got, expected.numpy(), atol=TOLERANCE, rtol=0)
    assert n == 248  # the last caption was cut at the full context
    # real photos, sized so that immich's floored crop corner equals the original's rounded one (an even slack: 96x64
    # -> 48x32 at 32 px); odd slacks, where the two differ by a pixel, are measured by the benchmark below
    for photo in (data.astronaut(), data.coffee(), data.chelsea(), data.camera()):
        image = Image.fromarray(photo)
        width, height = image.size
        if width != height:
            image = image.resize((96, 64) if width > height else (64, 96), Image.Resampling.BICUBIC)
        with torch.no_grad():
            pixels = processor(images=[image], return_tensors="pt")["pixel_values"]
            expected = torch.nn.functional.normalize(
                model.get_image_features(pixel_values=pixels).pooler_output, dim=-1
            )
        np.testing.assert_allclose(embed_image(image), expected[0].numpy(), atol=TOLERANCE, rtol=0)

    # the textual folder is also a transformers tokenizer folder
    reloaded = AutoTokenizer.from_pretrained(output / "textual")
    assert reloaded.pad_token == processor.tokenizer.pad_token and reloaded.model_max_length == 248
    assert reloaded(CAPTIONS[1])["input_ids"] == processor.tokenizer(CAPTIONS[1])["input_ids"]


def test_the_differences_of_immichs_front_end_are_measured(tmp_path):
    """benchmarks/immich_vs_original.py on tiny shapes: HTML entities and mojibake give other ids in immich (no ftfy, no
    html.unescape), while the exported normalizer makes curly quotes, ligatures and full-width letters tokenize like the
    original; photos whose crop slack is odd are cropped one pixel off; where ids and pixels agree, so do embeddings."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import immich_vs_original as benchmark

    result = benchmark.measure("tiny", tmp_path)
    texts = {t["caption"]: t for t in result["texts"]}
    assert not texts["Tom &amp; Jerry on a &quot;red&quot; sofa"]["same_ids"]
    assert not texts["The cafÃ© is Ã¼ber cool â€” really"]["same_ids"]
    for caption in ("An oﬃce with ﬁve ﬂowers and ﬀ ﬄ ligatures", "“Curly quotes”, ‘single’ ones and don’t"):
        assert texts[caption]["same_ids"], caption
    assert texts["ＦＵＬＬ－ＷＩＤＴＨ ｌｅｔｔｅｒｓ １２３ ５０％ off ＄１００"]["same_ids"]
    assert texts["A photo of a cat"]["same_ids"]
    assert all(t["cosine"] > 1 - 1e-5 for t in result["texts"] if t["same_ids"])
    photos = {row["photo"].split(" (")[0]: row for row in result["images"]}
    assert photos["coffee at 1000x667"]["crop_original"] != photos["coffee at 1000x667"]["crop_immich"]
    assert photos["astronaut"]["pixel_max_abs_diff"] < 1e-5 and photos["astronaut"]["cosine"] > 1 - 1e-5
    shifted = [row for row in result["images"] if row["crop_original"] != row["crop_immich"]]
    assert shifted and all(row["pixel_max_abs_diff"] > 0.1 for row in shifted)
    assert "hard captions (ids)" in benchmark.markdown(result)


def test_refusals_leave_nothing_written(folders, tmp_path, capsys, monkeypatch):
    output = tmp_path / "out"
    line = refusal(run_console_script("longclip-export", "immich", folders / "llm2clip", output))
    assert "immich cannot express a llm2clip model" in line and "pooling mask" in line
    assert "immich cannot express a proclip model" in refusal_in_process(capsys, "immich", folders / "proclip", output)
    not_a_model = tmp_path / "photos"
    not_a_model.mkdir()
    assert "no config.json" in refusal_in_process(capsys, "immich", not_a_model, output)
    output.mkdir()
    (output / "config.json").write_text("{}")
    assert "--overwrite" in refusal_in_process(capsys, "immich", folders / "longclip", output)
    monkeypatch.setattr(immich_export, "RELATIVE_TOLERANCE", -1.0)  # nothing agrees within a negative tolerance
    with pytest.raises(ImmichExportError, match="disagree"):
        export_immich(folders / "longclip", output, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "photos"]  # no staging folder left behind
    assert [p.name for p in output.iterdir()] == ["config.json"] and (output / "config.json").read_text() == "{}"
