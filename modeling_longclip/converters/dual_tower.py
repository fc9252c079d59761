"""What the LLM2CLIP, ProCLIP and SigLIP2-release converters share: the text model (an LLM folder or Hub id), the
residual-MLP adapter's shapes, the llm2vec-exact processor, the independent fp32 parity check of both towers, and the
model card."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModel, AutoTokenizer

from ..common.errors import CheckpointError, ConversionError
from ..embedding import pooled_features
from ..export.cards import render_model_card
from ..modeling_llm2clip import LLM2CLIPModel
from ..processing_llm2clip import LLAMA3_TEXT_TEMPLATE, LLM2CLIPProcessor
from .clip_preprocessing import clip_image_processor
from .openai_clip import reference_image_features
from .reference_llm import reference_adapter, reference_bidirectional_llama, reference_mean_pool
from .state_dicts import count_layers

VERIFICATION_CAPTIONS = (
    "A dog.",
    "A red bicycle leaning against a brick wall next to a blue door, with a basket of flowers on the handlebar.",
    "Aerial view of a harbour at dawn: fishing boats, a lighthouse, gulls over the masts and a van by the cafe. " * 4,
)


# What a parity refusal tells the user: nothing was written, what usually causes it, and what to do.
PARITY_ADVICE = (
    "nothing was written. The weights fit the release's shapes but do not compute like it (another activation, head "
    "count, pooling or adapter layout than the release this converter reads); if they are an unmodified release, "
    "please report this with these numbers."
)

LLAMA3_SPECIAL_TOKENS = ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")


def resolve_source(source: str | Path, what: str) -> Path:
    """A local folder as is; otherwise a Hub repo id, downloaded (a clear error when offline or unreachable)."""
    path = Path(source)
    if path.is_dir():
        return path
    if path.exists():
        raise ConversionError(f"{what} {source} is a file; give the folder (or Hub repo id) that holds it.")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError

    try:
        return Path(
            snapshot_download(
                str(source), allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model", "*.bin", "*.pt"]
            )
        )
    except HFValidationError:
        raise ConversionError(f"{what} {source}: no such folder, and not a valid Hub repo id.") from None
    except Exception as error:  # noqa: BLE001 - offline, unreachable, gated, missing: all one message
        raise ConversionError(
            f"{what} {source}: no such folder, and downloading it from the Hub failed "
            f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}). Offline, pass a local folder."
        ) from None


CONVERTED_MODEL_TYPES = ("longclip", "llm2clip", "proclip")


def refuse_converted_folder(path: str | Path, flag: str) -> None:
    """A folder this package already wrote (config.json with one of its model types) needs no conversion: say so
    instead of failing on its keys."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return
    try:
        model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return
    if model_type in CONVERTED_MODEL_TYPES:
        raise CheckpointError(
            f"{flag} {path}: a folder converted by this package (model_type {model_type}), not an authors' release; "
            "it needs no conversion: load it with AutoModel.from_pretrained(folder, trust_remote_code=True)."
        )


def describe_foreign_checkpoint(state_dict: dict) -> str | None:
    """What a checkpoint without a text adapter is, when it is one of the others this package reads, with the command
    that takes it; None when it is not recognised."""
    keys = set(state_dict)
    if "positional_embedding_res" in keys:
        return (
            "a Long-CLIP checkpoint (OpenAI CLIP keys with the two text position tables), not an LLM2CLIP / ProCLIP "
            "release: convert it with longclip-convert (python conversion/convert_longclip.py)"
        )
    if {"token_embedding.weight", "positional_embedding"} <= keys:
        return (
            "an OpenAI CLIP checkpoint with its own text tower and no LLM text adapter, not an LLM2CLIP / ProCLIP "
            "release: longclip-convert turns it into a Long-CLIP folder"
        )
    if any(k.startswith("text_model.embeddings.") for k in keys):
        return (
            "the weights of a transformers CLIPModel (a converted Long-CLIP or stock CLIP folder), which has no LLM "
            "text adapter: it needs no conversion, load it with AutoModel.from_pretrained"
        )
    return None


def refuse_without_adapter(state_dict: dict, prefixes: tuple[str, ...], source: str) -> None:
    """A checkpoint with no key under any adapter prefix is named for what it is (when recognised)."""
    if any(k.startswith(prefixes) for k in state_dict):
        return
    what = describe_foreign_checkpoint(state_dict)
    if what is not None:
        raise CheckpointError(f"{source}: {what}.")


