"""The package tree is the pipeline: imports point down it, there are no cycles, and each package stays small.

Read from the source with `ast` (no module is imported), so a lazy import inside a function counts as an edge too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("scaling", "analysis")
# scaling's stages from the bottom of the pipeline to the top; a module may import its own stage or one below.
STAGES = ("config", "store", "structures", "data", "models", "mup", "train", "launch", "cli")
BOTTOM = {"scaling.omp_passive", "scaling.process"}  # process-wide setup every stage may import first
MAX_TOP_LEVEL_MODULES = 8


def module_files() -> dict[str, Path]:
    files = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return files


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports (anywhere in its body)."""
    files = module_files()

    def known(name: str) -> str | None:
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                prefix = ".".join(base[:len(base) - node.level + 1] + [node.module or ""]) if node.level \
                    else node.module
                deps |= {known(f"{prefix}.{alias.name}".strip(".")) for alias in node.names}
            elif isinstance(node, ast.Import):
                deps |= {known(alias.name) for alias in node.names}
        graph[module] = {d for d in deps if d and d != module}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def stage(module: str) -> int | None:
    """Rank of a scaling module in STAGES; -1 for the bottom modules; None for the entry shims and analysis."""
    parts = module.split(".")
    if module in BOTTOM:
        return -1
    if parts[0] != "scaling" or len(parts) < 2 or parts[-1] == "__main__" or parts[1] not in STAGES:
        return None
    return STAGES.index(parts[1])


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_a_cycle_is_found():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_scaling_imports_point_down_the_pipeline():
    upward = [f"{m} -> {d}" for m, deps in import_graph().items() for d in deps
              if stage(m) is not None and stage(d) is not None and stage(d) > stage(m)]
    assert upward == []


def test_analysis_reads_the_store_and_config_only():
    """analysis sits beside the training stages: it reads results (store), configs and the taxonomy formulas
    (and its command sets up the console like scaling's, scaling.process)."""
    allowed = ("scaling.config", "scaling.store", "scaling.structures.taxonomy", "scaling.launch.sweeps",
               "scaling.launch.submit", "scaling.train.plan", "scaling.process")
    reached = {d for m, deps in import_graph().items() if m.startswith("analysis") for d in deps
               if d.startswith("scaling")}
    assert sorted(d for d in reached if not d.startswith(allowed)) == []


def test_nothing_imports_an_entry_point():
    entry = {m for m in module_files() if m.startswith("scaling.cli.") and m != "scaling.cli.command"}
    entry |= {"scaling.status", "scaling.describe", "scaling.coordcheck", "scaling.coordsuite", "analysis.cli"}
    importers = {m: deps & entry for m, deps in import_graph().items()
                 if deps & entry and not m.startswith("scaling.cli.") and not m.endswith("__main__")
                 and m != "analysis.__main__" and m not in entry}
    assert importers == {}


@pytest.mark.parametrize("package", PACKAGES)
def test_each_package_has_few_top_level_modules(package):
    top = sorted(p.name for p in (REPO / package).glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL_MODULES, top
