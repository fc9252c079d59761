"""LLM2CLIP: the bidirectional text tower, conversion, loading (llm2vec's encoding rules: test_llm2vec_semantics.py)."""

import json
import logging

import pytest
import torch
import torch.nn.functional as F
from llm_fixtures import (
    minilm_folder,
    tiny_image_processor,
    tiny_llama3_tokenizer,
    tiny_llama_config,
    tiny_llm2clip_config,
    tiny_llm_folder,
)
from safetensors.torch import save_file
from transformers import AutoModel, AutoTokenizer

from modeling_longclip import LLM2CLIPModel, LLM2CLIPProcessor
from modeling_longclip.common.clean_load import load_in_clean_process
from modeling_longclip.common.errors import CheckpointError, ConversionError
from modeling_longclip.converters.llm2clip import convert_llm2clip
from modeling_longclip.converters.reference_llm import reference_bidirectional_llama


@pytest.fixture(scope="module")
def llama_tokenizer():
    return tiny_llama3_tokenizer()


@pytest.fixture
def tiny_llm2clip(llama_tokenizer):
    torch.manual_seed(0)
    model = LLM2CLIPModel(tiny_llm2clip_config(tiny_llama_config(len(llama_tokenizer)))).eval()
    return model, LLM2CLIPProcessor(tiny_image_processor(), llama_tokenizer)


def test_text_tower_is_bidirectional_and_padding_invariant(tiny_llm2clip):
    model, processor = tiny_llm2clip
    inputs = processor(text=["a red car parked next to a tree"])
    ids = inputs["input_ids"].clone()
    with torch.no_grad():
        hidden = model.text_model(input_ids=ids, attention_mask=inputs["attention_mask"]).last_hidden_state
        changed = ids.clone()
        changed[0, -2] = (changed[0, -2] + 7) % model.config.text_config.vocab_size
        hidden_changed = model.text_model(input_ids=changed, attention_mask=inputs["attention_mask"]).last_hidden_state
    assert (hidden[0, 1] - hidden_changed[0, 1]).abs().max() > 1e-4  # a late token changes an early position
    alone = model.encode_text(["a red car"], processor=processor)
    batched = model.encode_text(
        ["a red car", "two dogs run across the beach while a man throws a ball"], processor=processor
    )
    torch.testing.assert_close(alone[0], batched[0], rtol=1e-4, atol=1e-5)


def test_features_match_the_independent_reference(tiny_llm2clip):
    model, processor = tiny_llm2clip
    inputs = processor(text=["a red car", "two dogs on a beach under a bright blue sky"])
    reference = reference_bidirectional_llama(
        model.text_model.state_dict(), model.config.text_config, inputs["input_ids"], inputs["attention_mask"]
    )
    with torch.no_grad():
        ours = model.text_model(
            input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]
        ).last_hidden_state
    mask = inputs["attention_mask"].bool()
    torch.testing.assert_close(ours[mask], reference[mask], rtol=1e-4, atol=1e-5)


def test_precomputed_text_embeds_and_forward(tiny_llm2clip):
    model, processor = tiny_llm2clip
    inputs = processor(text=["a red car", "a blue boat"], images=[torch.rand(3, 40, 40)] * 2, do_rescale=False)
    with torch.no_grad():
        pooled = model.encode_llm(inputs["input_ids"], inputs["attention_mask"], inputs["pooling_mask"])
        from_tokens = model.get_text_features(
            input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], pooling_mask=inputs["pooling_mask"]
        ).pooler_output
        from_cache = model.get_text_features(text_embeds=pooled).pooler_output
        out = model(**inputs, return_loss=True)
    torch.testing.assert_close(from_tokens, from_cache)
    assert out.logits_per_image.shape == (2, 2) and out.loss.item() > 0
    expected = F.normalize(from_tokens, dim=-1) @ F.normalize(out.image_embeds, dim=-1).t() * model.logit_scale.exp()
    torch.testing.assert_close(out.logits_per_text, expected, rtol=1e-5, atol=1e-5)