def stored_location(source: str | Path) -> str:
    """Where a text model lives, as a folder's config records it: a local folder as an absolute path (a relative one
    would only resolve from the directory the conversion ran in), a Hub id as it is."""
    path = Path(source).expanduser()
    return os.path.abspath(path) if path.is_dir() else str(source)


def load_weights_folder(folder: Path) -> dict[str, torch.Tensor]:
    """All tensors of a model folder: model.safetensors, sharded safetensors, or pytorch_model.bin (weights_only)."""
    index = folder / "model.safetensors.index.json"
    if (folder / "model.safetensors").is_file():
        return load_file(folder / "model.safetensors")
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return {k: v for shard in shards for k, v in load_file(folder / shard).items()}
    if (folder / "pytorch_model.bin").is_file():
        return torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise CheckpointError(f"{folder}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin.")


def adapter_shape(state_dict: dict, prefix: str) -> tuple[int, int, int, int]:
    """(blocks, expansion, input dim, output dim) of an `adaptor` Sequential, read from the shapes."""
    blocks = count_layers({k: v for k, v in state_dict.items() if k.endswith(".fn.0.weight")}, prefix)
    final = state_dict.get(f"{prefix}{blocks + 1}.weight")
    if f"{prefix}{blocks}.weight" not in state_dict or final is None:
        raise CheckpointError(
            f"adapter under `{prefix}` lacks its final LayerNorm ({blocks}) and Linear ({blocks + 1})."
        )
    width = state_dict[f"{prefix}{blocks}.weight"].shape[0]
    expansion = state_dict[f"{prefix}0.fn.0.weight"].shape[0] // width if blocks else 1
    return blocks, expansion, width, final.shape[0]


def expected_adapter_shapes(prefix: str, blocks: int, expansion: int, width: int, output_dim: int) -> dict:
    shapes = {}
    for i in range(blocks):
        shapes.update(
            {
                f"{prefix}{i}.ln.weight": (width,),
                f"{prefix}{i}.ln.bias": (width,),
                f"{prefix}{i}.fn.0.weight": (width * expansion, width),
                f"{prefix}{i}.fn.0.bias": (width * expansion,),
                f"{prefix}{i}.fn.3.weight": (width, width * expansion),
                f"{prefix}{i}.fn.3.bias": (width,),
            }
        )
    shapes.update(
        {
            f"{prefix}{blocks}.weight": (width,),
            f"{prefix}{blocks}.bias": (width,),
            f"{prefix}{blocks + 1}.weight": (output_dim, width),
            f"{prefix}{blocks + 1}.bias": (output_dim,),
        }
    )
    return shapes


@dataclass
class TextTower:
    config: object
    state_dict: dict
    tokenizer: object
    source: str


def load_text_tower(source: str | Path) -> TextTower:
    """The LLM's config (its auto_map ignored: no cross-repo code), weights and tokenizer."""
    folder = resolve_source(source, "--llm")
    config_dict = json.loads((folder / "config.json").read_text())
    config_dict.pop("auto_map", None)
    model_type = config_dict.pop("model_type", None)
    if model_type is None:
        raise CheckpointError(f"{folder}/config.json has no model_type.")
    config = AutoConfig.for_model(model_type, **{k: v for k, v in config_dict.items() if k != "architectures"})
    model = AutoModel.from_pretrained(folder, config=config, dtype=torch.float32)
    return TextTower(config, model.state_dict(), AutoTokenizer.from_pretrained(folder), str(source))


def make_processor(
    tokenizer, image_size: int, image_processor=None, max_length: int = 512, doc_max_length: int = 512
) -> LLM2CLIPProcessor:
    """llm2vec's encoding (Llama-3 template, separator, trailing strip, 512/512 as the released features were made;
    the 1B card uses doc_max_length 400) when the tokenizer has the Llama-3 special tokens; plain mean pooling over
    every token, no separator, otherwise."""
    image_processor = image_processor or clip_image_processor(image_size)
    vocab = tokenizer.get_vocab()
    lengths = dict(max_length=max_length, doc_max_length=doc_max_length)
    if all(token in vocab for token in LLAMA3_SPECIAL_TOKENS):
        return LLM2CLIPProcessor(
            image_processor, tokenizer, text_template=LLAMA3_TEXT_TEMPLATE, pooling_scope="caption", **lengths
        )
    return LLM2CLIPProcessor(
        image_processor,
        tokenizer,
        text_template="{caption}",
        pooling_scope="all",
        padding_side="right",
        instruction_separator=None,
        **lengths,
    )


