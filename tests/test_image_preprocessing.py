"""LongCLIPImageProcessor against independent PIL + numpy re-implementations of the originals' transforms, on real
photos at many sizes (odd crop offsets, portrait, landscape, tiny, grayscale, RGBA, palette): exactly equal pixels."""

import importlib

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from modeling_longclip.converters.clip_preprocessing import clip_image_processor
from modeling_longclip.image_processing_longclip import LongCLIPImageProcessor

MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)
SIZES = [
    (1000, 667),
    (640, 427),
    (667, 1000),
    (301, 200),
    (5, 300),
    (300, 5),
    (333, 225),
    (225, 224),
    (97, 33),
    (224, 224),
]
# (301, 200) at 224: slack 113, corner round(56.5) = 56 (Python rounds half to even), not 57


def _resize_short_side(image: Image.Image, n: int) -> Image.Image:
    # torchvision.transforms.functional.resize with an int: short side n, long side int(n * long / short); PIL bicubic
    w, h = image.size
    if min(w, h) == n:
        return image
    target = (n, int(n * h / w)) if w <= h else (int(n * w / h), n)
    return image.resize(target, Image.BICUBIC)


def torchvision_reference(image: Image.Image, n: int) -> np.ndarray:
    """Resize(n, BICUBIC), CenterCrop(n) (corner int(round(d / 2.0))), convert("RGB"), ToTensor, Normalize."""
    resized = _resize_short_side(image, n)
    w, h = resized.size
    top, left = int(round((h - n) / 2.0)), int(round((w - n) / 2.0))
    if image.mode == "P":  # palette indices: crop in PIL to keep the palette
        cropped = resized.crop((left, top, left + n, top + n))
    else:
        cropped = Image.fromarray(np.ascontiguousarray(np.asarray(resized)[top : top + n, left : left + n]))
    rgb = np.asarray(cropped.convert("RGB")).astype(np.float32) / np.float32(255)
    return ((rgb - MEAN) / STD).transpose(2, 0, 1)


def transformers4_reference(image: Image.Image, n: int) -> np.ndarray:
    """transformers 4.x CLIPImageProcessor on PIL: convert("RGB") first, resize, crop corner d // 2, x * (1/255)."""
    resized = np.asarray(_resize_short_side(image.convert("RGB"), n))
    h, w = resized.shape[:2]
    top, left = (h - n) // 2, (w - n) // 2
    scaled = (resized[top : top + n, left : left + n].astype(np.float64) * (1 / 255)).astype(np.float32)
    return ((scaled - MEAN) / STD).transpose(2, 0, 1)


def photos():
    rgba = np.dstack([data.astronaut(), np.linspace(0, 255, 512 * 512).reshape(512, 512).astype(np.uint8)])
    return {
        "astronaut": Image.fromarray(data.astronaut()),
        "chelsea": Image.fromarray(data.chelsea()),
        "coffee": Image.fromarray(data.coffee()),
        "rocket": Image.fromarray(data.rocket()),
        "camera (L)": Image.fromarray(data.camera()),
        "astronaut (RGBA)": Image.fromarray(rgba),
        "coffee (P)": Image.fromarray(data.coffee()).quantize(64),
    }


def _cases():
    """Every photo (and mode) with an odd crop slack and as a portrait; the astronaut at every size."""
    for name, photo in photos().items():
        for size in SIZES if name == "astronaut" else SIZES[:3]:
            yield name, photo.resize(size, Image.BICUBIC) if photo.mode != "P" else photo.resize(size)


@pytest.mark.parametrize("n", [224, 336, 32])
def test_torchvision_flavour_equals_the_original_transform(n):
    processor = LongCLIPImageProcessor(size=n)
    for name, image in _cases():
        pixels = processor(image, return_tensors="pt")["pixel_values"][0]
        expected = torch.from_numpy(torchvision_reference(image, n))
        assert torch.equal(pixels, expected), (
            f"{name} {image.size} at {n}: max |diff| {(pixels - expected).abs().max()}"
        )


@pytest.mark.parametrize("n", [336])
def test_transformers_flavour_equals_transformers4_clip_image_processor(n):
    processor = clip_image_processor(n, "transformers")
    for name, image in _cases():
        pixels = processor(images=[image], return_tensors="pt")["pixel_values"][0]
        expected = torch.from_numpy(transformers4_reference(image, n))
        assert torch.equal(pixels, expected), (
            f"{name} {image.size} at {n}: max |diff| {(pixels - expected).abs().max()}"
        )


def test_odd_offsets_differ_from_the_stock_processor_by_one_pixel_shift():
    """Where the slack is odd the stock (floor) crop is one pixel off the original; where it is even, they agree."""
    photo = Image.fromarray(data.rocket())  # 640x427: resized to 335x224, slack 111 -> corner 56 vs 55
    stock = clip_image_processor(224, "stock")
    ours = clip_image_processor(224)(photo, return_tensors="pt")["pixel_values"][0]
    theirs = torch.as_tensor(np.asarray(stock(images=photo, return_tensors="np")["pixel_values"][0]))
    reference = torch.from_numpy(torchvision_reference(photo, 224))
    assert torch.equal(ours, reference)
    assert (theirs - reference).abs().max() > 0.1  # a shifted crop, not rounding noise
    even = photo.resize((638, 427), Image.BICUBIC)  # resized 334x224, slack 110: both put the corner at 55
    if type(stock).__name__.endswith("Pil"):  # the PIL backend resizes like the original; torchvision's does not
        theirs = torch.as_tensor(np.asarray(stock(images=even, return_tensors="np")["pixel_values"][0]))
        assert torch.allclose(theirs, torch.from_numpy(torchvision_reference(even, 224)), atol=1e-6)


