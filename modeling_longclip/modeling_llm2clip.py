"""LLM2CLIP as one self-contained transformers model: CLIP image tower + bidirectional LLM text tower + adapter.

Part of the flat Hub payload: imports only torch, transformers and sibling payload files. The text tower is any
`AutoModel` (Llama, Qwen, Mistral, BERT, ...) built from its own sub-config and run with bidirectional attention (a
padding mask only), as llm2vec does; its pooled output goes through the residual-MLP adapter. Text features can also
start from precomputed pooled LLM embeddings (`text_embeds=`), which is how training and large-scale indexing run.
ProCLIP (modeling_proclip.py) is the same model with CLIP's own projection and output size.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, CLIPVisionModel, PreTrainedModel, SiglipVisionModel
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.clip.modeling_clip import CLIPOutput

from .configuration_eva02 import EVA02VisionConfig  # noqa: F401  (transformers 4.x copies only direct imports)
from .configuration_llm2clip import LLM2CLIPConfig
from .contrastive import contrastive_loss
from .embedding import EmbeddingMixin, scaled_similarity
from .modeling_eva02 import EVA02VisionModel
from .transformers_compat import (
    PreTrainedConfig,
    bidirectional_attention_mask,
    legacy_vision_key_mapping,
    model_output,
)

# Keyword arguments of `forward` that the image tower takes too.
VISION_OPTIONS = ("output_hidden_states", "output_attentions", "interpolate_pos_encoding")
# The image tower class for each `config.vision_tower`; each returns a pooled ModelOutput like CLIPVisionModel.
VISION_TOWERS = {"clip": CLIPVisionModel, "siglip2": SiglipVisionModel, "eva02": EVA02VisionModel}

_HUB_KWARGS = (
    "cache_dir",
    "force_download",
    "local_files_only",
    "token",
    "revision",
    "subfolder",
    "trust_remote_code",
)


class ResidualMLPBlock(nn.Module):
    """y = x + fc2(GELU(fc1(LN(x)))); keys `ln.*`, `fn.0.*` (fc1), `fn.3.*` (fc2) as in the released adapters."""

    def __init__(self, dim: int, expansion: int):
        super().__init__()
        self.ln = nn.LayerNorm(dim)
        self.fn = nn.Sequential(
            nn.Linear(dim, dim * expansion), nn.GELU(), nn.Dropout(0.0), nn.Linear(dim * expansion, dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fn(self.ln(x))


class TextAdapter(nn.Module):
    """The LLM2CLIP adapter: L2-normalize (unless `normalize_input` is False, as LLM2CLIP's SigLIP2 release calls it),
    residual MLP blocks, LayerNorm, Linear (keys `adaptor.{i}.*`)."""

    def __init__(self, dim: int, output_dim: int, blocks: int, expansion: int, normalize_input: bool = True):
        super().__init__()
        layers = [ResidualMLPBlock(dim, expansion) for _ in range(blocks)]
        self.adaptor = nn.Sequential(*layers, nn.LayerNorm(dim), nn.Linear(dim, output_dim))
        self.normalize_input = normalize_input

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.adaptor(F.normalize(pooled, dim=-1) if self.normalize_input else pooled)


def make_bidirectional(model: nn.Module) -> nn.Module:
    """Attention over every non-padded token: transformers builds a bidirectional mask when `config.is_causal` is
    False, and the attention modules' own `is_causal` flag decides what SDPA / flash kernels do without a mask."""
    model.config.is_causal = False
    for module in model.modules():
        if hasattr(module, "is_causal"):
            module.is_causal = False
    return model


def pool_hidden_states(
    hidden: torch.Tensor, pooling_mask: torch.Tensor, mode: str, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """Mean over the pooled tokens, or the last pooled token, computed in `dtype` (None: the hidden states' own, as
    llm2vec pools in the model's dtype), returned in float32 (llm2vec casts after pooling).

    The mean is llm2vec's op exactly, `hidden[i, start:end].mean(dim=0)` per row, so bf16 results match it bit for
    bit; a row whose mask is not one contiguous run falls back to the same mean over the selected positions. An
    all-zero row gives zeros.
    """
    hidden = hidden if dtype is None else hidden.to(dtype)
    mask = pooling_mask.to(hidden.device).bool()
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    counts = mask.sum(dim=1)
    if mode == "last":
        last = (positions * mask).argmax(dim=1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last].float()
    if torch.jit.is_tracing() or torch.compiler.is_compiling():
        # A traced or compiled graph cannot follow per-row slices: the masked mean, equal up to float rounding.
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return ((hidden * weights).sum(dim=1) / counts.clamp(min=1).unsqueeze(-1).to(hidden.dtype)).float()
    starts = torch.where(mask, positions, mask.shape[1]).amin(dim=1)
    ends = (torch.where(mask, positions, -1).amax(dim=1) + 1).clamp(min=0)
    rows = []
    for i, (start, end, count) in enumerate(zip(starts.tolist(), ends.tolist(), counts.tolist())):  # one host sync
        if count == 0:
            rows.append(hidden.new_zeros(hidden.shape[-1]))
        elif end - start == count:
            rows.append(hidden[i, start:end].mean(dim=0))
        else:
            rows.append(hidden[i][mask[i]].mean(dim=0))
    return torch.stack(rows).float()


class DualTowerOutput(CLIPOutput):
    r"""
    What the LLM2CLIP / ProCLIP `forward` returns: `CLIPOutput`'s fields, so CLIP tools and the zero-shot pipeline read
    it unchanged; the text tower output is the LLM's.

    Args:
        loss (`torch.FloatTensor` of shape `(1,)`, *optional*, returned when `return_loss` is `True`):
            Symmetric InfoNCE between the images and texts of the global batch (gathered over processes).
        logits_per_image (`torch.FloatTensor` of shape `(image_batch_size, text_batch_size)`):
            Scaled cosine similarities `logit_scale.exp() * image_embeds @ text_embeds.T`.
        logits_per_text (`torch.FloatTensor` of shape `(text_batch_size, image_batch_size)`):
            `logits_per_image.T`.
        text_embeds (`torch.FloatTensor` of shape `(text_batch_size, projection_dim)`):
            L2-normalized text embeddings: the adapter's output on the pooled LLM embedding.
        image_embeds (`torch.FloatTensor` of shape `(image_batch_size, projection_dim)`):
            L2-normalized image embeddings: the image tower's pooled output through the visual projection.
        text_model_output (`BaseModelOutputWithPooling`, *optional*):
            The LLM's output (`last_hidden_state`, and `hidden_states` / `attentions` when asked) with the projected,
            un-normalized text features as `pooler_output`; `None` when the forward started from `text_embeds`.
        vision_model_output (`BaseModelOutputWithPooling`):
            The image tower's output with the projected, un-normalized image features as `pooler_output`.
    """


class LLM2CLIPPreTrainedModel(PreTrainedModel):
    config_class = LLM2CLIPConfig
    config: LLM2CLIPConfig
    base_model_prefix = "llm2clip"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _no_split_modules = ["CLIPEncoderLayer", "SiglipEncoderLayer", "EVA02EncoderLayer", "ResidualMLPBlock"]


class LLM2CLIPModel(EmbeddingMixin, LLM2CLIPPreTrainedModel):
    def __init__(self, config: LLM2CLIPConfig):
        super().__init__(config)
        # One dtype for the whole model, the one it is built in: a tower's sub-config may name another (configs made
        # from an LLM folder say bfloat16), which `_from_config` would apply to that tower alone, while
        # `from_pretrained` loads every module in one dtype. A fresh model then differs from itself saved and loaded.
        dtype = torch.get_default_dtype()
        self.vision_model = VISION_TOWERS[config.vision_tower]._from_config(config.vision_config, dtype=dtype)
        if config.use_visual_projection:
            self.visual_projection = nn.Linear(
                config.vision_config.hidden_size, config.projection_dim, bias=config.visual_projection_bias
            )
        else:
            self.visual_projection = nn.Identity()
        self.text_model = make_bidirectional(AutoModel.from_config(config.text_config, dtype=dtype))
        self.text_adapter = TextAdapter(
            config.text_config.hidden_size,
            config.projection_dim,
            config.adapter_blocks,
            config.adapter_expansion,
            config.adapter_normalize_input,
        )
        self.logit_scale = nn.Parameter(torch.tensor(float(config.logit_scale_init_value)))
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        """The LLM's token embeddings (transformers' quantizers and embedding resizing ask the model for them)."""
        return self.text_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.text_model.set_input_embeddings(value)

    # -- loading a text tower kept outside the folder -------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """Standard loading; when the config names an external text model, its weights come from there (and their
        absence from this folder is expected, not reported as missing)."""
        config = kwargs.get("config")
        if not isinstance(config, PreTrainedConfig):
            hub = {k: kwargs[k] for k in _HUB_KWARGS if k in kwargs}
            config = cls.config_class.from_pretrained(pretrained_model_name_or_path, **hub)
            kwargs["config"] = config
        key_mapping = legacy_vision_key_mapping(VISION_TOWERS[config.vision_tower])
        if key_mapping:
            kwargs.setdefault("key_mapping", key_mapping)
        source = config.text_model_name_or_path
        if not source:
            return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        previous = cls._keys_to_ignore_on_load_missing
        cls._keys_to_ignore_on_load_missing = [*(previous or []), r"^text_model\."]
        try:
            model = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        finally:
            cls._keys_to_ignore_on_load_missing = previous
        model.load_text_model(source, local_files_only=kwargs.get("local_files_only", False))
        return model

    def load_text_model(self, source: str | os.PathLike, **kwargs) -> None:
        """Replace the text tower's weights with those of a plain text-model folder or Hub repo."""
        text_model = AutoModel.from_pretrained(source, dtype=self.dtype, **kwargs)
        missing, unexpected = self.text_model.load_state_dict(text_model.state_dict(), strict=False)
        if missing or unexpected:
            raise ValueError(
                f"text model at {source} does not match the configured text tower: missing {missing[:5]}, "
                f"unexpected {unexpected[:5]}"
            )

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Leave the text tower's weights out when the config says they live elsewhere."""
        if self.config.text_model_name_or_path and kwargs.get("state_dict") is None:
            kwargs["state_dict"] = {k: v for k, v in self.state_dict().items() if not k.startswith("text_model.")}
        return super().save_pretrained(save_directory, *args, **kwargs)

    # -- features ----------------------------------------------------------------------------------------------

    def run_text_model(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pooling_mask: torch.Tensor | None = None,
        **kwargs,
    ):
        """The text model's output and its pooled, un-normalized embedding (fp32). Pooled in the text model's output
        dtype (llm2vec's bf16 recipe), or in fp32 with `config.pooling_dtype="float32"`."""
        pooling_dtypes = {"model": None, "float32": torch.float32}
        choice = getattr(self.config, "pooling_dtype", "model")
        if choice not in pooling_dtypes:
            raise ValueError(f"config.pooling_dtype must be one of {tuple(pooling_dtypes)}, got {choice!r}.")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        mask = bidirectional_attention_mask(self.text_model, attention_mask, self.text_model.dtype)
        output = self.text_model(input_ids=input_ids, attention_mask=mask, return_dict=True, **kwargs)
        pooled = pool_hidden_states(
            output.last_hidden_state,
            attention_mask if pooling_mask is None else pooling_mask,
            self.config.pooling,
            pooling_dtypes[choice],
        )
        return output, pooled

    def encode_llm(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pooling_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Pooled, un-normalized text-model embeddings in fp32: what the feature cache stores."""
        return self.run_text_model(input_ids, attention_mask, pooling_mask)[1]

    @model_output
    def get_text_features(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pooling_mask: torch.Tensor | None = None,
        text_embeds: torch.Tensor | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling:
        """Projected text features (`pooler_output`) from tokens, or from precomputed pooled LLM `text_embeds`.

        From tokens, `last_hidden_state` / `hidden_states` / `attentions` are the LLM's (the last two when asked
        with `output_hidden_states` / `output_attentions`); from `text_embeds` there is no tower output, only
        `pooler_output`.
        """
        llm = None
        if text_embeds is None:
            if input_ids is None:
                raise ValueError(
                    "get_text_features needs input_ids (with attention_mask / pooling_mask) or text_embeds."
                )
            llm, text_embeds = self.run_text_model(input_ids, attention_mask, pooling_mask, **kwargs)
        output_layer = self.text_adapter.adaptor[-1].weight
        return BaseModelOutputWithPooling(
            last_hidden_state=None if llm is None else llm.last_hidden_state,
            pooler_output=self.text_adapter(text_embeds.to(output_layer.device, output_layer.dtype)),
            hidden_states=None if llm is None else llm.get("hidden_states"),
            attentions=None if llm is None else llm.get("attentions"),
        )

    @model_output
    def get_image_features(self, pixel_values: torch.Tensor, **kwargs) -> BaseModelOutputWithPooling:
        """The image tower's output with the projected features as `pooler_output` (like `CLIPModel`)."""
        outputs = self.vision_model(pixel_values=pixel_values, return_dict=True, **kwargs)
        outputs.pooler_output = self.visual_projection(outputs.pooler_output)
        return outputs

    @model_output
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pooling_mask: torch.Tensor | None = None,
        text_embeds: torch.Tensor | None = None,
        return_loss: bool | None = None,
        **kwargs,
    ) -> DualTowerOutput:
        """Logits between images and texts; with `return_loss=True`, symmetric InfoNCE over the global batch.

        `output_hidden_states` / `output_attentions` reach both towers, as in `CLIPModel`; other keyword arguments
        (e.g. `token_type_ids` from a tokenizer) only the text model; `return_dict=False` gives the output's
        `to_tuple()`, tower outputs as nested tuples (`model_output`, the rule of every model here).
        """
        vision_options = {k: kwargs[k] for k in VISION_OPTIONS if k in kwargs}  # not the tokenizer's extras
        vision_outputs = self.get_image_features(pixel_values=pixel_values, return_dict=True, **vision_options)
        text_options = {k: v for k, v in kwargs.items() if k != "interpolate_pos_encoding"}
        text_outputs = self.get_text_features(
            input_ids, attention_mask, pooling_mask, text_embeds, return_dict=True, **text_options
        )
        image, text, logits_per_text = scaled_similarity(
            vision_outputs.pooler_output, text_outputs.pooler_output, self.logit_scale
        )
        return DualTowerOutput(
            loss=contrastive_loss(image, text, self.logit_scale.exp()) if return_loss else None,
            logits_per_image=logits_per_text.t(),
            logits_per_text=logits_per_text,
            text_embeds=text,
            image_embeds=image,
            text_model_output=text_outputs if text_embeds is None else None,
            vision_model_output=vision_outputs,
        )


__all__ = ["LLM2CLIPModel", "LLM2CLIPPreTrainedModel", "TextAdapter", "make_bidirectional", "pool_hidden_states"]
