"""Published workflow templates: versioned, immutable once published, one parsed copy each."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from typing import Any

from core.errors import InputError, NotFoundError, Problem, Where
from core.store import Store
from core.templates import WorkflowTemplate
from core.users import authorize


class TemplateRegistry:
    """Published templates in the store. A published version never changes."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._cache: dict[tuple[str, int], WorkflowTemplate] = {}

    async def publish(self, template: WorkflowTemplate, *, who: str = "labconsole") -> WorkflowTemplate:
        """Publish as the next version; identical content to the latest returns the latest. Refused
        (:class:`~core.users.PermissionDenied`) when ``who`` is a user whose role may not publish."""
        authorize(self.store, who, "template publish")
        digest = template.content_hash()

        def op(conn: sqlite3.Connection) -> tuple[int, bool]:
            row = conn.execute("SELECT version, content_hash FROM templates WHERE name = ? "
                               "ORDER BY version DESC LIMIT 1", (template.name,)).fetchone()
            if row is not None and row[1] == digest:
                return row[0], False
            version = (row[0] if row else 0) + 1
            body = template.model_copy(update={"version": version})
            conn.execute("INSERT INTO templates (name, version, definition, content_hash, published_at, "
                         "published_by) VALUES (?,?,?,?,strftime('%s','now'),?)",
                         (template.name, version, body.model_dump_json(), digest, who))
            return version, True

        audit = self.store.audit_op

        def publish(conn: sqlite3.Connection) -> tuple[int, bool]:
            version, new = op(conn)
            if new:  # the version and who published it: one transaction
                audit(who, "publish template", template.name, None, {"version": version})(conn)
            return version, new

        version, _new = await self.store.write(publish)
        return self.get(template.name, version)

    def get(self, name: str, version: int | None = None) -> WorkflowTemplate:
        if version is None:  # which version is latest (cheap), then the shared parsed copy
            latest = self.store.read_sync(lambda c: c.execute(
                "SELECT max(version) FROM templates WHERE name = ?", (name,)).fetchone())
            if latest and latest[0] is not None:
                version = latest[0]
        if version is not None and (name, version) in self._cache:
            return self._cache[(name, version)]  # published versions never change: share one copy
        sql = "SELECT definition, version FROM templates WHERE name = ?"
        params: tuple[Any, ...] = (name,)
        if version is None:
            sql += " ORDER BY version DESC LIMIT 1"
        else:
            sql += " AND version = ?"
            params = (name, version)
        row = self.store.read_sync(lambda c: c.execute(sql, params).fetchone())
        if row is None:
            known = self.names()
            raise NotFoundError(f"no template '{name}'" + (f" version {version}" if version else "")
                                + (f" (known: {', '.join(known)})" if known else " (none published)"))
        t = WorkflowTemplate.model_validate_json(row[0])
        self._cache[(name, row[1])] = t
        return t

    def names(self) -> list[str]:
        return [r[0] for r in self.store.read_sync(
            lambda c: c.execute("SELECT DISTINCT name FROM templates ORDER BY name").fetchall())]

    def history(self, name: str) -> list[dict[str, Any]]:
        """Every published version of ``name``: version, published_at (epoch s), published_by."""
        rows = self.store.read_sync(lambda c: c.execute(
            "SELECT version, published_at, published_by FROM templates WHERE name = ? ORDER BY version",
            (name,)).fetchall())
        return [{"version": r[0], "published_at": float(r[1]), "published_by": r[2]} for r in rows]

    def versions(self, name: str) -> list[int]:
        return [r[0] for r in self.store.read_sync(
            lambda c: c.execute("SELECT version FROM templates WHERE name = ? ORDER BY version",
                                (name,)).fetchall())]

    def latest(self) -> list[WorkflowTemplate]:
        rows = self.store.read_sync(lambda c: c.execute(
            "SELECT definition FROM templates t WHERE version = "
            "(SELECT max(version) FROM templates WHERE name = t.name) ORDER BY name").fetchall())
        return [WorkflowTemplate.model_validate_json(r[0]) for r in rows]


def check_inputs(template: WorkflowTemplate, input_data: Mapping[str, Any]) -> dict[str, Any]:
    """The run's inputs coerced to their declared types, defaults filled; every problem listed."""
    problems: list[Problem] = []
    declared = {p.name: p for p in template.inputs}
    where = f"inputs of {template.name}"
    out: dict[str, Any] = {}
    for name, value in input_data.items():
        if declared and name not in declared:
            problems.append(Problem(Where(where, name), f"unknown input (declared: {', '.join(declared)})"))
            continue
        param = declared.get(name)
        try:
            out[name] = param.coerce(value) if param else value
        except (ValueError, TypeError) as exc:
            problems.append(Problem(Where(where, name),
                                    f"{exc} (expected {param.type.value if param else 'a value'})"))
    for name, param in declared.items():
        if name not in out and not any(p.where.field == name for p in problems):
            if param.default is not None:
                out[name] = param.default
            elif param.required:
                problems.append(Problem(Where(where, name), "required input missing"))
    if problems:
        raise InputError(f"inputs for {template.name} v{template.version} rejected", problems)
    return out
