"""Uploading folders to the Hub: the real huggingface_hub client against a fake Hub on loopback (tests/fake_hub.py).

Nothing is mocked on the client side; the endpoint is pointed at the fake either with `endpoint=` or the way users do
it, HF_ENDPOINT (read once at import into huggingface_hub.constants.ENDPOINT, hence patched there too).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import huggingface_hub
import pytest
from fake_hub import FakeHub
from huggingface_hub import constants
from transformers import CLIPConfig, CLIPModel

from modeling_longclip import hub as hub_module
from modeling_longclip.converters.clip_preprocessing import build_clip_tokenizer
from modeling_longclip.export.hub import (
    FolderNotLoadableError,
    HubUnreachableError,
    main,
    push_folder_to_hub,
    validate_model_folder,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
TOKEN = "hf_fake_token"
API = ("/api/repos/", "/api/models/")  # the upload's own requests (not the client's agent-registry fetch)
PAYLOAD_FILES = {
    "configuration_longclip.py",
    "modeling_longclip.py",
    "processing_longclip.py",
    "contrastive.py",
    "embedding.py",
}


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """A running fake Hub, online mode for this test (conftest turns HF_HUB_OFFLINE on), HF_ENDPOINT pointing at it."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    # Keep the client's side files out of the real cache: hf_xet writes a log under HF_HOME when first imported (by
    # the upload pipeline), and a fetched agent-harness registry would be cached there.
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setattr(constants, "AGENT_HARNESSES_PATH", str(tmp_path / "hf_home" / ".agent_harnesses.json"))
    with FakeHub() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setattr(constants, "ENDPOINT", server.url)
        yield server
    assert not server.running
    assert server.errors == [], "the fake hub crashed:\n" + "\n".join(server.errors)
    assert server.unexpected == [], f"requests the fake hub does not implement: {server.unexpected}"


def local_files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def clip_folder(folder: Path) -> Path:
    """A plain transformers CLIP folder: known model_type, no auto_map, no code."""
    tiny = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=1)
    config = CLIPConfig(
        text_config=dict(tiny, max_position_embeddings=77),
        vision_config=dict(tiny, image_size=32, patch_size=16),
        projection_dim=16,
    )
    CLIPModel(config).save_pretrained(folder)
    build_clip_tokenizer(77).save_pretrained(folder)
    return folder


def test_push_uploads_every_file_byte_identical(hub, tiny_longclip_folder):
    folder = tiny_longclip_folder
    (folder / "README.md").write_text("---\nlicense: apache-2.0\nlibrary_name: transformers\n---\n# tiny\n")
    expected = local_files(folder)
    assert PAYLOAD_FILES <= set(expected)
    # Junk next to the model stays home.
    (folder / "__pycache__").mkdir()
    (folder / "__pycache__" / "modeling_longclip.cpython-311.pyc").write_bytes(b"\0bytecode")
    (folder / ".DS_Store").write_bytes(b"\0finder")

    url = push_folder_to_hub(folder, "me/tiny", private=True, token=TOKEN)  # endpoint from HF_ENDPOINT

    repo = hub.repo("me/tiny")
    assert repo.private is True
    assert hub.files("me/tiny") == expected
    assert url == f"{hub.url}/me/tiny/commit/{repo.heads['main']}"
    assert [c.summary for c in repo.commits] == ["Upload tiny-longclip with modeling_longclip"]
    assert all(r.headers.get("authorization") == f"Bearer {TOKEN}" for r in hub.requests if r.path.startswith(API))
    assert [c for c in hub.calls if c.split()[1].startswith(API)][0] == "POST /api/repos/create"


def test_push_again_skips_unchanged_files(hub, tiny_longclip_folder):
    first = push_folder_to_hub(tiny_longclip_folder, "me/tiny", token=TOKEN, endpoint=hub.url)
    second = push_folder_to_hub(tiny_longclip_folder, "me/tiny", token=TOKEN, endpoint=hub.url)

    assert second == first  # nothing changed: no new commit, the head is reported
    assert len(hub.repo("me/tiny").commits) == 1
    assert hub.repo("me/tiny").private is False


