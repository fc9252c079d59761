"""open_clip as the independent reference: its tokenizer and its OpenAI-CLIP text / vision towers (imported without
torchvision, see modeling_longclip.converters.open_clip_modules)."""

from __future__ import annotations

import pytest
import torch

from modeling_longclip.converters.open_clip_modules import import_open_clip_modules


def _import_open_clip_modules():
    try:
        return import_open_clip_modules()
    except ImportError as error:
        pytest.skip(str(error))


def open_clip_tokenize(texts: list[str], context_length: int) -> torch.Tensor:
    """Original-style ids: SOT + content (+ EOT), truncated to the context, padded with 0."""
    _, tokenizer = _import_open_clip_modules()
    return tokenizer.SimpleTokenizer(context_length=context_length)(texts)


def open_clip_towers(state_dict: dict, keep: int = 20):
    """open_clip text and vision towers holding an OpenAI/Long-CLIP state dict (Long-CLIP tables combined by mask)."""
    transformer, _ = _import_open_clip_modules()
    sd = {k: v.float() for k, v in state_dict.items()}
    positions = sd["positional_embedding"]
    if "positional_embedding_res" in sd:  # the original's 0/1 masks, not a slice-and-concatenate
        rows = torch.arange(positions.shape[0]).unsqueeze(1)
        positions = positions * (rows < keep).float() + sd["positional_embedding_res"] * (rows >= keep).float()
    vocab, width = sd["token_embedding.weight"].shape
    text_layers = len({k.split(".")[2] for k in sd if k.startswith("transformer.resblocks.")})
    text = transformer.TextTransformer(
        context_length=positions.shape[0],
        vocab_size=vocab,
        width=width,
        heads=width // 64,
        layers=text_layers,
        mlp_ratio=sd["transformer.resblocks.0.mlp.c_fc.weight"].shape[0] / width,
        output_dim=sd["text_projection"].shape[1],
        act_layer=transformer.QuickGELU,
    )
    text_sd = {
        k: v
        for k, v in sd.items()
        if not k.startswith("visual.") and k not in ("logit_scale", "positional_embedding_res")
    }
    text_sd["positional_embedding"] = positions
    text.load_state_dict(text_sd, strict=True)

    vis = {k[len("visual.") :]: v for k, v in sd.items() if k.startswith("visual.")}
    v_width, patch = vis["conv1.weight"].shape[0], vis["conv1.weight"].shape[-1]
    grid = int((vis["positional_embedding"].shape[0] - 1) ** 0.5)
    vision = transformer.VisionTransformer(
        image_size=grid * patch,
        patch_size=patch,
        width=v_width,
        heads=v_width // 64,
        layers=len({k.split(".")[2] for k in vis if k.startswith("transformer.resblocks.")}),
        mlp_ratio=vis["transformer.resblocks.0.mlp.c_fc.weight"].shape[0] / v_width,
        output_dim=vis["proj"].shape[1],
        act_layer=transformer.QuickGELU,
    )
    vision.load_state_dict(vis, strict=True)
    return text.eval(), vision.eval()
