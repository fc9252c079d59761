"""Baselines in the evaluation suite: stock CLIPModel folders (77 positions, and the converter's 248-position
`--format clip` output), a SiglipModel folder and a Long-CLIP folder compared in one `longclip-eval` call.

The SigLIP folder pairs a tiny random SiglipModel with a tiny `tokenizers` WordLevel tokenizer (EOS appended, pad
token, 16-token limit) wrapped in PreTrainedTokenizerFast and a SiglipProcessor: the real SigLIP tokenizers need
sentencepiece or a Hub download, and what is tested here is the padding contract (to max_length), not the vocabulary.
Every figure in the comparison is recomputed by hand from `get_text_features` / `get_image_features`.
"""

from __future__ import annotations

import json
import os

import pytest
import torch
import torch.nn.functional as F
import transformers
from conftest import TINY_IMAGE_SIZE, tiny_image_processor
from eval_fixtures import write_image_folder, write_urban1k
from PIL import Image
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import (
    CLIPConfig,
    CLIPModel,
    CLIPProcessor,
    PreTrainedTokenizerFast,
    SiglipConfig,
    SiglipModel,
    SiglipProcessor,
)

from modeling_longclip.converters.clip_preprocessing import build_clip_tokenizer
from modeling_longclip.converters.longclip import convert_longclip
from modeling_longclip.converters.synthetic import random_openai_clip_state_dict
from modeling_longclip.evaluation import (
    BenchmarkError,
    EmbeddingCache,
    comparison,
    comparison_markdown,
    embed_images,
    embed_texts,
    evaluate_folders,
    evaluate_retrieval,
    load_benchmark,
    model_fingerprint,
    retrieval_recall_from_embeddings,
    text_limit,
)
from modeling_longclip.evaluation.cli import main as eval_main
from modeling_longclip.evaluation.embed import encoder_signature, text_padding

SIGLIP_LENGTH = 16
WORDS = "a the red blue green picture of street long very caption about word scene with".split()
LONG_CAPTION = "A very long caption about a street. " + "word " * 300
CAPTIONS = {"1": "a red picture", "2": LONG_CAPTION, "3": "a blue picture of a green scene with a street"}
TINY = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)


def clip_config(positions: int = 77) -> CLIPConfig:
    return CLIPConfig(
        text_config=dict(TINY, max_position_embeddings=positions),
        vision_config=dict(TINY, image_size=TINY_IMAGE_SIZE, patch_size=8),
        projection_dim=16,
    )


def stock_clip_folder(folder, positions: int = 77):
    torch.manual_seed(3)
    CLIPModel(clip_config(positions)).save_pretrained(folder)
    processor = CLIPProcessor(image_processor=tiny_image_processor(), tokenizer=build_clip_tokenizer(positions))
    processor.save_pretrained(folder)
    return folder


def siglip_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{word: i + 3 for i, word in enumerate(WORDS)}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=SIGLIP_LENGTH,
    )


