"""The package's import layering (docs/architecture.md): walks the ast of every module under src/byon — imports
inside functions included, `if TYPE_CHECKING:` blocks excluded — and fails on any import cycle between modules
and on any import from a lower layer to a higher one."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
# bottom to top: a module may import its own layer and the ones below. `byon` is the package root (its
# `load_encoder` is the top-level API), so it sits with the CLI.
LAYERS = [
    ["byon.errors", "byon.draws"],
    ["byon.config"],
    ["byon.data", "byon.nn", "byon.corruption", "byon.losses"],
    ["byon.methods"],
    ["byon.rundir", "byon.provenance"],
    ["byon.eval", "byon.analysis", "byon.export", "byon.sample"],
    ["byon.engine"],
    ["byon.bench"],
    ["byon.cli", "byon"],
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted((SRC / "byon").rglob("*.py"))}


def _type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imports(path: Path, name: str, known: dict[str, Path]) -> set[str]:
    """The byon modules `path` imports (a `from package import name` counts the submodule when it is one)."""
    tree = ast.parse(path.read_text())
    skip = {id(n) for t in ast.walk(tree) if _type_checking(t) for b in t.body for n in ast.walk(b)}
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "byon"}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            if base.split(".")[0] != "byon":
                continue
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known}
    return {m for m in out if m in known and m != name}


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(path, name, known) for name, path in known.items()}


def layer(module: str) -> int:
    best = (-1, -1)
    for i, names in enumerate(LAYERS):
        for n in names:
            if module == n or module.startswith(n + "."):
                best = max(best, (len(n), i))
    assert best[1] >= 0, f"{module} is in no layer of LAYERS; add it"
    return best[1]


def cycles(g: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def _ignore_package_inits(g: dict[str, set[str]]) -> dict[str, set[str]]:
    """A package's __init__ re-exporting its submodules is not a cycle with a submodule that imports a sibling
    through the package: count a submodule's import of its own package as nothing."""
    return {m: {d for d in deps if not m.startswith(d + ".")} for m, deps in g.items()}


def test_every_module_is_in_a_layer():
    for m in modules():
        layer(m)


def test_no_import_points_up_a_layer():
    g = graph()
    up = sorted((m, d) for m, deps in g.items() for d in deps if layer(d) > layer(m))
    assert up == [], "imports from a lower layer to a higher one:\n" + "\n".join(f"  {m} -> {d}" for m, d in up)


def test_no_import_cycles():
    found = [sorted(c) for c in cycles(_ignore_package_inits(graph()))]
    assert found == [], f"import cycles: {found}"