def test_minilm_encoder_as_text_tower():
    folder = minilm_folder()
    encoder = AutoModel.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    config = tiny_llm2clip_config(encoder.config, projection_dim=16)
    model = LLM2CLIPModel(config).eval()
    model.text_model.load_state_dict(encoder.state_dict())
    processor = LLM2CLIPProcessor(
        tiny_image_processor(), tokenizer, text_template="{caption}", pooling_scope="all", padding_side="right"
    )
    texts = ["A man is eating food.", "A cheetah is running behind its prey across a field."]
    inputs = processor(text=texts)
    with torch.no_grad():
        pooled = model.encode_llm(inputs["input_ids"], inputs["attention_mask"], inputs["pooling_mask"])
        hidden = encoder(**tokenizer(texts, padding=True, return_tensors="pt")).last_hidden_state
    mask = tokenizer(texts, padding=True, return_tensors="pt")["attention_mask"].unsqueeze(-1).float()
    torch.testing.assert_close(
        pooled, (hidden * mask).sum(1) / mask.sum(1), rtol=1e-5, atol=1e-5
    )  # sentence-transformers pooling
    similar = F.cosine_similarity(
        pooled[:1], model.encode_llm(**{k: v for k, v in processor(text=["Someone is eating a meal."]).items()})
    )
    unrelated = F.cosine_similarity(
        pooled[1:], model.encode_llm(**{k: v for k, v in processor(text=["Someone is eating a meal."]).items()})
    )
    assert similar > unrelated  # a real embedder: paraphrases are closer


def write_released_clip_part(folder, model: LLM2CLIPModel):
    """The LLM2CLIP CLIP repo layout: config.json with model_type "clip" and no text tower in the weights."""
    folder.mkdir(parents=True)
    weights = {k: v.contiguous() for k, v in model.state_dict().items() if not k.startswith("text_model.")}
    save_file(weights, folder / "model.safetensors")
    config = {
        "model_type": "clip",
        "projection_dim": model.config.projection_dim,
        "auto_map": {"AutoModel": "modeling_llm2clip.LLM2CLIPModel"},
        "vision_config": model.config.vision_config.to_dict(),
    }
    (folder / "config.json").write_text(json.dumps(config))
    return weights


@pytest.fixture
def released_llm2clip(tmp_path, llama_tokenizer):
    llm = tiny_llm_folder(tmp_path / "llm")
    torch.manual_seed(1)
    source = LLM2CLIPModel(tiny_llm2clip_config(tiny_llama_config(len(llama_tokenizer)))).eval()
    with torch.no_grad():
        for param in source.text_adapter.parameters():
            param.add_(0.1 * torch.randn_like(param))
    write_released_clip_part(tmp_path / "clip", source)
    return tmp_path / "clip", llm


def test_converter_parity_and_self_contained_folder(tmp_path, released_llm2clip, monkeypatch):
    clip, llm = released_llm2clip
    parity = convert_llm2clip(clip, llm, tmp_path / "out")
    assert parity.text_max_abs_diff <= 1e-5 and parity.image_max_abs_diff <= 1e-5
    names = {p.name for p in (tmp_path / "out").iterdir()}
    assert {
        "modeling_llm2clip.py",
        "processing_llm2clip.py",
        "configuration_llm2clip.py",
        "tokenizer.json",
        "README.md",
    } <= names
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    texts = ["a red car parked next to a green tree", "two dogs"]
    result = load_in_clean_process(tmp_path / "out", texts)
    assert result["model_class"] == "LLM2CLIPModel" and result["processor_class"] == "LLM2CLIPProcessor"
    assert result["leaked_modules"] == []
    model = LLM2CLIPModel.from_pretrained(tmp_path / "out")
    processor = LLM2CLIPProcessor.from_pretrained(tmp_path / "out")
    torch.testing.assert_close(
        torch.tensor(result["encode_text"]), model.encode_text(texts, processor=processor), rtol=0, atol=1e-5
    )
    assert abs(sum(s["score"] for s in result["zero_shot_scores"]) - 1) < 1e-5


