"""248-token prompts in diffusers: Stable Diffusion 1.x and SDXL pipelines (real diffusers, tiny random parts, CPU).

Stock text encoders (77 positions) are stretched with `text_encoder_stretch` (the SDXL recipe of the Long-CLIP
authors for OpenCLIP bigG) and loaded into the pipelines as they are; prompts that differ only past token 77 must
give different prompt embeddings, and the SDXL pipeline must run end to end.
"""

from __future__ import annotations

import json

import pytest
import torch

diffusers = pytest.importorskip("diffusers")
from diffusers import (  # noqa: E402
    AutoencoderKL,
    DDIMScheduler,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer  # noqa: E402

from modeling_longclip.converters.clip_preprocessing import build_clip_tokenizer  # noqa: E402
from modeling_longclip.converters.longclip import convert_longclip  # noqa: E402
from modeling_longclip.converters.synthetic import random_openai_clip_state_dict  # noqa: E402
from modeling_longclip.export.text_encoder_stretch import main as stretch_main  # noqa: E402
from modeling_longclip.export.text_encoder_stretch import position_table_key, stretch_text_encoder  # noqa: E402
from modeling_longclip.modeling_longclip import stretch_position_embeddings  # noqa: E402

HEAD = "A quiet harbour at dawn with small boats resting on calm water. " * 6  # > 77 tokens on its own
PROMPTS = [HEAD + "Far away a red lighthouse stands on the cliff.", HEAD + "Far away a green windmill turns slowly."]


def text_config(width: int, **extra) -> CLIPTextConfig:
    return CLIPTextConfig(
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=77,
        vocab_size=49408,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=1,
        **extra,
    )


def tiny_vae() -> AutoencoderKL:
    return AutoencoderKL(
        block_out_channels=[8, 16],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=32,
    )


def tiny_unet(cross_attention_dim: int, **extra) -> UNet2DConditionModel:
    return UNet2DConditionModel(
        block_out_channels=(8, 16),
        layers_per_block=1,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=2,
        norm_num_groups=4,
        **extra,
    )


def sd_pipeline(folder, width: int = 64):
    torch.manual_seed(0)
    pipe = StableDiffusionPipeline(
        vae=tiny_vae(),
        text_encoder=CLIPTextModel(text_config(width)),
        tokenizer=build_clip_tokenizer(77),
        unet=tiny_unet(width),
        scheduler=DDIMScheduler(clip_sample=False, steps_offset=1),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder)
    return folder


def sdxl_pipeline(folder):
    """SDXL's layout: text_encoder (CLIP-L-like) + text_encoder_2 (bigG-like, with projection, pad token "!")."""
    torch.manual_seed(0)
    tokenizer_2 = build_clip_tokenizer(77)
    tokenizer_2.pad_token = "!"  # as in stabilityai/stable-diffusion-xl-base-1.0/tokenizer_2
    pipe = StableDiffusionXLPipeline(
        vae=tiny_vae(),
        text_encoder=CLIPTextModel(text_config(16)),
        text_encoder_2=CLIPTextModelWithProjection(text_config(32, projection_dim=16)),
        tokenizer=build_clip_tokenizer(77),
        tokenizer_2=tokenizer_2,
        unet=tiny_unet(
            48,
            addition_embed_type="text_time",
            addition_time_embed_dim=8,
            projection_class_embeddings_input_dim=16 + 6 * 8,
            use_linear_projection=True,
        ),
        scheduler=EulerDiscreteScheduler(beta_schedule="scaled_linear", timestep_spacing="leading", steps_offset=1),
    )
    pipe.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory):
    return sd_pipeline(tmp_path_factory.mktemp("diffusers") / "sd")


def embeds(pipe, prompts):
    output = pipe.encode_prompt(prompts, device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=False)
    return output[0]


