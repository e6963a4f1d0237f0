"""The repository stands alone: nothing tracked reads outside it, and the runtime packages are layered without cycles."""

from __future__ import annotations

import ast
import pathlib
import re
import subprocess

REPO = pathlib.Path(__file__).resolve().parents[2]

# Lower layers never import higher ones: preprocess (pure functions) < attention (torch math) < models (networks and
# loading) < pipeline (what a node runs) < nodes (schemas). errors.py and model_folders.py sit below them all.
LAYERS = {"errors": 0, "model_folders": 1, "preprocess": 2, "attention": 3, "models": 4, "pipeline": 5, "nodes": 6}
OUTSIDE = re.compile(r"\.\./shared|/work/shared|parents\[\d\][^\n]*\"shared\"|/ \"shared\" /|\.\./DESIGN\.md|\bDESIGN(\.md)?\s*§?\d")


def tracked_text_files() -> list[pathlib.Path]:
    names = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    return [REPO / n for n in names if n.endswith((".py", ".md", ".sh", ".toml", ".txt", ".json", ".yaml", ".cfg")) or n in ("Makefile", ".ci/run")]


def test_no_tracked_file_refers_to_a_path_outside_the_repository():
    offenders = []
    for path in tracked_text_files():
        if path.name == "test_repository.py":
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if OUTSIDE.search(line):
                offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()[:120]}")
    assert not offenders, "tracked files refer to paths a clone does not have:\n" + "\n".join(offenders)


def pack_imports(path: pathlib.Path) -> set[str]:
    """The top-level pack modules/packages a runtime file imports through relative imports."""
    package_depth = len(path.relative_to(REPO).parts) - 1
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            up = node.level - 1
            if up > package_depth:
                continue
            parts = list(path.relative_to(REPO).parts[:-1])[: package_depth - up] + (node.module or "").split(".")
            parts = [p for p in parts if p]
            if parts:
                found.add(parts[0])
            else:
                found.update(alias.name for alias in node.names)
    return found


def runtime_files() -> list[pathlib.Path]:
    files = []
    for layer in LAYERS:
        target = REPO / layer
        files += sorted(target.rglob("*.py")) if target.is_dir() else [REPO / f"{layer}.py"]
    return files


def test_runtime_layers_import_only_downwards():
    wrong = []
    for path in runtime_files():
        own = path.relative_to(REPO).parts[0].removesuffix(".py")
        for imported in pack_imports(path):
            if imported in LAYERS and imported != own and LAYERS[imported] >= LAYERS[own]:
                wrong.append(f"{path.relative_to(REPO)} imports {imported} (layer {LAYERS[imported]} >= {LAYERS[own]})")
    assert not wrong, "\n".join(wrong)


def test_the_runtime_never_imports_diffusers_or_ray():
    hits = []
    for path in runtime_files() + [REPO / "__init__.py"]:
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            hits += [f"{path.relative_to(REPO)}: {n}" for n in names if n.split(".")[0] in ("diffusers", "ray")]
    assert not hits, hits
