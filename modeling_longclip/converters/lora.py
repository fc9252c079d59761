"""The PEFT LoRA of LLM2CLIP's SigLIP2 release: where it is found, what kind is accepted, and its merge into the text
tower (by peft, checked against the merge formula).

The release's text path (`llm_model.py`) merges the LoRA it reads from a folder of the release
(`checkpoints/LLM2CLIP-Llama-3.1-8B`) into Llama-3.1-8B-Instruct; `find_lora` looks there first, then beside the LLM.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from transformers import AutoModel

from ..common.errors import CheckpointError
from .dual_tower import TextTower

# Where a release keeps its LoRA: the release folder itself or a folder up to two levels below it (the authors' code
# reads checkpoints/LLM2CLIP-Llama-3.1-8B); beside the LLM only in a subfolder (an adapter_config.json in the LLM
# folder itself would make transformers apply it on load).
LORA_IN_RELEASE = ("adapter_config.json", "*/adapter_config.json", "*/*/adapter_config.json")
LORA_BESIDE_LLM = ("*/adapter_config.json",)


def _adapters(folder: Path, patterns: tuple[str, ...]) -> list[Path]:
    return sorted({match.parent for pattern in patterns for match in folder.glob(pattern)})


def find_lora(release: Path | None, llm_folder: Path, lora: str | Path | None = None) -> Path | None:
    """The PEFT adapter to merge: `lora` if given, else the one found in the release folder (itself or up to two
    levels below), else the one subfolder of the LLM folder holding adapter_config.json; None when there is none.
    Several candidates in one place are refused (pass `lora`)."""
    if lora is not None:
        path = Path(lora)
        if not (path / "adapter_config.json").is_file():
            raise CheckpointError(f"{path}: no adapter_config.json (not a PEFT adapter folder).")
        return path
    if (llm_folder / "adapter_config.json").is_file():  # llm2vec's same-folder case: transformers would apply it
        raise CheckpointError(
            f"{llm_folder} holds a PEFT adapter_config.json: give the base model folder with the adapter in a subfolder."
        )
    for folder, patterns in ((release, LORA_IN_RELEASE), (llm_folder, LORA_BESIDE_LLM)):
        found = _adapters(folder, patterns) if folder is not None and folder.is_dir() else []
        if len(found) > 1:
            names = [str(p.relative_to(folder)) or "." for p in found]
            raise CheckpointError(f"{folder}: several PEFT adapters {names}; pass --lora PATH to choose one.")
        if found:
            return found[0]
    return None


def lora_search_places(release: Path | None, llm_folder: Path) -> str:
    """Where `find_lora` looks, in words, for the refusal that names them."""
    places = [f"{release} and two levels of subfolders"] if release is not None else []
    return " and ".join([*places, f"the subfolders of {llm_folder}"])


def lora_config(adapter: Path) -> dict:
    """adapter_config.json, refused unless it is a plain LoRA (what the reference merge covers)."""
    config = json.loads((adapter / "adapter_config.json").read_text())
    unsupported = {
        "peft_type": config.get("peft_type") not in ("LORA", None),
        "use_dora": bool(config.get("use_dora")),
        "bias": config.get("bias", "none") != "none",
        "rank_pattern / alpha_pattern": bool(config.get("rank_pattern") or config.get("alpha_pattern")),
        "modules_to_save": bool(config.get("modules_to_save")),
    }
    bad = [name for name, flag in unsupported.items() if flag]
    if bad:
        raise CheckpointError(f"{adapter}: only plain LoRA adapters are supported, this one uses {bad}.")
    return config


def lora_tensors(adapter: Path, model_keys) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{target weight name: (A, B)} from the adapter file, each target checked against the text model's weights."""
    file = adapter / "adapter_model.safetensors"
    if file.is_file():
        from safetensors.torch import load_file

        raw = load_file(file)
    elif (adapter / "adapter_model.bin").is_file():
        raw = torch.load(adapter / "adapter_model.bin", map_location="cpu", weights_only=True)
    else:
        raise CheckpointError(f"{adapter}: no adapter_model.safetensors or adapter_model.bin.")
    pairs = {}
    for key, value in raw.items():
        module, _, kind = key.removeprefix("base_model.model.").rpartition(".lora_")
        if kind not in ("A.weight", "B.weight"):
            raise CheckpointError(f"{adapter}: unexpected adapter tensor `{key}`.")
        pairs.setdefault(f"{module}.weight", {})[kind[0]] = value.float()
    missing = sorted(name for name in pairs if name not in model_keys)
    if missing or any(len(p) != 2 for p in pairs.values()):
        raise CheckpointError(
            f"{adapter}: LoRA targets {missing[:4] or 'incomplete A/B pairs'} do not match the text model."
        )
    return {name: (p["A"], p["B"]) for name, p in pairs.items()}


def reference_lora_merge(state_dict: dict, adapter: Path) -> dict:
    """W + (alpha / r) B A (alpha / sqrt(r) with rsLoRA; transposed for fan_in_fan_out): LoRA's merge formula."""
    config = lora_config(adapter)
    scale = config["lora_alpha"] / (math.sqrt(config["r"]) if config.get("use_rslora") else config["r"])
    merged = {k: v.float() for k, v in state_dict.items()}  # untouched tensors shared, merged ones new
    for name, (a, b) in lora_tensors(adapter, state_dict).items():
        delta = scale * (b @ a)
        merged[name] = merged[name] + (delta.t() if config.get("fan_in_fan_out") else delta)
    return merged


def merge_lora_with_peft(tower: TextTower, adapter: Path) -> TextTower:
    """The LoRA merged into the text tower by peft (`PeftModel.from_pretrained(...).merge_and_unload()`), in fp32.

    The model is built on the meta device around `tower`'s own tensors, so an 8B tower is not copied: those tensors
    are merged in place (the tower passed in is consumed)."""
    from peft import PeftModel

    lora_config(adapter)
    lora_tensors(adapter, tower.state_dict)  # every target must exist: peft would only warn about mismatches
    with torch.device("meta"):
        model = AutoModel.from_config(tower.config)
    model.load_state_dict(tower.state_dict, strict=True, assign=True)
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    return TextTower(tower.config, merged.state_dict(), tower.tokenizer, f"{tower.source} + LoRA {adapter}")


__all__ = [
    "find_lora",
    "lora_config",
    "lora_search_places",
    "lora_tensors",
    "merge_lora_with_peft",
    "reference_lora_merge",
]
