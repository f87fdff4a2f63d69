"""The operator inbox: one persisted queue of everything that waits for a person.

An item has a kind (:data:`KINDS`), a priority (higher first), its age, what it concerns (run,
step, order, instrument), who may answer it, an answer form (typed fields: text, number with unit
and range, choice, yes/no, barcode, JSON object) and a state (open, answered, expired).

Items are rows of the ``inbox`` table; the engine creates them inside its own decisions (a prompt
step starting, a run pausing on a failed or unknown step), and an answer commits in ONE
transaction with its effect on the run (the step's outputs, a retry, a cancel ...) and the audit
entry. An item answered once is refused a second time, naming who answered first. Items older
than their kind's threshold are escalated (priority raised) and counted for the window title.

This module never imports Qt.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import math
import re
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from core.errors import InputError, NotFoundError, StateError
from core.events import Event
from core.users import authorize, os_user

if TYPE_CHECKING:
    from core.api import RuntimeApi
    from core.engine.dag import DagEngine
    from core.engine.decision import Decision
    from core.engine.engine import Engine
    from core.engine.state import RunState, StepState
    from core.engine.types import StepRequest
    from core.notify import Notice, Notifier
    from core.store import WriteBatch

log = logging.getLogger(__name__)

KINDS = ("prompt", "error", "approval", "lock", "proposal", "window")
"""prompt: a ``prompt`` step's question; error: a run paused on a failed step or one whose
outcome is unknown; approval: a ``prompt`` step declared as an approval; lock: instruments an
operator claimed for manual work ("hands in the cell"); proposal: a playbook rule learned from
repeated identical decisions; window: a step's time window (or a run's deadline) the forecast
says will break, before it does (closed by the forecast once it no longer sees it)."""

STATES = ("open", "answered", "expired")
FIELD_TYPES = ("text", "number", "choice", "yesno", "barcode", "json")

DEFAULT_PRIORITY = {"error": 80, "window": 70, "prompt": 60, "approval": 50, "lock": 40, "proposal": 10}
ESCALATE_AFTER = {"error": 600.0, "prompt": 900.0, "approval": 3600.0, "lock": 4 * 3600.0,
                  "proposal": math.inf, "window": 600.0}
"""Seconds an item may stay open before it is escalated, per kind."""
ESCALATION_BOOST = 30
PROPOSE_AFTER = 5
"""Identical manual decisions on one error signature after which the inbox proposes a rule."""

ERROR_CHOICES = ("retry", "skip", "recover", "cancel")

COLUMNS = ("id, kind, priority, created, title, run_id, step_id, order_id, instrument, answerers, form, "
           "suggestion, context, state, answer, answered_by, answered_at, escalated")


class AlreadyAnsweredError(StateError):
    """The item was answered (or resolved by another action) before this answer."""

    def __init__(self, item_id: int, who: str | None, at: float | None) -> None:
        self.item_id, self.who, self.at = item_id, who, at
        super().__init__(f"inbox item {item_id} was already answered by {who or 'someone'}")


class InboxChanged(Event):
    """Items were created, answered, escalated or closed (``item_id`` None: several)."""

    item_id: int | None = None
    run_id: str | None = None
    state: str = "open"
    kind: str | None = None


# --------------------------------------------------------------------------- answer forms


@dataclass(frozen=True)
class FormField:
    """One typed answer field."""

    name: str
    type: str = "text"
    label: str = ""
    required: bool = True
    default: Any = None
    unit: str | None = None
    min: float | None = None
    max: float | None = None
    integer: bool = False
    choices: tuple[str, ...] = ()
    pattern: str | None = None
    """barcode and text: a regular expression the whole answer must match."""

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "type": self.type}
        for key in ("label", "default", "unit", "min", "max", "pattern"):
            value = getattr(self, key)
            if value not in (None, ""):
                d[key] = value
        if not self.required:
            d["required"] = False
        if self.integer:
            d["integer"] = True
        if self.choices:
            d["choices"] = list(self.choices)
        return d


_FIELD_KEYS = {"name", "type", "label", "required", "default", "unit", "min", "max", "integer", "choices",
               "pattern"}
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def parse_form(raw: Any, where: str = "fields") -> list[FormField]:
    """Typed fields from a template's ``parameters.fields`` (a list of mappings); every problem is
    refused naming ``where[i].key``."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise InputError.at(f"{where}: a list of fields, not {type(raw).__name__}", field=where)
    out: list[FormField] = []
    seen: set[str] = set()
    for i, f in enumerate(raw):
        spec = parse_field(f, f"{where}[{i}]")
        if spec.name in seen:
            raise InputError.at(f"{where}[{i}].name: '{spec.name}' is declared twice", field=f"{where}[{i}].name")
        seen.add(spec.name)
        out.append(spec)
    return out


def parse_field(f: Any, at: str) -> FormField:
    """One typed field (a mapping of :data:`_FIELD_KEYS`); a problem is refused naming ``at.key``."""
    if not isinstance(f, Mapping):
        raise InputError.at(f"{at}: a mapping with name and type", field=at)
    unknown = set(f) - _FIELD_KEYS
    if unknown:
        raise InputError.at(f"{at}: unknown key(s) {', '.join(sorted(unknown))}", field=f"{at}.{sorted(unknown)[0]}")
    name = f.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise InputError.at(f"{at}.name: an identifier is required, not {name!r}", field=f"{at}.name")
    kind = f.get("type", "text")
    if kind not in FIELD_TYPES:
        raise InputError.at(f"{at}.type: '{kind}' is not one of {', '.join(FIELD_TYPES)}", field=f"{at}.type")
    bounds = {}
    for key in ("min", "max"):
        value = f.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise InputError.at(f"{at}.{key}: a number, not {value!r}", field=f"{at}.{key}")
        bounds[key] = float(value) if value is not None else None
    if bounds["min"] is not None and bounds["max"] is not None and bounds["min"] > bounds["max"]:
        raise InputError.at(f"{at}.min: {bounds['min']:g} is above max {bounds['max']:g}", field=f"{at}.min")
    choices = f.get("choices", ())
    if kind == "choice" and (not isinstance(choices, list) or not choices
                             or not all(isinstance(c, str | int | float) for c in choices)):
        raise InputError.at(f"{at}.choices: a choice field needs a non-empty list of values",
                            field=f"{at}.choices")
    pattern = f.get("pattern")
    if pattern is not None:
        try:
            re.compile(str(pattern))
        except re.error as exc:
            raise InputError.at(f"{at}.pattern: not a regular expression ({exc})", field=f"{at}.pattern") from None
    spec = FormField(name=name, type=kind, label=str(f.get("label", "")), required=bool(f.get("required", True)),
                     default=f.get("default"), unit=f.get("unit"), min=bounds["min"], max=bounds["max"],
                     integer=bool(f.get("integer", False)), choices=tuple(str(c) for c in choices or ()),
                     pattern=str(pattern) if pattern is not None else None)
    if spec.default is not None:
        try:
            check_answer([spec], {name: spec.default})
        except InputError as exc:
            message = exc.problems[0].message if exc.problems else str(exc)
            raise InputError.at(f"{at}.default: {message}", field=f"{at}.default") from None
    return spec


