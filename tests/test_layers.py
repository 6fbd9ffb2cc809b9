"""The house's layers, checked on every test run: imports run from the entry point down, never up,
the stages never import each other, and no two modules import each other in a loop.

Every `import` statement counts, also those inside functions and under TYPE_CHECKING: a lazy import
is still a dependency. Plugins found by name at run time (the method registry's discovery of
detox/methods/*.py, in detox.core.methods) are not imports and do not count.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Top to bottom; a module belongs to the layer of its longest matching name. A module may import its own
# layer or lower ones.
LAYERS = (
    ("entry", ("launch",)),
    ("jobs", ("detox.jobs", "detox.callbacks", "detox.costs")),
    ("pipeline and edges", ("detox.pipeline", "detox.tracking", "detox.search", "detox.report", "detox.scorer_check")),
    # the job's config, composed of every package's options and the methods' (so above the methods)
    ("job config", ("detox.job",)),
    ("methods", ("detox.methods",)),
    ("stages", ("detox.data", "detox.training", "detox.steering", "detox.evaluation", "detox.toy")),
    # what the job's config is made of: each stage package's options, the registry of data source kinds,
    # the embedded world, the formats of real data; light modules that any stage may read
    ("options and domain", ("detox.data.config", "detox.training.config", "detox.steering.config",
                            "detox.evaluation.config", "detox.toy.config", "detox.data.sources", "detox.data.parts",
                            "detox.data.corpora", "detox.data.evalsets", "detox.data.world", "detox.data.documents",
                            "detox.data.revisions")),
    ("core", ("detox.core", "detox")),
)
INDEPENDENT = ("detox.data", "detox.training", "detox.steering", "detox.evaluation", "detox.toy")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    files = [REPO / "launch.py", *sorted((REPO / "detox").rglob("*.py"))]
    return {module_name(path): path for path in files}


def imports_of(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """The project modules that `path` (module `name`) imports, anywhere in its body."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, up level - 1
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import mod` imports the module pkg.mod; `from mod import name` the module mod
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # `import a.b.c` of a name inside a module: its module
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def with_packages(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The graph as Python runs it: importing a.b.c first runs the packages a and a.b (their
    __init__.py), so a package that imports what imports a module inside it makes a loop too."""
    run = {}
    for module, targets in graph.items():
        run[module] = set(targets)
        for target in targets:
            while "." in target:
                target = target.rpartition(".")[0]
                if target in graph and target != module and not module.startswith(target + "."):
                    run[module].add(target)
    return run


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imports_of(path, name, modules) for name, path in modules.items()}


def layer_of(module: str) -> int:
    best, rank = -1, None
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            matches = module.startswith(prefix) if prefix.endswith(".") else \
                module == prefix or module.startswith(prefix + ".")
            if matches and len(prefix) > best:
                best, rank = len(prefix), index
    if rank is None:
        raise AssertionError(f"{module}: in no layer of tests/test_layers.py; place it there")
    return rank


def stage_of(module: str) -> str | None:
    return next((s for s in INDEPENDENT if module == s or module.startswith(s + ".")), None)


def violations(graph: dict[str, set[str]]) -> list[str]:
    """Every import that runs up a layer or across stages, and every import loop, in words."""
    found = []
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            low, high = layer_of(module), layer_of(target)
            if high < low:
                found.append(f"{module} ({LAYERS[low][0]}) imports {target} ({LAYERS[high][0]}): an upward import")
            elif stage_of(module) and stage_of(target) and stage_of(module) != stage_of(target) \
                    and layer_of(target) == layer_of(module):
                found.append(f"{module} imports {target}: one stage imports another")
    found += [f"import loop: {' -> '.join(loop)}" for loop in cycles(with_packages(graph))]
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One loop (a -> ... -> a) per strongly connected group of modules (Tarjan's algorithm)."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [loop_through(sorted(group)[0], group, graph) for group in groups]


def loop_through(start: str, group: set[str], graph: dict[str, set[str]]) -> list[str]:
    """A shortest path start -> ... -> start inside `group` (breadth first)."""
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for target in sorted(graph[node] & group):
                if target == start:
                    return paths[node] + [start]
                if target not in paths:
                    paths[target] = paths[node] + [target]
                    following.append(target)
        frontier = following
    raise AssertionError(f"no loop through {start}")


def test_the_house_keeps_its_layers_and_has_no_import_loop():
    assert violations(import_graph()) == []


def test_every_module_has_a_layer():
    for module in import_graph():
        layer_of(module)


@pytest.mark.parametrize("planted, expected", [
    ({"detox.core.cache": {"detox.pipeline"}}, "detox.core.cache (core) imports detox.pipeline (pipeline and edges)"),
    ({"detox.data.packing": {"detox.evaluation.evaluate"}}, "one stage imports another"),
    ({"detox.steering.probe": {"detox.steering.steer"}}, "import loop: detox.steering.probe -> detox.steering.steer"),
    # a package whose __init__ imports what imports a module inside that package
    ({"detox.methods": {"detox.job"}}, "import loop: detox.job -> detox.methods -> detox.job"),
])
def test_a_planted_upward_import_or_loop_is_caught(planted, expected):
    graph = import_graph()
    for module, targets in planted.items():
        graph[module] = graph[module] | targets
    assert any(expected in line for line in violations(graph)), violations(graph)