def test_revision_creates_branch_and_files_land_there(hub, tiny_longclip_folder):
    url = push_folder_to_hub(
        tiny_longclip_folder,
        "me/tiny",
        revision="exp/long-text",
        commit_message="Tiny Long-CLIP, 248 tokens",
        token=TOKEN,
        endpoint=hub.url,
    )

    repo = hub.repo("me/tiny")
    assert set(repo.branches) == {"main", "exp/long-text"}
    assert hub.files("me/tiny", revision="exp/long-text") == local_files(tiny_longclip_folder)
    assert hub.files("me/tiny", revision="main") == {}
    assert [(c.revision, c.summary) for c in repo.commits] == [("exp/long-text", "Tiny Long-CLIP, 248 tokens")]
    assert url.endswith(repo.heads["exp/long-text"])
    calls = hub.calls
    assert calls.index("POST /api/models/me/tiny/branch/exp%2Flong-text") < calls.index(
        "POST /api/models/me/tiny/commit/exp%2Flong-text"
    )


def _write_json(path: Path, update) -> None:
    data = json.loads(path.read_text())
    update(data)
    path.write_text(json.dumps(data))


def _rename_weights_to_bin(folder: Path) -> None:
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")


def _shard_with_missing_file(folder: Path) -> None:
    (folder / "model.safetensors").rename(folder / "model-00001-of-00002.safetensors")
    index = {
        "metadata": {},
        "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"},
    }
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))


BREAKAGES = {
    "no config": (lambda f: (f / "config.json").unlink(), ["config.json is missing"]),
    "config not json": (lambda f: (f / "config.json").write_text("{oops"), ["config.json cannot be parsed"]),
    "no model_type": (lambda f: _write_json(f / "config.json", lambda d: d.pop("model_type")), ["no model_type"]),
    "no weights": (lambda f: (f / "model.safetensors").unlink(), ["model.safetensors"]),
    "bin only": (_rename_weights_to_bin, ["pytorch_model.bin", "safetensors"]),
    "missing shard": (_shard_with_missing_file, ["model-00002-of-00002.safetensors"]),
    "no tokenizer": (lambda f: (f / "tokenizer.json").unlink(), ["tokenizer.json", "vocab.json", "merges.txt"]),
    "no auto_map module": (lambda f: (f / "modeling_longclip.py").unlink(), ["modeling_longclip.py", "auto_map"]),
    "no processor module": (lambda f: (f / "processing_longclip.py").unlink(), ["processing_longclip.py"]),
    "no imported sibling": (lambda f: (f / "contrastive.py").unlink(), ["contrastive.py", "modeling_longclip.py"]),
}


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_refuses_unloadable_folder_before_any_request(hub, tiny_longclip_folder, breakage):
    damage, named = BREAKAGES[breakage]
    damage(tiny_longclip_folder)

    with pytest.raises(FolderNotLoadableError) as refused:
        push_folder_to_hub(tiny_longclip_folder, "me/tiny", token=TOKEN, endpoint=hub.url)

    message = str(refused.value)
    assert str(tiny_longclip_folder) in message
    for name in named:
        assert name in message
    assert hub.requests == []


def test_refusal_names_every_problem_at_once(tiny_longclip_folder):
    for name in ("config.json", "model.safetensors", "tokenizer.json", "processing_longclip.py"):
        (tiny_longclip_folder / name).unlink()

    with pytest.raises(FolderNotLoadableError) as refused:
        validate_model_folder(tiny_longclip_folder)

    message = str(refused.value)
    for name in ("config.json", "model.safetensors", "tokenizer.json", "processing_longclip.py"):
        assert name in message