_YES = {"true", "yes", "y", "1", "on"}
_NO = {"false", "no", "n", "0", "off"}


def _value(f: FormField, value: Any) -> Any:
    """``value`` as ``f`` types it, or ValueError with what is wrong."""
    if f.type == "number":
        if isinstance(value, bool):
            raise ValueError(f"a number is required, not {value!r}")
        try:
            number = float(value) if not isinstance(value, int | float) else value
        except (TypeError, ValueError):
            raise ValueError(f"a number is required, not {value!r}") from None
        if isinstance(number, float) and not math.isfinite(number):
            raise ValueError(f"a finite number is required, not {value!r}")
        unit = f" {f.unit}" if f.unit else ""
        if f.integer:
            if float(number) != int(number):
                raise ValueError(f"a whole number is required, not {value!r}")
            number = int(number)
        if f.min is not None and number < f.min:
            raise ValueError(f"{number:g}{unit} is below the minimum {f.min:g}{unit}")
        if f.max is not None and number > f.max:
            raise ValueError(f"{number:g}{unit} is above the maximum {f.max:g}{unit}")
        return number
    if f.type == "yesno":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _YES:
            return True
        if text in _NO:
            return False
        raise ValueError(f"yes or no is required, not {value!r}")
    if f.type == "choice":
        text = str(value)
        if text not in f.choices:
            raise ValueError(f"{value!r} is not one of {', '.join(f.choices)}")
        return text
    if f.type == "json":
        if isinstance(value, str):
            try:
                value = json.loads(value) if value.strip() else {}
            except json.JSONDecodeError as exc:
                raise ValueError(f"not JSON: {exc.msg} at character {exc.pos}") from None
        if not isinstance(value, dict):
            raise ValueError("a JSON object is required")
        return value
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise ValueError(f"text is required, not {type(value).__name__}")
    text = str(value).strip()
    if f.type == "barcode" and (not text or any(ch.isspace() or not ch.isprintable() for ch in text)):
        raise ValueError(f"a barcode is printable characters without spaces, not {value!r}")
    if f.pattern is not None and not re.fullmatch(f.pattern, text):
        raise ValueError(f"{text!r} does not match {f.pattern}")
    return text


def check_answer(fields: Sequence[FormField], values: Mapping[str, Any], where: str = "answer") -> dict[str, Any]:
    """The answer typed by its form; refused (InputError naming the field) when a value is missing,
    of the wrong type, outside its range or not among its choices, or when a field is unknown."""
    if not isinstance(values, Mapping):
        raise InputError.at(f"{where}: an object of field values is required", field=where)
    names = {f.name for f in fields}
    unknown = [k for k in values if k not in names]
    if unknown:
        raise InputError.at(f"{where}.{unknown[0]}: no such field (fields: {', '.join(sorted(names)) or 'none'})",
                            field=unknown[0])
    out: dict[str, Any] = {}
    for f in fields:
        value = values.get(f.name)
        if value is None or (isinstance(value, str) and not value.strip() and f.type != "json"):
            if f.default is not None:
                value = f.default
            elif f.required:
                raise InputError.at(f"{f.label or f.name}: an answer is required", field=f.name)
            else:
                continue
        try:
            out[f.name] = _value(f, value)
        except ValueError as exc:
            raise InputError.at(f"{f.label or f.name}: {exc}", field=f.name) from None
    return out


# --------------------------------------------------------------------------- items


@functools.lru_cache(maxsize=512)
def _stored_form(text: str) -> tuple[FormField, ...]:
    """A stored form (items of one template step share it: parsed once)."""
    return tuple(parse_form(json.loads(text).get("fields")))


@dataclass
class InboxItem:
    id: int
    kind: str
    priority: int
    created: float
    title: str
    run_id: str | None = None
    step_id: str | None = None
    order_id: str | None = None
    instrument: str | None = None
    answerers: list[str] | None = None
    form: list[FormField] = field(default_factory=list)
    suggestion: dict[str, Any] | None = None
    context: dict[str, Any] = field(default_factory=dict)
    state: str = "open"
    answer: dict[str, Any] | None = None
    answered_by: str | None = None
    answered_at: float | None = None
    escalated: bool = False
    notices: list[Notice] = field(default_factory=list)
    """Notifications of this item beyond the window (webhook, e-mail) and how they went."""

    @property
    def notice_failed(self) -> bool:
        return any(n.failing for n in self.notices)

    @classmethod
    def from_row(cls, r: Sequence[Any]) -> InboxItem:
        return cls(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8],
                   json.loads(r[9]) if r[9] else None, list(_stored_form(r[10])),
                   json.loads(r[11]) if r[11] else None, json.loads(r[12] or "{}"), r[13],
                   json.loads(r[14]) if r[14] else None, r[15], r[16], bool(r[17]))

    @property
    def concerns(self) -> str:
        parts = [p for p in (self.run_id and f"run {self.run_id}", self.step_id and f"step {self.step_id}",
                             self.instrument and f"instrument {self.instrument}") if p]
        return ", ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "priority": self.priority, "created": self.created,
                "title": self.title, "runId": self.run_id, "stepId": self.step_id, "orderId": self.order_id,
                "instrument": self.instrument, "answerers": self.answerers,
                "fields": [f.as_dict() for f in self.form], "suggestion": self.suggestion,
                "context": self.context, "state": self.state, "answer": self.answer,
                "answeredBy": self.answered_by, "answeredAt": self.answered_at, "escalated": self.escalated,
                "notifications": [n.as_dict() for n in self.notices]}


