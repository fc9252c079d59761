"""Convert the ProCLIP authors' raw `.pt` files (OpenAI-style `visual.*` + `text.text_adaptor.*`, or EVA02-CLIP's
`visual.*` in Eva_L14.pt) plus the LLM they were trained with into one self-contained ProCLIP folder, verified against
independent references first."""

from __future__ import annotations

from pathlib import Path

from ..configuration_proclip import ProCLIPConfig
from ..modeling_proclip import ProCLIPModel
from .export import ensure_writable, write_model_folder
from .llm2clip import (
    DualTowerParity,
    adapter_shape,
    convert_eva02_release,
    detect_vision_tower,
    dual_tower_card,
    expected_adapter_shapes,
    load_into,
    load_text_tower,
    make_processor,
    verify_dual_tower,
)
from .openai_clip import (
    CheckpointError,
    check_keys,
    expected_vision_shapes,
    hf_clip_config_fields,
    infer_vision_shape,
    load_state_dict,
    vision_to_hf,
)

ADAPTER_PREFIX = "text.text_adaptor."


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
    state_dict = load_state_dict(checkpoint)
    tower = detect_vision_tower(state_dict)
    if tower == "eva02":
        return convert_eva02_release(state_dict, str(checkpoint), llm, output, ProCLIPConfig, ProCLIPModel, "proclip",
                                     dtype=dtype, external_llm=external_llm, overwrite=overwrite)  # fmt: skip
    if tower != "clip":
        raise CheckpointError(f"{checkpoint}: a {tower} image tower; ProCLIP releases use OpenAI-CLIP or EVA02 towers.")
    state_dict = {k: v.float() for k, v in state_dict.items()}
    try:
        vision = infer_vision_shape(state_dict)
        blocks, expansion, width, output_dim = adapter_shape(state_dict, ADAPTER_PREFIX)
    except CheckpointError as error:
        raise CheckpointError(f"{checkpoint}: {error}") from None
    if output_dim != vision.output_dim:
        raise CheckpointError(
            f"{checkpoint}: the adapter maps to {output_dim} dims but the image tower projects to {vision.output_dim}."
        )
    expected = {
        **expected_vision_shapes(vision),
        **expected_adapter_shapes(ADAPTER_PREFIX, blocks, expansion, width, output_dim),
        "logit_scale": (),
    }
    check_keys(state_dict, expected, str(checkpoint))
    tower = load_text_tower(llm)
    if tower.config.hidden_size != width:
        raise CheckpointError(f"the adapter expects {width}-d text embeddings but {llm} has hidden size {tower.config.hidden_size}.")
    weights = vision_to_hf(state_dict, vision)
    weights.update({"text_adapter.adaptor." + k[len(ADAPTER_PREFIX) :]: v for k, v in state_dict.items() if k.startswith(ADAPTER_PREFIX)})
    weights["logit_scale"] = state_dict["logit_scale"]
    config = ProCLIPConfig(
        vision_config=hf_clip_config_fields(vision, None)["vision_config"], text_config=tower.config.to_dict(),
        projection_dim=output_dim, adapter_blocks=blocks, adapter_expansion=expansion,
        logit_scale_init_value=float(state_dict["logit_scale"]),
    )  # fmt: skip
    model = ProCLIPModel(config).eval()
    load_into(model, weights, tower, external_llm)
    processor = make_processor(tower.tokenizer, vision.image_size)
    parity = verify_dual_tower(model, processor, tower, state_dict, ADAPTER_PREFIX, state_dict)
    vision_text = f"ViT, width {vision.width}, {vision.layers} layers, patch {vision.patch_size}, {vision.image_size} px"
    card = dual_tower_card("proclip", f"`{checkpoint.name}` + `{llm}`", model, tower, vision_text, dtype, parity)
    write_model_folder(model, processor, output, card, dtype=dtype, overwrite=overwrite)
    return parity
