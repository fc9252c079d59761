"""Convert an original Long-CLIP (or stock OpenAI CLIP) `.pt` state dict into a Hugging Face folder, verified first."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoTokenizer, CLIPConfig, CLIPModel, CLIPProcessor

from ..common.errors import CheckpointError, ConversionError
from ..common.files import ensure_writable
from ..configuration_longclip import LongCLIPConfig
from ..embedding import pooled_features
from ..export.cards import render_model_card
from ..export.folder import write_model_folder
from ..modeling_longclip import LongCLIPModel
from ..processing_longclip import LongCLIPProcessor
from .clip_preprocessing import build_clip_tokenizer, clip_image_processor
from .openai_clip import (
    expected_text_shapes,
    expected_vision_shapes,
    hf_clip_config_fields,
    infer_text_shape,
    infer_vision_shape,
    reference_image_features,
    reference_text_features,
    text_to_hf,
    vision_to_hf,
)
from .state_dicts import check_keys, load_state_dict

OUTPUT_FORMATS = ("longclip", "clip")
STOCK_CONTEXT_LENGTH = 77

# Captions the parity check encodes: short, past 77 tokens, and past 248 tokens (truncated like the original).
_SCENE = (
    "A wide photograph of a busy harbour at dawn. Fishing boats with red and white hulls are moored along a wooden "
    "pier while gulls circle above the masts, and a lighthouse with a green lantern stands on the rocks at the far "
    "left. Two fishermen in yellow raincoats carry crates of silver fish toward a blue van parked near a cafe whose "
    "striped awning is still rolled up. "
)
VERIFICATION_CAPTIONS = ("A cat sleeping on a sofa.", _SCENE * 2, _SCENE * 6)


@dataclass
class ParityReport:
    """Max |difference| between the converted model and the independent reference, per modality."""

    text_max_abs_diff: float
    image_max_abs_diff: float
    text_token_counts: list[int]
    stretched_from: int | None = None
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        counts = ", ".join(map(str, self.text_token_counts))
        out = [
            f"text features:  max |diff| = {self.text_max_abs_diff:.3e} over captions of {counts} tokens",
            f"image features: max |diff| = {self.image_max_abs_diff:.3e}",
        ]
        if self.stretched_from:
            out.append(f"stretched the text position table from {self.stretched_from} rows (knowledge-preserving)")
        return out + self.notes


def _tolerance(reference: torch.Tensor) -> float:
    # fp32 forward of the same math in another order: error grows with the feature scale, not with model size.
    return 1e-4 * max(1.0, reference.abs().max().item())


def verification_texts(tokenizer, context_length: int, captions=VERIFICATION_CAPTIONS):
    """(input_ids, attention_mask, untruncated token counts), truncated like the original tokenizer."""
    full = tokenizer(list(captions), truncation=False, verbose=False)["input_ids"]
    ids = [s if len(s) <= context_length else [*s[: context_length - 1], tokenizer.eos_token_id] for s in full]
    padded = tokenizer.pad({"input_ids": ids}, padding="longest", return_tensors="pt")
    return padded["input_ids"], padded["attention_mask"], [len(s) for s in full]


PARITY_ADVICE = (
    "nothing was written. The weights have the shapes of an OpenAI CLIP but do not compute like one: a CLIP variant "
    "with another activation than QuickGELU, another head count than width / 64 or another layer layout is not "
    "supported; if yours is a plain OpenAI CLIP or Long-CLIP checkpoint, please report this with the numbers above"
)


def verify_against_reference(model: CLIPModel, state_dict, texts, keep: int) -> ParityReport:
    """Compare `model` with the reference forward on the original keys; raise ConversionError past tolerance."""
    input_ids, attention_mask, counts = texts
    vision = model.config.vision_config
    pixels = torch.randn(2, 3, vision.image_size, vision.image_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        text = pooled_features(model.get_text_features(input_ids=input_ids, attention_mask=attention_mask))
        image = pooled_features(model.get_image_features(pixel_values=pixels))
    ref_text = reference_text_features(state_dict, input_ids, keep)
    ref_image = reference_image_features(state_dict, pixels)
    report = ParityReport((text - ref_text).abs().max().item(), (image - ref_image).abs().max().item(), counts)
    if report.text_max_abs_diff > _tolerance(ref_text) or report.image_max_abs_diff > _tolerance(ref_image):
        raise ConversionError(
            "converted model disagrees with the reference forward of the original checkpoint ("
            + "; ".join(" ".join(line.split()) for line in report.lines()[:2])
            + f"): {PARITY_ADVICE}."
        )
    return report


def load_tokenizer(tokenizer: str | Path | None, context_length: int, vocab_size: int):
    if tokenizer is None:
        tok = build_clip_tokenizer(context_length)
    else:
        try:
            tok = AutoTokenizer.from_pretrained(tokenizer)
        except (OSError, ValueError, TypeError) as error:
            detail = " ".join(str(error).split())[:200]
            raise CheckpointError(f"--tokenizer {tokenizer}: cannot read a tokenizer there ({detail}).") from None
    tok.model_max_length = context_length
    if len(tok) != vocab_size:
        raise CheckpointError(f"the tokenizer has {len(tok)} tokens but the checkpoint's vocabulary has {vocab_size}.")
    return tok


def convert_longclip(
    checkpoint: str | Path,
    output: str | Path,
    output_format: str = "longclip",
    dtype: str = "float32",
    tokenizer: str | Path | None = None,
    keep: int = 20,
    ratio: int = 4,
    overwrite: bool = False,
    exact_fp16: bool = True,
) -> ParityReport:
    """Read, verify against the reference forward, then write `output` atomically. Raises before writing anything.

    A stock 77-position CLIP is stretched like the authors' `load_from_clip`: in fp16, one rounding per operation
    (`exact_fp16=True`, bit-exact with their tables); `exact_fp16=False` runs the same formulas in fp32. They
    stretch in `model.dtype`, fp16 after their `build_model` whatever the file holds, so an fp32 table is rounded to
    fp16 first, the kept rows included (the other weights keep their precision here); the check after stretching
    compares with the reference on that same rounded table. A table of more than 77 rows without Long-CLIP's second table is taken as
    already stretched and kept as it is.
    """
    if output_format not in OUTPUT_FORMATS:
        raise ConversionError(f"--format must be one of {OUTPUT_FORMATS}, got {output_format!r}.")
    ensure_writable(output, overwrite)
    checkpoint = Path(checkpoint)
    raw = load_state_dict(checkpoint)
    source_table_dtype = raw["positional_embedding"].dtype if "positional_embedding" in raw else None
    state_dict = {k: v.float() for k, v in raw.items()}
    is_longclip = "positional_embedding_res" in state_dict
    try:
        vision, text = infer_vision_shape(state_dict), infer_text_shape(state_dict)
    except CheckpointError as error:
        raise CheckpointError(f"{checkpoint}: {error}") from None
    check_keys(
        state_dict,
        {
            **expected_vision_shapes(vision),
            **expected_text_shapes(text, with_residual_table=is_longclip),
            "logit_scale": (),
        },
        str(checkpoint),
    )
    hf_state = {
        **vision_to_hf(state_dict, vision),
        **text_to_hf(state_dict, text, keep),
        "logit_scale": state_dict["logit_scale"],
    }
    clip_tokenizer = load_tokenizer(tokenizer, text.context_length, text.vocab_size)
    fields = hf_clip_config_fields(vision, text)
    # The ids the tokenizer really uses (CLIPTextConfig's default pad_token_id is 1, the BPE's "\"" token): Trainer
    # aligns a config that differs from its tokenizer and warns about it on every run.
    fields["text_config"].update(
        pad_token_id=clip_tokenizer.pad_token_id,
        bos_token_id=clip_tokenizer.bos_token_id,
        eos_token_id=clip_tokenizer.eos_token_id,
    )
    config = LongCLIPConfig(
        **fields, keep_positions=min(keep, text.context_length), logit_scale_init_value=float(hf_state["logit_scale"])
    )
    model = LongCLIPModel(config).eval()
    model.load_state_dict(hf_state, strict=True)
    report = verify_against_reference(model, state_dict, verification_texts(clip_tokenizer, text.context_length), keep)

    if not is_longclip and text.context_length == STOCK_CONTEXT_LENGTH:
        model = _stretch_and_verify(model, state_dict, clip_tokenizer, report, keep, ratio, exact_fp16)
        if exact_fp16 and source_table_dtype not in (torch.float16, None):
            rounded = (state_dict["positional_embedding"].half().float() - state_dict["positional_embedding"]).abs()
            report.notes.append(
                f"the source table is {str(source_table_dtype).removeprefix('torch.')}: like the authors' "
                f"load_from_clip (which casts it to fp16 first), its rows were rounded to fp16 before stretching "
                f"(max change {rounded.max().item():.1e}, the {keep} kept rows included); --no-exact-fp16 keeps "
                "them as they are"
            )
    elif not is_longclip:
        report.notes.append(
            f"the text position table already has {text.context_length} rows (stock CLIP has "
            f"{STOCK_CONTEXT_LENGTH}): kept as it is, not stretched again"
        )
    context = model.config.text_config.max_position_embeddings
    clip_tokenizer.model_max_length = context  # the same vocabulary; only the written limit follows the stretch
    image_processor = clip_image_processor(vision.image_size, "stock" if output_format == "clip" else "torchvision")
    if output_format == "clip":
        clip = CLIPModel(CLIPConfig(**_clip_fields(model)))
        clip.load_state_dict(model.state_dict(), strict=True)
        model, processor = clip.eval(), CLIPProcessor(image_processor, clip_tokenizer)
    else:
        processor = LongCLIPProcessor(image_processor, clip_tokenizer)
    card = render_model_card(
        "longclip",
        source=checkpoint.name,
        output_format=output_format,
        context_length=context,
        keep_positions=model.config.keep_positions if output_format == "longclip" else keep,
        vision=f"ViT, width {vision.width}, {vision.layers} layers, patch {vision.patch_size}, {vision.image_size} px",
        text=f"width {text.width}, {text.layers} layers, {context} positions",
        projection_dim=vision.output_dim,
        dtype=dtype,
        parity="\n".join(f"- {line}" for line in report.lines()),
        load_snippet=_load_snippet(output_format),
    )
    write_model_folder(model, processor, output, card, dtype=dtype, overwrite=overwrite)
    return report


def _stretch_and_verify(model, state_dict, tokenizer, report: ParityReport, keep: int, ratio: int, exact_fp16: bool):
    """A stock CLIP stretched to keep + (77 - keep) * ratio positions, then checked wherever the original table was
    kept: against the reference on the table the stretch started from (rounded to fp16 in the authors' arithmetic)."""
    model = LongCLIPModel.from_clip(model, keep=keep, ratio=ratio, exact_fp16=exact_fp16).eval()
    reference = dict(state_dict)
    if exact_fp16:
        reference["positional_embedding"] = state_dict["positional_embedding"].half().float()
    short = verification_texts(tokenizer, keep, ("a cat", "a photo of a dog on the grass"))
    stretched = verify_against_reference(model, reference, short, keep)
    report.stretched_from = STOCK_CONTEXT_LENGTH
    report.notes.append(
        "stretched in " + ("fp16 with the authors' operation order" if exact_fp16 else "fp32 arithmetic")
    )
    report.notes.append(
        f"after stretching: image |diff| = {stretched.image_max_abs_diff:.3e}, text |diff| = "
        f"{stretched.text_max_abs_diff:.3e} on captions within the {keep} kept positions"
    )
    return model


def _clip_fields(model: LongCLIPModel) -> dict:
    config = model.config
    return {
        "text_config": config.text_config.to_dict(),
        "vision_config": config.vision_config.to_dict(),
        "projection_dim": config.projection_dim,
        "logit_scale_init_value": config.logit_scale_init_value,
    }


def _load_snippet(output_format: str) -> str:
    """The card's usage snippet, self-contained (tests run every card snippet on a converted folder)."""
    if output_format == "clip":
        return (
            "from PIL import Image\n"
            "from transformers import CLIPModel, CLIPProcessor\n\n"
            'model = CLIPModel.from_pretrained("REPO_OR_FOLDER")\n'
            'processor = CLIPProcessor.from_pretrained("REPO_OR_FOLDER")\n'
            'captions = ["a long, detailed caption of a photo ...", "a cat"]\n'
            'inputs = processor(text=captions, images=Image.open("photo.jpg"), return_tensors="pt", padding=True, '
            "truncation=True)\n"
            "print(model(**inputs).logits_per_image)"
        )
    return (
        "from PIL import Image\n"
        "from transformers import AutoModel, pipeline\n\n"
        'model = AutoModel.from_pretrained("REPO_OR_FOLDER", trust_remote_code=True)\n'
        'text_embeds = model.encode_text(["a long, detailed caption of a photo ..."])  # L2-normalized, up to 248 tokens\n'
        'image_embeds = model.encode_image([Image.open("photo.jpg")])  # PIL images\n'
        "print(text_embeds @ image_embeds.T)\n\n"
        'classifier = pipeline("zero-shot-image-classification", model="REPO_OR_FOLDER", trust_remote_code=True)\n'
        'print(classifier("photo.jpg", candidate_labels=["a cat", "a rocket", "a cup of coffee"]))'
    )
