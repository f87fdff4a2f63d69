"""Claims as leases: which console holds an order, kept on the Data Services all consoles share.

Biosero's ``try-assign`` is an atomic compare-and-set on ``assignedTo``: exactly one module wins a
waiting order. It cannot be undone on the wire, so what happens to the orders of a console that
dies is written, like the heartbeats of :mod:`core.dataservices.fleet`, as events on the same
Data Services (topic :data:`CLAIM_TOPIC`, ``associationId`` = the order id, ``actorId`` = the
console process). The event log's order (``createdDateUtc``, then arrival) decides; nothing
passes between consoles directly.

Marks, in the order the server stored them:

* ``claim``: the console that won try-assign holds the order (the first claim counts);
* ``start``: the holder is about to start the order's first step on an instrument. Only the
  holder's first ``start`` counts; from then on the order is *started* and is never moved: if its
  console dies, its outcome is unknown and an operator decides.
* ``takeover``: a console takes an unstarted order from ``previous`` (the holder it saw). It
  counts only if ``previous`` is still the holder at that point of the log and the order is not
  started, so of several consoles racing to take the same order exactly one wins, and a takeover
  racing a start is decided by which one the server stored first.

A console renews every claim it holds with each heartbeat (the ``held`` list of its beat). An
order assigned to a console module, not started, and held by no live console for a whole lease
is taken over by a console that can run it (:meth:`Leases.takeable`). Each console checks its
``start`` mark (:meth:`Leases.start`) before the first step: a console that lost the order meanwhile
(it was too slow to renew) drops its copy instead of running it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from core.dataservices.client import DataServicesClient
from core.dataservices.fleet import ModuleBeat
from core.dataservices.models import EventMessage
from core.orders import Order

log = logging.getLogger(__name__)

CLAIM_TOPIC = "labconsole.order.claim"
MarkKind = Literal["claim", "start", "takeover"]


@dataclass(frozen=True)
class ClaimMark:
    order_id: str
    kind: MarkKind
    module_id: str
    instance: str
    previous: str | None = None
    """For a takeover: the holder (console process) it replaces; None if the order had none."""
    at: float = 0.0
    """When the server stored it (epoch seconds)."""

    def event(self) -> dict[str, object]:
        return {"topic": CLAIM_TOPIC, "associationId": self.order_id, "actorId": self.instance,
                "moduleId": self.module_id, "subjects": [self.order_id],
                "data": json.dumps({"kind": self.kind, "module_id": self.module_id,
                                    "instance": self.instance, "previous": self.previous},
                                   separators=(",", ":"))}

    @classmethod
    def from_event(cls, event: EventMessage) -> ClaimMark | None:
        try:
            raw = json.loads(event.data or "")
            kind = str(raw["kind"])
            if kind not in ("claim", "start", "takeover") or not event.associationId:
                return None
            previous = raw.get("previous")
            created = event.createdDateUtc
            return cls(order_id=event.associationId, kind=kind,  # type: ignore[arg-type]
                       module_id=str(raw["module_id"]), instance=str(raw["instance"]),
                       previous=str(previous) if previous is not None else None,
                       at=created.timestamp() if created is not None else 0.0)
        except (ValueError, TypeError, KeyError, AttributeError):
            return None


@dataclass(frozen=True)
class Holding:
    """What the marks of one order say, read in the server's order."""

    holder: str | None = None
    """The console process that holds it."""
    module_id: str | None = None
    started: bool = False
    since: float = 0.0
    """When the holder got it (its claim or takeover mark), or when it started."""


def walk(marks: Iterable[ClaimMark]) -> Holding:
    """The holder of an order after its marks, in the order the server stored them."""
    h = Holding()
    for m in marks:
        if h.started:
            break
        claims = (m.kind == "claim" and h.holder is None) or (m.kind == "takeover" and m.previous == h.holder)
        if claims:
            h = Holding(m.instance, m.module_id, False, m.at)
        elif m.kind == "start" and m.instance == h.holder:
            h = Holding(m.instance, m.module_id, True, m.at)
    return h


