"""The loading contract, checked in a fresh process that cannot import modeling_longclip at all."""

import torch
import torch.nn.functional as F

from modeling_longclip import LongCLIPModel, LongCLIPProcessor
from modeling_longclip.common.clean_load import load_in_clean_process
from modeling_longclip.converters.longclip import convert_longclip
from modeling_longclip.converters.synthetic import random_openai_clip_state_dict


def test_folders_load_without_the_package(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    torch.save(random_openai_clip_state_dict(seed=3), tmp_path / "longclip.pt")
    convert_longclip(tmp_path / "longclip.pt", tmp_path / "longclip")
    convert_longclip(tmp_path / "longclip.pt", tmp_path / "clip", output_format="clip")
    texts = ["a cat on a sofa", "a long description of a harbour " * 12]
    result = load_in_clean_process(tmp_path / "longclip", texts, clip_folder=tmp_path / "clip")

    assert result["leaked_modules"] == []
    assert result["model_class"] == "LongCLIPModel" and result["model_module"].startswith("transformers_modules.")
    assert result["zero_shot_class"] == "LongCLIPModel"
    assert result["processor_class"] == "LongCLIPProcessor"
    scores = result["zero_shot_scores"]
    assert sorted(s["label"] for s in scores) == ["a car", "a cat", "a dog"]
    assert abs(sum(s["score"] for s in scores) - 1) < 1e-5

    model = LongCLIPModel.from_pretrained(tmp_path / "longclip").eval()
    processor = LongCLIPProcessor.from_pretrained(tmp_path / "longclip")
    with torch.no_grad():
        text = model.get_text_features(**processor(text=texts)).pooler_output
        image = model.get_image_features(pixel_values=torch.tensor(result["pixel_values"])).pooler_output
    for key, expected in [
        ("text_features", text),
        ("plain_clip_text_features", text),
        ("image_features", image),
        ("plain_clip_image_features", image),
        ("encode_text", F.normalize(text, dim=-1)),
        ("encode_image", F.normalize(image, dim=-1)),
    ]:
        torch.testing.assert_close(torch.tensor(result[key]), expected, rtol=0, atol=1e-6, msg=key)
