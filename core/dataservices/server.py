"""The embedded Data Services server: Biosero's REST API over labconsole's store.

Wire behaviour follows specs/data-services.md §5-§6 so that existing clients (biosero-data-models,
the Data Services SDK, site scripts) work unchanged:

* ``/api/v2.0/...`` RPC routes and ``/api/v3.0/...`` REST routes (either prefix serves both sets);
  route segments match case-insensitively, repeated slashes collapse, each segment is
  percent-decoded on its own (so ``%2F`` inside a template name stays part of the name);
* request JSON binds case-insensitively; query parameter names are case-insensitive and a value
  ``p=...`` of parameter ``p`` (biosero-data-models double-encodes some) loses its ``p=`` prefix;
* responses are camelCase with every key, enums by name, scalars as JSON strings; v2 POSTs answer
  200 with a JSON body, PUTs an empty body, DELETEs a non-empty JSON body; 404 bodies are
  ProblemDetails whose ``type`` is ``OrderNotFound``/``OrderTemplateNotFound`` and whose detail
  for events reads ``Event with EventId '...' was not found.``.

How it runs: :class:`EmbeddedDataServices` owns one thread with its own asyncio loop, where
uvicorn parses HTTP, so no request is ever handled on the console's (qasync) loop. Handlers read
the store on that thread and write through the store's writer thread. Committed changes are handed
to ``on_change`` on the loop that called :meth:`EmbeddedDataServices.start`, through
``call_soon_threadsafe``.

Security: it binds to 127.0.0.1 by default. Another bind address needs a token or named users with
tokens (``labconsole users token NAME``); then every request must carry ``Authorization: Bearer
<token>`` with that token or an enabled user's token, or gets 401.

Abuse (:class:`ServerLimits`): a request body over ``max_body_bytes`` (8 MiB) gets 413 before it is
read; request heads over ``max_header_bytes`` get 400; a request head not complete within
``header_timeout`` and a body not complete within ``body_timeout`` get 408 and the connection is
closed; idle keep-alive connections close after ``keep_alive_timeout``. At most
``max_connections`` connections stay open: a new one beyond that closes the longest idle one
(or, if every one is busy, is answered 503), so slow or idle clients can neither exhaust file
descriptors nor lock out a normal request. Repeated log lines are rate-limited
(:class:`RepeatFilter`). Text is refused on the way in (400 naming the field) when it could not
be stored and read back: lone surrogates, invalid UTF-8, JSON nested over 64 levels, numbers
SQLite cannot hold.

``GET /openapi.json`` describes every route (generated from the route table).

Creating orders honours an ``Idempotency-Key`` request header: a key seen before returns the order
it created the first time. Every response carries ``Labconsole-Idempotency: CreateOrder`` so a
client can tell that this server deduplicates creates (Biosero's own server does not).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import hmac
import ipaddress
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import parse_qsl, unquote

import h11
import uvicorn
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from uvicorn.protocols.http.h11_impl import H11Protocol

from core.dataservices.backend import (
    EXECUTING_STATUSES,
    WAITING_STATUSES,
    ConflictError,
    DataServicesBackend,
    ServerChange,
    bad,
    ci,
    parse_status,
)
from core.dataservices.errors import (
    EventNotFoundError,
    OrderTemplateNotFoundError,
    StoredOrderUnreadableError,
)
from core.dataservices.models import MAX_JSON_DEPTH, json_text_problem
from core.errors import (
    ConfigError,
    InputError,
    OrderNotFoundError,
    StateError,
    StoreError,
)
from core.orders import OrderStatus
from core.store import Store
from core.users import has_user_tokens, user_for_token
from core.wire import parse_datetime

log = logging.getLogger(__name__)

DEFAULT_PORT = 8105
SERVER_VERSION = "1.6.2-labconsole"
"""What ``GET /api/v2.0/version`` answers: the Data Services version whose API this speaks."""
IDEMPOTENCY_HEADER = "Idempotency-Key"
IDEMPOTENCY_SUPPORT_HEADER = "Labconsole-Idempotency"
MAX_QUERY_INT = 2**63 - 1
"""Largest ``limit``/``offset`` accepted: SQLite integers are 64-bit."""
MiB = 1024 * 1024


@dataclass(frozen=True)
class TlsFiles:
    """The server's certificate chain and private key (PEM files), for HTTPS."""

    certfile: str
    keyfile: str

    def __post_init__(self) -> None:
        for name in ("certfile", "keyfile"):
            path = getattr(self, name)
            if not os.path.isfile(path):
                raise ConfigError.at(f"{path}: no such file", field=f"--{name}")


@dataclass(frozen=True)
class ServerLimits:
    """What one client may cost the embedded server. Defaults suit a lab network."""

    max_body_bytes: int = 8 * MiB
    """Larger request bodies get 413 without being read."""
    max_header_bytes: int = 16 * 1024
    """Request line plus headers; larger ones get 400 (uvicorn's h11_max_incomplete_event_size)."""
    max_connections: int = 256
    """Open connections; beyond it the longest idle one is closed (503 if none is idle)."""
    header_timeout: float = 10.0
    """Seconds to send a complete request line and headers; else 408 and the connection closes."""
    body_timeout: float = 30.0
    """Seconds to send a complete body once the headers are in; else 408."""
    keep_alive_timeout: float = 5.0
    """Seconds an idle keep-alive connection stays open."""
    max_json_depth: int = MAX_JSON_DEPTH

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_header_bytes", "max_connections", "max_json_depth"):
            if getattr(self, name) < 1:
                raise ConfigError.at(f"{name} must be at least 1, not {getattr(self, name)}",
                                     field=f"data_services.{name}")
        for name in ("header_timeout", "body_timeout", "keep_alive_timeout"):
            if not getattr(self, name) > 0:
                raise ConfigError.at(f"{name} must be more than 0 s, not {getattr(self, name)}",
                                     field=f"data_services.{name}")


