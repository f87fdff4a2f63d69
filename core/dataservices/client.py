"""An async client for the Biosero Data Services REST API (orders, order templates, events).

:class:`DataServicesApi` is the contract (documented there); :class:`DataServicesClient` speaks it
over HTTP with httpx, to Biosero's server or to labconsole's embedded one.

Failure is explicit. Every call either returns what it promises or raises within the client's
``timeout`` (one budget per call, retries included):

* :class:`~core.errors.DataServicesError` names the URL and the cause: unreachable, refused, no
  answer in time, an answer that is not Data Services (wrong URL: 404 on an API route, HTML,
  not JSON), 401 (token), or a refusal with the server's detail;
* ``OrderNotFoundError``, ``OrderTemplateNotFoundError``, ``EventNotFoundError`` for ids the server
  reports unknown.

Retries: reads and calls whose repetition is harmless (status updates, outputs, state, template
upserts, events with an ``eventId``) are retried with capped exponential backoff on connection
errors, timeouts, dropped connections and 502/503/504. Other calls are retried only when the
request cannot have reached the server (connect errors).

Creating an order is never sent twice blindly. Each create carries an ``Idempotency-Key`` header
(a fresh uuid4 per call, or the caller's own, e.g. an outbox row id). If the answer is lost after
the request went out, the client resends with the same key only when the server is known to honour
keys (labconsole's embedded server says so in a ``Labconsole-Idempotency`` response header; the
client learns it from any response or asks ``GET /api/v2.0/version``), and the server then returns
the order it created the first time. Otherwise it raises
:class:`~core.dataservices.errors.CreateOutcomeUnknownError` carrying the key. ``try_assign``
checks the order's ``assignedTo`` before resending.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar, runtime_checkable
from urllib.parse import quote

import httpx

from core.dataservices.config import check_url
from core.dataservices.errors import (
    CreateOutcomeUnknownError,
    EventNotFoundError,
    OrderTemplateNotFoundError,
)
from core.dataservices.models import EventMessage, OrderTemplate
from core.errors import ConfigError, DataServicesError, OrderNotFoundError
from core.orders import Order, OrderStatus, Parameter, WireModel
from core.wire import format_datetime

V2 = "/api/v2.0"
V3 = "/api/v3.0"
M = TypeVar("M", bound=WireModel)
IDEMPOTENCY_HEADER = "Idempotency-Key"
IDEMPOTENCY_SUPPORT_HEADER = "Labconsole-Idempotency"


@runtime_checkable
class DataServicesApi(Protocol):
    """What labconsole asks of Data Services. Implemented by :class:`DataServicesClient`.

    All methods are coroutines. Unless said otherwise they raise
    :class:`~core.errors.DataServicesError` (URL + cause) when the server cannot be reached,
    answers too late (the client's ``timeout`` bounds each call, retries included), or answers
    something that is not Data Services. Cancelling a call cancels its HTTP request.
    """

    async def version(self) -> str:
        """The server's version string (``GET /api/v2.0/version``); the cheapest liveness check."""
        ...

    async def create_order(self, order: Order, *, idempotency_key: str | None = None) -> str:
        """Create ``order`` and return its identifier (``Order_00001`` unless one was chosen).

        Only creation fields are sent (template, parents, restrictions, inputs, outputs,
        schedule, priority, notes, createdBy); the server sets status ``Created`` and fills
        parameters from the template. ``idempotency_key`` identifies this creation across
        retries and restarts; give a durable one when the caller may resend after a crash.

        Raises:
            CreateOutcomeUnknownError: the request went out, its answer was lost, and the server
                does not deduplicate; the order may exist. Nothing was resent.
        """
        ...

    async def get_order(self, order_id: str) -> Order:
        """The order as the server has it now. Raises ``OrderNotFoundError``."""
        ...

    async def get_order_status(self, order_id: str) -> OrderStatus:
        """Only the status (a cheap poll). Raises ``OrderNotFoundError``."""
        ...

    async def orders(self, *, created_on_or_before: datetime | None = None,
                     statuses: Iterable[OrderStatus] | None = None, limit: int = 100,
                     offset: int = 0) -> list[Order]:
        """Orders, oldest first, optionally only those created up to a time or in ``statuses``.

        The status filter is applied by labconsole's server and again by the client, so it is
        correct against any server (paging then counts unfiltered orders on servers that ignore it).
        """
        ...

    async def unassigned_orders(self, *, limit: int | None = None, offset: int = 0,
                                module_id: str | None = None,
                                template_names: Iterable[str] | None = None) -> list[Order]:
        """Orders waiting for a module. ``module_id``: only orders without module restriction or
        restricted to it; ``template_names``: only these templates (both filtered client-side)."""
        ...

    async def try_assign(self, order_id: str, to: str) -> bool:
        """Claim an order for module/process ``to``. True for exactly one claimant, False for the
        rest. Raises ``OrderNotFoundError``."""
        ...

    async def update_order_status(self, order_id: str, status: OrderStatus,
                                  details: str | None = None) -> None:
        """Move an order to ``status``; ``details`` becomes ``statusDetails`` on Complete, Error
        and Canceled (e.g. the error message). Running stamps ``actualStartTime``, the end states
        ``actualEndTime``. Raises ``OrderNotFoundError``."""
        ...

    async def set_output_parameters(self, order_id: str, values: Mapping[str, Any]) -> None:
        """Set output values by name (values become strings: ``True``, ``12.5``); parameters keep
        their template's valueType. Raises ``OrderNotFoundError``."""
        ...

    async def persist_state(self, order_id: str, state: str) -> None:
        """Keep an opaque recovery string in the order's ``state``."""
        ...

    async def register_template(self, template: OrderTemplate | Mapping[str, Any]) -> None:
        """Create or replace (by name) an order template."""
        ...

    async def list_templates(self, *, limit: int = 1000, offset: int = 0,
                             exclude_hidden: bool = False) -> list[OrderTemplate]:
        """Order templates in registration order."""
        ...

    async def get_template(self, name: str) -> OrderTemplate:
        """One template by name. Raises ``OrderTemplateNotFoundError``."""
        ...

    async def delete_template(self, name: str) -> None:
        """Delete a template. Raises ``OrderTemplateNotFoundError`` if there is none."""
        ...

    async def publish_event(self, event: EventMessage | Mapping[str, Any]) -> str:
        """Append an event to the log and return its id (a uuid4 is assigned if it has none, so
        a resent event is stored once)."""
        ...

    async def query_events(self, *, topic: str | None = None, start: datetime | None = None,
                           end: datetime | None = None, subjects_contains: str | None = None,
                           association_id: str | None = None, actor_id: str | None = None,
                           module_id: str | None = None, limit: int = 100,
                           offset: int = 0) -> list[EventMessage]:
        """Events matching all given criteria, oldest ``createdDateUtc`` first. ``start``: events
        starting at or after it; ``end``: ending at or before it."""
        ...

    async def get_event(self, event_id: str) -> EventMessage:
        """One event. Raises ``EventNotFoundError``."""
        ...

    async def close(self) -> None:
        """Release connections. The client is unusable afterwards."""
        ...


@dataclass(frozen=True)
class RetryPolicy:
    """How retryable calls are retried, always within the client's per-call ``timeout``."""

    initial_interval: float = 0.1
    """Seconds before the first retry. Default 0.1."""
    backoff_coefficient: float = 2.0
    """Each further wait is this much longer. Default 2.0."""
    maximum_interval: float = 2.0
    """Cap on one wait. Default 2.0 s."""
    maximum_attempts: int = 4
    """Attempts in all, the first included. Default 4; 1 disables retries."""
    jitter: float = 0.2
    """Random fraction added to or taken from each wait. Default 0.2."""

    def delay(self, attempt: int) -> float:
        base = min(self.maximum_interval,
                   self.initial_interval * self.backoff_coefficient ** (attempt - 1))
        return max(0.0, base * (1 + random.uniform(-self.jitter, self.jitter)))


class _Ambiguous(Exception):
    """A non-idempotent request went out and its answer was lost."""

    def __init__(self, cause: str) -> None:
        super().__init__(cause)
        self.cause = cause


_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)
_RETRY_STATUS = frozenset({502, 503, 504})


