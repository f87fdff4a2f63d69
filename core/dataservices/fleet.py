"""Several consoles on one Data Services: each a module with its own id, seen through events.

Every console posts a heartbeat event (topic :data:`HEARTBEAT_TOPIC`, ``moduleId`` = its module
id) to the Data Services event log every third of its lease: which templates and capabilities it
has, its queue depth, running orders and instruments. Nothing passes between consoles but these
events on the Data Services they share — no cluster protocol of their own.

- At start, a console looks for heartbeats of its module id from another process within the
  lease: if there is one, it refuses to start, naming that process (host, pid, how long ago).
  A console that stops posts a last heartbeat with lease 0, so its id is free at once.
- :func:`fleet` lists the modules that posted recently (alive, stale or stopped, with what their
  last beat said): the console's Fleet panel, read-only.

Times in heartbeats are the sender's clock; clocks of the lab's PCs are assumed to agree within
a few seconds (NTP), far less than the default lease of 60 s.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from core.dataservices.backend import DataServicesBackend
from core.dataservices.models import EventMessage
from core.errors import ConfigError
from core.wire import format_datetime

log = logging.getLogger(__name__)

HEARTBEAT_TOPIC = "labconsole.module.heartbeat"
DEFAULT_LEASE = 60.0


@dataclass(frozen=True)
class ModuleBeat:
    """One heartbeat of one console (module)."""

    module_id: str
    instance: str
    """Unique per console and data directory (kept in its store): a console restarted on the same
    data directory is the same instance, and keeps its module id and its claims at once; a second
    console, elsewhere, is another."""
    host: str
    pid: int
    at: float
    lease: float
    """Seconds this beat holds the module id; 0: the console stopped."""
    templates: tuple[str, ...] = ()
    """``name@version`` of the templates it runs."""
    capabilities: tuple[str, ...] = ()
    queue_depth: int = 0
    running: int = 0
    instruments: dict[str, str] = field(default_factory=dict)
    """Instrument id -> state (Ready, Busy, Error, Offline ...)."""
    held: tuple[str, ...] = ()
    """Data Services order ids this console holds (claimed and not finished): each beat renews
    their leases (see :mod:`core.dataservices.leases`)."""
    running_orders: tuple[str, ...] = ()
    """Of those, the ones whose first step has started there (they are never moved)."""
    workcell: str = ""
    """The name of its workcell (its workcell file's ``name``)."""
    hosts_data_services: bool = False
    """This console runs the Data Services the others share (embedded mode): its orders live in
    its own store and the Data Services stops with it, so they are never taken over."""

    @property
    def alive_until(self) -> float:
        return self.at + self.lease

    def event(self) -> dict[str, Any]:
        return {"topic": HEARTBEAT_TOPIC, "moduleId": self.module_id, "actorId": self.instance,
                "start": datetime.fromtimestamp(self.at, UTC).isoformat(),
                "data": json.dumps(asdict(self), separators=(",", ":"))}

    @classmethod
    def from_event(cls, event: EventMessage) -> ModuleBeat | None:
        """The beat in ``event``, or None for an event that is not a well-formed heartbeat."""
        try:
            raw = json.loads(event.data or "")
            return cls(module_id=str(raw["module_id"]), instance=str(raw["instance"]), host=str(raw["host"]),
                       pid=int(raw["pid"]), at=float(raw["at"]), lease=float(raw["lease"]),
                       templates=tuple(str(t) for t in raw.get("templates", ())),
                       capabilities=tuple(str(c) for c in raw.get("capabilities", ())),
                       queue_depth=int(raw.get("queue_depth", 0)), running=int(raw.get("running", 0)),
                       instruments={str(k): str(v) for k, v in dict(raw.get("instruments", {})).items()},
                       held=tuple(str(o) for o in raw.get("held", ())),
                       running_orders=tuple(str(o) for o in raw.get("running_orders", ())),
                       workcell=str(raw.get("workcell", "")),
                       hosts_data_services=raw.get("hosts_data_services") is True)
        except (ValueError, TypeError, KeyError, AttributeError):
            return None


Describe = Callable[[], Mapping[str, Any]]
"""What a heartbeat says besides who: templates, capabilities, queue_depth, running, instruments,
held, running_orders, workcell, hosts_data_services."""


class EventLog(Protocol):
    """Where heartbeats go and are read: a :class:`DataServicesClient` (over HTTP), or
    :class:`LocalEvents` (the console's own embedded Data Services, in-process)."""

    async def publish_event(self, event: Mapping[str, Any]) -> str: ...

    async def query_events(self, *, topic: str | None = None, start: datetime | None = None,
                           module_id: str | None = None, limit: int = 100,
                           offset: int = 0) -> list[EventMessage]: ...


class LocalEvents:
    """The event log of the console's own (embedded) Data Services, read and written in-process:
    an embedded console posts its heartbeats there without a request to itself."""

    def __init__(self, backend: DataServicesBackend) -> None:
        self.backend = backend

    async def publish_event(self, event: Mapping[str, Any]) -> str:
        return await self.backend.publish_event(dict(event))

    async def query_events(self, *, topic: str | None = None, start: datetime | None = None,
                           module_id: str | None = None, limit: int = 100,
                           offset: int = 0) -> list[EventMessage]:
        search = {"topic": topic, "moduleId": module_id, "start": format_datetime(start) if start else None}
        rows = await asyncio.to_thread(self.backend.query_events, {k: v for k, v in search.items() if v},
                                       limit=limit, offset=offset)
        return [EventMessage.from_dict(json.loads(r), source="Data Services event") for r in rows]


class ModuleIdentity:
    """This console's module id on a shared Data Services: claimed at start, kept by heartbeats."""

    def __init__(self, client: EventLog, module_id: str, *, lease: float = DEFAULT_LEASE,
                 describe: Describe | None = None, now: Callable[[], float] = time.time,
                 instance: str | None = None) -> None:
        if lease <= 0:
            raise ConfigError.at(f"must be more than 0 seconds, not {lease:g}", field="DATA SERVICES.lease")
        self.client, self.module_id, self.lease = client, module_id, lease
        self.describe = describe or (lambda: {})
        self.now = now
        self.instance = instance or uuid.uuid4().hex
        self.host, self.pid = socket.gethostname(), os.getpid()

    def beat(self, lease: float | None = None) -> ModuleBeat:
        extra = dict(self.describe())
        return ModuleBeat(module_id=self.module_id, instance=self.instance, host=self.host, pid=self.pid,
                          at=self.now(), lease=self.lease if lease is None else lease,
                          templates=tuple(extra.get("templates", ())),
                          capabilities=tuple(extra.get("capabilities", ())),
                          queue_depth=int(extra.get("queue_depth", 0)), running=int(extra.get("running", 0)),
                          instruments=dict(extra.get("instruments", {})),
                          held=tuple(extra.get("held", ())),
                          running_orders=tuple(extra.get("running_orders", ())),
                          workcell=str(extra.get("workcell", "")),
                          hosts_data_services=bool(extra.get("hosts_data_services", False)))

    async def claim(self) -> None:
        """Refuse (ConfigError) if another console holds this module id; else post a heartbeat."""
        now = self.now()
        latest: dict[str, ModuleBeat] = {}  # per console process: only its latest beat counts
        for beat in await recent_beats(self.client, now - 2 * self.lease, module_id=self.module_id):
            if beat.instance not in latest or beat.at >= latest[beat.instance].at:
                latest[beat.instance] = beat
        for other in latest.values():
            if other.instance != self.instance and other.alive_until > now:
                raise ConfigError.at(
                    f"module id {self.module_id!r} is in use by another console on this Data Services "
                    f"({other.host}, pid {other.pid}, last heartbeat {max(0.0, now - other.at):.0f} s "
                    "ago); give this console its own [DATA SERVICES] module_id, or stop the other",
                    field="DATA SERVICES.module_id")
        await self.client.publish_event(self.beat().event())

    async def run(self) -> None:
        """Post a heartbeat every third of the lease (until cancelled)."""
        while True:
            await asyncio.sleep(self.lease / 3)
            try:
                await self.client.publish_event(self.beat().event())
            except Exception as exc:  # noqa: BLE001 - an outage must not end the heartbeats
                log.warning("heartbeat of module %s not posted: %s", self.module_id, exc)

    async def leave(self) -> None:
        """Free the module id at once (a last heartbeat with lease 0)."""
        try:
            await self.client.publish_event(self.beat(lease=0.0).event())
        except Exception as exc:  # noqa: BLE001 - stopping goes on; the lease runs out by itself
            log.warning("module %s: last heartbeat not posted: %s", self.module_id, exc)


async def recent_beats(client: EventLog, since: float, *, module_id: str | None = None,
                       page: int = 500) -> list[ModuleBeat]:
    """Heartbeats posted at or after ``since`` (epoch seconds), oldest first."""
    start = datetime.fromtimestamp(since, UTC)
    out: list[ModuleBeat] = []
    offset = 0
    while True:
        events = await client.query_events(topic=HEARTBEAT_TOPIC, start=start, module_id=module_id,
                                           limit=page, offset=offset)
        out += [b for b in (ModuleBeat.from_event(e) for e in events) if b is not None]
        if len(events) < page:
            return out
        offset += page


@dataclass(frozen=True)
class FleetModule:
    """A console as the fleet view shows it: its latest heartbeat and whether it is alive."""

    beat: ModuleBeat
    alive: bool
    seen: float = 0.0
    """When this was read (epoch seconds): the heartbeat's age is ``seen - beat.at``."""

    @property
    def state(self) -> str:
        """``alive`` (its lease holds), ``stopped`` (it left: a last beat with lease 0) or
        ``stale`` (its heartbeats stopped without a goodbye: killed, hung or cut off)."""
        if self.alive:
            return "alive"
        return "stopped" if self.beat.lease == 0 else "stale"


def latest_modules(beats: Iterable[ModuleBeat], *, lease: float = DEFAULT_LEASE,
                   now: float) -> list[FleetModule]:
    """The latest beat of every module among ``beats`` posted in the last two leases, by id."""
    latest: dict[str, ModuleBeat] = {}
    for beat in beats:
        if beat.at < now - 2 * lease:
            continue
        if beat.module_id not in latest or beat.at >= latest[beat.module_id].at:
            latest[beat.module_id] = beat
    return [FleetModule(b, b.alive_until > now, now) for _, b in sorted(latest.items())]


async def fleet(client: EventLog, *, lease: float = DEFAULT_LEASE,
                now: Callable[[], float] = time.time) -> list[FleetModule]:
    """Every module that posted a heartbeat in the last two leases, by module id."""
    t = now()
    return latest_modules(await recent_beats(client, t - 2 * lease), lease=lease, now=t)
