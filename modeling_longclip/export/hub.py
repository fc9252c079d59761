"""Upload a saved model folder to the Hugging Face Hub, refusing folders that would not load.

A folder without its payload code, weights or tokenizer uploads without complaint and only fails later, for whoever
downloads it; so every check runs locally, before the first request. Not part of the model payload: saved folders
never need this module.
"""

from __future__ import annotations

import contextlib
import datetime
import fnmatch
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import huggingface_hub
from huggingface_hub import constants
from huggingface_hub.errors import HfHubHTTPError, HFValidationError, OfflineModeIsEnabled

from ..common.cli import ArgumentParser, command
from ..common.errors import LongCLIPError
from ..common.folders import FolderNotLoadableError, validate_model_folder
from .cards import results_for_folder, update_card_results

try:  # huggingface_hub >= 2 talks through httpx2, 1.x through httpx; the timeouts and errors are the same classes.
    import httpx2 as _httpx
except ImportError:  # pragma: no cover - depends on the installed huggingface_hub
    import httpx as _httpx

__all__ = [
    "FolderNotLoadableError",
    "HubUnreachableError",
    "TRAINING_STATE_PATTERNS",
    "main",
    "pick_up_results",
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
    "optimizer.pt",
    "optimizer.bin",
    "scheduler.pt",
    "scheduler.bin",
    "scaler.pt",
    "rng_state*.pth",
    "random_states_*.pkl",
    "training_args.bin",
    "trainer_state.json",
    "latest",
    "zero_to_fp32.py",
    "global_step*/*",
    "optimizer_*/*",
]


class HubUnreachableError(LongCLIPError, RuntimeError):
    """The Hub cannot be reached (offline mode, refused connection, timeout); said once, without a traceback."""


def training_state_files(folder: str | Path) -> list[str]:
    """Paths (relative, "/"-separated) in `folder` that are training state, matched as the upload's ignore patterns."""
    folder = Path(folder)
    relative = (p.relative_to(folder).as_posix() for p in sorted(folder.rglob("*")) if p.is_file())
    return [path for path in relative if any(fnmatch.fnmatch(path, pattern) for pattern in TRAINING_STATE_PATTERNS)]


RESULTS_BESIDE = "results.json"


def _require_online() -> None:
    if constants.is_offline_mode():
        raise HubUnreachableError(
            "uploading to the Hub needs a network, but offline mode is on (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE is "
            "set): unset HF_HUB_OFFLINE to upload"
        )


def pick_up_results(folder: str | Path, results: str | Path | None = None) -> str | None:
    """Write the folder's measured results into its card before an upload: from `results` (a longclip-eval
    results.json, refused if it holds none of this folder's), or else from a results.json beside the folder when it
    holds some. Returns a line saying what was added, or None."""
    folder = Path(folder)
    path = Path(results) if results is not None else folder.resolve().parent / RESULTS_BESIDE
    if not path.is_file():
        if results is not None:
            raise FileNotFoundError(2, "No such file or directory", str(path))
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise LongCLIPError(f"{path}: not a longclip-eval results file ({error}).") from None
    found = results_for_folder(data, folder, base=path.parent)
    if not found:
        if results is not None:
            raise LongCLIPError(f"{path} holds no results of {folder} (matched by the evaluated path or name).")
        return None
    date = datetime.date.fromtimestamp(path.stat().st_mtime).isoformat()  # results written before they were dated
    card = update_card_results(folder, found, date=date)
    benchmarks = ", ".join(sorted({f"{r.get('benchmark')} ({r.get('protocol')})" for r in found}))
    return f"{card}: added the measured results of {path} ({benchmarks})"


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
    _require_online()

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


@command(kept="nothing was uploaded unless the commit had already been created")
def upload_command(argv: list[str] | None = None) -> int:
    """`longclip-push-to-hub DIR --repo-id OWNER/NAME`: refusals, bad repo ids and connection problems exit 2, Hub
    rejections (token, rights) exit 1, each as one `error:` line instead of a traceback."""
    parser = ArgumentParser(
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
        "--results",
        metavar="FILE",
        help="longclip-eval results.json whose rows for this folder go into its card (default: a results.json beside "
        "the folder, when it holds some)",
    )
    parser.add_argument("--no-results", action="store_true", help="upload the card as it is")
    parser.add_argument(
        "--include-training-state",
        action="store_true",
        help="also upload a checkpoint's optimizer, scheduler, RNG and Trainer state (to resume from the Hub)",
    )
    args = parser.parse_args(argv)
    left_out = [] if args.include_training_state else training_state_files(args.folder)
    validate_model_folder(args.folder)  # refusals come before the card is touched
    _require_online()
    added = None if args.no_results else pick_up_results(args.folder, args.results)
    if added:
        print(added)

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
    except HFValidationError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except HfHubHTTPError as err:
        print(f"error: the Hub refused the upload: {err}", file=sys.stderr)
        return 1
    print(f"uploaded {args.folder} to {args.repo_id}" + (f" ({args.revision})" if args.revision else "") + f": {url}")
    if left_out:
        shown = ", ".join(left_out[:8]) + (f" and {len(left_out) - 8} more" if len(left_out) > 8 else "")
        print(f"left out the training state ({shown}); --include-training-state uploads it")
    return 0


def main(argv: list[str] | None = None) -> None:
    """`upload_command` for scripts that call it: returns on success, exits with the status otherwise."""
    status = upload_command(argv)
    if status:
        sys.exit(status)


if __name__ == "__main__":
    main()