class Leases:
    """One console's side of the claim marks on a shared Data Services."""

    def __init__(self, client: DataServicesClient, module_id: str, instance: str, *, lease: float,
                 now: Callable[[], float]) -> None:
        self.client, self.module_id, self.instance = client, module_id, instance
        self.lease, self.now = lease, now
        self._unknown_told: set[str] = set()
        self._markless: dict[str, float] = {}
        """Orders seen assigned without any mark, and when first: a console that won try-assign
        a moment ago has not posted its claim yet, so these wait a lease too."""

    async def marks(self, order_id: str) -> list[ClaimMark]:
        events = await self.client.query_events(topic=CLAIM_TOPIC, association_id=order_id, limit=1000)
        return [m for m in (ClaimMark.from_event(e) for e in events) if m is not None]

    async def holding(self, order_id: str) -> Holding:
        return walk(await self.marks(order_id))

    async def _mark(self, order_id: str, kind: MarkKind, previous: str | None = None) -> Holding:
        await self.client.publish_event(ClaimMark(order_id, kind, self.module_id, self.instance,
                                                  previous).event())
        return await self.holding(order_id)

    async def claim(self, order_id: str) -> bool:
        """After winning try-assign: record the claim; False if another console took it first."""
        return (await self._mark(order_id, "claim")).holder == self.instance

    async def start(self, order_id: str) -> Holding:
        """Before the first step: True (in ``.started`` with this holder) if this console may start it."""
        return await self._mark(order_id, "start")

    def may_start(self, h: Holding) -> bool:
        return h.started and h.holder == self.instance

    async def take(self, order_id: str, seen: Holding) -> bool:
        """Take an unstarted order from the holder seen; True if this console won it."""
        return (await self._mark(order_id, "takeover", seen.holder)).holder == self.instance

    async def takeable(self, consoles: Sequence[ModuleBeat], orders: Iterable[Order],
                       wanted: Callable[[Order], bool]) -> list[tuple[Order, Holding]]:
        """Orders this console may take over now, with what their marks said. One this console
        holds already (``holder`` is its instance) is its own, won just before it died and
        restarted without a copy of it: it adopts it without a takeover.

        ``consoles``: recent heartbeats. ``orders``: waiting or executing orders of the Data
        Services. An order qualifies when it is assigned to a console module that does not host
        the Data Services itself (embedded: its orders go down with it), was not created by
        that console itself (its own runs and steps), is held by no live console, has no mark
        younger than a lease, is not started, and ``wanted`` says this console can run it.
        """
        t = self.now()
        latest: dict[str, ModuleBeat] = {}
        for beat in consoles:
            if beat.instance not in latest or beat.at >= latest[beat.instance].at:
                latest[beat.instance] = beat
        modules = {b.module_id for b in latest.values()}
        live = {b.module_id for b in latest.values() if b.alive_until > t}
        live_held = {oid for b in latest.values() if b.alive_until > t for oid in b.held}
        hosts = {b.module_id for b in latest.values() if b.hosts_data_services}
        out = []
        for order in orders:
            oid, owner = order.identifier or "", order.assignedTo or ""
            if not oid or owner not in modules or owner in hosts or oid in live_held:
                continue
            if (order.createdBy or "").startswith(f"{owner} ") or not wanted(order):
                continue
            marks = await self.marks(oid)
            h = walk(marks)
            if not marks:
                if self._markless.setdefault(oid, t) > t - self.lease:
                    continue
            elif max(m.at for m in marks) > t - self.lease:
                continue
            if h.started:  # finished there and not reported yet, or lost with its console
                if owner not in live and oid not in self._unknown_told:
                    self._unknown_told.add(oid)
                    log.warning("order %s had started on %s, whose console is gone: its outcome is "
                                "unknown, it stays there for an operator to decide", oid, h.module_id)
                continue
            out.append((order, h))
        return out
