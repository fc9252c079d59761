"""What lets a saved folder load on transformers 4.57 (the last 4.x line) as well as on every 5.x.

Part of the flat Hub payload: imports only torch and transformers. The package itself needs 5.17+, but the folders it
writes are loaded by users still on 4.57. What differs there: configs are plain classes with an `__init__` instead
of 5.x dataclasses; processors name their sub-processor classes and read the image processor from its own
`preprocessor_config.json`; tokenizer configs spell extra special tokens the 4.x way; decoder models ignore
`config.is_causal` when building their attention mask; CLIPModel holds the inner CLIP transformers, which take no
`return_dict`. It also holds the one output rule every model class here follows (`model_output`).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import inspect
import json
from pathlib import Path

import torch
import transformers
from transformers.utils import can_return_tuple

PreTrainedConfig = getattr(transformers, "PreTrainedConfig", None) or transformers.PretrainedConfig
try:  # 5.x's initializers leave tensors already loaded from a checkpoint alone
    from transformers import initialization as weight_init
except ImportError:  # 4.x initializes only missing weights anyway
    from torch.nn import init as weight_init
# transformers 5 turns every config class into a keyword-only dataclass whose `__post_init__` finishes it.
DATACLASS_CONFIGS = dataclasses.is_dataclass(PreTrainedConfig)
LEGACY_TRANSFORMERS = int(transformers.__version__.split(".")[0]) < 5


def finish_post_init(parent, kwargs: dict) -> None:
    """`super().__post_init__(**kwargs)` where the base class has one (5.x); nothing to do on 4.x."""
    post_init = getattr(parent, "__post_init__", None)
    if post_init is not None:
        post_init(**kwargs)


def _declared_fields(cls) -> dict:
    """Annotated fields with defaults that this package's config classes declare (most derived class wins)."""
    fields = {}
    for klass in reversed(cls.__mro__):
        if klass.__module__.rsplit(".", 1)[-1].startswith("configuration_") and not klass.__module__.startswith(
            "transformers."
        ):
            for name in klass.__dict__.get("__annotations__", {}):
                if not name.startswith("_") and name in klass.__dict__:
                    fields[name] = klass.__dict__[name]
    return fields


def portable_config(cls):
    """Give a 5.x-style config class (annotated fields + `__post_init__`) the `__init__` transformers 4.x expects.

    On 5.x the class is returned unchanged. On 4.x the fields this package declares are taken from the keyword
    arguments (or their class defaults), the base `__init__` receives the rest (fields it declares itself, such as
    CLIPConfig's `text_config`, go to it), then `__post_init__` runs as the dataclass would run it. A subclass of a
    class decorated so keeps the inherited `__init__`, which reads the fields of the instance's own class.
    """
    if DATACLASS_CONFIGS or getattr(cls.__init__, "portable", False):
        return cls
    base_init = cls.__mro__[1].__init__
    base_parameters = set(inspect.signature(base_init).parameters)

    def __init__(self, **kwargs):
        values = {}
        for name, default in _declared_fields(type(self)).items():
            if name in base_parameters:
                kwargs.setdefault(name, default)
            else:
                values[name] = kwargs.pop(name, copy.deepcopy(default))
        base_init(self, **kwargs)  # before our fields: 4.x's base walks the sub-configs and expects config objects
        for name, value in values.items():
            setattr(self, name, value)
        self.__post_init__()

    __init__.portable = True
    cls.__init__ = __init__
    return cls


def with_legacy_rope_fields(text_config: dict, rope: dict | None = None) -> dict:
    """Add the 4.x names of a 5.x `rope_parameters` entry (`rope`, else the dict's own): 4.x reads `rope_theta` /
    `rope_scaling` and would silently fall back to its default base (10000 for Llama) without them."""
    rope = rope if isinstance(rope, dict) else text_config.get("rope_parameters")
    if not isinstance(rope, dict) or "rope_theta" in text_config:
        return text_config
    text_config = dict(text_config, rope_theta=rope.get("rope_theta"))
    if rope.get("rope_type", "default") != "default" and "rope_scaling" not in text_config:
        text_config["rope_scaling"] = {k: v for k, v in rope.items() if k != "rope_theta"}
    return text_config


def bidirectional_attention_mask(text_model, attention_mask: torch.Tensor, dtype: torch.dtype):
    """The mask that makes a decoder attend both ways on transformers 4.x, or `attention_mask` itself on 5.x.

    5.x builds a padding-only mask when `config.is_causal` is False. 4.x always builds a causal one, unless it is
    handed a ready 4-D mask, which it uses as is: boolean for SDPA, additive for eager attention.
    """
    from transformers import masking_utils

    if hasattr(masking_utils, "create_bidirectional_mask"):
        return attention_mask
    keys = attention_mask.bool()[:, None, None, :].expand(-1, 1, attention_mask.shape[1], -1)
    if getattr(text_model.config, "_attn_implementation", "sdpa") == "sdpa":
        return keys
    return torch.zeros(keys.shape, dtype=dtype, device=keys.device).masked_fill(~keys, torch.finfo(dtype).min)


