"""Text cleaning like the original CLIP tokenizer (ftfy, html.unescape twice, whitespace, lower-case), checked
against open_clip's tokenizer at 248 tokens on hard captions, on every path that tokenizes."""

import warnings

import pytest
import torch
from conftest import tiny_image_processor
from openclip_reference import _import_open_clip_modules, open_clip_tokenize

from modeling_longclip import LongCLIPProcessor, LongTextTruncationWarning, tokenization_longclip
from modeling_longclip.tokenization_longclip import LongCLIPTokenizer, TextCleaningWarning, clean_caption

HARD_CAPTIONS = [
    "Tom &amp; Jerry on a &quot;red&quot; sofa",
    "Fish &amp;amp; chips, double-escaped &amp;lt;b&amp;gt;",
    "It&#39;s a dog&#x27;s life&nbsp;&nbsp;indeed &copy; 2024 &euro;5",
    "An oﬃce with ﬁve ﬂowers and ﬀ ﬄ ligatures",
    "ＦＵＬＬ－ＷＩＤＴＨ ｌｅｔｔｅｒｓ １２３ ５０％ off ＄１００",
    "“Curly quotes”, ‘single’ ones and don’t",
    "A dash — an en dash – and a minus −",
    "Wait for it… and then… nothing",
    "The cafÃ© is Ã¼ber cool â€” really",
    "Mojibake: FranÃ§ais, EspaÃ±ol, PortuguÃªs",
    "一只猫坐在桌子上",
    "قطة تجلس على الطاولة",
    "日本語のテキスト、カタカナ、ひらがな。 한국어 텍스트",
    "A cat 🐱 with a hat 🎩👍🏽",
    "  lots   of \t\t whitespace \n\n here  ",
    "Non\u00a0breaking\u2003em\u3000ideographic space",
    "Ünïcödé ÇÅPS, straße, İstanbul, e\u0301 vs é",
    "HTML <b>tags</b> &lt;kept&gt;",
    "A photo of a cat",
    "",
    " ".join(["A long caption with &amp; entities, “quotes” and ﬁve ligatures —"] * 30),
    " ".join(["word"] * 260) + " &amp; tail",
]


@pytest.fixture
def processor(clip_tokenizer):
    return LongCLIPProcessor(tiny_image_processor(), clip_tokenizer, original_padding=True)


def test_ids_equal_the_original_tokenizer_on_hard_captions(clip_tokenizer, processor):
    reference = open_clip_tokenize(HARD_CAPTIONS, 248)
    with pytest.warns(LongTextTruncationWarning):
        ids = processor(text=HARD_CAPTIONS)["input_ids"]
    assert torch.equal(ids, reference)
    # transformers' CLIPTokenizer on the raw text (what the processor gave before cleaning): the set is hard
    raw = [
        ids if len(ids) <= 248 else [*ids[:247], 49407]
        for ids in clip_tokenizer(HARD_CAPTIONS, verbose=False)["input_ids"]
    ]
    uncleaned = torch.tensor([ids + [0] * (248 - len(ids)) for ids in raw])
    assert (uncleaned != reference).any(dim=1).sum() >= len(HARD_CAPTIONS) // 3


def test_the_tokenizer_itself_cleans_on_every_entry_point(processor):
    _, tokenizer_module = _import_open_clip_modules()
    original = tokenizer_module.SimpleTokenizer()
    tokenizer = processor.tokenizer
    assert isinstance(tokenizer, LongCLIPTokenizer)
    for caption in HARD_CAPTIONS[:18]:
        content = original.encode(caption)
        assert tokenizer(caption)["input_ids"][1:-1] == content, caption
        assert tokenizer.encode(caption, add_special_tokens=False) == content, caption
        assert len(tokenizer.tokenize(caption)) == len(content), caption
    assert processor.clean_text(["Tom &amp;amp; JERRY\u00a0 ﬁve"]) == ["tom & jerry five"]


def test_window_mode_truncation_warning_and_counts_see_the_cleaned_text(processor):
    text = " ".join(["&amp;"] * 300)  # raw: 3 tokens per entity; cleaned: "&" is one token
    assert processor.count_tokens([text]) == [302]
    assert processor.count_tokens([text], special_tokens=False) == [300]
    with pytest.warns(LongTextTruncationWarning, match="54 tokens dropped"):
        processor(text=[text])
    windows = processor(text=[text], long_text="window")
    assert windows["window_tokens"].tolist() == [246, 54]
    from modeling_longclip.embedding import length_order
    from modeling_longclip.evaluation.encoding import count_long_texts

    assert length_order(processor, ["a cat " * 5, " ".join(["&amp;"] * 20)]) == [1, 0]  # 20 tokens vs 10
    assert count_long_texts(processor, [text, " ".join(["&amp;"] * 100)]) == 1  # 100 entities fit only when cleaned


def test_encode_text_sees_the_cleaned_text(tiny_longclip):
    model, processor = tiny_longclip
    raw, clean = "Tom &amp; JERRY’s  ﬁve   cats", clean_caption("Tom &amp; JERRY’s  ﬁve   cats")
    ids = open_clip_tokenize([raw], 248)
    length = int((ids != 0).sum())
    with torch.no_grad():
        expected = model.get_text_features(input_ids=ids[:, :length]).pooler_output
    torch.testing.assert_close(
        model.encode_text([raw], processor=processor), torch.nn.functional.normalize(expected, dim=-1)
    )
    torch.testing.assert_close(
        model.encode_text([raw], processor=processor), model.encode_text([clean], processor=processor)
    )


def test_without_ftfy_html_and_whitespace_are_still_cleaned_and_it_is_said_once(monkeypatch):
    monkeypatch.setattr(tokenization_longclip, "ftfy", None)
    monkeypatch.setattr(tokenization_longclip, "_ftfy_missing_said", False)
    with pytest.warns(TextCleaningWarning, match="ftfy is not installed"):
        assert (
            clean_caption("Tom &amp;amp; Jerry\u2003 \x1c X") == "tom & jerry \x1c x"
        )  # the original's \s keeps \x1c
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert clean_caption("ﬁve") == "ﬁve"  # ftfy's work is not imitated: said once, above
