"""No import cycles in mlops/ and pipeline_common: arrows point one way.

Every import counts, also one inside a function (a lazy import hides a cycle from Python's
start-up but not from a reader, and `mlops.cli` <-> `mlops.demo` was one). The graph is read
from the source with ast, so the check needs no import side effects.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {
    "mlops": ROOT / "mlops",
    "pipeline_common": ROOT / "functions/shared/python/pipeline_common",
    "pipeline_report": ROOT / "functions/report_layer/python/pipeline_report",
}


def module_name(package: str, base: Path, path: Path) -> str:
    parts = [package, *path.relative_to(base).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    found = {}
    for package, base in PACKAGES.items():
        for path in base.rglob("*.py"):
            found[module_name(package, base, path)] = path
    return found


def imported(name: str, path: Path, known: set[str]) -> set[str]:
    """The known modules `name` imports (`from a import b` counts a.b when that is a module)."""
    targets: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets.add(base)
            targets.update(f"{base}.{alias.name}" for alias in node.names)
    return {target for target in targets if target in known and target != name}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def import_graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imported(name, path, set(known)) for name, path in known.items()}


def test_cycles_finds_a_cycle_and_only_real_ones():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_import_graph_has_the_cli_edges():
    graph = import_graph()
    assert {"mlops.runs", "mlops.demo"} <= graph["mlops.cli"]
    assert "mlops.runs" in graph["mlops.demo"]
    assert "pipeline_common.naming" in graph["mlops.runs"]


def test_import_graph_has_no_cycle():
    """No module imports itself back through others, also through imports inside functions
    (the local cloud's cycles went with its split: cloud_info, identity, iam_request)."""
    assert cycles(import_graph()) == []


def test_arrows_point_one_way():
    """The contract imports nothing of ours; the report imports only the contract; neither
    reaches the CLI or the local cloud."""
    graph = import_graph()
    for name, targets in graph.items():
        if name.startswith("pipeline_common"):
            assert all(t.startswith("pipeline_common") for t in targets), (name, targets)
        if name.startswith("pipeline_report"):
            assert not any(t.startswith("mlops") for t in targets), (name, targets)
