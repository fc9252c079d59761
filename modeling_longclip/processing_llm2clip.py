"""LLM2CLIP / ProCLIP processor: CLIP image preprocessing plus the LLM tokenizer with llm2vec's encoding semantics.

Part of the flat Hub payload: imports only transformers. With its defaults it reproduces llm2vec 0.2.3's `encode`
(`LLM2Vec(model, tokenizer, pooling_mode="mean", max_length=512, doc_max_length=512)` on a model whose
`_name_or_path` is Meta-Llama-3-8B-Instruct) step by step, quirks included, because the released LLM2CLIP weights
and every cached feature were made that way (README, "LLM2CLIP", lists the rules; REFERENCE 2.2):

1. word cut: while the caption's token count (no special tokens, itself truncated at `max_length`) exceeds
   `doc_max_length`, keep `int(words * (doc_max_length / count))` whitespace-split words, joined by single spaces;
2. `separator + caption` is stripped, which removes only the caption's TRAILING whitespace, then wrapped in the
   template; the string is split on the separator (a caption containing it is split there too);
3. the joined string is tokenized with special tokens, truncated at `max_length`, padded (left, with EOS); the part
   after the first separator is tokenized alone (no special tokens, truncated at `max_length`) and its length n
   marks the LAST n positions of the padded row as the pooling mask (n = 0: the whole row, as llm2vec's `[-0:]`).

The template, pooled scope, separator, strip and padding side are saved settings, so other text models (Qwen,
Mistral, BERT, ...) use their own.
"""

from __future__ import annotations

import warnings

from transformers import BatchFeature, ProcessorMixin

from .processing_options import LongTextTruncationWarning, route_options, text_list
from .transformers_compat import PortableProcessorMixin

LLAMA3_TEXT_TEMPLATE = "<|start_header_id|>user<|end_header_id|>\n\n{caption}<|eot_id|>"
LLM2VEC_SEPARATOR = "!@#$%^&*()"  # llm2vec's instruction / text separator, removed before tokenization
POOLING_SCOPES = ("caption", "all")
PADDING_SIDES = ("left", "right")
# Keywords of the text path (top level or inside `text_kwargs` / `common_kwargs`).
TEXT_OPTIONS = frozenset({"max_length", "doc_max_length", "padding", "truncation", "padding_side"})


