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

Security: it binds to 127.0.0.1 by default. Another bind address needs a token; with a token every
request must carry ``Authorization: Bearer <token>`` or gets 401.

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
import socket
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote

import uvicorn
from starlette.requests import Request
from starlette.responses import Response

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
from core.dataservices.errors import EventNotFoundError, OrderTemplateNotFoundError
from core.errors import (
    ConfigError,
    InputError,
    OrderNotFoundError,
    StateError,
    StoreError,
)
from core.orders import OrderStatus
from core.store import Store
from core.wire import parse_datetime

log = logging.getLogger(__name__)

DEFAULT_PORT = 8105
SERVER_VERSION = "1.6.2-labconsole"
"""What ``GET /api/v2.0/version`` answers: the Data Services version whose API this speaks."""
IDEMPOTENCY_HEADER = "Idempotency-Key"
IDEMPOTENCY_SUPPORT_HEADER = "Labconsole-Idempotency"


# --------------------------------------------------------------------------- request helpers


class Query:
    """Query parameters: names case-insensitive, ``p=p=value`` read as ``value`` (quirk 1)."""

    def __init__(self, raw: bytes) -> None:
        self._pairs: list[tuple[str, str]] = []
        for key, value in parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True):
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
            return int(value)
        except ValueError:
            raise bad(f"query parameter '{name}': {value!r} is not an integer", name) from None

    def bool(self, name: str) -> bool:
        return (self.get(name) or "").strip().lower() in ("true", "1", "yes")


@dataclass
class Call:
    """One request, as the handlers see it."""

    request: Request
    query: Query
    params: dict[str, str]
    body: bytes

    def json(self, *, text_ok: bool = False) -> Any:
        """The body as JSON (None if empty). ``text_ok``: a non-JSON body is taken as a string."""
        text = self.body.decode("utf-8", "replace").strip()
        if not text:
            return None
        try:
            return json.loads(text)
        except ValueError as exc:
            if text_ok:
                return text
            raise bad(f"request body is not JSON: {exc}", source="body") from None

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


Handler = Callable[[Call], Awaitable[Response]]


# --------------------------------------------------------------------------- the ASGI app