def test_numpy_and_torch_inputs_match_pil():
    processor = LongCLIPImageProcessor(size=32)
    photo = Image.fromarray(data.chelsea())
    expected = processor(photo, return_tensors="pt")["pixel_values"]
    array = np.asarray(photo)
    for given in (array, torch.from_numpy(array.copy()).permute(2, 0, 1), array.astype(np.float32) / 255, [array]):
        torch.testing.assert_close(processor(given, return_tensors="pt")["pixel_values"], expected, rtol=0, atol=0)
    batch = processor(np.stack([array, array]), return_tensors="pt")["pixel_values"]
    assert batch.shape == (2, 3, 32, 32) and torch.equal(batch[1], expected[0])
    gray = photo.convert("L")
    assert torch.equal(
        processor(np.asarray(gray), return_tensors="pt")["pixel_values"],
        processor(gray, return_tensors="pt")["pixel_values"],
    )
    unbatched = processor(photo)["pixel_values"]
    assert isinstance(unbatched, list) and unbatched[0].shape == (3, 32, 32)


def test_bad_input_and_settings_are_named():
    processor = LongCLIPImageProcessor(size=32)
    with pytest.raises(TypeError, match="str"):
        processor("photo.jpg")
    with pytest.raises(ValueError, match="channels"):
        processor(np.zeros((8, 8, 2), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        processor(np.full((8, 8, 3), 2.0, dtype=np.float32))
    with pytest.raises(ValueError, match="dtype"):
        processor(np.zeros((8, 8, 3), dtype=np.int32))
    with pytest.raises(TypeError, match="do_magic"):
        processor(np.zeros((8, 8, 3), dtype=np.uint8), do_magic=True)
    with pytest.raises(ValueError, match="flavour"):
        LongCLIPImageProcessor(size=32, flavour="opencv")
    with pytest.raises(ValueError, match="larger"):
        LongCLIPImageProcessor(size=32, crop_size=40)


def test_saved_settings_reload(tmp_path):
    AutoImageProcessor = importlib.import_module("transformers.models.auto.image_processing_auto").AutoImageProcessor

    clip_image_processor(48, "transformers").save_pretrained(tmp_path)
    reloaded = AutoImageProcessor.from_pretrained(tmp_path)
    assert type(reloaded) is LongCLIPImageProcessor
    assert (reloaded.flavour, reloaded.size, reloaded.crop_size) == (
        "transformers",
        {"shortest_edge": 48},
        {"height": 48, "width": 48},
    )
    assert (tmp_path / "image_processing_longclip.py").is_file()


def test_do_rescale_says_which_range_float_inputs_hold():
    processor = LongCLIPImageProcessor(size=16)
    array = np.asarray(Image.fromarray(data.coffee()).resize((24, 16)))
    expected = processor(array, return_tensors="pt")["pixel_values"]
    unit = torch.from_numpy(array.astype(np.float32) / 255).permute(2, 0, 1)
    assert torch.equal(processor(unit, do_rescale=False, return_tensors="pt")["pixel_values"], expected)
    assert torch.equal(processor(unit * 255, do_rescale=True, return_tensors="pt")["pixel_values"], expected)


_CLEAN_SCRIPT = r"""
import json, sys

class BlockPackage:
    def find_spec(self, name, path=None, target=None):
        if name == "modeling_longclip" or name.startswith("modeling_longclip."):
            raise ImportError(f"{name} is blocked in this process")

sys.meta_path.insert(0, BlockPackage())
import numpy as np
from PIL import Image
import importlib
from transformers import AutoTokenizer
# transformers < 5.20 without torchvision exports only a placeholder at the top level
AutoImageProcessor = importlib.import_module("transformers.models.auto.image_processing_auto").AutoImageProcessor

folder, image_path, text = sys.argv[1], sys.argv[2], sys.argv[3]
image_processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
pixels = image_processor(Image.open(image_path), return_tensors="np")["pixel_values"]
print(json.dumps({"image_processor": type(image_processor).__name__, "tokenizer": type(tokenizer).__name__,
                  "pixels": np.asarray(pixels).tolist(), "ids": tokenizer(text)["input_ids"]}))
"""


def test_folder_front_ends_load_where_the_package_is_not_installed(tmp_path, clip_tokenizer):
    import json
    import os
    import subprocess
    import sys

    from modeling_longclip import LongCLIPProcessor

    processor = LongCLIPProcessor(clip_image_processor(24), clip_tokenizer)
    processor.save_pretrained(tmp_path / "folder")
    photo = Image.fromarray(data.rocket()).resize((59, 40))  # at 24 px: 35 wide, corner round(5.5) = 6, floor 5
    photo.save(tmp_path / "photo.png")
    text = "Tom &amp; Jerry’s ﬁve cats"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),
    }
    run = subprocess.run(
        [sys.executable, "-c", _CLEAN_SCRIPT, str(tmp_path / "folder"), str(tmp_path / "photo.png"), text],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert (result["image_processor"], result["tokenizer"]) == ("LongCLIPImageProcessor", "LongCLIPTokenizer")
    expected = torch.from_numpy(torchvision_reference(Image.open(tmp_path / "photo.png"), 24))
    assert torch.equal(torch.tensor(result["pixels"], dtype=torch.float32)[0], expected)
    assert result["ids"] == processor(text=[text])["input_ids"][0].tolist()
