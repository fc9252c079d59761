"""Shared fixtures: tiny random Long-CLIP models and folders, built offline in a few milliseconds."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch

from modeling_longclip import LongCLIPConfig, LongCLIPModel, LongCLIPProcessor
from modeling_longclip.converters.clip_preprocessing import build_clip_tokenizer, clip_image_processor

TINY_IMAGE_SIZE = 32


def tiny_longclip_config(**overrides) -> LongCLIPConfig:
    fields = dict(
        text_config=dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=1),
        vision_config=dict(
            hidden_size=64,
            intermediate_size=256,
            num_hidden_layers=2,
            num_attention_heads=1,
            image_size=TINY_IMAGE_SIZE,
            patch_size=8,
        ),
        projection_dim=32,
    )
    fields.update(overrides)
    return LongCLIPConfig(**fields)


def tiny_image_processor(size: int = TINY_IMAGE_SIZE):
    return clip_image_processor(size)


@pytest.fixture(scope="session")
def clip_tokenizer():
    return build_clip_tokenizer(248)


@pytest.fixture
def tiny_longclip(clip_tokenizer):
    torch.manual_seed(0)
    model = LongCLIPModel(tiny_longclip_config()).eval()
    return model, LongCLIPProcessor(tiny_image_processor(), clip_tokenizer)


@pytest.fixture
def tiny_longclip_folder(tmp_path, tiny_longclip):
    """A Long-CLIP folder as `save_pretrained` writes it: config, safetensors, tokenizer, processor, payload code."""
    model, processor = tiny_longclip
    folder = tmp_path / "tiny-longclip"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
