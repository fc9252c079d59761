"""CLIP image preprocessing that gives the originals' pixels, whichever backend transformers would pick.

Part of the flat Hub payload: imports only numpy, PIL, torch and transformers. transformers' own CLIP image processor
differs from the originals in two ways: its center crop floors the offset where torchvision's `CenterCrop` rounds it
(a one-pixel shift whenever the resized long side minus the crop is odd, e.g. a 1000x667 photo at 224 px), and with
torchvision installed it resizes tensors instead of PIL images (about one grey level off). This class always resizes a
PIL image with PIL (bicubic, short side to `size`, long side `int(size * long / short)`), then crops and normalizes
exactly like the chosen original:

- flavour "torchvision": the Long-CLIP / OpenAI CLIP / open_clip / ProCLIP / EVA-CLIP transform: Resize, CenterCrop
  (corner `int(round((n - crop) / 2))`), RGB conversion, ToTensor (x / 255 in float32), Normalize.
- flavour "transformers": transformers 4.x `CLIPImageProcessor` on PIL (the preprocessing of LLM2CLIP's model cards):
  RGB conversion first, resize, crop corner `(n - crop) // 2`, x * (1/255) in float64 cast to float32, normalize.
"""

from __future__ import annotations

import numpy as np
import PIL.Image
import torch
from transformers import BaseImageProcessor, BatchFeature

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
FLAVOURS = ("torchvision", "transformers")
CALL_OPTIONS = ("return_tensors", "size", "crop_size", "flavour", "image_mean", "image_std", "resample", "do_rescale")
_MODES = {1: "L", 3: "RGB", 4: "RGBA"}


def _edge(value, key: str, what: str) -> int:
    size = value.get(key) if isinstance(value, dict) else value
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"{what} must be a positive int or a dict with {key!r}, got {value!r}.")
    return size


