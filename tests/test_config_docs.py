"""The config classes and the output class are documented the way transformers documents its own (what Hub users
read): an `Args:` entry for every field, with its real default, and an `Example:` that runs."""

from __future__ import annotations

import dataclasses
import doctest
import re

import pytest
from transformers import PreTrainedConfig

from modeling_longclip import EVA02VisionConfig, LLM2CLIPConfig, LongCLIPConfig, ProCLIPConfig
from modeling_longclip.modeling_llm2clip import DualTowerOutput

CONFIGS = (EVA02VisionConfig, LLM2CLIPConfig, ProCLIPConfig, LongCLIPConfig)


def declared_defaults(cls) -> dict:
    """Every annotated field with a class default, from the class and its bases up to PreTrainedConfig (most derived
    class wins)."""
    defaults = {}
    for klass in reversed(cls.__mro__[: cls.__mro__.index(PreTrainedConfig)]):
        for name in klass.__dict__.get("__annotations__", {}):
            if not name.startswith("_") and name in klass.__dict__:
                defaults[name] = klass.__dict__[name]
    return defaults


def args_entries(doc: str) -> dict[str, str]:
    """`name -> the text in parentheses` of each entry of the Args block."""
    block = doc.split("Args:", 1)[1].split("Example:", 1)[0]
    return dict(re.findall(r"^\s{8}(\w+) \((.*)\):$", block, flags=re.MULTILINE))


def stated_default(entry: str) -> str | None:
    match = re.search(r"defaults to (.+)$", entry)
    return match.group(1).strip("`").strip('"') if match else None


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
def test_every_config_field_has_an_args_entry_with_its_default(cls):
    doc = cls.__doc__
    assert "Args:" in doc and "Example:" in doc and "```python" in doc
    entries = args_entries(doc)
    for name, default in declared_defaults(cls).items():
        assert name in entries, f"{cls.__name__}.{name} has no Args entry"
        assert stated_default(entries[name]) == str(default), (cls.__name__, name, entries[name], default)
    assert set(entries) <= set(declared_defaults(cls)), set(entries) - set(declared_defaults(cls))


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
def test_config_examples_run(cls):
    text = re.sub(r"^\s*```(python)?\s*$", "", cls.__doc__, flags=re.MULTILINE)  # Markdown fences end an output
    test = doctest.DocTestParser().get_doctest(text, {}, cls.__name__, None, 0)
    assert test.examples
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test)
    assert runner.failures == 0


def test_the_output_class_documents_every_field():
    entries = args_entries(DualTowerOutput.__doc__ + "\nExample:")
    assert [f.name for f in dataclasses.fields(DualTowerOutput)] == list(entries)
