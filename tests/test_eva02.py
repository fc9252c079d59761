"""EVA02-CLIP image tower: rotary tables vs eva_clip's rule, the payload tower vs the independent reference (fp32),
the released shapes, the converters (LLM2CLIP .pt / folder / HF layout, ProCLIP Eva_L14) and their refusals, and an
EVA LLM2CLIP folder through remote-code loading, the zero-shot pipeline and a stage-2 training step."""

import math

import pytest
import torch
from llm_fixtures import tiny_llm_folder
from safetensors.torch import save_file

from modeling_longclip import LLM2CLIPConfig, LLM2CLIPModel, ProCLIPModel
from modeling_longclip.common.clean_load import load_in_clean_process
from modeling_longclip.common.errors import CheckpointError, ConversionError
from modeling_longclip.configuration_eva02 import EVA02VisionConfig
from modeling_longclip.converters.cli import convert_llm2clip_main
from modeling_longclip.converters.eva02 import (
    EVA02Shape,
    eva02_to_hf,
    expected_eva02_shapes,
    infer_eva02_shape,
    reference_eva02_image_features,
)
from modeling_longclip.converters.llm2clip import convert_llm2clip, detect_vision_tower
from modeling_longclip.converters.proclip import convert_proclip
from modeling_longclip.converters.synthetic import (
    random_eva02_clip_state_dict,
    random_proclip_state_dict,
    write_eva02_release,
)
from modeling_longclip.modeling_eva02 import EVA02VisionModel, eva02_rotary_tables
from modeling_longclip.training.trainer import vision_layer_depth

RELEASES = {  # (width, layers, mlp, patch, image) of EVA02-CLIP-B-16, -L-14, -L-14-336 (eva_clip model_configs)
    "B/16-224": (768, 12, 2048, 16, 224),
    "L/14-224": (1024, 24, 2730, 14, 224),
    "L/14-336": (1024, 24, 2730, 14, 336),
}