def describe_size(n: int) -> str:
    """``8388608`` -> ``8 MiB``; sizes that are not whole MiB/KiB stay in bytes."""
    for unit, size in (("MiB", MiB), ("KiB", 1024)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} bytes"


# --------------------------------------------------------------------------- log rate limiting


class RepeatFilter(logging.Filter):
    """Lets through at most ``burst`` records of one message template per ``window`` seconds.

    A flood of identical warnings (a client sending garbage a thousand times) costs a few lines;
    the first line after a quiet stretch says how many were left out.
    """

    def __init__(self, burst: int = 5, window: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.burst, self.window, self.clock = burst, window, clock
        self._seen: dict[tuple[str, str], list[float]] = {}  # [window start, count, suppressed]
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg))
        now = self.clock()
        with self._lock:
            entry = self._seen.get(key)
            if entry is None or now - entry[0] >= self.window:
                left_out = int(entry[2]) if entry is not None else 0
                if len(self._seen) > 1000:
                    self._seen.clear()
                entry = self._seen[key] = [now, 0, 0]
                if left_out:
                    record.msg = f"{record.msg} [{left_out} more like this not logged]"
            entry[1] += 1
            if entry[1] > self.burst:
                entry[2] += 1
                return False
            return True


REPEATS = RepeatFilter()
RATE_LIMITED_LOGGERS = (__name__, "uvicorn", "uvicorn.error", "uvicorn.access")


def _limit_log_repeats() -> None:
    for name in RATE_LIMITED_LOGGERS:
        logger = logging.getLogger(name)
        if REPEATS not in logger.filters:
            logger.addFilter(REPEATS)


# --------------------------------------------------------------------------- request helpers


class Query:
    """Query parameters: names case-insensitive, ``p=p=value`` read as ``value`` (quirk 1)."""

    def __init__(self, raw: bytes) -> None:
        self._pairs: list[tuple[str, str]] = []
        for part in raw.split(b"&"):
            try:
                pairs = parse_qsl(part.decode("utf-8"), keep_blank_values=True, errors="strict")
            except UnicodeDecodeError:
                name = unquote(part.split(b"=", 1)[0].decode("utf-8", "replace"), errors="replace")
                raise bad(f"query parameter '{name}' is not valid UTF-8 text (after "
                          "percent-decoding)", name or "query") from None
            for key, value in pairs:
                low = key.lower()
                if value.lower().startswith(low + "="):
                    value = value[len(low) + 1:]
                self._pairs.append((low, value))

    def get(self, name: str) -> str | None:
        low = name.lower()
        return next((v for k, v in self._pairs if k == low), None)

    def getlist(self, name: str) -> list[str]:
        low = name.lower()
        return [v for k, v in self._pairs if k == low]

    def require(self, name: str) -> str:
        value = self.get(name)
        if not value:
            raise bad(f"query parameter '{name}' is required", name)
        return value

    def int(self, name: str) -> int | None:
        value = self.get(name)
        if value is None or value == "":
            return None
        try:
            number = int(value)
        except ValueError:
            raise bad(f"query parameter '{name}': {value[:40]!r} is not an integer", name) from None
        if abs(number) > MAX_QUERY_INT:
            raise bad(f"query parameter '{name}': {value[:40]} is too large (at most "
                      f"{MAX_QUERY_INT})", name)
        return number

    def bool(self, name: str) -> bool:
        return (self.get(name) or "").strip().lower() in ("true", "1", "yes")


@dataclass
class Call:
    """One request, as the handlers see it."""

    request: Request
    query: Query
    params: dict[str, str]
    body: bytes
    max_depth: int = MAX_JSON_DEPTH

    def json(self, *, text_ok: bool = False) -> Any:
        """The body as JSON (None if empty). ``text_ok``: a non-JSON body is taken as a string.

        Refused with 400 naming the field: invalid UTF-8, text with a lone surrogate (which
        could be stored but never read back), nesting deeper than ``max_depth``.
        """
        try:
            text = self.body.decode("utf-8").strip()
        except UnicodeDecodeError as exc:
            raise bad(f"request body is not valid UTF-8 (byte {exc.start})", "body",
                      source="body") from None
        if not text:
            return None
        try:
            value = json.loads(text)
        except RecursionError:
            raise bad(f"request body is nested too deeply (at most {self.max_depth} levels)",
                      "body", source="body") from None
        except ValueError as exc:
            if not text_ok:
                raise bad(f"request body is not JSON: {exc}", source="body") from None
            value = text
        problem = json_text_problem(value, max_depth=self.max_depth)
        if problem is not None:
            raise bad(f"{problem[0]} {problem[1]}", problem[0], source="body")
        return value

    def object(self) -> dict[str, Any]:
        body = self.json()
        if body is None:
            return {}
        if not isinstance(body, dict):
            raise bad(f"request body: expected a JSON object, got {type(body).__name__}", source="body")
        return body


def _json(value: Any, status: int = 200) -> Response:
    return Response(json.dumps(value, separators=(",", ":")), status, media_type="application/json")


def _raw(text: str) -> Response:
    return Response(text, 200, media_type="application/json")


def _raw_list(rows: list[str]) -> Response:
    return _raw("[" + ",".join(rows) + "]")


