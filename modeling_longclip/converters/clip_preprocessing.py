"""OpenAI CLIP preprocessing as standard Hugging Face objects: the BPE tokenizer (built offline from open_clip's
vocabulary file) and the image processor.

Long-CLIP's tokenizer is byte-identical to OpenAI CLIP's; only the context length changes (248).
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import tempfile
from pathlib import Path

import transformers
from transformers import CLIPTokenizer
from transformers.utils import is_torchvision_available

from ..image_processing_longclip import LongCLIPImageProcessor

BPE_FILENAME = "bpe_simple_vocab_16e6.txt.gz"
N_MERGES = 49152 - 256 - 2


def open_clip_bpe_path() -> Path:
    """Locate the BPE file inside the installed open-clip-torch wheel without importing open_clip (needs torchvision)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "The CLIP BPE vocabulary ships inside open-clip-torch: `pip install --no-deps open-clip-torch`, "
            "or pass an existing Hugging Face CLIP tokenizer folder instead."
        )
    path = Path(spec.origin).parent / BPE_FILENAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed open-clip-torch.")
    return path


def bytes_to_unicode() -> dict[int, str]:
    """OpenAI's reversible byte -> printable character table, in OpenAI's order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    codes = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, codes)))


def clip_vocab_and_merges(bpe_path: str | Path | None = None) -> tuple[dict[str, int], list[str]]:
    """vocab.json content (bytes, bytes + '</w>', merges joined, SOT, EOT) and the 48,894 merge lines."""
    lines = gzip.open(bpe_path or open_clip_bpe_path()).read().decode("utf-8").split("\n")
    merges = lines[1 : N_MERGES + 1]
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {token: index for index, token in enumerate(tokens)}, merges


def build_clip_tokenizer(context_length: int = 248, bpe_path: str | Path | None = None) -> CLIPTokenizer:
    """A `CLIPTokenizer` with OpenAI's ids, truncating and padding at `context_length`."""
    vocab, merges = clip_vocab_and_merges(bpe_path)
    with tempfile.TemporaryDirectory() as folder:
        vocab_file, merges_file = Path(folder) / "vocab.json", Path(folder) / "merges.txt"
        vocab_file.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
        merges_file.write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
        return CLIPTokenizer(str(vocab_file), str(merges_file), model_max_length=context_length)


def clip_image_processor(image_size: int, flavour: str = "torchvision"):
    """The CLIP image processor every converter writes, at `image_size`.

    flavour "torchvision" (Long-CLIP, ProCLIP, EVA-CLIP: the authors' torchvision transforms) or "transformers"
    (LLM2CLIP's releases, preprocessed by transformers 4.x `CLIPImageProcessor`): a `LongCLIPImageProcessor` that
    gives the original's pixels with or without torchvision installed. "stock": transformers' own CLIP image processor,
    for folders that must load without remote code (its crop floors the offset, its backend depends on torchvision).
    """
    if flavour != "stock":
        return LongCLIPImageProcessor(size=image_size, flavour=flavour)
    # Without torchvision, transformers >= 5.20 names the PIL implementation `CLIPImageProcessorPil`; using it directly
    # avoids a fallback warning. Both save the same preprocessor files (type "CLIPImageProcessor").
    if not is_torchvision_available() and hasattr(transformers, "CLIPImageProcessorPil"):
        cls = transformers.CLIPImageProcessorPil
    else:
        cls = transformers.CLIPImageProcessor
    return cls(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size})
