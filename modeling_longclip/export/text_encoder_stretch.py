"""Stretch a stock CLIP text encoder to 248 positions for diffusers, the way Long-CLIP's SDXL recipe does.

    python -m modeling_longclip.text_encoder_stretch sdxl/text_encoder_2 sdxl-248/text_encoder_2 \
        --tokenizer sdxl/tokenizer_2 [--keep 20 --ratio 4] [--exact-fp16] [--pad-token "!"]

The authors give SDXL's second encoder (OpenCLIP bigG) 248 positions by knowledge-preserving stretching alone, without
fine-tuning (REFERENCE 1.2: rows < keep copied, the rest interpolated `ratio` times, the last rows extrapolated). This
writes a folder of the same class (`CLIPTextModel`, `CLIPTextModelWithProjection`, or `CLIPModel`), same dtype, with
`max_position_embeddings` 248, and the tokenizer beside it with `model_max_length` 248, so a diffusers pipeline loads
it as it is and pads / truncates prompts at 248 tokens. Before anything is written the stretched encoder is checked
against the source: the first `keep` rows are bit-identical, and so are its hidden states for an input of `keep`
tokens (a causal tower at those positions sees nothing else). Export code, not part of the Hub payload.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from ..common.cli import ArgumentParser, command
from ..common.errors import ConversionError
from ..common.files import atomic_folder, ensure_writable
from ..modeling_longclip import POSITION_EMBEDDING_KEY, stretch_position_embeddings

TEXT_ENCODER_CLASSES = ("CLIPTextModel", "CLIPTextModelWithProjection", "CLIPModel")
# CLIPModel and CLIPTextModelWithProjection keep the text tower under `text_model.`; transformers 5's CLIPTextModel is
# the tower itself (older checkpoints with the prefix are renamed on load).
POSITION_KEYS = (POSITION_EMBEDDING_KEY, POSITION_EMBEDDING_KEY.removeprefix("text_model."))
TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json", "vocab.json")
STOCK_POSITIONS = 77  # a stock CLIP text encoder's position table; the command stretches from there


@dataclass
class StretchReport:
    model_class: str
    source_positions: int
    positions: int
    keep: int
    ratio: int
    exact_fp16: bool
    dtype: str
    hidden_state_max_abs_diff: float
    output: Path
    tokenizer_output: Path | None

    def lines(self) -> list[str]:
        fp16 = ", the authors' fp16 arithmetic" if self.exact_fp16 else ""
        lines = [
            f"{self.model_class} ({self.dtype}): {self.source_positions} -> {self.positions} positions "
            f"(keep {self.keep}, ratio {self.ratio}{fp16}) in {self.output}",
            f"first {self.keep} rows identical; hidden states for {self.keep} tokens: max |diff| = "
            f"{self.hidden_state_max_abs_diff:.1e}",
        ]
        if self.tokenizer_output is not None:
            lines.append(f"tokenizer with model_max_length {self.positions} in {self.tokenizer_output}")
        return lines


def _model_class(folder: Path):
    import transformers

    config_file = folder / "config.json"
    if not config_file.is_file():
        raise ConversionError(f"{folder}: not a saved text-encoder folder (no config.json).")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ConversionError(f"{config_file}: cannot be read as JSON ({error}).") from None
    architectures = config.get("architectures") or []
    name = next((a for a in architectures if a in TEXT_ENCODER_CLASSES), None)
    if name is None:
        raise ConversionError(
            f"{config_file}: architectures {architectures} name no stock CLIP text encoder "
            f"({', '.join(TEXT_ENCODER_CLASSES)})."
        )
    return getattr(transformers, name)


def _source_positions(folder: Path) -> int | None:
    """`max_position_embeddings` of the text config in `folder`/config.json (a CLIPModel nests it)."""
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    text = config.get("text_config") or config
    positions = text.get("max_position_embeddings") if isinstance(text, dict) else None
    return positions if isinstance(positions, int) else None


def _read_tokenizer(folder: Path, pad_token: str | None):
    """The tokenizer in `folder`, read before any work; a folder transformers cannot read is one line."""
    from transformers import AutoTokenizer

    extra = {"pad_token": pad_token} if pad_token else {}
    try:
        return AutoTokenizer.from_pretrained(folder, **extra)
    except (OSError, ValueError, TypeError, KeyError) as error:
        detail = " ".join(str(error).split())
        detail = detail if len(detail) <= 160 else detail[:157] + "..."
        raise ConversionError(
            f"--tokenizer {folder}: transformers cannot read a tokenizer there ({type(error).__name__}: {detail}); "
            "give the pipeline's tokenizer folder (e.g. sdxl-base/tokenizer_2, with tokenizer.json or vocab.json + "
            "merges.txt)."
        ) from None


def position_table_key(model) -> str:
    """The state-dict key of the text position table."""
    keys = model.state_dict().keys()
    key = next((k for k in POSITION_KEYS if k in keys), None)
    if key is None:
        raise ConversionError(f"{type(model).__name__} has no `{POSITION_KEYS[1]}`: not a CLIP text tower.")
    return key


def _text_tower(model):
    return getattr(model, "text_model", model)


def stretched_text_encoder(model, keep: int = 20, ratio: int = 4, exact_fp16: bool = False):
    """A new model of the same class whose text position table is stretched; every other weight is copied."""
    key = position_table_key(model)
    state_dict = {k: v.detach().clone() for k, v in model.state_dict().items()}
    try:
        table = stretch_position_embeddings(state_dict[key], keep, ratio, exact_fp16)
    except ValueError as error:
        raise ConversionError(str(error)) from None
    state_dict[key] = table
    config = model.config.__class__.from_dict(model.config.to_dict())
    text_config = getattr(config, "text_config", None) or config  # CLIPModel keeps it in a sub-config
    text_config.max_position_embeddings = table.shape[0]
    stretched = type(model)(config).to(table.dtype)
    stretched.load_state_dict(state_dict, strict=True)
    return stretched.eval()


def _check(source, stretched, keep: int) -> float:
    """Rows < keep bit-identical, and hidden states for `keep` tokens identical: the stretch kept what it promised."""
    key = position_table_key(source)
    before, after = source.state_dict()[key], stretched.state_dict()[key]
    if not torch.equal(before[:keep], after[:keep]):
        raise ConversionError(
            f"the first {keep} position rows changed while stretching; nothing was written. This is a bug: please "
            "report it with the source folder's config.json."
        )
    vocab = (getattr(source.config, "text_config", None) or source.config).vocab_size
    if keep == 0:
        return 0.0
    ids = torch.arange(keep).unsqueeze(0) % vocab
    with torch.no_grad():
        before, after = (_text_tower(m)(input_ids=ids).last_hidden_state for m in (source, stretched))
        diff = before - after
    difference = diff.abs().max().item()
    if difference != 0.0:
        raise ConversionError(
            f"hidden states within the first {keep} positions differ by {difference:.2e} after stretching; nothing was "
            "written. The stretch changes no weight they read, so this is a bug: please report it with the source "
            "folder's config.json."
        )
    return difference


def stretch_text_encoder(
    source: str | Path,
    output: str | Path,
    *,
    keep: int = 20,
    ratio: int = 4,
    exact_fp16: bool = False,
    tokenizer: str | Path | None = None,
    tokenizer_output: str | Path | None = None,
    pad_token: str | None = None,
    overwrite: bool = False,
) -> StretchReport:
    """Stretch the CLIP text encoder in `source` into `output` (atomically), and its tokenizer if there is one.

    The tokenizer is read from `tokenizer` (e.g. a pipeline's `tokenizer_2/`) or from `source` when it holds one; it
    is written to `tokenizer_output` (default: beside `output`, under the tokenizer folder's own name, or into
    `output` for a tokenizer read from `source`) with `model_max_length` set to the new length and, if given,
    `pad_token` ("!" is id 0, the original Long-CLIP's padding).
    """
    source, output = Path(source).expanduser(), Path(output).expanduser()
    if not source.is_dir():
        raise ConversionError(f"{source}: no such text-encoder folder.")
    model_class = _model_class(source)
    tokenizer_source = Path(tokenizer).expanduser() if tokenizer else None
    if tokenizer_source is None and any((source / name).is_file() for name in TOKENIZER_FILES):
        tokenizer_source = source
    if tokenizer_source is not None and not tokenizer_source.is_dir():
        raise ConversionError(f"{tokenizer_source}: no such tokenizer folder.")
    if tokenizer_source is None and (tokenizer_output or pad_token):
        raise ConversionError("--tokenizer-output / --pad-token need a tokenizer (--tokenizer DIR).")
    if tokenizer_source is not None and tokenizer_output is None:
        tokenizer_output = output if tokenizer_source == source else output.parent / tokenizer_source.name
    tokenizer_output = Path(tokenizer_output).expanduser() if tokenizer_output else None
    ensure_writable(output, overwrite)
    if tokenizer_output is not None and tokenizer_output != output:
        ensure_writable(tokenizer_output, overwrite)
    source_positions = _source_positions(source)
    if source_positions is not None and source_positions > STOCK_POSITIONS:
        raise ConversionError(
            f"{source}: its text position table already has {source_positions} rows (stock CLIP text encoders have "
            f"{STOCK_POSITIONS}): it was stretched before, or is a Long-CLIP encoder, and stretching it again would "
            f"give {keep + (source_positions - keep) * ratio} positions. Give the original {STOCK_POSITIONS}-position "
            "encoder."
        )
    text_tokenizer = _read_tokenizer(tokenizer_source, pad_token) if tokenizer_source is not None else None

    model = model_class.from_pretrained(source, dtype="auto").eval()
    stretched = stretched_text_encoder(model, keep, ratio, exact_fp16)
    difference = _check(model, stretched, keep)
    key = position_table_key(model)
    positions = stretched.state_dict()[key].shape[0]
    if text_tokenizer is not None:
        text_tokenizer.model_max_length = positions

    with atomic_folder(output, overwrite) as staging:
        stretched.save_pretrained(staging)
        if text_tokenizer is not None and tokenizer_output == output:
            text_tokenizer.save_pretrained(staging)
        if text_tokenizer is not None and tokenizer_output != output:
            with atomic_folder(tokenizer_output, overwrite) as tokenizer_staging:
                text_tokenizer.save_pretrained(tokenizer_staging)
    return StretchReport(
        model_class.__name__,
        model.state_dict()[key].shape[0],
        positions,
        keep,
        ratio,
        exact_fp16,
        str(stretched.dtype).removeprefix("torch."),
        difference,
        output,
        tokenizer_output,
    )


@command(kept="nothing was written")
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(
        prog="longclip-stretch-text-encoder",
        description="Stretch a stock CLIP text encoder (e.g. SDXL's text_encoder_2) to 248 positions for diffusers.",
    )
    parser.add_argument("source", metavar="SRC", help="CLIPTextModel / CLIPTextModelWithProjection / CLIPModel folder")
    parser.add_argument("output", metavar="DST", help="folder to write (same class, stretched position table)")
    parser.add_argument("--keep", type=int, default=20, help="rows copied unchanged (default: %(default)s)")
    parser.add_argument("--ratio", type=int, default=4, help="rows per interpolated gap (default: %(default)s)")
    parser.add_argument("--exact-fp16", action="store_true", help="the authors' fp16 arithmetic (bit-exact tables)")
    parser.add_argument("--tokenizer", metavar="DIR", help="tokenizer folder to write beside DST (e.g. tokenizer_2/)")
    parser.add_argument("--tokenizer-output", metavar="DIR", help="where the tokenizer goes (default: DST/../NAME)")
    parser.add_argument("--pad-token", help='pad token of the written tokenizer ("!" is id 0, the original padding)')
    parser.add_argument("--overwrite", action="store_true", help="replace existing output folders")
    args = parser.parse_args(argv)
    report = stretch_text_encoder(
        args.source,
        args.output,
        keep=args.keep,
        ratio=args.ratio,
        exact_fp16=args.exact_fp16,
        tokenizer=args.tokenizer,
        tokenizer_output=args.tokenizer_output,
        pad_token=args.pad_token,
        overwrite=args.overwrite,
    )
    print("\n".join(report.lines()))
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["StretchReport", "main", "position_table_key", "stretch_text_encoder", "stretched_text_encoder"]