def _empty() -> Response:
    return Response(b"", 200)


def problem(status: int, kind: str, detail: str, instance: str | None = None,
            errors: dict[str, list[str]] | None = None) -> Response:
    """An RFC 7807 ProblemDetails response, as ASP.NET writes them."""
    body: dict[str, Any] = {"type": kind, "title": kind, "status": status, "detail": detail,
                            "instance": instance}
    if errors:
        body["errors"] = errors
    return Response(json.dumps(body), status, media_type="application/problem+json")


def _closing(response: Response) -> Response:
    """The response, and the connection closed after it (the client may still be sending)."""
    response.headers["Connection"] = "close"
    return response


class _BodyTooLarge(Exception):
    def __init__(self, limit: int, declared: int | None) -> None:
        size = f" ({declared} bytes declared)" if declared is not None else ""
        super().__init__(f"the request body is larger than the limit of {limit} bytes "
                         f"({describe_size(limit)}){size}; nothing was stored")


Handler = Callable[[Call], Awaitable[Response]]
PAGE = ("limit", "offset")


@dataclass(frozen=True)
class Route:
    """One route: ``path`` as documented (matched case-insensitively under either prefix)."""

    method: str
    version: str
    """``v2.0`` (RPC) or ``v3.0`` (REST): the prefix it is documented under."""
    path: str
    handler: Handler
    summary: str
    query: tuple[str, ...] = ()
    body: str | None = None
    """None (no body), ``object`` (a JSON object) or ``any`` (any JSON, or plain text)."""
    pattern: tuple[str, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "pattern", tuple(
            part if part.startswith("{") else part.lower() for part in self.path.split("/")))

    @property
    def paged(self) -> bool:
        """Takes ``limit`` and ``offset``."""
        return "offset" in self.query

    @property
    def url_path(self) -> str:
        return f"/api/{self.version}/{self.path}"


# --------------------------------------------------------------------------- the ASGI app


