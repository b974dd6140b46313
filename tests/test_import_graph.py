"""The package's import graph has no cycle.

Every `import` / `from ... import` in maskedbert/ and kernels/ counts, at module level and inside
functions alike: a function-level import hides a cycle from the interpreter but not from a reader.
"""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Import name of each source folder (kernels/ installs as maskedbert.kernels).
SOURCES = {"maskedbert": ROOT / "maskedbert", "maskedbert.kernels": ROOT / "kernels"}


def _module_files():
    files = {}
    for package, folder in SOURCES.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            name = ".".join([package, *parts])
            if name.startswith("maskedbert.kernels") and package == "maskedbert":
                continue  # a stray maskedbert/kernels folder is not the installed one
            files[name] = path
    return files


def _imported_names(name, path, is_package):
    """Fully qualified names each import statement in `path` refers to."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if is_package else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            for alias in node.names:
                # `from pkg import submodule` refers to the submodule, `from pkg import f` to pkg.
                yield f"{module}.{alias.name}"


def import_graph():
    files = _module_files()
    graph = {}
    for name, path in files.items():
        edges = set()
        for target in _imported_names(name, path, path.name == "__init__.py"):
            # The deepest known module the name refers to (`from a.b import f` -> a.b).
            while target and target not in files:
                target = target.rpartition(".")[0]
            if target and target != name:
                edges.add(target)
        graph[name] = edges
    return graph


def find_cycle(graph):
    """One cycle as a list of modules [a, b, ..., a], or None."""
    state = {}  # 1: on the current path, 2: done
    stack = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_graph_sees_known_edges():
    graph = import_graph()
    assert len(graph) > 50
    assert "maskedbert.kernels" in graph["maskedbert.modules"]
    assert "maskedbert.train.trainer" in graph


def test_find_cycle_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle():
    assert find_cycle(import_graph()) is None
