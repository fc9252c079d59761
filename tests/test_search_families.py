"""Photo search with every kind of folder: the families this package writes (Long-CLIP remote code and its stock
`--format clip` twin, LLM2CLIP, ProCLIP; tests/family_folders.py converts tiny random checkpoints) and stock
CLIPModel / SiglipModel folders. For each, the scores `longclip-search query` prints equal a by-hand cosine of the
model's own `get_text_features` / `get_image_features`, and a query past the model's limit is handled its way."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from family_folders import convert_families
from test_eval_baselines import SIGLIP_LENGTH, WORDS, siglip_folder, stock_clip_folder
from test_search import by_hand_scores, one_thread, ranked, scene  # noqa: F401 - one_thread is an autouse fixture
from transformers import AutoModel, AutoProcessor

from modeling_longclip.search import LongQueryWarning, PhotoIndex
from modeling_longclip.search.cli import index_main, query_main

QUERY = "a red picture of a long street scene"
LONG = " ".join(WORDS * 40)  # past every limit here: 77, 248, 512 tokens and SigLIP's 16


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = convert_families(tmp_path_factory.mktemp("families"))
    photos = root / "photos"
    photos.mkdir()
    for name in ("astronaut", "coffee", "chelsea", "rocket", "camera"):
        scene(name).save(photos / f"{name}.jpg")
    return {
        "root": root,
        "photos": photos,
        "longclip": root / "longclip",
        "clip": root / "clip",
        "llm2clip": root / "llm2clip",
        "proclip": root / "proclip",
        "clip-77": stock_clip_folder(root / "clip-77"),
        "siglip": siglip_folder(root / "siglip"),
    }


def text_inputs(kind: str, processor, text: str) -> dict:
    """What the model's own card would feed it: SigLIP pads to its length; the others as their processor does."""
    if kind == "siglip":
        return dict(
            processor(
                text=[text], padding="max_length", max_length=SIGLIP_LENGTH, truncation=True, return_tensors="pt"
            )
        )
    if kind in ("clip-77", "clip"):
        limit = 77 if kind == "clip-77" else 248
        return dict(processor(text=[text], return_tensors="pt", truncation=True, max_length=limit))
    return dict(processor(text=[text], return_tensors="pt"))


@pytest.mark.parametrize("kind", ["longclip", "clip", "llm2clip", "proclip", "clip-77", "siglip"])
def test_every_family_indexes_and_scores_like_a_by_hand_cosine(folders, kind, tmp_path, capsys):
    model_dir, index_dir = folders[kind], tmp_path / "index"
    argv = [str(folders["photos"]), "--model", str(model_dir), "--index", str(index_dir), "--no-progress"]
    assert index_main([*argv, "--num-workers", "0"]) == 0
    assert "5 photos indexed (5 added" in capsys.readouterr().out
    assert query_main([str(index_dir), QUERY, "-k", "5", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)

    model = AutoModel.from_pretrained(model_dir, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(model_dir, trust_remote_code=True)
    inputs = {k: v for k, v in text_inputs(kind, processor, QUERY).items() if isinstance(v, torch.Tensor)}
    expected = ranked(by_hand_scores(model, processor, inputs, folders["photos"], [h["path"] for h in hits]), 5)
    assert [h["path"] for h in hits] == [p for p, _ in expected]
    np.testing.assert_allclose([h["score"] for h in hits], [s for _, s in expected], atol=2e-3)


@pytest.mark.parametrize(
    "kind, limit, how",
    [("longclip", 248, "encoded in windows"), ("clip-77", 77, "reads only the first 77"), ("llm2clip", 512, "cut")],
)
def test_a_long_query_is_windowed_by_longclip_and_cut_at_the_limit_elsewhere(folders, kind, limit, how, tmp_path):
    index_dir = tmp_path / "index"
    args = [str(folders["photos"]), "--model", str(folders[kind]), "--index", str(index_dir), "--no-progress"]
    assert index_main([*args, "--num-workers", "0"]) == 0
    with PhotoIndex.open(index_dir) as index, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", LongQueryWarning)
        assert index.text_limit == limit and index.count_tokens(LONG) > limit
        hits = index.search(text=LONG, k=2)
        if kind == "clip-77":  # cut: the same as the first 77 tokens alone
            model, processor = index.model_and_processor()
            inputs = processor(text=[LONG], return_tensors="pt", truncation=True, max_length=77)
            expected = by_hand_scores(model, processor, dict(inputs), folders["photos"], [hits[0].path])
            assert hits[0].score == pytest.approx(expected[hits[0].path], abs=2e-3)
    notes = [str(w.message) for w in caught if w.category is LongQueryWarning]
    assert len(notes) == 1 and f"more than {limit}" in notes[0] and how in notes[0]
