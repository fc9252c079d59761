"""Knowledge-preserving stretching (REFERENCE 1.2), checked row by row against the written formulas."""

import pytest
import torch
import torch.nn.functional as F
from transformers import CLIPConfig, CLIPModel

from modeling_longclip import LongCLIPModel, stretch_position_embeddings
from modeling_longclip.modeling_longclip import POSITION_EMBEDDING_KEY


def test_rows_follow_the_published_formulas():
    torch.manual_seed(0)
    p = torch.randn(77, 16)
    q = stretch_position_embeddings(p, keep=20, ratio=4)
    assert q.shape == (248, 16)
    for row in range(20):
        assert torch.equal(q[row], p[row])
    for i in range(56):
        for j in range(4):
            expected = ((4 - j) / 4) * p[20 + i] + (j / 4) * p[21 + i]
            torch.testing.assert_close(q[20 + 4 * i + j], expected, rtol=0, atol=1e-6)
    for j in range(4):
        expected = p[76] + j * (p[76] - p[75]) / 4
        torch.testing.assert_close(q[244 + j], expected, rtol=0, atol=1e-6)


def test_interpolated_rows_equal_align_corners_interpolation():
    p = torch.randn(77, 8)
    q = stretch_position_embeddings(p)
    reference = F.interpolate(p[20:].t().unsqueeze(0), size=225, mode="linear", align_corners=True)[0].t()
    torch.testing.assert_close(q[20:245], reference, rtol=0, atol=1e-5)


@pytest.mark.parametrize("keep,ratio", [(0, 2), (5, 3), (20, 8), (40, 1)])
def test_any_keep_and_ratio(keep, ratio):
    p = torch.randn(77, 4)
    q = stretch_position_embeddings(p, keep=keep, ratio=ratio)
    assert q.shape[0] == keep + (77 - keep) * ratio
    assert torch.equal(q[:keep], p[:keep])
    assert torch.equal(q[keep::ratio][: 77 - keep], p[keep:])  # every ratio-th row is an original row


def test_exact_fp16_repeats_the_original_operation_order():
    torch.manual_seed(1)
    p = torch.randn(77, 32).half()
    expected = torch.zeros(248, 32, dtype=torch.float16)
    expected[:20] = p[:20]
    for i in range(56):  # the authors' loop, written out, in fp16
        a, b = p[20 + i], p[21 + i]
        expected[20 + 4 * i] = a
        expected[21 + 4 * i] = 3 * a / 4 + 1 * b / 4
        expected[22 + 4 * i] = 2 * a / 4 + 2 * b / 4
        expected[23 + 4 * i] = 1 * a / 4 + 3 * b / 4
    for j in range(4):
        expected[244 + j] = p[76] + j * (p[76] - p[75]) / 4
    assert torch.equal(stretch_position_embeddings(p, exact_fp16=True), expected)
    fp32 = stretch_position_embeddings(p.float())
    assert 0 < (fp32 - expected.float()).abs().max() < 1e-2  # fp32 skips the per-operation fp16 rounding


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="keep=80"):
        stretch_position_embeddings(torch.zeros(77, 4), keep=80)
    with pytest.raises(ValueError, match="ratio"):
        stretch_position_embeddings(torch.zeros(77, 4), ratio=0)


def _tiny_clip():
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=1),
        vision_config=dict(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=1,
            num_attention_heads=1,
            image_size=32,
            patch_size=16,
        ),
        projection_dim=16,
    )
    return CLIPModel(config).eval()


def test_from_clip_copies_everything_else_and_keeps_short_text_features(tmp_path):
    clip = _tiny_clip()
    long = LongCLIPModel.from_clip(clip)
    assert long.config.text_config.max_position_embeddings == 248
    assert long.config.keep_positions == 20
    source, stretched = clip.state_dict(), long.state_dict()
    assert set(source) == set(stretched)
    for key in source:
        if key not in (POSITION_EMBEDDING_KEY, "text_model.embeddings.position_ids"):
            assert torch.equal(source[key], stretched[key]), key
    ids = torch.tensor([[49406, 320, 1125, 539, 320, 2368, 49407]])
    with torch.no_grad():
        torch.testing.assert_close(
            long.get_text_features(input_ids=ids).pooler_output, clip.get_text_features(input_ids=ids).pooler_output
        )
    clip.save_pretrained(tmp_path / "clip")
    from_folder = LongCLIPModel.from_clip(tmp_path / "clip", keep=10, ratio=2)
    assert from_folder.config.text_config.max_position_embeddings == 10 + 67 * 2
