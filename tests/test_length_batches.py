"""One place sorts texts into batches of similar length and puts the rows back in the input order
(`embedding.encode_in_length_order`): `encode_text`, the evaluation's `embed_texts` and the feature cache use it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

import modeling_longclip
from modeling_longclip.embedding import encode_in_length_order

PACKAGE = Path(modeling_longclip.__file__).parent


class CharacterCounts:
    """A processor without a tokenizer: `length_order` falls back to character counts."""


def test_batches_hold_similar_lengths_and_rows_come_back_in_order():
    texts = ["aa", "a" * 9, "aaaa", "a", "a" * 7, "aaa"]
    batches = []

    def encode_batch(batch):
        batches.append(batch)
        return torch.tensor([[float(len(t)), 1.0] for t in batch], dtype=torch.float64)

    rows = encode_in_length_order(CharacterCounts(), texts, encode_batch, batch_size=2)
    assert batches == [
        ["a" * 9, "a" * 7],
        ["aaaa", "aaa"],
        ["aa", "a"],
    ]  # longest first: a too large batch fails early
    assert rows.dtype == torch.float64 and rows.shape == (6, 2)
    assert rows[:, 0].tolist() == [len(t) for t in texts]
    assert encode_in_length_order(CharacterCounts(), [], encode_batch, batch_size=2) is None
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        encode_in_length_order(CharacterCounts(), texts, encode_batch, batch_size=0)


def test_only_the_helper_sorts_texts_by_length():
    """The encode_text path, evaluation/embed.py and features/extraction.py call the helper, not `length_order`."""
    callers = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)
                if name in ("length_order", "encode_in_length_order"):
                    callers.append((path.relative_to(PACKAGE).as_posix(), name))
    assert sorted(callers) == [
        ("embedding.py", "encode_in_length_order"),
        ("embedding.py", "length_order"),
        ("evaluation/embed.py", "encode_in_length_order"),
        ("features/extraction.py", "encode_in_length_order"),
    ]
