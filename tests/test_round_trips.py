"""What save_pretrained writes is what from_pretrained restores, for every family and image tower: the forward of a
freshly initialised model, the config (transformers' ConfigTester checks), and tokenizer files every supported
transformers version reads."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import tiny_image_processor, tiny_longclip_config
from llm_fixtures import tiny_llama3_tokenizer, tiny_llama_config, tiny_llm2clip_config, with_extra_special_tokens
from transformers import AutoConfig

from modeling_longclip import (
    LLM2CLIPConfig,
    LLM2CLIPModel,
    LLM2CLIPProcessor,
    LongCLIPConfig,
    LongCLIPModel,
    ProCLIPConfig,
    ProCLIPModel,
)

VISION = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, patch_size=8)
TOWERS = ("clip", "eva02", "siglip2")
CASES = [("longclip", "clip")] + [(family, tower) for family in ("llm2clip", "proclip") for tower in TOWERS]
CLASSES = {"longclip": (LongCLIPConfig, LongCLIPModel), "llm2clip": (LLM2CLIPConfig, LLM2CLIPModel)}
CLASSES["proclip"] = (ProCLIPConfig, ProCLIPModel)
SPECIALS = ["<|start_header_id|>", "<|end_header_id|>"]


def config_dict(family: str, tower: str) -> dict:
    """A tiny config whose sub-configs name a dtype of their own, as configs made from a loaded CLIP or an LLM folder
    do (Llama folders say bfloat16)."""
    if family == "longclip":
        fields = tiny_longclip_config().to_dict()
    else:
        vision = dict(VISION, image_size=32, **({"num_attention_heads": 1} if tower == "clip" else {}))
        fields = tiny_llm2clip_config(tiny_llama_config(420), vision_tower=tower, vision_config=vision).to_dict()
    for key in ("text_config", "vision_config"):
        fields[key] = {**fields[key], "dtype": "bfloat16"}
    fields.pop("model_type", None)
    fields.pop("auto_map", None)
    return fields


def batch(seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    mask = torch.ones(3, 7, dtype=torch.long)
    mask[1, 4:] = 0
    return {
        "input_ids": torch.randint(1, 400, (3, 7), generator=generator),
        "attention_mask": mask,
        "pixel_values": torch.randn(3, 3, 32, 32, generator=generator),
        "return_loss": True,
    }


@pytest.mark.parametrize(("family", "tower"), CASES)
def test_fresh_model_saved_and_loaded_gives_the_same_outputs(family, tower, tmp_path):
    """transformers' `test_save_load`: a fresh model, saved and loaded (twice), gives the same forward."""
    config_class, model_class = CLASSES[family]
    torch.manual_seed(0)
    model = model_class(config_class(**config_dict(family, tower))).eval()
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    with torch.no_grad():
        first = model(**batch())
    model.save_pretrained(tmp_path / "once")
    again = model_class.from_pretrained(tmp_path / "once").eval()
    again.save_pretrained(tmp_path / "twice")
    twice = model_class.from_pretrained(tmp_path / "twice").eval()
    with torch.no_grad():
        for loaded in (again, twice):
            second = loaded(**batch())
            for key in ("loss", "logits_per_image", "text_embeds", "image_embeds"):
                torch.testing.assert_close(first[key], second[key], rtol=0, atol=1e-6, msg=key)


@pytest.mark.parametrize("family", sorted(CLASSES))
def test_config_round_trips_are_idempotent(family, tmp_path):
    """transformers' ConfigTester: json file, save_pretrained / from_pretrained, and each sub-config loaded alone from
    the composite file equal what was saved; the file still names the rope base for transformers 4.x."""
    config_class, _ = CLASSES[family]
    config = config_class(**config_dict(family, "clip"))
    config.to_json_file(tmp_path / "config.json")
    assert config_class.from_json_file(tmp_path / "config.json").to_dict() == config.to_dict()
    config.save_pretrained(tmp_path / "saved")
    loaded = config_class.from_pretrained(tmp_path / "saved")
    assert loaded.to_dict() == config.to_dict()
    for key, sub_class in loaded.sub_configs.items():
        if sub_class is AutoConfig:
            sub_class = type(getattr(loaded, key))
        alone = sub_class.from_pretrained(tmp_path / "saved").to_dict()
        alone.pop("transformers_version", None)
        assert alone == {k: v for k, v in config.to_dict()[key].items() if k != "transformers_version"}, key
    if family != "longclip":  # a 5.x rope_parameters entry, spelled the 4.x way too in the file
        text = json.loads((tmp_path / "saved" / "config.json").read_text())["text_config"]
        assert text["rope_theta"] == config.text_config.rope_parameters["rope_theta"] == 500000.0


def test_extra_special_tokens_are_written_the_way_every_version_reads(tmp_path):
    """transformers 5 writes a list of extra special tokens as `extra_special_tokens`, which 4.57's tokenizer init
    cannot read; the processor writes the 4.x spelling `additional_special_tokens`, which 5.x reads back."""
    tokenizer = with_extra_special_tokens(tiny_llama3_tokenizer())
    assert tokenizer.extra_special_tokens == SPECIALS
    LLM2CLIPProcessor(tiny_image_processor(), tokenizer).save_pretrained(tmp_path)
    written = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert written["additional_special_tokens"] == SPECIALS
    assert not isinstance(written.get("extra_special_tokens"), list)
    again = LLM2CLIPProcessor.from_pretrained(tmp_path).tokenizer
    assert set(SPECIALS) <= set(again.all_special_tokens)
    assert again("<|start_header_id|>user", add_special_tokens=False)["input_ids"][
        0
    ] == tokenizer.convert_tokens_to_ids("<|start_header_id|>")
