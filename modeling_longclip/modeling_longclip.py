"""Long-CLIP as a transformers model.

Part of the flat Hub payload: imports only torch, transformers and sibling payload files. `LongCLIPModel` *is* a
`CLIPModel` (same modules, same state-dict keys), so attention backends, gradient checkpointing, device maps and
every CLIP tool work unchanged; it adds knowledge-preserving stretching, the Long-CLIP training loss and a
strings/images-to-embeddings path.
"""

from __future__ import annotations

import os

import torch
from torch import nn
from transformers import CLIPConfig, CLIPModel
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.clip.modeling_clip import CLIPOutput

from .configuration_longclip import LongCLIPConfig
from .contrastive import long_clip_loss
from .embedding import EmbeddingMixin, scaled_similarity
from .transformers_compat import CLIP_TOWER_AS_DICT, model_output

POSITION_EMBEDDING_KEY = "text_model.embeddings.position_embedding.weight"


def stretch_position_embeddings(
    table: torch.Tensor, keep: int = 20, ratio: int = 4, exact_fp16: bool = False
) -> torch.Tensor:
    """Knowledge-preserving stretching of a [n, width] position table to keep + (n - keep) * ratio rows.

    Rows < keep are copied; each later gap is linearly interpolated into `ratio` rows; the last `ratio` rows
    extrapolate from the final difference. `exact_fp16=True` repeats the original fp16 arithmetic (one rounding per
    operation, `(3 * a) / 4 + (1 * b) / 4` order) and reproduces the released tables bit for bit.
    """
    n, _ = table.shape
    if not 0 <= keep <= n - 2:
        raise ValueError(f"keep={keep} must lie in [0, {n - 2}] for a table of {n} rows.")
    if ratio < 1:
        raise ValueError(f"ratio must be a positive integer, got {ratio}.")
    dtype = torch.float16 if exact_fp16 else torch.float32
    src = table.detach().to(dtype)
    head, a, b = src[:keep], src[keep:-1], src[keep + 1 :]
    rows = []
    for j in range(ratio):
        if exact_fp16:
            rows.append(((ratio - j) * a) / ratio + (j * b) / ratio if j else a)
        else:
            rows.append(a * ((ratio - j) / ratio) + b * (j / ratio))
    interpolated = torch.stack(rows, dim=1).reshape(-1, src.shape[1])
    last, step = src[-1], src[-1] - src[-2]
    tail = torch.stack([last + (j * step) / ratio if j else last for j in range(ratio)])
    return torch.cat([head, interpolated, tail]).to(table.dtype)