class DataServicesApp:
    """The ASGI application: routing, binding and error mapping over a :class:`DataServicesBackend`."""

    def __init__(self, backend: DataServicesBackend, *, token: str | None = None) -> None:
        self.backend = backend
        self._expected_auth = f"Bearer {token}".encode() if token else None
        b = backend
        q = _limits
        self.routes: list[tuple[str, tuple[str, ...], Handler]] = [
            # v2.0 OrderService
            ("POST", ("orderservice", "createorder"), self._create_order),
            ("GET", ("orderservice", "order"),
             lambda c: self._one(lambda: b.order_json(c.query.require("orderId")))),
            ("GET", ("orderservice", "orderstatus"),
             lambda c: self._sync(lambda: _json(b.order_status(c.query.require("orderId")).name))),
            ("GET", ("orderservice", "orders"), self._orders),
            ("GET", ("orderservice", "completedorders"), lambda c: self._list(
                lambda: b.list_orders(statuses=[OrderStatus.Complete], **q(c)))),
            ("GET", ("orderservice", "executingorders"), lambda c: self._list(
                lambda: b.list_orders(statuses=EXECUTING_STATUSES, **q(c)))),
            ("GET", ("orderservice", "unassignedorders"), self._unassigned),
            ("GET", ("orderservice", "ordertemplates"), lambda c: self._list(
                lambda: b.list_templates(**q(c)))),
            ("POST", ("orderservice", "registerordertemplate"), self._register_template),
            ("DELETE", ("orderservice", "deleteordertemplate"), lambda c: self._delete_template(
                c.query.require("templateName"))),
            ("POST", ("orderservice", "tryassignorder"), lambda c: self._try_assign(
                c.query.require("orderId"), c.query.get("to"), v3=False)),
            ("POST", ("orderservice", "updateorderstatus"), self._update_status_v2),
            ("POST", ("orderservice", "setoutputparameters"), lambda c: self._done(
                b.set_output_parameters(c.query.require("orderId"), c.json()), v3=False)),
            ("POST", ("orderservice", "persiststate"), lambda c: self._done(
                b.persist_state(c.query.require("orderId"), c.json(text_ok=True)), v3=False)),
            ("POST", ("orderservice", "updateorder"), lambda c: self._done(
                b.update_order(c.query.get("orderId"), c.json()), v3=False)),
            # v2.0 events and misc
            ("POST", ("eventservice",), lambda c: self._publish(c, v3=False)),
            ("POST", ("queryservice", "events"), lambda c: self._list(
                lambda: b.query_events(c.object(), **q(c)))),
            ("GET", ("version",), lambda c: self._sync(lambda: _json(SERVER_VERSION))),
            # v3.0 orders
            ("POST", ("orders",), self._create_order),
            ("GET", ("orders",), self._orders),
            ("GET", ("orders", "unassigned"), self._unassigned),
            ("GET", ("orders", "executing"), lambda c: self._list(lambda: b.list_orders(
                statuses=EXECUTING_STATUSES, source_id=c.query.get("sourceIdentifier"),
                assigned_to=c.query.get("assignedTo"), **q(c)))),
            ("GET", ("orders", "{id}"), lambda c: self._one(lambda: b.order_json(c.params["id"]))),
            ("PUT", ("orders", "{id}"), lambda c: self._done(
                b.update_order(c.params["id"], c.json()), v3=True)),
            ("PUT", ("orders", "{id}", "status"), self._update_status_v3),
            ("POST", ("orders", "{id}", "try-assign"), lambda c: self._try_assign(
                c.params["id"], ci(c.object()).get("to"), v3=True)),
            ("GET", ("orders", "{id}", "descendants-and-self"), lambda c: self._list(
                lambda: b.descendants_and_self(c.params["id"]))),
            ("PUT", ("orders", "{id}", "output-parameters", "{name}"), lambda c: self._done(
                b.set_output_parameters(c.params["id"], {c.params["name"]: ci(c.object()).get("value")}),
                v3=True)),
            ("PUT", ("orders", "{id}", "state"), lambda c: self._done(
                b.persist_state(c.params["id"], _state_of(c)), v3=True)),
            # v3.0 templates
            ("GET", ("order-templates",), lambda c: self._list(lambda: b.list_templates(
                exclude_hidden=c.query.bool("excludeHidden"), **q(c)))),
            ("GET", ("order-templates", "{name}"), lambda c: self._one(
                lambda: b.template_json(c.params["name"]))),
            ("PUT", ("order-templates", "{name}"), lambda c: self._done(
                b.update_template(c.params["name"], c.object()), v3=True)),
            ("DELETE", ("order-templates", "{name}"), lambda c: self._delete_template(
                c.params["name"])),
            # v3.0 events
            ("POST", ("events",), lambda c: self._publish(c, v3=True)),
            ("GET", ("events",), lambda c: self._list(lambda: b.query_events({
                "topic": c.query.get("topic"), "createdFrom": c.query.get("createdFrom"),
                "createdTo": c.query.get("createdTo"),
                "createdAfterEventId": c.query.get("createdAfterEventId")}, **q(c)))),
            ("GET", ("events", "{id}"), lambda c: self._one(lambda: b.event_json(c.params["id"]))),
        ]

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":  # no websockets; lifespan is off
            return
        request = Request(scope, receive)
        try:
            response = await self.handle(request)
        except Exception:  # last resort: never drop a connection without an answer
            log.exception("Data Services request %s %s failed", scope.get("method"), scope.get("path"))
            response = problem(500, "InternalServerError", "unexpected server error; see the log")
        response.headers[IDEMPOTENCY_SUPPORT_HEADER] = "CreateOrder"
        await response(scope, receive, send)

    async def handle(self, request: Request) -> Response:
        scope = request.scope
        method = scope["method"].upper()
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        target = raw_path.split(b"?", 1)[0].decode("utf-8", "replace")
        instance = f"{method} {target}"
        if self._expected_auth is not None:
            given = request.headers.get("authorization", "").encode()
            if not hmac.compare_digest(given, self._expected_auth):
                resp = problem(401, "Unauthorized", "this Data Services server needs "
                               "'Authorization: Bearer <token>'", instance)
                resp.headers["WWW-Authenticate"] = "Bearer"
                return resp
        segments = [unquote(s) for s in target.split("/") if s]
        if len(segments) < 3 or segments[0].lower() != "api" or \
                segments[1].lower() not in ("v2.0", "v3.0"):
            return problem(404, "NotFound", f"no Data Services route for {instance} "
                           "(routes start with /api/v2.0/ or /api/v3.0/)", instance)
        found, allowed = self._match(method, segments[2:])
        if found is None:
            if allowed:
                resp = problem(405, "MethodNotAllowed", f"{method} is not allowed here; use "
                               f"{', '.join(sorted(allowed))}", instance)
                resp.headers["Allow"] = ", ".join(sorted(allowed))
                return resp
            return problem(404, "NotFound", f"no Data Services route for {instance}", instance)
        handler, params = found
        call = Call(request, Query(scope.get("query_string", b"")), params, await request.body())
        try:
            return await handler(call)
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
        except StateError as exc:
            return problem(409, "InvalidState", str(exc), instance)
        except StoreError as exc:
            log.error("Data Services: %s", exc)
            return problem(503, "StoreUnavailable", str(exc), instance)

    def _match(self, method: str, segments: list[str]
               ) -> tuple[tuple[Handler, dict[str, str]] | None, set[str]]:
        allowed: set[str] = set()
        for route_method, pattern, handler in self.routes:
            if len(pattern) != len(segments):
                continue
            params: dict[str, str] = {}
            for part, seg in zip(pattern, segments, strict=True):
                if part.startswith("{"):
                    params[part[1:-1]] = seg
                elif part != seg.lower():
                    break
            else:
                if route_method == method:
                    return (handler, params), allowed
                allowed.add(route_method)
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


