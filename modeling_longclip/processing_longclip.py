"""Long-CLIP processor: CLIP image preprocessing plus the CLIP BPE tokenizer at 248 tokens.

Part of the flat Hub payload: imports only torch and transformers. Texts past the context length are truncated like
the original (SOT + first 246 caption tokens + EOT) with a warning that says what was dropped, or, with
`long_text="window"`, split into context-sized windows that `LongCLIPModel.encode_text` pools.
"""

from __future__ import annotations

import warnings

from transformers import BatchFeature, ProcessorMixin

from .transformers_compat import PortableProcessorMixin

LONG_TEXT_MODES = ("truncate", "window")


class LongTextTruncationWarning(UserWarning):
    """Some texts were longer than the model's context and lost their tail."""


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
        super().__init__(image_processor, tokenizer, **kwargs)

    @property
    def context_length(self) -> int:
        return self.tokenizer.model_max_length

    def __call__(
        self,
        text=None,
        images=None,
        long_text: str = "truncate",
        original_padding: bool | None = None,
        return_tensors: str | None = "pt",
        **kwargs,
    ) -> BatchFeature:
        """Tokenize `text` and/or preprocess `images`.

        long_text: "truncate" (default; warns with the number of dropped tokens) or "window" (each text becomes
        ceil(n / (context - 2)) windows; the output gains `window_to_text` and `window_tokens` for pooling).
        """
        if text is None and images is None:
            raise ValueError("LongCLIPProcessor needs `text`, `images` or both.")
        data = {}
        if text is not None:
            texts = [text] if isinstance(text, str) else list(text)
            pad_with_zero = self.original_padding if original_padding is None else original_padding
            data.update(self._encode_text(texts, long_text, pad_with_zero, return_tensors))
        if images is not None:
            data.update(self.image_processor(images, return_tensors=return_tensors, **kwargs))
        return BatchFeature(data=data, tensor_type=return_tensors)

    def _encode_text(self, texts, long_text, pad_with_zero, return_tensors):
        if long_text not in LONG_TEXT_MODES:
            raise ValueError(f"long_text must be one of {LONG_TEXT_MODES}, got {long_text!r}.")
        tokenizer, context = self.tokenizer, self.context_length
        full = tokenizer(texts, add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
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
            ids = [sequence if len(sequence) <= context else [*sequence[: context - 1], eot] for sequence in full]
            overflow = [len(sequence) - context for sequence in full if len(sequence) > context]
            if overflow:
                warnings.warn(
                    f"{len(overflow)} of {len(full)} texts exceed the {context}-token context and were truncated: "
                    f"{sum(overflow)} tokens dropped in all, up to {max(overflow)} from one text. Pass "
                    f"long_text='window' to encode long texts in {context}-token windows instead.",
                    LongTextTruncationWarning,
                    stacklevel=3,
                )
        padded = tokenizer.pad(
            {"input_ids": ids},
            padding="max_length" if pad_with_zero else "longest",
            max_length=context if pad_with_zero else None,
            return_attention_mask=True,
        )
        input_ids, attention_mask = padded["input_ids"], padded["attention_mask"]
        if pad_with_zero:
            input_ids = [[t if m else 0 for t, m in zip(row, mask)] for row, mask in zip(input_ids, attention_mask)]
        return {"input_ids": input_ids, "attention_mask": attention_mask, **extra}


__all__ = ["LongCLIPProcessor", "LongTextTruncationWarning"]
