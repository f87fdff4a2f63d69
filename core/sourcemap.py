"""Load YAML or JSON files and remember where every field is, for errors that name the line.

``doc = load_document(path)`` gives ``doc.data`` (plain dicts/lists/scalars) and
``doc.line(("steps", 2, "kind"))`` → the 1-based line of that field (or of its nearest parent
that exists). PyYAML's composer gives the positions; JSON is read by ``json`` (exact values)
and positioned by the same composer (JSON is YAML for this purpose).
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


def parse_document(text: str, file: str, error_type: type[InputError] = InputError) -> Document:
    """Parse YAML or JSON text (by the file's suffix; JSON for .json)."""
    is_json = file.lower().endswith(".json")
    try:
        data = json.loads(text) if is_json else yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise error_type(f"{file} is not valid JSON",
                         [Problem(Where(file, None, exc.lineno), exc.msg)]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise error_type(f"{file} is not valid YAML",
                         [Problem(Where(file, None, mark.line + 1 if mark else None),
                                  str(getattr(exc, "problem", exc)))]) from None
    lines: dict[FieldPath, int] = {}
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if node is not None:
            _index(node, (), lines)
    except yaml.YAMLError:
        pass  # valid JSON that YAML cannot position (tabs...): errors go without line numbers
    return Document(file, data, lines)


def load_document(path: str | Path, error_type: type[InputError] = InputError) -> Document:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise error_type.at(f"cannot read: {exc.strerror}", file=str(path)) from None
    return parse_document(text, str(path), error_type)
