"""The CLIP BPE tokenizer with the original's text cleaning, and truncation where a batch could not run otherwise.

Part of the flat Hub payload: imports only transformers (ftfy when it is installed) and processing_options. OpenAI's and Long-CLIP's
`tokenize` clean every caption before BPE (`ftfy.fix_text`, `html.unescape` twice, whitespace runs -> one space,
lower-case); transformers' `CLIPTokenizer` only applies NFC, whitespace and lower-case, so captions with HTML entities,
ligatures, full-width letters, curly quotes or mojibake get other ids. `LongCLIPTokenizer` cleans first, so every path
that tokenizes (the processor, the zero-shot pipeline, `encode`, token counting) sees what the original saw.
"""

from __future__ import annotations

import html
import re
import warnings

# 5.x's CLIPTokenizer is the tokenizers-backed class and CLIPTokenizerFast its alias; on 4.x only CLIPTokenizerFast
# is, and saved folders hold tokenizer.json alone, which 4.x's slow CLIPTokenizer cannot read.
from transformers import CLIPTokenizerFast as CLIPTokenizer

from .processing_options import LongTextTruncationWarning

try:
    import ftfy
except ImportError:  # the cleaning still unescapes HTML and normalizes whitespace; said once, see clean_caption
    ftfy = None

# The whitespace class of the original `regex` pattern r"\s+" (Unicode White_Space). Python's own `\s` and
# `str.split()` also count U+001C..U+001F, which the original keeps (ftfy removes them anyway when installed).
_WHITESPACE = re.compile("[\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+")
_ftfy_missing_said = False


class TextCleaningWarning(UserWarning):
    """ftfy is missing, so text it would repair (mojibake, ligatures, odd quotes) may get other ids than the original."""


def clean_caption(text: str) -> str:
    """The original CLIP cleaning: ftfy.fix_text, html.unescape twice, strip, whitespace runs -> " ", lower-case."""
    global _ftfy_missing_said
    if ftfy is not None:
        text = ftfy.fix_text(text)
    elif not _ftfy_missing_said:
        _ftfy_missing_said = True
        warnings.warn(
            "ftfy is not installed: captions are cleaned with html.unescape and whitespace rules only, so ids may "
            "differ from the original CLIP tokenizer for text that ftfy would fix (mojibake, ligatures, full-width "
            "letters, curly quotes). `pip install ftfy` for identical ids.",
            TextCleaningWarning,
            stacklevel=3,
        )
    text = html.unescape(html.unescape(text)).strip()
    return _WHITESPACE.sub(" ", text).strip().lower()


def clean_texts(text):
    """`clean_caption` on a string, or on each string of a list / tuple; anything else is returned as it is."""
    if isinstance(text, str):
        return clean_caption(text)
    if isinstance(text, (list, tuple)) and all(isinstance(t, str) for t in text):
        return [clean_caption(t) for t in text]
    return text


# What a caller can do about truncation depends on how it got there: a processor call can switch to windows, a bare
# tokenizer call (the zero-shot pipeline's) cannot, so it points at the model's own encoders.
PROCESSOR_REMEDY = (
    "Pass long_text='window' to the processor (or to model.encode_text) to encode long texts in {context}-token "
    "windows instead."
)
TOKENIZER_REMEDY = (
    "A tokenizer call (as pipeline('zero-shot-image-classification') makes) can only truncate; to use every token, "
    "embed the texts with model.encode_text(texts, long_text='window') and compare them with model.encode_image(images)."
)


def warn_truncated(lengths, context: int, stacklevel: int = 3, remedy: str = PROCESSOR_REMEDY) -> None:
    """One LongTextTruncationWarning for the texts (token counts with SOT/EOT) longer than `context`."""
    overflow = [n - context for n in lengths if n > context]
    if overflow:
        warnings.warn(
            f"{len(overflow)} of {len(lengths)} texts exceed the {context}-token context and were truncated: "
            f"{sum(overflow)} tokens dropped in all, up to {max(overflow)} from one text. "
            + remedy.format(context=context),
            LongTextTruncationWarning,
            stacklevel=stacklevel,
        )


class LongCLIPTokenizer(CLIPTokenizer):
    """`CLIPTokenizer` (same vocabulary, ids and files) that cleans text like the original before BPE.

    When a caller asks for tensors without saying how to truncate (the zero-shot pipeline does:
    `padding=True, return_tensors="pt"`), texts past `model_max_length` are truncated like the original
    (SOT + first context-2 tokens + EOT) with a `LongTextTruncationWarning`, instead of producing a batch the model
    cannot run. Lists of ids (token counting) and an explicit `truncation=...` are left as asked.
    Pre-tokenized input (`is_split_into_words=True`) is not cleaned.
    """

    def __call__(self, text=None, text_pair=None, *args, **kwargs):
        implicit = (
            kwargs.get("truncation") is None
            and kwargs.get("max_length") is None
            and kwargs.get("return_tensors") is not None
            and not kwargs.get("is_split_into_words", False)
            and text is not None
        )
        if implicit:
            kwargs["truncation"] = True
            counted = super().__call__(
                text, text_pair, add_special_tokens=kwargs.get("add_special_tokens", True), verbose=False
            )["input_ids"]
            counted = [counted] if counted and isinstance(counted[0], int) else counted
            warn_truncated([len(ids) for ids in counted], self.model_max_length, stacklevel=3, remedy=TOKENIZER_REMEDY)
        return super().__call__(text, text_pair, *args, **kwargs)

    def _encode_plus(self, text, text_pair=None, *args, **kwargs):
        if not kwargs.get("is_split_into_words", False):
            text, text_pair = clean_texts(text), clean_texts(text_pair)
        return super()._encode_plus(text, text_pair, *args, **kwargs)

    if hasattr(CLIPTokenizer, "_batch_encode_plus"):  # transformers 4.x sends batches here, not to _encode_plus

        def _batch_encode_plus(self, batch_text_or_text_pairs, *args, **kwargs):
            if not kwargs.get("is_split_into_words", False):
                batch_text_or_text_pairs = [
                    clean_texts(item) if isinstance(item, str) else type(item)(clean_texts(list(item)))
                    for item in batch_text_or_text_pairs
                ]
            return super()._batch_encode_plus(batch_text_or_text_pairs, *args, **kwargs)


LongCLIPTokenizer.register_for_auto_class("AutoTokenizer")

__all__ = ["LongCLIPTokenizer", "LongTextTruncationWarning", "TextCleaningWarning", "clean_caption", "clean_texts"]
