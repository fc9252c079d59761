"""The zoo manifest and its runner, on a synthetic copy of every release (tiny shapes, the real key layouts)."""

import copy
import hashlib
import importlib.util
import json

import pytest
import torch
from llm_fixtures import tiny_llm_folder

from modeling_longclip.common.errors import ConversionError
from modeling_longclip.converters.synthetic import random_openai_clip_state_dict, random_proclip_state_dict
from modeling_longclip.converters.synthetic_zoo import (
    random_siglip2_release,
    write_llm2clip_clip_part,
    write_lora_adapter,
)
from modeling_longclip.converters.zoo import MANIFEST, format_table, load_manifest, main, run_zoo

HAS_EVA = importlib.util.find_spec("modeling_longclip.converters.eva02") is not None


def eva_rope_tables(grid: int, pt_seq_len: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """REFERENCE 2.4: 16 frequencies per axis, positions arange(g) / g * 16, interleaved pairs, rows then columns."""
    freqs = 1.0 / 10000 ** (torch.arange(0, 32, 2).float() / 32)
    axis = torch.outer(torch.arange(grid) / grid * pt_seq_len, freqs).repeat_interleave(2, dim=-1)  # (g, 32)
    table = torch.cat([axis[:, None, :].expand(grid, grid, 32), axis[None, :, :].expand(grid, grid, 32)], dim=-1)
    return table.reshape(grid * grid, 64).cos(), table.reshape(grid * grid, 64).sin()


def random_eva_clip_state_dict(
    adapter_blocks: int,
    expansion: int,
    output_dim: int,
    llm_width: int = 64,
    seed: int = 0,
    width: int = 128,
    layers: int = 2,
    patch: int = 8,
    image: int = 32,
) -> dict:
    """eva_clip's CustomCLIP layout (REFERENCE 2.4): EVA02 tower under `visual.` (head dim 64, SwiGLU with ffn_ln,
    inner_attn_ln, q/v biases only, rope buffers at the top and under every block), `text.text_adaptor.*`, logit_scale."""
    g = torch.Generator().manual_seed(seed)
    hidden, grid = int(width * 2.6667), image // patch

    def rand(*shape):
        return (shape[-1] ** -0.5 if len(shape) > 1 else 0.05) * torch.randn(*shape, generator=g)

    def norm(name, dim=width):
        return {f"{name}.weight": 1 + 0.1 * torch.randn(dim, generator=g), f"{name}.bias": rand(dim)}

    def linear(name, out, inp, bias=True):
        return {f"{name}.weight": rand(out, inp), **({f"{name}.bias": rand(out)} if bias else {})}

    cos, sin = eva_rope_tables(grid)
    sd = {
        "cls_token": rand(1, 1, width),
        "pos_embed": rand(1, grid * grid + 1, width),
        **linear("patch_embed.proj", width, 3),
    }
    sd["patch_embed.proj.weight"] = rand(width, 3, patch, patch)
    sd.update({"rope.freqs_cos": cos, "rope.freqs_sin": sin, **norm("norm"), **linear("head", output_dim, width)})
    for i in range(layers):
        b = f"blocks.{i}."
        sd.update(
            {
                **norm(b + "norm1"),
                **norm(b + "norm2"),
                **norm(b + "attn.inner_attn_ln"),
                **norm(b + "mlp.ffn_ln", hidden),
            }
        )
        sd.update({**linear(b + "attn.q_proj", width, width), **linear(b + "attn.k_proj", width, width, bias=False)})
        sd.update({**linear(b + "attn.v_proj", width, width), **linear(b + "attn.proj", width, width)})
        sd.update(
            {
                **linear(b + "mlp.w1", hidden, width),
                **linear(b + "mlp.w2", hidden, width),
                **linear(b + "mlp.w3", width, hidden),
            }
        )
        sd.update({f"{b}attn.rope.freqs_cos": cos, f"{b}attn.rope.freqs_sin": sin})
    adapter = random_proclip_state_dict(llm_width=llm_width, blocks=adapter_blocks, expansion=expansion, seed=seed)
    adapter = {k: v for k, v in adapter.items() if k.startswith("text.")}
    adapter[f"text.text_adaptor.{adapter_blocks + 1}.weight"] = rand(output_dim, llm_width)
    adapter[f"text.text_adaptor.{adapter_blocks + 1}.bias"] = rand(output_dim)
    return {**{f"visual.{k}": v for k, v in sd.items()}, **adapter, "logit_scale": torch.tensor(4.6052)}


def write_synthetic_zoo(root, manifest: dict) -> dict[str, str]:
    """One tiny file (or folder) per entry at DOWNLOADS/<repo>/<file>, in that entry's original format; returns the
    path of each single-file entry."""
    llm_cache = {}
    for entry in manifest["text_models"]:
        folder = tiny_llm_folder(root / entry["repo"])
        llm_cache[entry["name"]] = folder
    write_lora_adapter(llm_cache["llama3.1-8b-instruct"], llm_cache["llama3.1-8b-instruct"] / "llm2clip-lora")
    written = {}
    for seed, entry in enumerate(manifest["checkpoints"]):
        repo = root / entry["repo"]
        if entry["family"] == "longclip":
            path = repo / entry["files"][0]
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(random_openai_clip_state_dict(seed=seed), path)
            written[entry["name"]] = path
        elif entry.get("tower") == "siglip2":
            repo.mkdir(parents=True)
            torch.save({"module": random_siglip2_release(seed=seed)}, repo / "llm2clip-siglip2.pt")
        elif entry.get("tower") == "eva02":
            blocks, expansion, out = (4, 2, 40) if entry["family"] == "llm2clip" else (1, 8, 32)
            state_dict = random_eva_clip_state_dict(blocks, expansion, out, seed=seed)
            if entry["family"] == "llm2clip":
                path, payload = repo / "LLM2CLIP-EVA02.pt", {k: v.half() for k, v in state_dict.items()}
            else:
                path, payload = (
                    repo / entry["files"][0],
                    {"epoch": 4, "name": "eva", "state_dict": state_dict, "optimizer": {}},
                )
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(payload, path)
        elif entry["family"] == "llm2clip":
            write_llm2clip_clip_part(repo, seed=seed)
        elif entry.get("pattern"):
            for name in ("llm2clip/3m/B16.pt", "llm2clip/30m/L14.pt"):  # made-up names: the real ones are not known
                (repo / name).parent.mkdir(parents=True, exist_ok=True)
                torch.save(random_proclip_state_dict(blocks=4, expansion=2, seed=seed), repo / name)
        else:
            path = repo / entry["files"][0]
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(random_proclip_state_dict(seed=seed), path)
            written[entry["name"]] = path
    return written


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    root = tmp_path_factory.mktemp("zoo")
    manifest = load_manifest()
    written = write_synthetic_zoo(root / "downloads", manifest)
    rows = run_zoo(root / "downloads", root / "out", allow_any_shape=True, online=False)
    return root, manifest, written, rows


def test_manifest_lists_the_released_zoo():
    manifest = load_manifest()
    names = {e["repo"] + ":" + ",".join(e.get("files") or []) for e in manifest["checkpoints"]}
    assert "BeichenZhang/LongCLIP-L-336px:longclip-L@336px.pt" in names
    repos = {e["repo"] for e in manifest["checkpoints"]}
    assert {r for r in repos if r.startswith("microsoft/")} == {
        "microsoft/LLM2CLIP-Openai-B-16",
        "microsoft/LLM2CLIP-Openai-L-14-224",
        "microsoft/LLM2CLIP-Openai-L-14-336",
        "microsoft/LLM2CLIP-EVA02-B-16",
        "microsoft/LLM2CLIP-EVA02-L-14-336",
        "microsoft/LLM2CLIP-Llama3.2-1B-EVA02-L-14-336",
        "microsoft/LLM2CLIP-Llama3.1-8B-siglip2-so400m-patch14-224",
    }
    proclip = {f for e in manifest["checkpoints"] if e["repo"] == "VisionXLab/ProCLIP" for f in e.get("files") or []}
    assert len(proclip) == 11 and "proclip/3m/ProCLIP_pp_L14.pt" in proclip
    siglip = next(e for e in manifest["checkpoints"] if e.get("tower") == "siglip2")["expected"]
    assert (siglip["vision_width"], siglip["vision_layers"], siglip["vision_heads"], siglip["vision_mlp"]) == (
        1152,
        27,
        16,
        4304,
    )
    assert siglip["vision_mlp"] == int(1152 * 3.7362) and siglip["vision_width"] // siglip["vision_heads"] == 72
    assert all(v is None for e in manifest["checkpoints"] for v in (e["sha256"] or {}).values())  # none known


def test_whole_manifest_offline(zoo):
    root, manifest, _, rows = zoo
    by_name = {r.name: r for r in rows}
    eva = {e["name"] for e in manifest["checkpoints"] if e.get("tower") == "eva02"}
    for row in rows:
        if row.name in eva:
            continue
        assert row.status == "converted", (row.name, row.detail)
        assert row.text_diff <= 1e-4 and row.image_diff <= 1e-4
        config = json.loads((root / "out" / row.name / "config.json").read_text())
        assert (root / "out" / row.name / "README.md").is_file() and config["model_type"] == row.family
    assert {"proclip-llm2clip-baseline-llm2clip-3m-b16", "proclip-llm2clip-baseline-llm2clip-30m-l14"} <= set(by_name)
    siglip = json.loads((root / "out" / "llm2clip-llama3.1-8b-siglip2-so400m-14-224" / "config.json").read_text())
    assert siglip["vision_tower"] == "siglip2" and siglip["vision_config"]["num_attention_heads"] == 2
    for name in eva:  # the EVA02 converter lives on another branch: without it these are refused, with it converted
        assert by_name[name].status == ("converted" if HAS_EVA else "refused"), (name, by_name[name].detail)
        assert by_name[name].detail
    report = json.loads((root / "out" / "zoo_report.json").read_text())
    assert [r["name"] for r in report] == [r.name for r in rows]
    summary = (
        "0 verified, 24 converted, 0 refused, 0 missing"
        if HAS_EVA
        else "0 verified, 20 converted, 4 refused, 0 missing"
    )
    assert format_table(rows).splitlines()[-1] == summary


@pytest.mark.skipif(not HAS_EVA, reason="needs the EVA02 converter (converters/eva02.py, another branch)")
def test_eva_entries_convert_with_the_eva_branch(zoo):
    _, manifest, _, rows = zoo
    eva = [r for r in rows if r.tower == "eva02"]
    assert len(eva) == 4 and all(r.status == "converted" and r.image_diff <= 1e-4 for r in eva), [
        (r.name, r.detail) for r in eva
    ]


def test_shapes_and_checksums_are_checked(zoo, tmp_path):
    root, manifest, written, _ = zoo
    manifest = copy.deepcopy(manifest)
    entry = next(e for e in manifest["checkpoints"] if e["name"] == "longclip-b16")
    digest = hashlib.sha256(written["longclip-b16"].read_bytes()).hexdigest()
    entry["expected"] = {
        "vision_width": 64,
        "vision_layers": 2,
        "patch_size": 8,
        "image_size": 32,
        "embed_dim": 32,
        "text_positions": 248,
    }
    entry["sha256"] = {entry["files"][0]: digest}
    [row] = run_zoo(root / "downloads", tmp_path / "a", only=["longclip-b16"], manifest=manifest, online=False)
    assert row.status == "verified", row.detail
    entry["expected"]["vision_width"] = 768  # the real model's width: the tiny copy is refused and removed
    [row] = run_zoo(root / "downloads", tmp_path / "b", only=["longclip-b16"], manifest=manifest, online=False)
    assert row.status == "refused" and "vision_width 64 (expected 768)" in row.detail
    assert not (tmp_path / "b" / "longclip-b16").exists()
    entry["sha256"] = {entry["files"][0]: "0" * 64}
    [row] = run_zoo(root / "downloads", tmp_path / "c", only=["longclip-b16"], manifest=manifest, online=False)
    assert row.status == "refused" and "is not the manifest's" in row.detail


def test_missing_offline_and_downloads_online(tmp_path, monkeypatch, capsys):
    only = ["longclip-b32", "proclip-3m-b16", "llm2clip-llama3.1-8b-siglip2-so400m-14-224"]
    assert (
        main(["--downloads", str(tmp_path / "none"), "--output", str(tmp_path / "out"), "--offline", "--only", *only])
        == 0
    )
    out = capsys.readouterr().out
    assert out.count("missing") >= 3 and "BeichenZhang/LongCLIP-B-32/longclip-B-32.pt is not under" in out
    assert "0 verified, 0 converted, 0 refused, 3 missing" in out
    assert main(["--downloads", str(tmp_path), "--output", str(tmp_path / "o"), "--only", "nope"]) == 2

    import huggingface_hub

    calls = []

    def fake_download(repo, filename, local_dir):
        calls.append((repo, filename))
        if "B-32" not in repo:
            raise OSError("connection refused")
        (local_dir / filename).parent.mkdir(parents=True, exist_ok=True)
        torch.save(random_openai_clip_state_dict(), local_dir / filename)
        return str(local_dir / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    rows = run_zoo(
        tmp_path / "dl", tmp_path / "o2", only=["longclip-b32", "longclip-l14"], allow_any_shape=True, online=True
    )
    assert calls == [("BeichenZhang/LongCLIP-L", "longclip-L.pt"), ("BeichenZhang/LongCLIP-B-32", "longclip-B-32.pt")]
    assert [(r.name, r.status) for r in rows] == [("longclip-l14", "missing"), ("longclip-b32", "converted")]
    assert "downloading it failed (OSError: connection refused)" in rows[0].detail

    snapshots = []

    def fake_snapshot(repo, local_dir, allow_patterns):
        snapshots.append((repo, tuple(allow_patterns)))
        (tiny_llm_folder if "Llama" in repo else write_llm2clip_clip_part)(local_dir)
        return str(local_dir)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot)
    [row] = run_zoo(tmp_path / "dl", tmp_path / "o3", only=["llm2clip-openai-b16"], allow_any_shape=True, online=True)
    assert row.status == "converted", row.detail
    assert snapshots == [
        ("microsoft/LLM2CLIP-Openai-B-16", ("*.json", "*.safetensors")),
        ("microsoft/LLM2CLIP-Llama-3-8B-Instruct-CC-Finetuned", ("*.json", "*.safetensors", "tokenizer*", "*.model")),
    ]


def test_siglip2_entry_needs_its_lora(zoo, tmp_path):
    root, manifest, _, _ = zoo
    downloads = tmp_path / "dl"
    entry = next(e for e in manifest["checkpoints"] if e.get("tower") == "siglip2")
    llm = next(e for e in manifest["text_models"] if e["name"] == entry["text_model"])
    tiny_llm_folder(downloads / llm["repo"])  # the base model without the adapter
    (downloads / entry["repo"]).mkdir(parents=True)
    torch.save(random_siglip2_release(), downloads / entry["repo"] / "release.pt")
    [row] = run_zoo(downloads, tmp_path / "out", only=[entry["name"]], allow_any_shape=True, online=False)
    assert row.status == "missing" and "PEFT LoRA adapter" in row.detail


def test_siglip2_entry_finds_the_lora_in_its_release(tmp_path):
    """The authors' code reads the LoRA from a folder of the release: there it is found and merged."""
    manifest = load_manifest()
    entry = next(e for e in manifest["checkpoints"] if e.get("tower") == "siglip2")
    llm = next(e for e in manifest["text_models"] if e["name"] == entry["text_model"])
    downloads = tmp_path / "dl"
    base = tiny_llm_folder(downloads / llm["repo"])  # the base model without the adapter
    release = downloads / entry["repo"]
    release.mkdir(parents=True)
    torch.save(random_siglip2_release(), release / "release.pt")
    write_lora_adapter(base, release / "checkpoints" / "LLM2CLIP-Llama-3.1-8B")
    [row] = run_zoo(downloads, tmp_path / "out", only=[entry["name"]], allow_any_shape=True, online=False)
    assert row.status == "converted", row.detail
    card = (tmp_path / "out" / entry["name"] / "README.md").read_text()
    assert "LLM2CLIP-Llama-3.1-8B merged by peft" in card


def test_manifest_errors_are_one_line(tmp_path):
    bad = json.loads(MANIFEST.read_text())
    bad["checkpoints"].append(dict(bad["checkpoints"][0]))
    bad["checkpoints"][5]["text_model"] = "gpt-9"
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(ConversionError, match="duplicate name longclip-b16.*text model 'gpt-9' is not in text_models"):
        load_manifest(tmp_path / "bad.json")
