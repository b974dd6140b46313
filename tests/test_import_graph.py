"""The package's import graph has no cycle, and every import inside a function says why it is there.

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
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield from _names_of(node, name, is_package)


def _names_of(node, name, is_package):
    """Fully qualified names one import statement in module `name` refers to."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    module = node.module
    if node.level:
        base = (name if is_package else name.rpartition(".")[0]).split(".")
        module = ".".join(base[: len(base) - (node.level - 1)] + ([node.module] if node.module else []))
    # `from pkg import submodule` refers to the submodule, `from pkg import f` to pkg.
    return [f"{module}.{alias.name}" for alias in node.names]


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


# A function-level import is kept only for one of these reasons, written in a comment on its first line:
# the command's --help must not load torch (or numpy, matplotlib: "light"), the dependency is optional,
# or a cycle that moving a definition down a layer cannot remove.
IMPORT_REASONS = ("keeps --help torch-free", "keeps --help light", "optional dependency", "import cycle")


def _imports_triton(path):
    """`path` imports triton at module level (a Triton kernel module)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names = [alias.name for node in tree.body if isinstance(node, ast.Import) for alias in node.names]
    names += [node.module or "" for node in tree.body if isinstance(node, ast.ImportFrom)]
    return any(name == "triton" or name.startswith("triton.") for name in names)


def _function_level_imports():
    """(file relative to the root, line number, source line, imported modules) of every import inside a function."""
    files = _module_files()
    for name, path in files.items():
        source = path.read_text()
        lines = source.splitlines()
        tree = ast.parse(source, filename=str(path))
        functions = [node for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]
        seen = set()
        for function in functions:
            for node in ast.walk(function):
                if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in seen:
                    seen.add(id(node))
                    targets = set()
                    for target in _names_of(node, name, path.name == "__init__.py"):
                        while target.rpartition(".")[0] and target not in files:
                            target = target.rpartition(".")[0]
                        targets.add(target)
                    yield (path.relative_to(ROOT).as_posix(), node.lineno, lines[node.lineno - 1], targets)


def _defers_triton(targets):
    """Every target is triton or a kernel module that imports it: the package works without triton."""
    files = _module_files()
    return all(t == "triton" or t.startswith("triton.") or (t in files and _imports_triton(files[t])) for t in targets)


def test_function_level_imports_say_why():
    unexplained = []
    for file, line, text, targets in _function_level_imports():
        comment = text.partition("#")[2]
        if any(reason in comment for reason in IMPORT_REASONS):
            continue
        if file.startswith("kernels/") and _defers_triton(targets):
            continue  # triton loads only when a Triton launcher runs (tests/test_no_triton.py)
        unexplained.append(f"{file}:{line}: {text.strip()}")
    assert not unexplained, ("imports inside functions with no reason: move each to the top of its file, or "
                             f"say why in a comment ({' / '.join(IMPORT_REASONS)}):\n" + "\n".join(unexplained))


def test_the_reason_check_sees_a_function_level_import():
    found = {(file, line) for file, line, _, _ in _function_level_imports()}
    assert any(file == "maskedbert/models.py" for file, _ in found)  # transformers, deferred for --help
    assert any(file == "kernels/_runtime.py" for file, _ in found)  # triton, deferred for machines without it