@dataclass
class DualTowerParity:
    text_max_abs_diff: float
    image_max_abs_diff: float
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [
            f"text features:  max |diff| = {self.text_max_abs_diff:.3e} over {len(VERIFICATION_CAPTIONS)} captions",
            f"image features: max |diff| = {self.image_max_abs_diff:.3e}",
            *self.notes,
        ]


def verify_dual_tower(
    model: LLM2CLIPModel,
    processor: LLM2CLIPProcessor,
    tower: TextTower,
    adapter_weights: dict,
    adapter_prefix: str,
    image_reference: dict | Callable,
) -> DualTowerParity:
    """Text: reference Llama (bidirectional, fp32) + mean pooling + reference adapter; image: the reference tower
    (OpenAI-format `visual.*` weights for the OpenAI ViT, or a function of the pixels)."""
    if model.config.text_config.model_type not in ("llama", "mistral", "qwen2"):
        raise ConversionError(
            f"the independent reference covers Llama-style text models, not {model.config.text_config.model_type}."
        )
    text_inputs = processor(text=list(VERIFICATION_CAPTIONS))
    size = model.config.vision_config.image_size
    pixels = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        text = pooled_features(model.get_text_features(**text_inputs)).float()
        image = pooled_features(model.get_image_features(pixel_values=pixels)).float()
    hidden = reference_bidirectional_llama(
        tower.state_dict, tower.config, text_inputs["input_ids"], text_inputs["attention_mask"]
    )
    pooled = reference_mean_pool(hidden, text_inputs["pooling_mask"]) if model.config.pooling == "mean" else None
    if pooled is None:
        raise ConversionError("the independent reference implements mean pooling only.")
    ref_text = reference_adapter(adapter_weights, adapter_prefix, pooled)
    if callable(image_reference):
        ref_image = image_reference(pixels)
    else:
        ref_image = reference_image_features(image_reference, pixels)
    parity = DualTowerParity((text - ref_text).abs().max().item(), (image - ref_image).abs().max().item())
    for name, ref, diff in (
        ("text", ref_text, parity.text_max_abs_diff),
        ("image", ref_image, parity.image_max_abs_diff),
    ):
        tolerance = 1e-4 * max(1.0, ref.abs().max().item())
        if not diff <= tolerance:
            raise ConversionError(
                f"converted model disagrees with the reference {name} path (max |diff| = {diff:.3e}, tolerance "
                f"{tolerance:.1e}): {PARITY_ADVICE}"
            )
    return parity


def load_into(model: LLM2CLIPModel, weights: dict, tower: TextTower, external: bool) -> None:
    """Load non-text weights strictly, then the text tower (unless it stays external)."""
    missing, unexpected = model.load_state_dict(weights, strict=False)
    missing = [k for k in missing if not k.startswith("text_model.")]
    if missing or unexpected:
        raise CheckpointError(f"weights do not fit the model: missing {missing[:6]}, unexpected {unexpected[:6]}.")
    model.text_model.load_state_dict(tower.state_dict, strict=True)
    if external:
        model.config.text_model_name_or_path = stored_location(tower.source)


def dual_tower_card(template: str, source: str, model, tower: TextTower, vision: str, dtype: str, parity) -> str:
    """The converted folder's README from model_cards/{template}.md (LLM2CLIP and ProCLIP share the fields)."""
    config = model.config
    external = f" (weights kept in `{config.text_model_name_or_path}`)" if config.text_model_name_or_path else ""
    return render_model_card(
        template,
        source=source,
        text_model=f"{tower.config.model_type}, hidden {tower.config.hidden_size}, {tower.config.num_hidden_layers} layers{external}",
        vision=vision,
        adapter=f"{config.adapter_blocks} residual blocks, expansion {config.adapter_expansion}, "
        f"{tower.config.hidden_size} -> {config.projection_dim}",
        projection_dim=config.projection_dim,
        dtype=dtype,
        parity="\n".join(f"- {line}" for line in parity.lines()),
    )