class PartiallyFrozenEmbedding(nn.Embedding):
    """A position table whose first `keep` rows never receive a gradient (Long-CLIP keeps them as in CLIP).

    The rows are detached inside `forward`, so this holds under any training loop or engine (DDP, DeepSpeed, FSDP);
    the parameter and its state-dict key stay those of a plain `nn.Embedding`.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, keep: int):
        super().__init__(num_embeddings, embedding_dim)
        self.keep = keep

    def forward(self, position_ids: torch.Tensor) -> torch.Tensor:
        weight = self.weight
        if self.keep and weight.requires_grad:
            weight = torch.cat([weight[: self.keep].detach(), weight[self.keep :]])
        return nn.functional.embedding(position_ids, weight)


def _clip_config_as_longclip(clip_config: CLIPConfig, **overrides) -> LongCLIPConfig:
    fields = {
        "text_config": clip_config.text_config.to_dict(),
        "vision_config": clip_config.vision_config.to_dict(),
        "projection_dim": clip_config.projection_dim,
        "logit_scale_init_value": clip_config.logit_scale_init_value,
    }
    fields.update(overrides)
    return LongCLIPConfig(**fields)


class LongCLIPModel(EmbeddingMixin, CLIPModel):
    config_class = LongCLIPConfig
    config: LongCLIPConfig
    causal_text_tower = True  # CLIP's text transformer: causal attention, pooled at the EOT token

    def __init__(self, config: LongCLIPConfig):
        super().__init__(config)
        # CLIPModel builds each tower in its sub-config's dtype when one is named (a config taken from a loaded CLIP
        # says its dtype); `from_pretrained` loads every module in one dtype, so a fresh model is built in one too.
        self.to(torch.get_default_dtype())
        embeddings = self.text_model.embeddings
        table = embeddings.position_embedding
        frozen = PartiallyFrozenEmbedding(table.num_embeddings, table.embedding_dim, config.keep_positions)
        frozen.weight = table.weight
        embeddings.position_embedding = frozen

    @classmethod
    def from_clip(
        cls,
        clip: CLIPModel | str | os.PathLike,
        keep: int = 20,
        ratio: int = 4,
        exact_fp16: bool = False,
        **from_pretrained_kwargs,
    ) -> LongCLIPModel:
        """Stretch a CLIP model (object or local folder / Hub id) into a Long-CLIP model.

        The text position table grows to keep + (n - keep) * ratio rows; every other weight is copied unchanged.
        """
        if not isinstance(clip, nn.Module):
            clip = CLIPModel.from_pretrained(clip, **from_pretrained_kwargs)
        state_dict = {k: v.detach().clone() for k, v in clip.state_dict().items()}
        if POSITION_EMBEDDING_KEY not in state_dict:
            raise ValueError(f"{type(clip).__name__} has no `{POSITION_EMBEDDING_KEY}`: not a CLIP text tower.")
        table = stretch_position_embeddings(state_dict[POSITION_EMBEDDING_KEY], keep, ratio, exact_fp16)
        state_dict[POSITION_EMBEDDING_KEY] = table
        text_config = clip.config.text_config.to_dict()
        text_config["max_position_embeddings"] = table.shape[0]
        config = _clip_config_as_longclip(clip.config, text_config=text_config, keep_positions=keep)
        model = cls(config).to(table.dtype)
        model.load_state_dict(state_dict, strict=True)
        return model

    @model_output
    def get_text_features(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling:
        """The text tower's output with the projected features as `pooler_output`, as transformers 5's `CLIPModel`
        gives it (4.x's gave the bare tensor): the same on every version, and under the output rule of this package."""
        outputs = self.text_model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            **CLIP_TOWER_AS_DICT,
            **kwargs,
        )
        outputs.pooler_output = self.text_projection(outputs.pooler_output)
        return outputs

    @model_output
    def get_image_features(
        self, pixel_values: torch.Tensor | None = None, interpolate_pos_encoding: bool = False, **kwargs
    ) -> BaseModelOutputWithPooling:
        """The image tower's output with the projected features as `pooler_output` (see `get_text_features`)."""
        outputs = self.vision_model(
            pixel_values=pixel_values,
            interpolate_pos_encoding=interpolate_pos_encoding,
            **CLIP_TOWER_AS_DICT,
            **kwargs,
        )
        outputs.pooler_output = self.visual_projection(outputs.pooler_output)
        return outputs

    @model_output
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        short_input_ids: torch.LongTensor | None = None,
        short_attention_mask: torch.Tensor | None = None,
        return_loss: bool | None = None,
        interpolate_pos_encoding: bool = False,
        **kwargs,
    ) -> CLIPOutput:
        """CLIP forward; with `return_loss=True` the Long-CLIP loss when short captions are given, else the CLIP loss.

        The loss gathers features from every process of an initialized process group (with gradients), so the
        negatives span the global batch whoever calls `forward`. The towers are asked for dicts explicitly (stock
        `CLIPModel.forward` breaks under `config.return_dict=False`); `return_dict=False` (argument or config) gives
        `CLIPOutput.to_tuple()` (`model_output`, the rule of every model here).
        """
        vision_outputs = self.get_image_features(
            pixel_values=pixel_values, interpolate_pos_encoding=interpolate_pos_encoding, return_dict=True, **kwargs
        )
        text_outputs = self.get_text_features(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, return_dict=True, **kwargs
        )
        image_embeds, text_embeds, logits_per_text = scaled_similarity(
            vision_outputs.pooler_output, text_outputs.pooler_output, self.logit_scale
        )
        loss = None
        if return_loss:
            short_embeds = None
            if short_input_ids is not None:
                short_embeds = self.get_text_features(
                    input_ids=short_input_ids, attention_mask=short_attention_mask, return_dict=True
                ).pooler_output
                short_embeds = short_embeds / short_embeds.norm(dim=-1, keepdim=True)
            loss = long_clip_loss(
                image_embeds,
                text_embeds,
                self.logit_scale.exp(),
                short_text_embeds=short_embeds,
                pca_components=self.config.pca_components,
                label_smoothing=self.config.label_smoothing if short_embeds is not None else 0.0,
                short_weight=self.config.short_caption_loss_weight,
            )
        return CLIPOutput(
            loss=loss,
            logits_per_image=logits_per_text.t(),
            logits_per_text=logits_per_text,
            text_embeds=text_embeds,
            image_embeds=image_embeds,
            text_model_output=text_outputs,
            vision_model_output=vision_outputs,
        )


__all__ = ["LongCLIPModel", "PartiallyFrozenEmbedding", "stretch_position_embeddings"]
