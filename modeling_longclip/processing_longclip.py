"""Long-CLIP processor: CLIP image preprocessing plus the CLIP BPE tokenizer at 248 tokens.

Part of the flat Hub payload: imports only torch, transformers and sibling payload files. Text is cleaned like the
original tokenizer (see tokenization_longclip). Texts past the context length are truncated like the original
(SOT + first 246 caption tokens + EOT) with a warning that says what was dropped, or, with `long_text="window"`, split
into context-sized windows that `LongCLIPModel.encode_text` pools.
"""

from __future__ import annotations

import copy
import importlib

from transformers import AutoImageProcessor, AutoTokenizer, BatchFeature, CLIPTokenizer, ProcessorMixin

from .configuration_longclip import LongCLIPConfig
from .image_processing_longclip import LongCLIPImageProcessor
from .processing_options import LongTextTruncationWarning, route_options, text_list
from .tokenization_longclip import LongCLIPTokenizer, clean_texts, warn_truncated
from .transformers_compat import LEGACY_TRANSFORMERS, PortableProcessorMixin

LONG_TEXT_MODES = ("truncate", "window")
TEXT_OPTIONS = ("long_text", "original_padding", "padding", "truncation", "max_length")
PADDING_VALUES = (True, False, "longest", "max_length", "do_not_pad")

# Folders name LongCLIPTokenizer / LongCLIPImageProcessor (every family uses the latter); registered by name, they load
# without remote code wherever this module is imported, and through auto_map where it is not.
AutoTokenizer.register(LongCLIPConfig, fast_tokenizer_class=LongCLIPTokenizer, exist_ok=True)
try:
    _auto_image_processor = AutoImageProcessor.register and AutoImageProcessor
except ImportError:  # transformers < 5.20 without torchvision exports a placeholder; its processors use the module's
    _auto_image_processor = importlib.import_module(
        "transformers.models.auto.image_processing_auto"
    ).AutoImageProcessor
# 4.x accepts only BaseImageProcessorFast subclasses as the fast class; this one serves both roles on 5.x.
_image_processor_roles = {"slow_image_processor_class": LongCLIPImageProcessor}
if not LEGACY_TRANSFORMERS:
    _image_processor_roles["fast_image_processor_class"] = LongCLIPImageProcessor
_auto_image_processor.register(LongCLIPConfig, **_image_processor_roles, exist_ok=True)


def as_cleaning_tokenizer(tokenizer):
    """A plain `CLIPTokenizer` becomes a `LongCLIPTokenizer` copy (same files, cleans text); others are kept."""
    if type(tokenizer) is CLIPTokenizer:
        tokenizer = copy.deepcopy(tokenizer)
        tokenizer.__class__ = LongCLIPTokenizer  # a subclass without state of its own: only the behaviour changes
    return tokenizer


