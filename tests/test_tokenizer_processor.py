"""The CLIP tokenizer at 248 tokens against open_clip's, and the processor's long-text modes."""

import json
import random

import pytest
import torch
from conftest import tiny_image_processor
from openclip_reference import open_clip_tokenize

from modeling_longclip import LongCLIPProcessor, LongTextTruncationWarning
from modeling_longclip.converters.clip_preprocessing import clip_vocab_and_merges


def random_captions(n: int, seed: int = 0) -> list[str]:
    vocab, _ = clip_vocab_and_merges()
    words = [t[:-4] for t in vocab if t.endswith("</w>") and t[:-4].isascii() and t[:-4].isalpha() and len(t) > 6]
    rng = random.Random(seed)
    captions = []
    for _ in range(n):
        length = rng.choice([3, 40, 90, 200, 400])
        text = " ".join(rng.choice(words) for _ in range(length))
        captions.append(text.capitalize().replace(" and ", ", and ") + ".")
    return captions


def test_reference_ids(clip_tokenizer):
    assert clip_tokenizer("a photo of a cat")["input_ids"] == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert clip_tokenizer("A cat")["input_ids"] == [49406, 320, 2368, 49407]
    ids = clip_tokenizer("A man is crossing the street with a red car parked nearby.")["input_ids"]
    assert ids.index(max(ids)) == 14
    vocab, merges = clip_vocab_and_merges()
    assert len(vocab) == 49408 and len(merges) == 48894


def test_ids_match_open_clip_at_248_on_long_captions(clip_tokenizer):
    captions = random_captions(40)
    reference = open_clip_tokenize(captions, 248)
    processor = LongCLIPProcessor(tiny_image_processor(), clip_tokenizer, original_padding=True)
    with pytest.warns(LongTextTruncationWarning):
        encoded = processor(text=captions)
    assert torch.equal(encoded["input_ids"], reference)


def test_saved_tokenizer_reloads_identically(tmp_path, clip_tokenizer):
    from transformers import AutoTokenizer

    clip_tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert reloaded.model_max_length == 248
    text = random_captions(3, seed=3)
    assert reloaded(text)["input_ids"] == clip_tokenizer(text)["input_ids"]
    assert json.loads((tmp_path / "tokenizer_config.json").read_text())["tokenizer_class"] == "CLIPTokenizer"


def test_truncation_warns_with_dropped_token_count(tiny_longclip):
    _, processor = tiny_longclip
    long_text = " ".join(["red"] * 300)  # 300 content tokens + SOT + EOT
    with pytest.warns(LongTextTruncationWarning, match=r"1 of 2 texts .* 54 tokens dropped"):
        batch = processor(text=[long_text, "a cat"])
    assert batch["input_ids"].shape == (2, 248)
    assert batch["input_ids"][0, -1] == 49407 and batch["input_ids"][0, 0] == 49406
    assert batch["attention_mask"][1].sum() == 4


def test_dynamic_padding_pads_with_eot_and_original_padding_with_zero(tiny_longclip):
    _, processor = tiny_longclip
    dynamic = processor(text=["a cat", "a photo of a cat"])
    assert dynamic["input_ids"].shape == (2, 7)
    assert dynamic["input_ids"][0, 4:].tolist() == [49407] * 3
    original = processor(text=["a cat"], original_padding=True)
    assert original["input_ids"].shape == (1, 248)
    assert original["input_ids"][0, :4].tolist() == [49406, 320, 2368, 49407]
    assert original["input_ids"][0, 4:].eq(0).all()


def test_original_padding_setting_is_saved(tmp_path, tiny_longclip):
    _, processor = tiny_longclip
    processor.original_padding = True
    processor.save_pretrained(tmp_path)
    reloaded = LongCLIPProcessor.from_pretrained(tmp_path)
    assert reloaded.original_padding is True
    assert reloaded(text=["a cat"])["input_ids"].shape == (1, 248)


def test_pooled_features_do_not_depend_on_padding(tiny_longclip):
    model, processor = tiny_longclip
    texts = ["a cat", "a photo of a dog on a green lawn"]
    with torch.no_grad():
        dynamic = model.get_text_features(**processor(text=texts)).pooler_output
        original = model.get_text_features(**processor(text=texts, original_padding=True)).pooler_output
    torch.testing.assert_close(dynamic, original, rtol=1e-5, atol=1e-5)


