"""The import rules of docs/architecture.md, read from the source: no cycle, nothing imports upward.

Every import counts, also one inside a function (a lazy import is still a dependency), and a package's
__init__ counts as the package. The layers, lowest first; a package may import its own layer's
modules and any lower layer's, never a higher one:

    schemas                 records handed between commands, their schemas (imports nothing of ours)
    runners, database       runner plumbing; the recommender database (schemas only)
    transforms              pure functions, thin DoFns, composite PTransforms
    trainer                 tf.data, Keras models, training and export
    report                  the HTML report
    pipelines               one module per command: flags and wiring (nothing imports it)

runners and database share a layer but import neither each other nor themselves across.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
LAYERS = {"schemas": 0, "runners": 1, "database": 1, "transforms": 2, "trainer": 3, "report": 4, "pipelines": 5}
SIDEWAYS_ALLOWED: set[tuple[str, str]] = set()  # (importer, imported) pairs of one layer that may import


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def our_imports(path: pathlib.Path) -> set[str]:
    """The cattag modules `path` imports, anywhere in the file (a package import counts as its __init__)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            names = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for name in names:
            if name.split(".")[0] in LAYERS:
                found.add(resolve(name))
    return found - {module_name(path)}


def resolve(name: str) -> str:
    """The module a dotted import name lands in: `from transforms import counters` is transforms.counters,
    `from transforms.tagging import TagEntries` is transforms.tagging."""
    parts = name.split(".")
    while parts:
        candidate = REPO.joinpath(*parts)
        if candidate.with_suffix(".py").is_file() or (candidate / "__init__.py").is_file():
            return ".".join(parts)
        parts.pop()
    return name


def graph() -> dict[str, set[str]]:
    return {module_name(path): our_imports(path)
            for package in LAYERS for path in sorted((REPO / package).rglob("*.py"))}


def test_the_graph_covers_every_package():
    edges = graph()
    assert {name.split(".")[0] for name in edges} == set(LAYERS)
    assert "pipelines.tag" in edges and "transforms.tagging" in edges["pipelines.tag_plan"]


def test_nothing_imports_upward_or_sideways_between_packages():
    wrong = []
    for importer, imported in graph().items():
        for target in imported:
            low, high = importer.split(".")[0], target.split(".")[0]
            if low == high:
                continue
            if LAYERS[high] > LAYERS[low] or (LAYERS[high] == LAYERS[low] and (low, high) not in SIDEWAYS_ALLOWED):
                wrong.append(f"{importer} -> {target}")
    assert not wrong, "imports against the layers of docs/architecture.md:\n" + "\n".join(sorted(wrong))


def test_there_is_no_import_cycle():
    edges = graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                cycles.append(" -> ".join([*path[path.index(target):], target]))
            elif target not in state:
                visit(target, [*path, target])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_pipelines_define_no_dofn_or_ptransform():
    found = []
    for path in sorted((REPO / "pipelines").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                bases = {ast.unparse(base) for base in node.bases}
                if bases & {"beam.DoFn", "beam.PTransform", "DoFn", "PTransform", "beam.CombineFn", "CombineFn"}:
                    found.append(f"{path.name}: {node.name}")
    assert not found, "pipelines/ holds wiring only; these belong in transforms/: " + ", ".join(found)


@pytest.mark.parametrize("edges, expected", [
    ({"a": {"b"}, "b": {"a"}}, True),
    ({"a": {"b"}, "b": {"c"}, "c": set()}, False),
])
def test_the_cycle_check_finds_a_cycle_when_there_is_one(edges, expected, monkeypatch):
    monkeypatch.setattr(__import__(__name__, fromlist=["graph"]), "graph", lambda: edges)
    try:
        test_there_is_no_import_cycle()
        found = False
    except AssertionError:
        found = True
    assert found == expected