# --------------------------------------------------------------------------- the server


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

    Raises:
        ConfigError: a non-loopback ``host`` without a token (at construction); no free port or
            an address that cannot be bound (at :meth:`start`).
    """

    def __init__(self, store: Store, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
                 token: str | None = None, *, on_change: Callable[[ServerChange], None] | None = None,
                 emit_order_events: bool = True, port_attempts: int = 20) -> None:
        token = token or None
        if not is_loopback(host) and token is None:
            raise ConfigError.at(
                f"binding Data Services to {host} exposes it beyond this computer and needs a "
                "token (clients then send 'Authorization: Bearer <token>'); set one, or bind to "
                "127.0.0.1", field="data_services.host")
        self.store, self.host, self.port, self.token = store, host, port, token
        self.on_change = on_change
        self.port_attempts = max(1, port_attempts)
        self.backend = DataServicesBackend(store, emit_order_events=emit_order_events,
                                           notify=self._dispatch)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._notify_loop: asyncio.AbstractEventLoop | None = None
        self._bound_port: int | None = None

    @property
    def url(self) -> str:
        """``http://host:port`` of the running server (an origin, no path)."""
        if self._bound_port is None:
            raise StateError("the embedded Data Services server is not running")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "", "::") else self.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self._bound_port}"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    async def start(self) -> str:
        """Bind, start serving on the server thread, and return :attr:`url` once it accepts."""
        if self.running:
            return self.url
        self._notify_loop = asyncio.get_running_loop()
        sock = self._bind()
        self._bound_port = sock.getsockname()[1]
        config = uvicorn.Config(DataServicesApp(self.backend, token=self.token), lifespan="off",
                                http="h11", ws="none", loop="none", log_level="warning",
                                access_log=False, timeout_graceful_shutdown=2)
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        server = _Server(config, ready)
        self._server = server
        self._thread = threading.Thread(target=_serve, args=(server, sock),
                                        name=f"data-services:{self._bound_port}", daemon=True)
        self._thread.start()
        try:
            await asyncio.wait_for(asyncio.wrap_future(ready), 15)
        except BaseException:
            self._bound_port = None
            raise
        log.info("Data Services server listening on %s", self.url)
        return self.url

    async def stop(self) -> None:
        """Stop accepting, finish the requests in flight (2 s at most) and end the thread."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 10)
        self._server = self._thread = None
        self._bound_port = None

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
                sock.listen(128)
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


class _Server(uvicorn.Server):
    """uvicorn's server, reporting on a future when it accepts connections."""

    def __init__(self, config: uvicorn.Config, ready: concurrent.futures.Future[None]) -> None:
        super().__init__(config)
        self.ready = ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and not self.ready.done():
            self.ready.set_result(None)


def _serve(server: _Server, sock: socket.socket) -> None:
    """Body of the server thread: a private loop running uvicorn until ``should_exit``."""
    loop = asyncio.new_event_loop()
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


__all__ = ["DEFAULT_PORT", "DataServicesApp", "EmbeddedDataServices", "SERVER_VERSION",
           "ServerChange", "is_loopback"]
