"""`longclip-export-onnx`: text and image feature graphs of every family, run by onnxruntime on other batch sizes and
lengths than the export traced, equal to PyTorch's features; refusals leave nothing behind."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from family_folders import FAMILIES, convert_families, reference_model

from modeling_longclip import onnx_export
from modeling_longclip.export.onnx import ExportError, export_onnx

onnx = pytest.importorskip("onnx", reason="onnx is not installed (CI's test extra has it)")
onnxruntime = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (CI's test extra has it)")

TOLERANCE = 1e-5  # fp32; measured 2e-6 at most on these folders


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return convert_families(tmp_path_factory.mktemp("onnx"))


def graph_io(path):
    graph = onnx.load(str(path)).graph
    dims = {
        i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
        for i in [*graph.input, *graph.output]
    }
    return [i.name for i in graph.input], [o.name for o in graph.output], dims


@pytest.mark.parametrize("family", FAMILIES)
def test_export_matches_pytorch_on_new_shapes(folders, family, capsys):
    assert onnx_export.main([str(folders / family)]) == 0
    assert "wrote" in capsys.readouterr().out
    text_path, vision_path = (
        folders / family / "onnx" / "text_model.onnx",
        folders / family / "onnx" / "vision_model.onnx",
    )
    text_inputs, text_outputs, dims = graph_io(text_path)
    dual = family in ("llm2clip", "proclip")
    assert text_inputs == ["input_ids", "attention_mask", *(["pooling_mask"] if dual else [])]
    assert (
        text_outputs == ["text_features"]
        and dims["input_ids"] == ["batch", "sequence"]
        and dims["text_features"][0] == "batch"
    )
    assert graph_io(vision_path)[:2] == (["pixel_values"], ["image_features"])

    model = reference_model(folders, family)  # for the stock CLIP folder: the Long-CLIP folder it was written beside
    processor = model.get_processor()
    captions = ["a", "two dogs run across the beach while a man throws a ball", "green " * 90, "red car", "x y"]
    batch = processor(text=captions, return_tensors="pt")  # batch 5, length past 77: neither was traced
    feeds = {name: batch[name].numpy() for name in text_inputs}
    session = onnxruntime.InferenceSession(str(text_path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = model.get_text_features(**{k: batch[k] for k in text_inputs}).pooler_output.numpy()
    assert feeds["input_ids"].shape[1] > 77
    np.testing.assert_allclose(session.run(None, feeds)[0], expected, atol=TOLERANCE, rtol=0)

    pixels = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    session = onnxruntime.InferenceSession(str(vision_path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = model.get_image_features(pixel_values=pixels).pooler_output.numpy()
    np.testing.assert_allclose(
        session.run(None, {"pixel_values": pixels.numpy()})[0], expected, atol=TOLERANCE, rtol=0
    )


def test_refusals_leave_nothing_written(folders, tmp_path, monkeypatch, capsys):
    folder = folders / "longclip"
    before = sorted(p.name for p in folder.iterdir() if p.name != "onnx")
    monkeypatch.setattr(onnx_export, "RELATIVE_TOLERANCE", -1.0)  # no graph can agree within a negative tolerance
    with pytest.raises(ExportError, match="onnxruntime disagrees with PyTorch"):
        export_onnx(folder, overwrite=True)
    assert sorted(p.name for p in folder.iterdir() if p.name != "onnx") == before  # no staging folder left behind
    monkeypatch.undo()
    export_onnx(folder, overwrite=True)
    assert onnx_export.main([str(folder)]) == 2  # onnx/ exists: refused without --overwrite
    assert "already exists" in capsys.readouterr().err
    assert onnx_export.main([str(tmp_path)]) == 2
    assert "not a model folder" in capsys.readouterr().err
