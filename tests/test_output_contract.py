"""transformers' output contract, checked the way `ModelTesterMixin` checks it, on the three model classes and on
stock `CLIPModel` as the baseline: save/load round trips, `return_dict` (argument and config), tuple vs dict outputs,
hidden states and attentions, gradient checkpointing, eager vs SDPA attention."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import tiny_longclip_config
from llm_fixtures import tiny_llama_config, tiny_llm2clip_config
from transformers import CLIPConfig, CLIPModel
from transformers.models.clip.modeling_clip import CLIPOutput
from transformers.utils import ModelOutput

from modeling_longclip import LLM2CLIPModel, LongCLIPModel, ProCLIPConfig, ProCLIPModel

FAMILIES = ("clip", "longclip", "llm2clip", "proclip")
BATCH, LENGTH, LLM_VOCAB = 2, 9, 420


def build(family: str):
    torch.manual_seed(0)
    if family in ("clip", "longclip"):
        config = tiny_longclip_config()
        if family == "clip":
            return CLIPModel(
                CLIPConfig(**{k: config.to_dict()[k] for k in ("text_config", "vision_config", "projection_dim")})
            )
        return LongCLIPModel(config)
    config = tiny_llm2clip_config(tiny_llama_config(LLM_VOCAB))
    if family == "proclip":
        return ProCLIPModel(ProCLIPConfig(**config.to_dict()))
    return LLM2CLIPModel(config)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """One saved folder per family (built once for the module)."""
    root = tmp_path_factory.mktemp("contract")
    for family in FAMILIES:
        build(family).save_pretrained(root / family)
    return root


def load(folders, family: str, attn: str = "sdpa"):
    cls = {"clip": CLIPModel, "longclip": LongCLIPModel, "llm2clip": LLM2CLIPModel, "proclip": ProCLIPModel}[family]
    return cls.from_pretrained(folders / family, attn_implementation=attn).eval()


def inputs(seed: int = 1, batch: int = BATCH, length: int = LENGTH) -> dict:
    generator = torch.Generator().manual_seed(seed)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[1, length - 3 :] = 0  # a padded row: masks must reach every attention backend
    return {
        "input_ids": torch.randint(1, 400, (batch, length), generator=generator),
        "attention_mask": mask,
        "pixel_values": torch.randn(batch, 3, 32, 32, generator=generator),
    }


def calls(model, batch: dict):
    """(name, callable(**kwargs)) for the three entry points, each with its own inputs."""
    text = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    return [
        ("forward", lambda **kw: model(**batch, **kw)),
        ("get_text_features", lambda **kw: model.get_text_features(**text, **kw)),
        ("get_image_features", lambda **kw: model.get_image_features(pixel_values=batch["pixel_values"], **kw)),
    ]


def assert_same(a, b, atol: float = 1e-6):
    """Recursive equality of outputs (ModelOutput, tuples, tensors, None) like ModelTesterMixin's equivalence check."""
    if isinstance(a, ModelOutput):
        a = a.to_tuple()
    if isinstance(b, ModelOutput):
        b = b.to_tuple()
    if isinstance(a, (tuple, list)):
        assert isinstance(b, (tuple, list)) and len(a) == len(b), (
            type(b),
            len(a),
            len(b) if isinstance(b, tuple) else b,
        )
        for x, y in zip(a, b):
            assert_same(x, y, atol)
    elif a is None:
        assert b is None
    else:
        torch.testing.assert_close(a, b, atol=atol, rtol=0)


def text_layers(model) -> int:
    return model.config.text_config.num_hidden_layers


def vision_layers(model) -> int:
    return model.config.vision_config.num_hidden_layers


