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


def test_int8_graphs_beside_the_float32_ones(folders, capsys):
    """--quantize int8: onnxruntime's dynamic quantization writes integer graphs beside the float32 ones; on new
    shapes their embeddings keep cosine > 0.99 to PyTorch's float32 features."""
    folder = folders / "llm2clip"
    assert onnx_export.main([str(folder), "--quantize", "int8", "--overwrite"]) == 0
    out = capsys.readouterr().out
    assert "text_model_int8.onnx: dynamic int8; cosine to PyTorch float32 >=" in out
    assert "vision_model_int8.onnx: dynamic int8" in out
    for name in ("text_model", "vision_model"):
        fp32, int8 = folder / "onnx" / f"{name}.onnx", folder / "onnx" / f"{name}_int8.onnx"
        assert graph_io(int8)[:2] == graph_io(fp32)[:2]  # same inputs and outputs
        ops = {node.op_type for node in onnx.load(str(int8)).graph.node}
        assert {"DynamicQuantizeLinear", "MatMulInteger"} <= ops
    model = reference_model(folders, "llm2clip")
    processor = model.get_processor()
    batch = processor(text=["a", "two dogs run across the beach", "green " * 90], return_tensors="pt")
    names = ("input_ids", "attention_mask", "pooling_mask")
    session = onnxruntime.InferenceSession(str(folder / "onnx" / "text_model_int8.onnx"))
    got = torch.from_numpy(session.run(None, {n: batch[n].numpy() for n in names})[0])
    with torch.no_grad():
        expected = model.get_text_features(**{n: batch[n] for n in names}).pooler_output
    assert torch.nn.functional.cosine_similarity(got, expected).min() > 0.99


def test_int8_refusals_leave_nothing_written(folders, monkeypatch, capsys):
    folder = folders / "longclip"
    export_onnx(folder, overwrite=True)
    before = sorted(p.name for p in (folder / "onnx").iterdir())
    with pytest.raises(ExportError, match=r"int8 graph strays from float32 \(below --min-cosine 1.5\), nothing"):
        export_onnx(folder, overwrite=True, quantize="int8", min_cosine=1.5)  # no cosine reaches 1.5
    assert sorted(p.name for p in (folder / "onnx").iterdir()) == before  # the previous export is untouched

    import onnxruntime.quantization

    monkeypatch.delattr(onnxruntime.quantization, "quantize_dynamic")  # an onnxruntime without the tools
    capsys.readouterr()
    assert onnx_export.main([str(folder), "--quantize", "int8", "--overwrite"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: --quantize int8 needs onnxruntime's quantization tools") and error.endswith(
        "pip install -U onnxruntime"
    )
    assert sorted(p.name for p in (folder / "onnx").iterdir()) == before


def test_text_tower_with_dropout_exports_in_eval_mode(tmp_path):
    """A BERT-style text tower has dropout: the export must leave the model in eval mode for its checks (a wrapper in
    training mode had torch.onnx.export switch dropout on afterwards, and the check refused a correct graph)."""
    from llm_fixtures import minilm_folder, tiny_image_processor, tiny_llm2clip_config
    from transformers import AutoTokenizer, BertConfig

    from modeling_longclip import LLM2CLIPModel, LLM2CLIPProcessor
    from modeling_longclip.export.folder import write_model_folder

    tokenizer = AutoTokenizer.from_pretrained(minilm_folder())
    bert = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
    )
    torch.manual_seed(0)
    model = LLM2CLIPModel(tiny_llm2clip_config(bert, projection_dim=16)).eval()
    processor = LLM2CLIPProcessor(
        tiny_image_processor(), tokenizer, text_template="{caption}", pooling_scope="all", padding_side="right"
    )
    folder = write_model_folder(model, processor, tmp_path / "bert", card="# test\n")
    checks = export_onnx(folder, quantize="int8", min_cosine=0.9)
    assert all(c.max_abs_diff <= c.tolerance for c in checks[:2]) and len(checks) == 4
