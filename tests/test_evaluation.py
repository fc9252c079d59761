"""Evaluation suite: loaders on tiny official layouts, exact recall / accuracy, zero-shot, the cache and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import pytest
import torch
from eval_fixtures import (
    FakeModel,
    FakeProcessor,
    draw_image,
    sharegpt4v_record,
    write_blip_test,
    write_coco_karpathy,
    write_coco_longclip,
    write_dci,
    write_docci,
    write_flickr_karpathy,
    write_flickr_token,
    write_image_folder,
    write_sharegpt4v,
    write_urban1k,
)

from modeling_longclip.evaluation import (
    OPENAI_IMAGENET_TEMPLATES,
    BenchmarkError,
    EmbeddingCache,
    evaluate_retrieval,
    evaluate_zeroshot,
    load_benchmark,
    markdown_table,
    model_fingerprint,
    retrieval_recall,
    retrieval_recall_from_embeddings,
    topk_accuracy,
    write_results,
)
from modeling_longclip.evaluation.cli import main as eval_main
from modeling_longclip.evaluation.zeroshot import class_embeddings, class_prompts

LONG_CAPTION = "A very long caption about a street. " + "word " * 300


def names(dataset) -> list[str]:
    return [p.name for p in dataset.image_paths]


# --- loaders: happy paths -------------------------------------------------------------------------------------------


def test_urban1k_layout(tmp_path):
    root = write_urban1k(tmp_path / "Urban1k", {"10": "ten", "2": "two", "1": "one"})
    data = load_benchmark("urban1k", root)
    assert (data.name, data.protocol) == ("urban1k", "default")
    assert names(data) == ["1.jpg", "2.jpg", "10.jpg"]  # numeric stem order
    assert data.texts == ["one", "two", "ten"]  # first line only
    assert data.text_image == [0, 1, 2]


def test_sharegpt4v_1k_uses_the_first_1000_records(tmp_path):
    root = write_sharegpt4v(tmp_path / "data")
    data = load_benchmark("sharegpt4v-1k", root)
    assert len(data.image_paths) == len(data.texts) == 1000  # records 1000.. (missing images) are training data
    assert data.texts[0] == "Record 0 shows a scene. It has two lines."  # the training loader's caption rule
    assert data.image_paths[4] == root / "coco/train2017/000000000001.jpg"
    moved = tmp_path / "elsewhere.json"
    (root / "share-captioner_coco_lcs_sam_1246k_1107.json").rename(moved)
    with pytest.raises(BenchmarkError, match="expected one ShareGPT4V share-captioner json in the data root"):
        load_benchmark("sharegpt4v-1k", root)
    explicit = load_benchmark("sharegpt4v-1k", root, annotations=moved)
    assert explicit.image_paths[0] == root / "coco/train2017/000000000000.jpg"  # images relative to the data root


def test_dci_all_and_test(tmp_path):
    root = write_dci(tmp_path)
    every = load_benchmark("dci", root)
    assert every.protocol == "all"
    assert names(every) == [f"sa_{i}.jpg" for i in range(1, 6)]
    assert every.texts[0] == "Short caption 1.\nExtra detail 1 about the scene."
    test = load_benchmark("dci", root / "densely_captioned_images", "test")  # the DCI folder itself also works
    assert (test.protocol, names(test)) == ("test", ["sa_4.jpg", "sa_5.jpg"])  # `sa_5` listed without .json


def test_docci_test_split(tmp_path):
    data = load_benchmark("docci", write_docci(tmp_path))
    assert data.protocol == "test"
    assert names(data) == ["test_00000.jpg", "test_00001.jpg"]
    assert data.texts == ["A red test.", "A green test."]


def test_coco_karpathy_keeps_every_caption(tmp_path):
    data = load_benchmark("coco", write_coco_karpathy(tmp_path))
    assert data.protocol == "karpathy"
    assert [p.relative_to(tmp_path).as_posix() for p in data.image_paths] == [
        "val2014/COCO_val2014_1.jpg",
        "val2014/COCO_val2014_3.jpg",
    ]
    assert len(data.texts) == 12 and data.text_image == [0] * 7 + [1] * 5
    assert data.texts[7] == "dog caption 0"  # stripped
    assert data.captions_per_image == (5, 7)


@pytest.mark.parametrize(
    "benchmark,file,folder",
    [("coco", "coco_karpathy_test.json", "val2014"), ("flickr30k", "flickr30k_test.json", "flickr30k-images")],
)
def test_blip_style_karpathy_files(tmp_path, benchmark, file, folder):
    data = load_benchmark(benchmark, write_blip_test(tmp_path, file, folder), "karpathy")
    assert names(data) == ["a.jpg", "b.jpg"]
    assert data.text_image == [0] * 6 + [1] * 2


def test_flickr30k_karpathy(tmp_path):
    data = load_benchmark("flickr30k", write_flickr_karpathy(tmp_path))
    assert [p.relative_to(tmp_path).as_posix() for p in data.image_paths] == [
        "flickr30k-images/200.jpg",
        "flickr30k-images/300.jpg",
    ]
    assert data.text_image == [0] * 5 + [1] * 5


def test_coco_longclip_protocol(tmp_path):
    data = load_benchmark("coco", write_coco_longclip(tmp_path), "longclip")
    assert names(data) == ["000000000009.jpg", "000000000030.jpg"]  # ascending image id
    assert data.texts[:5] == [f"nine caption {k}" for k in range(5)]
    assert data.texts[5:] == [f"thirty caption {k}" for k in range(5)]  # first 5 of 6, annotation order


def test_flickr30k_longclip_protocol(tmp_path):
    data = load_benchmark("flickr30k", write_flickr_token(tmp_path), "longclip")
    assert names(data) == ["1000092795.jpg", "10002456.jpg", "1000268201.jpg"]  # file order, every image
    assert data.text_image == [0] * 5 + [1] * 5 + [2] * 5
    assert data.texts[0] == "Caption 0 of 1000092795.jpg ."


def test_image_folder_and_class_names(tmp_path):
    root = write_image_folder(tmp_path / "val", {"n02_red_fox": [1, 2], "n01_tabby_cat": [3]})
    data = load_benchmark("zeroshot", root)
    assert data.class_names == ["n01 tabby cat", "n02 red fox"]  # sorted folders, `_` -> space
    assert data.labels == [0, 1, 1]
    names_file = tmp_path / "names.txt"
    names_file.write_text("tabby cat\nred fox\n\n")
    assert load_benchmark("zeroshot", root, class_names=names_file).class_names == ["tabby cat", "red fox"]
    names_file.write_text("tabby cat\n")
    with pytest.raises(BenchmarkError, match=r"names.txt: 1 class names for 2 class subfolders"):
        load_benchmark("zeroshot", root, class_names=names_file)


# --- loaders: missing images and malformed records --------------------------------------------------------------


def test_urban1k_errors(tmp_path):
    root = write_urban1k(tmp_path, {"1": "one", "2": "two"})
    (root / "image" / "2.jpg").unlink()
    with pytest.raises(BenchmarkError, match=r"1 referenced image does not exist: caption 2.txt: .*image/2.jpg"):
        load_benchmark("urban1k", root)
    draw_image(root / "image" / "2.jpg")
    (root / "caption" / "1.txt").write_text("\n")
    with pytest.raises(BenchmarkError, match=r"1.txt: the first line \(the caption\) is empty"):
        load_benchmark("urban1k", root)
    with pytest.raises(BenchmarkError, match="--annotations does not apply to urban1k"):
        load_benchmark("urban1k", root, annotations=root / "x.json")


def test_sharegpt4v_errors(tmp_path):
    root = write_sharegpt4v(tmp_path, n_records=20)
    path = root / "share-captioner_coco_lcs_sam_1246k_1107.json"
    records = json.loads(path.read_text())
    records[5] = sharegpt4v_record(5, "coco/train2017/nope.jpg", "missing")
    path.write_text(json.dumps(records))
    with pytest.raises(BenchmarkError, match=r"record 5 \(coco/train2017/nope.jpg\): .*nope.jpg"):
        load_benchmark("sharegpt4v-1k", root)
    records[5] = {"image": "coco/train2017/000000000000.jpg", "conversations": [{"value": "only a question"}]}
    path.write_text(json.dumps(records))
    with pytest.raises(BenchmarkError, match=r"record 5 has no `conversations\[1\].value`"):
        load_benchmark("sharegpt4v-1k", root)


def test_dci_errors(tmp_path):
    root = write_dci(tmp_path)
    base = root / "densely_captioned_images"
    (base / "photos" / "sa_4.jpg").unlink()
    with pytest.raises(BenchmarkError, match=r"test\[0\] \(sa_4.json\): .*photos/sa_4.jpg"):
        load_benchmark("dci", root)
    draw_image(base / "photos" / "sa_4.jpg")
    annotation = json.loads((base / "annotations" / "sa_2.json").read_text())
    del annotation["extra_caption"]
    (base / "annotations" / "sa_2.json").write_text(json.dumps(annotation))
    with pytest.raises(BenchmarkError, match=r"sa_2.json: the annotation has no `extra_caption`"):
        load_benchmark("dci", root)
    assert len(load_benchmark("dci", root, "test").image_paths) == 2  # the broken record is not in the test split
    (base / "splits.json").write_text(json.dumps({"test": ["sa_9.json"]}))
    with pytest.raises(BenchmarkError, match=r"test\[0\] names sa_9.json, but .*sa_9.json does not exist"):
        load_benchmark("dci", root, "test")


def test_docci_errors(tmp_path):
    root = write_docci(tmp_path)
    (root / "images" / "test_00001.jpg").unlink()
    with pytest.raises(BenchmarkError, match=r"line 4 \(test_00001\): .*images/test_00001.jpg"):
        load_benchmark("docci", root)
    path = root / "docci_descriptions.jsonlines"
    path.write_text(path.read_text() + "{not json\n")
    with pytest.raises(BenchmarkError, match=r"docci_descriptions.jsonlines: line 6 is not valid JSON"):
        load_benchmark("docci", root)


def test_karpathy_and_blip_errors(tmp_path):
    root = write_coco_karpathy(tmp_path / "coco")
    (root / "val2014" / "COCO_val2014_3.jpg").unlink()
    with pytest.raises(BenchmarkError, match=r"images\[3\] \(COCO_val2014_3.jpg\): .*val2014/COCO_val2014_3.jpg"):
        load_benchmark("coco", root)
    data = json.loads((root / "dataset_coco.json").read_text())
    data["images"][1]["sentences"][2] = {"tokens": []}
    (root / "dataset_coco.json").write_text(json.dumps(data))
    with pytest.raises(BenchmarkError, match=r"images\[1\] \(COCO_val2014_1.jpg\) sentences\[2\] has no `raw`"):
        load_benchmark("coco", root)
    blip = write_blip_test(tmp_path / "flickr", "flickr30k_test.json", "flickr30k-images")
    records = json.loads((blip / "annotation" / "flickr30k_test.json").read_text())
    records[1]["caption"] = []
    (blip / "annotation" / "flickr30k_test.json").write_text(json.dumps(records))
    with pytest.raises(BenchmarkError, match=r"record 1 \(flickr30k-images/b.jpg\) has no captions"):
        load_benchmark("flickr30k", blip)
    with pytest.raises(BenchmarkError, match=r"no flickr30k Karpathy test annotation found"):
        load_benchmark("flickr30k", tmp_path / "coco" / "val2014")


def test_longclip_protocol_errors(tmp_path):
    coco = write_coco_longclip(tmp_path / "coco")
    (coco / "val2017" / "000000000030.jpg").unlink()
    with pytest.raises(BenchmarkError, match=r"image id 30: .*val2017/000000000030.jpg"):
        load_benchmark("coco", coco, "longclip")
    path = coco / "annotations" / "captions_val2017.json"
    data = json.loads(path.read_text())
    data["annotations"].append({"id": 999, "image_id": 77, "caption": "orphan"})
    path.write_text(json.dumps(data))
    with pytest.raises(BenchmarkError, match=r"annotations\[11\] \(id 999\) refers to image id 77"):
        load_benchmark("coco", coco, "longclip")
    flickr = write_flickr_token(tmp_path / "flickr")
    token = flickr / "results_20130124.token"
    lines = token.read_text().splitlines()
    lines[3] = "1000092795.jpg 3 a caption without the tab"
    token.write_text("\n".join(lines))
    with pytest.raises(BenchmarkError, match=r"results_20130124.token: line 4 is not `NAME.jpg#k<TAB>caption`"):
        load_benchmark("flickr30k", flickr, "longclip")
    with pytest.raises(BenchmarkError, match="flickr30k has no protocol 'authors'"):
        load_benchmark("flickr30k", flickr, "authors")
    with pytest.raises(BenchmarkError, match="data root does not exist"):
        load_benchmark("flickr30k", tmp_path / "nowhere", "longclip")


# --- metrics ----------------------------------------------------------------------------------------------------------

# 3 images; image 0 has 7 captions (texts 0-6), image 1 has 2 (texts 7-8), image 2 has 1 (text 9).
SIMILARITY = torch.tensor(
    [
        [0.10, 0.20, 0.30, 0.15, 0.25, 0.05, 0.12, 0.90, 0.80, 0.35],
        [0.60, 0.58, 0.56, 0.54, 0.52, 0.50, 0.01, 0.45, 0.02, 0.03],
        [0.00, 0.10, 0.40, 0.20, 0.10, 0.00, 0.50, 0.10, 0.10, 0.99],
    ]
)
TEXT_IMAGE = [0] * 7 + [1] * 2 + [2]


def test_recall_by_hand_with_seven_captions():
    recall = retrieval_recall(SIMILARITY, TEXT_IMAGE, ks=(1, 2, 5, 10))
    # I2T: image 0's best caption (0.30) ranks 4th (behind 0.90, 0.80, 0.35); image 1's (0.45) ranks 7th; image 2 1st.
    assert recall["image_to_text"] == pytest.approx({"R@1": 100 / 3, "R@2": 100 / 3, "R@5": 200 / 3, "R@10": 100.0})
    # T2I ranks of the right image per text: 2 2 3 3 2 2 2 | 2 3 | 1; K = 5 and 10 exceed the 3 images.
    assert recall["text_to_image"] == pytest.approx({"R@1": 10.0, "R@2": 70.0, "R@5": 100.0, "R@10": 100.0})
    chunked = retrieval_recall(SIMILARITY, TEXT_IMAGE, ks=(1, 2, 5, 10), chunk_size=1)
    assert chunked == recall


def test_recall_ties_are_expected_values():
    # Everything tied: chance level. 4 images with one caption each: R@K = K / 4.
    flat = retrieval_recall(torch.zeros(4, 4), [0, 1, 2, 3], ks=(1, 2, 5))
    assert flat["image_to_text"] == pytest.approx({"R@1": 25.0, "R@2": 50.0, "R@5": 100.0})
    assert flat["text_to_image"] == pytest.approx({"R@1": 25.0, "R@2": 50.0, "R@5": 100.0})
    # 2 images with 2 captions each, all tied: a random order of 2 targets and 2 others puts no target in the
    # top 1 with probability 1/2 and none in the top 2 with probability C(2,2)/C(4,2) = 1/6.
    pairs = retrieval_recall(torch.ones(2, 4), [0, 0, 1, 1], ks=(1, 2, 3))
    assert pairs["image_to_text"] == pytest.approx({"R@1": 50.0, "R@2": 500 / 6, "R@3": 100.0})
    # A tie below a strictly better non-target: image 0 has one text above (0.9) and its caption tied with another.
    partial = retrieval_recall(torch.tensor([[0.9, 0.5, 0.5], [0.1, 0.2, 0.3]]), [1, 0, 1], ks=(1, 2, 3))
    assert partial["image_to_text"]["R@1"] == pytest.approx(50.0)  # image 0 misses, image 1: 0.3 is its own, top
    assert partial["image_to_text"]["R@2"] == pytest.approx(75.0)  # image 0: 1 place left for 2 tied -> 1/2
    assert partial["image_to_text"]["R@3"] == pytest.approx(100.0)


def test_recall_matches_a_brute_force_reference():
    generator = torch.Generator().manual_seed(0)
    images, texts = torch.randn(7, 16, generator=generator), torch.randn(23, 16, generator=generator)
    text_image = torch.randint(0, 7, (23,), generator=generator)
    text_image[:7] = torch.arange(7)  # every image has a caption
    similarity = images @ texts.T
    expected_i2t = {}
    expected_t2i = {}
    for k in (1, 5, 10):
        top_texts = similarity.topk(min(k, 23), dim=1).indices
        expected_i2t[f"R@{k}"] = 100 * sum(bool((text_image[top_texts[i]] == i).any()) for i in range(7)) / 7
        top_images = similarity.T.topk(min(k, 7), dim=1).indices
        expected_t2i[f"R@{k}"] = 100 * sum(bool((top_images[j] == text_image[j]).any()) for j in range(23)) / 23
    recall = retrieval_recall(similarity, text_image)
    assert recall["image_to_text"] == pytest.approx(expected_i2t)
    assert recall["text_to_image"] == pytest.approx(expected_t2i)
    from_embeddings = retrieval_recall_from_embeddings(images, texts, text_image, chunk_size=3)
    assert from_embeddings["image_to_text"] == pytest.approx(expected_i2t)
    assert from_embeddings["text_to_image"] == pytest.approx(expected_t2i)


def test_topk_accuracy_by_hand():
    scores = torch.tensor([[0.9, 0.1, 0.0], [0.5, 0.4, 0.6], [0.2, 0.2, 0.2]])
    accuracy = topk_accuracy(scores, [0, 1, 2], ks=(1, 2, 5))
    # row 0: rank 1; row 1: rank 3; row 2: three-way tie -> 1/3 at K=1, 2/3 at K=2.
    assert accuracy == pytest.approx(
        {"top1": 100 * (1 + 0 + 1 / 3) / 3, "top2": 100 * (1 + 0 + 2 / 3) / 3, "top5": 100.0}
    )
    with pytest.raises(ValueError, match="NaN"):
        topk_accuracy(torch.full((1, 2), float("nan")), [0])


# --- zero-shot --------------------------------------------------------------------------------------------------------

ZS_CLASSES = ["alpha cat", "beta", "delta", "epsilon", "gamma", "zeta"]  # sorted folder order
ZS_IMAGES = {  # image id -> (folder, score per class); the rank of the true class is in the comment
    1: ("alpha_cat", {"alpha cat": 0.9, "beta": 0.5, "delta": 0.4, "epsilon": 0.3, "gamma": 0.2, "zeta": 0.1}),  # 1
    2: ("beta", {"alpha cat": 0.9, "gamma": 0.8, "delta": 0.7, "beta": 0.5, "epsilon": 0.1, "zeta": 0.2}),  # 4
    3: ("gamma", {"alpha cat": 0.6, "beta": 0.5, "delta": 0.4, "epsilon": 0.3, "zeta": 0.2, "gamma": 0.05}),  # 6
    4: ("delta", {"delta": 1.0}),  # 1
    5: ("epsilon", {"epsilon": 1.0, "alpha cat": 0.5}),  # 1
    6: ("zeta", {"alpha cat": 0.6, "beta": 0.5, "delta": 0.4, "epsilon": 0.3, "gamma": 0.2, "zeta": 0.1}),  # 6
}


def zeroshot_fake():
    basis = torch.eye(len(ZS_CLASSES))
    text_table = {name: basis[i] for i, name in enumerate(ZS_CLASSES)}
    image_table = {i: torch.tensor([scores.get(c, 0.0) for c in ZS_CLASSES]) for i, (_, scores) in ZS_IMAGES.items()}
    return FakeModel(dim=len(ZS_CLASSES), image_table=image_table, text_table=text_table)


def test_zeroshot_with_controlled_embeddings(tmp_path):
    folders = {}
    for image_id, (folder, _) in ZS_IMAGES.items():
        folders.setdefault(folder, []).append(image_id)
    data = load_benchmark("zeroshot", write_image_folder(tmp_path / "shapes", folders))
    assert data.class_names == ZS_CLASSES
    model = zeroshot_fake()
    result = evaluate_zeroshot(model, FakeProcessor(model_max_length=8), data, batch_size=100, progress=False)
    assert result["accuracy"] == pytest.approx({"top1": 50.0, "top5": 400 / 6})
    assert len(model.texts_seen) == 6 * 80 and model.texts_seen[0] == "a bad photo of a alpha cat."
    prompts = class_prompts(ZS_CLASSES)
    assert result["counts"]["texts_too_long"] == sum(len(p.split()) + 2 > 8 for p in prompts) > 0
    counts = {k: result["counts"][k] for k in ("images", "classes", "templates", "texts")}
    assert counts == {"images": 6, "classes": 6, "templates": 80, "texts": 480}
    assert (result["task"], result["benchmark"], result["protocol"], result["dataset"]) == (
        "zero-shot classification",
        "zeroshot",
        "imagefolder",
        "shapes",
    )
    assert "| Top-1 | Top-5 |" in markdown_table(result) and "| 50.0 | 66.7 |" in markdown_table(result)


def test_templates_and_class_embedding():
    assert len(OPENAI_IMAGENET_TEMPLATES) == len(set(OPENAI_IMAGENET_TEMPLATES)) == 80
    assert (
        OPENAI_IMAGENET_TEMPLATES[0] == "a bad photo of a {}."
        and OPENAI_IMAGENET_TEMPLATES[-1] == "a tattoo of the {}."
    )
    assert all(t.count("{}") == 1 for t in OPENAI_IMAGENET_TEMPLATES)
    embeds = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, 1.0]]), dim=-1)
    classes = class_embeddings(embeds, 2)  # class 0: mean of (1,0) and (0,1); class 1: (1,1)/sqrt2 twice
    assert torch.allclose(classes, torch.full((2, 2), 2**-0.5))


def test_zeroshot_with_the_tiny_longclip(tmp_path, tiny_longclip):
    model, processor = tiny_longclip
    data = load_benchmark("zeroshot", write_image_folder(tmp_path / "val", {"red": [1, 2], "green_leaf": [3]}))
    result = evaluate_zeroshot(model, processor, data, batch_size=64, progress=False)
    assert set(result["accuracy"]) == {"top1", "top5"}
    assert 0.0 <= result["accuracy"]["top1"] <= 100.0 and result["accuracy"]["top5"] == 100.0  # 2 classes < 5
    assert result["counts"]["texts_too_long"] == 0 and result["counts"]["text_limit"] == 248


# --- encoding cache -----------------------------------------------------------------------------------------------


def test_cache_reuse_and_invalidation(tmp_path):
    root = write_urban1k(tmp_path / "u", {"1": "a cat", "2": "a dog on a mat in the sun today", "3": "a bird"})
    data = load_benchmark("urban1k", root)
    model, processor = FakeModel(), FakeProcessor(model_max_length=8)
    cache = EmbeddingCache(tmp_path / "cache", "fake-model-v1")

    def run(dataset=data, cache=cache, batch_size=2, **kwargs):
        before = dict(model.calls)
        result = evaluate_retrieval(
            model, processor, dataset, batch_size=batch_size, cache=cache, progress=False, **kwargs
        )
        encoded = {kind: model.calls[kind] - before[kind] for kind in before}
        return result, encoded

    first, calls = run()  # texts go to encode_text in one chunk, which it batches by length itself
    assert first["cache"] == {"images": "miss", "texts": "miss"} and calls == {"image": 2, "text": 1}
    assert first["counts"]["texts_too_long"] == 1  # 9 words + 2 special tokens > 8
    again, calls = run()
    assert again["cache"] == {"images": "hit", "texts": "hit"} and calls == {"image": 0, "text": 0}
    assert again["image_to_text"] == first["image_to_text"] and again["counts"] == first["counts"]
    assert run(batch_size=1)[1] == {"image": 0, "text": 0}  # batch size does not change embeddings

    image = root / "image" / "2.jpg"
    stat = image.stat()
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touched
    result, calls = run()
    assert result["cache"] == {"images": "miss", "texts": "hit"} and calls == {"image": 2, "text": 0}
    draw_image(image, index=7)  # replaced
    assert run()[0]["cache"] == {"images": "miss", "texts": "hit"}
    assert run()[0]["cache"] == {"images": "hit", "texts": "hit"}

    (root / "caption" / "3.txt").write_text("a small bird\n")  # caption changed
    result, calls = run(load_benchmark("urban1k", root))
    assert result["cache"] == {"images": "hit", "texts": "miss"} and calls == {"image": 0, "text": 1}
    assert run(load_benchmark("urban1k", root), text_kwargs={"long_text": "window"})[0]["cache"]["texts"] == "miss"
    other = EmbeddingCache(tmp_path / "cache", "fake-model-v2")  # another model
    assert run(load_benchmark("urban1k", root), cache=other)[0]["cache"] == {"images": "miss", "texts": "miss"}

    for path in (tmp_path / "cache").glob("*.safetensors"):
        path.write_bytes(b"garbage")  # unreadable entries are misses, then rewritten
    assert run(load_benchmark("urban1k", root))[0]["cache"] == {"images": "miss", "texts": "miss"}
    no_cache, calls = run(cache=None)
    assert no_cache["cache"] == {"images": "off", "texts": "off"} and calls == {"image": 2, "text": 1}


def test_model_fingerprint_tracks_config_weights_and_tokenizer(tiny_longclip_folder, tiny_longclip):
    folder = tiny_longclip_folder
    original = model_fingerprint(model_dir=folder)
    (folder / "README.md").write_text("a model card does not change embeddings")
    assert model_fingerprint(model_dir=folder) == original

    config_text = (folder / "config.json").read_text()
    config = json.loads(config_text)
    config["projection_dim"] = 16
    (folder / "config.json").write_text(json.dumps(config))
    assert model_fingerprint(model_dir=folder) != original
    (folder / "config.json").write_text(config_text)
    assert model_fingerprint(model_dir=folder) == original

    weights = folder / "model.safetensors"
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    touched = model_fingerprint(model_dir=folder)
    assert touched != original

    tokenizer_config = folder / "tokenizer_config.json"
    tokenizer_settings = json.loads(tokenizer_config.read_text())
    tokenizer_settings["model_max_length"] = 77
    tokenizer_config.write_text(json.dumps(tokenizer_settings))
    assert model_fingerprint(model_dir=folder) != touched

    model, _ = tiny_longclip  # in memory (not loaded from a folder): its weights are the fingerprint
    in_memory = model_fingerprint(model)
    with torch.no_grad():
        model.logit_scale.add_(1.0)
    assert model_fingerprint(model) != in_memory


# --- CLI ----------------------------------------------------------------------------------------------------------


def run_cli(capsys, *args) -> tuple[int, str, str]:
    code = eval_main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_retrieval_end_to_end(tmp_path, tiny_longclip_folder, capsys):
    root = write_urban1k(tmp_path / "Urban1k", {"1": "a red picture", "2": LONG_CAPTION, "3": "a blue picture"})
    output = tmp_path / "out" / "results.json"
    args = [
        "--model",
        tiny_longclip_folder,
        "--benchmark",
        "urban1k",
        "--data-root",
        root,
        "--batch-size",
        "2",
        "--device",
        "cpu",
        "--cache-dir",
        tmp_path / "cache",
        "--output",
        output,
        "--no-progress",
    ]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, out, err = run_cli(capsys, *args)
    assert code == 0, err
    assert not [w for w in caught if "Truncation" in type(w.message).__name__]  # counted, not warned
    results = json.loads(output.read_text())
    assert (results["task"], results["benchmark"], results["protocol"]) == ("retrieval", "urban1k", "default")
    assert results["model"] == str(tiny_longclip_folder) and results["model_type"] == "longclip"
    assert set(results["image_to_text"]) == set(results["text_to_image"]) == {"R@1", "R@5", "R@10"}
    assert results["image_to_text"]["R@5"] == results["text_to_image"]["R@5"] == 100.0  # 3 items < 5
    assert results["counts"]["images"] == results["counts"]["texts"] == 3
    assert results["counts"]["texts_too_long"] == 1 and results["counts"]["text_limit"] == 248
    assert results["cache"] == {"images": "miss", "texts": "miss"}
    markdown = (tmp_path / "out" / "results.md").read_text()
    assert markdown.startswith("| Model | Benchmark | Protocol | Images | Texts | I2T R@1 |")
    assert "| tiny-longclip | urban1k | default | 3 | 3 |" in markdown
    assert "1 of 3 texts exceed the model's 248-token limit" in markdown
    assert markdown.splitlines()[0] in out

    code, _, _ = run_cli(capsys, *args)
    assert code == 0 and json.loads(output.read_text())["cache"] == {"images": "hit", "texts": "hit"}

    from modeling_longclip import (
        LongCLIPModel,  # new weights in the same folder: the cache must miss
    )

    torch.manual_seed(1)
    LongCLIPModel(LongCLIPModel.config_class.from_pretrained(tiny_longclip_folder)).save_pretrained(
        tiny_longclip_folder
    )
    code, _, _ = run_cli(capsys, *args)
    assert code == 0 and json.loads(output.read_text())["cache"] == {"images": "miss", "texts": "miss"}


def test_cli_zeroshot_end_to_end(tmp_path, tiny_longclip_folder, capsys):
    root = write_image_folder(tmp_path / "imagenet" / "val", {"n1": [1], "n2": [2, 3]})
    (tmp_path / "names.txt").write_text("goldfish\ngreat white shark\n")
    output = tmp_path / "zs.json"
    code, out, err = run_cli(
        capsys,
        "--model",
        tiny_longclip_folder,
        "--benchmark",
        "zeroshot",
        "--data-root",
        root,
        "--class-names",
        tmp_path / "names.txt",
        "--no-cache",
        "--output",
        output,
        "--no-progress",
    )
    assert code == 0, err
    results = json.loads(output.read_text())
    assert set(results["accuracy"]) == {"top1", "top5"} and results["accuracy"]["top5"] == 100.0
    assert results["counts"] == {**results["counts"], "images": 3, "classes": 2, "texts": 160}
    assert results["dataset"] == "imagenet/val" and results["cache"] == {"images": "off", "texts": "off"}
    assert "| Model | Benchmark | Protocol | Images | Classes | Top-1 | Top-5 |" in (tmp_path / "zs.md").read_text()
    assert "| tiny-longclip | zeroshot (imagenet/val) | imagefolder | 3 | 2 |" in out


def test_cli_errors(tmp_path, tiny_longclip_folder, capsys):
    common = ["--model", tiny_longclip_folder, "--output", tmp_path / "r.json", "--no-cache"]
    code, out, err = run_cli(capsys, *common, "--benchmark", "docci", "--data-root", tmp_path / "missing")
    assert code == 2 and err.startswith("error: ") and "missing: data root does not exist" in err and not out
    root = write_docci(tmp_path / "docci")
    (root / "images" / "test_00000.jpg").unlink()
    code, _, err = run_cli(capsys, *common, "--benchmark", "docci", "--data-root", root)
    assert code == 2 and "line 2 (test_00000)" in err and "test_00000.jpg" in err and "Traceback" not in err
    code, _, err = run_cli(
        capsys,
        "--model",
        tmp_path / "no-model",
        "--benchmark",
        "docci",
        "--data-root",
        root,
        "--output",
        tmp_path / "r.json",
    )
    assert code == 2 and "no-model: no such model folder" in err
    assert not (tmp_path / "r.json").exists()


def test_python_dash_m_entry_point(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "modeling_longclip.evaluation.cli",
            "--model",
            str(tmp_path),
            "--benchmark",
            "urban1k",
            "--data-root",
            str(tmp_path / "nowhere"),
            "--output",
            str(tmp_path / "r.json"),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 2 and result.stderr.startswith("error: ") and "Traceback" not in result.stderr


def test_write_results_is_atomic_and_names_the_markdown(tmp_path):
    result = {
        "task": "retrieval",
        "model": "m",
        "benchmark": "b",
        "protocol": "p",
        "counts": {"images": 1, "texts": 2},
        "image_to_text": {"R@1": 12.345, "R@5": 50, "R@10": 100},
        "text_to_image": {"R@1": 1, "R@5": 2, "R@10": 3},
    }
    json_path, markdown = write_results(result, tmp_path / "deep" / "scores")
    assert markdown == tmp_path / "deep" / "scores.md" and json.loads(json_path.read_text()) == result
    assert "| m | b | p | 1 | 2 | 12.3 | 50.0 | 100.0 | 1.0 | 2.0 | 3.0 |" in markdown.read_text()
    assert sorted(p.name for p in (tmp_path / "deep").iterdir()) == ["scores", "scores.md"]  # no temporaries left


def test_reports_are_readable_by_others_and_respect_the_umask(tmp_path):
    """atomic_write's temporary file is created 0600 by mkstemp; the finished file gets what open() would give."""
    from modeling_longclip.common.files import atomic_write, current_umask

    result = {"task": "retrieval", "model": "m", "benchmark": "b", "protocol": "p", "counts": {}}
    previous = os.umask(0o022)
    try:
        assert current_umask() == 0o022
        json_path, markdown = write_results(result, tmp_path / "r.json")
        assert [p.stat().st_mode & 0o777 for p in (json_path, markdown)] == [0o644, 0o644]
        os.umask(0o027)
        atomic_write(tmp_path / "new.txt", lambda t: open(t, "w").write("x"))
        assert (tmp_path / "new.txt").stat().st_mode & 0o777 == 0o640
        os.chmod(json_path, 0o600)  # an existing file keeps its mode, as with open(path, "w")
        write_results(result, json_path)
        assert json_path.stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(previous)
