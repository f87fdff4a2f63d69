"""Layered (Sugiyama-style) layout of a template's step graph, top to bottom (no Qt).

1. Layers: a step sits one layer below its deepest dependency (longest path from the sources);
   edges that close a cycle are ignored, so a broken template still lays out. A step that only
   runs as an error handler sits one layer below the step it handles.
2. Order within a layer: a few sweeps of the barycenter heuristic (down, then up) reduce edge
   crossings; ties keep the template's order, so the result is deterministic.
3. Coordinates: every layer is centred on the widest one.
"""

from __future__ import annotations

from core.templates import WorkflowTemplate

__all__ = ["NODE_HEIGHT", "NODE_WIDTH", "layered_layout"]

NODE_WIDTH = 220.0
NODE_HEIGHT = 76.0
H_GAP = 44.0
V_GAP = 58.0


def _acyclic_deps(t: WorkflowTemplate) -> dict[str, list[str]]:
    """Dependencies per step without unknown ids and without the edges that close cycles."""
    ids = {s.id for s in t.steps}
    deps = {s.id: [d for d in s.depends_on if d in ids and d != s.id] for s in t.steps}
    state: dict[str, int] = {}
    kept: dict[str, list[str]] = {sid: [] for sid in deps}

    def visit(node: str) -> None:
        state[node] = 1
        for d in deps[node]:
            if state.get(d) == 1:
                continue  # back edge: part of a cycle
            kept[node].append(d)
            if d not in state:
                visit(d)
        state[node] = 2

    for sid in deps:
        if sid not in state:
            visit(sid)
    return kept


def layers_of(t: WorkflowTemplate) -> dict[str, int]:
    """Layer index of every step (0 = top)."""
    deps = _acyclic_deps(t)
    layer: dict[str, int] = {}

    def depth(node: str) -> int:
        if node not in layer:
            layer[node] = 0  # guards recursion on malformed input
            layer[node] = 1 + max((depth(d) for d in deps[node]), default=-1)
        return layer[node]

    for sid in deps:
        depth(sid)
    dependants = {d for ds in deps.values() for d in ds}
    for failing, handler in t.error_handlers.items():
        if handler in layer and not deps.get(handler) and handler not in dependants \
                and failing in layer:
            layer[handler] = max(layer[handler], layer[failing] + 1)
    return layer


def layered_layout(t: WorkflowTemplate, *, origin: tuple[float, float] = (0.0, 0.0),
                   sweeps: int = 4) -> dict[str, tuple[float, float]]:
    """Top-left position of every step's node, layered top to bottom."""
    if not t.steps:
        return {}
    layer = layers_of(t)
    deps = _acyclic_deps(t)
    children: dict[str, list[str]] = {s.id: [] for s in t.steps}
    for sid, ds in deps.items():
        for d in ds:
            children[d].append(sid)
    index = {s.id: i for i, s in enumerate(t.steps)}
    rows: list[list[str]] = [[] for _ in range(max(layer.values()) + 1)]
    for s in t.steps:
        rows[layer[s.id]].append(s.id)

    def order(row: list[str], neighbours: dict[str, list[str]], above: list[str]) -> list[str]:
        pos = {sid: i for i, sid in enumerate(above)}

        def key(sid: str) -> tuple[float, int]:
            near = [pos[n] for n in neighbours[sid] if n in pos]
            return (sum(near) / len(near) if near else float(row.index(sid)), index[sid])

        return sorted(row, key=key)

    for _ in range(sweeps):
        for i in range(1, len(rows)):
            rows[i] = order(rows[i], deps, rows[i - 1])
        for i in range(len(rows) - 2, -1, -1):
            rows[i] = order(rows[i], children, rows[i + 1])

    widest = max(len(r) for r in rows)
    full = widest * NODE_WIDTH + (widest - 1) * H_GAP
    out: dict[str, tuple[float, float]] = {}
    for li, row in enumerate(rows):
        width = len(row) * NODE_WIDTH + (len(row) - 1) * H_GAP
        x0 = origin[0] + (full - width) / 2
        for i, sid in enumerate(row):
            out[sid] = (x0 + i * (NODE_WIDTH + H_GAP), origin[1] + li * (NODE_HEIGHT + V_GAP))
    return out
