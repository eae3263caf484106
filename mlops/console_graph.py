"""The state machine as an SVG graph: layout of the ASL's states, coloured by status.

`mlops console` draws each execution with this: states laid out in rows along the main path
(back edges of retry loops and Catch edges drawn apart), each box coloured by the state's
status in the execution's history (the report's tones), edges taken drawn darker. Pure
functions of the definition and the statuses, so they are tested without a server.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from typing import Any

from pipeline_report.render import tone

NODE_W, NODE_H, GAP_X, GAP_Y, MARGIN = 190, 30, 36, 18, 20
FILL = {
    "good": "#2e7d32",
    "bad": "#c62828",
    "warn": "#ef6c00",
    "busy": "#1565c0",
    "info": "#757575",
    "unvisited": "#eeeeee",
}


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    kind: str  # next, choice, default, catch


def transitions(definition: dict[str, Any]) -> list[Edge]:
    """Every transition of the top-level states, main path first (Next, Choices, Default),
    then Catch edges, in definition order."""
    edges: list[Edge] = []
    for name, state in definition.get("States", {}).items():
        for choice in state.get("Choices", []):
            edges.append(Edge(name, choice["Next"], "choice"))
        if "Default" in state:
            edges.append(Edge(name, state["Default"], "default"))
        if "Next" in state:
            edges.append(Edge(name, state["Next"], "next"))
        for catcher in state.get("Catch", []):
            edges.append(Edge(name, catcher["Next"], "catch"))
    return edges


def back_edges(definition: dict[str, Any], edges: list[Edge]) -> set[Edge]:
    """Edges that close a loop (a wait loop's Default back to its Wait), found by a depth-first
    walk from StartAt that follows the main path before Catch edges."""
    outgoing: dict[str, list[Edge]] = {}
    for edge in sorted(edges, key=lambda e: e.kind == "catch"):
        outgoing.setdefault(edge.source, []).append(edge)
    found: set[Edge] = set()
    on_path: set[str] = set()
    done: set[str] = set()

    def visit(node: str) -> None:
        on_path.add(node)
        for edge in outgoing.get(node, []):
            if edge.target in on_path:
                found.add(edge)
            elif edge.target not in done:
                visit(edge.target)
        on_path.discard(node)
        done.add(node)

    start = definition.get("StartAt")
    if start:
        visit(start)
    return found


def layout(definition: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """(row, column) of every state: rows by longest path from StartAt without loop edges, so
    the main path reads top to bottom; side branches (rejections, failures) take columns to
    the right in the order the main path reaches them."""
    edges = transitions(definition)
    loops = back_edges(definition, edges)
    forward = [e for e in edges if e not in loops]
    names = list(definition.get("States", {}))
    row = dict.fromkeys(names, 0)
    for _ in names:  # longest path by relaxation (the graph without loops is acyclic)
        changed = False
        for edge in forward:
            if edge.target in row and row[edge.target] < row[edge.source] + 1:
                row[edge.target] = row[edge.source] + 1
                changed = True
        if not changed:
            break
    order = _main_path_order(definition, forward)
    positions: dict[str, tuple[int, int]] = {}
    used: dict[int, int] = {}
    for name in sorted(names, key=lambda n: (row[n], order.get(n, len(order)))):
        positions[name] = (row[name], used.get(row[name], 0))
        used[row[name]] = used.get(row[name], 0) + 1
    return positions


def _main_path_order(definition: dict[str, Any], edges: list[Edge]) -> dict[str, int]:
    """Preorder of a depth-first walk taking Choices/Next before Default and Catch."""
    rank = {"choice": 0, "next": 1, "default": 2, "catch": 3}
    outgoing: dict[str, list[Edge]] = {}
    for edge in sorted(edges, key=lambda e: rank[e.kind]):
        outgoing.setdefault(edge.source, []).append(edge)
    order: dict[str, int] = {}
    stack = [definition.get("StartAt")]
    while stack:
        node = stack.pop()
        if node is None or node in order:
            continue
        order[node] = len(order)
        stack.extend(reversed([e.target for e in outgoing.get(node, [])]))
    return order


def graph_svg(definition: dict[str, Any], statuses: dict[str, str]) -> str:
    """The state machine as SVG: states coloured by status, loop edges left, Catch edges
    dashed and bent to the right."""
    positions = layout(definition)
    edges = transitions(definition)
    loops = back_edges(definition, edges)
    columns = max((c for _, c in positions.values()), default=0) + 1
    rows = max((r for r, _ in positions.values()), default=0) + 1
    width = MARGIN * 2 + columns * NODE_W + (columns - 1) * GAP_X + 80
    height = MARGIN * 2 + rows * NODE_H + (rows - 1) * GAP_Y

    def box(name: str) -> tuple[float, float]:
        r, c = positions[name]
        return MARGIN + 40 + c * (NODE_W + GAP_X), MARGIN + r * (NODE_H + GAP_Y)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" id="state-graph">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="6" '
        'markerHeight="6" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
        'fill="#9e9e9e"/></marker></defs>',
    ]
    for edge in edges:
        if edge.source in positions and edge.target in positions:
            kind = "loop" if edge in loops else ("catch" if edge.kind == "catch" else "")
            taken = edge.source in statuses and edge.target in statuses
            parts.append(_edge_path(box(edge.source), box(edge.target), kind, taken))
    for name, state in definition.get("States", {}).items():
        x, y = box(name)
        status = statuses.get(name)
        css = tone(status) if status else "unvisited"
        title = f"{name} ({state.get('Type')}): {status or 'not visited'}"
        parts.append(
            f'<g class="state {css}" data-state="{escape(name)}" '
            f'data-status="{escape(status or "NOT_VISITED")}" tabindex="0">'
            f"<title>{escape(title)}</title>"
            f'<rect x="{x}" y="{y}" width="{NODE_W}" height="{NODE_H}" fill="{FILL[css]}"/>'
            f'<text x="{x + NODE_W / 2}" y="{y + NODE_H / 2 + 4}" text-anchor="middle">'
            f"{escape(name)}</text></g>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _edge_path(
    source: tuple[float, float], target: tuple[float, float], kind: str, taken: bool
) -> str:
    """A straight arrow down, a loop up the left, a long Catch jump bent right; an edge between
    two visited states is drawn darker (the path the execution took, loosely)."""
    (sx, sy), (tx, ty) = source, target
    if kind == "loop":  # up the left side
        x1, y1, x2, y2 = sx, sy + NODE_H / 2, tx, ty + NODE_H / 2
        bend = min(x1, x2) - 36
        d = f"M{x1},{y1} C{bend},{y1} {bend},{y2} {x2},{y2}"
    elif kind == "catch" and abs(ty - sy) > NODE_H + GAP_Y:  # long jumps bend right
        x1, y1, x2, y2 = sx + NODE_W, sy + NODE_H / 2, tx + NODE_W, ty + NODE_H / 2
        bend = max(x1, x2) + 30 + (abs(ty - sy) / 40)
        d = f"M{x1},{y1} C{bend},{y1} {bend},{y2} {x2},{y2}"
    else:
        x1, y1, x2, y2 = sx + NODE_W / 2, sy + NODE_H, tx + NODE_W / 2, ty
        if ty <= sy:  # same row: side by side
            y1, y2 = sy + NODE_H / 2, ty + NODE_H / 2
            x1, x2 = (sx + NODE_W, tx) if tx > sx else (sx, tx + NODE_W)
        d = f"M{x1},{y1} L{x2},{y2}"
    css = f"edge {kind} taken" if taken else f"edge {kind}"
    return f'<path class="{css}" d="{d}" marker-end="url(#arrow)"/>'
