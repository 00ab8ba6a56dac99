"""The package's layering, checked on its source (ast), not by importing it.

Layers, lowest first (ARCHITECTURE.md): ``errors``/``_version`` ->
``_bindings`` (with the compiled ``_llama``) -> ``objects`` -> ``engine`` ->
``api`` -> ``apps`` -> ``integrations`` (Ray hosts: the API and the
server app); the package's ``__init__``/``__main__`` sit on top.
A module may import only from its own layer or below (imports for type
checking included), the imports between modules form no circle (imports
inside functions count; imports under ``TYPE_CHECKING``, which never run,
do not), and only the binding layer touches the compiled ``lib``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import llama_cffi

PKG = Path(llama_cffi.__file__).resolve().parent
SRC = Path(__file__).resolve().parent.parent / "src" / "llama_cffi"
ROOT = SRC if SRC.is_dir() else PKG

RANKS = {"errors": 0, "_version": 0, "_llama": 1, "_bindings": 1, "objects": 2,
         "engine": 3, "api": 4, "apps": 5, "compat": 5, "integrations": 6, "__init__": 7,
         "__main__": 7, "raw": 7}
# Public modules that re-export ``lib`` for users (an import, never a call of it).
LIB_REEXPORTS = {"raw"}
# compat (llama-cpp-python's API over LLM) is an application of the API, as apps are
MAX_LINES = 600


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _is_package(name: str) -> bool:
    return (ROOT / name.replace(".", "/") / "__init__.py").exists() or name == "__init__"


def _resolve(module: str, level: int, target: str | None) -> str:
    """Absolute name (inside the package) of a relative import."""
    parts = module.split(".") if module != "__init__" else []
    if not _is_package(module):
        parts = parts[:-1]
    if level > 1:
        parts = parts[: len(parts) - (level - 1)]
    if target:
        parts = parts + target.split(".")
    return ".".join(parts)


def _typing_only(tree: ast.AST) -> set[ast.AST]:
    """Nodes under ``if TYPE_CHECKING:``."""
    out: set[ast.AST] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                out.update(ast.walk(child))
    return out


def _imports(name: str, path: Path, *, typing: bool = True) -> set[str]:
    """The package modules ``name`` imports, anywhere in its body (with
    ``typing=False``: leaving out imports under TYPE_CHECKING)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = set() if typing else _typing_only(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if node in skip:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level == 0:
                if node.module and node.module.split(".")[0] == "llama_cffi":
                    base = node.module.split(".", 1)[1] if "." in node.module else ""
                else:
                    continue
            else:
                base = _resolve(name, node.level, node.module)
            for alias in node.names:
                sub = f"{base}.{alias.name}" if base else alias.name
                if sub in MODULES:
                    found.add(sub)
                elif base in MODULES or base == "_llama":
                    found.add(base)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "llama_cffi" and "." in alias.name:
                    found.add(alias.name.split(".", 1)[1])
    found.discard(name)
    return found


ALL_IMPORTS = {name: _imports(name, path) for name, path in MODULES.items()}
GRAPH = {name: _imports(name, path, typing=False) for name, path in MODULES.items()}


def _rank(name: str) -> int:
    return RANKS[name.split(".")[0]]


def test_every_module_is_in_a_layer() -> None:
    unknown = [m for m in MODULES if m.split(".")[0] not in RANKS]
    assert not unknown, f"modules outside the layers of ARCHITECTURE.md: {unknown}"


def test_imports_point_down_only() -> None:
    upward = [f"{m} (layer {_rank(m)}) imports {d} (layer {_rank(d)})"
              for m, deps in ALL_IMPORTS.items() for d in deps if _rank(d) > _rank(m)]
    assert not upward, "upward imports:\n" + "\n".join(sorted(upward))


def _cycles() -> list[list[str]]:
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(GRAPH.get(m, ())):
            if d not in GRAPH:
                continue
            if state.get(d) == 1:
                cycles.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m)
    return cycles


def test_no_import_circles() -> None:
    cycles = _cycles()
    assert not cycles, "import circles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_cycle_finder_finds_cycles() -> None:
    saved = dict(GRAPH)
    try:
        GRAPH["objects.model"] = GRAPH["objects.model"] | {"api.llm"}
        GRAPH["api.llm"] = GRAPH["api.llm"] | {"objects.model"}
        assert any("api.llm" in c and "objects.model" in c for c in _cycles())
    finally:
        GRAPH.clear()
        GRAPH.update(saved)


def _uses_lib(path: Path) -> list[int]:
    """Lines that name the compiled ``lib`` (a bare name or an import of it)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id == "lib":
            lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and any(a.name == "lib" for a in node.names):
            lines.append(node.lineno)
        elif isinstance(node, ast.Attribute) and node.attr == "lib" and \
                isinstance(node.value, ast.Name) and node.value.id in ("raw", "_raw", "_llama"):
            lines.append(node.lineno)
    return lines


def test_only_the_binding_layer_calls_lib() -> None:
    offenders = {m: _uses_lib(p) for m, p in MODULES.items()
                 if not m.startswith("_bindings") and m not in LIB_REEXPORTS}
    offenders = {m: lines for m, lines in offenders.items() if lines}
    assert not offenders, f"modules outside _bindings that use lib (module: lines): {offenders}"


def test_the_lib_finder_finds_lib(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("from llama_cffi._bindings.raw import lib\nx = lib.llama_n_ctx\n")
    assert _uses_lib(probe) == [1, 2]


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_size(name: str) -> None:
    n = len(MODULES[name].read_text(encoding="utf-8").splitlines())
    assert n <= MAX_LINES, f"{name} has {n} lines; split it (at most about 600)"


def test_lib_reexports_only_import_it() -> None:
    """``llama_cffi.raw`` hands ``lib`` to users; it must not call it itself."""
    for name in LIB_REEXPORTS:
        tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
        uses = [n.lineno for n in ast.walk(tree)
                if isinstance(n, (ast.Name, ast.Attribute)) and
                (getattr(n, "id", None) == "lib" or getattr(n, "attr", None) == "lib")]
        assert not uses, f"{name} uses lib beyond importing it (lines {uses})"
