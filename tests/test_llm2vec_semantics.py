"""LLM2CLIPProcessor reproduces llm2vec 0.2.3's `encode` rule by rule (REFERENCE 2.2), and the model pools like it.

Two kinds of checks on a tiny BPE tokenizer with the Llama-3 special tokens: fixed expectations written from the
rules (token lists built by hand), and `llm2vec_features` below, a re-implementation of llm2vec's own string and
mask steps (`_convert_to_str`, `prepare_for_tokenization`, `tokenize`, `_skip_instruction`) that shares no code with
the processor. benchmarks/llm2vec_parity.py compares against the real library (docs/llm2vec_parity.md).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from llm_fixtures import tiny_image_processor, tiny_llama3_tokenizer, tiny_llama_config, tiny_llm2clip_config

from modeling_longclip import LLM2CLIPModel, LLM2CLIPProcessor

HEADER = "<|start_header_id|>user<|end_header_id|>\n\n"
SEPARATOR = "!@#$%^&*()"
HARD_CAPTIONS = [
    "A dog.",
    "   A red car.   ",
    "\tTwo dogs\trun on the beach.\t",
    "\n\nA bowl of fruit.\nApples and oranges.\n",
    "A  wooden   table  with a bowl.",
    "",
    " \t\n ",
    "An instruction !@#$%^&*() and the caption after it.",
    "a !@#$%^&*() b c !@#$%^&*() d e f",
    "Café, naïve façade; 東京の夜景 and ümlauts.",
    "Two dogs run across the beach while a man throws a ball into the waves.\n  The sky is clear. " * 3,
]


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_llama3_tokenizer()


def ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def llm2vec_features(tokenizer, captions: list[str], max_length: int, doc_max_length: int) -> dict:
    """llm2vec 0.2.3 with no instruction, the Llama-3-8B-Instruct template, left padding, pad = EOS."""
    texts = []
    for text in captions:  # _convert_to_str
        count = len(tokenizer(text, truncation=True, max_length=max_length, add_special_tokens=False)["input_ids"])
        while count > doc_max_length:
            ratio = doc_max_length / count
            text = " ".join(text.split()[: int(len(text.split()) * ratio)])
            count = len(tokenizer(text, truncation=True, max_length=max_length, add_special_tokens=False)["input_ids"])
        texts.append("<|start_header_id|>user<|end_header_id|>\n\n" + f"!@#$%^&*(){text}".strip() + "<|eot_id|>")
    pooled, joined = [], []
    for text in texts:  # tokenize
        pieces = text.split("!@#$%^&*()")
        pooled.append(pieces[1] if len(pieces) > 1 else "")
        joined.append("".join(pieces))
    tokenizer.padding_side, tokenizer.pad_token = "left", tokenizer.eos_token
    original = tokenizer(joined, return_tensors="pt", padding=True, truncation=True, max_length=max_length)
    masks = []
    for row, text in enumerate(pooled):
        n = len(tokenizer([text], truncation=True, max_length=max_length, add_special_tokens=False)["input_ids"][0])
        mask = torch.zeros_like(original["attention_mask"][row])
        if n > 0:
            mask[-n:] = 1
        masks.append(mask)
    return {
        "input_ids": original["input_ids"],
        "attention_mask": original["attention_mask"],
        "embed_mask": torch.stack(masks),
    }


def llm2vec_mean(hidden: torch.Tensor, embed_mask: torch.Tensor) -> torch.Tensor:
    """llm2vec's get_pooling("mean") after _skip_instruction, then encode's cast."""
    lengths = embed_mask.sum(dim=-1)
    return torch.stack([hidden[i, -length:, :].mean(dim=0) for i, length in enumerate(lengths)], dim=0).to(
        torch.float32
    )


def processor_for(tokenizer, **settings) -> LLM2CLIPProcessor:
    return LLM2CLIPProcessor(tiny_image_processor(), tokenizer, **settings)


@pytest.mark.parametrize("max_length,doc_max_length", [(512, 512), (512, 400), (24, 24), (24, 16), (40, 12)])
def test_tokens_and_pooling_mask_match_llm2vec_steps(tokenizer, max_length, doc_max_length):
    processor = processor_for(tokenizer, max_length=max_length, doc_max_length=doc_max_length)
    ours = processor(text=HARD_CAPTIONS)
    expected = llm2vec_features(tokenizer, HARD_CAPTIONS, max_length, doc_max_length)
    assert ours["input_ids"].tolist() == expected["input_ids"].tolist()
    assert ours["attention_mask"].tolist() == expected["attention_mask"].tolist()
    assert ours["pooling_mask"].tolist() == expected["embed_mask"].tolist()
    for caption in HARD_CAPTIONS:  # one caption per call, as padding changes nothing but the left padding
        alone = processor(text=[caption])
        reference = llm2vec_features(tokenizer, [caption], max_length, doc_max_length)
        assert alone["input_ids"].tolist() == reference["input_ids"].tolist()
        assert alone["pooling_mask"].tolist() == reference["embed_mask"].tolist()


def test_only_trailing_whitespace_is_stripped(tokenizer):
    batch = processor_for(tokenizer)(text=["  A red car.  \n"], return_tensors=None)
    vocab = tokenizer.get_vocab()
    caption = ids(tokenizer, "  A red car.")  # the leading spaces stay and are tokenized
    assert tokenizer.convert_ids_to_tokens(caption[:2]) == ["Ġ", "Ġ"]
    assert batch["input_ids"][0] == [
        vocab["<|begin_of_text|>"],
        *ids(tokenizer, HEADER),
        *caption,
        vocab["<|eot_id|>"],
    ]
    assert batch["pooling_mask"][0] == [0] * 5 + [1] * (len(caption) + 1)  # BOS + 4 header tokens not pooled


def test_inner_whitespace_is_kept_when_the_word_cut_does_not_fire(tokenizer):
    caption = "A  wooden\ttable\n\nwith a bowl."
    batch = processor_for(tokenizer)(text=[caption], return_tensors=None)
    assert batch["input_ids"][0][5:-1] == ids(tokenizer, caption)


def test_past_max_length_the_tokenizer_cuts_and_the_mean_covers_every_position(tokenizer):
    caption = " ".join(["a"] * 600)  # 600 one-token words: the word cut cannot fire at 512/512
    assert len(ids(tokenizer, caption)) == 600
    batch = processor_for(tokenizer)(text=[caption], return_tensors=None)
    vocab = tokenizer.get_vocab()
    assert batch["input_ids"][0] == [
        vocab["<|begin_of_text|>"],
        *ids(tokenizer, HEADER),
        *ids(tokenizer, caption)[:507],
    ]
    assert vocab["<|eot_id|>"] not in batch["input_ids"][0]  # dropped by the truncation
    assert batch["pooling_mask"][0] == [1] * 512  # n = 512 (the pooled part, truncated): BOS and header included


def test_word_cut_with_a_separate_doc_max_length(tokenizer):
    processor = processor_for(tokenizer, max_length=512, doc_max_length=16)
    caption = "a" + " a" * 48  # 49 tokens; llm2vec keeps int(49 * (16 / 49)) = int(15.999...) = 15 words, not 16
    assert len(ids(tokenizer, caption)) == 49
    assert processor.fit_caption(caption) == " ".join(["a"] * 15)
    spaced = "apples  and\noranges " * 10  # past the cut whitespace runs become single spaces
    fitted = processor.fit_caption(spaced)
    assert fitted.split() == spaced.split()[: len(fitted.split())] and fitted == " ".join(fitted.split())
    assert len(ids(tokenizer, fitted)) <= 16 < len(ids(tokenizer, spaced))
    assert processor.fit_caption("  short  caption \n") == "  short  caption \n"  # under the limit: untouched


def test_token_count_for_the_cut_is_itself_capped_at_max_length(tokenizer):
    caption = " ".join(["a"] * 600)
    same = processor_for(tokenizer, max_length=512, doc_max_length=512)
    assert same.fit_caption(caption) == caption  # counted as 512, never above doc_max_length
    cut = processor_for(tokenizer, max_length=512, doc_max_length=400)
    # 600 words counted as 512 -> int(600 * (400 / 512)) = 468 words, 468 tokens > 400 -> int(468 * (400 / 468)) = 400
    assert cut.fit_caption(caption) == " ".join(["a"] * 400)


def test_separator_in_a_caption_splits_it_like_llm2vec(tokenizer):
    batch = processor_for(tokenizer)(text=["x !@#$%^&*() y z"], return_tensors=None)
    vocab = tokenizer.get_vocab()
    tail = ids(tokenizer, "x  y z")
    assert batch["input_ids"][0] == [vocab["<|begin_of_text|>"], *ids(tokenizer, HEADER), *tail, vocab["<|eot_id|>"]]
    pooled = len(ids(tokenizer, "x "))  # the text between the separators decides how many LAST positions count
    assert batch["pooling_mask"][0] == [0] * (len(batch["input_ids"][0]) - pooled) + [1] * pooled


@pytest.mark.parametrize("caption", ["", "   ", "\n\t \n"])
def test_empty_and_whitespace_only_captions_pool_the_end_of_turn_token(tokenizer, caption):
    batch = processor_for(tokenizer)(text=[caption], return_tensors=None)
    vocab = tokenizer.get_vocab()
    assert batch["input_ids"][0] == [vocab["<|begin_of_text|>"], *ids(tokenizer, HEADER), vocab["<|eot_id|>"]]
    assert batch["pooling_mask"][0] == [0, 0, 0, 0, 0, 1]


def test_nothing_to_pool_means_the_whole_padded_row(tokenizer):
    """llm2vec slices [-0:] when the pooled part has no tokens (a template with nothing after an empty caption)."""
    processor = processor_for(tokenizer, text_template="{caption}")
    batch = processor(text=["", "a red car"], return_tensors=None)
    assert batch["attention_mask"][0] == [0, 0, 0, 1]  # BOS only, left-padded
    assert batch["pooling_mask"][0] == [1, 1, 1, 1]
    assert batch["pooling_mask"][1] == [0, 1, 1, 1]


def test_other_templates_and_settings(tokenizer):
    plain = processor_for(tokenizer, text_template="{caption}", pooling_scope="all", padding_side="right")
    batch = plain(text=["a red car parked next to a tree", "a dog"], return_tensors=None)
    assert batch["pooling_mask"] == batch["attention_mask"] and batch["attention_mask"][1][-1] == 0
    right = processor_for(tokenizer, padding_side="right")
    row = right(text=["a red car parked next to a tree", "a dog"], return_tensors=None)
    n = len(ids(tokenizer, "a dog")) + 1
    real = sum(row["attention_mask"][1])
    assert row["pooling_mask"][1] == [0] * (real - n) + [1] * n + [0] * (len(row["attention_mask"][1]) - real)
    literal = processor_for(tokenizer, instruction_separator=None, strip_trailing_whitespace=False)
    full, pooled = literal.texts_to_tokenize("x !@#$%^&*() y ")
    assert (full, pooled) == (HEADER + "x !@#$%^&*() y <|eot_id|>", "x !@#$%^&*() y <|eot_id|>")
    with pytest.raises(ValueError, match="instruction_separator"):
        processor_for(tokenizer, instruction_separator=" ")
    with pytest.raises(ValueError, match="doc_max_length"):
        processor_for(tokenizer, doc_max_length=0)


def test_settings_are_saved_and_old_folders_keep_loading(tokenizer, tmp_path):
    processor_for(tokenizer, max_length=256, doc_max_length=200).save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "processor_config.json").read_text())
    assert (saved["max_length"], saved["doc_max_length"], saved["instruction_separator"]) == (256, 200, SEPARATOR)
    assert (
        LLM2CLIPProcessor.from_pretrained(tmp_path).encoding_settings()
        == processor_for(tokenizer, max_length=256, doc_max_length=200).encoding_settings()
    )
    for key in ("doc_max_length", "strip_trailing_whitespace", "instruction_separator"):  # a folder from before
        saved.pop(key)
    (tmp_path / "processor_config.json").write_text(json.dumps(saved))
    old = LLM2CLIPProcessor.from_pretrained(tmp_path)
    assert (old.max_length, old.doc_max_length, old.strip_trailing_whitespace, old.instruction_separator) == (
        256,
        256,
        True,
        SEPARATOR,
    )


def test_grouped_kwargs_as_sentence_transformers_passes_them(tokenizer):
    processor = processor_for(tokenizer)
    image = (np.random.default_rng(0).random((40, 40, 3)) * 255).astype(np.uint8)
    out = processor(
        text=["a red car parked next to a green tree"],
        images=[image],
        text_kwargs={"padding": True, "truncation": "longest_first", "max_length": 6},
        images_kwargs={"image_mean": [0, 0, 0], "image_std": [1, 1, 1]},
        audio_kwargs={"padding": True},
        videos_kwargs={},
        common_kwargs={"return_tensors": "np"},
    )
    assert isinstance(out["input_ids"], np.ndarray) and isinstance(out["pixel_values"], np.ndarray)
    assert out["input_ids"].shape == (1, 6)  # max_length reached the text path
    assert (
        0.0 <= out["pixel_values"].min() and out["pixel_values"].max() <= 1.0
    )  # the identity norm reached the images
    flat = processor(text=["a dog"], images=[image], image_mean=[0, 0, 0], image_std=[1, 1, 1], max_length=4)
    assert flat["input_ids"].shape == (1, 4) and flat["pixel_values"].min() >= 0
    # audio / video groups have nothing to apply to (sentence-transformers always sends audio padding): ignored
    for bad in ({"foo": 1}, {"text_kwargs": {"do_normalize": False}}, {"images_kwargs": {"max_len": 3}}):
        with pytest.raises(TypeError, match="LLM2CLIPProcessor"):
            processor(text=["a dog"], **bad)
    right = processor(text=["a dog", "a red car parked next to a tree"], common_kwargs={"padding_side": "right"})
    assert right["attention_mask"][0, -1] == 0 and right["pooling_mask"][0, -1] == 0  # padding after the tokens
    fixed = processor(text=["a dog"], text_kwargs={"padding": "max_length", "max_length": 12})
    assert fixed["input_ids"].shape == (1, 12) and fixed["pooling_mask"][0, -1] == 1  # left-padded to 12
    with pytest.raises(ValueError, match="truncat"):
        processor(text=["a dog"], text_kwargs={"truncation": False})
    with pytest.raises(ValueError, match="pads every batch"):
        processor(text=["a dog"], padding=False)
    with pytest.raises(TypeError, match="list of strings"):
        processor(text=["a dog", None])


@pytest.fixture(scope="module")
def bf16_model(tokenizer):
    torch.manual_seed(0)
    model = LLM2CLIPModel(tiny_llm2clip_config(tiny_llama_config(len(tokenizer)))).eval()
    with torch.no_grad():
        for param in model.text_model.parameters():
            param.add_(0.05 * torch.randn_like(param))
    return model.to(torch.bfloat16)


def test_bf16_mean_pooling_is_llm2vecs_bit_for_bit(tokenizer, bf16_model):
    inputs = processor_for(tokenizer, max_length=24, doc_max_length=24)(text=HARD_CAPTIONS)
    reference = llm2vec_features(tokenizer, HARD_CAPTIONS, 24, 24)
    with torch.no_grad():
        hidden = bf16_model.text_model(
            input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]
        ).last_hidden_state
        ours = bf16_model.encode_llm(**inputs)
    assert hidden.dtype == torch.bfloat16 and ours.dtype == torch.float32
    expected = llm2vec_mean(hidden, reference["embed_mask"])
    torch.testing.assert_close(ours, expected, rtol=0, atol=0)
    in_fp32 = (hidden.float() * inputs["pooling_mask"][..., None]).sum(1) / inputs["pooling_mask"].sum(1, keepdim=True)
    assert (in_fp32 - expected).abs().max() > 0  # the dtype matters at bf16, so the default is a real choice
    bf16_model.config.pooling_dtype = "float32"
    try:
        with torch.no_grad():
            torch.testing.assert_close(bf16_model.encode_llm(**inputs), in_fp32, rtol=1e-6, atol=1e-6)
        bf16_model.config.pooling_dtype = "float64"
        with pytest.raises(ValueError, match="pooling_dtype"):
            bf16_model.encode_llm(**inputs)
    finally:
        bf16_model.config.pooling_dtype = "model"


def test_pooling_masks_that_are_not_one_run_and_empty_rows():
    from modeling_longclip.modeling_llm2clip import pool_hidden_states

    hidden = torch.randn(3, 5, 4, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    mask = torch.tensor([[1, 0, 1, 1, 0], [0, 0, 0, 0, 0], [0, 1, 1, 1, 0]])
    pooled = pool_hidden_states(hidden, mask, "mean")
    torch.testing.assert_close(pooled[0], hidden[0, [0, 2, 3]].mean(dim=0).float(), rtol=0, atol=0)
    torch.testing.assert_close(pooled[1], torch.zeros(4), rtol=0, atol=0)
    torch.testing.assert_close(pooled[2], hidden[2, 1:4].mean(dim=0).float(), rtol=0, atol=0)
    in_fp32 = pool_hidden_states(hidden, mask, "mean", torch.float32)
    torch.testing.assert_close(in_fp32[2], hidden[2, 1:4].float().mean(dim=0), rtol=0, atol=0)
    assert pooled.dtype == in_fp32.dtype == torch.float32


def test_pooling_dtype_is_a_saved_config_field(tmp_path):
    config = tiny_llm2clip_config(tiny_llama_config(32), pooling_dtype="float32")
    config.save_pretrained(tmp_path)
    assert type(config).from_pretrained(tmp_path).pooling_dtype == "float32"
    assert tiny_llm2clip_config(tiny_llama_config(32)).pooling_dtype == "model"