class LongCLIPProcessor(PortableProcessorMixin, ProcessorMixin):
    r"""
    Wraps a CLIP image processor and a CLIP tokenizer (context length = `tokenizer.model_max_length`).

    original_padding (`bool`, defaults to `False`):
        Pad every text to the full context with id 0, exactly like the original Long-CLIP tokenizer, instead of
        padding to the longest text with EOT. Pooled features are identical either way; per-token hidden states
        (used by diffusion text encoders) differ at the padded positions.
    """

    def __init__(self, image_processor=None, tokenizer=None, original_padding: bool = False, **kwargs):
        self.original_padding = original_padding
        super().__init__(image_processor, as_cleaning_tokenizer(tokenizer), **kwargs)

    @property
    def context_length(self) -> int:
        return self.tokenizer.model_max_length

    def clean_text(self, texts: list[str]) -> list[str]:
        """The texts as the original tokenizer sees them (ftfy, HTML unescaping, whitespace, lower-case)."""
        return clean_texts(list(texts))

    def count_tokens(self, texts: list[str], special_tokens: bool = True) -> list[int]:
        """Token count of each cleaned, untruncated text (with SOT and EOT unless `special_tokens=False`)."""
        return [len(ids) for ids in self._ids(list(texts), add_special_tokens=special_tokens)]

    def _ids(self, texts: list[str], add_special_tokens: bool = True) -> list[list[int]]:
        if not isinstance(self.tokenizer, LongCLIPTokenizer):  # a tokenizer that does not clean by itself
            texts = self.clean_text(texts)
        encoded = self.tokenizer(texts, add_special_tokens=add_special_tokens, truncation=False, verbose=False)
        return encoded["input_ids"]

    def __call__(self, text=None, images=None, return_tensors: str | None = "pt", **kwargs) -> BatchFeature:
        """Tokenize `text` and/or preprocess `images`.

        Text options: long_text "truncate" (default; warns with the number of dropped tokens) or "window" (each text
        becomes ceil(n / (context - 2)) windows; the output gains `window_to_text` and `window_tokens` for pooling);
        original_padding; padding (True / "longest", "max_length", or False for unpadded lists when
        return_tensors=None); truncation (the text is always truncated to
        fit; False refuses texts that would be); max_length (at most the context). Any other keyword goes to the
        image processor. transformers 5's grouped form (`text_kwargs`, `images_kwargs`, `common_kwargs`, as
        sentence-transformers passes them) is accepted too; `audio_kwargs` / `videos_kwargs` have nothing to apply
        to and are ignored.
        """
        if text is None and images is None:
            raise ValueError("LongCLIPProcessor needs `text`, `images` or both.")
        text_options, image_options, asked = route_options(
            "LongCLIPProcessor", kwargs, TEXT_OPTIONS, self.image_processor, with_images=images is not None
        )
        return_tensors = return_tensors if asked is None else asked
        data = {}
        if text is not None:
            texts = text_list("LongCLIPProcessor", text)
            data.update(self._encode_text(texts, return_tensors=return_tensors, **text_options))
        if images is not None:
            data.update(self.image_processor(images, return_tensors=return_tensors, **image_options))
        return BatchFeature(data=data, tensor_type=return_tensors)

    def _encode_text(
        self,
        texts,
        long_text="truncate",
        original_padding=None,
        padding=True,
        truncation=None,
        max_length=None,
        return_tensors=None,
    ):
        if long_text not in LONG_TEXT_MODES:
            raise ValueError(f"long_text must be one of {LONG_TEXT_MODES}, got {long_text!r}.")
        if padding not in PADDING_VALUES:
            raise ValueError(f"padding must be one of {PADDING_VALUES}, got {padding!r}.")
        pad_with_zero = self.original_padding if original_padding is None else original_padding
        context = self.context_length if max_length is None else max_length
        if not isinstance(context, int) or not 2 < context <= self.context_length:
            raise ValueError(f"max_length must be an int in 3..{self.context_length}, got {max_length!r}.")
        tokenizer, full = self.tokenizer, self._ids(texts)
        sot, eot = tokenizer.bos_token_id, tokenizer.eos_token_id
        room = context - 2
        extra = {}
        if long_text == "window":
            ids, window_to_text, window_tokens = [], [], []
            for index, sequence in enumerate(full):
                content = sequence[1:-1]
                for start in range(0, max(len(content), 1), room):
                    chunk = content[start : start + room]
                    ids.append([sot, *chunk, eot])
                    window_to_text.append(index)
                    window_tokens.append(max(len(chunk), 1))
            extra = {"window_to_text": window_to_text, "window_tokens": window_tokens}
        else:
            too_long = [len(s) for s in full if len(s) > context]
            if too_long and truncation is False:
                raise ValueError(
                    f"{len(too_long)} of {len(full)} texts exceed the {context}-token context (longest: "
                    f"{max(too_long)} tokens) and truncation=False; pass long_text='window' to keep every token."
                )
            ids = [sequence if len(sequence) <= context else [*sequence[: context - 1], eot] for sequence in full]
            warn_truncated([len(s) for s in full], context, stacklevel=4)
        to_context = pad_with_zero or padding == "max_length"
        if padding in (False, "do_not_pad") and not to_context and return_tensors is None:
            return {"input_ids": ids, "attention_mask": [[1] * len(row) for row in ids], **extra}
        padded = tokenizer.pad(
            {"input_ids": ids},
            padding="max_length" if to_context else "longest",
            max_length=context if to_context else None,
            return_attention_mask=True,
        )
        input_ids, attention_mask = padded["input_ids"], padded["attention_mask"]
        if pad_with_zero:
            input_ids = [[t if m else 0 for t, m in zip(row, mask)] for row, mask in zip(input_ids, attention_mask)]
        return {"input_ids": input_ids, "attention_mask": attention_mask, **extra}


__all__ = ["LongCLIPProcessor", "LongTextTruncationWarning"]
