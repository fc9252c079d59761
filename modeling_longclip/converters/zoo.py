"""Convert the whole released zoo (conversion/zoo.json) in one run: whatever of it is under a downloads folder, or
fetched from the Hub first when there is a network; one verified folder per checkpoint and a table of the outcome.

The manifest says where each checkpoint lives (repo, files), which converter and text model it needs and what shapes
the real model has. Each entry goes through the family's own converter (`convert_longclip`, `convert_llm2clip` with
its SigLIP2 hand-over, `convert_proclip`), which verifies against its references before writing; afterwards the
written config is compared with the manifest's shapes (unless `allow_any_shape`, for tiny synthetic copies).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..common.cli import ArgumentParser, command
from ..common.errors import ConversionError, LongCLIPError

# What refuses one entry (it is reported and the run goes on); anything else is a bug.
REFUSALS = (LongCLIPError, OSError)
MANIFEST = Path(__file__).resolve().parents[2] / "conversion" / "zoo.json"
FAMILIES = ("longclip", "llm2clip", "proclip")
REPORT_NAME = "zoo_report.json"


class Missing(Exception):
    """An entry's files (or its text model) are neither under the downloads folder nor obtainable from the Hub."""


@dataclass
class Row:
    name: str
    family: str
    tower: str
    status: str  # verified | converted (shapes not compared) | refused | missing
    detail: str
    text_diff: float | None = None
    image_diff: float | None = None
    output: str | None = None
    seconds: float = 0.0


def load_manifest(path: str | Path | None = None) -> dict:
    """The manifest, checked: unique names, known families, every text model it names is listed."""
    path = Path(path or MANIFEST)
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ConversionError(f"zoo manifest {path}: {error}") from None
    names = [e["name"] for e in manifest["checkpoints"]]
    llms = {e["name"] for e in manifest["text_models"]}
    problems = [f"duplicate name {n}" for n in sorted({n for n in names if names.count(n) > 1})]
    for entry in manifest["checkpoints"]:
        if entry["family"] not in FAMILIES:
            problems.append(f"{entry['name']}: unknown family {entry['family']!r}")
        if entry["family"] != "longclip" and entry.get("text_model") not in llms:
            problems.append(f"{entry['name']}: text model {entry.get('text_model')!r} is not in text_models")
    if problems:
        raise ConversionError(f"zoo manifest {path}: " + "; ".join(problems))
    return manifest


class Fetcher:
    """Finds files as DOWNLOADS/<repo>/<file>; when online, fetches what is absent with huggingface_hub first
    (with bounded timeouts); offline it reports what is absent, without trying the network."""

    def __init__(self, downloads: str | Path, online: bool | None = None):
        from huggingface_hub import constants

        self.root = Path(downloads)
        self.online = (not constants.is_offline_mode()) if online is None else online

    def _hub(self, what: str, call):
        if not self.online:
            raise Missing(f"{what} is not under {self.root} (offline: not downloaded)")
        from ..export.hub import _bounded_hub_timeouts

        try:
            with _bounded_hub_timeouts():
                return call()
        except Exception as error:  # noqa: BLE001 - offline, unreachable, gated, absent: reported, never a traceback
            first = str(error).splitlines()[0] if str(error) else ""
            raise Missing(
                f"{what} is not under {self.root} and downloading it failed ({type(error).__name__}: {first})"
            ) from None

    def file(self, repo: str, name: str) -> Path:
        path = self.root / repo / name
        if not path.is_file():
            from huggingface_hub import hf_hub_download

            self._hub(f"{repo}/{name}", lambda: hf_hub_download(repo, name, local_dir=self.root / repo))
        return path

    def matching(self, repo: str, patterns: list[str]) -> list[Path]:
        """Files of the repo matching any pattern (fnmatch on the path relative to the repo folder)."""
        folder = self.root / repo

        def found():
            if not folder.is_dir():
                return []
            files = [
                p for p in sorted(folder.rglob("*")) if p.is_file() and ".cache" not in p.relative_to(folder).parts
            ]
            return [p for p in files if any(fnmatch.fnmatch(str(p.relative_to(folder)), pat) for pat in patterns)]

        if not found():
            from huggingface_hub import snapshot_download

            self._hub(
                f"{repo} ({', '.join(patterns)})",
                lambda: snapshot_download(repo, local_dir=folder, allow_patterns=patterns),
            )
        if not found():
            raise Missing(f"{repo}: nothing matching {patterns} under {folder}")
        return found()


