"""LLM2CLIP as one self-contained transformers model: CLIP image tower + bidirectional LLM text tower + adapter.

Part of the flat Hub payload: imports only torch, transformers and sibling payload files. The text tower is any
`AutoModel` (Llama, Qwen, Mistral, BERT, ...) built from its own sub-config and run with bidirectional attention (a
padding mask only), as llm2vec does; its pooled output goes through the residual-MLP adapter. Text features can also
start from precomputed pooled LLM embeddings (`text_embeds=`), which is how training and large-scale indexing run.
ProCLIP (modeling_proclip.py) is the same model with CLIP's own projection and output size.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, CLIPVisionModel, PreTrainedConfig, PreTrainedModel, SiglipVisionModel
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.utils import ModelOutput

from .configuration_llm2clip import LLM2CLIPConfig
from .contrastive import contrastive_loss
from .embedding import EmbeddingMixin
from .modeling_eva02 import EVA02VisionModel


# The image tower class for each `config.vision_tower`; each returns a pooled ModelOutput like CLIPVisionModel.
VISION_TOWERS = {"clip": CLIPVisionModel, "siglip2": SiglipVisionModel, "eva02": EVA02VisionModel}

_HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder", "trust_remote_code")


class ResidualMLPBlock(nn.Module):
    """y = x + fc2(GELU(fc1(LN(x)))); keys `ln.*`, `fn.0.*` (fc1), `fn.3.*` (fc2) as in the released adapters."""

    def __init__(self, dim: int, expansion: int):
        super().__init__()
        self.ln = nn.LayerNorm(dim)
        self.fn = nn.Sequential(nn.Linear(dim, dim * expansion), nn.GELU(), nn.Dropout(0.0), nn.Linear(dim * expansion, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fn(self.ln(x))


class TextAdapter(nn.Module):
    """The LLM2CLIP adapter: L2-normalize, residual MLP blocks, LayerNorm, Linear (keys `adaptor.{i}.*`)."""

    def __init__(self, dim: int, output_dim: int, blocks: int, expansion: int):
        super().__init__()
        layers = [ResidualMLPBlock(dim, expansion) for _ in range(blocks)]
        self.adaptor = nn.Sequential(*layers, nn.LayerNorm(dim), nn.Linear(dim, output_dim))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.adaptor(F.normalize(pooled, dim=-1))


def make_bidirectional(model: nn.Module) -> nn.Module:
    """Attention over every non-padded token: transformers builds a bidirectional mask when `config.is_causal` is
    False, and the attention modules' own `is_causal` flag decides what SDPA / flash kernels do without a mask."""
    model.config.is_causal = False
    for module in model.modules():
        if hasattr(module, "is_causal"):
            module.is_causal = False
    return model


def pool_hidden_states(hidden: torch.Tensor, pooling_mask: torch.Tensor, mode: str) -> torch.Tensor:
    """Mean over the pooled tokens, or the last pooled token; in fp32 like llm2vec."""
    mask = pooling_mask.to(hidden.device, torch.float32)
    if mode == "last":
        positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
        last = (positions * mask).argmax(dim=1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last].float()
    counts = mask.sum(dim=1, keepdim=True).clamp(min=1.0)
    return (hidden.float() * mask.unsqueeze(-1)).sum(dim=1) / counts


@dataclass
class DualTowerOutput(ModelOutput):
    """Like `CLIPOutput`: the zero-shot pipeline reads `logits_per_image`."""

    loss: torch.FloatTensor | None = None
    logits_per_image: torch.FloatTensor | None = None
    logits_per_text: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None


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
        self.vision_model = VISION_TOWERS[config.vision_tower]._from_config(config.vision_config)
        if config.use_visual_projection:
            self.visual_projection = nn.Linear(
                config.vision_config.hidden_size, config.projection_dim, bias=config.visual_projection_bias
            )
        else:
            self.visual_projection = nn.Identity()
        self.text_model = make_bidirectional(AutoModel.from_config(config.text_config))
        self.text_adapter = TextAdapter(
            config.text_config.hidden_size, config.projection_dim, config.adapter_blocks, config.adapter_expansion
        )
        self.logit_scale = nn.Parameter(torch.tensor(float(config.logit_scale_init_value)))
        self.post_init()

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

    def encode_llm(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pooling_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Pooled, un-normalized text-model embeddings in fp32: what the feature cache stores."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        hidden = self.text_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return pool_hidden_states(hidden, attention_mask if pooling_mask is None else pooling_mask, self.config.pooling)

    def get_text_features(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pooling_mask: torch.Tensor | None = None,
        text_embeds: torch.Tensor | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling:
        """Projected text features (`pooler_output`) from tokens, or from precomputed pooled LLM `text_embeds`."""
        if text_embeds is None:
            if input_ids is None:
                raise ValueError("get_text_features needs input_ids (with attention_mask / pooling_mask) or text_embeds.")
            text_embeds = self.encode_llm(input_ids, attention_mask, pooling_mask)
        output_layer = self.text_adapter.adaptor[-1].weight
        features = self.text_adapter(text_embeds.to(output_layer.device, output_layer.dtype))
        return BaseModelOutputWithPooling(last_hidden_state=None, pooler_output=features)

    def get_image_features(self, pixel_values: torch.Tensor, **kwargs) -> BaseModelOutputWithPooling:
        outputs = self.vision_model(pixel_values=pixel_values, **kwargs)
        outputs.pooler_output = self.visual_projection(outputs.pooler_output)
        return outputs

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
        """Logits between images and texts; with `return_loss=True`, symmetric InfoNCE over the global batch."""
        image = self.get_image_features(pixel_values=pixel_values).pooler_output
        text = self.get_text_features(input_ids, attention_mask, pooling_mask, text_embeds).pooler_output
        image = image / image.norm(dim=-1, keepdim=True)
        text = text / text.norm(dim=-1, keepdim=True)
        scale = self.logit_scale.exp()
        logits_per_text = scale * text @ image.t().to(text.device)
        loss = contrastive_loss(image, text, scale) if return_loss else None
        return DualTowerOutput(loss, logits_per_text.t(), logits_per_text, text, image)


__all__ = ["LLM2CLIPModel", "LLM2CLIPPreTrainedModel", "TextAdapter", "make_bidirectional", "pool_hidden_states"]