def test_external_llm_keeps_weights_out_and_loads_in_one_call(tmp_path, released_llm2clip, monkeypatch):
    clip, llm = released_llm2clip
    convert_llm2clip(clip, llm, tmp_path / "out", external_llm=True)
    from safetensors import safe_open

    with safe_open(tmp_path / "out" / "model.safetensors", "pt") as weights:
        assert not any(k.startswith("text_model.") for k in weights.keys())
    assert json.loads((tmp_path / "out" / "config.json").read_text())["text_model_name_or_path"] == str(llm)
    records = []
    listener = logging.Handler()
    listener.emit = records.append
    logging.getLogger("transformers").addHandler(listener)  # its own handlers bypass pytest's capture
    try:
        external = LLM2CLIPModel.from_pretrained(tmp_path / "out")
    finally:
        logging.getLogger("transformers").removeHandler(listener)
    assert not [r for r in records if "MISSING" in r.getMessage()]  # text weights live elsewhere: not "missing"
    convert_llm2clip(clip, llm, tmp_path / "inside")
    inside = LLM2CLIPModel.from_pretrained(tmp_path / "inside")
    for (name, a), b in zip(external.text_model.state_dict().items(), inside.text_model.state_dict().values()):
        assert torch.equal(a, b), name
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    texts = ["a red car", "two dogs on a beach"]
    result = load_in_clean_process(tmp_path / "out", texts)  # remote code, package blocked
    expected = inside.encode_text(texts, processor=LLM2CLIPProcessor.from_pretrained(tmp_path / "inside"))
    torch.testing.assert_close(torch.tensor(result["encode_text"]), expected, rtol=0, atol=1e-5)


def test_converter_refusals(tmp_path, released_llm2clip, llama_tokenizer):
    clip, llm = released_llm2clip
    with pytest.raises(ConversionError, match="no such folder"):
        convert_llm2clip(tmp_path / "nope", llm, tmp_path / "out")
    with pytest.raises(ConversionError, match="downloading it from the Hub failed"):
        convert_llm2clip("someone/not-a-local-folder", llm, tmp_path / "out")
    wide = tmp_path / "wide-llm"
    from transformers import LlamaModel

    config = tiny_llama_config(len(llama_tokenizer))
    config.hidden_size, config.head_dim = 96, 24
    LlamaModel(config).save_pretrained(wide)
    llama_tokenizer.save_pretrained(wide)
    with pytest.raises(CheckpointError, match="expects 64-d text embeddings"):
        convert_llm2clip(clip, wide, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("model_type", ["qwen2", "mistral", "qwen3"])
def test_other_decoders_run_bidirectionally(model_type):
    from transformers import AutoConfig

    text_config = AutoConfig.for_model(
        model_type,
        vocab_size=300,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=256,
    )
    torch.manual_seed(0)
    model = LLM2CLIPModel(tiny_llm2clip_config(text_config)).eval()
    ids = torch.randint(5, 300, (1, 12))
    changed = ids.clone()
    changed[0, -1] = (changed[0, -1] + 1) % 300
    with torch.no_grad():
        first = model.text_model(input_ids=ids).last_hidden_state[0, 0]
        first_changed = model.text_model(input_ids=changed).last_hidden_state[0, 0]
    assert (first - first_changed).abs().max() > 1e-5  # the first token sees the last one


def test_last_token_pooling_with_left_and_right_padding():
    from modeling_longclip.modeling_llm2clip import pool_hidden_states

    hidden = torch.arange(2 * 4 * 3, dtype=torch.float32).view(2, 4, 3)
    left = torch.tensor([[0, 1, 1, 1], [0, 0, 1, 1]])
    right = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    torch.testing.assert_close(pool_hidden_states(hidden, left, "last"), hidden[:, 3])
    torch.testing.assert_close(pool_hidden_states(hidden, right, "last"), torch.stack([hidden[0, 2], hidden[1, 1]]))
    torch.testing.assert_close(
        pool_hidden_states(hidden, right, "mean"), torch.stack([hidden[0, :3].mean(0), hidden[1, :2].mean(0)])
    )


def test_evaluation_runs_through_the_shared_feature_api(tiny_llm2clip, tmp_path):
    from PIL import Image

    from modeling_longclip.evaluation import RetrievalSet, evaluate_retrieval

    model, processor = tiny_llm2clip
    paths = []
    for colour in ["red", "green", "blue"]:
        paths.append(tmp_path / f"{colour}.png")
        Image.new("RGB", (40, 40), colour).save(paths[-1])
    dataset = RetrievalSet(
        "tiny", "default", paths, ["a red square", "a green square", "a blue square", "red"], [0, 1, 2, 0], "test"
    )
    result = evaluate_retrieval(model, processor, dataset, progress=False)
    assert set(result["image_to_text"]) == {"R@1", "R@5", "R@10"}
    assert result["counts"]["texts"] == 4 and result["image_to_text"]["R@10"] == 100.0
