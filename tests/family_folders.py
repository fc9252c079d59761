"""Tiny converted folders of every family, written by the real converters from random checkpoints in the authors'
formats: Long-CLIP as remote code and as a stock CLIPModel folder, LLM2CLIP and ProCLIP with a tiny Llama."""

from __future__ import annotations

from pathlib import Path

import torch
from llm_fixtures import tiny_llama3_tokenizer, tiny_llama_config, tiny_llm2clip_config, tiny_llm_folder
from test_llm2clip import write_released_clip_part

from modeling_longclip import LLM2CLIPModel, LongCLIPModel, ProCLIPModel
from modeling_longclip.converters.llm2clip import convert_llm2clip
from modeling_longclip.converters.longclip import convert_longclip
from modeling_longclip.converters.proclip import convert_proclip
from modeling_longclip.converters.synthetic import random_openai_clip_state_dict, random_proclip_state_dict

# folder name -> the package class that loads the weights it holds (the stock CLIP folder holds Long-CLIP's)
FAMILIES = {"longclip": LongCLIPModel, "clip": LongCLIPModel, "llm2clip": LLM2CLIPModel, "proclip": ProCLIPModel}


def convert_families(root: Path) -> Path:
    torch.save(random_openai_clip_state_dict(seed=3), root / "longclip.pt")
    convert_longclip(root / "longclip.pt", root / "longclip")
    convert_longclip(root / "longclip.pt", root / "clip", output_format="clip")
    llm = tiny_llm_folder(root / "llm")
    torch.manual_seed(1)
    write_released_clip_part(
        root / "released", LLM2CLIPModel(tiny_llm2clip_config(tiny_llama_config(len(tiny_llama3_tokenizer()))))
    )
    convert_llm2clip(root / "released", llm, root / "llm2clip")
    torch.save(random_proclip_state_dict(seed=2), root / "proclip.pt")
    convert_proclip(root / "proclip.pt", llm, root / "proclip")
    return root


def reference_model(root: Path, family: str):
    """The folder's model as this package loads it (from the remote-code folder for the stock CLIP format)."""
    return FAMILIES[family].from_pretrained(root / ("longclip" if family == "clip" else family)).eval()