def test_auto_map_lists_and_other_repo_references(tiny_longclip_folder):
    """[slow, fast] tokenizer pairs (None for a missing one) need each module; "repo--" code lives in that repo."""
    _write_json(
        tiny_longclip_folder / "tokenizer_config.json",
        lambda d: d.update(auto_map={"AutoTokenizer": ["tokenization_extra.ExtraTokenizer", None]}),
    )
    _write_json(
        tiny_longclip_folder / "config.json",
        lambda d: d["auto_map"].update(AutoModelForCausalLM="someone/other--modeling_other.OtherModel"),
    )
    with pytest.raises(FolderNotLoadableError) as refused:
        validate_model_folder(tiny_longclip_folder)
    assert "tokenization_extra.py" in str(refused.value)
    assert "modeling_other" not in str(refused.value)

    (tiny_longclip_folder / "tokenization_extra.py").write_text("from .embedding import pooled_features\n")
    validate_model_folder(tiny_longclip_folder)


def test_plain_clip_folder_uploads_without_code(hub, tmp_path):
    folder = clip_folder(tmp_path / "tiny-clip")
    assert not list(folder.glob("*.py"))
    validate_model_folder(folder)

    push_folder_to_hub(folder, "me/tiny-clip", token=TOKEN, endpoint=hub.url)

    assert hub.files("me/tiny-clip") == local_files(folder)
    assert "model.safetensors" in hub.files("me/tiny-clip")


def test_offline_mode_fails_fast_with_clear_message(hub, tiny_longclip_folder, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)

    with pytest.raises(HubUnreachableError, match="unset HF_HUB_OFFLINE") as refused:
        push_folder_to_hub(tiny_longclip_folder, "me/tiny", token=TOKEN, endpoint=hub.url)
    assert isinstance(refused.value, RuntimeError)

    with pytest.raises(SystemExit) as exited:
        main([str(tiny_longclip_folder), "--repo-id", "me/tiny", "--token", TOKEN])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "HF_HUB_OFFLINE" in err
    assert hub.requests == []


@pytest.fixture
def dead_endpoint(monkeypatch):
    """A loopback port nobody listens on; also as constants.ENDPOINT, where the client's agent-registry fetch goes."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{sock.getsockname()[1]}"
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    return endpoint


def test_refused_connection_is_one_clear_error(tiny_longclip_folder, dead_endpoint):
    start = time.monotonic()
    with pytest.raises(HubUnreachableError, match="cannot reach the Hugging Face Hub at " + dead_endpoint):
        push_folder_to_hub(tiny_longclip_folder, "me/tiny", token=TOKEN, endpoint=dead_endpoint)
    assert time.monotonic() - start < 5


def test_silent_endpoint_times_out_instead_of_hanging(tiny_longclip_folder, dead_endpoint, monkeypatch):
    """huggingface_hub's shared client has no timeout of its own; the push bounds it."""
    monkeypatch.setattr(hub_module, "HUB_TIMEOUT", hub_module._httpx.Timeout(0.5))
    with socket.socket() as silent:  # accepts connections (kernel backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
        start = time.monotonic()
        with pytest.raises(HubUnreachableError, match="cannot reach the Hugging Face Hub at " + endpoint):
            push_folder_to_hub(tiny_longclip_folder, "me/tiny", token=TOKEN, endpoint=endpoint)
    assert time.monotonic() - start < 5
    assert huggingface_hub.get_session().timeout == hub_module._httpx.Timeout(None)  # the user's client is restored


def test_cli_bad_repo_id_is_one_error_line(hub, tiny_longclip_folder, capsys):
    with pytest.raises(SystemExit) as exited:
        main([str(tiny_longclip_folder), "--repo-id", "me/tiny/extra", "--token", TOKEN])
    assert exited.value.code == 2
    assert capsys.readouterr().err.startswith("error: ")
    assert hub.requests == []


def test_repo_id_without_owner_goes_to_the_token_user(hub, tiny_longclip_folder):
    url = push_folder_to_hub(tiny_longclip_folder, "tiny", token=TOKEN, endpoint=hub.url)

    assert url.startswith(f"{hub.url}/me/tiny/commit/")
    assert hub.files("me/tiny") == local_files(tiny_longclip_folder)