def resized_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(width, height) with the short side at `short_side` and the long side `int(short_side * long / short)`."""
    if width <= height:
        return short_side, int(short_side * height / width)
    return int(short_side * width / height), short_side


def _array_to_pil(array: np.ndarray, channels_first: bool, float_range: float = 1.0) -> PIL.Image.Image:
    if array.ndim == 3:
        first, last = array.shape[0] in _MODES, array.shape[-1] in _MODES
        if first and (channels_first or not last):
            array = np.moveaxis(array, 0, -1)
        if array.shape[-1] not in _MODES:
            raise ValueError(f"an image array needs 1, 3 or 4 channels, got shape {tuple(array.shape)}.")
        if array.shape[-1] == 1:
            array = array[..., 0]
    elif array.ndim != 2:
        raise ValueError(f"an image array must be (H, W), (H, W, C) or (C, H, W), got shape {tuple(array.shape)}.")
    if np.issubdtype(array.dtype, np.floating):  # scaled to 0..255 and truncated like ToPILImage
        if array.size and (array.min() < 0 or array.max() > float_range):
            raise ValueError(
                f"float image arrays must hold values in [0, {float_range:g}] (do_rescale=True: 0..255, otherwise "
                "0..1); pass uint8 arrays for 0..255."
            )
        array = (array * (255 / float_range)).astype(np.uint8)
    elif array.dtype != np.uint8:
        raise ValueError(f"image arrays must be uint8 or float in [0, 1], got dtype {array.dtype}.")
    return PIL.Image.fromarray(np.ascontiguousarray(array))


def _as_pil_list(images, float_range: float = 1.0) -> list[PIL.Image.Image]:
    """PIL images as given; numpy (H, W[, C]) / torch (C, H, W) arrays, and batches of them, as PIL images.

    Float arrays hold 0..1 (0..255 with transformers' `do_rescale=True`), uint8 arrays 0..255."""
    if isinstance(images, PIL.Image.Image):
        return [images]
    if isinstance(images, (torch.Tensor, np.ndarray)):
        first = isinstance(images, torch.Tensor)
        array = images.detach().cpu().numpy() if first else images
        batch = array if array.ndim == 4 else [array]
        return [_array_to_pil(a, first, float_range) for a in batch]
    if isinstance(images, (list, tuple)):
        if not images:
            raise ValueError("no images given (an empty list).")
        return [pil for image in images for pil in _as_pil_list(image, float_range)]
    raise TypeError(f"images must be PIL images, numpy arrays or torch tensors, got {type(images).__name__}.")


class LongCLIPImageProcessor(BaseImageProcessor):
    r"""
    Short-side bicubic resize with PIL, center crop, RGB, scale to [0, 1], normalize with CLIP's mean and std.

    size (`int` or `{"shortest_edge": int}`): the short side after resizing.
    crop_size (`int` or `{"height": int, "width": int}`, defaults to `size`): the crop, at most `size` on each side.
    flavour (`"torchvision"` or `"transformers"`): which original to reproduce (module docstring).
    """

    model_input_names = ["pixel_values"]

    def __init__(
        self,
        size=224,
        crop_size=None,
        flavour: str = "torchvision",
        image_mean=OPENAI_CLIP_MEAN,
        image_std=OPENAI_CLIP_STD,
        resample: int = int(PIL.Image.Resampling.BICUBIC),
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.size, self.crop_size, self.flavour = size, crop_size, flavour
        self.image_mean, self.image_std, self.resample = list(image_mean), list(image_std), int(resample)
        self._settings({})  # refuse bad settings now, not at the first image
        short = _edge(size, "shortest_edge", "size")
        self.size = {"shortest_edge": short}
        height, width = self._crop(crop_size if crop_size is not None else short)
        self.crop_size = {"height": height, "width": width}

    @staticmethod
    def _crop(crop_size) -> tuple[int, int]:
        if isinstance(crop_size, dict):
            return _edge(crop_size, "height", "crop_size"), _edge(crop_size, "width", "crop_size")
        edge = _edge(crop_size, "height", "crop_size")
        return edge, edge

    def _settings(self, overrides: dict) -> dict:
        settings = {
            "size": self.size,
            "crop_size": self.crop_size,
            "flavour": self.flavour,
            "image_mean": self.image_mean,
            "image_std": self.image_std,
            "resample": self.resample,
            **overrides,
        }
        if settings["flavour"] not in FLAVOURS:
            raise ValueError(f"flavour must be one of {FLAVOURS}, got {settings['flavour']!r}.")
        short = _edge(settings["size"], "shortest_edge", "size")
        height, width = self._crop(settings["crop_size"] if settings["crop_size"] is not None else short)
        if height > short or width > short:
            raise ValueError(f"crop_size {height}x{width} is larger than the resized short side {short}.")
        for key in ("image_mean", "image_std"):
            if len(settings[key]) != 3:
                raise ValueError(f"{key} needs 3 values (R, G, B), got {settings[key]!r}.")
        return {**settings, "size": short, "crop_size": (height, width)}

    def preprocess(self, images, **kwargs) -> BatchFeature:
        unknown = sorted(set(kwargs) - set(CALL_OPTIONS))
        if unknown:
            raise TypeError(
                f"LongCLIPImageProcessor got unexpected keyword argument(s) {unknown}; it accepts {CALL_OPTIONS}."
            )
        return_tensors = kwargs.pop("return_tensors", None)
        float_range = 255.0 if kwargs.pop("do_rescale", None) else 1.0
        settings = self._settings(kwargs)
        pixels = [self._one(image, settings) for image in _as_pil_list(images, float_range)]
        if return_tensors is None:
            return BatchFeature({"pixel_values": [p.numpy() for p in pixels]})
        return BatchFeature({"pixel_values": torch.stack(pixels)}, tensor_type=return_tensors)

    @staticmethod
    def _one(image: PIL.Image.Image, settings: dict) -> torch.Tensor:
        torchvision_style = settings["flavour"] == "torchvision"
        if not torchvision_style and image.mode != "RGB":
            image = image.convert("RGB")
        size = resized_size(*image.size, settings["size"])
        if size != image.size:
            image = image.resize(size, resample=settings["resample"])
        (height, width), (full_width, full_height) = settings["crop_size"], image.size
        if torchvision_style:
            top, left = int(round((full_height - height) / 2.0)), int(round((full_width - width) / 2.0))
        else:
            top, left = (full_height - height) // 2, (full_width - width) // 2
        image = image.crop((left, top, left + width, top + height))
        if image.mode != "RGB":
            image = image.convert("RGB")
        array = np.asarray(image, dtype=np.uint8)
        if torchvision_style:
            scaled = torch.from_numpy(array.copy()).permute(2, 0, 1).float().div(255)
        else:
            scaled = torch.from_numpy((array.astype(np.float64) * (1 / 255)).astype(np.float32)).permute(2, 0, 1)
        mean = torch.tensor(settings["image_mean"], dtype=torch.float32)[:, None, None]
        std = torch.tensor(settings["image_std"], dtype=torch.float32)[:, None, None]
        return ((scaled - mean) / std).contiguous()


LongCLIPImageProcessor.register_for_auto_class("AutoImageProcessor")

__all__ = ["FLAVOURS", "LongCLIPImageProcessor", "resized_size"]
