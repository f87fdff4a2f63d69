"""Tamper-evident audit trail: a SHA-256 hash chain over the ``transitions`` and ``audit`` tables.

Design (one chain per table):

* Each table is its own chain, ordered by ``seq``. Row *n* stores ``prev_hash`` (the ``hash`` of
  row *n-1*, or :data:`GENESIS` for the first row) and ``hash = SHA-256(canonical(row))``.
* ``canonical(row)`` is the UTF-8 bytes of the JSON array
  ``[table, seq, <the table's fields in CHAIN_FIELDS order>, prev_hash]`` written with
  ``ensure_ascii=True`` and no spaces. Text is JSON-escaped (so any string, even one with lone
  surrogates, has one encoding), integers are plain, ``at`` is the stored REAL in its shortest
  round-trip form (Python's ``repr``, as JavaScript prints numbers), NULL is ``null``; ``details``
  is hashed as the stored JSON text, not re-parsed. Anyone with the rows can recompute it.
* Rows are written only by the store's operations on its writer thread (:func:`insert`,
  :func:`insert_many`), inside the transaction that makes the change, so the chain order is the
  commit order. The cost is one small lookup of the chain's head, one JSON encoding and one SHA-256
  per row (no trigger: an AFTER INSERT trigger alone costs more than the hash). A row inserted by
  other means has no hash, and :func:`verify` names it.
* ``seq`` is an AUTOINCREMENT key: it never has holes, and ``sqlite_sequence`` remembers the
  highest one ever used, so a removed row (even the last ones) shows as a gap.

Two tables rather than one shared chain: each table keeps its own ``seq`` (the Data Services link
reads ``transitions`` by ``seq``), and a chain per table can be verified and exported alone.

Stores from before schema 8 are chained once, when they migrate (:func:`backfill`); the starting
point is kept in ``meta`` under ``audit_chain_start``. Rows up to it were sealed then: the chain
proves they have not changed *since* the migration, not before.

Orders moved to the archive (``labconsole-archive.sqlite3``, :mod:`core.archive`) take their
transitions with them, hashes and all: :func:`verify` given the archive walks the store's
transitions and the archive's as one chain in ``seq`` order (a copy the archive holds of a row
still in the store counts once). Without the archive file the moved rows show as missing, and
the report says which archive they are in.

What a hash chain proves, and what it does not: any change, removal or reordering made without
recomputing every later hash is detected and named by :func:`verify`. Somebody who can write the
file and recomputes the whole chain is only caught against a copy of the head kept elsewhere: keep
``audit export`` files (they carry the hash before their range and every row's hash) or the head
hash printed by ``audit verify`` outside this PC.
"""

from __future__ import annotations

import contextvars
import csv
import hashlib
import json
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.errors import InputError, Problem, Where

GENESIS = "0" * 64
"""``prev_hash`` of the first row of each chain."""

CHAIN_FIELDS: dict[str, tuple[str, ...]] = {
    "transitions": ("order_id", "from_status", "to_status", "at", "who", "why"),
    "audit": ("at", "who", "action", "target", "reason", "details"),
}
"""The chained tables and the fields each row's hash covers (besides ``seq`` and ``prev_hash``)."""

START_KEY = "audit_chain_start"
"""``meta`` key: when the chain started and the last row of each table sealed by the migration."""

SIGNING: contextvars.ContextVar[tuple[frozenset[str], str | None, dict[str, Any]] | None] = \
    contextvars.ContextVar("labconsole_signing", default=None)
"""The electronic signature of the action in progress (set by :func:`core.users.signing`):
``(audit actions, target, record)``. The store carries it from the task that submits a write to
its writer thread, and adds the record as ``details.signature`` to the audit rows of those
actions on that target — for code that writes audit rows but takes no signature argument (the
dispatcher's instrument actions, template publication)."""
EXPORT_FORMAT = "labconsole-audit-export"
EXPORT_VERSION = 1


_ENCODE = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), allow_nan=False).encode
"""One encoder for every row: ``json.dumps`` with options builds a new one per call."""


def canonical(table: str, seq: int, values: Sequence[Any], prev_hash: str) -> bytes:
    """The bytes hashed for one row (see the module docstring)."""
    return _ENCODE([table, seq, *values, prev_hash]).encode("ascii")


def row_hash(table: str, seq: int, values: Sequence[Any], prev_hash: str) -> str:
    return hashlib.sha256(canonical(table, seq, values, prev_hash)).hexdigest()


