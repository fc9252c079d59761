"""Folders written here load and give the same features on the other transformers lines users run (4.57, 5.17).

Each interpreter in LONGCLIP_OTHER_TRANSFORMERS (virtualenvs with another transformers; scripts/test.sh makes them
with scripts/transformers_venvs.sh and sets the variable) loads the folders in a process that cannot import this
package, with nothing but `trust_remote_code=True`.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F
from llm_fixtures import (
    tiny_image_processor,
    tiny_llama3_tokenizer,
    tiny_llama_config,
    tiny_llm2clip_config,
    tiny_llm_folder,
    with_extra_special_tokens,
)
from transformers import AutoTokenizer

from modeling_longclip import LLM2CLIPModel, LLM2CLIPProcessor
from modeling_longclip.common.clean_load import load_in_clean_process
from modeling_longclip.converters.llm2clip import convert_llm2clip
from modeling_longclip.converters.longclip import convert_longclip
from modeling_longclip.converters.proclip import convert_proclip
from modeling_longclip.converters.synthetic import (
    random_openai_clip_state_dict,
    random_proclip_state_dict,
    write_eva02_release,
)
from modeling_longclip.converters.synthetic_zoo import random_siglip2_release, write_lora_adapter

FOLDERS = ("longclip", "proclip", "llm2clip", "eva02", "siglip2")
OTHER_PYTHONS = os.environ.get("LONGCLIP_OTHER_TRANSFORMERS", "").split()
# plain, past 77 tokens, and text the original tokenizer cleans first (entities, curly quotes, ligature, full-width)
TEXTS = [
    "a cat on a sofa",
    "  a long description of a harbour at dawn, " * 14,
    "Caf&eacute; \u201cﬁne\u201d &amp;amp; ＦＵＬＬ",
]

pytestmark = pytest.mark.skipif(
    not OTHER_PYTHONS, reason="LONGCLIP_OTHER_TRANSFORMERS names no interpreter (scripts/test.sh sets it)"
)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """One folder per writer and image tower: the Long-CLIP converter (remote code and stock CLIP), ProCLIP's,
    LLM2CLIP's for the EVA02 and SigLIP2 releases, and save_pretrained; the LLM tokenizers declare extra special
    tokens, as Llama / Qwen tokenizers do."""
    root = tmp_path_factory.mktemp("folders")
    torch.save(random_openai_clip_state_dict(seed=5), root / "longclip.pt")
    convert_longclip(root / "longclip.pt", root / "longclip")
    convert_longclip(root / "longclip.pt", root / "clip", output_format="clip")
    torch.save(random_proclip_state_dict(seed=6), root / "proclip.pt")
    llm = tiny_llm_folder(root / "llm")
    with_extra_special_tokens(AutoTokenizer.from_pretrained(llm)).save_pretrained(
        llm
    )  # as Llama / Qwen declare theirs
    convert_proclip(root / "proclip.pt", llm, root / "proclip")
    write_eva02_release(root / "eva02.pt", seed=8)
    convert_llm2clip(root / "eva02.pt", llm, root / "eva02")
    (
        root / "siglip2-release"
    ).mkdir()  # the release carries its LoRA beside its weights, as the authors' code reads it
    torch.save(random_siglip2_release(seed=9), root / "siglip2-release" / "siglip2.pt")
    write_lora_adapter(llm, root / "siglip2-release" / "LLM2CLIP-Llama-3.1-8B")
    convert_llm2clip(root / "siglip2-release" / "siglip2.pt", llm, root / "siglip2")
    tokenizer = with_extra_special_tokens(tiny_llama3_tokenizer())
    torch.manual_seed(7)
    model = LLM2CLIPModel(tiny_llm2clip_config(tiny_llama_config(len(tokenizer)))).eval()
    model.save_pretrained(root / "llm2clip")
    LLM2CLIPProcessor(tiny_image_processor(), tokenizer).save_pretrained(root / "llm2clip")
    return root


@pytest.fixture(scope="module")
def here(folders):
    """What the newest transformers (this process's) gives for each folder, through the same clean-process loader."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HOME", str(folders / "hf-here"))
        return {name: load_in_clean_process(folders / name, TEXTS) for name in FOLDERS}


@pytest.mark.parametrize("python", OTHER_PYTHONS)
@pytest.mark.parametrize("name", FOLDERS)
def test_same_features_on_another_transformers(folders, here, name, python, monkeypatch, tmp_path):
    monkeypatch.setenv(
        "HF_HOME", str(tmp_path / "hf")
    )  # each transformers line lays out its remote-code cache its own way
    clip_folder = folders / "clip" if name == "longclip" else None
    there = load_in_clean_process(folders / name, TEXTS, clip_folder=clip_folder, python=python)
    expected = here[name]

    assert there["transformers_version"] != expected["transformers_version"]
    assert there["leaked_modules"] == []
    assert there["model_class"] == expected["model_class"] and there["processor_class"] == expected["processor_class"]
    assert there["zero_shot_class"] == expected["zero_shot_class"]
    for key in ("pixel_values", "text_features", "image_features", "encode_text", "encode_image"):
        torch.testing.assert_close(torch.tensor(there[key]), torch.tensor(expected[key]), rtol=0, atol=2e-6, msg=key)
    assert [s["label"] for s in there["zero_shot_scores"]] == [s["label"] for s in expected["zero_shot_scores"]]
    for ours, theirs in zip(expected["zero_shot_scores"], there["zero_shot_scores"]):
        assert abs(ours["score"] - theirs["score"]) < 1e-5
    if clip_folder is not None:  # the stock CLIPModel folder reads the same weights there too
        torch.testing.assert_close(
            torch.tensor(there["plain_clip_text_features"]), torch.tensor(there["text_features"])
        )
        text = F.normalize(torch.tensor(there["plain_clip_text_features"]), dim=-1)
        torch.testing.assert_close(text, torch.tensor(there["encode_text"]), rtol=0, atol=2e-6)