def test_cli_subprocess_uploads_and_refuses(hub, tiny_longclip_folder, tmp_path):
    """The script as users run it, endpoint from HF_ENDPOINT; both runs at once since each imports torch."""
    broken = tmp_path / "broken"
    broken.mkdir()
    for path in tiny_longclip_folder.iterdir():
        if path.name != "contrastive.py":
            (broken / path.name).write_bytes(path.read_bytes())
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_ENDPOINT=hub.url, HF_TOKEN=TOKEN, HF_HOME=str(tmp_path / "hf_home"))
    script = [sys.executable, str(REPO_ROOT / "conversion" / "push_to_hub.py")]

    def launch(*args):
        return subprocess.Popen(
            [*script, *args], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    good = launch(str(tiny_longclip_folder), "--repo-id", "me/tiny", "--private")
    bad = launch(str(broken), "--repo-id", "me/broken")
    good_out, good_err = good.communicate(timeout=120)
    bad_out, bad_err = bad.communicate(timeout=120)

    assert good.returncode == 0, good_err
    assert f"{hub.url}/me/tiny/commit/" in good_out
    assert hub.files("me/tiny") == local_files(tiny_longclip_folder)
    assert hub.repo("me/tiny").private is True
    assert all(r.headers.get("authorization") == f"Bearer {TOKEN}" for r in hub.requests if r.path.startswith(API))

    assert bad.returncode == 2, bad_err
    assert any(line.startswith("error: ") for line in bad_err.splitlines()) and "contrastive.py" in bad_err
    assert "Traceback" not in bad_err
    assert not any("broken" in call for call in hub.calls)


TRAINING_STATE = {
    "optimizer.pt": b"adam moments",
    "scheduler.pt": b"cosine",
    "scaler.pt": b"amp",
    "rng_state.pth": b"rng",
    "rng_state_1.pth": b"rng of rank 1",
    "training_args.bin": b"pickled args",
    "trainer_state.json": b'{"global_step": 10}',
    "latest": b"global_step10",
    "zero_to_fp32.py": b"# deepspeed's own script\n",
    "global_step10/mp_rank_00_model_states.pt": b"zero shards",
    "global_step10/bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt": b"zero optimizer",
}


def as_checkpoint(folder: Path) -> dict[str, bytes]:
    """What Trainer (+ DeepSpeed) leaves beside the model in `checkpoint-*`; returns the model's own files."""
    model_files = local_files(folder)
    for name, content in TRAINING_STATE.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content)
    return model_files


def test_checkpoint_uploads_the_model_without_training_state(hub, tiny_longclip_folder, capsys):
    model_files = as_checkpoint(tiny_longclip_folder)
    assert sorted(hub_module.training_state_files(tiny_longclip_folder)) == sorted(TRAINING_STATE)

    push_folder_to_hub(tiny_longclip_folder, "me/ckpt", token=TOKEN, endpoint=hub.url)
    assert hub.files("me/ckpt") == model_files

    main([str(tiny_longclip_folder), "--repo-id", "me/ckpt-cli", "--token", TOKEN, "--endpoint", hub.url])
    assert hub.files("me/ckpt-cli") == model_files
    out = capsys.readouterr().out
    assert "left out the training state" in out and "optimizer.pt" in out and "--include-training-state" in out


def test_include_training_state_uploads_everything(hub, tiny_longclip_folder, capsys):
    model_files = as_checkpoint(tiny_longclip_folder)
    main(
        [
            str(tiny_longclip_folder),
            "--repo-id",
            "me/resume",
            "--token",
            TOKEN,
            "--endpoint",
            hub.url,
            "--include-training-state",
        ]
    )
    assert hub.files("me/resume") == {**model_files, **TRAINING_STATE}
    assert "left out" not in capsys.readouterr().out