def check_sha256(entry: dict, files: dict[str, Path]) -> None:
    """Compare the files whose checksum the manifest gives (none are known for the real releases)."""
    for name, expected in (entry.get("sha256") or {}).items():
        if expected is None or name not in files:
            continue
        digest = hashlib.sha256()
        with open(files[name], "rb") as handle:
            for block in iter(lambda: handle.read(1 << 24), b""):
                digest.update(block)
        if digest.hexdigest() != expected.lower():
            raise ConversionError(f"{files[name]}: sha256 {digest.hexdigest()} is not the manifest's {expected}.")


def sources(entry: dict, fetcher: Fetcher) -> list[tuple[str, Path]]:
    """(name, path to hand to the converter) for the entry; a `pattern` entry gives one per matching file."""
    repo = entry["repo"]
    if entry.get("files"):
        paths = {name: fetcher.file(repo, name) for name in entry["files"]}
        check_sha256(entry, paths)
        return [(entry["name"], paths[entry["files"][0]])]
    if entry.get("pattern"):
        found = fetcher.matching(repo, [entry["pattern"]])
        stem = lambda p: "-".join(p.relative_to(fetcher.root / repo).with_suffix("").parts).lower()  # noqa: E731
        return [(f"{entry['name']}-{stem(p)}", p) for p in found]
    found = fetcher.matching(repo, entry["allow_patterns"])
    if entry.get("source") == "file":
        if len(found) != 1:
            raise ConversionError(
                f"{repo}: expected one file matching {entry['allow_patterns']}, found {[p.name for p in found]}."
            )
        return [(entry["name"], found[0])]
    return [(entry["name"], fetcher.root / repo)]


def text_model_folder(manifest: dict, name: str, fetcher: Fetcher) -> Path:
    entry = next(e for e in manifest["text_models"] if e["name"] == name)
    fetcher.matching(entry["repo"], entry["allow_patterns"])
    folder = fetcher.root / entry["repo"]
    if not (folder / "config.json").is_file():
        raise Missing(f"text model {entry['repo']}: no config.json under {folder}")
    return folder


def check_lora(entry: dict, source: Path, llm: Path) -> None:
    """The SigLIP2 release needs its stage-1 LoRA (in the release, or beside the text model, where the converter looks
    for it too), unless the file itself carries the merged LLM."""
    from .lora import find_lora, lora_search_places
    from .siglip2 import LLM_PREFIX, _peek_keys, weight_file

    if not entry.get("requires_lora"):
        return
    release = weight_file(source).parent
    if find_lora(release, llm) is not None:
        return
    if not any(k.startswith(LLM_PREFIX) for k in _peek_keys(weight_file(source))):
        raise Missing(f"the PEFT LoRA adapter of the text model: none in {lora_search_places(release, llm)}")


SHAPE_FIELDS = {  # manifest name -> where the written config.json keeps it
    "vision_width": ("vision_config", "hidden_size"),
    "vision_layers": ("vision_config", "num_hidden_layers"),
    "vision_heads": ("vision_config", "num_attention_heads"),
    "vision_mlp": ("vision_config", "intermediate_size"),
    "patch_size": ("vision_config", "patch_size"),
    "image_size": ("vision_config", "image_size"),
    "embed_dim": ("projection_dim",),
    "text_width": ("text_config", "hidden_size"),
    "text_positions": ("text_config", "max_position_embeddings"),
}


def shape_mismatches(expected: dict | None, folder: Path) -> list[str]:
    config = json.loads((folder / "config.json").read_text())
    problems = []
    for field, want in (expected or {}).items():
        value = config
        for part in SHAPE_FIELDS[field]:
            value = value.get(part) if isinstance(value, dict) else None
        if want is not None and value is not None and value != want:
            problems.append(f"{field} {value} (expected {want})")
    return problems


def convert_entry(entry: dict, source: Path, llm: Path | None, output: Path, overwrite: bool):
    from .llm2clip import convert_llm2clip
    from .longclip import convert_longclip
    from .proclip import convert_proclip

    if entry["family"] == "longclip":
        return convert_longclip(source, output, overwrite=overwrite)
    convert = convert_llm2clip if entry["family"] == "llm2clip" else convert_proclip
    return convert(source, llm, output, overwrite=overwrite)


