"""The layout rules of docs/architecture.md, checked on the source (ast only: nothing is imported).

* Runtime packages (``streamer``, ``engine``, ``dashboard``, ``stemwatch``) never import ``lab``
  (evaluation, benchmarks, soak, held-out sets, training), not even inside a function.
* No import cycle between packages (a package here is a directory with ``__init__.py``: ``engine``,
  ``engine.chem``, ``lab.train``, ...). The CLI and the bench runner reach lab commands by name
  (``"lab.cli"``, ``"lab.bench_pipeline:bench_pipeline"``) through importlib, which is not an
  import statement and is allowed.
* No module reads another module's private (``_underscore``) name through ``from X import _y``.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
TOP = ("streamer", "engine", "dashboard", "stemwatch", "lab")
RUNTIME = ("streamer", "engine", "dashboard", "stemwatch")


def _modules() -> dict[str, Path]:
    mods = {}
    for top in TOP:
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = path
    return mods


MODULES = _modules()


@functools.cache
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


@functools.cache
def _imports(name: str, path: Path) -> list[tuple[str, list[str], int]]:
    """(imported module, imported names, line) for every import statement anywhere in the file."""
    tree = _tree(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            names = [a.name for a in node.names]
            out.append((mod, names, node.lineno))
            # ``from pkg import submodule`` imports pkg.submodule
            out += [(f"{mod}.{n}", [], node.lineno) for n in names if f"{mod}.{n}" in MODULES]
    return [o for o in out if o[0].split(".")[0] in TOP]


def _package_of(module: str) -> str:
    """The package a module belongs to (itself when it is a package)."""
    path = MODULES.get(module)
    if path is not None and path.name == "__init__.py":
        return module
    return module.rpartition(".")[0] or module


def _is_runtime(module: str) -> bool:
    return module.split(".")[0] in RUNTIME


def test_modules_found():
    assert "engine.pipeline" in MODULES and "lab.soak" in MODULES and "stemwatch.config" in MODULES


def test_runtime_never_imports_lab():
    bad = [f"{MODULES[m].relative_to(ROOT)}:{line} imports {imp}"
           for m in MODULES if _is_runtime(m)
           for imp, _names, line in _imports(m, MODULES[m]) if imp.split(".")[0] == "lab"]
    assert not bad, "runtime -> laboratory imports:\n" + "\n".join(bad)


def _package_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for m, path in MODULES.items():
        src = _package_of(m)
        for imp, _names, _line in _imports(m, path):
            target = imp
            while target and target not in MODULES:      # `from engine.types import X`: X is no module
                target = target.rpartition(".")[0]
            if not target:
                continue
            dst = _package_of(target)
            # a package importing its own parent's __init__ (or vice versa) is one unit
            if dst != src and not src.startswith(dst + ".") and not dst.startswith(src + "."):
                graph.setdefault(src, set()).add(dst)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle in ``graph`` as a list of nodes (first == last), or None (iterative DFS)."""
    colour: dict[str, int] = {}
    for start in sorted(graph):
        if colour.get(start):
            continue
        stack = [(start, iter(sorted(graph.get(start, ()))))]
        path = [start]
        colour[start] = 1
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                colour[node] = 2
                stack.pop()
                path.pop()
            elif colour.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif not colour.get(nxt):
                colour[nxt] = 1
                stack.append((nxt, iter(sorted(graph.get(nxt, ())))))
                path.append(nxt)
    return None


def test_find_cycle_detects_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}}) is None


def test_no_package_import_cycle():
    cycle = find_cycle(_package_graph())
    assert cycle is None, "package import cycle: " + " -> ".join(cycle)


def test_no_private_names_imported_across_modules():
    bad = []
    for m, path in MODULES.items():
        for imp, names, line in _imports(m, path):
            if imp.split(".")[0] in TOP and imp != m:
                bad += [f"{path.relative_to(ROOT)}:{line} imports {imp}.{n}" for n in names
                        if n.startswith("_") and not n.startswith("__")]
    assert not bad, "private names imported from other modules:\n" + "\n".join(bad)


def test_named_targets_exist():
    """The CLI and the bench runner name modules in strings (imported only when a command runs):
    each named module exists and defines the named function (checked without importing it)."""
    from stemwatch.bench import BENCHES
    from stemwatch.cli import COMMAND_MODULES

    targets = [f"{m}:register" for m in COMMAND_MODULES] + list(BENCHES.values())
    missing = []
    for target in targets:
        module, func = target.split(":")
        path = MODULES.get(module)
        defined = set() if path is None else {
            n.name for n in _tree(path).body if isinstance(n, ast.FunctionDef)}
        if func not in defined:
            missing.append(target)
    assert not missing, f"named but not defined: {missing}"


#: attribute accesses ``obj._name`` on something other than self/cls that are accepted, with why
PRIVATE_ACCESS_ALLOWED = {
    ("lab/dashboard/bench.py", "_fast_tick"): "the bench drives one display tick of the app without a browser",
    ("lab/train/network.py", "_modules"): "torch's nn.Sequential container (third party)",
}


def test_no_private_attribute_access_across_objects():
    """No ``other._field`` (EventLogic reading Tracker's ``_ps``, service.py ``tracker._ring_len``, ...):
    modules talk through public names and plain data."""
    bad = []
    for m, path in MODULES.items():
        rel = str(path.relative_to(ROOT))
        for node in ast.walk(_tree(path)):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                    and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
                    and (rel, node.attr) not in PRIVATE_ACCESS_ALLOWED):
                bad.append(f"{rel}:{node.lineno} .{node.attr}")
    assert not bad, "private attributes read across objects:\n" + "\n".join(bad)
