"""Typed, frozen events and the in-process event bus.

Everything that changes in the core is announced on the :class:`EventBus` *after* it has been
committed to the store. Subscribers are plain callables run synchronously in ``publish``: they
must be cheap (append to a buffer, set a flag). That keeps the cost per event at one function
call — no asyncio task or Qt signal per event; the GUI bridge coalesces per frame on its side.

``await bus.next_event(OrderStatusChanged, lambda e: e.order_id == oid)`` waits for one event,
which makes the bus easy to test against.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from core.orders import ModuleStatus, OrderStatus
from core.states import RunStatus, StepStatus
from core.wire import now_utc

log = logging.getLogger(__name__)


class Event(BaseModel):
    """Base of every core event. Frozen: subscribers share one instance."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)
    at: datetime = Field(default_factory=now_utc)


class OrderCreated(Event):
    order_id: str
    parent_id: str | None = None
    template_name: str | None = None
    status: OrderStatus = OrderStatus.Created
    row: tuple[Any, ...] = ()
    """The order's table row (see ``core.store.ORDER_ROW_COLUMNS``), for views."""


class OrderStatusChanged(Event):
    order_id: str
    from_status: OrderStatus | None
    to_status: OrderStatus
    who: str
    why: str | None = None
    seq: int = 0
    """Position in the transition log."""
    row: tuple[Any, ...] = ()


class OrderUpdated(Event):
    """Fields other than status changed (assignment, outputs, priority ...)."""

    order_id: str
    fields: tuple[str, ...] = ()
    row: tuple[Any, ...] = ()


class OperatorAction(Event):
    """An audited operator action (written to the audit log before it is published)."""

    who: str
    action: str
    target: str | None = None
    reason: str | None = None


class InstrumentStatusChanged(Event):
    """An instrument (module) changed state: Ready/Busy/Error/Offline, with details."""

    instrument_id: str
    status: ModuleStatus
    detail: str = ""
    current_orders: tuple[str, ...] = ()
    enabled: bool = True
    in_service: bool = True


class StepProgress(Event):
    """An instrument reported progress (0..1) on an order; not persisted, coalesced by views."""

    order_id: str
    instrument_id: str | None = None
    progress: float | None = None
    values: dict[str, Any] | None = None


class RunChanged(Event):
    """A workflow run changed status (engine vocabulary: pending, running, paused ...)."""

    run_id: str
    template_name: str
    template_version: int
    status: RunStatus
    detail: str | None = None


class StepChanged(Event):
    """A step of a run changed status (pending, queued, running, completed, failed, retrying ...)."""

    run_id: str
    step_id: str
    order_id: str
    status: StepStatus
    attempt: int = 0
    detail: str | None = None
    instrument: str | None = None


E = TypeVar("E", bound=Event)
Callback = Callable[[Event], Any]


class Subscription:
    """Returned by :meth:`EventBus.subscribe`; call :meth:`close` to unsubscribe."""

    __slots__ = ("_bus", "callback", "types")

    def __init__(self, bus: EventBus, callback: Callback, types: tuple[type[Event], ...]) -> None:
        self._bus, self.callback, self.types = bus, callback, types

    def close(self) -> None:
        self._bus.unsubscribe(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventBus:
    """Synchronous in-process publish/subscribe by event class (subclasses match)."""

    def __init__(self) -> None:
        self._subs: list[Subscription] = []
        self._by_type: dict[type[Event], tuple[Subscription, ...]] = {}

    def subscribe(self, callback: Callback,
                  types: type[Event] | tuple[type[Event], ...] = Event) -> Subscription:
        if not isinstance(types, tuple):
            types = (types,)
        sub = Subscription(self, callback, types)
        self._subs.append(sub)
        self._by_type.clear()
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        if sub in self._subs:
            self._subs.remove(sub)
            self._by_type.clear()

    def publish(self, event: Event) -> None:
        subs = self._by_type.get(type(event))
        if subs is None:
            subs = tuple(s for s in self._subs if isinstance(event, s.types))
            self._by_type[type(event)] = subs
        for sub in subs:
            try:
                sub.callback(event)
            except Exception:  # one bad subscriber must not stop the others
                log.exception("event subscriber %r failed on %s", sub.callback, type(event).__name__)

    async def next_event(self, event_type: type[E], predicate: Callable[[E], bool] | None = None,
                         *, timeout: float | None = None) -> E:
        """Wait for the next event of ``event_type`` that satisfies ``predicate``."""
        future: asyncio.Future[E] = asyncio.get_running_loop().create_future()

        def on_event(event: Event) -> None:
            if not future.done() and (predicate is None or predicate(event)):  # type: ignore[arg-type]
                future.set_result(event)  # type: ignore[arg-type]

        with self.subscribe(on_event, event_type):
            if timeout is None:
                return await future
            return await asyncio.wait_for(future, timeout)