def run_entry(manifest, entry, fetcher, output_root: Path, allow_any_shape: bool, overwrite: bool) -> list[Row]:
    base = dict(family=entry["family"], tower=entry.get("tower", "clip"))
    start = time.monotonic()
    try:
        found = sources(entry, fetcher)
        llm = text_model_folder(manifest, entry["text_model"], fetcher) if entry["family"] != "longclip" else None
    except Missing as error:
        return [Row(entry["name"], status="missing", detail=str(error), **base)]
    except REFUSALS as error:
        return [Row(entry["name"], status="refused", detail=str(error), **base)]
    rows = []
    for name, source in found:
        output = output_root / name
        try:
            if llm is not None:
                check_lora(entry, source, llm)
            parity = convert_entry(entry, source, llm, output, overwrite)
        except Missing as error:
            rows.append(Row(name, status="missing", detail=str(error), **base))
            continue
        except REFUSALS as error:
            rows.append(Row(name, status="refused", detail=str(error), seconds=time.monotonic() - start, **base))
            continue
        diffs = dict(text_diff=parity.text_max_abs_diff, image_diff=parity.image_max_abs_diff)
        problems = [] if allow_any_shape or entry.get("pattern") else shape_mismatches(entry.get("expected"), output)
        if problems:
            shutil.rmtree(output)
            status, detail, written = "refused", "shapes differ from the manifest: " + ", ".join(problems), None
        else:
            status = "converted" if allow_any_shape or entry.get("pattern") else "verified"
            detail, written = "parity checked" + ("" if status == "verified" else "; shapes not compared"), str(output)
        rows.append(
            Row(name, status=status, detail=detail, output=written, seconds=time.monotonic() - start, **diffs, **base)
        )
    return rows


def run_zoo(
    downloads: str | Path,
    output: str | Path,
    only: list[str] | None = None,
    manifest: str | Path | dict | None = None,
    allow_any_shape: bool = False,
    overwrite: bool = False,
    online: bool | None = None,
) -> list[Row]:
    """Convert every selected entry; returns the rows and writes them to OUTPUT/zoo_report.json."""
    manifest = manifest if isinstance(manifest, dict) else load_manifest(manifest)
    entries = manifest["checkpoints"]
    if only:
        unknown = sorted(set(only) - {e["name"] for e in entries})
        if unknown:
            raise ConversionError(f"--only: unknown names {unknown}; the manifest has {[e['name'] for e in entries]}")
        entries = [e for e in entries if e["name"] in only]
    fetcher, output = Fetcher(downloads, online), Path(output)
    output.mkdir(parents=True, exist_ok=True)
    rows = [
        row for entry in entries for row in run_entry(manifest, entry, fetcher, output, allow_any_shape, overwrite)
    ]
    (output / REPORT_NAME).write_text(json.dumps([asdict(r) for r in rows], indent=1))
    return rows


def format_table(rows: list[Row]) -> str:
    def diff(value):
        return "" if value is None else f"{value:.1e}"

    lines = [f"{'name':44} {'tower':8} {'status':10} {'text':>8} {'image':>8}  detail"]
    for r in rows:
        detail = r.detail if len(r.detail) <= 110 else r.detail[:107] + "..."
        lines.append(f"{r.name:44} {r.tower:8} {r.status:10} {diff(r.text_diff):>8} {diff(r.image_diff):>8}  {detail}")
    counts = {s: sum(r.status == s for r in rows) for s in ("verified", "converted", "refused", "missing")}
    lines.append(", ".join(f"{n} {s}" for s, n in counts.items()))
    return "\n".join(lines)


@command(kept="every finished folder is kept; the one in progress was not written")
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(
        prog="longclip-convert-zoo", description="Convert every released checkpoint found (or fetched)."
    )
    parser.add_argument("--downloads", required=True, help="folder holding (or receiving) DOWNLOADS/<repo>/<file>")
    parser.add_argument(
        "--output", required=True, help="one converted folder per entry is written here, plus zoo_report.json"
    )
    parser.add_argument("--only", nargs="+", metavar="NAME", help="convert just these manifest entries")
    parser.add_argument(
        "--manifest", default=None, help=f"another manifest (default: {MANIFEST.name} of the checkout)"
    )
    parser.add_argument("--offline", action="store_true", help="never download; report what is absent")
    parser.add_argument(
        "--allow-any-shape",
        action="store_true",
        help="do not compare with the manifest's real-model shapes (tiny synthetic copies)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing output folders")
    args = parser.parse_args(argv)
    rows = run_zoo(
        args.downloads,
        args.output,
        args.only,
        args.manifest,
        args.allow_any_shape,
        args.overwrite,
        online=False if args.offline else None,
    )
    print(format_table(rows))
    print(f"report: {Path(args.output) / REPORT_NAME}")
    return 1 if any(r.status == "refused" for r in rows) else 0
