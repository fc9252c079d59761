"""Model cards as the Hub and their readers use them: every Python snippet of every card runs on a converted folder of
each family; the front matter parses with huggingface_hub's `ModelCard` into the fields the Hub links and filters by
(base_model for every released shape of conversion/zoo.json, datasets, licence per family, sentence-transformers tag);
`longclip-eval --update-card` and `longclip-push-to-hub` (a results.json beside the folder) put the measured table,
dated and with its data, into the card; no card links to a page that does not exist."""

from __future__ import annotations

import datetime
import json
import re
import shutil
from pathlib import Path

import pytest
from eval_fixtures import write_image_folder, write_urban1k
from family_folders import convert_families
from huggingface_hub import ModelCard, ModelCardData
from PIL import Image
from skimage import data
from test_hub_upload import TOKEN, hub  # noqa: F401  (the fake Hub fixture)

from modeling_longclip.evaluation.cli import main as eval_main
from modeling_longclip.export import hub as hub_module
from modeling_longclip.export.cards import (
    RESULTS_FILE,
    card_metadata,
    model_card_template,
    render_model_card,
    update_card_results,
    with_metadata,
)

REPO = Path(__file__).resolve().parents[1]
TEMPLATES = sorted(p.stem for p in (REPO / "model_cards").glob("*.md"))
HUB_LICENSES = {"apache-2.0", "mit", "llama3", "llama3.1", "llama3.2"}  # ids from the Hub's licence list
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
# templates only the trainers render, and the converted folder whose model their snippets load
TEMPLATE_FOLDERS = {
    "longclip_finetuned": ["longclip"],
    "dual_tower_finetuned": ["llm2clip", "proclip"],
    "llm2clip_siglip2": ["llm2clip"],
}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return convert_families(tmp_path_factory.mktemp("cards"))


def snippets(card: str) -> list[str]:
    blocks = FENCE.findall(card)
    assert {language for language, _ in blocks} <= {"python", "bibtex"}, "a card block that no test runs"
    return [code for language, code in blocks if language == "python"]


def run_snippet(code: str, folder: Path, workdir: Path) -> None:
    """A card snippet as a reader runs it: REPO_OR_FOLDER replaced by the folder, in a folder holding photo.jpg."""
    Image.fromarray(data.chelsea()).save(workdir / "photo.jpg")
    code = code.replace("REPO_OR_FOLDER", str(folder))
    exec(compile(code, f"<card snippet for {folder.name}>", "exec"), {"__name__": "__card__"})


