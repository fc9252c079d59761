"""LLM feature cache (the features package: cli over store / extraction / fingerprint / caption_sources):
extraction, shards and index, resume, fingerprint, keys, readers, caption sources and the command line, on a tiny
random LLM2CLIP (Llama text tower) built offline."""

from __future__ import annotations

import copy
import hashlib
import json
import subprocess
import sys

import datasets
import pytest
import torch
from llm_fixtures import tiny_image_processor, tiny_llama3_tokenizer, tiny_llama_config, tiny_llm2clip_config
from safetensors.torch import load_file

from modeling_longclip import LLM2CLIPModel, LLM2CLIPProcessor, feature_extraction, features
from modeling_longclip.common.caption_data import short_caption_of
from modeling_longclip.common.errors import DataError
from modeling_longclip.features import (
    FeatureCacheError,
    TextFeatureCache,
    caption_key,
    extract_text_features,
    iter_captions,
    run_extraction,
)
from modeling_longclip.features.cli import main

CAPTIONS = [
    "A red car.",
    "Two dogs run across the beach while a man throws a ball into the waves. The sky is clear and bright blue.",
    "A bowl of fruit with apples, oranges and bananas sits on a wooden table.",
    "A photo.",
    "The user asks for a detailed description of the photo in the frame. It shows a street, a tree and a car.",
    "A green tree on a sunny street.",
    "A man throws a ball. A dog runs after it. Waves roll onto the sand behind them.",
    "Colours and shapes.",
    "A wooden table with a bowl on it.",
    "Bananas.",
]


@pytest.fixture(scope="module")
def tiny():
    tokenizer = tiny_llama3_tokenizer()
    torch.manual_seed(0)
    model = LLM2CLIPModel(tiny_llm2clip_config(tiny_llama_config(len(tokenizer)))).eval()
    with torch.no_grad():  # larger weights than the init, so that a wrong row or mask shows clearly
        for param in model.text_model.parameters():
            param.add_(0.05 * torch.randn_like(param))
    return model, LLM2CLIPProcessor(tiny_image_processor(), tokenizer)


def keyed(texts):
    return [(caption_key(t), t) for t in texts]


def alone(model, processor, text) -> torch.Tensor:
    with torch.no_grad():
        return model.encode_llm(**processor(text=[text]))[0]


class CountingEncoder:
    """Wraps `model.encode_llm`: counts calls and the captions' token counts, and can fail after `fail_after` calls."""

    def __init__(self, model, fail_after: int | None = None):
        self.encode, self.fail_after = type(model).encode_llm.__get__(model), fail_after  # the class's, not a patch
        self.calls, self.rows, self.lengths = 0, 0, []

    def __call__(self, input_ids, attention_mask=None, pooling_mask=None):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise RuntimeError("simulated interruption")
        self.calls += 1
        self.rows += input_ids.shape[0]
        self.lengths.append(attention_mask.sum(1).tolist())
        return self.encode(input_ids, attention_mask, pooling_mask)


def test_round_trip_and_index_format(tmp_path, tiny):
    model, processor = tiny
    folder = extract_text_features(model, processor, keyed(CAPTIONS), tmp_path / "cache", batch_size=3, progress=False)
    assert folder == tmp_path / "cache"
    cache = TextFeatureCache(folder)
    assert len(cache) == len(CAPTIONS) and cache.dim == 64
    assert caption_key(CAPTIONS[0]) in cache and caption_key("not cached") not in cache

    got = cache.get_texts(CAPTIONS)
    assert got.dtype == torch.float32 and got.shape == (len(CAPTIONS), 64)
    for row, text in zip(got, CAPTIONS):
        torch.testing.assert_close(row, alone(model, processor, text), rtol=0, atol=1e-5)

    inputs = processor(text=CAPTIONS)
    with torch.no_grad():
        from_tokens = model.get_text_features(**inputs).pooler_output
        from_cache = model.get_text_features(text_embeds=cache.get([caption_key(t) for t in CAPTIONS])).pooler_output
    torch.testing.assert_close(from_cache, from_tokens, rtol=1e-5, atol=1e-5)

    index = json.loads((folder / "index.json").read_text())
    assert index["format"] == 2 and index["dim"] == 64 and index["shards"] == ["shard-00000.safetensors"]
    assert index["keys"] == {caption_key(t): [0, i] for i, t in enumerate(CAPTIONS)}
    fingerprint = index["model"]
    assert fingerprint["text_model_type"] == "llama" and fingerprint["hidden_size"] == 64
    assert fingerprint["pooling"] == "mean" and fingerprint["pooling_scope"] == "caption"
    assert fingerprint["text_template"] == processor.text_template and len(fingerprint["text_weights"]) == 64
    assert sorted(p.name for p in folder.iterdir()) == ["index.json", "shard-00000.safetensors"]
    cache.check_model(model, processor)


