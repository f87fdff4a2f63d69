"""Layered (Sugiyama-style) layout of a template's step graph, top to bottom (no Qt).

1. Layers: a step sits one layer below its deepest dependency (longest path from the sources);
   edges that close a cycle are ignored, so a broken template still lays out. A step that only
   runs as an error handler sits one layer below the step it handles.
2. Long edges: a dependency that spans several layers gets a narrow placeholder in every layer
   it crosses, so the ordering and spacing keep a free lane for it and it is drawn through that
   lane (:attr:`Layout.routes`) instead of behind other steps.
3. Order within a layer: sweeps of the barycenter heuristic (down, then up) reduce crossings;
   ties keep the template's order, so the result is deterministic.
4. Horizontal places: each node is pulled towards the median of its neighbours in the layer
   above (then below), as close as the minimum spacing allows (an exact least-squares placement
   per layer, by pool-adjacent-violators), so chains come out straight.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from statistics import median

from core.templates import WorkflowTemplate

__all__ = ["DUMMY_WIDTH", "H_GAP", "NODE_HEIGHT", "NODE_WIDTH", "V_GAP", "Layout", "layered_layout",
           "layers_of", "layout_with_routes"]

NODE_WIDTH = 220.0
NODE_HEIGHT = 76.0
H_GAP = 44.0
V_GAP = 58.0
DUMMY_WIDTH = 16.0
"""Width of the lane a long edge takes in a layer it crosses."""


@dataclass
class Layout:
    """Top-left position of every step, and the lanes of dependencies that skip layers."""

    positions: dict[str, tuple[float, float]] = field(default_factory=dict)
    routes: dict[tuple[str, str], list[tuple[float, float]]] = field(default_factory=dict)
    """(dependency, dependant) -> points the edge passes through (top and bottom of each lane)."""


def _acyclic_deps(t: WorkflowTemplate) -> dict[str, list[str]]:
    """Dependencies per step without unknown ids and without the edges that close cycles."""
    ids = {s.id for s in t.steps}
    deps: dict[str, list[str]] = {}
    for s in t.steps:
        deps.setdefault(s.id, [])
        deps[s.id] += [d for d in s.depends_on if d in ids and d != s.id and d not in deps[s.id]]
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


def _place(row: list[str], desired: dict[str, float], width: dict[str, float]) -> dict[str, float]:
    """Centres for ``row`` (in order) closest to ``desired`` with at least the minimum spacing:
    isotonic regression on centre minus cumulative spacing (pool adjacent violators)."""
    offsets, acc = [], 0.0
    for i, node in enumerate(row):
        if i:
            prev = row[i - 1]
            gap = H_GAP if width[prev] == NODE_WIDTH and width[node] == NODE_WIDTH else H_GAP / 2
            acc += width[prev] / 2 + gap + width[node] / 2
        offsets.append(acc)
    blocks: list[list[float]] = []  # [sum, count]
    for i, node in enumerate(row):
        blocks.append([desired[node] - offsets[i], 1.0])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            total, count = blocks.pop()
            blocks[-1][0] += total
            blocks[-1][1] += count
    out: dict[str, float] = {}
    i = 0
    for total, count in blocks:
        for _ in range(int(count)):
            out[row[i]] = total / count + offsets[i]
            i += 1
    return out


def layout_with_routes(t: WorkflowTemplate, *, origin: tuple[float, float] = (0.0, 0.0),
                       sweeps: int = 6) -> Layout:
    """Lay out ``t`` (see the module doc)."""
    if not t.steps:
        return Layout()
    layer = layers_of(t)
    deps = _acyclic_deps(t)
    index = {s.id: i for i, s in enumerate(t.steps)}
    preds: dict[str, list[str]] = {sid: [] for sid in deps}
    succs: dict[str, list[str]] = {sid: [] for sid in deps}
    width = {sid: NODE_WIDTH for sid in deps}
    chains: dict[tuple[str, str], list[str]] = {}
    for sid, ds in deps.items():
        for d in ds:
            prev = d
            chain = []
            for lay in range(layer[d] + 1, layer[sid]):
                dummy = f"\0{d}\0{sid}\0{lay}"
                layer[dummy] = lay
                width[dummy] = DUMMY_WIDTH
                index[dummy] = index[sid]
                preds[dummy], succs[dummy] = [prev], []
                succs[prev].append(dummy)
                chain.append(dummy)
                prev = dummy
            preds[sid].append(prev)
            succs[prev].append(sid)
            if chain:
                chains[(d, sid)] = chain
    rows: list[list[str]] = [[] for _ in range(max(layer.values()) + 1)]
    for node in sorted(layer, key=lambda n: index[n]):
        rows[layer[node]].append(node)

    def order(row: list[str], neighbours: dict[str, list[str]], near: list[str]) -> list[str]:
        pos = {sid: i for i, sid in enumerate(near)}
        current = {sid: i for i, sid in enumerate(row)}

        def key(sid: str) -> tuple[float, int]:
            ns = [pos[n] for n in neighbours[sid] if n in pos]
            return (sum(ns) / len(ns) if ns else float(current[sid]), index[sid])

        return sorted(row, key=key)

    for _ in range(sweeps):
        for i in range(1, len(rows)):
            rows[i] = order(rows[i], preds, rows[i - 1])
        for i in range(len(rows) - 2, -1, -1):
            rows[i] = order(rows[i], succs, rows[i + 1])

    x: dict[str, float] = {}
    for row in rows:
        x.update(_place(row, {n: 0.0 for n in row}, width))
    for _ in range(sweeps):
        for i in range(1, len(rows)):
            x.update(_place(rows[i], {n: median([x[p] for p in preds[n]]) if preds[n] else x[n]
                                      for n in rows[i]}, width))
        for i in range(len(rows) - 2, -1, -1):
            x.update(_place(rows[i], {n: median([x[s] for s in succs[n]]) if succs[n] else x[n]
                                      for n in rows[i]}, width))
    left = min(x[n] - width[n] / 2 for n in x)
    out = Layout()
    pitch = NODE_HEIGHT + V_GAP

    def top(lay: int) -> float:
        return origin[1] + lay * pitch

    for s in t.steps:
        if s.id in out.positions:
            continue
        out.positions[s.id] = (round(origin[0] + x[s.id] - NODE_WIDTH / 2 - left, 1), top(layer[s.id]))
    for edge, chain in chains.items():
        points = []
        for dummy in chain:
            cx = round(origin[0] + x[dummy] - left, 1)
            points += [(cx, top(layer[dummy])), (cx, top(layer[dummy]) + NODE_HEIGHT)]
        out.routes[edge] = points
    return out


def layered_layout(t: WorkflowTemplate, *, origin: tuple[float, float] = (0.0, 0.0),
                   sweeps: int = 6) -> dict[str, tuple[float, float]]:
    """Top-left position of every step's node, layered top to bottom."""
    return layout_with_routes(t, origin=origin, sweeps=sweeps).positions