def head(conn: sqlite3.Connection, table: str) -> tuple[int, str]:
    """``(seq the next row gets, hash of the last row)`` — one statement, two indexed lookups."""
    row = conn.execute(_HEAD_SQL[table]).fetchone()
    return (row[0] or 0) + 1, row[1] or GENESIS


_HEAD_SQL = {t: f"SELECT (SELECT seq FROM sqlite_sequence WHERE name = '{t}'), "
                f"(SELECT hash FROM {t} ORDER BY seq DESC LIMIT 1)" for t in CHAIN_FIELDS}
INSERT_SQL = {t: f"INSERT INTO {t} (seq, {', '.join(f)}, prev_hash, hash) "
                  f"VALUES ({', '.join('?' * (len(f) + 3))})" for t, f in CHAIN_FIELDS.items()}


def insert(conn: sqlite3.Connection, table: str, values: Sequence[Any]) -> int:
    """Insert one chained row (``values`` in :data:`CHAIN_FIELDS` order); return its seq."""
    seq, prev = head(conn, table)
    conn.execute(INSERT_SQL[table], (seq, *values, prev, row_hash(table, seq, values, prev)))
    return seq


def insert_many(conn: sqlite3.Connection, table: str, rows: Sequence[Sequence[Any]]) -> None:
    """Insert many chained rows at once (bulk writers such as the demo data generator)."""
    seq, prev = head(conn, table)
    at = CHAIN_FIELDS[table].index("at")
    chained = []
    for row in rows:
        values = list(row)
        values[at] = float(values[at])  # as the REAL column gives it back
        h = row_hash(table, seq, values, prev)
        chained.append((seq, *values, prev, h))
        seq, prev = seq + 1, h
    conn.executemany(INSERT_SQL[table], chained)


def backfill(conn: sqlite3.Connection, now: float, schema: int) -> dict[str, Any]:
    """Chain the rows a store had before the chain's ``schema`` version (once, inside that
    migration's transaction) and record the starting point in ``meta``."""
    start: dict[str, Any] = {"at": now, "schema": schema}
    for table, fields in CHAIN_FIELDS.items():
        prev, last = GENESIS, 0
        updates: list[tuple[str, str, int]] = []
        cur = conn.execute(f"SELECT seq, {', '.join(fields)} FROM {table} ORDER BY seq")
        for row in cur:
            values = list(row[1:])
            if "at" in fields:
                values[fields.index("at")] = float(values[fields.index("at")])
            h = row_hash(table, row[0], values, prev)
            updates.append((prev, h, row[0]))
            prev, last = h, row[0]
        conn.executemany(f"UPDATE {table} SET prev_hash = ?, hash = ? WHERE seq = ?", updates)
        start[table] = {"sealed_through_seq": last, "rows": len(updates)}
    conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (START_KEY, json.dumps(start)))
    return start


# --------------------------------------------------------------------------- verification


@dataclass
class Finding:
    """The first problem found in one chain."""

    table: str
    seq: int
    what: str

    def __str__(self) -> str:
        return f"{self.table} row seq {self.seq}: {self.what}"


@dataclass
class ChainStatus:
    table: str
    rows: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    head: str = GENESIS
    finding: Finding | None = None


