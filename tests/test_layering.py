"""Imports flow one way: cli -> reporting -> recipes -> inference -> evaluation -> models -> engine
-> data -> structures -> config / utils (a package imports only itself and packages below it,
lazy imports inside functions included); no import cycle between modules; no private name is
imported across packages, nor by scripts and benchmarks, which also never import the CLI."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "instseg"
LAYERS = [
    "cli",
    "reporting",
    "recipes",
    "inference",
    "evaluation",
    "models",
    "engine",
    "data",
    "structures",
    "config",
    "utils",
]
RANK = {name: len(LAYERS) - i for i, name in enumerate(LAYERS)}


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(imported module, names, line) for every ``instseg`` import in the file."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "instseg" or node.module.startswith("instseg."):
                out.append((node.module, [a.name for a in node.names], node.lineno))
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("instseg"):
                    out.append((a.name, [], node.lineno))
    return out


def _package(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


FILES = sorted(SRC.rglob("*.py"))


def test_every_package_has_a_layer():
    pkgs = {_package(_module_name(f)) for f in FILES} - {None}
    assert pkgs <= set(LAYERS), f"packages without a layer: {sorted(pkgs - set(LAYERS))}"


def test_imports_point_down_the_layers():
    bad = []
    for f in FILES:
        src = _package(_module_name(f))
        if src is None:
            continue
        for mod, _, line in _imports(f):
            dst = _package(mod)
            if dst is not None and dst != src and RANK[dst] > RANK[src]:
                bad.append(f"{f.relative_to(ROOT)}:{line}: {src} imports {mod} ({dst} is above)")
    assert not bad, "\n".join(bad)


def test_no_import_cycle_between_modules():
    known = {_module_name(f) for f in FILES}
    graph: dict[str, set[str]] = {}
    for f in FILES:
        me = _module_name(f)
        deps = set()
        for mod, names, _ in _imports(f):
            # "from instseg.x import y" may import the submodule instseg.x.y
            cands = [f"{mod}.{n}" for n in names if f"{mod}.{n}" in known] or [mod]
            deps |= {c for c in cands if c in known and c != me}
        graph[me] = deps
    # packages' __init__ re-exports are part of their package; ignore edges into a parent
    for me, deps in graph.items():
        graph[me] = {d for d in deps if not me.startswith(d + ".")}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for d in sorted(graph.get(n, ())):
            if state.get(d) == 1:
                return stack[stack.index(d) :] + [d]
            if d not in state and (cyc := visit(d)):
                return cyc
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (cyc := visit(n)):
            pytest.fail("import cycle: " + " -> ".join(cyc))


def test_no_private_names_across_packages():
    bad = []
    others = [*sorted((ROOT / "scripts").glob("*.py")), *sorted((ROOT / "benchmarks").glob("*.py"))]
    for f in [*FILES, *others]:
        src = _package(_module_name(f)) if f.is_relative_to(SRC) else "(script)"
        for mod, names, line in _imports(f):
            where = f"{f.relative_to(ROOT)}:{line}"
            if src == "(script)" and _package(mod) == "cli":
                bad.append(f"{where}: a script imports the CLI ({mod})")
            if _package(mod) == src:
                continue
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private or any(p.startswith("_") for p in mod.split(".")[1:]):
                bad.append(f"{where}: imports private {mod} {private}")
    assert not bad, "\n".join(bad)
