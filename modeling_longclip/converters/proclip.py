"""Convert the ProCLIP authors' raw `.pt` files (OpenAI-style `visual.*` + `text.text_adaptor.*`, or EVA02-CLIP's
`visual.*` in Eva_L14.pt) plus the LLM they were trained with into one self-contained ProCLIP folder, verified against
independent references first."""

from __future__ import annotations

from pathlib import Path

from ..common.errors import CheckpointError
from ..common.files import ensure_writable
from ..configuration_proclip import ProCLIPConfig
from ..modeling_proclip import ProCLIPModel
from .dual_tower import DualTowerParity, refuse_converted_folder
from .llm2clip import convert_release
from .state_dicts import load_state_dict


def convert_proclip(
    checkpoint: str | Path,
    llm: str | Path,
    output: str | Path,
    dtype: str = "float32",
    external_llm: bool = False,
    overwrite: bool = False,
) -> DualTowerParity:
    ensure_writable(output, overwrite)
    checkpoint = Path(checkpoint)
    if checkpoint.is_dir():
        refuse_converted_folder(checkpoint, "--checkpoint")
        raise CheckpointError(
            f"--checkpoint {checkpoint} is a folder; give the authors' .pt file itself (e.g. proclip/3m/L14.pt)."
        )
    return convert_release(
        load_state_dict(checkpoint),
        str(checkpoint),
        llm,
        output,
        ProCLIPConfig,
        ProCLIPModel,
        "proclip",
        dtype=dtype,
        external_llm=external_llm,
        overwrite=overwrite,
    )
