"""Load a saved folder the way a user without this package would: in a fresh process that cannot import it.

Used by the demo (to show the folder stands alone) and by the tests of the loading contract.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

_SCRIPT = r"""
import json, sys

class BlockPackage:  # the folder must carry everything it needs
    def find_spec(self, name, path=None, target=None):
        if name == "modeling_longclip" or name.startswith("modeling_longclip."):
            raise ImportError(f"{name} is blocked in this process")

sys.meta_path.insert(0, BlockPackage())

import numpy as np
import torch
from PIL import Image
from transformers import AutoModel, AutoModelForZeroShotImageClassification, AutoProcessor, CLIPModel, pipeline

def pooled(output):  # transformers 4.x's CLIPModel returns the features, 5.x a ModelOutput holding them
    return (output if isinstance(output, torch.Tensor) else output.pooler_output).tolist()

request = json.load(open(sys.argv[1]))
folder, texts = request["folder"], request["texts"]
model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
zero_shot = AutoModelForZeroShotImageClassification.from_pretrained(folder, trust_remote_code=True)
image = Image.fromarray((np.random.default_rng(0).random((48, 40, 3)) * 255).astype("uint8"))
classifier = pipeline("zero-shot-image-classification", model=folder, trust_remote_code=True)
with torch.no_grad():
    inputs = processor(text=texts, images=[image])
    text = model.get_text_features(**{k: v for k, v in inputs.items() if k != "pixel_values"})
    image_features = model.get_image_features(pixel_values=inputs["pixel_values"])
result = {
    "model_class": type(model).__name__,
    "model_module": type(model).__module__,
    "zero_shot_class": type(zero_shot).__name__,
    "processor_class": type(processor).__name__,
    "text_features": pooled(text),
    "image_features": pooled(image_features),
    "encode_text": model.encode_text(texts).tolist(),
    "encode_image": model.encode_image([image]).tolist(),
    "pixel_values": inputs["pixel_values"].tolist(),
    "zero_shot_scores": classifier(image, candidate_labels=request["labels"]),
}
if request.get("clip_folder"):
    plain = CLIPModel.from_pretrained(request["clip_folder"]).eval()
    with torch.no_grad():
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        result["plain_clip_text_features"] = pooled(plain.get_text_features(input_ids=ids, attention_mask=mask))
        result["plain_clip_image_features"] = pooled(plain.get_image_features(pixel_values=inputs["pixel_values"]))
result["transformers_version"] = __import__("transformers").__version__
result["leaked_modules"] = sorted(m for m in sys.modules if m.split(".")[0] == "modeling_longclip")
json.dump(result, open(sys.argv[2], "w"))
"""


def _existing_folder(folder: str | Path) -> Path:
    folder = Path(folder).expanduser().resolve()
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such model folder")
    return folder


def load_in_clean_process(
    folder: str | Path,
    texts: list[str],
    labels: tuple[str, ...] = ("a cat", "a dog", "a car"),
    clip_folder: str | Path | None = None,
    python: str | Path | None = None,
) -> dict:
    """Load `folder` with AutoModel / AutoProcessor / pipeline (trust_remote_code) where this package is blocked.

    Returns the classes it got, text and image features (and a stock `--format clip` folder's, if given), the
    pipeline's scores and any leaked package module. `python` runs it with another interpreter (a virtualenv with
    another transformers). Raises RuntimeError with the child's error output on failure.
    """
    # The child runs in a temporary cwd: a relative path would not exist there and transformers would then read it
    # as a Hub repo id, so both folders are made absolute (and checked) here.
    folder = _existing_folder(folder)
    clip_folder = _existing_folder(clip_folder) if clip_folder else None
    with tempfile.TemporaryDirectory() as work:
        request = Path(work) / "request.json"
        request.write_text(
            json.dumps(
                {
                    "folder": str(folder),
                    "texts": texts,
                    "labels": list(labels),
                    "clip_folder": str(clip_folder) if clip_folder else None,
                }
            )
        )
        (Path(work) / "load.py").write_text(_SCRIPT)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env.setdefault("HF_HUB_OFFLINE", "1")
        run = subprocess.run(
            [str(python or sys.executable), "load.py", str(request), "result.json"],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
        )
        if run.returncode != 0:
            raise RuntimeError(f"loading {folder} in a clean process failed:\n{run.stderr[-4000:]}")
        return json.loads((Path(work) / "result.json").read_text())