@dataclass
class Report:
    """What :func:`verify` or :func:`verify_export` found, per table."""

    source: str
    chains: list[ChainStatus] = field(default_factory=list)
    start: dict[str, Any] | None = None
    archive: str | None = None
    """What the archive contributed (its transitions walked with the store's), or why it could
    not (missing or unreadable, while the store says orders were moved there); None: no archive."""

    @property
    def ok(self) -> bool:
        return all(c.finding is None for c in self.chains)

    @property
    def first_problem(self) -> Finding | None:
        found = [c.finding for c in self.chains if c.finding is not None]
        return found[0] if found else None

    def render(self) -> str:
        lines = []
        for c in self.chains:
            if c.finding is not None:
                lines.append(f"BROKEN {c.finding}")
            else:
                span = f"seq {c.first_seq}..{c.last_seq}" if c.rows else "no rows"
                lines.append(f"ok {c.table}: {c.rows} rows ({span}), head {c.head}")
        if self.archive is not None:
            lines.append(self.archive)
        if self.start is not None:
            sealed = ", ".join(f"{t} through seq {self.start[t]['sealed_through_seq']}"
                               for t in CHAIN_FIELDS if t in self.start)
            when = datetime.fromtimestamp(self.start["at"], UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
            lines.append(f"chain started {when} (schema {self.start.get('schema')}); rows sealed then: {sealed}")
        return "\n".join(lines)


def _check_rows(status: ChainStatus, rows: Iterator[Sequence[Any]], prev_hash: str, prev_seq: int | None,
                stored_max: int | None = None) -> None:
    """Walk one chain: each row is ``(seq, *fields, prev_hash, hash)``. Sets ``status.finding`` at
    the first problem: a missing row (gap in seq), a prev_hash that does not link, or a hash that
    does not match the row's fields."""
    table = status.table
    fields = CHAIN_FIELDS[table]
    for row in rows:
        seq, values, stored_prev, stored = row[0], list(row[1:-2]), row[-2], row[-1]
        if "at" in fields and values[fields.index("at")] is not None:
            values[fields.index("at")] = float(values[fields.index("at")])
        if status.first_seq is None:
            status.first_seq = seq
        if prev_seq is not None and seq != prev_seq + 1:
            gap = f"{prev_seq + 1}" if seq == prev_seq + 2 else f"{prev_seq + 1}..{seq - 1}"
            what = (f"row(s) {gap} missing (removed) before it" if seq > prev_seq + 1 else
                    f"out of order: comes after seq {prev_seq}")
            status.finding = Finding(table, seq if seq <= prev_seq else prev_seq + 1, what)
            return
        if stored is None:
            status.finding = Finding(table, seq, "has no hash (written outside the store, or "
                                     "its hash was erased)")
            return
        if stored_prev != prev_hash:
            status.finding = Finding(table, seq, f"prev_hash {_short(stored_prev)} does not match the hash "
                                     f"of the row before it ({_short(prev_hash)}): a row was removed, "
                                     "inserted or reordered here")
            return
        computed = row_hash(table, seq, values, stored_prev)
        if computed != stored:
            shown = ", ".join(f"{f}={v!r}" for f, v in zip(fields, values, strict=True))
            status.finding = Finding(table, seq, f"its fields no longer match its hash (stored "
                                     f"{_short(stored)}, computed {_short(computed)}): the row was "
                                     f"changed; it now reads {shown}")
            return
        prev_hash, prev_seq = stored, seq
        status.rows += 1
        status.last_seq = seq
        status.head = stored
    if stored_max is not None and (prev_seq or 0) < stored_max:
        first = (prev_seq or 0) + 1
        status.finding = Finding(table, first, f"row(s) {first}..{stored_max} missing at the end of "
                                 f"the chain (removed; the table has used seq up to {stored_max})")


def _short(h: str | None) -> str:
    return "none" if h is None else h[:12] + "…"


def verify(conn: sqlite3.Connection, source: str = "store", archive: Path | None = None) -> Report:
    """Verify both chains of a store (streams the rows; no table is held in memory). With
    ``archive`` (the store's archive file), the transitions moved there are part of the chain."""
    report = Report(source)
    raw = conn.execute("SELECT value FROM main.meta WHERE key = ?", (START_KEY,)).fetchone()
    report.start = json.loads(raw[0]) if raw else None
    merged = _attach_archive(conn, archive, report) if archive is not None else False
    for table, fields in CHAIN_FIELDS.items():
        status = ChainStatus(table)
        row = conn.execute("SELECT seq FROM main.sqlite_sequence WHERE name = ?", (table,)).fetchone()
        stored_max = row[0] if row else None
        cols = f"seq, {', '.join(fields)}, prev_hash, hash"
        if merged and table == "transitions":
            try:
                cur = conn.execute(f"SELECT {cols} FROM main.transitions UNION ALL "
                                   f"SELECT {cols} FROM archive.transitions ORDER BY seq")
                _check_rows(status, _once_per_seq(cur), GENESIS, 0, stored_max)
            except sqlite3.DatabaseError as exc:
                report.archive = f"the archive {archive} could not be read to the end ({exc})"
                status = ChainStatus(table)
                cur = conn.execute(f"SELECT {cols} FROM main.transitions ORDER BY seq")
                _check_rows(status, iter(cur), GENESIS, 0, stored_max)
        else:
            cur = conn.execute(f"SELECT {cols} FROM main.{table} ORDER BY seq")
            _check_rows(status, iter(cur), GENESIS, 0, stored_max)
        report.chains.append(status)
    return report


def _once_per_seq(rows: Iterator[Sequence[Any]]) -> Iterator[Sequence[Any]]:
    """Rows in seq order with a repeated seq (the archive's copy of a row the store still
    holds, or the other way) given once: the store's, which comes first."""
    last = None
    for row in rows:
        if row[0] != last:
            last = row[0]
            yield row


def _attach_archive(conn: sqlite3.Connection, archive: Path, report: Report) -> bool:
    """Attach ``archive`` read-only as ``archive`` (not in a transaction); whether its
    transitions can be walked. ``report.archive`` says what it held or why it was left out."""
    row = conn.execute("SELECT value FROM main.meta WHERE key = 'archive.orders'").fetchone()
    moved = int(row[0]) if row is not None else 0
    if not (archive.is_file() and archive.stat().st_size > 0):
        if moved:
            report.archive = (f"the archive {archive} is missing: the transitions of the {moved} orders "
                              "moved there cannot be verified (put the file back and verify again)")
        return False
    try:
        if not any(r[1] == "archive" for r in conn.execute("PRAGMA database_list")):
            conn.execute("ATTACH DATABASE ? AS archive", (f"{archive.resolve().as_uri()}?mode=ro",))
        n = conn.execute("SELECT count(*) FROM archive.transitions").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        report.archive = f"the archive {archive} cannot be read ({exc}): its transitions were not verified"
        try:
            conn.execute("DETACH DATABASE archive")
        except sqlite3.DatabaseError:
            pass
        return False
    report.archive = f"with the archive {archive}: {n} transitions of {moved} archived orders in the chain"
    return True


# --------------------------------------------------------------------------- export


def _range_seqs(conn: sqlite3.Connection, table: str, start: float, end: float) -> tuple[int, int] | None:
    """The contiguous seq range from the first row at or after ``start`` to the last row before ``end``."""
    lo = conn.execute(f"SELECT min(seq) FROM {table} WHERE at >= ?", (start,)).fetchone()[0]
    hi = conn.execute(f"SELECT max(seq) FROM {table} WHERE at < ?", (end,)).fetchone()[0]
    if lo is None or hi is None or hi < lo:
        return None
    return lo, hi


def export(conn: sqlite3.Connection, start: float, end: float, *, store: str = "") -> dict[str, Any]:
    """The rows of both chains from ``start`` to ``end`` (epoch seconds; a contiguous seq range
    per table), each with ``prev_hash`` and ``hash``, and the hash of the row before the range."""
    data: dict[str, Any] = {"format": EXPORT_FORMAT, "version": EXPORT_VERSION, "store": store,
                            "from": start, "to": end, "hashing": "sha256 over canonical JSON "
                            "[table, seq, fields..., prev_hash]; see labconsole README", "tables": {}}
    raw = conn.execute("SELECT value FROM meta WHERE key = ?", (START_KEY,)).fetchone()
    data["chain_start"] = json.loads(raw[0]) if raw else None
    for table, fields in CHAIN_FIELDS.items():
        span = _range_seqs(conn, table, start, end)
        entry: dict[str, Any] = {"columns": ["seq", *fields, "prev_hash", "hash"], "before": None, "rows": []}
        if span is not None:
            before = conn.execute(f"SELECT seq, hash FROM {table} WHERE seq < ? ORDER BY seq DESC LIMIT 1",
                                  (span[0],)).fetchone()
            entry["before"] = {"seq": before[0], "hash": before[1]} if before else {"seq": 0, "hash": GENESIS}
            entry["rows"] = [list(r) for r in conn.execute(
                f"SELECT seq, {', '.join(fields)}, prev_hash, hash FROM {table} "
                "WHERE seq BETWEEN ? AND ? ORDER BY seq", span)]
        data["tables"][table] = entry
    return data


CSV_COLUMNS = ("table", "kind", "seq", *dict.fromkeys(f for fs in CHAIN_FIELDS.values() for f in fs),
               "prev_hash", "hash")
"""CSV export columns; ``kind`` is ``before`` (the row before the range: seq and hash only) or
``row``. Every field cell holds the JSON form of the value (text quoted, NULL as null), so types
survive and the rows can be re-hashed exactly."""


def write_export(data: dict[str, Any], out: Path, fmt: str) -> int:
    """Write an export as ``json`` or ``csv``; return the number of rows written."""
    count = sum(len(t["rows"]) for t in data["tables"].values())
    if fmt == "json":
        out.write_text(json.dumps(data, ensure_ascii=True, indent=1) + "\n", encoding="utf-8")
        return count
    if fmt != "csv":
        raise InputError.at(f"format must be csv or json, not {fmt!r}", field="--format")
    with out.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(CSV_COLUMNS)
        for table, entry in data["tables"].items():
            fields = CHAIN_FIELDS[table]
            if entry["before"] is not None:
                w.writerow([table, "before", entry["before"]["seq"], *[""] * (len(CSV_COLUMNS) - 5), "",
                            entry["before"]["hash"]])
            for r in entry["rows"]:
                by_name = dict(zip(fields, r[1:-2], strict=True))
                cells = [json.dumps(by_name[c], ensure_ascii=False) if c in by_name else ""
                         for c in CSV_COLUMNS[3:-2]]
                w.writerow([table, "row", r[0], *cells, r[-2], r[-1]])
    return count


def _load_csv(path: Path) -> dict[str, Any]:
    tables: dict[str, Any] = {t: {"before": None, "rows": []} for t in CHAIN_FIELDS}
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or tuple(header) != CSV_COLUMNS:
            raise InputError.at("not a labconsole audit export (unexpected CSV header)", file=str(path), line=1)
        for line, cells in enumerate(reader, start=2):
            where = Where(str(path), None, line)
            if len(cells) != len(CSV_COLUMNS) or cells[0] not in CHAIN_FIELDS or cells[1] not in ("row", "before"):
                raise InputError("bad export row", [Problem(where, "expected table, kind and "
                                                            f"{len(CSV_COLUMNS) - 2} more cells")])
            table, kind = cells[0], cells[1]
            try:
                seq = int(cells[2])
                if kind == "before":
                    tables[table]["before"] = {"seq": seq, "hash": cells[-1]}
                    continue
                by_name = dict(zip(CSV_COLUMNS[3:-2], cells[3:-2], strict=True))
                values = [json.loads(by_name[f]) for f in CHAIN_FIELDS[table]]
            except (ValueError, json.JSONDecodeError) as exc:
                raise InputError("bad export row", [Problem(where, f"unreadable cell: {exc}")]) from None
            tables[table]["rows"].append([seq, *values, cells[-2] or None, cells[-1] or None])
    return {"format": EXPORT_FORMAT, "tables": tables}


def load_export(path: Path) -> dict[str, Any]:
    """Read a JSON or CSV export (chosen by content), refusing anything else with a located error."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError.at(f"cannot read: {exc}", file=str(path)) from None
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError.at(f"not JSON: {exc.msg}", file=str(path), line=exc.lineno) from None
        if not isinstance(data, dict) or data.get("format") != EXPORT_FORMAT:
            raise InputError.at("not a labconsole audit export", file=str(path), field="format")
        tables = data.get("tables")
        if not isinstance(tables, dict) or not set(tables) <= set(CHAIN_FIELDS):
            raise InputError.at(f"must hold {', '.join(CHAIN_FIELDS)}", file=str(path), field="tables")
        for name, entry in tables.items():
            rows = entry.get("rows") if isinstance(entry, dict) else None
            if not isinstance(rows, list) or any(not isinstance(r, list) or len(r) != len(CHAIN_FIELDS[name]) + 3
                                                 for r in rows):
                raise InputError.at(f"each row is [seq, {', '.join(CHAIN_FIELDS[name])}, prev_hash, hash]",
                                    file=str(path), field=f"tables.{name}.rows")
        return data
    return _load_csv(path)


def verify_export(path: Path) -> Report:
    """Verify an export on its own: every row re-hashed, linked to the one before it, the first
    linked to the recorded hash before the range."""
    data = load_export(path)
    report = Report(str(path), start=data.get("chain_start"))
    for table, entry in data["tables"].items():
        status = ChainStatus(table)
        before = entry.get("before") or {"seq": None, "hash": GENESIS}
        if entry["rows"] and before.get("seq") is None:
            before = {"seq": entry["rows"][0][0] - 1, "hash": entry["rows"][0][-2]}
        _check_rows(status, iter(entry["rows"]), before["hash"], before["seq"])
        report.chains.append(status)
    return report


def parse_when(text: str, field_name: str) -> float:
    """A ``--from``/``--to`` date: ISO date or date-time; naive values are UTC."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise InputError.at(f"{text!r} is not a date (use YYYY-MM-DD or YYYY-MM-DDTHH:MM)",
                            field=field_name) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()