class DataServicesApp:
    """The ASGI application: routing, binding and error mapping over a :class:`DataServicesBackend`."""

    def __init__(self, backend: DataServicesBackend, *, token: str | None = None,
                 limits: ServerLimits | None = None, require_auth: bool = False,
                 extra_routes: Sequence[Route] = ()) -> None:
        self.backend = backend
        self.limits = limits or ServerLimits()
        self._expected_auth = f"Bearer {token}".encode() if token else None
        self._auth_required = self._expected_auth is not None or require_auth
        """With a token or when exposed: every request needs the token or a user's token."""
        b = backend
        q = _limits

        def v2(method: str, path: str, handler: Handler, summary: str, query: tuple[str, ...] = (),
               body: str | None = None) -> Route:
            return Route(method, "v2.0", path, handler, summary, query, body)

        def v3(method: str, path: str, handler: Handler, summary: str, query: tuple[str, ...] = (),
               body: str | None = None) -> Route:
            return Route(method, "v3.0", path, handler, summary, query, body)

        unassigned_query = ("restrictToModuleIds", "templateName", *PAGE)
        orders_query = ("createdOnOrBefore", "status", *PAGE)
        self.routes: list[Route] = [
            # v2.0 OrderService
            v2("POST", "OrderService/CreateOrder", self._create_order, "Create an order",
               body="object"),
            v2("GET", "OrderService/Order",
               lambda c: self._one(lambda: b.order_json(c.query.require("orderId"))),
               "One order", ("orderId",)),
            v2("GET", "OrderService/OrderStatus",
               lambda c: self._sync(lambda: _json(b.order_status(c.query.require("orderId")).name)),
               "The status of an order", ("orderId",)),
            v2("GET", "OrderService/Orders", self._orders, "Orders, oldest first", orders_query),
            v2("GET", "OrderService/CompletedOrders", lambda c: self._list(
                lambda: b.list_orders(statuses=[OrderStatus.Complete], **q(c))),
               "Completed orders", PAGE),
            v2("GET", "OrderService/ExecutingOrders", lambda c: self._list(
                lambda: b.list_orders(statuses=EXECUTING_STATUSES, **q(c))),
               "Running or paused orders", PAGE),
            v2("GET", "OrderService/UnassignedOrders", self._unassigned,
               "Waiting orders nobody has claimed", unassigned_query),
            v2("GET", "OrderService/OrderTemplates", lambda c: self._list(
                lambda: b.list_templates(**q(c))), "Order templates", PAGE),
            v2("POST", "OrderService/RegisterOrderTemplate", self._register_template,
               "Create or replace an order template", body="object"),
            v2("DELETE", "OrderService/DeleteOrderTemplate", lambda c: self._delete_template(
                c.query.require("templateName")), "Delete an order template", ("templateName",)),
            v2("POST", "OrderService/TryAssignOrder", lambda c: self._try_assign(
                c.query.require("orderId"), c.query.get("to"), v3=False),
               "Claim a waiting order (atomic)", ("orderId", "to")),
            v2("POST", "OrderService/UpdateOrderStatus", self._update_status_v2,
               "Set an order's status", ("orderId", "status"), body="any"),
            v2("POST", "OrderService/SetOutputParameters", lambda c: self._done(
                b.set_output_parameters(c.query.require("orderId"), c.json()), v3=False),
               "Set output values by name", ("orderId",), body="object"),
            v2("POST", "OrderService/PersistState", lambda c: self._done(
                b.persist_state(c.query.require("orderId"), c.json(text_ok=True)), v3=False),
               "Keep an opaque state string on an order", ("orderId",), body="any"),
            v2("POST", "OrderService/UpdateOrder", lambda c: self._done(
                b.update_order(c.query.get("orderId"), c.json()), v3=False),
               "Change fields of an order", ("orderId",), body="object"),
            # v2.0 events and misc
            v2("POST", "EventService", lambda c: self._publish(c, v3=False), "Publish an event",
               body="object"),
            v2("POST", "QueryService/Events", lambda c: self._list(
                lambda: b.query_events(c.object(), **q(c))), "Search events", PAGE, body="object"),
            v2("GET", "version", lambda c: self._sync(lambda: _json(SERVER_VERSION)),
               "Server version"),
            # v3.0 orders
            v3("POST", "orders", self._create_order, "Create an order", body="object"),
            v3("GET", "orders", self._orders, "Orders, oldest first", orders_query),
            v3("GET", "orders/unassigned", self._unassigned, "Waiting orders nobody has claimed",
               unassigned_query),
            v3("GET", "orders/executing", lambda c: self._list(lambda: b.list_orders(
                statuses=EXECUTING_STATUSES, source_id=c.query.get("sourceIdentifier"),
                assigned_to=c.query.get("assignedTo"), **q(c))),
               "Running or paused orders", ("sourceIdentifier", "assignedTo", *PAGE)),
            v3("GET", "orders/{id}", lambda c: self._one(lambda: b.order_json(c.params["id"])),
               "One order"),
            v3("PUT", "orders/{id}", lambda c: self._done(
                b.update_order(c.params["id"], c.json()), v3=True), "Change fields of an order",
               body="object"),
            v3("PUT", "orders/{id}/status", self._update_status_v3, "Set an order's status",
               body="object"),
            v3("POST", "orders/{id}/try-assign", lambda c: self._try_assign(
                c.params["id"], ci(c.object()).get("to"), v3=True),
               "Claim a waiting order (atomic)", body="object"),
            v3("GET", "orders/{id}/descendants-and-self", lambda c: self._list(
                lambda: b.descendants_and_self(c.params["id"])), "An order and its descendants"),
            v3("PUT", "orders/{id}/output-parameters/{name}", lambda c: self._done(
                b.set_output_parameters(c.params["id"], {c.params["name"]: ci(c.object()).get("value")}),
                v3=True), "Set one output value", body="object"),
            v3("PUT", "orders/{id}/state", lambda c: self._done(
                b.persist_state(c.params["id"], _state_of(c)), v3=True),
               "Keep an opaque state string on an order", body="any"),
            # v3.0 templates
            v3("GET", "order-templates", lambda c: self._list(lambda: b.list_templates(
                exclude_hidden=c.query.bool("excludeHidden"), **q(c))), "Order templates",
               ("excludeHidden", *PAGE)),
            v3("GET", "order-templates/{name}", lambda c: self._one(
                lambda: b.template_json(c.params["name"])), "One order template"),
            v3("PUT", "order-templates/{name}", lambda c: self._done(
                b.update_template(c.params["name"], c.object()), v3=True),
               "Change an order template", body="object"),
            v3("DELETE", "order-templates/{name}", lambda c: self._delete_template(
                c.params["name"]), "Delete an order template"),
            # v3.0 events
            v3("POST", "events", lambda c: self._publish(c, v3=True), "Publish an event",
               body="object"),
            v3("GET", "events", lambda c: self._list(lambda: b.query_events({
                "topic": c.query.get("topic"), "createdFrom": c.query.get("createdFrom"),
                "createdTo": c.query.get("createdTo"),
                "createdAfterEventId": c.query.get("createdAfterEventId")}, **q(c))),
               "Search events", ("topic", "createdFrom", "createdTo", "createdAfterEventId", *PAGE)),
            v3("GET", "events/{id}", lambda c: self._one(lambda: b.event_json(c.params["id"])),
               "One event"),
        ]
        self.routes += extra_routes  # e.g. the inbox's (core.dataservices.inbox_routes)
        self._openapi = json.dumps(openapi_document(self.routes)).encode()

    async def _token_user(self, given: bytes) -> str | None:
        """The enabled user whose token (``labconsole users token NAME``; stored as SHA-256) this
        ``Bearer`` header carries, or None."""
        scheme, _, token = given.partition(b" ")
        if scheme.lower() != b"bearer" or not token.startswith(b"lcu_") or len(token) > 200:
            return None
        text = token.decode("ascii", "replace")
        return await self.backend.store.read(lambda c: user_for_token(c, text))

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":  # no websockets; lifespan is off
            return
        request = Request(scope, receive)
        try:
            response = await self.handle(request)
        except Exception:  # last resort: never drop a connection without an answer
            log.exception("Data Services request %s %s failed", scope.get("method"), scope.get("path"))
            response = problem(500, "InternalServerError", "unexpected server error; see the log")
        if response is None:  # the client went away before its request was complete
            return
        response.headers[IDEMPOTENCY_SUPPORT_HEADER] = "CreateOrder"
        await response(scope, receive, send)

    async def handle(self, request: Request) -> Response | None:
        scope = request.scope
        method = scope["method"].upper()
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        raw_target = raw_path.split(b"?", 1)[0]
        target = raw_target.decode("utf-8", "replace")
        instance = f"{method} {target}"
        if self._auth_required:
            given = request.headers.get("authorization", "").encode()
            if not (self._expected_auth is not None and hmac.compare_digest(given, self._expected_auth)) \
                    and await self._token_user(given) is None:
                resp = problem(401, "Unauthorized", "this Data Services server needs "
                               "'Authorization: Bearer <token>'", instance)
                resp.headers["WWW-Authenticate"] = "Bearer"
                return resp
        try:
            segments = [unquote(s, errors="strict") for s in raw_target.decode("utf-8").split("/") if s]
        except UnicodeDecodeError:
            message = "the path is not valid UTF-8 text (after percent-decoding)"
            return problem(400, "ValidationError", message, instance, {"path": [message]})
        if [s.lower() for s in segments] == ["openapi.json"] and method in ("GET", "HEAD"):
            return Response(self._openapi, 200, media_type="application/json")
        if len(segments) < 3 or segments[0].lower() != "api" or \
                segments[1].lower() not in ("v2.0", "v3.0"):
            return problem(404, "NotFound", f"no Data Services route for {instance} "
                           "(routes start with /api/v2.0/ or /api/v3.0/; see /openapi.json)",
                           instance)
        found, allowed = self._match(method, segments[2:])
        if found is None:
            if allowed:
                resp = problem(405, "MethodNotAllowed", f"{method} is not allowed here; use "
                               f"{', '.join(sorted(allowed))}", instance)
                resp.headers["Allow"] = ", ".join(sorted(allowed))
                return resp
            return problem(404, "NotFound", f"no Data Services route for {instance}", instance)
        route, params = found
        try:
            body = await self._read_body(request)
        except _BodyTooLarge as exc:
            return _closing(problem(413, "PayloadTooLarge", str(exc), instance))
        except TimeoutError:
            limit = self.limits.body_timeout
            return _closing(problem(408, "RequestTimeout", f"the request body was not complete "
                                    f"within {limit:g} s", instance))
        except ClientDisconnect:
            log.debug("Data Services: client left during %s", instance)
            return None
        try:
            call = Call(request, Query(scope.get("query_string", b"")), params, body,
                        self.limits.max_json_depth)
            return await route.handler(call)
        except OrderNotFoundError as exc:
            return problem(404, "OrderNotFound",
                           f"Order with identifier '{exc.identifier}' was not found.", instance)
        except OrderTemplateNotFoundError as exc:
            return problem(404, "OrderTemplateNotFound",
                           f"Order template '{exc.name}' was not found.", instance)
        except EventNotFoundError as exc:
            return problem(404, "EventNotFound",
                           f"Event with EventId '{exc.event_id}' was not found.", instance)
        except InputError as exc:
            errors: dict[str, list[str]] = {}
            for p in exc.problems:
                errors.setdefault(p.where.field or p.where.file or "body", []).append(p.message)
            return problem(400, "ValidationError", str(exc), instance, errors)
        except ConflictError as exc:
            return problem(409, "Conflict", str(exc), instance)
        except StoredOrderUnreadableError as exc:
            log.warning("Data Services: %s", exc)
            return problem(409, "OrderUnreadable", str(exc), instance)
        except StateError as exc:
            return problem(409, "InvalidState", str(exc), instance)
        except StoreError as exc:
            log.error("Data Services: %s", exc)
            return problem(503, "StoreUnavailable", str(exc), instance)
        except (OverflowError, RecursionError) as exc:  # a number or nesting nothing else caught
            message = f"a value in the request is out of range ({type(exc).__name__})"
            return problem(400, "ValidationError", message, instance, {"body": [message]})

    async def _read_body(self, request: Request) -> bytes:
        """The body, refused (413) beyond ``max_body_bytes`` before or while it is read, and
        given up (408) when not complete within ``body_timeout``."""
        limit = self.limits.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > limit:
            raise _BodyTooLarge(limit, int(declared))
        chunks: list[bytes] = []
        size = 0
        async with asyncio.timeout(self.limits.body_timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise _BodyTooLarge(limit, None)
                chunks.append(chunk)
        return b"".join(chunks)

    def _match(self, method: str, segments: list[str]
               ) -> tuple[tuple[Route, dict[str, str]] | None, set[str]]:
        allowed: set[str] = set()
        for route in self.routes:
            if len(route.pattern) != len(segments):
                continue
            params: dict[str, str] = {}
            for part, seg in zip(route.pattern, segments, strict=True):
                if part.startswith("{"):
                    params[part[1:-1]] = seg
                elif part != seg.lower():
                    break
            else:
                if route.method == method:
                    return (route, params), allowed
                allowed.add(route.method)
        return None, allowed

    # ------------------------------------------------------------------ handlers

    @staticmethod
    async def _sync(fn: Callable[[], Response]) -> Response:
        return fn()

    @staticmethod
    async def _one(fn: Callable[[], str]) -> Response:
        return _raw(fn())

    @staticmethod
    async def _list(fn: Callable[[], list[str]]) -> Response:
        return _raw_list(fn())

    @staticmethod
    async def _done(write: Awaitable[Any], *, v3: bool) -> Response:
        await write
        return _empty() if v3 else _json(True)

    async def _create_order(self, c: Call) -> Response:
        key = c.request.headers.get(IDEMPOTENCY_HEADER) or None
        order_id, _created = await self.backend.create_order(c.json(), idempotency_key=key)
        return _json(order_id)

    async def _orders(self, c: Call) -> Response:
        before = c.query.get("createdOnOrBefore")
        try:
            when = parse_datetime(before) if before else None
        except ValueError as exc:
            raise bad(f"createdOnOrBefore: {exc}", "createdOnOrBefore") from None
        statuses = [parse_status(s) for s in c.query.getlist("status") if s] or None
        return _raw_list(self.backend.list_orders(created_on_or_before=when, statuses=statuses,
                                                  **_limits(c)))

    async def _unassigned(self, c: Call) -> Response:
        return _raw_list(self.backend.list_orders(
            statuses=WAITING_STATUSES, unassigned=True,
            restrict_to=c.query.get("restrictToModuleIds"),
            template_names=c.query.getlist("templateName"), **_limits(c)))

    async def _register_template(self, c: Call) -> Response:
        await self.backend.register_template(c.json())
        return _json(True)

    async def _delete_template(self, name: str) -> Response:
        await self.backend.delete_template(name)
        return _json(True)

    async def _try_assign(self, order_id: str, to: Any, *, v3: bool) -> Response:
        assigned = await self.backend.try_assign(order_id, str(to) if to else "")
        return _json({"orderAssigned": assigned} if v3 else assigned)

    async def _update_status_v2(self, c: Call) -> Response:
        status = parse_status(c.query.require("status"))
        body = c.json(text_ok=True)
        details = ci(body).get("statusdetails") if isinstance(body, dict) else body
        await self.backend.update_status(c.query.require("orderId"), status,
                                         None if details is None else str(details))
        return _json(True)

    async def _update_status_v3(self, c: Call) -> Response:
        body = ci(c.object())
        if body.get("status") is None:
            raise bad("'status' is required", "status")
        details = body.get("statusdetails")
        await self.backend.update_status(c.params["id"], parse_status(body["status"]),
                                         None if details is None else str(details))
        return _empty()

    async def _publish(self, c: Call, *, v3: bool) -> Response:
        event_id = await self.backend.publish_event(c.json())
        return _json({"eventId": event_id} if v3 else event_id)


def _limits(c: Call) -> dict[str, Any]:
    return {"limit": c.query.int("limit"), "offset": c.query.int("offset") or 0}


def _state_of(c: Call) -> Any:
    body = c.json(text_ok=True)
    return ci(body).get("state") if isinstance(body, dict) else body


_PROBLEM_SCHEMA = {"$ref": "#/components/schemas/ProblemDetails"}
_QUERY_SCHEMAS: dict[str, dict[str, Any]] = {
    "limit": {"type": "integer", "minimum": 0, "maximum": MAX_QUERY_INT},
    "offset": {"type": "integer", "minimum": 0, "maximum": MAX_QUERY_INT},
    "excludeHidden": {"type": "boolean"},
    "createdOnOrBefore": {"type": "string", "format": "date-time"},
    "createdFrom": {"type": "string", "format": "date-time"},
    "createdTo": {"type": "string", "format": "date-time"},
}
_REQUIRED_QUERY = {("OrderService/Order", "orderId"), ("OrderService/OrderStatus", "orderId"),
                   ("OrderService/DeleteOrderTemplate", "templateName"),
                   ("OrderService/TryAssignOrder", "orderId"), ("OrderService/TryAssignOrder", "to"),
                   ("OrderService/UpdateOrderStatus", "orderId"),
                   ("OrderService/UpdateOrderStatus", "status"),
                   ("OrderService/SetOutputParameters", "orderId"),
                   ("OrderService/PersistState", "orderId")}


def openapi_document(routes: list[Route]) -> dict[str, Any]:
    """An OpenAPI 3.0 description of ``routes`` (what ``GET /openapi.json`` serves).

    Bodies are described loosely (a JSON object, or any JSON); responses by status. RPC routes
    are listed under ``/api/v2.0`` and REST routes under ``/api/v3.0``, as clients call them;
    the server answers each under either prefix.
    """
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        parameters: list[dict[str, Any]] = [
            {"name": part[1:-1], "in": "path", "required": True, "schema": {"type": "string"}}
            for part in route.path.split("/") if part.startswith("{")]
        for name in route.query:
            schema = _QUERY_SCHEMAS.get(name, {"type": "string"})
            param: dict[str, Any] = {"name": name, "in": "query", "schema": schema,
                                     "required": (route.path, name) in _REQUIRED_QUERY}
            if name in ("status", "templateName") and route.method == "GET":
                param.update(schema={"type": "array", "items": {"type": "string"}},
                             style="form", explode=True)
            parameters.append(param)
        operation: dict[str, Any] = {
            "operationId": f"{route.method.lower()}_{route.version}_{route.path}",
            "summary": route.summary,
            "parameters": parameters,
            "responses": {
                "200": {"description": "OK"},
                "400": {"description": "Bad input; `errors` names the field",
                        "content": {"application/problem+json": {"schema": _PROBLEM_SCHEMA}}},
                "401": {"description": "A token is required"},
                "404": {"description": "Not found",
                        "content": {"application/problem+json": {"schema": _PROBLEM_SCHEMA}}},
                "409": {"description": "Conflicts with the current state",
                        "content": {"application/problem+json": {"schema": _PROBLEM_SCHEMA}}},
                "413": {"description": "Request body over the limit"},
            },
        }
        if route.body is not None:
            schema = {"type": "object"} if route.body == "object" else {}
            operation["requestBody"] = {"required": False,
                                        "content": {"application/json": {"schema": schema}}}
        if route.path.lower() in ("orders", "orderservice/createorder") and route.method == "POST":
            parameters.append({"name": IDEMPOTENCY_HEADER, "in": "header", "required": False,
                               "schema": {"type": "string"}})
        paths.setdefault(route.url_path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.0.3",
        "info": {"title": "labconsole Data Services", "version": SERVER_VERSION,
                 "description": "Biosero Data Services API as served by labconsole's embedded "
                                "server. Every route also answers under the other version "
                                "prefix; path segments match case-insensitively."},
        "paths": paths,
        "components": {
            "schemas": {"ProblemDetails": {"type": "object", "properties": {
                "type": {"type": "string"}, "title": {"type": "string"},
                "status": {"type": "integer"}, "detail": {"type": "string"},
                "instance": {"type": "string", "nullable": True},
                "errors": {"type": "object", "additionalProperties": {
                    "type": "array", "items": {"type": "string"}}}}}},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{}, {"bearer": []}],
    }


# --------------------------------------------------------------------------- the server


def check_exposure(host: str, token: str | None, field: str = "data_services.host", *,
                   user_tokens: bool = False) -> None:
    """Refuse (ConfigError) a bind address beyond this computer without a token (or, with
    ``user_tokens``, enabled users holding tokens: ``labconsole users token NAME``)."""
    if not is_loopback(host) and not token and not user_tokens:
        raise ConfigError.at(
            f"binding Data Services to {host} exposes it beyond this computer and needs a "
            "token (clients then send 'Authorization: Bearer <token>'); set one, issue user "
            "tokens with `labconsole users token NAME`, or bind to 127.0.0.1", field=field)


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class EmbeddedDataServices:
    """A Data Services server inside labconsole, on its own thread and asyncio loop.

    Args:
        store: the open store; orders are its ``orders`` table.
        host: bind address. Anything but loopback requires ``token``.
        port: first port to try; when taken, the next ones are tried (``port_attempts`` in all).
            ``0`` takes any free port (tests).
        token: when set, every request needs ``Authorization: Bearer <token>`` (else 401).
        on_change: called with a :class:`~core.dataservices.backend.ServerChange` after each
            committed change, on the loop that called :meth:`start` (via
            ``call_soon_threadsafe``), so it may touch the console's state directly. Keep it cheap.
        emit_order_events: also append ``OrderCreatedEvent``/``OrderStatusChangedEvent`` to the
            event log for orders created or changed through this server.
        limits: body, header, connection and time limits (:class:`ServerLimits`).

    Raises:
        ConfigError: a non-loopback ``host`` without a token (at construction); no free port or
            an address that cannot be bound (at :meth:`start`).
    """

    def __init__(self, store: Store, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
                 token: str | None = None, *, on_change: Callable[[ServerChange], None] | None = None,
                 emit_order_events: bool = True, port_attempts: int = 20,
                 limits: ServerLimits | None = None, tls: TlsFiles | None = None,
                 extra_routes: Sequence[Route] = ()) -> None:
        token = token or None
        self.extra_routes = list(extra_routes)
        self.tls = tls
        self.exposed = not is_loopback(host)
        check_exposure(host, token, user_tokens=self.exposed and not token and store.read_sync(has_user_tokens))
        self.store, self.host, self.port, self.token = store, host, port, token
        self.on_change = on_change
        self.limits = limits or ServerLimits()
        self.port_attempts = max(1, port_attempts)
        self.backend = DataServicesBackend(store, emit_order_events=emit_order_events,
                                           notify=self._dispatch)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._notify_loop: asyncio.AbstractEventLoop | None = None
        self._bound_port: int | None = None
        self._bound: tuple[str, int] | None = None

    @property
    def bound_address(self) -> tuple[str, int]:
        """``(address, port)`` the listening socket is bound to, as the socket reports it."""
        if self._bound is None:
            raise StateError("the embedded Data Services server is not running")
        return self._bound

    @property
    def url(self) -> str:
        """``http://host:port`` of the running server (an origin, no path)."""
        if self._bound_port is None:
            raise StateError("the embedded Data Services server is not running")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "", "::") else self.host
        if ":" in host:
            host = f"[{host}]"
        return f"{'https' if self.tls else 'http'}://{host}:{self._bound_port}"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    async def start(self) -> str:
        """Bind, start serving on the server thread, and return :attr:`url` once it accepts."""
        if self.running:
            return self.url
        self._notify_loop = asyncio.get_running_loop()
        sock = self._bind()
        name = sock.getsockname()
        self._bound_port = name[1]
        self._bound = (name[0], name[1])
        limits = self.limits
        _limit_log_repeats()
        # uvicorn's own limit_concurrency is not used: it counts idle connections too, so a few
        # hundred slow clients would turn every request into a 503; _GuardedH11 closes the idle
        # ones instead. log_config=None: uvicorn logs through the console's logging.
        app = DataServicesApp(self.backend, token=self.token, limits=limits, require_auth=self.exposed,
                              extra_routes=self.extra_routes)
        config = uvicorn.Config(app,
                                lifespan="off", http=_guarded_protocol(limits), ws="none",
                                loop="none", log_level="warning", log_config=None,
                                access_log=False, timeout_graceful_shutdown=2,
                                timeout_keep_alive=limits.keep_alive_timeout,  # type: ignore[arg-type]
                                h11_max_incomplete_event_size=limits.max_header_bytes,
                                backlog=min(2048, max(128, limits.max_connections)),
                                ssl_certfile=self.tls.certfile if self.tls else None,
                                ssl_keyfile=self.tls.keyfile if self.tls else None)
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        server = _Server(config, ready)
        self._server = server
        self._thread = threading.Thread(target=_serve, args=(server, sock),
                                        name=f"data-services:{self._bound_port}", daemon=True)
        self._thread.start()
        try:
            await asyncio.wait_for(asyncio.wrap_future(ready), 15)
        except BaseException:
            self._bound_port = self._bound = None
            raise
        log.info("Data Services server listening on %s (%s)%s", self._describe_bound(),
                 "this computer only" if is_loopback(self._bound[0]) else
                 "reachable from the network; requests need the token",
                 "" if self.url.endswith(self._describe_bound()) else f"; local clients use {self.url}")
        return self.url

    def _describe_bound(self) -> str:
        host, port = self.bound_address
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    async def stop(self) -> None:
        """Stop accepting, finish the requests in flight (2 s at most) and end the thread."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 10)
        self._server = self._thread = None
        self._bound_port = self._bound = None

    async def __aenter__(self) -> EmbeddedDataServices:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _bind(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        ports = [0] if self.port == 0 else range(self.port, self.port + self.port_attempts)
        for port in ports:
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((self.host, port))
                sock.listen(min(2048, max(128, self.limits.max_connections)))
            except OSError as exc:
                sock.close()
                if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                    continue
                raise ConfigError.at(f"cannot listen on {self.host}:{port}: {exc.strerror or exc}",
                                     field="data_services.host") from None
            return sock
        last = self.port + self.port_attempts - 1
        raise ConfigError.at(f"ports {self.port}-{last} on {self.host} are all in use; "
                             "free one or choose another port", field="data_services.port")

    def _dispatch(self, change: ServerChange) -> None:
        callback, loop = self.on_change, self._notify_loop
        if callback is None or loop is None:
            return
        try:
            loop.call_soon_threadsafe(callback, change)
        except RuntimeError:  # the console loop is closed: nobody listens any more
            log.debug("Data Services change %s %s dropped: loop closed", change.kind, change.subject)


def _raw_problem(status: int, reason: str, detail: str) -> bytes:
    """A complete ``Connection: close`` ProblemDetails response, for answers outside a request."""
    body = json.dumps({"type": reason.replace(" ", ""), "title": reason, "status": status,
                       "detail": detail, "instance": None}).encode()
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/problem+json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode() + body


class _GuardedH11(H11Protocol):
    """uvicorn's HTTP/1.1 protocol plus a request-head timeout and a cap on open connections.

    uvicorn has neither: a client that connects and sends nothing, or sends its headers a byte
    at a time, holds a connection (and a file descriptor) forever.
    """

    limits: ClassVar[ServerLimits]
    _head_timer: asyncio.TimerHandle | None = None
    last_active: float = 0.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.last_active = self.loop.time()
        self._arm_head_timer()
        if len(self.connections) > self.limits.max_connections:
            self._make_room()

    def data_received(self, data: bytes) -> None:
        self.last_active = self.loop.time()
        super().data_received(data)
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self._arm_head_timer()  # (part of) a request head: it must be complete in time
        else:
            self._disarm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def idle(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _make_room(self) -> None:
        idle = [c for c in self.connections
                if c is not self and isinstance(c, _GuardedH11) and c.idle()
                and not c.transport.is_closing()]
        limit = self.limits.max_connections
        if idle:
            victim = min(idle, key=lambda c: c.last_active)
            log.warning("Data Services: %d connections open (limit %d); closing the longest idle",
                        len(self.connections), limit)
            victim.close_with(408, "Request Timeout", "closed to make room for other clients: "
                               f"the server keeps at most {limit} connections open")
        else:
            log.warning("Data Services: %d connections open (limit %d), all busy; refusing one",
                        len(self.connections), limit)
            self.close_with(503, "Service Unavailable",
                             f"the server is busy ({limit} connections open); retry shortly")

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.limits.header_timeout, self._head_timeout)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timeout(self) -> None:
        self._head_timer = None
        if self.conn.their_state is h11.IDLE and self.idle() and not self.transport.is_closing():
            log.warning("Data Services: a client did not send a complete request head within "
                        "%g s; connection closed", self.limits.header_timeout)
            self.close_with(408, "Request Timeout", "the request line and headers were not "
                             f"complete within {self.limits.header_timeout:g} s")

    def close_with(self, status: int, reason: str, detail: str) -> None:
        self._disarm_head_timer()
        self._unset_keepalive_if_required()
        if not self.transport.is_closing():
            self.transport.write(_raw_problem(status, reason, detail))
            self.transport.close()


def _guarded_protocol(limits: ServerLimits) -> type[_GuardedH11]:
    return type("GuardedH11Protocol", (_GuardedH11,), {"limits": limits})


class _Server(uvicorn.Server):
    """uvicorn's server, reporting on a future when it accepts connections."""

    def __init__(self, config: uvicorn.Config, ready: concurrent.futures.Future[None]) -> None:
        super().__init__(config)
        self.ready = ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and not self.ready.done():
            self.ready.set_result(None)


def _loop_errors(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """Errors the server loop cannot hand to anyone (accept failures ...), rate-limited."""
    exc = context.get("exception")
    log.error("Data Services server: %s%s", context.get("message", "loop error"),
              f": {type(exc).__name__}: {exc}" if exc is not None else "")


def _serve(server: _Server, sock: socket.socket) -> None:
    """Body of the server thread: a private loop running uvicorn until ``should_exit``."""
    loop = asyncio.new_event_loop()
    loop.set_exception_handler(_loop_errors)
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(server.serve(sockets=[sock]))
        if not server.ready.done():
            server.ready.set_exception(RuntimeError("the server stopped before it accepted"))
    except BaseException as exc:  # noqa: BLE001 - handed to start(), or logged if already running
        if not server.ready.done():
            server.ready.set_exception(exc)
        else:
            log.exception("Data Services server thread ended with an error")
    finally:
        sock.close()
        loop.close()


__all__ = ["DEFAULT_PORT", "DataServicesApp", "EmbeddedDataServices", "RepeatFilter", "Route",
           "SERVER_VERSION", "ServerChange", "ServerLimits", "is_loopback", "openapi_document"]