def siglip_image_processor():
    cls = getattr(transformers, "SiglipImageProcessorPil", None) or transformers.SiglipImageProcessor
    return cls(size={"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE})


def siglip_folder(folder):
    torch.manual_seed(4)
    config = SiglipConfig(
        text_config=dict(
            TINY, vocab_size=len(WORDS) + 3, max_position_embeddings=SIGLIP_LENGTH, pad_token_id=0, eos_token_id=1
        ),
        vision_config=dict(TINY, image_size=TINY_IMAGE_SIZE, patch_size=8),
    )
    SiglipModel(config).save_pretrained(folder)
    SiglipProcessor(image_processor=siglip_image_processor(), tokenizer=siglip_tokenizer()).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def foreign(tmp_path_factory):
    """A stock CLIP folder (77 positions) and a SigLIP folder, shared by the tests (read only)."""
    root = tmp_path_factory.mktemp("baselines")
    return {"clip-77": stock_clip_folder(root / "clip-77"), "siglip": siglip_folder(root / "siglip")}


@pytest.fixture
def baselines(tmp_path, foreign, tiny_longclip_folder):
    """Four folders: stock CLIP (77), the converter's --format clip output (248), SigLIP, Long-CLIP (remote code)."""
    checkpoint = tmp_path / "longclip.pt"
    torch.save(random_openai_clip_state_dict(seed=5), checkpoint)
    converted = tmp_path / "longclip-as-clip"
    convert_longclip(checkpoint, converted, output_format="clip")
    return {
        "clip-77": foreign["clip-77"],
        "longclip-as-clip": converted,
        "siglip": foreign["siglip"],
        "tiny-longclip": tiny_longclip_folder,
    }


def by_hand(folder, dataset) -> dict:
    """Recall from features computed directly with the model's processor (the model's own padding rule)."""
    model = transformers.AutoModel.from_pretrained(folder).eval()
    processor = transformers.AutoProcessor.from_pretrained(folder)
    fixed = model.config.model_type == "siglip"
    limit = SIGLIP_LENGTH if fixed else model.config.text_config.max_position_embeddings
    padding = dict(padding="max_length" if fixed else True, truncation=True, max_length=limit)
    with torch.no_grad():
        text = model.get_text_features(**processor(text=dataset.texts, return_tensors="pt", **padding)).pooler_output
        pixels = processor(images=[Image.open(p).convert("RGB") for p in dataset.image_paths], return_tensors="pt")
        image = model.get_image_features(**pixels).pooler_output
    return retrieval_recall_from_embeddings(F.normalize(image, dim=-1), F.normalize(text, dim=-1), dataset.text_image)


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def test_one_command_compares_clip_siglip_and_longclip(tmp_path, baselines, capsys, umask_022):
    root = write_urban1k(tmp_path / "Urban1k", CAPTIONS)
    output = tmp_path / "out" / "comparison.json"
    args = [a for folder in baselines.values() for a in ("--model", str(folder))]
    args += [
        "--benchmark",
        "urban1k",
        "--data-root",
        str(root),
        "--device",
        "cpu",
        "--batch-size",
        "2",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--output",
        str(output),
        "--no-progress",
    ]
    assert eval_main(args) == 0, capsys.readouterr().err
    out = capsys.readouterr().out

    table = json.loads(output.read_text())
    assert table["task"] == "comparison" and table["models"] == list(baselines)
    assert table["columns"][:2] == ["urban1k I2T R@1", "urban1k I2T R@5"] and len(table["columns"]) == 6
    results = {r["model_name"]: r for r in table["results"]}
    assert {name: results[name]["model_type"] for name in baselines} == {
        "clip-77": "clip",
        "longclip-as-clip": "clip",
        "siglip": "siglip",
        "tiny-longclip": "longclip",
    }
    limits = {name: (r["counts"]["text_limit"], r["counts"]["texts_too_long"]) for name, r in results.items()}
    assert limits == {"clip-77": (77, 1), "longclip-as-clip": (248, 1), "siglip": (16, 1), "tiny-longclip": (248, 1)}
    dataset = load_benchmark("urban1k", root)
    for name in ("clip-77", "longclip-as-clip", "siglip"):
        expected = by_hand(baselines[name], dataset)
        for direction in ("image_to_text", "text_to_image"):
            assert results[name][direction] == pytest.approx(expected[direction]), name
    row = table["rows"][2]
    assert row["model"] == "siglip" and row["urban1k T2I R@1"] == results["siglip"]["text_to_image"]["R@1"]

    markdown = (tmp_path / "out" / "comparison.md").read_text()
    assert markdown.startswith("| Model | urban1k I2T R@1 | urban1k I2T R@5 | urban1k I2T R@10 | urban1k T2I R@1 |")
    assert "| clip-77 |" in markdown and "| siglip |" in markdown and markdown.splitlines()[0] in out
    assert "clip-77, urban1k (default): 1 of 3 texts exceed the model's 77-token limit and were truncated." in markdown
    chart = tmp_path / "out" / "comparison.png"
    assert Image.open(chart).size[0] >= 420
    assert {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "out").iterdir()} == {
        "comparison.json": 0o644,
        "comparison.md": 0o644,
        "comparison.png": 0o644,
    }  # umask 022, set by the fixture

    assert eval_main(args) == 0  # every model's embeddings come from the cache the second time
    table = json.loads(output.read_text())
    assert [r["cache"] for r in table["results"]] == [{"images": "hit", "texts": "hit"}] * 4


def test_siglip_pads_to_max_length_and_clip_to_the_longest(foreign):
    baselines = foreign
    siglip = transformers.AutoModel.from_pretrained(baselines["siglip"]).eval()
    processor = transformers.AutoProcessor.from_pretrained(baselines["siglip"])
    assert text_padding(siglip, processor) == {"padding": "max_length", "max_length": 16, "truncation": True}
    texts = ["a red picture", "a blue picture of a green scene"]
    embeds = embed_texts(siglip, processor, texts, batch_size=1)
    with torch.no_grad():
        longest = siglip.get_text_features(**processor(text=texts, padding=True, return_tensors="pt")).pooler_output
    assert not torch.allclose(embeds, F.normalize(longest, dim=-1), atol=1e-4)  # SigLIP's pooled row is padding-bound
    with pytest.raises(BenchmarkError, match="long_text='window' needs this package's processor"):
        embed_texts(siglip, processor, texts, long_text="window")

    clip = transformers.AutoModel.from_pretrained(baselines["clip-77"]).eval()
    clip_processor = transformers.AutoProcessor.from_pretrained(baselines["clip-77"])
    assert text_padding(clip, clip_processor) == {"padding": True, "truncation": True, "max_length": 77}
    one_by_one = torch.cat([embed_texts(clip, clip_processor, [t]) for t in texts])
    assert torch.allclose(embed_texts(clip, clip_processor, texts, batch_size=2), one_by_one, atol=1e-5)


def test_limit_is_the_shorter_of_tokenizer_and_position_table(foreign):
    baselines = foreign
    clip = transformers.AutoModel.from_pretrained(baselines["clip-77"])
    processor = CLIPProcessor(image_processor=tiny_image_processor(), tokenizer=build_clip_tokenizer(248))
    assert text_limit(processor) == 248 and text_limit(processor, clip) == 77


def test_python_api_and_cache_keys(tmp_path, foreign):
    """evaluate_retrieval takes a foreign model directly; an in-memory model is keyed by its weights, a folder by its
    files, and the key also holds the padding rule."""
    baselines = foreign
    root = write_urban1k(tmp_path / "u", CAPTIONS)
    dataset = load_benchmark("urban1k", root)
    clip = CLIPModel.from_pretrained(baselines["clip-77"]).eval()
    processor = CLIPProcessor.from_pretrained(baselines["clip-77"])
    cache = EmbeddingCache.for_model(clip, tmp_path / "cache")
    first = evaluate_retrieval(clip, processor, dataset, cache=cache, progress=False)
    assert first["image_to_text"] == pytest.approx(by_hand(baselines["clip-77"], dataset)["image_to_text"])
    assert evaluate_retrieval(clip, processor, dataset, cache=cache, progress=False)["cache"]["texts"] == "hit"
    in_memory = CLIPModel(clip_config()).eval()  # not loaded from a folder
    before = model_fingerprint(in_memory)
    with torch.no_grad():
        in_memory.text_projection.weight.add_(1.0)
    assert before.startswith("weights:") and model_fingerprint(in_memory) != before
    prints = {model_fingerprint(model_dir=folder) for folder in foreign.values()}
    assert len(prints) == 2

    siglip = SiglipModel.from_pretrained(foreign["siglip"]).eval()
    siglip_processor = SiglipProcessor.from_pretrained(foreign["siglip"])
    signature = encoder_signature(siglip, siglip_processor)
    assert signature["text"]["padding"] == "max_length" and encoder_signature(clip, processor) != signature


def test_siglip2_gets_its_patch_mask_and_fixed_length_text(tmp_path):
    """Siglip2Model takes pixel_attention_mask and spatial_shapes besides the pixels, and texts padded to max_length."""
    image_processor_class = (
        getattr(transformers, "Siglip2ImageProcessorPil", None) or transformers.Siglip2ImageProcessor
    )
    processor = transformers.Siglip2Processor(
        image_processor=image_processor_class(max_num_patches=16), tokenizer=siglip_tokenizer()
    )
    torch.manual_seed(6)
    config = transformers.Siglip2Config(
        text_config=dict(
            TINY, vocab_size=len(WORDS) + 3, max_position_embeddings=SIGLIP_LENGTH, pad_token_id=0, eos_token_id=1
        ),
        vision_config=dict(TINY, num_patches=16, patch_size=16),
    )
    model = transformers.Siglip2Model(config).eval()
    images = [Image.new("RGB", (40, 30), "red"), Image.new("RGB", (24, 48), "blue")]
    texts = ["a red picture", "a blue scene with a long street"]
    with torch.no_grad():
        pixels = processor(images=images, return_tensors="pt")
        assert set(pixels) == {"pixel_values", "pixel_attention_mask", "spatial_shapes"}
        image = F.normalize(model.get_image_features(**pixels).pooler_output, dim=-1)
        tokens = processor(
            text=texts, padding="max_length", max_length=SIGLIP_LENGTH, truncation=True, return_tensors="pt"
        )
        text = F.normalize(model.get_text_features(**tokens).pooler_output, dim=-1)
    assert torch.allclose(embed_images(model, processor, images, batch_size=1), image, atol=1e-5)
    assert torch.allclose(embed_texts(model, processor, texts, batch_size=1), text, atol=1e-5)


def test_zeroshot_comparison_of_two_baselines(tmp_path, foreign):
    """Zero-shot through the Python API for CLIP and SigLIP, compared in one table (Top-1 / Top-5 columns)."""
    root = write_image_folder(tmp_path / "imagenet" / "val", {"red": [0], "blue": [2]})
    dataset = load_benchmark("zeroshot", root)
    results = evaluate_folders(list(foreign.values()), [dataset], names=list(foreign), device="cpu", progress=False)
    table = comparison(results)
    assert table["columns"] == ["zeroshot (imagenet/val) Top-1", "zeroshot (imagenet/val) Top-5"]
    assert [row["zeroshot (imagenet/val) Top-5"] for row in table["rows"]] == [100.0, 100.0]  # 2 classes
    assert [r["counts"]["text_limit"] for r in results] == [77, SIGLIP_LENGTH]
    assert "| clip-77 |" in comparison_markdown(table)
