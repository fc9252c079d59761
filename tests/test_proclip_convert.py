"""ProCLIP converter on random .pt files in the authors' key format, with and without wrapper and prefix."""

import pytest
import torch
from llm_fixtures import tiny_llm_folder

from modeling_longclip import ProCLIPModel
from modeling_longclip.common.clean_load import load_in_clean_process
from modeling_longclip.common.errors import CheckpointError
from modeling_longclip.converters.proclip import convert_proclip
from modeling_longclip.converters.reference_llm import reference_adapter
from modeling_longclip.converters.synthetic import random_proclip_state_dict


@pytest.fixture(scope="module")
def llm(tmp_path_factory):
    return tiny_llm_folder(tmp_path_factory.mktemp("llm") / "llm")


@pytest.mark.parametrize("wrap", ["plain", "state_dict", "module_prefix", "both"])
def test_converts_every_packaging_of_the_release(tmp_path, llm, wrap):
    state_dict = random_proclip_state_dict(seed=2)
    packed = {f"module.{k}": v for k, v in state_dict.items()} if wrap in ("module_prefix", "both") else state_dict
    if wrap in ("state_dict", "both"):
        packed = {"state_dict": packed, "epoch": 3}
    torch.save(packed, tmp_path / "L14.pt")
    parity = convert_proclip(tmp_path / "L14.pt", llm, tmp_path / "out")
    assert parity.text_max_abs_diff <= 1e-5 and parity.image_max_abs_diff <= 1e-5
    model = ProCLIPModel.from_pretrained(tmp_path / "out")
    assert model.config.model_type == "proclip"
    assert (model.config.adapter_blocks, model.config.adapter_expansion, model.config.projection_dim) == (1, 8, 32)
    torch.testing.assert_close(model.visual_projection.weight, state_dict["visual.proj"].t())
    pooled = torch.randn(3, 64)
    with torch.no_grad():
        ours = model.get_text_features(text_embeds=pooled).pooler_output
    torch.testing.assert_close(ours, reference_adapter(state_dict, "text.text_adaptor.", pooled), rtol=1e-5, atol=1e-5)


def test_four_block_adapter_and_clean_process_load(tmp_path, llm, monkeypatch):
    torch.save(random_proclip_state_dict(blocks=4, expansion=2, seed=4), tmp_path / "B16.pt")
    convert_proclip(tmp_path / "B16.pt", llm, tmp_path / "out")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    result = load_in_clean_process(tmp_path / "out", ["a red car", "two dogs on a beach"])
    assert result["model_class"] == "ProCLIPModel" and result["leaked_modules"] == []
    assert len(result["encode_text"][0]) == 32


def test_refusals(tmp_path, llm):
    state_dict = random_proclip_state_dict()
    broken = dict(state_dict)
    del broken["text.text_adaptor.1.weight"]
    torch.save(broken, tmp_path / "no-final-ln.pt")
    with pytest.raises(CheckpointError, match="lacks its final LayerNorm"):
        convert_proclip(tmp_path / "no-final-ln.pt", llm, tmp_path / "out")
    extra = {**state_dict, "text.llm.embed_tokens.weight": torch.zeros(3, 3)}
    torch.save(extra, tmp_path / "extra.pt")
    with pytest.raises(CheckpointError, match="unexpected keys .*text.llm.embed_tokens.weight"):
        convert_proclip(tmp_path / "extra.pt", llm, tmp_path / "out")
    wrong = {
        **state_dict,
        "text.text_adaptor.2.weight": torch.zeros(16, 64),
        "text.text_adaptor.2.bias": torch.zeros(16),
    }
    torch.save(wrong, tmp_path / "wrong.pt")
    with pytest.raises(CheckpointError, match="maps to 16 dims but the image tower projects to 32"):
        convert_proclip(tmp_path / "wrong.pt", llm, tmp_path / "out")
    assert not (tmp_path / "out").exists()
