"""What the embedded Data Services server does, apart from HTTP: orders, templates, events.

Orders live in the store's ``orders`` table and change only through the store's ops
(``new_order_op``, ``status_op``, ``update_op``), so the console sees every order the server
creates, and the server serves every order the console creates; ids come from the store's one
sequence (``Order_00001`` ...) and never clash. Templates, events and idempotency keys live in the
``ds_*`` tables of ``core/schema/003_dataservices.sql``.

Every write runs as one store operation: one transaction on the store's writer thread. That makes
try-assign an atomic compare-and-set (one winner, the rest get False) and keeps an order, its
idempotency key and its ``OrderCreatedEvent`` together. After the commit, the change is announced
through ``notify`` (see :class:`ServerChange`).

Reads run on the calling thread through the store's read-only connections and return the stored
wire JSON as text, so listing orders does not decode and re-encode them.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, TypeVar

from pydantic import ValidationError

from core.dataservices.errors import (
    EventNotFoundError,
    OrderTemplateNotFoundError,
    StoredOrderUnreadableError,
)
from core.dataservices.models import (
    ORDER_CREATED_TOPIC,
    ORDER_STATUS_CHANGED_TOPIC,
    EventMessage,
    OrderTemplate,
    json_text_problem,
)
from core.errors import ModelError, OrderNotFoundError, Problem, StateError, Where
from core.orders import Order, OrderStatus, Parameter
from core.store import StatusChange, Store
from core.wire import now_utc, parse_datetime

log = logging.getLogger(__name__)
T = TypeVar("T")

WAITING_STATUSES = frozenset({OrderStatus.Created, OrderStatus.Validated, OrderStatus.Scheduled})
"""Statuses of an order that no module has started: ``UnassignedOrders`` and try-assign use them."""
EXECUTING_STATUSES = frozenset({OrderStatus.Running, OrderStatus.Paused})
DEFAULT_LIMIT = 1000
MAX_LIMIT = 100_000
MAX_OFFSET = 2**63 - 1
"""SQLite integers are 64-bit: a larger ``offset`` cannot even be sent to it."""
WHO = "data-services"

_SAFE_ID = re.compile(r"^[A-Za-z0-9_.\-]{1,100}$")
_SEQUENCE_ID = re.compile(r"^order_\d+$", re.IGNORECASE)
_CREATE_FIELDS = {name.lower(): name for name in (
    "identifier", "parentIdentifier", "runAfterIdentifier", "restrictToModuleIds",
    "moduleRestrictionStrategy", "createdBy", "notes", "scheduledStartTime", "estimatedDuration",
    "templateName", "templateVersion", "inputParameters", "outputParameters", "schedulingStrategy",
    "priority")}
"""``templateVersion`` (in Biosero's Order; optional here): the template version the order needs."""
_UPDATE_FIELDS = {name.lower(): name for name in (
    "parentIdentifier", "runAfterIdentifier", "restrictToModuleIds", "moduleRestrictionStrategy",
    "notes", "scheduledStartTime", "estimatedDuration", "templateName", "inputParameters",
    "outputParameters", "schedulingStrategy", "priority", "state", "log", "statusDetails")}
_TEMPLATE_UPDATE_FIELDS = ("category", "description", "icon", "color", "isHidden")
_STATUS_ALIASES = {"cancelled": OrderStatus.Canceled, "completed": OrderStatus.Complete}

ChangeKind = Literal["order_created", "order_status", "order_updated", "template", "template_deleted",
                     "event"]


@dataclass(frozen=True)
class ServerChange:
    """A committed change made through the server, announced to the console.

    ``kind`` says what changed and ``subject`` which thing: an order id for ``order_*``, a template
    name for ``template*``, an event id for ``event``. For orders, ``order`` and ``row`` (the
    ``core.store.ORDER_ROW_COLUMNS`` tuple) are the order after the change, and ``status_change``
    is the store's :class:`~core.store.StatusChange` for ``order_status``, ready for
    ``Ledger.publish_change``.
    """

    kind: ChangeKind
    subject: str
    order: Order | None = None
    row: tuple[Any, ...] | None = None
    status_change: StatusChange | None = None
    fields: tuple[str, ...] = ()
    """For ``order_updated``: the order fields that changed."""

    @property
    def order_id(self) -> str | None:
        return self.subject if self.kind.startswith("order") else None


class ConflictError(StateError):
    """The request conflicts with what exists (e.g. a client-chosen order id already taken)."""


def ci(data: Mapping[str, Any]) -> dict[str, Any]:
    """The mapping with lower-cased keys, for case-insensitive binding of small request bodies."""
    return {k.lower(): v for k, v in data.items() if isinstance(k, str)}


def bad(message: str, field: str | None = None, source: str | None = None) -> ModelError:
    return ModelError(message, [Problem(Where(source, field), message)])


def parse_status(value: Any, field: str = "status") -> OrderStatus:
    """An order status from a name (any case, ``Cancelled`` too) or a server integer."""
    if isinstance(value, str) and value.strip().lower() in _STATUS_ALIASES:
        return _STATUS_ALIASES[value.strip().lower()]
    try:
        return OrderStatus.parse(value, field=field)  # type: ignore[return-value]
    except ValueError as exc:
        raise bad(str(exc), field) from None


def _bind(model: type[Any], data: Any, source: str) -> Any:
    if not isinstance(data, dict):
        raise bad(f"{source}: expected a JSON object, got {type(data).__name__}", source=source)
    try:
        return model.from_dict(data, source=source)
    except ValidationError as exc:  # validate_assignment paths
        raise bad(str(exc), source=source) from None
    except (TypeError, ValueError, OverflowError, RecursionError) as exc:
        # raised by a field's own parser rather than reported by pydantic (a TimeSpan of
        # 10^11 days overflows timedelta, a number where a list belongs): find the field
        field = _culprit(model, data)
        why = "the value is out of range" if isinstance(exc, OverflowError) else str(exc)
        raise bad(f"{field or 'a field'}: {why}", field, source) from None


def _culprit(model: type[Any], data: dict[str, Any]) -> str | None:
    """The first field of ``data`` that ``model`` cannot take on its own (checked one by one)."""
    known: dict[str, str] = getattr(model, "_known", {})
    probe = model.model_construct()
    for key, value in data.items():
        name = known.get(str(key).lower())
        if name is None:
            continue
        try:
            setattr(probe, name, value)
        except Exception:  # noqa: BLE001 - any failure names this field
            return name
    return None


def _parameter_lists(data: Mapping[str, Any], source: str) -> None:
    """``inputParameters``/``outputParameters`` must be a list of parameters ({name: value} is
    accepted too, as clients send it)."""
    for field in ("inputParameters", "outputParameters"):
        value = data.get(field)
        if value is not None and not isinstance(value, list | dict):
            raise bad(f"{field}: expected a list of parameters, got {type(value).__name__}",
                      field, source)


def unreadable_reason(data: str | None) -> str:
    """Why a stored order's JSON cannot be read back, naming the field where possible."""
    if data is None:
        return "no data"
    try:
        decoded = json.loads(data)
    except (ValueError, RecursionError) as exc:
        return f"not JSON: {exc}"
    problem = json_text_problem(decoded)
    if problem is not None:
        return f"{problem[0]} {problem[1]}"
    try:
        Order.model_validate(decoded)
    except ValidationError as exc:
        first = exc.errors()[0]
        return f"{'.'.join(str(p) for p in first['loc']) or 'order'}: {first['msg']}"
    except (TypeError, ValueError, OverflowError) as exc:
        return str(exc) or type(exc).__name__
    return "it does not validate"


def _stored_order_guard(order_id: str, conn: sqlite3.Connection,
                        op: Callable[[sqlite3.Connection], T]) -> T:
    """Run a store op that reads the order back; an unreadable order becomes a clear error."""
    try:
        return op(conn)
    except ValidationError as exc:
        row = conn.execute("SELECT data FROM orders WHERE id = ?", (order_id,)).fetchone()
        try:
            Order.model_validate_json(row[0] if row else "")
        except ValidationError:
            raise StoredOrderUnreadableError(order_id, unreadable_reason(row[0] if row else None)) \
                from None
        raise bad(f"the change does not validate: {exc}") from None  # the order itself is fine


def _present(value: Any) -> bool:
    return value is not None and value != "" and value != []


def merge_parameters(template: list[Parameter], given: list[Parameter],
                     given_raw: list[Any]) -> list[Parameter]:
    """An order's parameters: the template's, in template order, with the given values applied.

    A given ``{name, value}`` takes every other field (valueType, unit, defaultValue, options ...)
    from the template unless it sets that field itself; a template parameter the order does not
    mention takes its default value. Given parameters the template does not know are kept.
    """
    raw_keys = [set(ci(r)) if isinstance(r, dict) else set() for r in given_raw]
    by_name = {g.name.lower(): (i, g) for i, g in enumerate(given)}
    out: list[Parameter] = []
    used: set[int] = set()
    for tp in template:
        p = tp.model_copy(deep=True)
        found = by_name.get(tp.name.lower())
        if found is None:
            if not p.value and p.defaultValue:
                p.value = p.defaultValue
        else:
            i, g = found
            used.add(i)
            keys = raw_keys[i] if i < len(raw_keys) else set()
            for field in Parameter.model_fields:
                if field == "name":
                    continue
                value = getattr(g, field)
                if field == "value" and ("value" in keys or not keys):
                    p.value = value
                elif field == "valueType" and "valuetype" in keys:
                    p.valueType = value
                elif field not in ("value", "valueType") and field.lower() in keys and _present(value):
                    setattr(p, field, value)
        out.append(p)
    out.extend(g for i, g in enumerate(given) if i not in used)
    return out


def upsert_outputs(current: list[Parameter], values: Any) -> list[Parameter]:
    """``SetOutputParameters``: set values by name, keeping each parameter's valueType.

    ``values`` is ``{name: value}`` (what clients send) or a list of ``{name, value[, valueType]}``.
    Names the order does not have yet are added (valueType String unless given).
    """
    if isinstance(values, dict):
        items = [Parameter(name=str(k), value=v) for k, v in values.items()]
        typed: set[str] = set()
    elif isinstance(values, list):
        try:
            items = [p if isinstance(p, Parameter) else Parameter.model_validate(p) for p in values]
        except ValidationError as exc:
            raise bad(f"output parameters: {exc}", "outputParameters") from None
        typed = {str(ci(p).get("name")) for p in values if isinstance(p, dict) and "valuetype" in ci(p)}
    else:
        raise bad("output parameters: expected an object {name: value} or a list of parameters",
                  "outputParameters")
    out = [p.model_copy(deep=True) for p in current]
    index = {p.name: p for p in out}
    lower = {p.name.lower(): p for p in out}
    for item in items:
        target = index.get(item.name) or lower.get(item.name.lower())
        if target is None:
            out.append(item)
            index[item.name] = item
        else:
            target.value = item.value
            if item.name in typed:
                target.valueType = item.valueType
    return out


class DataServicesBackend:
    """The server's state and semantics, over a :class:`~core.store.Store`.

    Async methods write (call them on any running loop; the store delivers the result there);
    plain methods read on the calling thread. ``notify`` is called with a :class:`ServerChange`
    after each committed change, on the thread that awaited the write.
    """

    def __init__(self, store: Store, *, emit_order_events: bool = True,
                 notify: Callable[[ServerChange], None] | None = None) -> None:
        self.store = store
        self.emit_order_events = emit_order_events
        self.notify = notify

    def _announce(self, change: ServerChange) -> None:
        if self.notify is not None:
            try:
                self.notify(change)
            except Exception:  # a failing listener must not fail the request that was committed
                log.exception("Data Services change listener failed on %s %s", change.kind,
                              change.subject)

    # ------------------------------------------------------------------ orders: writes

    def order_from_create(self, body: Any) -> tuple[Order, list[Any], list[Any]]:
        """Validate a CreateOrder body (either key case, BDM and TS variants); no I/O."""
        if not isinstance(body, dict):
            raise bad("CreateOrder: expected a JSON object", source="CreateOrder")
        data: dict[str, Any] = {}
        for key, value in body.items():
            canonical = _CREATE_FIELDS.get(str(key).lower())
            if canonical is not None:
                data[canonical] = value
            elif str(key).lower() == "estimateddurationinminutes" and value is not None:
                try:
                    data["estimatedDuration"] = timedelta(minutes=float(value))
                except (TypeError, ValueError, OverflowError):
                    raise bad(f"estimatedDurationInMinutes: {value!r} is not a number",
                              "estimatedDurationInMinutes", "CreateOrder") from None
        if data.get("identifier") == "":
            data["identifier"] = None
        _parameter_lists(data, "CreateOrder")
        order = _bind(Order, data, "CreateOrder")
        if not order.templateName:
            raise bad("templateName is required", "templateName", "CreateOrder")
        if order.identifier is not None and not _SAFE_ID.match(order.identifier):
            raise bad(f"identifier {order.identifier!r} must be 1-100 letters, digits, '_', '.' "
                      "or '-' (ids travel unencoded in query strings)", "identifier", "CreateOrder")
        inputs_raw = data.get("inputParameters") or []
        outputs_raw = data.get("outputParameters") or []
        return (order, inputs_raw if isinstance(inputs_raw, list) else [],
                outputs_raw if isinstance(outputs_raw, list) else [])

    async def create_order(self, body: Any, *, idempotency_key: str | None = None,
                           who: str = WHO) -> tuple[str, bool]:
        """Create an order; return ``(identifier, created)``.

        With ``idempotency_key``, a key seen before returns the order it created the first time
        (``created`` False) and nothing new is written. A client-chosen ``identifier`` is honoured
        if free; one taken raises :class:`ConflictError`; ``Order_<digits>`` is reserved for the
        sequence.
        """
        order, inputs_raw, outputs_raw = self.order_from_create(body)
        emit = self.emit_order_events

        def op(conn: sqlite3.Connection) -> tuple[str, bool, Order | None, tuple[Any, ...] | None]:
            if idempotency_key:
                seen = conn.execute("SELECT order_id FROM ds_idempotency WHERE key = ?",
                                    (idempotency_key,)).fetchone()
                if seen is not None:
                    return seen[0], False, None, None
            o = order.model_copy(deep=True)
            o.status = OrderStatus.Created
            if o.identifier is not None:
                if conn.execute("SELECT 1 FROM orders WHERE id = ?", (o.identifier,)).fetchone():
                    raise ConflictError(f"OrderAlreadyExists: an order with identifier "
                                        f"'{o.identifier}' already exists")
                if _SEQUENCE_ID.match(o.identifier):
                    raise bad(f"identifier {o.identifier!r}: ids of the form Order_<digits> are "
                              "assigned by the server", "identifier", "CreateOrder")
            found = conn.execute("SELECT data FROM ds_templates WHERE name = ?",
                                 (o.templateName,)).fetchone()
            if found is not None:
                template = OrderTemplate.model_validate_json(found[0])
                o.templateName = template.name
                o.inputParameters = merge_parameters(template.inputParameters, o.inputParameters,
                                                     inputs_raw)
                o.outputParameters = merge_parameters(template.outputParameters,
                                                      o.outputParameters, outputs_raw)
                if o.estimatedDuration is None and template.defaultEstimatedDuration:
                    o.estimatedDuration = template.defaultEstimatedDuration
            created, row = self.store.new_order_op(o, who=who, why="created through Data Services")(conn)
            oid = created.identifier or ""
            if idempotency_key:
                conn.execute("INSERT INTO ds_idempotency (key, order_id, created) VALUES (?,?,?)",
                             (idempotency_key, oid, now_utc().timestamp()))
            if emit:
                _insert_event(conn, EventMessage(
                    topic=ORDER_CREATED_TOPIC, associationId=oid, subjects=[oid], actorId=who,
                    data=json.dumps({"orderIdentifier": oid, "templateName": created.templateName,
                                     "parentIdentifier": created.parentIdentifier})))
            return oid, True, created, row

        oid, created, o, row = await self.store.write(op)
        if created:
            self._announce(ServerChange("order_created", oid, order=o, row=row))
        return oid, created

    async def try_assign(self, order_id: str, to: str) -> bool:
        """Atomically assign a waiting, unassigned order to ``to``. Exactly one caller wins."""
        if not to:
            raise bad("try-assign: 'to' (the module or process claiming the order) is required", "to")
        update = self.store.update_op(order_id, {"assignedTo": to})

        def op(conn: sqlite3.Connection) -> tuple[Order, tuple[Any, ...]] | None:
            found = conn.execute("SELECT status, assigned_to FROM orders WHERE id = ?",
                                 (order_id,)).fetchone()
            if found is None:
                raise OrderNotFoundError(order_id)
            if found[1] or OrderStatus(found[0]) not in WAITING_STATUSES:
                return None
            owned = conn.execute("SELECT 1 FROM runs WHERE run_id = ? UNION ALL "
                                 "SELECT 1 FROM step_runs WHERE order_id = ?", (order_id, order_id)).fetchone()
            if owned:  # a run or step of the console's engine: not for modules to claim
                return None
            return _stored_order_guard(order_id, conn, update)

        result = await self.store.write(op)
        if result is None:
            return False
        self._announce(ServerChange("order_updated", order_id, order=result[0], row=result[1],
                                    fields=("assignedTo",)))
        return True

    async def update_status(self, order_id: str, status: OrderStatus, details: str | None,
                            *, who: str = WHO) -> StatusChange | None:
        """Set an order's status (``UpdateOrderStatus``); None if it was already exactly that.

        Running sets ``actualStartTime`` (once); Complete, Error, Canceled (and the other
        terminal statuses) set ``actualEndTime`` and ``statusDetails``. Repeating the same status
        with the same details changes nothing, so a resent update is harmless.
        """
        status_op = self.store.status_op(order_id, status, who=who, why=details)
        emit = self.emit_order_events

        def op(conn: sqlite3.Connection) -> StatusChange | None:
            found = conn.execute("SELECT status, status_details FROM orders WHERE id = ?",
                                 (order_id,)).fetchone()
            if found is None:
                raise OrderNotFoundError(order_id)
            if found[0] == int(status) and (details is None or details == found[1]
                                            or status is OrderStatus.Running):
                return None
            change = _stored_order_guard(order_id, conn, status_op)
            if emit:
                _insert_event(conn, EventMessage(
                    topic=ORDER_STATUS_CHANGED_TOPIC, associationId=order_id, subjects=[order_id],
                    actorId=who, data=json.dumps({
                        "orderIdentifier": order_id, "orderStatus": status.name,
                        "previousOrderStatus": change.from_status.name,
                        "statusDetails": change.data.get("statusDetails")})))
            return change

        change = await self.store.write(op)
        if change is not None:
            self._announce(ServerChange("order_status", order_id, row=change.row,
                                        status_change=change))
        return change

    async def _update(self, order_id: str, compute: Callable[[Order], dict[str, Any]]) -> Order:
        def op(conn: sqlite3.Connection) -> tuple[Order, tuple[Any, ...], tuple[str, ...]]:
            found = conn.execute("SELECT data FROM orders WHERE id = ?", (order_id,)).fetchone()
            if found is None:
                raise OrderNotFoundError(order_id)
            try:
                current = Order.model_validate_json(found[0])
            except ValidationError:
                raise StoredOrderUnreadableError(order_id, unreadable_reason(found[0])) from None
            changes = compute(current)
            order, row = _stored_order_guard(order_id, conn, self.store.update_op(order_id, changes))
            return order, row, tuple(changes)

        order, row, fields = await self.store.write(op)
        self._announce(ServerChange("order_updated", order_id, order=order, row=row, fields=fields))
        return order

    async def set_output_parameters(self, order_id: str, values: Any) -> Order:
        """Upsert output values by name, keeping the template's valueType (``SetOutputParameters``)."""
        upsert_outputs([], values)  # validate before queuing the write
        return await self._update(order_id, lambda o: {
            "outputParameters": upsert_outputs(o.outputParameters, values)})

    async def persist_state(self, order_id: str, state: Any) -> Order:
        """Keep an opaque state string on the order (``PersistState``)."""
        text = state if state is None or isinstance(state, str) else json.dumps(state)
        return await self._update(order_id, lambda _o: {"state": text})

    async def update_order(self, order_id: str | None, body: Any) -> Order:
        """Change the fields present in ``body`` (``UpdateOrder``); status has its own call."""
        if not isinstance(body, dict):
            raise bad("UpdateOrder: expected a JSON object", source="UpdateOrder")
        order_id = order_id or ci(body).get("identifier")
        if not order_id:
            raise bad("UpdateOrder: identifier is required", "identifier", "UpdateOrder")
        present = {_UPDATE_FIELDS[k.lower()]: v for k, v in body.items()
                   if isinstance(k, str) and k.lower() in _UPDATE_FIELDS}
        _parameter_lists(present, "UpdateOrder")
        parsed = _bind(Order, present, "UpdateOrder")
        return await self._update(order_id, lambda _o: {k: getattr(parsed, k) for k in present})

    # ------------------------------------------------------------------ orders: reads

    def _rows(self, sql: str, params: Iterable[Any]) -> list[str]:
        rows = self.store.read_sync(lambda c: c.execute(sql, tuple(params)).fetchall())
        return [r[0] for r in rows]

    def order_json(self, order_id: str) -> str:
        rows = self._rows("SELECT data FROM orders WHERE id = ?", (order_id,))
        if not rows:
            raise OrderNotFoundError(order_id)
        return rows[0]

    def order_status(self, order_id: str) -> OrderStatus:
        rows = self.store.read_sync(lambda c: c.execute("SELECT status FROM orders WHERE id = ?",
                                                        (order_id,)).fetchall())
        if not rows:
            raise OrderNotFoundError(order_id)
        return OrderStatus(rows[0][0])

    def list_orders(self, *, statuses: Iterable[OrderStatus] | None = None,
                    unassigned: bool = False, created_on_or_before: datetime | None = None,
                    assigned_to: str | None = None, source_id: str | None = None,
                    template_names: Iterable[str] = (), restrict_to: str | None = None,
                    limit: int | None = None, offset: int = 0) -> list[str]:
        """Orders as stored wire JSON, oldest first, filtered by the given criteria."""
        where: list[str] = []
        params: list[Any] = []
        if statuses is not None:
            codes = sorted({int(s) for s in statuses})
            where.append(f"status IN ({','.join('?' * len(codes))})")
            params += codes
        if unassigned:
            # labconsole's own runs and steps are claimed by the console's engine, not by modules
            where.append("(assigned_to IS NULL OR assigned_to = '') AND id NOT IN (SELECT run_id FROM runs) "
                         "AND id NOT IN (SELECT order_id FROM step_runs)")
        if created_on_or_before is not None:
            where.append("created <= ?")
            params.append(created_on_or_before.timestamp())
        if assigned_to is not None:
            where.append("assigned_to = ?")
            params.append(assigned_to)
        if source_id is not None:
            where.append("source_id = ?")
            params.append(source_id)
        names = [n for n in template_names if n]
        if names:
            where.append(f"template_name COLLATE NOCASE IN ({','.join('?' * len(names))})")
            params += names
        if restrict_to:
            where.append("(',' || REPLACE(json_extract(data, '$.restrictToModuleIds'), ' ', '') "
                         "|| ',') LIKE ?")
            params.append(f"%,{restrict_to.replace(' ', '')},%")
        sql = "SELECT data FROM orders" + (f" WHERE {' AND '.join(where)}" if where else "")
        sql += " ORDER BY seq LIMIT ? OFFSET ?"
        return self._rows(sql, [*params, _limit(limit), _offset(offset)])

    def descendants_and_self(self, order_id: str) -> list[str]:
        self.order_json(order_id)
        return self._rows(
            "WITH RECURSIVE tree(id) AS (SELECT ? UNION SELECT o.id FROM orders o "
            "JOIN tree t ON o.parent_id = t.id) "
            "SELECT data FROM orders WHERE id IN (SELECT id FROM tree) ORDER BY seq", (order_id,))

    # ------------------------------------------------------------------ templates

    async def register_template(self, body: Any) -> str:
        """Create or replace (by name, case-insensitively) an order template; return its name."""
        template: OrderTemplate = _bind(OrderTemplate, body, "RegisterOrderTemplate")
        if not template.name.strip():
            raise bad("name is required", "name", "RegisterOrderTemplate")
        data = template.to_json()

        def op(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO ds_templates (name, is_hidden, updated, data) VALUES (?,?,?,?) "
                         "ON CONFLICT(name) DO UPDATE SET name=excluded.name, "
                         "is_hidden=excluded.is_hidden, updated=excluded.updated, data=excluded.data",
                         (template.name, int(template.isHidden), now_utc().timestamp(), data))

        await self.store.write(op)
        self._announce(ServerChange("template", template.name))
        return template.name

    async def update_template(self, name: str, body: Any) -> None:
        """Change category, description, icon, color or isHidden of a template (v3 PUT)."""
        if not isinstance(body, dict):
            raise bad("expected a JSON object", source="UpdateOrderTemplate")
        given = ci(body)
        changes = {f: given[f.lower()] for f in _TEMPLATE_UPDATE_FIELDS if f.lower() in given}

        def op(conn: sqlite3.Connection) -> None:
            found = conn.execute("SELECT data FROM ds_templates WHERE name = ?", (name,)).fetchone()
            if found is None:
                raise OrderTemplateNotFoundError(name)
            merged = {**json.loads(found[0]), **changes}
            template = _bind(OrderTemplate, merged, "UpdateOrderTemplate")
            conn.execute("UPDATE ds_templates SET is_hidden=?, updated=?, data=? WHERE name=?",
                         (int(template.isHidden), now_utc().timestamp(), template.to_json(), name))

        await self.store.write(op)
        self._announce(ServerChange("template", name))

    async def delete_template(self, name: str) -> None:
        def op(conn: sqlite3.Connection) -> None:
            if conn.execute("DELETE FROM ds_templates WHERE name = ?", (name,)).rowcount == 0:
                raise OrderTemplateNotFoundError(name)

        await self.store.write(op)
        self._announce(ServerChange("template_deleted", name))

    def template_json(self, name: str) -> str:
        rows = self._rows("SELECT data FROM ds_templates WHERE name = ?", (name,))
        if not rows:
            raise OrderTemplateNotFoundError(name)
        return rows[0]

    def list_templates(self, *, exclude_hidden: bool = False, limit: int | None = None,
                       offset: int = 0) -> list[str]:
        sql = "SELECT data FROM ds_templates" + (" WHERE is_hidden = 0" if exclude_hidden else "")
        return self._rows(sql + " ORDER BY rowid LIMIT ? OFFSET ?", (_limit(limit), _offset(offset)))

    # ------------------------------------------------------------------ events

    async def publish_event(self, body: Any) -> str:
        """Append an event (kept verbatim); return its id. A known ``eventId`` is not stored twice."""
        event: EventMessage = _bind(EventMessage, body, "EventService")

        def op(conn: sqlite3.Connection) -> tuple[str, bool]:
            if event.eventId and conn.execute("SELECT 1 FROM ds_events WHERE event_id = ?",
                                              (event.eventId,)).fetchone():
                return event.eventId, False
            return _insert_event(conn, event), True

        event_id, added = await self.store.write(op)
        if added:
            self._announce(ServerChange("event", event_id))
        return event_id

    def event_json(self, event_id: str) -> str:
        rows = self._rows("SELECT data FROM ds_events WHERE event_id = ?", (event_id,))
        if not rows:
            raise EventNotFoundError(event_id)
        return rows[0]

    def query_events(self, search: Mapping[str, Any], *, limit: int | None = None,
                     offset: int = 0) -> list[str]:
        """Events matching ``EventSearchParameters`` (any key case), oldest ``createdDateUtc`` first.

        ``start``: events starting at or after it; ``end``: ending at or before it; ``topic`` and the
        id fields match exactly; ``subjectsContains`` is a substring of any subject; ``data`` a
        substring of the payload. v3 query names ``createdFrom``/``createdTo``/
        ``createdAfterEventId`` are understood too.
        """
        s = ci(search)
        where: list[str] = []
        params: list[Any] = []
        for key, column in (("eventid", "event_id"), ("topic", "topic"),
                            ("associationid", "association_id"), ("actorid", "actor_id"),
                            ("moduleid", "module_id")):
            if _present(s.get(key)):
                where.append(f"{column} = ?")
                params.append(str(s[key]))
        for key in ("organizationId", "groupId", "ownerId", "activityId", "orchestratorId",
                    "operatorId"):
            if _present(s.get(key.lower())):
                where.append(f"json_extract(data, '$.{key}') = ?")
                params.append(str(s[key.lower()]))
        for key, sql in (("start", "start >= ?"), ("end", '"end" <= ?'),
                         ("createdfrom", "created >= ?"), ("createdto", "created <= ?")):
            if _present(s.get(key)):
                when = _date(s[key], key)
                where.append(sql)
                params.append(when.timestamp())
        if _present(s.get("createdaftereventid")):
            where.append("seq > COALESCE((SELECT seq FROM ds_events WHERE event_id = ?), -1)")
            params.append(str(s["createdaftereventid"]))
        if _present(s.get("subjectscontains")):
            where.append("EXISTS (SELECT 1 FROM json_each(data, '$.subjects') "
                         "WHERE instr(value, ?) > 0)")
            params.append(str(s["subjectscontains"]))
        if _present(s.get("data")):
            where.append("instr(json_extract(data, '$.data'), ?) > 0")
            params.append(str(s["data"]))
        sql = "SELECT data FROM ds_events" + (f" WHERE {' AND '.join(where)}" if where else "")
        return self._rows(sql + " ORDER BY created, seq LIMIT ? OFFSET ?",
                          [*params, _limit(limit), _offset(offset)])


def _limit(limit: int | None) -> int:
    if limit is None or limit <= 0:
        return DEFAULT_LIMIT
    return min(limit, MAX_LIMIT)


def _offset(offset: int | None) -> int:
    return min(max(0, offset or 0), MAX_OFFSET)


def _date(value: Any, field: str) -> datetime:
    try:
        when = parse_datetime(value)
    except ValueError as exc:
        raise bad(str(exc), field) from None
    return when or datetime.min.replace(tzinfo=now_utc().tzinfo)


def _insert_event(conn: sqlite3.Connection, event: EventMessage) -> str:
    e = event.model_copy()
    now = now_utc()
    e.eventId = e.eventId or str(uuid.uuid4())
    e.start = e.start or now
    e.end = e.end or now
    e.createdDateUtc = now
    conn.execute("INSERT INTO ds_events (event_id, topic, created, start, \"end\", association_id, "
                 "actor_id, module_id, data) VALUES (?,?,?,?,?,?,?,?,?)",
                 (e.eventId, e.topic, now.timestamp(), e.start.timestamp(), e.end.timestamp(),
                  e.associationId, e.actorId, e.moduleId, e.to_json()))
    return e.eventId

