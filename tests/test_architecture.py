"""The import graph of tfascl/: no cycle, and the layers import downwards only.

The graph is read from the source with ``ast``; nothing of tfascl is imported. Every
``import`` counts, at module level or inside a function: a lazy import is still a
dependency, it only moves the failure to the first call. Run as a script to print the
graph (``python tests/test_architecture.py``; docs/ARCHITECTURE.md has the layers).
"""

from __future__ import annotations

import ast
import itertools
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "tfascl"

# What a model must not know: the run folders, the commands, training and evaluation,
# and the export command (``model.export`` writes through tfascl.serving).
MODEL_MAY_NOT_IMPORT = (
    "tfascl.cli",
    "tfascl.runs",
    "tfascl.export",
    "tfascl.train",
    "tfascl.train_config",
    "tfascl.callbacks",
    "tfascl.evaluation",
)
# The serving library and the leaves under it import nothing else of tfascl.
MAY_IMPORT_ONLY = {
    "tfascl.serving": {"tfascl._version", "tfascl.files", "tfascl.imageops"},
    "tfascl.imageops": set(),  # TensorFlow only: data/ and serving share the eval resize
    "tfascl.files": {"tfascl._lazy"},  # plain Python: TensorFlow on first remote use
    "tfascl._version": set(),
}

# The layers, lowest first (docs/ARCHITECTURE.md's table): a module imports modules of its
# own layer or of those below, never above. A name ending in "." is a package and its
# modules. A new module must be placed here (a test fails until it is).
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "leaves",
        (
            "tfascl._version",
            "tfascl._lazy",
            "tfascl.console",
            "tfascl.choices",
            "tfascl.options",
            "tfascl.files",
            "tfascl.imageops",
            "tfascl.losses",
            "tfascl.optim",
            "tfascl.knn",
            "tfascl.distribute",
        ),
    ),
    ("data", ("tfascl.data", "tfascl.data.")),
    ("serving", ("tfascl.serving",)),
    ("models", ("tfascl.models", "tfascl.models.")),
    ("runs", ("tfascl.checkpoints", "tfascl.runs")),
    ("run tools", ("tfascl.plots", "tfascl.cli", "tfascl.callbacks", "tfascl.callbacks.")),
    ("evaluation", ("tfascl.evaluation", "tfascl.evaluation.")),
    ("export", ("tfascl.export",)),
    ("training", ("tfascl.train_config", "tfascl.run_report", "tfascl.train")),
    ("entry points", ("tfascl", "tfascl._startup")),
]

Graph = dict[str, dict[str, int]]  # module → {module it imports: line of the first import}


def layer_of(module: str) -> int | None:
    """The index in LAYERS of a module's layer, or None when it is in none."""
    for index, (_, names) in enumerate(LAYERS):
        if module in names or any(n.endswith(".") and module.startswith(n) for n in names):
            return index
    return None


def module_files(root: Path) -> dict[str, Path]:
    """Every module of the package at ``root``, by dotted name (a package by its own name)."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _imported_names(node: ast.AST, package: str, modules: dict[str, Path]) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:  # relative: from .x import y, from .. import z
        parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
        base = ".".join(parts + ([base] if base else []))
    # ``from pkg import mod`` depends on pkg.mod; ``from pkg import name`` on pkg.
    return [
        f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
        for alias in node.names
    ]


def import_graph(root: Path = PACKAGE) -> Graph:
    """The modules of the package at ``root`` and the modules of it each imports.

    An import of ``a.b.c`` counts as an edge to the deepest of ``a.b.c``, ``a.b``, ``a``
    that is a module of the package. Python also runs the ``__init__`` of every package
    above an imported module first; those implicit edges are left out (each package would
    otherwise be a cycle with its own modules), explicit imports of a package are not.
    """
    modules = module_files(root)
    graph: Graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: dict[str, int] = {}
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            for target in _imported_names(node, package, modules):
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    edges[target] = min(edges.get(target, node.lineno), node.lineno)
        graph[name] = edges
    return graph


def cycles(graph: Graph) -> list[list[str]]:
    """One cycle ``[a, b, ..., a]`` for each strongly connected set of two or more modules."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(module: str) -> None:  # Tarjan's algorithm
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in sorted(graph[module]):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(graph) + 100))
    try:
        for module in sorted(graph):
            if module not in index:
                visit(module)
    finally:
        sys.setrecursionlimit(limit)
    return [_shortest_cycle(graph, component) for component in components]


def _shortest_cycle(graph: Graph, component: list[str]) -> list[str]:
    """The shortest cycle through the first module of ``component``, within it."""
    start, members = component[0], set(component)
    previous = {start: ""}
    frontier = [start]
    while frontier:
        following = []
        for module in frontier:
            for target in sorted(graph[module]):
                if target == start:
                    path = [module]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if target in members and target not in previous:
                    previous[target] = module
                    following.append(target)
        frontier = following
    raise AssertionError(f"no cycle in {component}")  # a strongly connected set has one


def describe(cycle: list[str], graph: Graph) -> str:
    """``a (a.py:12) → b (b.py:3) → a``: each module with the line of its import of the next."""
    steps = [
        f"{module} (line {graph[module][target]})" for module, target in itertools.pairwise(cycle)
    ]
    return " → ".join([*steps, cycle[-1]])