def test_stretch_writes_a_folder_diffusers_loads(tmp_path, sd_folder, capsys):
    pipeline = sd_folder
    out = tmp_path / "sd-248"
    code = stretch_main(
        [str(pipeline / "text_encoder"), str(out / "text_encoder"), "--tokenizer", str(pipeline / "tokenizer")]
    )
    assert code == 0, capsys.readouterr().err
    assert "77 -> 248 positions (keep 20, ratio 4)" in capsys.readouterr().out
    assert json.loads((out / "text_encoder" / "config.json").read_text())["max_position_embeddings"] == 248
    assert json.loads((out / "tokenizer" / "tokenizer_config.json").read_text())["model_max_length"] == 248
    source = CLIPTextModel.from_pretrained(pipeline / "text_encoder")
    stretched = CLIPTextModel.from_pretrained(out / "text_encoder")
    key = position_table_key(source)
    expected = stretch_position_embeddings(source.state_dict()[key])
    assert torch.equal(stretched.state_dict()[key], expected)
    other = {k: v for k, v in source.state_dict().items() if "position_embedding" not in k}
    assert all(torch.equal(stretched.state_dict()[k], v) for k, v in other.items())

    short = StableDiffusionPipeline.from_pretrained(pipeline)  # 77 tokens: the prompts look the same
    a, b = embeds(short, PROMPTS)
    assert a.shape == (77, 64) and torch.equal(a, b)
    long = StableDiffusionPipeline.from_pretrained(
        pipeline, text_encoder=stretched, tokenizer=CLIPTokenizer.from_pretrained(out / "tokenizer")
    )
    a, b = embeds(long, PROMPTS)
    assert a.shape == (248, 64) and not torch.allclose(a, b)
    assert torch.allclose(a[:20], embeds(short, PROMPTS[:1])[0][:20], atol=1e-6)  # kept rows: same states

    original = stretch_text_encoder(
        pipeline / "text_encoder", tmp_path / "orig" / "text_encoder", tokenizer=pipeline / "tokenizer", pad_token="!"
    )
    padded = CLIPTokenizer.from_pretrained(original.tokenizer_output)(["a cat"], padding="max_length")["input_ids"][0]
    assert original.tokenizer_output == tmp_path / "orig" / "tokenizer"
    assert padded[4:] == [0] * 244  # id 0, as the original

    assert stretch_main([str(pipeline / "text_encoder"), str(out / "text_encoder")]) == 2  # exists: refused
    assert "already exists" in capsys.readouterr().err
    assert stretch_main([str(pipeline / "unet"), str(tmp_path / "x")]) == 2
    assert "no stock CLIP text encoder" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_sd1_with_the_converters_clip_format(tmp_path, sd_folder):
    """`convert_longclip.py --format clip` output is a 248-position CLIPModel folder: its text tower is SD's encoder."""
    checkpoint = tmp_path / "longclip.pt"
    torch.save(random_openai_clip_state_dict(seed=1), checkpoint)
    convert_longclip(checkpoint, tmp_path / "longclip-clip", output_format="clip")
    pipe = StableDiffusionPipeline.from_pretrained(
        sd_folder,
        text_encoder=CLIPTextModel.from_pretrained(tmp_path / "longclip-clip"),
        tokenizer=CLIPTokenizer.from_pretrained(tmp_path / "longclip-clip"),
    )
    a, b = embeds(pipe, PROMPTS)
    assert a.shape == (248, 64) and not torch.allclose(a, b)


def test_sdxl_with_both_encoders_stretched(tmp_path):
    pipeline = sdxl_pipeline(tmp_path / "sdxl")
    out = tmp_path / "sdxl-248"
    reports = [
        stretch_text_encoder(pipeline / "text_encoder", out / "text_encoder", tokenizer=pipeline / "tokenizer"),
        stretch_text_encoder(pipeline / "text_encoder_2", out / "text_encoder_2", tokenizer=pipeline / "tokenizer_2"),
    ]
    assert [r.model_class for r in reports] == ["CLIPTextModel", "CLIPTextModelWithProjection"]
    assert [r.positions for r in reports] == [248, 248]
    tokenizer_2 = CLIPTokenizer.from_pretrained(out / "tokenizer_2")
    assert tokenizer_2.pad_token == "!" and tokenizer_2.pad_token_id == 0  # the stock pad: id 0, as the original

    pipe = StableDiffusionXLPipeline.from_pretrained(
        pipeline,
        text_encoder=CLIPTextModel.from_pretrained(out / "text_encoder"),
        tokenizer=CLIPTokenizer.from_pretrained(out / "tokenizer"),
        text_encoder_2=CLIPTextModelWithProjection.from_pretrained(out / "text_encoder_2"),
        tokenizer_2=tokenizer_2,
    )
    stock_2 = {
        "text_encoder_2": CLIPTextModelWithProjection.from_pretrained(pipeline / "text_encoder_2"),
        "tokenizer_2": CLIPTokenizer.from_pretrained(pipeline / "tokenizer_2"),
    }
    half = StableDiffusionXLPipeline(**{**pipe.components, **stock_2})
    with pytest.raises(RuntimeError, match="248|77"):  # a stock 77-position text_encoder_2 cannot be concatenated
        embeds(half, PROMPTS)

    prompt_embeds, _, pooled, _ = pipe.encode_prompt(PROMPTS, device="cpu", do_classifier_free_guidance=False)
    assert prompt_embeds.shape == (2, 248, 48) and not torch.allclose(prompt_embeds[0], prompt_embeds[1])
    assert pooled.shape == (2, 16) and not torch.allclose(pooled[0], pooled[1])  # bigG's pooled text sees it too
    images = pipe(
        PROMPTS[0],
        num_inference_steps=1,
        height=32,
        width=32,
        guidance_scale=1.0,
        output_type="np",
        generator=torch.Generator().manual_seed(0),
    ).images
    assert images.shape == (1, 32, 32, 3) and torch.isfinite(torch.from_numpy(images)).all()