@dataclass
class NewItem:
    """What :func:`open_item_op` records."""

    kind: str
    title: str
    form: Sequence[FormField] = ()
    run_id: str | None = None
    step_id: str | None = None
    order_id: str | None = None
    instrument: str | None = None
    answerers: Sequence[str] | None = None
    suggestion: Mapping[str, Any] | None = None
    context: Mapping[str, Any] = field(default_factory=dict)
    priority: int | None = None


Write = Callable[[sqlite3.Connection], Any]

TOPIC_OPENED = "Labconsole.Inbox.ItemOpened"
TOPIC_ANSWERED = "Labconsole.Inbox.ItemAnswered"
"""Data Services event topics: every item opened and answered is in the event log (same commit)."""


def _ds_event(conn: sqlite3.Connection, topic: str, item_id: int, run_id: str | None, who: str | None,
              data: Mapping[str, Any]) -> None:
    from core.dataservices.backend import _insert_event
    from core.dataservices.models import EventMessage

    _insert_event(conn, EventMessage(topic=topic, associationId=run_id, actorId=who, subjects=[f"inbox/{item_id}"],
                                     data=json.dumps({"itemId": item_id, **data}, default=str)))


def open_item_op(item: NewItem, now: float) -> Write:
    """Record an open item; when the same order already has an open item of this kind (a prompt
    step re-run after a restart), that one is kept and its id returned."""
    if item.kind not in KINDS:
        raise StateError(f"unknown inbox kind '{item.kind}' (one of {', '.join(KINDS)})")
    priority = item.priority if item.priority is not None else DEFAULT_PRIORITY[item.kind]
    form = json.dumps({"fields": [f.as_dict() for f in item.form]})

    def op(conn: sqlite3.Connection) -> int:
        if item.order_id is not None:
            found = conn.execute("SELECT id FROM inbox WHERE order_id=? AND state='open' AND kind=?",
                                 (item.order_id, item.kind)).fetchone()
            if found is not None:
                return int(found[0])
        cur = conn.execute(
            "INSERT INTO inbox (kind, priority, created, title, run_id, step_id, order_id, instrument, answerers, "
            "form, suggestion, context) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (item.kind, priority, now, item.title, item.run_id, item.step_id, item.order_id, item.instrument,
             json.dumps(list(item.answerers)) if item.answerers else None, form,
             json.dumps(dict(item.suggestion)) if item.suggestion else None, json.dumps(dict(item.context))))
        item_id = int(cur.lastrowid or 0)
        _ds_event(conn, TOPIC_OPENED, item_id, item.run_id, None,
                  {"kind": item.kind, "title": item.title, "stepId": item.step_id, "instrument": item.instrument,
                   "priority": priority, "fields": [f.as_dict() for f in item.form]})
        return item_id

    return op


def publish_opened(run_id: str | None, kind: str) -> Callable[[Any, Any], None]:
    return lambda item_id, bus: bus.publish(InboxChanged(item_id=item_id, run_id=run_id, kind=kind))


