"""The package's layout rules (README "Layout"): the root is the Hub payload, rooms import downward only, no two
files import each other, every console script follows the one command-line rule."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest
import tomllib

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "modeling_longclip"

PAYLOAD = re.compile(r"^(configuration|modeling|processing|tokenization|image_processing)_\w+\.py$")
PAYLOAD_SIBLINGS = {"contrastive.py", "embedding.py", "processing_options.py", "transformers_compat.py"}
# Rooms from the bottom up: a module imports only its own room and rooms of a lower rank.
RANKS = {
    "payload": 0,
    "common": 1,
    "export": 2,
    "converters": 3,
    "evaluation": 3,
    "features": 3,
    "training": 4,
    "search": 5,
    "demo": 6,  # the embedded default shows the whole product, photo search included
    "cli": 7,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def room(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1 or (len(parts) == 2 and (PACKAGE / f"{parts[1]}.py").is_file()):
        return "payload"
    return parts[1]


def imported_modules(path: Path) -> set[str]:
    """Every package module `path` imports, lazily inside functions too (resolved to files that exist)."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets = []
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            targets = [stem] + [f"{stem}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        for target in targets:
            if target.startswith("modeling_longclip") and _exists(target):
                found.add(target)
    return found


def _exists(module: str) -> bool:
    relative = Path(*module.split("."))
    return (REPO / relative.with_suffix(".py")).is_file() or (REPO / relative / "__init__.py").is_file()


def package_files() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_the_root_holds_only_the_hub_payload():
    stray = [
        p.name
        for p in PACKAGE.glob("*.py")
        if p.name != "__init__.py" and not PAYLOAD.match(p.name) and p.name not in PAYLOAD_SIBLINGS
    ]
    assert stray == [], f"tools belong in a named subpackage, not the payload root: {stray}"
    rooms = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert rooms <= set(RANKS), f"a new room needs a rank in RANKS: {rooms - set(RANKS)}"


def test_rooms_import_downward_only():
    upward = []
    for path in package_files():
        source = module_name(path)
        if source == "modeling_longclip":  # the package's own __init__ registers the payload and the moved paths
            continue
        for target in imported_modules(path):
            if target == "modeling_longclip":
                target_room = "payload"
            else:
                target_room = room(target)
            if target_room != room(source) and RANKS[target_room] >= RANKS[room(source)]:
                upward.append(f"{source} -> {target}")
    assert upward == [], "imports that run sideways or up the layers:\n" + "\n".join(upward)


def test_the_payload_imports_only_torch_transformers_and_its_siblings():
    for path in PACKAGE.glob("*.py"):
        if path.name == "__init__.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level:
                assert node.level == 1 and node.module and "." not in node.module, f"{path.name}: {ast.unparse(node)}"


def test_no_two_files_import_each_other():
    graph = {module_name(p): {t for t in imported_modules(p) if t != module_name(p)} for p in package_files()}
    # A package's __init__ re-exports its files; the files importing their package for a name is the same edge.
    cycles = []
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1 and not _package_edge(node, nxt, trail):
                cycles.append(
                    " -> ".join(trail[trail.index(nxt) :] + [node, nxt]) if nxt in trail else f"{node} -> {nxt}"
                )
            elif nxt not in state:
                visit(nxt, trail + [node])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    assert cycles == [], "import cycles:\n" + "\n".join(cycles)


def _package_edge(node: str, nxt: str, trail: list[str]) -> bool:
    """`pkg/__init__` importing `pkg.x` while `pkg.x` (lazily) imports from `pkg`: Python's own package structure."""
    return node.startswith(nxt + ".") or nxt.startswith(node + ".")


def console_scripts() -> dict[str, str]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]


@pytest.mark.parametrize("name", sorted(console_scripts()))
def test_every_console_script_follows_the_command_rule(name):
    module, function = console_scripts()[name].split(":")
    entry = getattr(importlib.import_module(module), function)
    if name == "longclip":  # the umbrella dispatches to the others, each checked here
        from modeling_longclip.cli import SUBCOMMANDS

        for target, _ in SUBCOMMANDS.values():
            sub_module, sub_function = target.split(":")
            sub = getattr(importlib.import_module(f"modeling_longclip.{sub_module}"), sub_function)
            assert hasattr(sub, "__wrapped_main__"), target
        return
    assert hasattr(entry, "__wrapped_main__"), f"{name} ({module}:{function}) is not wrapped by common.cli.command"