def test_encode_text_batches_by_length_and_keeps_the_order(tiny_longclip):
    from modeling_longclip.embedding import length_order

    model, processor = tiny_longclip
    random.seed(3)
    words = ["red", "circle", "beside", "a", "blue", "square", "under", "the", "green", "star"]
    texts = [" ".join(random.choices(words, k=random.choice([2, 5, 40, 120]))) for _ in range(13)]
    lengths = [len(processor.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    order = length_order(processor, texts)
    assert [lengths[i] for i in order] == sorted(lengths, reverse=True)

    fast = model.encode_text(texts, processor=processor, batch_size=4)  # sorted batches, no padding mask
    with torch.no_grad():  # the plain path: one text at a time, with its mask
        plain = torch.cat([model.get_text_features(**processor(text=[t])).pooler_output for t in texts])
    torch.testing.assert_close(fast, torch.nn.functional.normalize(plain, dim=-1), rtol=1e-5, atol=1e-5)
    assert model.encode_text([], processor=processor).shape == (0, model.config.projection_dim)
    assert model.text_padding_mask_optional(processor)
    processor.tokenizer.padding_side = "left"  # padding before the text would reach it: the mask must stay
    try:
        assert not model.text_padding_mask_optional(processor)
    finally:
        processor.tokenizer.padding_side = "right"


def test_window_mode_splits_and_pools_by_token_count(tiny_longclip):
    model, processor = tiny_longclip
    long_text = " ".join(["red", "blue"] * 250)  # 500 content tokens -> windows of 246, 246, 8
    batch = processor(text=[long_text, "a cat"], long_text="window")
    assert batch["window_to_text"].tolist() == [0, 0, 0, 1]
    assert batch["window_tokens"].tolist() == [246, 246, 8, 2]
    embeds = model.encode_text([long_text, "a cat"], processor=processor, long_text="window")
    assert embeds.shape == (2, 32)
    torch.testing.assert_close(embeds.norm(dim=-1), torch.ones(2))
    with torch.no_grad():
        windows = model.get_text_features(
            input_ids=batch["input_ids"][:3], attention_mask=batch["attention_mask"][:3]
        ).pooler_output
    windows = torch.nn.functional.normalize(windows, dim=-1)
    expected = torch.nn.functional.normalize((windows * torch.tensor([[246.0], [246.0], [8.0]])).sum(0), dim=-1)
    torch.testing.assert_close(embeds[0], expected, rtol=1e-5, atol=1e-5)
    short_only = model.encode_text(["a cat"], processor=processor)
    torch.testing.assert_close(embeds[1], short_only[0], rtol=1e-5, atol=1e-5)


def test_bad_long_text_mode(tiny_longclip):
    _, processor = tiny_longclip
    with pytest.raises(ValueError, match="long_text"):
        processor(text=["a"], long_text="chunk")


def test_grouped_kwargs_as_sentence_transformers_passes_them(tiny_longclip):
    import numpy as np

    _, processor = tiny_longclip
    image = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    grouped = dict(
        text_kwargs={"padding": True, "truncation": "longest_first"},
        images_kwargs={},
        audio_kwargs={"padding": True},
        videos_kwargs={},
        common_kwargs={"return_tensors": "pt"},
    )
    both = processor(text=["a cat", "a photo of a cat"], images=[image], **grouped)
    assert both["input_ids"].shape == (2, 7) and both["pixel_values"].shape == (1, 3, 32, 32)
    images_only = processor(images=[image], **grouped)  # a TypeError from the image processor before
    assert torch.equal(images_only["pixel_values"], both["pixel_values"])
    assert set(images_only) == {"pixel_values"}
    text_only = processor(
        text=["a cat"], text_kwargs={"padding": "max_length", "max_length": 16}, common_kwargs={"return_tensors": "np"}
    )
    assert text_only["input_ids"].shape == (1, 16) and isinstance(text_only["input_ids"], np.ndarray)
    sized = processor(images=[image], images_kwargs={"size": 40, "crop_size": 40})
    assert sized["pixel_values"].shape == (1, 3, 40, 40)


def test_unknown_keywords_are_named(tiny_longclip):
    _, processor = tiny_longclip
    with pytest.raises(TypeError, match="colour"):
        processor(text=["a cat"], colour="red")
    with pytest.raises(TypeError, match="colour"):
        processor(text=["a cat"], text_kwargs={"colour": "red"})
    with pytest.raises(TypeError, match="colour"):
        processor(images=[torch.zeros(3, 8, 8)], images_kwargs={"colour": "red"})
    with pytest.raises(TypeError, match="text_kwargs must be a dict"):
        processor(text=["a cat"], text_kwargs=["padding"])
    with pytest.raises(ValueError, match="truncation=False"):
        processor(text=[" ".join(["red"] * 300)], truncation=False)


def test_zero_shot_pipeline_truncates_and_cleans_long_labels(tiny_longclip_folder):
    import numpy as np
    from PIL import Image
    from transformers import pipeline

    classifier = pipeline("zero-shot-image-classification", model=str(tiny_longclip_folder), trust_remote_code=True)
    assert type(classifier.tokenizer).__name__ == "LongCLIPTokenizer"  # the folder's copy (remote code)
    assert type(classifier.image_processor).__name__ == "LongCLIPImageProcessor"
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (48, 40, 3), dtype=np.uint8))
    long_label = " ".join(["red"] * 300)  # "this is a photo of" + 300 + "." + SOT/EOT = 308 tokens (an error before)
    with pytest.warns(UserWarning, match="1 of 3 texts .* 60 tokens dropped") as caught:
        scores = classifier(image, candidate_labels=["a cat", "Tom &amp; Jerry", long_label])
    assert {type(w.message).__name__ for w in caught} == {"LongTextTruncationWarning"}
    assert abs(sum(s["score"] for s in scores) - 1) < 1e-5
    with pytest.warns(UserWarning, match="1 of 3 texts"):
        cleaned = classifier(image, candidate_labels=["a cat", "tom & jerry", long_label])
    by_label = {s["label"]: s["score"] for s in scores}
    assert by_label["Tom &amp; Jerry"] == pytest.approx(
        {s["label"]: s["score"] for s in cleaned}["tom & jerry"], abs=1e-6
    )
    batch = classifier.tokenizer(["This is a photo of " + long_label + "."], return_tensors="pt", truncation=False)
    assert batch["input_ids"].shape[1] > 248  # an explicit choice is left as asked
