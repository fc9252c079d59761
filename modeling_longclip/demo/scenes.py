"""Synthetic scenes whose distinguishing details appear only late in their long captions.

Each scene is a 3 x 3 grid of cells, each empty or holding a coloured square or circle. The long caption describes
the cells one sentence each, row by row; the short caption is a one-sentence summary. Scenes come in groups that share
the top two rows and differ only in the bottom row, whose sentences start past token 77: a model that reads 77 tokens
cannot tell the members of a group apart; one that reads 248 can. Used by the demo and its test.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

COLORS = {
    "red": (220, 30, 30),
    "green": (30, 170, 60),
    "blue": (40, 70, 220),
    "yellow": (240, 210, 30),
    "purple": (140, 50, 170),
    "orange": (250, 130, 20),
    "black": (20, 20, 20),
}
SHAPES = ("square", "circle")
CELL_NAMES = (
    "top left",
    "top middle",
    "top right",
    "middle left",
    "centre",
    "middle right",
    "bottom left",
    "bottom middle",
    "bottom right",
)
CELL = 16  # pixels per cell: one ViT patch per cell when patch_size == 16


@dataclass(frozen=True)
class Scene:
    cells: tuple  # nine entries: None or (colour, shape)

    def long_caption(self) -> str:
        parts = [
            self.short_caption(),
            "The nine cells are described one by one, row by row, from the top left corner to the bottom right corner.",
        ]
        for name, content in zip(CELL_NAMES, self.cells):
            parts.append(f"{name.capitalize()} cell: {_describe(content)}.")
        return " ".join(parts)

    def short_caption(self) -> str:
        """The first sentence: the layout and the top row only, which the scenes of a group share."""
        top = ", ".join(_describe(content) for content in self.cells[:3])
        return f"A drawing on a white background made of a grid of three rows and three columns where the top row holds {top}."

    def render(self) -> Image.Image:
        image = Image.new("RGB", (3 * CELL, 3 * CELL), "white")
        draw = ImageDraw.Draw(image)
        for index, content in enumerate(self.cells):
            if content is None:
                continue
            colour, shape = content
            x, y = (index % 3) * CELL, (index // 3) * CELL
            box = (x + 2, y + 2, x + CELL - 3, y + CELL - 3)
            (draw.rectangle if shape == "square" else draw.ellipse)(box, fill=COLORS[colour])
        return image


def _describe(content) -> str:
    if content is None:
        return "nothing"
    colour, shape = content
    return f"{'an' if colour[0] in 'aeiou' else 'a'} {colour} {shape}"


def _random_cell(rng: random.Random):
    return None if rng.random() < 0.25 else (rng.choice(list(COLORS)), rng.choice(SHAPES))


def make_scenes(groups: int, per_group: int, rng: random.Random) -> list[Scene]:
    """`groups` x `per_group` scenes; within a group only the bottom row differs (and always does)."""
    scenes = []
    for _ in range(groups):
        top = [_random_cell(rng) for _ in range(6)]
        bottoms = set()
        while len(bottoms) < per_group:
            bottoms.add(tuple(_random_cell(rng) for _ in range(3)))
        scenes.extend(Scene(tuple(top) + bottom) for bottom in sorted(bottoms, key=repr))
    return scenes


def write_split(scenes: list[Scene], folder: Path, name: str) -> Path:
    """Images under folder/name/ (one folder per split, so the held-out scenes can be indexed on their own) and
    folder/name.jsonl (image relative to `folder`, caption, short_caption), which the trainer reads."""
    (folder / name).mkdir(parents=True, exist_ok=True)
    lines = []
    for index, scene in enumerate(scenes):
        image = f"{name}/{name}-{index:05d}.png"
        scene.render().save(folder / image)
        lines.append(
            json.dumps({"image": image, "caption": scene.long_caption(), "short_caption": scene.short_caption()})
        )
    path = folder / f"{name}.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path