class LLM2CLIPProcessor(PortableProcessorMixin, ProcessorMixin):
    r"""
    text_template (`str`): the caption's wrapper; "{caption}" marks where the caption goes.
    pooling_scope (`str`): "caption" pools the caption tokens and whatever the template puts after them (llm2vec);
        "all" pools every non-padding token (sentence-transformers style mean pooling for encoder models).
    max_length (`int`, defaults to 512): tokenizer truncation (special tokens included), as llm2vec's `max_length`.
    doc_max_length (`int`, *optional*): llm2vec's word-level cut, in tokens counted without special tokens (and
        capped at `max_length`); defaults to `max_length`, where the cut never fires (the released recipe: 512/512;
        the LLM2CLIP 1B card uses 400).
    padding_side (`str`, defaults to "left").
    strip_trailing_whitespace (`bool`, defaults to True): llm2vec strips separator + caption, so only the end goes.
    instruction_separator (`str`, *optional*): llm2vec's separator; a caption containing it is split there (the
        pooled part is the text between the first and second occurrence). None: no split, the caption is pooled whole.
    """

    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        text_template: str = LLAMA3_TEXT_TEMPLATE,
        pooling_scope: str = "caption",
        max_length: int = 512,
        padding_side: str = "left",
        doc_max_length: int | None = None,
        strip_trailing_whitespace: bool = True,
        instruction_separator: str | None = LLM2VEC_SEPARATOR,
        **kwargs,
    ):
        if "{caption}" not in text_template:
            raise ValueError(f"text_template must contain '{{caption}}', got {text_template!r}.")
        if pooling_scope not in POOLING_SCOPES:
            raise ValueError(f"pooling_scope must be one of {POOLING_SCOPES}, got {pooling_scope!r}.")
        if padding_side not in PADDING_SIDES:
            raise ValueError(f"padding_side must be one of {PADDING_SIDES}, got {padding_side!r}.")
        doc_max_length = max_length if doc_max_length is None else doc_max_length  # folders saved before it existed
        for name, value in (("max_length", max_length), ("doc_max_length", doc_max_length)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        if instruction_separator is not None and (not instruction_separator or instruction_separator.isspace()):
            raise ValueError(f"instruction_separator must be None or visible text, got {instruction_separator!r}.")
        self.text_template, self.pooling_scope = text_template, pooling_scope
        self.max_length, self.doc_max_length, self.padding_side = max_length, doc_max_length, padding_side
        self.strip_trailing_whitespace, self.instruction_separator = (
            bool(strip_trailing_whitespace),
            instruction_separator,
        )
        super().__init__(image_processor, tokenizer, **kwargs)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token  # llm2vec pads with EOS
        self.tokenizer.padding_side = padding_side  # for code that reads it from the tokenizer; calls pass it too

    def encoding_settings(self) -> dict:
        """Everything besides the tokenizer's vocabulary that decides a caption's tokens and pooled positions."""
        return {
            "text_template": self.text_template,
            "pooling_scope": self.pooling_scope,
            "max_length": self.max_length,
            "doc_max_length": self.doc_max_length,
            "padding_side": self.padding_side,
            "strip_trailing_whitespace": self.strip_trailing_whitespace,
            "instruction_separator": self.instruction_separator,
        }

    # -- llm2vec's steps, one caption at a time --------------------------------------------------------------------

    def _count(self, text: str, max_length: int) -> int:
        """Tokens of `text` without special tokens, truncated at `max_length` (how llm2vec counts)."""
        ids = self.tokenizer(text, add_special_tokens=False, truncation=True, max_length=max_length, verbose=False)
        return len(ids["input_ids"])

    def fit_caption(self, caption: str, max_length: int | None = None, doc_max_length: int | None = None) -> str:
        """llm2vec's `_convert_to_str` word cut: unchanged unless its (capped) token count exceeds doc_max_length."""
        max_length = max_length or self.max_length
        limit = doc_max_length or self.doc_max_length
        count = self._count(caption, max_length)
        while count > limit:
            words = caption.split()
            caption = " ".join(words[: int(len(words) * (limit / count))])  # llm2vec's float order, kept
            count = self._count(caption, max_length)
        return caption

    def texts_to_tokenize(self, caption: str, max_length: int | None = None, doc_max_length: int | None = None):
        """(the full text, the pooled part) llm2vec tokenizes for `caption`: cut, strip, wrap, split on the separator."""
        return self._wrap(self.fit_caption(caption, max_length, doc_max_length))

    def _wrap(self, caption: str) -> tuple[str, str]:
        """`texts_to_tokenize` after the word cut: strip, wrap in the template, split on the separator."""
        if self.strip_trailing_whitespace:
            caption = caption.rstrip()  # == (separator + caption).strip(): the separator shields the start
        prefix, suffix = self.text_template.split("{caption}", 1)
        if self.instruction_separator is None:
            return prefix + caption + suffix, caption + suffix
        parts = (prefix + self.instruction_separator + caption + suffix).split(self.instruction_separator)
        return "".join(parts), (parts[1] if len(parts) > 1 else "")

    def _warn_cut(self, texts: list[str], fitted: list[str], attention_mask, max_length: int) -> None:
        """One LongTextTruncationWarning for the captions that lost tokens (to the word cut or to truncation at
        `max_length`), with how many: llm2vec drops them without a word. Only captions that were cut or fill the whole
        row are counted again, untruncated."""
        dropped = []
        for text, caption, mask in zip(texts, fitted, attention_mask):
            kept = sum(mask)
            if caption == text and kept < max_length:
                continue
            full = len(self.tokenizer(self._wrap(text)[0], truncation=False, verbose=False)["input_ids"])
            if full > kept:
                dropped.append(full - kept)
        if dropped:
            warnings.warn(
                f"{len(dropped)} of {len(texts)} captions exceed the {max_length}-token limit and lost their end: "
                f"{sum(dropped)} tokens dropped in all, up to {max(dropped)} from one caption. llm2vec, which made the "
                "released weights and features, cuts them the same way; split long captions into shorter ones to "
                "keep their text.",
                LongTextTruncationWarning,
                stacklevel=4,
            )

    # -- calling ---------------------------------------------------------------------------------------------------

    def __call__(self, text=None, images=None, return_tensors: str | None = "pt", **kwargs) -> BatchFeature:
        """Tokenize `text` (input_ids, attention_mask, pooling_mask) and/or preprocess `images` (pixel_values).

        Options come as keywords or grouped as transformers 5 passes them (`text_kwargs`, `images_kwargs`,
        `common_kwargs`): max_length, doc_max_length, padding, truncation and padding_side go to the text path,
        image processor options to the image processor, return_tensors to both.
        """
        text_options, image_options, asked = route_options(
            "LLM2CLIPProcessor", kwargs, TEXT_OPTIONS, self.image_processor, with_images=images is not None
        )
        return_tensors = return_tensors if asked is None else asked
        if text is None and images is None:
            raise ValueError("LLM2CLIPProcessor needs `text`, `images` or both.")
        data = {}
        if text is not None:
            texts = text_list("LLM2CLIPProcessor", text)
            data.update(self._encode_text(texts, **text_options))
        if images is not None:
            data.update(self.image_processor(images, return_tensors=return_tensors, **image_options))
        return BatchFeature(data=data, tensor_type=return_tensors)

    def _encode_text(
        self,
        texts: list[str],
        max_length: int | None = None,
        doc_max_length: int | None = None,
        padding=True,
        truncation=True,
        padding_side: str | None = None,
    ) -> dict:
        max_length, padding_side = max_length or self.max_length, padding_side or self.padding_side
        if padding not in (True, "longest", "max_length"):
            raise ValueError(
                f"LLM2CLIPProcessor pads every batch (padding True, 'longest' or 'max_length'), got {padding!r}."
            )
        if truncation in (False, "do_not_truncate"):
            raise ValueError(
                "LLM2CLIPProcessor always truncates at max_length, as llm2vec does; truncation=False is not supported."
            )
        if padding_side not in PADDING_SIDES:
            raise ValueError(f"padding_side must be one of {PADDING_SIDES}, got {padding_side!r}.")
        fitted = [self.fit_caption(t, max_length, doc_max_length) for t in texts]
        pairs = [self._wrap(caption) for caption in fitted]
        encoded = self.tokenizer(
            [full for full, _ in pairs],
            padding=padding,
            truncation=True,
            max_length=max_length,
            padding_side=padding_side,
            verbose=False,
        )
        input_ids, attention_mask = encoded["input_ids"], encoded["attention_mask"]
        self._warn_cut(texts, fitted, attention_mask, max_length)
        if self.pooling_scope == "all":
            return {"input_ids": input_ids, "attention_mask": attention_mask, "pooling_mask": attention_mask}
        pooling_mask = []
        for (_, pooled), mask in zip(pairs, attention_mask):
            n, width = self._count(pooled, max_length), len(mask)
            if n == 0:  # llm2vec slices [-0:]: the whole padded row
                pooling_mask.append([1] * width)
                continue
            end = width if padding_side == "left" else sum(mask)  # the last n positions before any right padding
            start = max(end - n, 0)
            pooling_mask.append([0] * start + [1] * (end - start) + [0] * (width - end))
        return {"input_ids": input_ids, "attention_mask": attention_mask, "pooling_mask": pooling_mask}


__all__ = ["LLAMA3_TEXT_TEMPLATE", "LLM2CLIPProcessor", "LLM2VEC_SEPARATOR", "LongTextTruncationWarning"]