def answer_op(item_id: int, who: str, answer: Mapping[str, Any], now: float, *,
              propose_after: int = PROPOSE_AFTER) -> Write:
    """Mark the item answered (refused with who answered first if it is not open). An answer to an
    error item counts towards a playbook proposal for its error signature; the proposal item is
    opened in the same transaction once ``propose_after`` identical choices were made."""
    payload = json.dumps(dict(answer), default=str)

    def op(conn: sqlite3.Connection) -> int | None:
        row = conn.execute("SELECT state, answered_by, answered_at, kind, context, run_id FROM inbox WHERE id=?",
                           (item_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"no inbox item {item_id}")
        if row[0] != "open":
            raise AlreadyAnsweredError(item_id, row[1], row[2])
        conn.execute("UPDATE inbox SET state='answered', answer=?, answered_by=?, answered_at=? WHERE id=?",
                     (payload, who, now, item_id))
        _ds_event(conn, TOPIC_ANSWERED, item_id, row[5], who, {"kind": row[3], "answer": dict(answer)})
        choice = answer.get("choice")
        context = json.loads(row[4] or "{}")
        if row[3] == "error" and choice in ERROR_CHOICES and context.get("signature") and propose_after > 0:
            return _count_choice(conn, context, str(choice), propose_after, now)
        return None

    return op


def _count_choice(conn: sqlite3.Connection, context: dict[str, Any], choice: str, propose_after: int,
                  now: float) -> int | None:
    signature = context["signature"]
    conn.execute("INSERT INTO playbook_choices (signature, choice, count) VALUES (?,?,1) "
                 "ON CONFLICT (signature, choice) DO UPDATE SET count = count + 1", (signature, choice))
    count = conn.execute("SELECT count FROM playbook_choices WHERE signature=? AND choice=?",
                         (signature, choice)).fetchone()[0]
    if count < propose_after or choice == "recover":
        return None
    if conn.execute("SELECT 1 FROM inbox WHERE kind='proposal' AND state='open' AND json_extract(context, "
                    "'$.signature') = ?", (signature,)).fetchone():
        return None
    where = context.get("instrument") or context.get("capability") or "any instrument"
    title = (f"{choice.capitalize()} chosen {count} times for {context.get('error_code')} on {where} — "
             "make it the default?")
    item = NewItem(kind="proposal", title=title, form=PROPOSAL_FORM,
                   suggestion={"accept": True},
                   context={**{k: context.get(k) for k in ("error_code", "capability", "instrument")},
                            "signature": signature, "choice": choice, "count": count})
    return int(open_item_op(item, now)(conn))


def publish_answered(item_id: int, run_id: str | None) -> Callable[[Any, Any], None]:
    def publish(proposal: int | None, bus: Any) -> None:
        bus.publish(InboxChanged(item_id=item_id, run_id=run_id, state="answered"))
        if proposal:
            bus.publish(InboxChanged(item_id=proposal, kind="proposal"))

    return publish


def close_op(who: str, why: str, now: float, *, run_id: str | None = None, order_id: str | None = None) -> CloseItems:
    """Items of a run (or of one step's order) that an action resolved: answered, naming it."""
    return CloseItems(who, why, now, run_id, order_id)


class CloseItems:
    """The write of :func:`close_op`: ``op(conn)`` alone; :meth:`into` a batch of writes, where
    one read finds which of the batch's runs (or orders) have open items at all, and only those
    are written to (a bulk cancel of runs that have none writes nothing here)."""

    __slots__ = ("who", "why", "now", "run_id", "order_id", "batch_key")

    def __init__(self, who: str, why: str, now: float, run_id: str | None, order_id: str | None) -> None:
        self.who, self.why, self.now, self.run_id, self.order_id = who, why, now, run_id, order_id
        self.batch_key = ("inbox order", order_id) if order_id is not None else ("inbox run", run_id)

    def __call__(self, conn: sqlite3.Connection) -> int:
        payload = json.dumps({"action": self.why})
        if self.order_id is not None:
            closed = conn.execute("UPDATE inbox SET state='answered', answer=?, answered_by=?, answered_at=? "
                                  "WHERE order_id=? AND state='open' RETURNING id, kind, run_id",
                                  (payload, self.who, self.now, self.order_id)).fetchall()
        else:
            closed = conn.execute("UPDATE inbox SET state='answered', answer=?, answered_by=?, answered_at=? "
                                  "WHERE run_id=? AND state='open' AND kind IN ('prompt','error','approval') "
                                  "RETURNING id, kind, run_id", (payload, self.who, self.now, self.run_id)).fetchall()
        for item_id, kind, item_run in closed:
            _ds_event(conn, TOPIC_ANSWERED, item_id, item_run, self.who, {"kind": kind, "answer": {"action": self.why}})
        return len(closed)

    def into(self, batch: WriteBatch) -> int:
        kind, key = self.batch_key
        if not batch.maybe(kind, key, _open_orders if self.order_id is not None else _open_runs):
            return 0
        return self(batch.conn)  # the inbox and its events: nothing the batch holds


def _open_runs(conn: sqlite3.Connection, run_ids: list[Any]) -> set[Any]:
    return {r[0] for r in conn.execute(
        f"SELECT DISTINCT run_id FROM inbox WHERE state='open' AND run_id IN ({','.join('?' * len(run_ids))})",
        run_ids)}


def _open_orders(conn: sqlite3.Connection, order_ids: list[Any]) -> set[Any]:
    return {r[0] for r in conn.execute(
        f"SELECT DISTINCT order_id FROM inbox WHERE state='open' AND order_id IN ({','.join('?' * len(order_ids))})",
        order_ids)}


def publish_closed(run_id: str | None) -> Callable[[Any, Any], None]:
    def publish(count: int, bus: Any) -> None:
        if count:
            bus.publish(InboxChanged(run_id=run_id, state="answered"))

    return publish


def escalate_op(now: float, after: Mapping[str, float], boost: int = ESCALATION_BOOST,
                notify: Sequence[str] = ()) -> Write:
    """Raise the priority of open items older than their kind's threshold (once each); with
    ``notify`` channels, each raised item's notifications are recorded in the same transaction.
    Returns the ids of the items raised."""
    from core.notify import schedule_op

    def op(conn: sqlite3.Connection) -> list[int]:
        raised: list[int] = []
        for kind, seconds in after.items():
            if math.isfinite(seconds):
                raised += [int(r[0]) for r in conn.execute(
                    "UPDATE inbox SET escalated=1, priority=priority+? WHERE state='open' AND escalated=0 "
                    "AND kind=? AND created <= ? RETURNING id", (boost, kind, now - seconds))]
        if raised and notify:
            schedule_op(conn, raised, notify, now)
        return raised

    return op


def read_items(conn: sqlite3.Connection, state: str | None = "open", kind: str | None = None,
               run_id: str | None = None, limit: int | None = None) -> list[InboxItem]:
    where, params = [], []
    for column, value in (("state", state), ("kind", kind), ("run_id", run_id)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    sql = f"SELECT {COLUMNS} FROM inbox" + (f" WHERE {' AND '.join(where)}" if where else "") + \
        " ORDER BY priority DESC, created, id" + (f" LIMIT {int(limit)}" if limit else "")
    return [InboxItem.from_row(r) for r in conn.execute(sql, params)]


class InboxRow(NamedTuple):
    """What a list of items shows (the form and context are read when an item is opened)."""

    id: int
    kind: str
    priority: int
    created: float
    title: str
    concerns: str
    escalated: bool
    text: str
    """Lower-case words to filter on: title, concerns, kind."""
    notice: str = ""
    """What went wrong notifying about the item beyond the window (empty: nothing)."""


def read_rows(conn: sqlite3.Connection, state: str = "open") -> list[InboxRow]:
    """Items as list rows, most urgent first (built here, on the reader thread)."""
    from core.notify import failing_notices

    failing = failing_notices(conn)
    out = []
    for i, kind, priority, created, title, run_id, step_id, instrument, escalated in conn.execute(
            "SELECT id, kind, priority, created, title, run_id, step_id, instrument, escalated FROM inbox "
            "WHERE state = ? ORDER BY priority DESC, created, id", (state,)):
        concerns = ", ".join(p for p in (run_id and f"run {run_id}", step_id and f"step {step_id}",
                                         instrument and f"instrument {instrument}") if p)
        notices = failing.get(i)
        out.append(InboxRow(i, kind, priority, created, title, concerns, bool(escalated),
                            f"{title} {concerns} {kind}".lower(),
                            "; ".join(n.describe() for n in notices) if notices else ""))
    return out


class Lock(NamedTuple):
    """An open "hands in the cell" lock, as Robots and the Dashboard show it."""

    item_id: int
    instruments: tuple[str, ...]
    who: str
    reason: str | None
    since: float

    def describe(self) -> str:
        """``"Hands in the cell: ann — calibration"``."""
        return f"Hands in the cell: {self.who}" + (f" — {self.reason}" if self.reason else "")


def read_locks(conn: sqlite3.Connection) -> list[Lock]:
    """Open locks, oldest first (one indexed query)."""
    out = []
    for item_id, created, context in conn.execute(
            "SELECT id, created, context FROM inbox WHERE state='open' AND kind='lock' ORDER BY created, id"):
        ctx = json.loads(context or "{}")
        out.append(Lock(int(item_id), tuple(str(i) for i in ctx.get("instruments") or ()),
                        str(ctx.get("claimed_by") or "someone"), ctx.get("reason") or None, float(created)))
    return out


def read_item(conn: sqlite3.Connection, item_id: int) -> InboxItem:
    from core.notify import notices_of

    row = conn.execute(f"SELECT {COLUMNS} FROM inbox WHERE id=?", (item_id,)).fetchone()
    if row is None:
        raise NotFoundError(f"no inbox item {item_id}")
    item = InboxItem.from_row(row)
    item.notices = notices_of(conn, item_id)
    return item


def counts(conn: sqlite3.Connection) -> tuple[int, int]:
    """(open items, escalated open items)."""
    row = conn.execute("SELECT COUNT(*), COALESCE(SUM(escalated), 0) FROM inbox WHERE state='open'").fetchone()
    return int(row[0]), int(row[1])


# --------------------------------------------------------------------------- the forms the engine uses


PROPOSAL_FORM = (FormField("accept", "yesno", "Make it a playbook rule"),)


def error_form(step_ids: Sequence[str], failed_step: str) -> list[FormField]:
    """Retry / skip with given outputs / recover from a step / cancel the run."""
    return [FormField("choice", "choice", "Decision", choices=ERROR_CHOICES),
            FormField("outputs", "json", "Outputs (skip)", required=False),
            FormField("from_step", "choice", "Recover from step", required=False,
                      choices=tuple(step_ids) or (failed_step,)),
            FormField("reason", "text", "Reason", required=False)]


def approval_form() -> list[FormField]:
    return [FormField("approved", "yesno", "Approve"), FormField("reason", "text", "Reason", required=False)]


WINDOW_FORM = (FormField("acknowledged", "yesno", "Seen: I will look after this run"),)
LOCK_FORM = (FormField("release", "yesno", "Release the instruments"),
             FormField("reason", "text", "Reason", required=False))


@dataclass(frozen=True)
class PromptSpec:
    """What a ``prompt`` step declares in its parameters."""

    message: str
    fields: list[FormField]
    approval: bool = False
    two_people: bool = False
    answerers: tuple[str, ...] = ()
    timeout: float | None = None
    default: dict[str, Any] | None = None
    priority: int | None = None

    @property
    def form(self) -> list[FormField]:
        return approval_form() if self.approval else self.fields


def prompt_spec(parameters: Mapping[str, Any]) -> PromptSpec:
    """Read a prompt step's parameters: ``message``, ``fields`` (typed answer fields),
    ``approval`` (true, or ``{two_people: true}``), ``answerers`` (user names), ``timeout`` with
    ``default`` (the answer given when nobody answered in time), ``priority``."""
    from core.durations import parse_duration

    fields = parse_form(parameters.get("fields"), "parameters.fields")
    approval = parameters.get("approval", False)
    two = bool(approval.get("two_people", False)) if isinstance(approval, Mapping) else False
    answerers = parameters.get("answerers") or ()
    if isinstance(answerers, str):
        answerers = (answerers,)
    timeout = parameters.get("timeout")
    seconds = None
    if timeout is not None:
        try:
            seconds = parse_duration(timeout)
        except (InputError, ValueError) as exc:
            raise InputError.at(f"parameters.timeout: {exc}", field="parameters.timeout") from None
    default = parameters.get("default")
    if default is not None and not isinstance(default, Mapping):
        raise InputError.at("parameters.default: the answer given on timeout, a mapping of field values",
                            field="parameters.default")
    for key, check in (("priority", _priority_problem), ("answerers", _answerers_problem)):
        if (problem := check(parameters.get(key))) is not None:
            raise InputError.at(f"parameters.{key}: {problem}", field=f"parameters.{key}")
    spec = PromptSpec(str(parameters.get("message", "Operator action required")), fields, bool(approval), two,
                      tuple(str(a) for a in answerers), seconds,
                      dict(default) if isinstance(default, Mapping) else None,
                      int(parameters["priority"]) if isinstance(parameters.get("priority"), int) else None)
    if seconds is not None and spec.default is None:
        raise InputError.at("parameters.default: a prompt with a timeout needs the answer given when it passes",
                            field="parameters.default")
    if spec.default is not None:
        try:
            check_answer(spec.form, spec.default, "parameters.default")
        except InputError as exc:
            first = exc.problems[0]
            at = f"parameters.default.{first.where.field}"
            raise InputError.at(f"{at}: {first.message}", field=at) from None
    return spec


def _priority_problem(value: Any) -> str | None:
    if value is None or (isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 100):
        return None
    return f"a whole number 0-100, not {value!r}"


def _answerers_problem(value: Any) -> str | None:
    names = (value,) if isinstance(value, str) else value
    if value is None or (isinstance(names, list | tuple) and all(isinstance(a, str) and a for a in names)):
        return None
    return f"a user name or a list of user names, not {value!r}"


def prompt_problems(parameters: Mapping[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
    """Every problem of a ``prompt`` step's declaration, for the template validator: (path under
    the step, message) — each answer field on its own (type, range, choices, pattern, its
    default), then the prompt's timeout, default answer (against its fields), priority and
    answerers."""
    out: list[tuple[tuple[str | int, ...], str]] = []

    def note(exc: InputError) -> None:
        problem = exc.problems[0] if exc.problems else None
        field_name = problem.where.field if problem is not None and problem.where.field else "parameters"
        message = problem.message if problem is not None else str(exc)
        prefix = f"{field_name}: "
        out.append((_field_path(field_name), message[len(prefix):] if message.startswith(prefix) else message))

    raw = parameters.get("fields")
    if raw is not None and not isinstance(raw, list):
        out.append((("parameters", "fields"), f"a list of fields, not {type(raw).__name__}"))
        return out
    seen: set[str] = set()
    good = 0
    for i, f in enumerate(raw or ()):
        name = f.get("name") if isinstance(f, Mapping) else None
        try:
            parse_field(f, f"parameters.fields[{i}]")
            good += 1
        except InputError as exc:
            note(exc)
        if isinstance(name, str) and name in seen:
            out.append((("parameters", "fields", i, "name"), f"'{name}' is declared twice"))
            good -= 1
        if isinstance(name, str):
            seen.add(name)
    for key, check in (("priority", _priority_problem), ("answerers", _answerers_problem)):
        if (problem := check(parameters.get(key))) is not None:
            out.append((("parameters", key), problem))
    if good < len(raw or ()):
        return out  # the timeout and default answer are checked once the fields are right
    try:
        prompt_spec({k: v for k, v in parameters.items() if k not in ("priority", "answerers")})
    except InputError as exc:
        note(exc)
    return out


def _field_path(text: str) -> tuple[str | int, ...]:
    """``parameters.fields[1].type`` -> ``("parameters", "fields", 1, "type")``."""
    out: list[str | int] = []
    for part in text.split("."):
        name, *indexes = part.split("[")
        if name:
            out.append(name)
        out += [int(i.rstrip("]")) for i in indexes if i.rstrip("]").isdigit()]
    return tuple(out)


# --------------------------------------------------------------------------- what the engine records


def signature(error_code: str | None, capability: str, instrument: str | None) -> str:
    """The error signature operators' decisions are counted under."""
    return f"{error_code or 'StepFailed'}|{capability}|{instrument or '*'}"


def record_error(engine: DagEngine, d: Decision, run: RunState, state: StepState,
                 suggestion: Mapping[str, Any] | None = None, rule: str | None = None) -> None:
    """The run pauses on a failed (or unknown-outcome) step: an error item, in the same commit.
    The playbook's suggestion (its rule, or the choice operators made most often) is preselected."""
    sig = signature(state.error_code, state.step.kind, state.instrument)
    if suggestion is None and engine.playbook is not None:
        suggestion = engine.playbook.suggest(sig)
    unknown = state.status.value == "unknown"
    item = NewItem(
        kind="error", run_id=run.run_id, step_id=state.step.id, order_id=state.order_id, instrument=state.instrument,
        title=(f"{run.template.name}: step '{state.step.id}' "
               f"{'outcome unknown' if unknown else 'failed'}: {state.error_code or 'error'}: {state.error}"),
        form=error_form(list(run.steps), state.step.id), suggestion=suggestion,
        context={"error_code": state.error_code, "error": state.error, "capability": state.step.kind,
                 "instrument": state.instrument, "signature": sig, "template": run.template.name,
                 "attempt": state.attempt, "outcome_unknown": unknown, **({"rule": rule} if rule else {})})
    d.write(open_item_op(item, engine.clock.now()), publish_opened(run.run_id, "error"))


def _open_prompt_op(item: NewItem, now: float) -> Write:
    """A prompt or approval item; an approval records who requested the run (the requester may
    not approve when two people are required)."""
    opened = open_item_op(item, now)

    def op(conn: sqlite3.Connection) -> int:
        if item.kind == "approval":
            row = conn.execute("SELECT requester FROM runs WHERE run_id=?", (item.run_id,)).fetchone()
            item.context = {**item.context, "requested_by": row[0] if row else None}
        return int(opened(conn))

    return op


async def wait_for_answer(engine: DagEngine, state: StepState, request: StepRequest) -> None:
    """A ``prompt`` step: open its item (kept if it is already open after a restart) and wait;
    the answer completes the step (:attr:`Act.ANSWER <core.engine.control.Act>`), skipping or
    canceling it ends the wait. A declared ``timeout`` gives the declared ``default`` answer."""
    from core.engine.decision import Decision
    from core.engine.types import StepFailure

    try:
        spec = prompt_spec(request.parameters)
    except InputError as exc:
        raise StepFailure(f"step {state.step.id}: {exc}", "PromptError", retryable=False) from None
    state.error = spec.message
    item = NewItem(kind="approval" if spec.approval else "prompt", title=spec.message, form=spec.form,
                   run_id=request.run_id, step_id=state.step.id, order_id=state.order_id,
                   answerers=spec.answerers or None, priority=spec.priority,
                   context={"template": request.template_name, "two_people": spec.two_people,
                            **({"timeout": spec.timeout, "default": spec.default} if spec.timeout else {})})
    opened: list[int] = []

    def publish(item_id: int, bus: Any) -> None:
        opened.append(item_id)
        publish_opened(request.run_id, item.kind)(item_id, bus)

    d = Decision(engine.ledger)
    d.write(_open_prompt_op(item, engine.clock.now()), publish)
    await engine._commit(d)  # noqa: SLF001 - the engine's own commit path
    if spec.timeout is not None and spec.default is not None and opened:
        waited = engine.clock.now() - state.started if state.resumed and state.started else 0.0
        attempt, timeout = state.attempt, spec.timeout
        given = InboxItem(opened[0], item.kind, 0, 0.0, item.title, item.run_id, item.step_id, item.order_id,
                          form=list(spec.form))
        answer = check_answer(spec.form, spec.default)

        def due() -> None:
            if state.attempt == attempt and state.status.value == "running":
                engine.tasks.spawn(_answer_default(engine, given, answer, timeout), f"prompt-timeout-{state.order_id}")

        engine.timers.at(engine.clock.now() + max(0.0, timeout - waited), due)
    await asyncio.Event().wait()


async def _answer_default(engine: DagEngine, item: InboxItem, answer: dict[str, Any], timeout: float) -> None:
    action = action_for(item, answer, "timeout", f"no answer within {timeout:g} s: the declared default")
    error = (await engine.act([action]))[0]  # type: ignore[attr-defined]
    if error is not None:
        log.info("prompt %s: default answer not applied: %s", item.order_id, error)


def action_for(item: InboxItem, answer: dict[str, Any], who: str, reason: str | None) -> Any:
    """The engine action an answer to a prompt, approval or error item stands for."""
    from core.engine.control import Act, Action

    common: dict[str, Any] = {"run_id": item.run_id or "", "who": who, "reason": reason, "item": item.id,
                              "answer": answer}
    if item.kind == "prompt":
        return Action(act=Act.ANSWER, step_id=item.step_id, outputs=answer, **common)
    if item.kind == "approval":
        if answer["approved"]:
            return Action(act=Act.ANSWER, step_id=item.step_id,
                          outputs={"approved": True, "approved_by": who, "reason": answer.get("reason")}, **common)
        return Action(act=Act.ANSWER, step_id=item.step_id, rejected=answer.get("reason") or "rejected", **common)
    if item.kind != "error":
        raise StateError(f"inbox item {item.id} ({item.kind}) is not answered through a run")
    choice = answer["choice"]
    if choice == "retry":
        return Action(act=Act.RETRY, step_id=item.step_id, **common)
    if choice == "skip":
        return Action(act=Act.SKIP, step_id=item.step_id, outputs=answer.get("outputs") or {}, **common)
    if choice == "recover":
        return Action(act=Act.RECOVER, step_id=answer.get("from_step") or item.step_id, **common)
    return Action(act=Act.CANCEL, **common)


# --------------------------------------------------------------------------- the service


class Inbox:
    """Listing, answering and escalating items of one engine's store (see the module docstring).

    ``dispatcher``: for "hands in the cell" locks (instruments disabled while claimed).
    ``notifier``: sends escalated items beyond the window (:mod:`core.notify`).
    """

    def __init__(self, engine: Engine, *, dispatcher: Any = None,
                 escalate_after: Mapping[str, float] | None = None, propose_after: int = PROPOSE_AFTER,
                 notifier: Notifier | None = None) -> None:
        self.engine = engine
        self.notifier = notifier
        self.store = engine.store
        self.bus = engine.ledger.bus
        self.dispatcher = dispatcher
        self.escalate_after = {**ESCALATE_AFTER, **(escalate_after or {})}
        self.propose_after = propose_after
        self.loop: asyncio.AbstractEventLoop | None = None
        """The loop answers run on (the engine's); answers from other threads are sent there."""
        try:
            self.loop = asyncio.get_running_loop()
        except RuntimeError:
            self.loop = None
        self._answering: dict[int, str] = {}
        """Items answered (or being answered) through this inbox -> who answered."""
        self._task: asyncio.Task[None] | None = None
        engine.inbox = self

    @classmethod
    def of(cls, runtime: RuntimeApi) -> Inbox:
        """The inbox of a :class:`core.runtime.Runtime` (made on first use), notifying as
        ``[NOTIFICATIONS]`` of its config.ini asks (a bad entry raises ConfigError naming it)."""
        from core.backup import find_config
        from core.notify import Notifier

        existing = getattr(runtime.engine, "inbox", None)
        if isinstance(existing, Inbox):
            return existing
        notifier = Notifier.from_config(runtime.store, find_config(runtime.store.path.parent),
                                        clock=runtime.clock, bus=runtime.ledger.bus)
        return cls(runtime.engine, dispatcher=runtime.dispatcher, notifier=notifier)

    # ------------------------------------------------------------------ reading

    def items(self, state: str | None = "open", kind: str | None = None, run_id: str | None = None,
              limit: int | None = None) -> list[InboxItem]:
        return self.store.read_sync(lambda c: read_items(c, state, kind, run_id, limit))

    def item(self, item_id: int) -> InboxItem:
        return self.store.read_sync(lambda c: read_item(c, item_id))

    def rows(self, state: str = "open") -> list[InboxRow]:
        return self.store.read_sync(lambda c: read_rows(c, state))

    def counts(self) -> tuple[int, int]:
        """(open, escalated) — for the window title."""
        return self.store.read_sync(counts)

    # ------------------------------------------------------------------ escalation

    async def escalate(self) -> int:
        """Escalate items older than their kind's threshold (and record their notifications);
        returns how many were raised."""
        channels = self.notifier.channels if self.notifier is not None else ()
        raised = await self.store.write(escalate_op(self.engine.clock.now(), self.escalate_after, notify=channels))
        if raised:
            self.bus.publish(InboxChanged(state="escalated"))
            if self.notifier is not None:
                self.notifier.wake()
        return len(raised)

    async def resend(self, item_id: int, *, who: str | None = None, reason: str | None = None) -> int:
        """Send an item's failed notifications again (audited); how many were queued. A signed-in
        user whose role may not is refused (PermissionDenied naming the role)."""
        who = who or os_user()
        authorize(self.store, who, "notify again")
        if self.notifier is None:
            raise StateError("no notifications are configured ([NOTIFICATIONS] of config.ini)")
        count = await self.notifier.resend(item_id, who=who, reason=reason)
        if count:
            self.bus.publish(InboxChanged(item_id=item_id, state="notified"))
        return count

    def start(self, interval: float = 30.0) -> None:
        """Escalate periodically on the running loop (and send notifications, if configured)."""
        self.loop = asyncio.get_running_loop()
        if self.notifier is not None:
            self.notifier.start(self.engine.tasks)

        async def every() -> None:
            while True:
                try:
                    await self.escalate()
                except Exception:  # noqa: BLE001 - logged; the next round tries again
                    log.exception("inbox escalation failed")
                await asyncio.sleep(interval)

        if self._task is None:
            self._task = self.engine.tasks.spawn(every(), "inbox-escalation")

    # ------------------------------------------------------------------ answering

    async def answer(self, item_id: int, values: Mapping[str, Any], *, who: str | None = None,
                     reason: str | None = None) -> InboxItem:
        """Answer an item: its answer is checked against its form (InputError naming the field),
        then committed with its effect and audit entry in one transaction. A second answer is
        refused (AlreadyAnsweredError) naming who answered first."""
        who = who or os_user()
        authorize(self.store, who, "answer")
        item = await self.store.read(lambda c: read_item(c, item_id))
        first = self._answering.get(item_id)  # checked after the read: nothing awaits between check and claim
        if first is not None:
            raise AlreadyAnsweredError(item_id, first, None)
        if item.state != "open":
            raise AlreadyAnsweredError(item_id, item.answered_by, item.answered_at)
        if item.answerers and who not in item.answerers:
            raise StateError(f"inbox item {item_id} may be answered only by {', '.join(item.answerers)}, "
                             f"not {who}")
        answer = check_answer(item.form, values)
        self._answering[item_id] = who
        try:
            await self._apply(item, answer, who, reason or answer.get("reason"))
        except BaseException:
            self._answering.pop(item_id, None)
            raise
        # the claim stays: an answer read as "open" before this commit is still refused by name
        return await self.store.read(lambda c: read_item(c, item_id))

    async def _apply(self, item: InboxItem, answer: dict[str, Any], who: str, reason: str | None) -> None:
        if item.kind == "lock":
            await self._release(item, answer, who, reason)
            return
        if item.kind == "proposal":
            await self._decide_proposal(item, answer, who, reason)
            return
        if item.kind == "window":  # seen: the forecast goes on watching the run
            done, audit = answer_op(item.id, who, answer, self.engine.clock.now()), \
                self.store.audit_op(who, "acknowledge window warning", item.run_id, reason, {"item": item.id})

            def both(conn: sqlite3.Connection) -> None:
                done(conn)
                audit(conn)

            await self.store.write(both)
            self.bus.publish(InboxChanged(item_id=item.id, run_id=item.run_id, state="answered", kind="window"))
            return
        if item.kind == "approval" and item.context.get("two_people") and who == item.context.get("requested_by"):
            raise StateError(f"inbox item {item.id}: {who} requested this run and cannot also approve it; "
                             "a second person must answer")
        error = (await self.engine.act([action_for(item, answer, who, reason)]))[0]
        if error is not None:
            raise error
        if item.kind == "error" and self.engine.playbook is not None:
            await self.engine.playbook.reload()  # the operators' most frequent choice may have changed

    # ------------------------------------------------------------------ hands in the cell

    async def lock(self, instruments: Iterable[str], *, who: str | None = None, reason: str | None = None) -> int:
        """An operator claims instruments for manual work: dispatch to them stops at once (running
        steps finish); the lock is an inbox item whose answer releases them. Audited."""
        if self.dispatcher is None:
            raise StateError("no workcell is connected: there is nothing to lock")
        ids = list(dict.fromkeys(instruments))
        if not ids:
            raise InputError.at("name at least one instrument to lock", field="instruments")
        known = set(self.dispatcher.instruments)
        unknown = [i for i in ids if i not in known]
        if unknown:
            raise InputError.at(f"no instrument {', '.join(unknown)} (known: {', '.join(sorted(known))})",
                                field="instruments")
        who = who or os_user()
        for instrument in ids:
            await self.dispatcher.set_enabled(instrument, False, who=who, reason=f"hands in the cell: {reason or ''}")
        now = self.engine.clock.now()
        item = NewItem(kind="lock", title=f"{who} has hands in the cell: {', '.join(ids)}", form=LOCK_FORM,
                       instrument=",".join(ids), context={"instruments": ids, "claimed_by": who, "reason": reason})
        opened, audit = open_item_op(item, now), self.store.audit_op(who, "lock instruments", ",".join(ids), reason,
                                                                    {"instruments": ids})

        def both(conn: sqlite3.Connection) -> int:
            audit(conn)
            return int(opened(conn))

        item_id = await self.store.write(both)
        self.bus.publish(InboxChanged(item_id=item_id, kind="lock"))
        return item_id

    async def _release(self, item: InboxItem, answer: dict[str, Any], who: str, reason: str | None) -> None:
        if not answer["release"]:
            raise InputError.at("release: answer yes to release the instruments (the lock stays otherwise)",
                                field="release")
        ids = list(item.context.get("instruments") or [])
        done, audit = answer_op(item.id, who, answer, self.engine.clock.now()), \
            self.store.audit_op(who, "release lock", ",".join(ids), reason, {"item": item.id})

        def both(conn: sqlite3.Connection) -> None:
            done(conn)
            audit(conn)

        await self.store.write(both)
        if self.dispatcher is not None:
            for instrument in ids:
                await self.dispatcher.set_enabled(instrument, True, who=who, reason="hands in the cell: released")
        self.bus.publish(InboxChanged(item_id=item.id, state="answered", kind="lock"))

    def locked_instruments(self) -> dict[str, str]:
        """instrument -> who holds it, for open locks."""
        return {instrument: lock.who for lock in self.store.read_sync(read_locks) for instrument in lock.instruments}

    # ------------------------------------------------------------------ playbook proposals

    async def _decide_proposal(self, item: InboxItem, answer: dict[str, Any], who: str, reason: str | None) -> None:
        from core.playbook import Rule, insert_rule_op

        ctx = item.context
        done = answer_op(item.id, who, answer, self.engine.clock.now())
        audit = self.store.audit_op(who, "accept proposal" if answer["accept"] else "decline proposal", None,
                                    reason, {"item": item.id, "signature": ctx.get("signature")})
        rule = None
        if answer["accept"]:
            rule = Rule(id=f"learned-{item.id}", error_code=str(ctx.get("error_code")),
                        capability=ctx.get("capability"), instrument=ctx.get("instrument"),
                        response=str(ctx.get("choice")), max_attempts=3 if ctx.get("choice") == "retry" else None)
        insert = insert_rule_op(rule, who, self.engine.clock.now()) if rule is not None else None

        def all_of(conn: sqlite3.Connection) -> None:
            done(conn)
            audit(conn)
            if insert is not None:
                insert(conn)

        await self.store.write(all_of)
        playbook = getattr(self.engine, "playbook", None)
        if rule is not None and playbook is not None:
            await playbook.reload()
        self.bus.publish(InboxChanged(item_id=item.id, state="answered", kind="proposal"))

    # ------------------------------------------------------------------ from other threads

    def answer_threadsafe(self, item_id: int, values: Mapping[str, Any], *, who: str,
                          reason: str | None = None) -> asyncio.Future[InboxItem]:
        """Answer from another thread (the Data Services server): runs on the inbox's loop."""
        if self.loop is None:
            raise StateError("the inbox is not started: nothing can answer from another thread")
        future = asyncio.run_coroutine_threadsafe(self.answer(item_id, values, who=who, reason=reason), self.loop)
        return asyncio.wrap_future(future)
