"""LLM2CLIP / ProCLIP processor: CLIP image preprocessing plus the LLM tokenizer with llm2vec's encoding semantics.

Part of the flat Hub payload: imports only transformers. For the Llama-3 text tower of LLM2CLIP this reproduces
llm2vec 0.2.3 exactly: the caption is stripped, cut at the word level to `max_length` tokens, wrapped in the Llama-3
user turn (`<|start_header_id|>user<|end_header_id|>\\n\\n` + caption + `<|eot_id|>`, BOS added by the tokenizer),
left-padded with EOS, and only the caption tokens and `<|eot_id|>` are pooled (the BOS and header tokens attend but do
not count). The template, padding side and pooled scope are settings saved with the processor, so other text models
(Qwen, Mistral, BERT, ...) use their own.
"""

from __future__ import annotations

from transformers import BatchFeature, ProcessorMixin

from .transformers_compat import PortableProcessorMixin

LLAMA3_TEXT_TEMPLATE = "<|start_header_id|>user<|end_header_id|>\n\n{caption}<|eot_id|>"
POOLING_SCOPES = ("caption", "all")


class LLM2CLIPProcessor(PortableProcessorMixin, ProcessorMixin):
    r"""
    text_template (`str`): the caption's wrapper; "{caption}" marks where the caption goes.
    pooling_scope (`str`): "caption" pools the caption tokens and whatever the template puts after them (llm2vec);
        "all" pools every non-padding token (sentence-transformers style mean pooling for encoder models).
    max_length (`int`, defaults to 512): token budget; longer captions lose whole words first, like llm2vec.
    padding_side (`str`, defaults to "left").
    """

    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        text_template: str = LLAMA3_TEXT_TEMPLATE,
        pooling_scope: str = "caption",
        max_length: int = 512,
        padding_side: str = "left",
        **kwargs,
    ):
        if "{caption}" not in text_template:
            raise ValueError(f"text_template must contain '{{caption}}', got {text_template!r}.")
        if pooling_scope not in POOLING_SCOPES:
            raise ValueError(f"pooling_scope must be one of {POOLING_SCOPES}, got {pooling_scope!r}.")
        self.text_template, self.pooling_scope = text_template, pooling_scope
        self.max_length, self.padding_side = max_length, padding_side
        super().__init__(image_processor, tokenizer, **kwargs)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    def fit_caption(self, caption: str) -> str:
        """Strip, then drop trailing words until the caption alone fits `max_length` tokens (llm2vec's loop)."""
        caption = caption.strip()
        count = self._count(caption)
        while count > self.max_length:
            words = caption.split()
            caption = " ".join(words[: int(len(words) * self.max_length / count)])
            count = self._count(caption)
        return caption

    def _count(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])

    def wrap(self, caption: str) -> str:
        return self.text_template.replace("{caption}", caption)

    def __call__(self, text=None, images=None, return_tensors: str | None = "pt", **kwargs) -> BatchFeature:
        """Tokenize `text` (input_ids, attention_mask, pooling_mask) and/or preprocess `images` (pixel_values)."""
        if text is None and images is None:
            raise ValueError("LLM2CLIPProcessor needs `text`, `images` or both.")
        data = {}
        if text is not None:
            data.update(self._encode_text([text] if isinstance(text, str) else list(text)))
        if images is not None:
            data.update(self.image_processor(images, return_tensors=return_tensors, **kwargs))
        return BatchFeature(data=data, tensor_type=return_tensors)

    def _encode_text(self, texts: list[str]) -> dict:
        captions = [self.fit_caption(t) for t in texts]
        self.tokenizer.padding_side = self.padding_side
        encoded = self.tokenizer(
            [self.wrap(c) for c in captions], padding=True, truncation=True, max_length=self.max_length, verbose=False
        )
        input_ids, attention_mask = encoded["input_ids"], encoded["attention_mask"]
        if self.pooling_scope == "all":
            return {"input_ids": input_ids, "attention_mask": attention_mask, "pooling_mask": attention_mask}
        suffix = self.text_template.split("{caption}", 1)[1]
        pooling_mask = []
        for caption, mask in zip(captions, attention_mask):
            pooled = len(
                self.tokenizer(caption + suffix, add_special_tokens=False, truncation=True, max_length=self.max_length)[
                    "input_ids"
                ]
            )
            real = [i for i, m in enumerate(mask) if m]
            keep = set(real[-pooled:]) if pooled else set()
            pooling_mask.append([1 if i in keep else 0 for i in range(len(mask))])
        return {"input_ids": input_ids, "attention_mask": attention_mask, "pooling_mask": pooling_mask}


__all__ = ["LLAMA3_TEXT_TEMPLATE", "LLM2CLIPProcessor"]