@pytest.mark.parametrize("family", FAMILIES)
def test_save_load_round_trip(folders, family, tmp_path):
    model = load(folders, family)
    again = type(model).from_pretrained(folders / family).eval()
    assert model.state_dict().keys() == again.state_dict().keys()
    batch = inputs()
    with torch.no_grad():
        assert_same(model(**batch), again(**batch), atol=0)
        again.save_pretrained(tmp_path / "twice")
        assert_same(model(**batch), type(model).from_pretrained(tmp_path / "twice").eval()(**batch), atol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_tuple_and_dict_outputs_agree(folders, family):
    model = load(folders, family, attn="eager")
    with torch.no_grad():
        for flags in ({}, {"output_hidden_states": True}, {"output_attentions": True}, {"return_loss": True}):
            for name, call in calls(model, inputs()):
                if "return_loss" in flags and name != "forward":
                    continue
                as_dict = call(return_dict=True, **flags)
                as_tuple = call(return_dict=False, **flags)
                assert isinstance(as_dict, ModelOutput) and type(as_tuple) is tuple, (name, flags)
                assert_same(as_dict.to_tuple(), as_tuple)
                if family == "clip" and name == "forward":
                    continue  # stock CLIPModel.forward (5.24) breaks under config.return_dict=False: its towers return tuples
                model.config.return_dict = False  # the config's default is honoured too; an argument wins over it
                try:
                    assert type(call(**flags)) is tuple, (name, flags)
                    assert isinstance(call(return_dict=True, **flags), ModelOutput), (name, flags)
                finally:
                    model.config.return_dict = True
        loss_first = model(**inputs(), return_loss=True, return_dict=False)[0]
        assert loss_first.ndim == 0


@pytest.mark.parametrize("family", FAMILIES)
def test_forward_carries_tower_outputs_like_clip(folders, family):
    model = load(folders, family)
    batch = inputs()
    with torch.no_grad():
        out = model(**batch)
        assert isinstance(out, CLIPOutput)
        text = model.get_text_features(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        image = model.get_image_features(pixel_values=batch["pixel_values"])
    assert_same(out.text_model_output, text)
    assert_same(out.vision_model_output, image)
    width = model.config.text_config.hidden_size
    assert text.last_hidden_state.shape == (BATCH, LENGTH, width)
    torch.testing.assert_close(out.text_embeds, text.pooler_output / text.pooler_output.norm(dim=-1, keepdim=True))
    assert text.hidden_states is None and text.attentions is None and image.hidden_states is None


@pytest.mark.parametrize("family", FAMILIES)
def test_hidden_states(folders, family):
    model = load(folders, family)
    batch = inputs()
    patches = (32 // model.config.vision_config.patch_size) ** 2 + 1
    with torch.no_grad():
        out = model(**batch, output_hidden_states=True)
        text = model.get_text_features(input_ids=batch["input_ids"], output_hidden_states=True)
        image = model.get_image_features(pixel_values=batch["pixel_values"], output_hidden_states=True)
    for states in (out.text_model_output.hidden_states, text.hidden_states):
        assert len(states) == text_layers(model) + 1
        assert all(s.shape == (BATCH, LENGTH, model.config.text_config.hidden_size) for s in states)
    for states in (out.vision_model_output.hidden_states, image.hidden_states):
        assert len(states) == vision_layers(model) + 1
        assert all(s.shape == (BATCH, patches, model.config.vision_config.hidden_size) for s in states)
    if family in ("llm2clip", "proclip"):  # the text tower output is the LLM's own, run bidirectionally
        with torch.no_grad():
            llm = model.text_model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True
            )
        assert_same(out.text_model_output.hidden_states, llm.hidden_states, atol=0)
        assert_same(out.text_model_output.last_hidden_state, llm.last_hidden_state, atol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_attentions(folders, family):
    model = load(folders, family, attn="eager")
    batch = inputs()
    patches = (32 // model.config.vision_config.patch_size) ** 2 + 1
    with torch.no_grad():
        out = model(**batch, output_attentions=True)
    text, vision = out.text_model_output.attentions, out.vision_model_output.attentions
    assert len(text) == text_layers(model) and len(vision) == vision_layers(model)
    heads = model.config.text_config.num_attention_heads
    assert all(a.shape == (BATCH, heads, LENGTH, LENGTH) for a in text)
    assert all(a.shape == (BATCH, model.config.vision_config.num_attention_heads, patches, patches) for a in vision)
    padded = text[0][1, :, :, LENGTH - 3 :]  # no query attends to the padding of row 1
    assert padded.abs().max() == 0
    if family in ("llm2clip", "proclip"):  # the LLM tower is bidirectional: the first token sees the last real one
        assert text[0][0, :, 0, -1].min() > 0


@pytest.mark.filterwarnings("ignore:`gradient_checkpointing_enable` is deprecated:FutureWarning")  # 5.24 renamed it
@pytest.mark.parametrize("family", FAMILIES)
def test_gradient_checkpointing_train_step_matches(folders, family):
    plain = load(folders, family).train()
    checkpointed = copy.deepcopy(plain)
    checkpointed.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    assert any(getattr(m, "gradient_checkpointing", False) for m in checkpointed.text_model.modules())
    assert any(getattr(m, "gradient_checkpointing", False) for m in checkpointed.vision_model.modules())
    losses = []
    for model in (plain, checkpointed):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        loss = model(**inputs(), return_loss=True).loss
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
    torch.testing.assert_close(losses[0], losses[1], atol=1e-6, rtol=0)
    for (name, a), b in zip(plain.named_parameters(), checkpointed.parameters()):
        assert (a.grad is None) == (b.grad is None), name
        if a.grad is not None:
            torch.testing.assert_close(a.grad, b.grad, atol=1e-6, rtol=1e-5, msg=name)
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5, msg=name)


@pytest.mark.parametrize("family", FAMILIES)
def test_eager_and_sdpa_agree(folders, family):
    eager, sdpa = load(folders, family, attn="eager"), load(folders, family, attn="sdpa")
    assert sdpa.text_model.config._attn_implementation == "sdpa"
    assert eager.text_model.config._attn_implementation == "eager"
    assert eager.vision_model.config._attn_implementation == "eager"
    batch = inputs()
    with torch.no_grad():
        a, b = eager(**batch), sdpa(**batch)
    for key in ("logits_per_image", "text_embeds", "image_embeds"):
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-5)
    real = batch["attention_mask"].bool()  # padded positions hold whatever each backend leaves there
    torch.testing.assert_close(
        a.text_model_output.last_hidden_state[real], b.text_model_output.last_hidden_state[real], atol=1e-5, rtol=1e-5
    )


def test_longclip_short_caption_loss_as_tuple(folders):
    model = load(folders, "longclip")
    batch = inputs()
    short = inputs(seed=2, length=5)
    with torch.no_grad():
        as_dict = model(
            **batch, short_input_ids=short["input_ids"], short_attention_mask=short["attention_mask"], return_loss=True
        )
        as_tuple = model(
            **batch,
            short_input_ids=short["input_ids"],
            short_attention_mask=short["attention_mask"],
            return_loss=True,
            return_dict=False,
        )
        plain = model(**batch, return_loss=True)
    assert_same(as_dict, as_tuple)
    assert not torch.equal(as_dict.loss, plain.loss)  # the short captions enter the Long-CLIP loss


@pytest.mark.parametrize("family", ("llm2clip", "proclip"))
def test_precomputed_text_embeds_have_no_text_tower_output(folders, family):
    model = load(folders, family)
    batch = inputs()
    with torch.no_grad():
        pooled = model.encode_llm(batch["input_ids"], batch["attention_mask"])
        from_tokens = model(**batch)
        from_embeds = model(pixel_values=batch["pixel_values"], text_embeds=pooled)
        as_tuple = model(pixel_values=batch["pixel_values"], text_embeds=pooled, return_dict=False)
        features = model.get_text_features(text_embeds=pooled)
    assert from_embeds.text_model_output is None and features.last_hidden_state is None
    torch.testing.assert_close(from_embeds.text_embeds, from_tokens.text_embeds, atol=1e-6, rtol=0)
    torch.testing.assert_close(features.pooler_output, from_tokens.text_model_output.pooler_output, atol=1e-6, rtol=0)
    assert len(as_tuple) == 5 and isinstance(as_tuple[-1], tuple)  # logits x 2, embeds x 2, vision tower output
    assert model.get_text_features(text_embeds=pooled, return_dict=False)[0].shape == (
        BATCH,
        model.config.projection_dim,
    )


@pytest.mark.parametrize("family", ("longclip", "llm2clip", "proclip"))
def test_config_output_flags_are_the_defaults(folders, family):
    """`config.output_hidden_states` / `output_attentions` are the defaults of every entry point, an argument wins."""
    model = load(folders, family, attn="eager")
    model.config.output_hidden_states = model.config.output_attentions = True
    batch = inputs()
    with torch.no_grad():
        out = model(**batch)
        text = model.get_text_features(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        image = model.get_image_features(pixel_values=batch["pixel_values"])
        quiet = model(**batch, output_hidden_states=False, output_attentions=False)
    for tower in (out.text_model_output, text):
        assert len(tower.hidden_states) == text_layers(model) + 1 and len(tower.attentions) == text_layers(model)
    for tower in (out.vision_model_output, image):
        assert len(tower.hidden_states) == vision_layers(model) + 1 and len(tower.attentions) == vision_layers(model)
    assert quiet.text_model_output.hidden_states is None and quiet.vision_model_output.attentions is None


TOWER_CONFIGS = {  # the image towers besides CLIP's, at the contract's tiny size
    "eva02": dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8
    ),
    "siglip2": dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8
    ),
}


@pytest.mark.parametrize("tower", sorted(TOWER_CONFIGS))
def test_every_image_tower_follows_the_output_rule(tower):
    torch.manual_seed(0)
    config = tiny_llm2clip_config(tiny_llama_config(LLM_VOCAB), vision_tower=tower, vision_config=TOWER_CONFIGS[tower])
    config._attn_implementation = "eager"
    model = LLM2CLIPModel(config).eval()
    with torch.no_grad():
        for flags in ({}, {"output_hidden_states": True, "output_attentions": True}):
            for name, call in calls(model, inputs()):
                as_dict, as_tuple = call(return_dict=True, **flags), call(return_dict=False, **flags)
                assert isinstance(as_dict, ModelOutput) and type(as_tuple) is tuple, (name, flags)
                assert_same(as_dict.to_tuple(), as_tuple)
        vision = model.vision_model  # the tower alone, under its own config
        pixels = inputs()["pixel_values"]
        vision.config.return_dict, vision.config.output_hidden_states = False, True
        try:
            plain = vision(pixel_values=pixels)
            assert type(plain) is tuple and len(plain[2]) == vision_layers(model) + 1
            assert_same(plain, vision(pixel_values=pixels, return_dict=True).to_tuple())
        finally:
            vision.config.return_dict, vision.config.output_hidden_states = True, False
