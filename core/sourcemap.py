"""Load YAML or JSON files and remember where every field is, for errors that name the line.

``doc = load_document(path)`` gives ``doc.data`` (plain dicts/lists/scalars) and
``doc.line(("steps", 2, "kind"))`` → the 1-based line of that field (or of its nearest parent
that exists). PyYAML's composer gives the positions; JSON is read by ``json`` (exact values)
and positioned by the same composer (JSON is YAML for this purpose).

Files are bounded before anything is built from them: at most :data:`MAX_BYTES` bytes,
:data:`MAX_DEPTH` levels of nesting and :data:`MAX_NODES` values once YAML aliases (``*name``)
are expanded, so a small hostile file ("billion laughs") is refused at once, naming its line,
instead of costing minutes and gigabytes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from core.errors import InputError, Problem, Where

FieldPath = tuple[str | int, ...]

MAX_BYTES = 1_000_000
"""Largest file read (templates and workcells are a few kilobytes)."""
MAX_DEPTH = 64
"""Deepest nesting of mappings and lists, aliases expanded."""
MAX_NODES = 100_000
"""Most values (scalars, mappings, lists) in a document, aliases expanded."""


def render_path(path: Sequence[str | int]) -> str:
    """``("steps", 2, "kind")`` → ``steps[2].kind``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


@dataclass
class Document:
    file: str
    data: Any
    lines: dict[FieldPath, int] = field(default_factory=dict)

    def line(self, path: Sequence[str | int]) -> int | None:
        p = tuple(path)
        while True:
            if p in self.lines:
                return self.lines[p]
            if not p:
                return None
            p = p[:-1]

    def where(self, path: Sequence[str | int]) -> Where:
        return Where(self.file, render_path(path) or None, self.line(path))


def _index(node: yaml.Node, path: FieldPath, lines: dict[FieldPath, int]) -> None:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
            lines[(*path, key)] = key_node.start_mark.line + 1
            _index(value_node, (*path, key), lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index(item, (*path, i), lines)


class _LimitError(yaml.MarkedYAMLError):
    """A document beyond :data:`MAX_DEPTH` or :data:`MAX_NODES`; ``problem_mark`` is where."""

    def __init__(self, problem: str, mark: yaml.Mark | None) -> None:
        super().__init__(problem=problem, problem_mark=mark)


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses deep nesting while composing and remembers where aliases are."""

    def _next_mark(self) -> yaml.Mark | None:
        event: yaml.Event = self.peek_event()  # type: ignore[no-untyped-call]  # untyped in PyYAML's stubs
        mark = event.start_mark
        return mark if isinstance(mark, yaml.Mark) else None

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self.alias_marks: list[yaml.Mark] = []

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            mark = self._next_mark()
            if mark is not None:
                self.alias_marks.append(mark)
            return super().compose_node(parent, index)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _LimitError(f"nested deeper than {MAX_DEPTH} levels", self._next_mark())
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _check_expansion(root: yaml.Node, alias_marks: list[yaml.Mark]) -> None:
    """Refuse a node graph that aliases expand beyond the bounds (or into a loop).

    Shared nodes are measured once, so this costs as much as the text, not as its expansion.
    """
    sizes: dict[int, int] = {}
    depths: dict[int, int] = {}
    active: set[int] = set()
    where = alias_marks[0] if alias_marks else root.start_mark

    def measure(node: yaml.Node, depth: int) -> None:
        key = id(node)
        if key in active:
            raise _LimitError("an alias refers to a mapping or list that contains it", where)
        if depth + depths.get(key, 0) > MAX_DEPTH:
            raise _LimitError(f"nested deeper than {MAX_DEPTH} levels once aliases are expanded",
                              where)
        if key in sizes:
            return
        children: list[yaml.Node] = []
        if isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        active.add(key)
        size, below = 1, 0
        for child in children:
            measure(child, depth + 1)
            size += sizes[id(child)]
            below = max(below, depths[id(child)] + 1)
            if size > MAX_NODES:
                raise _LimitError(f"more than {MAX_NODES} values once aliases (*name) are "
                                  f"expanded", where)
        active.discard(key)
        sizes[key], depths[key] = size, below

    measure(root, 0)


def _compose(text: str) -> tuple[yaml.Node | None, Any]:
    """Compose within the bounds, then construct: (node, data)."""
    loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, None
        _check_expansion(node, loader.alias_marks)
        try:
            data = loader.construct_document(node)
        except (ValueError, TypeError, OverflowError) as exc:  # e.g. !!int on a bad value
            raise _LimitError(f"cannot read a value: {exc}", node.start_mark) from None
        return node, data
    finally:
        loader.dispose()


def _json_depth(data: Any) -> int:
    deepest, todo = 0, [(data, 1)]
    while todo:
        value, depth = todo.pop()
        deepest = max(deepest, depth)
        if depth > MAX_DEPTH:
            break
        if isinstance(value, dict):
            todo += [(v, depth + 1) for v in value.values()]
        elif isinstance(value, list):
            todo += [(v, depth + 1) for v in value]
    return deepest


def parse_document(text: str, file: str, error_type: type[InputError] = InputError) -> Document:
    """Parse YAML or JSON text (by the file's suffix; JSON for .json), within the bounds."""
    if len(text) > MAX_BYTES:
        raise error_type.at(f"file is larger than {MAX_BYTES} bytes", file=file)
    is_json = file.lower().endswith(".json")
    node: yaml.Node | None = None
    try:
        if is_json:
            data = json.loads(text)
            if _json_depth(data) > MAX_DEPTH:
                raise error_type.at(f"nested deeper than {MAX_DEPTH} levels", file=file)
        else:
            node, data = _compose(text)
    except json.JSONDecodeError as exc:
        raise error_type(f"{file} is not valid JSON",
                         [Problem(Where(file, None, exc.lineno), exc.msg)]) from None
    except RecursionError:
        raise error_type.at(f"nested deeper than {MAX_DEPTH} levels", file=file) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise error_type(f"{file} is not valid YAML",
                         [Problem(Where(file, None, mark.line + 1 if mark else None),
                                  str(getattr(exc, "problem", None) or exc))]) from None
    lines: dict[FieldPath, int] = {}
    if is_json:
        try:
            node, _ = _compose(text)
        except (yaml.YAMLError, RecursionError):
            node = None  # valid JSON that YAML cannot position (tabs...): errors go without lines
    if node is not None:
        _index(node, (), lines)
    return Document(file, data, lines)


def load_document(path: str | Path, error_type: type[InputError] = InputError) -> Document:
    path = Path(path)
    try:
        if path.stat().st_size > MAX_BYTES:
            raise error_type.at(f"file is larger than {MAX_BYTES} bytes", file=str(path))
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise error_type.at(f"cannot read: {exc.strerror}", file=str(path)) from None
    except UnicodeDecodeError as exc:
        raise error_type.at(f"not UTF-8 text (byte {exc.start})", file=str(path)) from None
    return parse_document(text, str(path), error_type)