def _layer_violations(graph: Graph) -> list[str]:
    found = []
    for module, edges in sorted(graph.items()):
        for target, line in sorted(edges.items()):
            banned = module.startswith("tfascl.models") and target.startswith(MODEL_MAY_NOT_IMPORT)
            allowed = MAY_IMPORT_ONLY.get(module)
            if banned or (allowed is not None and target not in allowed):
                found.append(f"{module} imports {target} (line {line})")
    return found


def _upward_imports(graph: Graph) -> list[str]:
    """Imports of a layer above the importer's, and modules in no layer."""
    found = [f"{module} is in no layer of LAYERS" for module in graph if layer_of(module) is None]
    for module, edges in sorted(graph.items()):
        for target, line in sorted(edges.items()):
            below, above = layer_of(module), layer_of(target)
            if below is not None and above is not None and above > below:
                found.append(
                    f"{module} ({LAYERS[below][0]}) imports {target} ({LAYERS[above][0]}, "
                    f"line {line})"
                )
    return found


# --- The package ---------------------------------------------------------------------------


def test_no_import_cycle():
    graph = import_graph()
    found = [describe(cycle, graph) for cycle in cycles(graph)]
    assert found == [], "import cycles in tfascl/:\n" + "\n".join(found)


def test_models_know_nothing_of_runs_commands_training_or_export():
    graph = import_graph()
    found = [v for v in _layer_violations(graph) if v.startswith("tfascl.models")]
    assert found == [], "tfascl.models imports a layer above it:\n" + "\n".join(found)


def test_serving_is_a_library_of_tensorflow_and_keras_only():
    graph = import_graph()
    assert set(MAY_IMPORT_ONLY) <= set(graph), "a module of MAY_IMPORT_ONLY is gone"
    found = [v for v in _layer_violations(graph) if not v.startswith("tfascl.models")]
    assert found == [], "\n".join(found)


def test_every_module_imports_its_own_layer_or_those_below():
    found = _upward_imports(import_graph())
    assert found == [], "imports against the layers of docs/ARCHITECTURE.md:\n" + "\n".join(found)


def test_the_layer_check_sees_an_upward_import():
    graph = {"tfascl.losses": {"tfascl.runs": 3}, "tfascl.runs": {}, "tfascl.new_thing": {}}
    assert _upward_imports(graph) == [
        "tfascl.new_thing is in no layer of LAYERS",
        "tfascl.losses (leaves) imports tfascl.runs (runs, line 3)",
    ]


def test_the_graph_has_the_known_edges_lazy_ones_included():
    graph = import_graph()
    # Module level, "from pkg import mod", "from pkg.mod import name".
    assert "tfascl.models.registry" in graph["tfascl.runs"]
    assert "tfascl.cli" in graph["tfascl.export"]
    assert "tfascl.models.base" in graph["tfascl.models.registry"]
    # Inside a method: EncoderModel.export writes through the serving library.
    assert "tfascl.serving" in graph["tfascl.models.base"]


# --- The checker on packages made for it --------------------------------------------------


def _package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "pkg" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "pkg"


def test_a_lazy_import_closes_a_cycle(tmp_path):
    package = _package(
        tmp_path,
        {
            "__init__.py": "",
            "a.py": "from pkg import b\n",
            "b.py": "def f():\n    from pkg.sub.c import g\n    return g\n",
            "sub/__init__.py": "",
            "sub/c.py": "import pkg.a\n\ndef g():\n    pass\n",
        },
    )
    graph = import_graph(package)
    assert graph["pkg.b"] == {"pkg.sub.c": 2}
    assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.sub.c", "pkg.a"]]
    assert describe(cycles(graph)[0], graph) == (
        "pkg.a (line 1) → pkg.b (line 2) → pkg.sub.c (line 1) → pkg.a"
    )


def test_relative_imports_and_package_inits(tmp_path):
    package = _package(
        tmp_path,
        {
            "__init__.py": "from .a import x\n",  # the package re-exports its module
            "a.py": "x = 1\n",
            "b.py": "from . import a\nfrom pkg import x\n",  # a module, then the package
            "sub/__init__.py": "",
            "sub/c.py": "from ..a import x\nimport os.path\nimport pkg.sub\n",
        },
    )
    graph = import_graph(package)
    assert graph["pkg"] == {"pkg.a": 1}
    assert graph["pkg.b"] == {"pkg.a": 1, "pkg": 2}
    assert graph["pkg.sub.c"] == {"pkg.a": 1, "pkg.sub": 3}
    assert cycles(graph) == []
    # A module importing its own package's __init__, which imports it: a cycle.
    (package / "a.py").write_text("from pkg import b\nx = 1\n")
    assert cycles(import_graph(package)) == [["pkg", "pkg.a", "pkg.b", "pkg"]]


if __name__ == "__main__":
    graph = import_graph()
    for module, edges in sorted(graph.items()):
        print(f"{module}: {', '.join(sorted(edges)) or '-'}")
    problems = [describe(c, graph) for c in cycles(graph)] + _layer_violations(graph)
    problems += _upward_imports(graph)
    print("\n".join(["", *problems]) if problems else "\nno cycle, no layer violation")
    sys.exit(1 if problems else 0)