@pytest.mark.parametrize("family", ["longclip", "clip", "llm2clip", "proclip"])
def test_every_snippet_of_a_converted_folders_card_runs(folders, family, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    card = (folders / family / "README.md").read_text()
    assert "{{" not in card and "pypi.org" not in card
    codes = snippets(card)
    assert len(codes) >= 2  # the loading snippet and the sentence-transformers one
    for code in codes:
        run_snippet(code, folders / family, tmp_path)
    assert "tensor(" in capsys.readouterr().out  # the snippets printed their similarities


@pytest.mark.parametrize("template", sorted(TEMPLATE_FOLDERS))
def test_every_snippet_of_the_trainers_templates_runs(folders, template, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    codes = snippets(model_card_template(template))
    assert codes
    for family in TEMPLATE_FOLDERS[template]:
        for code in codes:
            run_snippet(code, folders / family, tmp_path)


def test_every_template_is_covered_and_links_only_to_pages_that_exist():
    assert set(TEMPLATES) == {"longclip", "llm2clip", "proclip"} | set(TEMPLATE_FOLDERS)
    for name in TEMPLATES:
        text = model_card_template(name)
        links = set(re.findall(r"https?://[^\s)>\]]+", text))
        assert links <= {"https://www.sbert.net"}, (name, links)  # no package page that does not exist


@pytest.mark.parametrize("family", ["longclip", "clip", "llm2clip", "proclip"])
def test_front_matter_is_hub_metadata(folders, family):
    card = ModelCard.load(folders / family / "README.md")
    fields = card.data.to_dict()
    assert ModelCardData(**fields).to_dict() == fields
    assert fields["library_name"] == "transformers" and fields["pipeline_tag"] == "zero-shot-image-classification"
    assert fields["license"] == {"longclip": "apache-2.0", "clip": "apache-2.0"}.get(family, fields["license"])
    assert fields["license"] in HUB_LICENSES
    assert {"sentence-transformers", "clip", "long-text"} <= set(fields["tags"])
    assert fields["datasets"] and all(re.fullmatch(r"[\w.-]+/[\w.-]+", d) for d in fields["datasets"])
    assert (folders / family / "modules.json").is_file()  # what the sentence-transformers tag promises
    # tiny random shapes are no release: no base model is claimed for them
    assert "base_model" not in fields and "base_model_relation" not in fields


LLM_SHAPES = {  # zoo.json text model -> (layers, rope type), the shapes of the released Llama-3 towers
    "llama3-8b-cc": (32, "default"),
    "llama3.2-1b-cc": (16, "llama3"),
    "llama3.1-8b-instruct": (32, "llama3"),
}
LLM_LICENCES = {"llama3-8b-cc": "llama3", "llama3.2-1b-cc": "llama3.2", "llama3.1-8b-instruct": "llama3.1"}
VISION_REPOS = {
    ("clip", 768, 16, 224): "openai/clip-vit-base-patch16",
    ("clip", 768, 32, 224): "openai/clip-vit-base-patch32",
    ("clip", 1024, 14, 224): "openai/clip-vit-large-patch14",
    ("clip", 1024, 14, 336): "openai/clip-vit-large-patch14-336",
    ("eva02", 768, 16, 224): "QuanSun/EVA-CLIP",
    ("eva02", 1024, 14, 224): "QuanSun/EVA-CLIP",
    ("eva02", 1024, 14, 336): "QuanSun/EVA-CLIP",
    ("siglip2", 1152, 14, 224): "google/siglip2-so400m-patch14-224",
}


def zoo_configs():
    zoo = json.loads((REPO / "conversion" / "zoo.json").read_text())
    llms = {t["name"]: t for t in zoo["text_models"]}
    for entry in zoo["checkpoints"]:
        shape = entry.get("expected")
        if not shape:
            continue
        vision = {
            "hidden_size": shape["vision_width"],
            "num_hidden_layers": shape["vision_layers"],
            "patch_size": shape["patch_size"],
            "image_size": shape["image_size"],
        }
        config = {"model_type": entry["family"], "vision_tower": entry["tower"], "vision_config": vision}
        if entry["family"] == "longclip":
            config["text_config"] = {"max_position_embeddings": shape["text_positions"]}
        else:
            layers, rope = LLM_SHAPES[entry["text_model"]]
            config["text_config"] = {
                "model_type": "llama",
                "vocab_size": 128256,
                "hidden_size": llms[entry["text_model"]]["hidden_size"],
                "num_hidden_layers": layers,
                "rope_parameters": {"rope_type": rope, "rope_theta": 500000.0},
            }
        yield pytest.param(entry, config, llms, id=entry["name"])


@pytest.mark.parametrize("entry,config,llms", list(zoo_configs()))
def test_every_released_shape_names_its_base_models(entry, config, llms):
    metadata = card_metadata(config)
    key = (entry["tower"], *(config["vision_config"][k] for k in ("hidden_size", "patch_size", "image_size")))
    expected = [VISION_REPOS[key]]
    if entry["family"] == "longclip":
        assert metadata["license"] == "apache-2.0" and metadata["datasets"] == ["Lin-Chen/ShareGPT4V"]
    else:
        expected.append(llms[entry["text_model"]]["repo"])
        assert metadata["license"] == LLM_LICENCES[entry["text_model"]]  # the folder holds the Llama weights
        external = card_metadata({**config, "text_model_name_or_path": "elsewhere"})
        assert external["license"] == {"llm2clip": "apache-2.0", "proclip": "mit"}[entry["family"]]
    assert metadata["base_model"] == expected and metadata["base_model_relation"] == "finetune"  # a Hub relation
    card = ModelCard(with_metadata("---\nlibrary_name: transformers\n---\n\n# a card\n", config))
    assert card.data.base_model == expected and card.data.license in HUB_LICENSES
    assert f"{entry['family'].replace('longclip', 'long-clip')}" in card.data.tags


def test_a_hand_edited_card_keeps_its_fields():
    config = {"model_type": "longclip", "vision_config": {}, "text_config": {"max_position_embeddings": 248}}
    card = ModelCard(with_metadata("---\nlicense: mit\ntags:\n- mine\n---\n\n# edited\n", config))
    assert card.data.license == "mit" and card.data.tags[0] == "mine" and "long-clip" in card.data.tags
    assert card.data.datasets == ["Lin-Chen/ShareGPT4V"]


def eval_args(folder, root, output, benchmark="urban1k", *extra):
    return [
        "--model",
        str(folder),
        "--benchmark",
        benchmark,
        "--data-root",
        str(root),
        "--no-cache",
        "--no-progress",
        "--device",
        "cpu",
        "--output",
        str(output),
        *map(str, extra),
    ]


def test_update_card_writes_the_dated_measured_table(folders, tmp_path, capsys):
    folder = shutil.copytree(folders / "longclip", tmp_path / "LongCLIP-tiny")
    root = write_urban1k(tmp_path / "Urban1k", {"1": "a red picture", "2": "a green picture", "3": "a blue picture"})
    assert eval_main(eval_args(folder, root, tmp_path / "urban.json") + ["--update-card"]) == 0
    assert f"updated {folder / 'README.md'}" in capsys.readouterr().out
    today = datetime.date.today().isoformat()
    card = (folder / "README.md").read_text()
    assert "Not measured on this folder yet" not in card and card.count("## Measured results") == 1
    assert f"| urban1k | default | `Urban1k` | {today} | 3 | 3 |" in card
    assert json.loads((tmp_path / "urban.json").read_text())["date"] == today

    images = write_image_folder(tmp_path / "imagenet" / "val", {"n1": [1], "n2": [2, 3]})
    args = eval_args(folder, images, tmp_path / "zs.json", "zeroshot") + ["--update-card"]
    assert eval_main(args) == 0
    card = ModelCard.load(folder / "README.md")
    assert card.data.license == "apache-2.0" and "sentence-transformers" in card.data.tags  # metadata intact
    assert f"| urban1k | default | `Urban1k` | {today} | 3 | 3 |" in card.text  # both benchmarks, one table each
    assert f"| zeroshot (imagenet/val) | imagefolder | `val` | {today} | 3 | 2 |" in card.text
    assert card.text.index("## Measured results") < card.text.index("## Citation")
    stored = json.loads((folder / RESULTS_FILE).read_text())
    assert sorted(r["benchmark"] for r in stored) == ["urban1k", "zeroshot"]
    assert eval_main(args) == 0  # a re-run replaces its row
    assert len(json.loads((folder / RESULTS_FILE).read_text())) == 2
    assert (folder / "README.md").read_text().count("| zeroshot (imagenet/val) |") == 1


def test_push_picks_up_a_results_json_beside_the_folder(folders, tmp_path, hub, capsys):  # noqa: F811
    folder = shutil.copytree(folders / "longclip", tmp_path / "runs" / "LongCLIP-tiny")
    other = shutil.copytree(folders / "clip", tmp_path / "runs" / "CLIP-tiny")
    root = write_urban1k(tmp_path / "Urban1k", {"1": "a red picture", "2": "a green picture", "3": "a blue picture"})
    results = tmp_path / "runs" / "results.json"  # a comparison of two folders, as the demo writes it
    args = ["--model", str(other)] + eval_args(folder, root, results)
    assert eval_main(args) == 0
    capsys.readouterr()

    assert hub_module.upload_command([str(folder), "--repo-id", "me/longclip", "--token", TOKEN]) == 0
    out = capsys.readouterr().out
    assert f"added the measured results of {results} (urban1k (default))" in out
    uploaded = hub.files("me/longclip")["README.md"].decode()
    assert "| urban1k | default | `Urban1k` |" in uploaded and uploaded == (folder / "README.md").read_text()
    assert ModelCard(uploaded).data.license == "apache-2.0"
    assert RESULTS_FILE in hub.files("me/longclip")

    unrelated = tmp_path / "elsewhere" / "results.json"
    unrelated.parent.mkdir()
    unrelated.write_text(json.dumps({"model": "/somewhere/else", "model_name": "else", "image_to_text": {}}))
    assert hub_module.upload_command([str(folder), "--repo-id", "me/x", "--results", str(unrelated)]) == 2
    assert "holds no results of" in capsys.readouterr().err


def test_render_still_refuses_unfilled_placeholders():
    with pytest.raises(KeyError, match="unfilled placeholders"):
        render_model_card("longclip", source="x")


def test_update_card_creates_a_card_where_there_was_none(tmp_path):
    result = {
        "task": "retrieval",
        "benchmark": "urban1k",
        "protocol": "default",
        "data": "/data/Urban1k",
        "counts": {"images": 3, "texts": 3},
        "image_to_text": {"R@1": 50.0},
        "text_to_image": {"R@1": 25.0},
    }
    card = update_card_results(tmp_path, [result], date="2026-12-01")
    assert "| urban1k | default | `Urban1k` | 2026-12-01 | 3 | 3 | 50.0 | - | - | 25.0 | - | - |" in card.read_text()