def test_several_shards_map_keys_to_rows(tmp_path, tiny):
    model, processor = tiny
    stats = run_extraction(model, processor, keyed(CAPTIONS[:8]), tmp_path, batch_size=2, shard_size=3, progress=False)
    assert (stats.encoded, stats.cached, stats.duplicates, stats.shards_written, stats.total) == (8, 0, 0, 3, 8)
    index = json.loads((tmp_path / "index.json").read_text())
    assert index["shards"] == [f"shard-0000{i}.safetensors" for i in range(3)]
    assert [index["keys"][caption_key(t)] for t in CAPTIONS[:8]] == [[i // 3, i % 3] for i in range(8)]
    shards = [load_file(tmp_path / name)["embeds"] for name in index["shards"]]
    assert [s.shape for s in shards] == [(3, 64), (3, 64), (2, 64)]
    cache = TextFeatureCache(tmp_path)
    torch.testing.assert_close(cache.get([caption_key(t) for t in CAPTIONS[:8]]), torch.cat(shards), rtol=0, atol=0)
    # scattered keys across shards, repeated and out of order
    keys = [caption_key(CAPTIONS[i]) for i in (7, 0, 4, 0, 5, 1)]
    torch.testing.assert_close(cache.get(keys), torch.cat(shards)[[7, 0, 4, 0, 5, 1]], rtol=0, atol=0)
    assert cache.get([]).shape == (0, 64)
    with pytest.raises(KeyError, match=r"'nope'.*feature cache at"):
        cache.get([keys[0], "nope"])
    with pytest.raises(KeyError, match="Bananas"):
        cache.get_texts(["Bananas."])


def test_length_sorted_batches_keep_results_and_order(tmp_path, tiny, monkeypatch):
    model, processor = tiny
    counter = CountingEncoder(model)
    monkeypatch.setattr(model, "encode_llm", counter)
    extract_text_features(model, processor, keyed(CAPTIONS), tmp_path / "sorted", batch_size=4, progress=False)
    flat = [n for batch in counter.lengths for n in batch]
    assert flat == sorted(flat, reverse=True) and counter.calls == 3  # longest first, 4 + 4 + 2
    # padding within a batch is small: at most the spread of neighbouring lengths
    assert max(max(b) - min(b) for b in counter.lengths) < max(flat) - min(flat)
    extract_text_features(model, processor, keyed(CAPTIONS), tmp_path / "single", batch_size=1, progress=False)
    keys = [caption_key(t) for t in CAPTIONS]
    batched, single = TextFeatureCache(tmp_path / "sorted").get(keys), TextFeatureCache(tmp_path / "single").get(keys)
    torch.testing.assert_close(batched, single, rtol=0, atol=1e-5)


def test_duplicates_are_encoded_once(tmp_path, tiny, monkeypatch):
    model, processor = tiny
    counter = CountingEncoder(model)
    monkeypatch.setattr(model, "encode_llm", counter)
    texts = [CAPTIONS[0], CAPTIONS[1], CAPTIONS[0], "  " + CAPTIONS[1] + "\n", CAPTIONS[2], CAPTIONS[0]]
    stats = run_extraction(model, processor, keyed(texts), tmp_path, batch_size=8, shard_size=2, progress=False)
    assert (stats.encoded, stats.duplicates, stats.total) == (4, 2, 4) and counter.rows == 4
    assert caption_key(" " + CAPTIONS[1]) != caption_key(CAPTIONS[1])  # llm2vec pools leading whitespace: two rows
    cache = TextFeatureCache(tmp_path)
    torch.testing.assert_close(
        cache.get_texts(texts), torch.stack([alone(model, processor, t) for t in texts]), rtol=0, atol=1e-5
    )


def test_resume_after_interruption_encodes_only_the_rest(tmp_path, tiny, monkeypatch):
    model, processor = tiny
    captions = keyed(CAPTIONS)
    extract_text_features(
        model, processor, captions, tmp_path / "reference", batch_size=2, shard_size=4, progress=False
    )

    failing = CountingEncoder(model, fail_after=4)  # shards of 4 = 2 batches: the 5th call (shard 3) dies
    monkeypatch.setattr(model, "encode_llm", failing)
    with pytest.raises(RuntimeError, match="simulated"):
        extract_text_features(
            model, processor, captions, tmp_path / "cache", batch_size=2, shard_size=4, progress=False
        )
    assert len(TextFeatureCache(tmp_path / "cache")) == 8

    counter = CountingEncoder(model)
    monkeypatch.setattr(model, "encode_llm", counter)
    stats = run_extraction(model, processor, captions, tmp_path / "cache", batch_size=2, shard_size=4, progress=False)
    assert (stats.encoded, stats.cached, stats.shards_written, stats.total) == (2, 8, 1, 10)
    assert (counter.calls, counter.rows) == (1, 2)

    resumed, reference = (json.loads((tmp_path / d / "index.json").read_text()) for d in ("cache", "reference"))
    assert resumed == reference
    keys = [key for key, _ in captions]
    torch.testing.assert_close(
        TextFeatureCache(tmp_path / "cache").get(keys),
        TextFeatureCache(tmp_path / "reference").get(keys),
        rtol=0,
        atol=0,
    )

    again = run_extraction(model, processor, captions, tmp_path / "cache", batch_size=2, shard_size=4, progress=False)
    assert (again.encoded, again.cached, counter.calls) == (0, 10, 1)


def test_unlisted_shard_and_temp_files_are_ignored_and_replaced(tmp_path, tiny, monkeypatch):
    model, processor = tiny
    real_write_index, writes = feature_extraction.write_index, []

    def dies_on_second_index_write(folder, index):  # the run dies between the shard's rename and the index's
        writes.append(1)
        if len(writes) == 2:
            raise RuntimeError("simulated interruption")
        real_write_index(folder, index)

    monkeypatch.setattr(feature_extraction, "write_index", dies_on_second_index_write)
    with pytest.raises(RuntimeError, match="simulated"):
        extract_text_features(
            model, processor, keyed(CAPTIONS[:6]), tmp_path, batch_size=2, shard_size=3, progress=False
        )
    monkeypatch.setattr(feature_extraction, "write_index", real_write_index)
    assert (tmp_path / "shard-00001.safetensors").is_file()  # written, but not listed
    cache = TextFeatureCache(tmp_path)
    assert len(cache) == 3 and cache.shards == ["shard-00000.safetensors"]
    (tmp_path / ".shard-00002.safetensors.x1y2.tmp").write_bytes(b"half a shard")
    (tmp_path / "shard-00002.safetensors").write_bytes(b"not a safetensors file")

    counter = CountingEncoder(model)
    monkeypatch.setattr(model, "encode_llm", counter)
    stats = run_extraction(model, processor, keyed(CAPTIONS), tmp_path, batch_size=2, shard_size=3, progress=False)
    assert (stats.encoded, stats.cached, counter.rows) == (7, 3, 7)
    assert not list(tmp_path.glob(".*.tmp"))
    cache = TextFeatureCache(tmp_path)
    assert cache.shards == [f"shard-0000{i}.safetensors" for i in range(4)]
    expected = torch.stack([alone(model, processor, t) for t in CAPTIONS])
    torch.testing.assert_close(cache.get_texts(CAPTIONS), expected, rtol=0, atol=1e-5)


def test_another_model_or_processor_is_refused(tmp_path, tiny):
    model, processor = tiny
    extract_text_features(model, processor, keyed(CAPTIONS[:3]), tmp_path, progress=False)
    cache = TextFeatureCache(tmp_path)

    other = copy.deepcopy(model)
    with torch.no_grad():
        other.text_model.norm.weight.mul_(1.5)
    with pytest.raises(ValueError, match="text_weights") as refused:
        extract_text_features(other, processor, keyed(CAPTIONS), tmp_path, progress=False)
    assert isinstance(refused.value, FeatureCacheError) and "new output folder" in str(refused.value)
    with pytest.raises(ValueError, match="text_weights"):
        cache.check_model(other, processor)
    mean_pooling = LLM2CLIPProcessor(tiny_image_processor(), processor.tokenizer, pooling_scope="all")
    with pytest.raises(ValueError, match="pooling_scope"):
        cache.check_model(model, mean_pooling)
    assert len(TextFeatureCache(tmp_path)) == 3  # nothing was written

    # the same weights in bfloat16 (as extraction on a GPU loads them) are the same model
    cache.check_model(copy.deepcopy(model).to(torch.bfloat16), processor)

    stats = run_extraction(other, processor, keyed(CAPTIONS[:2]), tmp_path, progress=False, overwrite=True)
    assert (stats.encoded, stats.total) == (2, 2)
    TextFeatureCache(tmp_path).check_model(other, processor)


def test_storage_dtype_and_compute_dtype(tmp_path, tiny):
    model, processor = tiny
    extract_text_features(
        model, processor, keyed(CAPTIONS[:4]), tmp_path / "half", storage_dtype="float16", progress=False
    )
    assert load_file(tmp_path / "half" / "shard-00000.safetensors")["embeds"].dtype == torch.float16
    got = TextFeatureCache(tmp_path / "half").get_texts(CAPTIONS[:4])
    assert got.dtype == torch.float32
    expected = torch.stack([alone(model, processor, t) for t in CAPTIONS[:4]])
    torch.testing.assert_close(got, expected, rtol=2e-3, atol=2e-3)
    extract_text_features(
        model, processor, keyed(CAPTIONS[:4]), tmp_path / "bf16", dtype=torch.bfloat16, progress=False
    )
    bf16 = TextFeatureCache(tmp_path / "bf16").get_texts(CAPTIONS[:4])  # autocast over float32 weights
    assert torch.nn.functional.cosine_similarity(bf16, expected).min() > 0.99
    with pytest.raises(ValueError, match="float32"):
        extract_text_features(
            copy.deepcopy(model).to(torch.bfloat16),
            processor,
            keyed(CAPTIONS[:1]),
            tmp_path / "x",
            dtype=torch.float32,
            progress=False,
        )


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


ROWS = [
    {"id": "img1", "caption": "A red car parked by a tree. The street is sunny.", "short_caption": "A red car."},
    {"id": "img2", "caption": "   ", "short_caption": "An empty long caption."},
    {"id": 3, "caption": "Two dogs on a beach", "short_caption": None},
]


def test_caption_sources_jsonl_keys_and_short_captions(tmp_path):
    path = write_jsonl(tmp_path / "captions.jsonl", ROWS)
    source = iter_captions(path, ["caption", "short_caption"], derive_short=True)
    pairs = list(source)
    assert len(source) == len(pairs)
    assert [text for _, text in pairs] == [
        "A red car parked by a tree. The street is sunny.",
        "A red car parked by a tree",
        "A red car.",
        "A red car.",
        "   ",
        "",
        "An empty long caption.",
        "An empty long caption.",
        "Two dogs on a beach",
        "Two dogs on a beach",
    ]  # whitespace-only and empty captions are kept: llm2vec encodes them
    assert all(key == hashlib.sha1(text.encode("utf-8")).hexdigest() for key, text in pairs)  # the exact text
    assert short_caption_of(ROWS[0]["caption"]) == "A red car parked by a tree"

    by_id = list(iter_captions(path, ["caption", "short_caption"], id_column="id", derive_short=True))
    assert [key for key, _ in by_id] == [
        "img1",
        "img1:short",
        "img1:short_caption",
        "img1:short_caption:short",
        "img2",
        "img2:short",
        "img2:short_caption",
        "img2:short_caption:short",
        "3",
        "3:short",
    ]
    assert list(iter_captions(path)) == [(caption_key(row["caption"]), row["caption"]) for row in ROWS]


def test_caption_sources_saved_dataset_csv_and_errors(tmp_path):
    dataset = datasets.Dataset.from_dict({"uid": ["a", "b"], "text": ["First caption. More.", "Second caption"]})
    dataset.save_to_disk(str(tmp_path / "saved"))
    assert list(iter_captions(tmp_path / "saved", ["text"], id_column="uid")) == [
        ("a", "First caption. More."),
        ("b", "Second caption"),
    ]
    datasets.DatasetDict({"train": dataset}).save_to_disk(str(tmp_path / "saved_dict"))
    assert len(iter_captions(tmp_path / "saved_dict", ["text"], derive_short=True)) == 4
    (tmp_path / "captions.csv").write_text('caption,other\n"A caption, with a comma",1\n', encoding="utf-8")
    assert [t for _, t in iter_captions(tmp_path / "captions.csv")] == ["A caption, with a comma"]

    with pytest.raises(DataError, match="no such caption file"):
        iter_captions(tmp_path / "missing.jsonl")
    with pytest.raises(DataError, match=r"no column `caption`.*--caption-column"):
        iter_captions(tmp_path / "saved")
    with pytest.raises(DataError, match=r"no column `id`.*--id-column"):
        iter_captions(tmp_path / "saved", ["text"], id_column="id")
    (tmp_path / "not_a_dataset").mkdir()
    with pytest.raises(DataError, match="save_to_disk"):
        iter_captions(tmp_path / "not_a_dataset")
    write_jsonl(tmp_path / "bad.jsonl", [{"caption": 5}])
    with pytest.raises(DataError, match=r"row 0, column `caption` holds int"):
        list(iter_captions(tmp_path / "bad.jsonl"))


def test_cache_pickles_without_open_handles(tmp_path, tiny):
    import pickle

    model, processor = tiny
    extract_text_features(model, processor, keyed(CAPTIONS[:3]), tmp_path, progress=False)
    cache = TextFeatureCache(tmp_path)
    before = cache.get_texts(CAPTIONS[:3])
    copied = pickle.loads(pickle.dumps(cache))
    torch.testing.assert_close(copied.get_texts(CAPTIONS[:3]), before, rtol=0, atol=0)
    with pytest.raises(FileNotFoundError, match="no feature cache"):
        TextFeatureCache(tmp_path / "elsewhere")


def test_cli_end_to_end(tmp_path, tiny, capsys):
    model, processor = tiny
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    path = write_jsonl(tmp_path / "captions.jsonl", ROWS)
    argv = [
        "--model",
        tmp_path / "model",
        "--captions",
        path,
        "--output",
        tmp_path / "cache",
        "--caption-column",
        "caption",
        "--caption-column",
        "short_caption",
        "--derive-short-captions",
        "--batch-size",
        "2",
        "--shard-size",
        "3",
        "--device",
        "cpu",
        "--no-progress",
    ]
    assert main([str(a) for a in argv]) == 0
    out = capsys.readouterr().out
    texts = sorted({t for _, t in iter_captions(path, ["caption", "short_caption"], derive_short=True)})
    assert f"encoded {len(texts)} captions" in out and str(tmp_path / "cache") in out

    cache = TextFeatureCache(tmp_path / "cache")
    assert len(cache) == len(texts) == 7 and len(cache.shards) == 3
    cache.check_model(model, processor)  # the folder's model, loaded elsewhere, is the one in memory
    expected = torch.stack([alone(model, processor, t) for t in texts])
    torch.testing.assert_close(cache.get_texts(texts), expected, rtol=0, atol=1e-5)

    assert main([str(a) for a in argv]) == 0
    assert f"encoded 0 captions, skipped {len(texts)} already cached and 3 repeated" in capsys.readouterr().out

    index_path = tmp_path / "cache" / "index.json"
    index = json.loads(index_path.read_text())
    index["model"]["text_weights"] = "0" * 64  # as if another model had made it
    index_path.write_text(json.dumps(index))
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "text_weights" in err and "--overwrite" in err
    assert main([str(a) for a in argv] + ["--overwrite"]) == 0
    assert f"encoded {len(texts)} captions" in capsys.readouterr().out

    missing = [str(a) for a in argv]
    missing[missing.index(str(path))] = str(tmp_path / "nope.jsonl")
    assert main(missing) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and "nope.jsonl" in captured.err and "Traceback" not in captured.err


def test_python_dash_m_entry_point(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "modeling_longclip.features",
            "--model",
            str(tmp_path),
            "--captions",
            "x.jsonl",
            "--output",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and result.stderr.startswith("error: ") and "config.json" in result.stderr


def test_progress_bar_counts_captions(tmp_path, tiny, capsys):
    model, processor = tiny
    texts = CAPTIONS[:4] + CAPTIONS[:2]
    extract_text_features(model, processor, keyed(texts), tmp_path, batch_size=2, progress=True)
    err = capsys.readouterr().err
    assert "text features" in err and "6/6" in err
    with pytest.raises(TypeError, match="list"):
        TextFeatureCache(tmp_path).get_texts(CAPTIONS[0])


def test_keys_are_the_exact_caption_and_empty_captions_are_cached(tmp_path, tiny):
    model, processor = tiny
    texts = ["a dog", " a dog", "a dog \n", "", "  "]
    stats = run_extraction(model, processor, keyed(texts), tmp_path, progress=False)
    assert stats.encoded == 5  # five keys: nothing is stripped before hashing
    rows = TextFeatureCache(tmp_path).get_texts(texts)
    torch.testing.assert_close(rows, torch.stack([alone(model, processor, t) for t in texts]), rtol=0, atol=1e-5)
    torch.testing.assert_close(rows[0], rows[2], rtol=0, atol=1e-5)  # llm2vec strips trailing whitespace only
    assert (rows[0] - rows[1]).abs().max() > 1e-4  # the leading space is pooled
    torch.testing.assert_close(rows[3], rows[4], rtol=0, atol=1e-5)  # both: the template alone, <|eot_id|> pooled


def test_fingerprint_covers_llm2vec_settings_and_pooling_dtype(tmp_path, tiny):
    model, processor = tiny
    extract_text_features(model, processor, keyed(CAPTIONS[:2]), tmp_path, progress=False)
    cache = TextFeatureCache(tmp_path)
    assert cache.fingerprint["doc_max_length"] == 512 and cache.fingerprint["pooling_dtype"] == "model"
    with pytest.raises(FeatureCacheError, match="doc_max_length"):
        cache.check_model(model, LLM2CLIPProcessor(tiny_image_processor(), processor.tokenizer, doc_max_length=400))
    with pytest.raises(FeatureCacheError, match="instruction_separator"):
        cache.check_model(
            model, LLM2CLIPProcessor(tiny_image_processor(), processor.tokenizer, instruction_separator=None)
        )
    fp32_pooling = copy.deepcopy(model)
    fp32_pooling.config.pooling_dtype = "float32"
    with pytest.raises(FeatureCacheError, match="pooling_dtype"):
        cache.check_model(fp32_pooling, processor)


def test_format_1_caches_are_refused_with_a_clear_message(tmp_path, tiny, capsys):
    model, processor = tiny
    old = {"format": 1, "dim": 64, "model": {}, "shards": [], "keys": {}}
    (tmp_path / "index.json").write_text(json.dumps(old))
    with pytest.raises(FeatureCacheError, match="format 1.*extract again"):
        TextFeatureCache(tmp_path)
    with pytest.raises(FeatureCacheError, match="format 1"):
        run_extraction(model, processor, keyed(CAPTIONS[:1]), tmp_path, progress=False)
    model_dir = tmp_path / "model"
    model.save_pretrained(model_dir)
    processor.save_pretrained(model_dir)
    write_jsonl(tmp_path / "c.jsonl", [{"caption": "a dog"}])
    argv = [
        "--model",
        str(model_dir),
        "--captions",
        str(tmp_path / "c.jsonl"),
        "--output",
        str(tmp_path),
        "--no-progress",
        "--device",
        "cpu",
    ]
    assert main(argv) == 2 and "format 1" in capsys.readouterr().err
    assert run_extraction(model, processor, keyed(CAPTIONS[:1]), tmp_path, progress=False, overwrite=True).encoded == 1
    assert json.loads((tmp_path / "index.json").read_text())["format"] == 2


def test_the_cli_module_still_offers_every_public_name():
    from modeling_longclip import caption_sources, feature_fingerprint, feature_store

    for name in features.__all__:
        assert hasattr(features, name), name
    assert (
        features.TextFeatureCache is feature_store.TextFeatureCache
        and features.iter_captions is caption_sources.iter_captions
    )
    assert (
        features.model_fingerprint is feature_fingerprint.model_fingerprint
        and features.run_extraction is run_extraction
    )