def eva_clip_rope_table(image_size: int, patch: int, pretrained_grid: int = 16, dim: int = 32) -> torch.Tensor:
    """VisionRotaryEmbeddingFast(dim=32, pt_seq_len=16, ft_seq_len=image/patch) angles, transcribed position by
    position: t = i / ft * pt per axis, each frequency twice in a row, row half then column half."""
    grid = image_size // patch
    freqs = [1.0 / 10000 ** (2 * j / dim) for j in range(dim // 2)]
    rows = []
    for h in range(grid):
        for w in range(grid):
            th, tw = h / grid * pretrained_grid, w / grid * pretrained_grid
            rows.append([th * f for f in freqs for _ in (0, 1)] + [tw * f for f in freqs for _ in (0, 1)])
    return torch.tensor(rows, dtype=torch.float64)


@pytest.mark.parametrize("release", list(RELEASES))
def test_rotary_tables_and_released_shapes(release):
    width, layers, mlp, patch, image = RELEASES[release]
    shape = EVA02Shape(width, layers, width // 64, mlp, patch, image, 1280, separate_biases=False)
    config = EVA02VisionConfig(**shape.config())
    cos, sin = eva02_rotary_tables(config)
    angles = eva_clip_rope_table(image, patch)
    assert cos.shape == (1 + (image // patch) ** 2, 64) and cos.dtype == torch.float32
    torch.testing.assert_close(cos[1:].double(), angles.cos(), rtol=0, atol=2e-6)
    torch.testing.assert_close(sin[1:].double(), angles.sin(), rtol=0, atol=2e-6)
    assert torch.equal(cos[0], torch.ones(64)) and torch.equal(sin[0], torch.zeros(64))  # class token: no rotation
    # shapes read back from a (meta) checkpoint of the release, and the payload tower takes its mapped weights
    original = {k: torch.empty(s, device="meta") for k, s in expected_eva02_shapes(shape).items()}
    assert infer_eva02_shape(original) == shape
    with torch.device("meta"):
        tower = EVA02VisionModel(config)
    ours = {f"vision_model.{k}": tuple(v.shape) for k, v in tower.state_dict().items()}
    mapped = {k: tuple(v.shape) for k, v in eva02_to_hf(original, shape).items() if k.startswith("vision_model.")}
    assert ours == mapped
    assert config.num_attention_heads == {768: 12, 1024: 16}[width]


def test_rope_rule_without_interpolation_uses_integer_positions():
    config = EVA02VisionConfig(
        hidden_size=64, num_attention_heads=1, image_size=32, patch_size=8, rope_interpolate=False
    )
    cos, _ = eva02_rotary_tables(config)
    assert cos[1 + 4 * 1, 0].item() == pytest.approx(math.cos(1.0))  # row 1: angle 1 * freq 0 (= 1)


def _tower(seed=0, heads=2, separate=False):
    width = 64 * heads
    state_dict = {
        k: v.float()
        for k, v in random_eva02_clip_state_dict(
            width=width, mlp_width=2 * width + 3, separate_biases=separate, seed=seed
        ).items()
    }
    shape = infer_eva02_shape(state_dict)
    model = EVA02VisionModel(EVA02VisionConfig(**shape.config())).eval()
    weights = eva02_to_hf(state_dict, shape)
    model.load_state_dict({k[len("vision_model.") :]: v for k, v in weights.items() if k.startswith("vision_model.")})
    return model, state_dict, weights


@pytest.mark.parametrize("separate", [False, True])
def test_tower_matches_independent_reference_at_fp32(separate):
    model, state_dict, weights = _tower(seed=1, separate=separate)
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    reference = reference_eva02_image_features(state_dict, pixels)
    outputs = {}
    for implementation in ("sdpa", "eager"):
        model.config._attn_implementation = implementation
        with torch.no_grad():
            out = model(pixel_values=pixels)
        outputs[implementation] = out
        features = torch.nn.functional.linear(
            out.pooler_output, weights["visual_projection.weight"], weights["visual_projection.bias"]
        )
        assert (features - reference).abs().max().item() <= 1e-5 * max(1.0, reference.abs().max().item()), (
            implementation
        )
    with torch.no_grad():
        full = model(pixel_values=pixels, output_attentions=True, output_hidden_states=True)
        plain = model(pixel_values=pixels, return_dict=False)
    assert len(full.hidden_states) == 3 and len(full.attentions) == 2 and full.attentions[0].shape == (3, 2, 17, 17)
    torch.testing.assert_close(full.attentions[0].sum(-1), torch.ones(3, 2, 17))
    torch.testing.assert_close(full.hidden_states[-1], outputs["sdpa"].last_hidden_state)
    assert isinstance(plain, tuple) and torch.equal(plain[1], outputs["eager"].pooler_output)
    assert not any("rope" in k or "freqs" in k for k in model.state_dict())  # tables come from the config


def test_gradient_checkpointing_and_half_precision():
    model, _, _ = _tower(seed=2)
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    model.train()
    grads = []
    for checkpointing in (False, True):
        model.zero_grad()
        if checkpointing:
            model.gradient_checkpointing_enable()
        model(pixel_values=pixels).pooler_output.square().sum().backward()
        grads.append(model.encoder.layers[0].self_attn.qkv.weight.grad.clone())
    assert model.encoder.layers[0].gradient_checkpointing
    torch.testing.assert_close(grads[0], grads[1])
    mlp = model.encoder.layers[0].mlp  # w12's zero rows (up to a multiple of 64) get no gradient
    assert mlp.w12.weight.shape[0] == 576 and not mlp.w12.weight.grad[2 * mlp.hidden :].any()
    fresh = EVA02VisionModel(model.config).encoder.layers[1].mlp
    assert not fresh.w12.weight[2 * fresh.hidden :].any() and fresh.w12.weight[: 2 * fresh.hidden].std() > 0
    model.eval()
    with torch.no_grad():
        full = model(pixel_values=pixels).pooler_output
        half = model.to(torch.bfloat16)(pixel_values=pixels).pooler_output
    assert half.dtype == torch.bfloat16 and (half.float() - full).abs().max() < 0.1 * full.abs().max()


def test_tower_detection_and_layer_decay_names():
    assert detect_vision_tower(random_eva02_clip_state_dict()) == "eva02"
    assert detect_vision_tower(random_proclip_state_dict()) == "clip"
    assert detect_vision_tower({"visual.trunk.pos_embed": torch.zeros(1)}) == "siglip2"
    assert (
        detect_vision_tower({"vision_model.encoder.layers.0.self_attn.inner_attn_ln.weight": torch.zeros(1)})
        == "eva02"
    )
    assert vision_layer_depth("vision_model.encoder.layers.1.self_attn.qkv.weight", 2) == 1
    assert vision_layer_depth("vision_model.embeddings.class_embedding", 2) == 3
    assert vision_layer_depth("vision_model.post_layernorm.weight", 2) == 0


@pytest.fixture(scope="module")
def llm(tmp_path_factory):
    return tiny_llm_folder(tmp_path_factory.mktemp("llm") / "llm")


def _hf_evaclip_layout(state_dict: dict) -> dict:
    """The same weights as the HF EvaCLIP port names them (written out here, separately from the converter)."""
    out = {"logit_scale": state_dict["logit_scale"]}
    block = {
        "norm1": "layer_norm1",
        "norm2": "layer_norm2",
        "attn.q_proj": "self_attn.q_proj",
        "attn.k_proj": "self_attn.k_proj",
        "attn.v_proj": "self_attn.v_proj",
        "attn.inner_attn_ln": "self_attn.inner_attn_ln",
        "attn.proj": "self_attn.out_proj",
        "mlp.w1": "mlp.fc1",
        "mlp.w2": "mlp.fc2",
        "mlp.ffn_ln": "mlp.ffn_ln",
        "mlp.w3": "mlp.fc3",
    }
    for key, value in state_dict.items():
        if key.startswith("text.text_adaptor."):
            out["text_adapter.adaptor." + key[len("text.text_adaptor.") :]] = value
        elif key.startswith("visual.blocks.") and "rope" not in key:
            index, rest = key[len("visual.blocks.") :].split(".", 1)
            module, kind = rest.rsplit(".", 1)
            out[f"vision_model.encoder.layers.{index}.{block[module]}.{kind}"] = value
    out["vision_model.encoder.layers.0.self_attn.k_proj.bias"] = torch.randn(64).half()  # softmax ignores it
    out["vision_model.embeddings.class_embedding"] = state_dict["visual.cls_token"].reshape(-1)
    out["vision_model.embeddings.position_embedding.weight"] = state_dict["visual.pos_embed"][0]
    for kind in ("weight", "bias"):
        out[f"vision_model.embeddings.patch_embedding.{kind}"] = state_dict[f"visual.patch_embed.proj.{kind}"]
        out[f"vision_model.post_layernorm.{kind}"] = state_dict[f"visual.norm.{kind}"]
        out[f"visual_projection.{kind}"] = state_dict[f"visual.head.{kind}"]
    return out


def test_llm2clip_eva_release_in_every_packaging(tmp_path, llm, monkeypatch):
    state_dict = write_eva02_release(tmp_path / "LLM2CLIP-EVA02-L-14-336.pt", "module", seed=3)
    parity = convert_llm2clip(tmp_path / "LLM2CLIP-EVA02-L-14-336.pt", llm, tmp_path / "from-pt")
    assert parity.image_max_abs_diff <= 1e-5 and parity.text_max_abs_diff <= 1e-5
    repo = tmp_path / "repo"  # the downloaded repo: vision-only HF weights beside the .pt that carries the adapter
    repo.mkdir()
    vision_only = {k: v for k, v in _hf_evaclip_layout(state_dict).items() if not k.startswith("text_adapter.")}
    save_file(vision_only, repo / "model.safetensors")
    torch.save(state_dict, repo / "LLM2CLIP-EVA02-L-14-336.pt")
    convert_llm2clip(repo, llm, tmp_path / "from-repo")
    hf = tmp_path / "hf"
    hf.mkdir()
    save_file(_hf_evaclip_layout(state_dict), hf / "model.safetensors")
    convert_llm2clip(hf, llm, tmp_path / "from-hf")
    pixels = torch.randn(2, 3, 32, 32)
    features = []
    for name in ("from-pt", "from-repo", "from-hf"):
        model = LLM2CLIPModel.from_pretrained(tmp_path / name).eval()
        assert model.config.vision_tower == "eva02" and model.config.visual_projection_bias
        with torch.no_grad():
            features.append(model.get_image_features(pixel_values=pixels).pooler_output)
    torch.testing.assert_close(features[0], reference_eva02_image_features(state_dict, pixels), rtol=0, atol=1e-5)
    torch.testing.assert_close(features[1], features[0], rtol=0, atol=0)
    torch.testing.assert_close(features[2], features[0], rtol=0, atol=1e-5)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    result = load_in_clean_process(tmp_path / "from-pt", ["a red car", "two dogs on a beach"])
    assert result["model_class"] == "LLM2CLIPModel" and result["leaked_modules"] == []
    assert len(result["encode_image"][0]) == 32 and abs(sum(s["score"] for s in result["zero_shot_scores"]) - 1) < 1e-5
    image = torch.tensor(result["image_features"])
    with torch.no_grad():
        expected = reference_eva02_image_features(state_dict, torch.tensor(result["pixel_values"]))
    torch.testing.assert_close(image, expected, rtol=0, atol=1e-5)


def test_llm2clip_takes_an_openai_style_custom_clip_file(tmp_path, llm):
    """ProCLIP's retrained LLM2CLIP baselines (llm2clip/3m/L14.pt): OpenAI-style visual.* in the same CustomCLIP file."""
    state_dict = random_proclip_state_dict(blocks=4, expansion=2, seed=6)
    torch.save({"state_dict": state_dict}, tmp_path / "L14.pt")
    parity = convert_llm2clip(tmp_path / "L14.pt", llm, tmp_path / "out")
    assert parity.image_max_abs_diff <= 1e-5
    model = LLM2CLIPModel.from_pretrained(tmp_path / "out")
    assert model.config.vision_tower == "clip" and model.visual_projection.bias is None


def test_proclip_eva_l14_with_its_training_wrapper(tmp_path, llm):
    write_eva02_release(tmp_path / "Eva_L14.pt", "proclip", blocks=1, expansion=8, separate_biases=True, seed=4)
    parity = convert_proclip(tmp_path / "Eva_L14.pt", llm, tmp_path / "out")
    assert parity.image_max_abs_diff <= 1e-5
    model = ProCLIPModel.from_pretrained(tmp_path / "out")
    assert model.config.vision_tower == "eva02" and (model.config.adapter_blocks, model.config.adapter_expansion) == (
        1,
        8,
    )


def test_refusals_name_the_problem_and_write_nothing(tmp_path, llm, capsys):
    state_dict = random_eva02_clip_state_dict()
    torch.save(state_dict, tmp_path / "good.pt")
    data = (tmp_path / "good.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    assert (
        convert_llm2clip_main(
            ["--clip", str(tmp_path / "truncated.pt"), "--llm", str(llm), "--output", str(tmp_path / "out")]
        )
        == 2
    )
    assert "not a readable PyTorch checkpoint" in capsys.readouterr().err
    cases = {
        "missing": (
            {k: v for k, v in state_dict.items() if k != "visual.blocks.1.mlp.w3.bias"},
            "missing keys .*blocks.1.mlp.w3.bias",
        ),
        "rope": (
            {**state_dict, "visual.rope.freqs_cos": state_dict["visual.rope.freqs_cos"] * 0.5},
            "differs from the rotary table",
        ),
        "head": (
            {
                **state_dict,
                "visual.head.weight": torch.zeros(16, 64).half(),
                "visual.head.bias": torch.zeros(16).half(),
            },
            "adapter maps to 32 dims but the image tower projects to 16",
        ),
        "shape": (
            {**state_dict, "visual.blocks.0.attn.k_proj.weight": torch.zeros(64, 32).half()},
            "k_proj.weight` has shape",
        ),
    }
    for name, (broken, message) in cases.items():
        torch.save(broken, tmp_path / f"{name}.pt")
        with pytest.raises(CheckpointError, match=message):
            convert_llm2clip(tmp_path / f"{name}.pt", llm, tmp_path / "out")
    vision_only = tmp_path / "vision-only"
    vision_only.mkdir()
    save_file(
        {k: v for k, v in _hf_evaclip_layout(state_dict).items() if not k.startswith("text_adapter.")},
        vision_only / "model.safetensors",
    )
    with pytest.raises(CheckpointError, match="hold the vision tower only"):
        convert_llm2clip(vision_only, llm, tmp_path / "out")
    torch.save(
        {"visual.trunk.pos_embed": torch.zeros(1, 5, 8), "logit_scale": torch.tensor(1.0)}, tmp_path / "siglip.pt"
    )
    with pytest.raises(ConversionError, match="a siglip2 image tower"):
        convert_llm2clip(tmp_path / "siglip.pt", llm, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


@pytest.mark.parametrize("family", ["llm2clip", "proclip"])
def test_eva_stage2_training_step(tmp_path, family):
    """LLM2CLIP stage 2 (layer-wise decay, gradient checkpointing) and ProCLIP stage 2 (EMA image teacher) on an EVA
    tower; then longclip-eval's retrieval on the result."""
    from conftest import tiny_image_processor
    from llm_fixtures import tiny_llama3_tokenizer, tiny_llama_config
    from test_longclip_training import write_photo_dataset

    from modeling_longclip import LLM2CLIPProcessor, ProCLIPConfig
    from modeling_longclip.training.dual_tower_train import llm2clip_main, proclip_main

    tokenizer = tiny_llama3_tokenizer()
    config_class, model_class, main = {
        "llm2clip": (LLM2CLIPConfig, LLM2CLIPModel, llm2clip_main),
        "proclip": (ProCLIPConfig, ProCLIPModel, proclip_main),
    }[family]
    config = config_class(
        vision_tower="eva02",
        vision_config=dict(
            hidden_size=64,
            intermediate_size=170,
            num_hidden_layers=2,
            num_attention_heads=1,
            image_size=32,
            patch_size=8,
        ),
        text_config=tiny_llama_config(len(tokenizer)).to_dict(),
        projection_dim=32,
        visual_projection_bias=True,
        adapter_blocks=1,
        adapter_expansion=2,
    )
    torch.manual_seed(0)
    model_class(config).save_pretrained(tmp_path / "eva")
    LLM2CLIPProcessor(tiny_image_processor(), tokenizer).save_pretrained(tmp_path / "eva")
    data = write_photo_dataset(tmp_path / "data")
    out = tmp_path / "s2"
    argv = [
        "--stage",
        "2",
        "--model_name_or_path",
        str(tmp_path / "eva"),
        "--train_file",
        str(data),
        "--image_root",
        str(data.parent / "images"),
        "--output_dir",
        str(out),
        "--per_device_train_batch_size",
        "4",
        "--max_steps",
        "2",
        "--learning_rate",
        "1e-3",
        "--vision_layer_decay",
        "0.85",
        "--report_to",
        "none",
        "--use_cpu",
        "true",
        "--save_strategy",
        "no",
        "--gradient_checkpointing",
        "true",
    ]
    if family == "proclip":
        argv = [a for a in argv if a not in ("--vision_layer_decay", "0.85")] + ["--ema_decay", "0.5"]
    assert main(argv) == 0
    before, after = model_class.from_pretrained(tmp_path / "eva"), model_class.from_pretrained(out)
    from modeling_longclip.evaluation import RetrievalSet, evaluate_retrieval

    photos = sorted((data.parent / "images").iterdir())[:3]
    dataset = RetrievalSet("tiny", "default", photos, ["a photo", "another photo", "a third photo"], [0, 1, 2], "test")
    result = evaluate_retrieval(after.eval(), LLM2CLIPProcessor.from_pretrained(out), dataset, progress=False)
    assert result["counts"]["texts"] == 3 and result["image_to_text"]["R@10"] == 100.0
    assert after.config.vision_tower == "eva02"
    moved = (
        after.vision_model.encoder.layers[0].self_attn.qkv.weight
        - before.vision_model.encoder.layers[0].self_attn.qkv.weight
    )
    assert moved.abs().max() > 0


@pytest.mark.parametrize("image_size", [32, 48])
def test_matches_timm_eva02(image_size):
    """timm's Eva (EVA02-CLIP settings: separate q/k/v, SwiGLU with norm, inner attention norm, rope with
    ref_feat_shape 16) as a third, outside reference; needs timm (which needs torchvision: the GPU machine has both)."""
    eva = pytest.importorskip("timm.models.eva")
    torch.manual_seed(7)
    timm_model = eva.Eva(
        img_size=image_size,
        patch_size=8,
        embed_dim=128,
        depth=2,
        num_heads=2,
        qkv_fused=False,
        mlp_ratio=4 * 2 / 3,
        swiglu_mlp=True,
        scale_mlp=True,
        scale_attn_inner=True,
        use_rot_pos_emb=True,
        ref_feat_shape=(16, 16),
        global_pool="token",
        num_classes=32,
    ).eval()
    with torch.no_grad():
        for param in timm_model.parameters():
            param.add_(0.05 * torch.randn_like(param))
    renames = (
        ("attn.norm.", "attn.inner_attn_ln."),
        ("mlp.fc1_g.", "mlp.w1."),
        ("mlp.fc1_x.", "mlp.w2."),
        ("mlp.norm.", "mlp.ffn_ln."),
        ("mlp.fc2.", "mlp.w3."),
    )
    original = {}
    for key, value in timm_model.state_dict().items():
        if "rope" in key:
            continue
        for old, new in renames:
            key = key.replace(old, new)
        original[f"visual.{key}"] = value
    shape = infer_eva02_shape(original)
    ours = EVA02VisionModel(EVA02VisionConfig(**shape.config())).eval()
    weights = eva02_to_hf(original, shape)
    ours.load_state_dict({k[len("vision_model.") :]: v for k, v in weights.items() if k.startswith("vision_model.")})
    pixels = torch.randn(2, 3, image_size, image_size)
    with torch.no_grad():
        expected = timm_model(pixels)
        pooled = ours(pixel_values=pixels).pooler_output
    features = torch.nn.functional.linear(
        pooled, weights["visual_projection.weight"], weights["visual_projection.bias"]
    )
    torch.testing.assert_close(features, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(reference_eva02_image_features(original, pixels), expected, rtol=0, atol=1e-5)


def test_config_round_trip_and_attention_choice(tmp_path):
    """A B/16 tower config (width 768 = CLIP's default, EVA's is 1024) survives save / load; attn_implementation given
    to the LLM2CLIP model reaches the EVA tower."""
    from llm_fixtures import tiny_llama_config

    b16 = dict(
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        patch_size=16,
        intermediate_size=2048,
        image_size=224,
    )
    config = LLM2CLIPConfig(vision_tower="eva02", vision_config=b16, text_config=tiny_llama_config(100).to_dict())
    config.save_pretrained(tmp_path / "b16")
    loaded = LLM2CLIPConfig.from_pretrained(tmp_path / "b16")
    assert isinstance(loaded.vision_config, EVA02VisionConfig)
    assert {k: getattr(loaded.vision_config, k) for k in b16} == b16
    tiny = dict(
        hidden_size=64, num_hidden_layers=1, num_attention_heads=1, patch_size=8, intermediate_size=170, image_size=32
    )
    LLM2CLIPModel(
        LLM2CLIPConfig(
            vision_tower="eva02",
            vision_config=tiny,
            text_config=tiny_llama_config(100).to_dict(),
            projection_dim=32,
            visual_projection_bias=True,
        )
    ).save_pretrained(tmp_path / "tiny")
    eager = LLM2CLIPModel.from_pretrained(tmp_path / "tiny", attn_implementation="eager").eval()
    default = LLM2CLIPModel.from_pretrained(tmp_path / "tiny").eval()
    assert (eager.vision_model.config._attn_implementation, default.vision_model.config._attn_implementation) == (
        "eager",
        "sdpa",
    )
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(
            eager.get_image_features(pixel_values=pixels).pooler_output,
            default.get_image_features(pixel_values=pixels).pooler_output,
            rtol=0,
            atol=1e-5,
        )