def _os_error(exc: BaseException) -> str | None:
    """The operating system's reason inside an httpx error chain (e.g. "Connection refused")."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno is not None:
            return f"{os.strerror(seen.errno)} [errno {seen.errno}]"
        seen = seen.__cause__ or seen.__context__
    return None


def _describe(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, httpx.ConnectTimeout):
        return "connection timed out (host unreachable or not answering)"
    if isinstance(exc, httpx.ConnectError):
        return f"cannot connect: {_os_error(exc) or exc or type(exc).__name__}"
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        return f"no answer within {timeout:g} s"
    if isinstance(exc, httpx.RemoteProtocolError):
        return f"the server closed the connection without a complete answer ({exc})"
    return f"{type(exc).__name__}: {exc}"


class DataServicesClient(DataServicesApi):
    """HTTP implementation of :class:`DataServicesApi` (see the module docstring for failures).

    Args:
        base_url: origin of the server, e.g. ``http://10.0.0.234:8105``.
        timeout: seconds one call may take in all, retries included. Default 10.
        token: sent as ``Authorization: Bearer <token>`` (labconsole's server off loopback).
        retry: the :class:`RetryPolicy`.
        transport: an httpx transport (for tests of transport-level behaviour).

    Raises:
        ConfigError: ``base_url`` is not an http(s) origin.
    """

    def __init__(self, base_url: str, timeout: float = 10.0, *, token: str | None = None,
                 retry: RetryPolicy | None = None,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        try:
            self.base_url = check_url(base_url)
        except ValueError as exc:
            raise ConfigError.at(f"Data Services URL {exc}", field="base_url") from None
        if timeout <= 0:
            raise ConfigError.at(f"timeout must be positive, not {timeout}", field="timeout")
        self.timeout = float(timeout)
        self.retry = retry or RetryPolicy()
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=self.timeout,
                                       transport=transport)
        self.honours_idempotency: bool | None = None
        """Whether the server deduplicates creates by ``Idempotency-Key`` (None: not known yet)."""
        self.sent: Counter[str] = Counter()
        """HTTP requests sent, by method (retries count)."""

    async def __aenter__(self) -> DataServicesClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    # ------------------------------------------------------------------ transport

    async def _request(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
                       body: Any = None, has_body: bool = False, idempotent: bool,
                       headers: Mapping[str, str] | None = None,
                       deadline: float | None = None) -> httpx.Response:
        loop = asyncio.get_running_loop()
        deadline = deadline if deadline is not None else loop.time() + self.timeout
        url = self.base_url + path
        content = json.dumps(body).encode() if (body is not None or has_body) else None
        send_headers = dict(headers or {})
        if content is not None:
            send_headers["Content-Type"] = "application/json"
        attempt, cause = 0, "no attempt made"
        while True:
            attempt += 1
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise DataServicesError(url, f"{cause} (gave up after {self.timeout:g} s, "
                                             f"{attempt - 1} attempt(s))")
            self.sent[method] += 1
            try:
                async with asyncio.timeout(remaining):
                    response = await self._http.request(
                        method, path, params=params, content=content, headers=send_headers,
                        timeout=httpx.Timeout(remaining))
            except (httpx.TransportError, TimeoutError) as exc:
                cause = _describe(exc, self.timeout)
                if not idempotent and not isinstance(exc, _NOT_SENT):
                    raise _Ambiguous(cause) from None
            else:
                self._learn(response)
                if not (response.status_code in _RETRY_STATUS and idempotent):
                    return response
                cause = f"HTTP {response.status_code} {response.reason_phrase}"
            if attempt >= self.retry.maximum_attempts:
                raise DataServicesError(url, f"{cause} (after {attempt} attempts)")
            await asyncio.sleep(min(self.retry.delay(attempt), max(0.0, deadline - loop.time())))

    def _learn(self, response: httpx.Response) -> None:
        if IDEMPOTENCY_SUPPORT_HEADER.lower() in response.headers:
            self.honours_idempotency = "createorder" in \
                response.headers[IDEMPOTENCY_SUPPORT_HEADER].lower()

    def _check(self, response: httpx.Response, *, order_id: str | None = None,
               template: str | None = None, event_id: str | None = None) -> httpx.Response:
        if response.is_success:
            return response
        url = str(response.request.url)
        text = response.text
        code = response.status_code
        if code == 404:
            if template is not None and "OrderTemplateNotFound" in text:
                raise OrderTemplateNotFoundError(template)
            if order_id is not None and "OrderNotFound" in text:
                raise OrderNotFoundError(order_id)
            if event_id is not None and "Event with EventId" in text:
                raise EventNotFoundError(event_id)
            raise DataServicesError(url, f"HTTP 404 Not Found for {response.request.method} "
                                         f"{response.request.url.path}: no such API route; is "
                                         f"{self.base_url} a Data Services server?{_snippet(text)}")
        if code in (401, 403):
            raise DataServicesError(url, f"HTTP {code} {response.reason_phrase}: the server refused "
                                         "the credentials; set the Data Services token"
                                         f"{_snippet(text)}")
        raise DataServicesError(url, f"HTTP {code} {response.reason_phrase}{_snippet(_detail(text))}")

    def _json(self, response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            raise DataServicesError(str(response.request.url),
                                    "the answer is not JSON; is this a Data Services server?"
                                    f"{_snippet(response.text)}") from None

    async def get_json(self, path: str, params: Mapping[str, Any] | None = None, **subject: str) -> Any:
        response = await self._request("GET", path, params=params, idempotent=True)
        return self._json(self._check(response, **subject))

    async def _call(self, method: str, path: str, body: Any = None, *, has_body: bool = False,
                    params: Mapping[str, Any] | None = None, idempotent: bool = True,
                    **subject: str) -> httpx.Response:
        response = await self._request(method, path, params=params, body=body, has_body=has_body,
                                       idempotent=idempotent)
        return self._check(response, **subject)

    def _typed(self, model: type[M], data: Any, what: str) -> M:
        if not isinstance(data, dict):
            raise DataServicesError(self.base_url, f"expected {what} as a JSON object, got "
                                                   f"{type(data).__name__}")
        return model.from_dict(data, source=f"{self.base_url} {what}")

    def _typed_list(self, model: type[M], data: Any, what: str) -> list[M]:
        if not isinstance(data, list):
            raise DataServicesError(self.base_url, f"expected a JSON list of {what}, got "
                                                   f"{type(data).__name__}")
        return [self._typed(model, item, what) for item in data]

    # ------------------------------------------------------------------ misc

    async def version(self) -> str:
        data = await self.get_json(f"{V2}/version")
        if not isinstance(data, str):
            raise DataServicesError(self.base_url + f"{V2}/version",
                                    f"expected a version string, got {data!r:.80}; is this a "
                                    "Data Services server?")
        return data

    # ------------------------------------------------------------------ orders

    async def create_order(self, order: Order, *, idempotency_key: str | None = None) -> str:
        key = idempotency_key or uuid.uuid4().hex
        body = create_body(order)
        path = f"{V2}/OrderService/CreateOrder"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        headers = {IDEMPOTENCY_HEADER: key}
        try:
            response = await self._request("POST", path, body=body, idempotent=False,
                                           headers=headers, deadline=deadline)
            if response.status_code >= 500:
                raise _Ambiguous(f"HTTP {response.status_code} {response.reason_phrase}"
                                 f"{_snippet(_detail(response.text))}")
        except _Ambiguous as lost:
            if not await self._knows_keys(deadline):
                raise CreateOutcomeUnknownError(self.base_url + path, lost.cause, key) from None
            response = await self._request("POST", path, body=body, idempotent=True,
                                           headers=headers, deadline=deadline)
        data = self._json(self._check(response))
        if not isinstance(data, str) or not data:
            raise DataServicesError(self.base_url + path, f"expected the new order id as a JSON "
                                                          f"string, got {data!r:.80}")
        return data

    async def _knows_keys(self, deadline: float) -> bool:
        if self.honours_idempotency is None:
            try:
                await self._request("GET", f"{V2}/version", idempotent=True, deadline=deadline)
            except DataServicesError:
                return False
        return bool(self.honours_idempotency)

    async def get_order(self, order_id: str) -> Order:
        data = await self.get_json(f"{V2}/OrderService/Order", {"orderId": order_id}, order_id=order_id)
        return self._typed(Order, data, "order")

    async def get_order_status(self, order_id: str) -> OrderStatus:
        data = await self.get_json(f"{V2}/OrderService/OrderStatus", {"orderId": order_id},
                               order_id=order_id)
        try:
            return OrderStatus.parse(data)  # type: ignore[return-value]
        except ValueError as exc:
            raise DataServicesError(self.base_url, f"order {order_id}: {exc}") from None

    async def orders(self, *, created_on_or_before: datetime | None = None,
                     statuses: Iterable[OrderStatus] | None = None, limit: int = 100,
                     offset: int = 0) -> list[Order]:
        wanted = set(statuses) if statuses is not None else None
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if created_on_or_before is not None:
            params["createdOnOrBefore"] = format_datetime(created_on_or_before)
        if wanted:
            params["status"] = sorted(s.name for s in wanted)
        found = self._typed_list(Order, await self.get_json(f"{V2}/OrderService/Orders", params), "orders")
        return [o for o in found if wanted is None or o.status in wanted]

    async def completed_orders(self, *, limit: int = 100, offset: int = 0) -> list[Order]:
        """Orders in status Complete, oldest first."""
        data = await self.get_json(f"{V2}/OrderService/CompletedOrders", {"limit": limit, "offset": offset})
        return self._typed_list(Order, data, "orders")

    async def executing_orders(self, *, limit: int = 100, offset: int = 0) -> list[Order]:
        """Orders being executed (Running or Paused on labconsole's server), oldest first."""
        data = await self.get_json(f"{V2}/OrderService/ExecutingOrders", {"limit": limit, "offset": offset})
        return self._typed_list(Order, data, "orders")

    async def unassigned_orders(self, *, limit: int | None = None, offset: int = 0,
                                module_id: str | None = None,
                                template_names: Iterable[str] | None = None) -> list[Order]:
        params = {"limit": limit, "offset": offset} if limit is not None else None
        data = await self.get_json(f"{V2}/OrderService/UnassignedOrders", params)
        found: list[Order] = self._typed_list(Order, data, "orders")
        names = {n.lower() for n in template_names} if template_names is not None else None
        return [o for o in found
                if (names is None or (o.templateName or "").lower() in names)
                and (module_id is None or not o.restricted_modules or module_id in o.restricted_modules)]

    async def descendants_and_self(self, order_id: str) -> list[Order]:
        """The order and every order below it (``parentIdentifier`` chains), oldest first."""
        data = await self.get_json(f"{V3}/orders/{_seg(order_id)}/descendants-and-self", order_id=order_id)
        return self._typed_list(Order, data, "orders")

    async def try_assign(self, order_id: str, to: str) -> bool:
        try:
            return await self._post_try_assign(order_id, to)
        except _Ambiguous:
            pass
        current = await self.get_order(order_id)  # the claim may have landed: look before resending
        if current.assignedTo:
            return current.assignedTo == to
        try:
            if await self._post_try_assign(order_id, to):
                return True
        except _Ambiguous as lost:
            raise DataServicesError(self.base_url, f"try-assign {order_id}: {lost.cause}") from None
        return (await self.get_order(order_id)).assignedTo == to

    async def _post_try_assign(self, order_id: str, to: str) -> bool:
        response = await self._request("POST", f"{V3}/orders/{_seg(order_id)}/try-assign",
                                       body={"to": to}, idempotent=False)
        data = self._json(self._check(response, order_id=order_id))
        assigned = data.get("orderAssigned") if isinstance(data, dict) else None
        if isinstance(assigned, bool):
            return assigned
        if isinstance(data, bool):
            return data
        raise DataServicesError(self.base_url, f"try-assign {order_id}: unexpected answer {data!r:.80}")

    async def update_order_status(self, order_id: str, status: OrderStatus,
                                  details: str | None = None) -> None:
        await self._call("PUT", f"{V3}/orders/{_seg(order_id)}/status",
                         {"status": status.name, "statusDetails": details}, order_id=order_id)

    async def update_order(self, order_id: str, changes: Mapping[str, Any]) -> None:
        """Change fields of an order (``PUT orders/{id}``: notes, statusDetails, priority ...)."""
        await self._call("PUT", f"{V3}/orders/{_seg(order_id)}", dict(changes), order_id=order_id)

    async def set_output_parameters(self, order_id: str, values: Mapping[str, Any]) -> None:
        body = {str(k): Parameter(name=str(k), value=v).value for k, v in values.items()}
        await self._call("POST", f"{V2}/OrderService/SetOutputParameters", body,
                         params={"orderId": order_id}, order_id=order_id)

    async def persist_state(self, order_id: str, state: str) -> None:
        await self._call("POST", f"{V2}/OrderService/PersistState", state, has_body=True,
                         params={"orderId": order_id}, order_id=order_id)

    # ------------------------------------------------------------------ templates

    async def register_template(self, template: OrderTemplate | Mapping[str, Any]) -> None:
        t = template if isinstance(template, OrderTemplate) else OrderTemplate.from_dict(dict(template))
        await self._call("POST", f"{V2}/OrderService/RegisterOrderTemplate", t.to_wire())

    async def list_templates(self, *, limit: int = 1000, offset: int = 0,
                             exclude_hidden: bool = False) -> list[OrderTemplate]:
        data = await self.get_json(f"{V3}/order-templates", {
            "excludeHidden": "true" if exclude_hidden else "false", "limit": limit, "offset": offset})
        return self._typed_list(OrderTemplate, data, "order templates")

    async def get_template(self, name: str) -> OrderTemplate:
        data = await self.get_json(f"{V3}/order-templates/{_seg(name)}", template=name)
        return self._typed(OrderTemplate, data, "order template")

    async def find_template(self, name: str) -> OrderTemplate:
        """:meth:`get_template`, falling back to a case-insensitive search of the list.

        Raises ``OrderTemplateNotFoundError`` listing the known template names.
        """
        try:
            return await self.get_template(name)
        except OrderTemplateNotFoundError:
            templates = await self.list_templates(limit=10_000)
        for t in templates:
            if t.name.lower() == name.lower():
                return t
        raise OrderTemplateNotFoundError(name, [t.name for t in templates])

    async def delete_template(self, name: str) -> None:
        await self._call("DELETE", f"{V2}/OrderService/DeleteOrderTemplate",
                         params={"templateName": name}, template=name)

    # ------------------------------------------------------------------ events

    async def publish_event(self, event: EventMessage | Mapping[str, Any]) -> str:
        e = event if isinstance(event, EventMessage) else EventMessage.from_dict(dict(event))
        body = {k: v for k, v in e.to_wire().items() if v is not None and k != "createdDateUtc"}
        body["eventId"] = e.eventId or str(uuid.uuid4())
        for key in ("start", "end"):
            if getattr(e, key) is None:
                body.pop(key, None)
        data = self._json(await self._call("POST", f"{V2}/EventService", body))
        if not isinstance(data, str):
            raise DataServicesError(self.base_url, f"expected the event id as a JSON string, "
                                                   f"got {data!r:.80}")
        return data

    async def query_events(self, *, topic: str | None = None, start: datetime | None = None,
                           end: datetime | None = None, subjects_contains: str | None = None,
                           association_id: str | None = None, actor_id: str | None = None,
                           module_id: str | None = None, limit: int = 100,
                           offset: int = 0) -> list[EventMessage]:
        search = {"topic": topic, "subjectsContains": subjects_contains,
                  "associationId": association_id, "actorId": actor_id, "moduleId": module_id,
                  "start": format_datetime(start) if start else None,
                  "end": format_datetime(end) if end else None}
        response = await self._request("POST", f"{V2}/QueryService/Events",
                                       params={"limit": limit, "offset": offset},
                                       body={k: v for k, v in search.items() if v is not None},
                                       idempotent=True)
        if response.status_code == 204:
            return []
        return self._typed_list(EventMessage, self._json(self._check(response)), "events")

    async def get_event(self, event_id: str) -> EventMessage:
        data = await self.get_json(f"{V3}/events/{_seg(event_id)}", event_id=event_id)
        return self._typed(EventMessage, data, "event")


def create_body(order: Order) -> dict[str, Any]:
    """The CreateOrder command for ``order`` (camelCase, unset fields left out)."""
    wire = order.to_wire()
    body: dict[str, Any] = {key: wire[key] for key in (
        "parentIdentifier", "runAfterIdentifier", "restrictToModuleIds",
        "moduleRestrictionStrategy", "createdBy", "notes", "templateName", "templateVersion",
        "schedulingStrategy", "priority") if wire.get(key) is not None}
    # Only what the caller set on each parameter: the server takes the rest (valueType, unit ...)
    # from the template, as it does for the {name, value} pairs other clients send.
    for key in ("inputParameters", "outputParameters"):
        body[key] = [{"name": p.name, "value": p.value,
                      **p.model_dump(mode="json", exclude_unset=True)} for p in getattr(order, key)]
    if order.identifier:
        body["identifier"] = order.identifier
    if order.scheduledStartTime is not None:
        body["scheduledStartTime"] = wire["scheduledStartTime"]
    if order.estimatedDuration is not None:
        body["estimatedDurationInMinutes"] = order.estimatedDuration.total_seconds() / 60
    return body


def _seg(value: str) -> str:
    return quote(value, safe="")


def _detail(text: str) -> str:
    try:
        data = json.loads(text)
    except ValueError:
        return text
    if isinstance(data, dict):
        return str(data.get("detail") or data.get("title") or text)
    return text


def _snippet(text: str) -> str:
    text = " ".join(text.split())
    if not text:
        return ""
    return f" (answer: {text[:200]}{'...' if len(text) > 200 else ''})"


__all__ = ["DataServicesApi", "DataServicesClient", "RetryPolicy", "create_body"]
