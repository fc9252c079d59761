"""sentence-transformers (>= 6) on converted and trained folders of every family, with the real library.

Converted folders carry the sentence-transformers module files (`write_model_folder`): texts and PIL images encode
through the model's own `get_text_features` / `get_image_features`, at its full text length, L2-normalized, equal to
`encode_text` / `encode_image`. Folders with only what `save_pretrained` writes (the trainers' output) load too:
sentence-transformers reads the forward's `CLIPOutput` annotation and picks the same feature methods.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from family_folders import FAMILIES, convert_families, reference_model
from PIL import Image

st = pytest.importorskip(
    "sentence_transformers", reason="sentence-transformers is not installed (CI's test extra has it)"
)

TEXT_LENGTH = {"longclip": 248, "clip": 248, "llm2clip": 512, "proclip": 512}
HARBOUR = "a wide photograph of a busy harbour at dawn with fishing boats, gulls and a lighthouse on the rocks. " * 5
TEXTS = ["a red car parked next to a green tree", "two dogs run across the beach", HARBOUR + "The van is blue."]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return convert_families(tmp_path_factory.mktemp("st"))


def images():
    rng = np.random.RandomState(0)
    return [Image.fromarray((rng.rand(40 + 8 * i, 48, 3) * 255).astype("uint8")) for i in range(3)]


def load(folder):
    return st.SentenceTransformer(str(folder), trust_remote_code=True, device="cpu")


@pytest.mark.parametrize("family", FAMILIES)
def test_converted_folder_is_a_sentence_transformers_model(folders, family):
    folder = folders / family
    modules = json.loads((folder / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[1] for m in modules] == ["Transformer", "Normalize"]
    model = load(folder)
    transformer = model[0]
    assert transformer.modality_config == {
        "text": {"method": "get_text_features", "method_output_name": "pooler_output"},
        "image": {"method": "get_image_features", "method_output_name": "pooler_output"},
    }
    assert model.max_seq_length == TEXT_LENGTH[family]
    assert model.get_embedding_dimension() in (None, reference_model(folders, family).config.projection_dim)


@pytest.mark.filterwarnings("ignore::UserWarning")  # Long-CLIP's truncation warning for the longest caption
@pytest.mark.parametrize("family", FAMILIES)
def test_texts_encode_like_encode_text(folders, family):
    model = load(folders / family)
    embeddings = model.encode(TEXTS, convert_to_tensor=True)
    expected = reference_model(folders, family).encode_text(TEXTS)
    torch.testing.assert_close(embeddings, expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(embeddings.norm(dim=-1), torch.ones(len(TEXTS)))
    # past token 77 still counts: two captions that differ only at their end differ in embedding
    tail = model.encode([HARBOUR + "The van is blue.", HARBOUR + "The van is red."], convert_to_tensor=True)
    assert (tail[0] - tail[1]).abs().max() > 1e-4


@pytest.mark.parametrize("family", FAMILIES)
def test_images_encode_like_encode_image(folders, family):
    """Needs processors that accept transformers 5's grouped kwargs (text_kwargs / images_kwargs / common_kwargs)."""
    model = load(folders / family)
    pictures = images()
    embeddings = model.encode(pictures, convert_to_tensor=True)
    torch.testing.assert_close(embeddings, reference_model(folders, family).encode_image(pictures), atol=1e-6, rtol=0)


ST_FILES = ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json")


@pytest.mark.parametrize("family", ["longclip", "llm2clip", "proclip"])
def test_folder_without_sentence_transformers_files(folders, family, tmp_path):
    """What the trainers write (save_pretrained only): the forward's CLIPOutput annotation leads to the feature
    methods; the embeddings are the model's, un-normalized (no Normalize module without modules.json)."""
    source = reference_model(folders, family)
    source.save_pretrained(tmp_path / "trained")
    written = {p.name for p in (tmp_path / "trained").iterdir()}
    for file in (folders / family).iterdir():  # the processor's files: configs, tokenizer and its payload code
        if file.suffix in (".json", ".py") and file.name not in written and file.name not in ST_FILES:
            (tmp_path / "trained" / file.name).write_bytes(file.read_bytes())
    model = load(tmp_path / "trained")
    assert model[0].modality_config["text"] == {"method": "get_text_features", "method_output_name": "pooler_output"}
    assert model[0].modality_config["image"]["method"] == "get_image_features"
    embeddings = model.encode(TEXTS[:2], convert_to_tensor=True)
    torch.testing.assert_close(F.normalize(embeddings, dim=-1), source.encode_text(TEXTS[:2]), atol=1e-6, rtol=0)
