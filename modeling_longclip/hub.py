"""Upload a saved model folder to the Hugging Face Hub, refusing folders that would not load.

A folder without its payload code, weights or tokenizer uploads without complaint and only fails later, for whoever
downloads it; so every check runs locally, before the first request. Not part of the model payload: saved folders
never need this module.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import huggingface_hub
from huggingface_hub import constants
from huggingface_hub.errors import HfHubHTTPError, HFValidationError, OfflineModeIsEnabled

try:  # huggingface_hub >= 2 talks through httpx2, 1.x through httpx; the timeouts and errors are the same classes.
    import httpx2 as _httpx
except ImportError:  # pragma: no cover - depends on the installed huggingface_hub
    import httpx as _httpx

__all__ = [
    "FolderNotLoadableError",
    "HubUnreachableError",
    "TRAINING_STATE_PATTERNS",
    "main",
    "push_folder_to_hub",
    "training_state_files",
    "validate_model_folder",
]

# huggingface_hub's shared HTTP client has no timeout at all: a black-holed endpoint would hang an upload forever.
# These bound every request of a push (its own retries, a few with backoff, stay bounded too).
HUB_TIMEOUT = _httpx.Timeout(120.0, connect=10.0)

# Never useful on the Hub, and __pycache__ would even ship bytecode of the payload files.
# fnmatch patterns on paths relative to the folder, where `*` also crosses "/".
JUNK_PATTERNS = [".git/*", "*/.git/*", "__pycache__/*", "*/__pycache__/*", "*.pyc", ".DS_Store", "*/.DS_Store"]

# What Trainer, accelerate and DeepSpeed put into a `checkpoint-*` folder so a run can resume: optimizer and scheduler
# states (twice the model's size for Adam), RNG states, the pickled TrainingArguments, the Trainer's log, the AMP
# scaler, DeepSpeed's `global_step*/` shards with their `latest` tag and `zero_to_fp32.py`, FSDP's optimizer shards.
# None of it is needed to use the model; it stays home unless `include_training_state=True`.
TRAINING_STATE_PATTERNS = [
    "optimizer.pt", "optimizer.bin", "scheduler.pt", "scheduler.bin", "scaler.pt", "rng_state*.pth",
    "random_states_*.pkl", "training_args.bin", "trainer_state.json", "latest", "zero_to_fp32.py",
    "global_step*/*", "optimizer_*/*",
]  # fmt: skip

CONFIG_FILES_WITH_AUTO_MAP = (
    "config.json",
    "processor_config.json",
    "preprocessor_config.json",
    "tokenizer_config.json",
)

# The two forms transformers' remote-code loader follows (dynamic_module_utils.get_relative_imports).
_RELATIVE_IMPORT = re.compile(r"^\s*(?:import\s+\.(\S+)\s*$|from\s+\.(\S+)\s+import)", re.MULTILINE)
_IDENTIFIER = re.compile(r"^[A-Za-z_]\w*$")


class FolderNotLoadableError(ValueError):
    """The folder would fail `AutoModel.from_pretrained(folder, trust_remote_code=True)`; nothing was uploaded."""


class HubUnreachableError(RuntimeError):
    """The Hub cannot be reached (offline mode, refused connection, timeout); said once, without a traceback."""


def _read_json(path: Path, problems: list[str]) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        problems.append(f"{path.name} cannot be parsed as JSON ({err})")
        return None
    if not isinstance(data, dict):
        problems.append(f"{path.name} is not a JSON object")
        return None
    return data


def _auto_map_references(data, where: str) -> Iterator[tuple[str, str]]:
    """Yield (where, reference) for every auto_map value, nested ones included (processor configs embed theirs)."""
    if isinstance(data, dict):
        for key, value in data.items():
            if key == "auto_map" and isinstance(value, dict):
                for auto_class, refs in value.items():
                    for ref in refs if isinstance(refs, (list, tuple)) else [refs]:
                        if ref is not None:  # tokenizers map [slow, fast] with None for a missing one
                            yield f"{where} auto_map[{auto_class!r}]", ref
            else:
                yield from _auto_map_references(value, where)
    elif isinstance(data, list):
        for item in data:
            yield from _auto_map_references(item, where)


def _check_weights(folder: Path, problems: list[str]) -> None:
    if (folder / "model.safetensors").is_file():
        return
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        data = _read_json(index, problems)
        if data is None:
            return
        weight_map = data.get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            problems.append(f"{index.name} has no weight_map")
            return
        missing = sorted({shard for shard in weight_map.values() if not (folder / str(shard)).is_file()})
        if missing:
            problems.append(f"weight shards listed in {index.name} are missing: {', '.join(missing)}")
        return
    other = sorted(p.name for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt"))
    hint = (
        f" (found {', '.join(other)}: only safetensors weights are accepted, re-save them as safetensors)"
        if other
        else ""
    )
    problems.append(f"no weights: model.safetensors (or model.safetensors.index.json with its shards) is missing{hint}")


def _check_tokenizer(folder: Path, problems: list[str]) -> None:
    if (folder / "tokenizer.json").is_file():
        return
    needed = ["tokenizer_config.json", "vocab.json", "merges.txt"]
    missing = [name for name in needed if not (folder / name).is_file()]
    if missing:
        problems.append(
            f"no tokenizer: neither tokenizer.json nor {' + '.join(needed)} "
            f"(missing: tokenizer.json, {', '.join(missing)})"
        )


def _check_payload_code(folder: Path, configs: dict[str, dict], problems: list[str]) -> None:
    """Every module auto_map names, and every sibling those modules import relatively, must travel in the folder."""
    modules: dict[str, str] = {}  # module name -> who needs it
    for config_name, data in configs.items():
        for where, ref in _auto_map_references(data, config_name):
            if not isinstance(ref, str):
                problems.append(f"{where} = {ref!r} is not a 'module.ClassName' string")
                continue
            if "--" in ref:
                # "owner/repo--module.Class": transformers fetches that code from the other repo, not this folder.
                ref = ref.split("--", 1)[1]
                local = False
            else:
                local = True
            module, dot, class_name = ref.partition(".")
            if not dot or not _IDENTIFIER.match(module) or not _IDENTIFIER.match(class_name):
                problems.append(f"{where} = {ref!r} is not a 'module.ClassName' reference")
            elif local:
                modules.setdefault(module, where)

    seen: set[str] = set()
    queue = list(modules.items())
    while queue:
        module, needed_by = queue.pop(0)
        if module in seen:
            continue
        seen.add(module)
        path = folder / f"{module}.py"
        if not path.is_file():
            problems.append(f"payload file {module}.py is missing (needed by {needed_by})")
            continue
        try:
            source = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            problems.append(f"payload file {module}.py cannot be read ({err})")
            continue
        for match in _RELATIVE_IMPORT.finditer(source):
            imported = match.group(1) or match.group(2)
            if _IDENTIFIER.match(imported):
                queue.append((imported, f"`from .{imported} import` in {module}.py"))
            else:
                problems.append(
                    f"{module}.py imports `.{imported}`: remote code only resolves flat sibling modules "
                    "(from .x import ...)"
                )


def validate_model_folder(folder: str | Path) -> None:
    """Refuse, with every problem named at once, a folder that `AutoModel.from_pretrained` could not load.

    Checked: config.json with a model_type; safetensors weights (all shards of an index); a tokenizer; and for remote
    code, each module named in an `auto_map` plus the siblings it imports relatively. Pickled weights (.bin, .pt) do
    not count: loading them runs arbitrary code, and the Hub flags them.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FolderNotLoadableError(f"{folder} is not a folder")

    problems: list[str] = []
    configs: dict[str, dict] = {}
    for name in CONFIG_FILES_WITH_AUTO_MAP:
        if (folder / name).is_file():
            data = _read_json(folder / name, problems)
            if data is not None:
                configs[name] = data
        elif name == "config.json":
            problems.append("config.json is missing")
    config = configs.get("config.json")
    if config is not None and not config.get("model_type"):
        problems.append("config.json has no model_type")

    _check_weights(folder, problems)
    _check_tokenizer(folder, problems)
    _check_payload_code(folder, configs, problems)

    if problems:
        listing = "\n".join(f"  - {problem}" for problem in problems)
        raise FolderNotLoadableError(
            f"{folder} would not load with AutoModel.from_pretrained(..., trust_remote_code=True), "
            f"so it was not uploaded:\n{listing}"
        )