def legacy_vision_key_mapping(tower_class) -> dict | None:
    """Checkpoint key renames for loading on 4.x: there transformers' CLIPVisionModel and SiglipVisionModel wrap
    their transformer in `.vision_model`, while 5.x has them flat and saves `vision_model.embeddings...`."""
    if LEGACY_TRANSFORMERS and tower_class.__module__.startswith("transformers."):
        return {r"^vision_model\.(?!vision_model\.)": "vision_model.vision_model."}
    return None


# Keyword arguments of a call to a CLIP tower inside LongCLIPModel that make it return a ModelOutput: 5.x's CLIPModel
# holds the full tower models, which give a tuple when their own config says `return_dict=False`; 4.x's holds the inner
# CLIP transformers, which always return a ModelOutput and take no `return_dict`.
CLIP_TOWER_AS_DICT = {} if LEGACY_TRANSFORMERS else {"return_dict": True}
OUTPUT_FLAGS = ("output_hidden_states", "output_attentions")


def model_output(method):
    """The output rule of every model method of this payload (forward, get_text_features, get_image_features), as
    transformers applies it to its own models: `output_hidden_states` / `output_attentions` not given default to the
    config's, and `return_dict` (the argument, else `config.return_dict`) chooses between the ModelOutput and its
    `to_tuple()`. The second half is transformers' own `can_return_tuple` (exported by 4.57 and every 5.x)."""

    @can_return_tuple
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        for flag in OUTPUT_FLAGS:
            if kwargs.get(flag) is None and getattr(self.config, flag, False):
                kwargs[flag] = True
        return method(self, *args, **kwargs)

    return wrapper


class PortableProcessorMixin:
    """Processor files that transformers 4.57 reads too: the image processor in its own `preprocessor_config.json`
    (4.x does not read the copy 5.x nests in `processor_config.json`, and would take it for the image processor
    object) and a tokenizer config in the 4.x spelling (`portable_tokenizer_config`). Converters, trainers and
    Trainer checkpoints all save tokenizers through here."""

    if LEGACY_TRANSFORMERS:  # 4.x finds the sub-processors by these names; 5.x reads `__init__` and rejects them
        attributes = ["image_processor", "tokenizer"]
        image_processor_class = "AutoImageProcessor"
        tokenizer_class = "AutoTokenizer"

    def save_pretrained(self, save_directory, *args, **kwargs):
        result = super().save_pretrained(save_directory, *args, **kwargs)
        folder = Path(save_directory)
        processor_file = folder / "processor_config.json"
        if processor_file.is_file():
            data = json.loads(processor_file.read_text(encoding="utf-8"))
            image_processor = data.pop("image_processor", None)
            if image_processor is not None:
                _write_json(folder / "preprocessor_config.json", image_processor)
            _write_json(processor_file, data)
        tokenizer_file = folder / "tokenizer_config.json"
        if tokenizer_file.is_file():
            data = json.loads(tokenizer_file.read_text(encoding="utf-8"))
            portable = portable_tokenizer_config(data)
            if portable != data:
                _write_json(tokenizer_file, portable)
        return result


def portable_tokenizer_config(data: dict) -> dict:
    """tokenizer_config.json in the spelling transformers 4.57 and every 5.x read: a plain fast tokenizer's class under
    its 4.x name (5.x writes `TokenizersBackend`), and a list of extra special tokens (Llama / Qwen header tokens) as
    `additional_special_tokens`: 4.57 fails inside the tokenizer's init on a list under `extra_special_tokens` (and
    reports it as a missing protobuf library), 5.x reads the 4.x key back into `extra_special_tokens`."""
    data = dict(data)
    if data.get("tokenizer_class") == "TokenizersBackend":
        data["tokenizer_class"] = "PreTrainedTokenizerFast"
    extra = data.get("extra_special_tokens")
    if isinstance(extra, list):  # a dict (named tokens such as `image_token`) is read by 4.57 as it is
        del data["extra_special_tokens"]
        known = list(data.get("additional_special_tokens") or [])
        data["additional_special_tokens"] = known + [token for token in extra if token not in known]
    return data


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


__all__ = [
    "CLIP_TOWER_AS_DICT",
    "DATACLASS_CONFIGS",
    "LEGACY_TRANSFORMERS",
    "PortableProcessorMixin",
    "PreTrainedConfig",
    "bidirectional_attention_mask",
    "finish_post_init",
    "legacy_vision_key_mapping",
    "model_output",
    "portable_config",
    "portable_tokenizer_config",
    "weight_init",
    "with_legacy_rope_fields",
]
