"""The package's modules import one another one way: no circle, lazy (in-function) imports included."""
import ast
from pathlib import Path

import sgg_kernels

PACKAGE = Path(sgg_kernels.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """The package modules a file imports anywhere in it (module level or inside functions)."""
    here = module_name(path).split(".")
    if path.name != "__init__.py":
        here = here[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = here[:len(here) - node.level + 1] if node.level else []
            target = ".".join(base + (node.module.split(".") if node.module else []))
            for alias in node.names:  # `from . import ops` names a module
                candidate = f"{target}.{alias.name}"
                found.add(candidate if candidate in MODULES else target)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m in MODULES and m != module_name(path)}


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def test_no_import_circles():
    graph = {name: imports(path) for name, path in MODULES.items()}
    # A package's __init__ re-exports its modules; an edge into it from below is the circle to find.
    state, path = {}, []

    def visit(node):
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                raise AssertionError("import circle: " + " -> ".join(path[path.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = "done"
    for name in sorted(graph):
        if name not in state:
            visit(name)