def training_state_files(folder: str | Path) -> list[str]:
    """Paths (relative, "/"-separated) in `folder` that are training state, matched as the upload's ignore patterns."""
    folder = Path(folder)
    relative = (p.relative_to(folder).as_posix() for p in sorted(folder.rglob("*")) if p.is_file())
    return [path for path in relative if any(fnmatch.fnmatch(path, pattern) for pattern in TRAINING_STATE_PATTERNS)]


@contextlib.contextmanager
def _bounded_hub_timeouts() -> Iterator[None]:
    """Give huggingface_hub's shared HTTP client finite timeouts for the duration of a push.

    A factory rather than the current client's `timeout`: after a connection error huggingface_hub replaces the client
    with a fresh one from the factory, which would have no timeout again. Timeouts the user configured are kept.
    """
    from huggingface_hub.utils import _http

    previous = getattr(_http, "_GLOBAL_CLIENT_FACTORY", None)
    if previous is None:  # internals moved: bound the current client at least
        client = huggingface_hub.get_session()
        saved, client.timeout = client.timeout, HUB_TIMEOUT
        try:
            yield
        finally:
            client.timeout = saved
        return

    def bounded_factory():
        client = previous()
        if client.timeout == _httpx.Timeout(None):
            client.timeout = HUB_TIMEOUT
        return client

    huggingface_hub.set_client_factory(bounded_factory)
    try:
        yield
    finally:
        huggingface_hub.set_client_factory(previous)


def push_folder_to_hub(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    token: str | None = None,
    endpoint: str | None = None,
    include_training_state: bool = False,
) -> str:
    """Validate `folder`, then upload it to `repo_id` (created if needed) in one commit; returns the commit URL.

    The training state of a `checkpoint-*` folder (TRAINING_STATE_PATTERNS: optimizer, scheduler, RNG states, ...)
    is left out unless `include_training_state=True`, for those who want to resume a run from the Hub.

    `endpoint` defaults to HF_ENDPOINT (huggingface_hub.constants.ENDPOINT); `revision` is created as a branch when
    missing. Raises FolderNotLoadableError before any request, HubUnreachableError in offline mode or when the
    endpoint cannot be reached, and huggingface_hub's HfHubHTTPError when the Hub refuses (bad token, no rights).
    """
    folder = Path(folder)
    validate_model_folder(folder)
    if constants.is_offline_mode():
        raise HubUnreachableError(
            "uploading to the Hub needs a network, but offline mode is on (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE is "
            "set): unset HF_HUB_OFFLINE to upload"
        )

    api = huggingface_hub.HfApi(endpoint=endpoint, token=token)
    try:
        with _bounded_hub_timeouts():
            # The Hub completes an owner-less name with the token's user; the later calls need the full id.
            repo_id = api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True).repo_id
            if revision is not None:
                api.create_branch(repo_id, branch=revision, repo_type="model", exist_ok=True)
            commit = api.upload_folder(
                folder_path=folder,
                repo_id=repo_id,
                repo_type="model",
                revision=revision,
                commit_message=commit_message or f"Upload {folder.resolve().name} with modeling_longclip",
                ignore_patterns=JUNK_PATTERNS + ([] if include_training_state else TRAINING_STATE_PATTERNS),
            )
    except (_httpx.TransportError, OfflineModeIsEnabled) as err:
        detail = str(err) or type(err).__name__
        raise HubUnreachableError(f"cannot reach the Hugging Face Hub at {api.endpoint}: {detail}") from err
    return str(commit.commit_url)


def main(argv: list[str] | None = None) -> None:
    """`longclip-push-to-hub DIR --repo-id OWNER/NAME`: refusals, bad repo ids and connection problems exit 2, Hub
    rejections (token, rights) exit 1, each as one `error:` line instead of a traceback."""
    parser = argparse.ArgumentParser(
        prog="longclip-push-to-hub",
        description="Check that a saved model folder loads with AutoModel(trust_remote_code=True), then upload it.",
    )
    parser.add_argument("folder", metavar="DIR", help="folder written by save_pretrained / the converters")
    parser.add_argument("--repo-id", required=True, metavar="OWNER/NAME", help="model repo, created if missing")
    parser.add_argument("--private", action="store_true", help="create the repo private (existing repos keep theirs)")
    parser.add_argument("--revision", metavar="BRANCH", help="branch to commit to, created if missing (default: main)")
    parser.add_argument("--commit-message", metavar="MSG")
    parser.add_argument("--token", metavar="TOKEN", help="write token (default: HF_TOKEN or the saved login)")
    parser.add_argument("--endpoint", metavar="URL", help="Hub endpoint (default: HF_ENDPOINT or huggingface.co)")
    parser.add_argument(
        "--include-training-state",
        action="store_true",
        help="also upload a checkpoint's optimizer, scheduler, RNG and Trainer state (to resume from the Hub)",
    )
    args = parser.parse_args(argv)
    left_out = [] if args.include_training_state else training_state_files(args.folder)

    try:
        url = push_folder_to_hub(
            args.folder,
            args.repo_id,
            private=args.private,
            revision=args.revision,
            commit_message=args.commit_message,
            token=args.token,
            endpoint=args.endpoint,
            include_training_state=args.include_training_state,
        )
    except (FolderNotLoadableError, HubUnreachableError, HFValidationError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except HfHubHTTPError as err:
        print(f"error: the Hub refused the upload: {err}", file=sys.stderr)
        sys.exit(1)
    print(f"uploaded {args.folder} to {args.repo_id}" + (f" ({args.revision})" if args.revision else "") + f": {url}")
    if left_out:
        shown = ", ".join(left_out[:8]) + (f" and {len(left_out) - 8} more" if len(left_out) > 8 else "")
        print(f"left out the training state ({shown}); --include-training-state uploads it")


if __name__ == "__main__":
    main()
