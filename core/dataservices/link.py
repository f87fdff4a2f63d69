"""The console as a Data Services module: orders in, status and outputs out.

Two modes:

* **embedded** (no URL configured): labconsole starts its own Data Services on 127.0.0.1, backed
  by the console's store. Orders other programs create there live in the same ``orders`` table,
  so nothing needs copying; the link adopts the ones meant for labconsole and runs them.
* **remote** (``[DATA SERVICES] url`` or ``--data-services-url``): labconsole talks to that server
  as a client. Adopted remote orders get a local mirror; local runs and steps are created there
  too (with their parent links), and every local change is delivered in order.

**Inbound (both modes).** Every ``poll_interval`` the link reads ``UnassignedOrders`` and claims
(atomic try-assign to ``module_id``) those whose template is one of labconsole's workflow
templates (→ a run whose parent is that order) or one of the workcell's capabilities or
instruments (→ a single job on the dispatcher). When the run or job ends, the order gets its
outputs and Complete, or Error with the reason. One bad order never stops the others: an order
that cannot be read (e.g. text with a lone surrogate, stored by an older version) or that the
server refuses to hand over is skipped, logged once with its id and the reason, and counted in
:attr:`LinkState.skipped` / :attr:`LinkState.pickup_error` (shown in the status bar).

In embedded mode the link does not poll its own server: the server announces each committed
change (:class:`~core.dataservices.backend.ServerChange`) on the console's loop, a change that
leaves an order waiting and unassigned (a new order, a reset, an assignment cleared) or changes
a template wakes the link, and it reads the waiting orders and claims them in-process, without
HTTP. It also reads them every :data:`EMBEDDED_SWEEP` seconds, for orders due again after a
refusal and orders written to the store by another process. In remote mode it polls every
``poll_interval``.

**Outbound (remote mode): the transition log is the outbox.** The store's append-only
``transitions`` table already holds every change in commit order, durably. The link keeps a
cursor (``meta.ds_outbox_cursor``) and delivers each transition after it: create the remote
order if it has none yet (the local order id is the idempotency key, so a resend after a lost
answer or a restart is not doubled), claim it for labconsole, set outputs, set the status; then
advance the cursor. When Data Services is unreachable the cursor stops, the console keeps
working, and the outbox depth is the number of transitions after the cursor; once the server
answers again everything is delivered in order. Nothing is lost (the log is durable) and
nothing is doubled (creates are keyed, status and outputs are idempotent).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import re
import sqlite3
import time
import uuid
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from packaging.specifiers import SpecifierSet

from core.dataservices.backend import EXECUTING_STATUSES, WAITING_STATUSES, ServerChange
from core.dataservices.client import V2, V3, DataServicesClient
from core.dataservices.config import DataServicesSettings
from core.dataservices.errors import CreateOutcomeUnknownError
from core.dataservices.fleet import (
    DEFAULT_LEASE,
    HEARTBEAT_TOPIC,
    EventLog,
    FleetModule,
    LocalEvents,
    ModuleIdentity,
    latest_modules,
    recent_beats,
)
from core.dataservices.leases import Holding, Leases
from core.dataservices.models import OrderTemplate, json_text_problem
from core.dataservices.server import EmbeddedDataServices, ServerLimits, check_exposure
from core.dispatcher import instrument_state
from core.engine import check_inputs, to_parameter
from core.errors import DataServicesError, InputError, LabconsoleError, OrderNotFoundError
from core.events import OrderStatusChanged
from core.orders import TERMINAL_STATUSES, Order, OrderStatus, Parameter, SchedulingStrategy
from core.store import ORDER_ROW_COLUMNS
from core.tasks import Supervisor

if TYPE_CHECKING:
    from core.runtime import Runtime

log = logging.getLogger(__name__)
_LOCAL_ORDER_ID = re.compile(r"Order_\d{5,}")
"""A console's own order ids (``core.store``), as its copies on Data Services name them."""

MODULE_ID = "labconsole"
SCRIPT_DRIVEN_TAG = "script-driven"
"""A template with this tag is registered with Data Services, but its orders are left to the
script that created them (the parent "workflow order" of Biosero's OrderScheduler pattern); the
console runs it only when started from the console itself."""
CURSOR_KEY = "ds_outbox_cursor"
VANISHED_KEY = "ds_vanished:"
"""Prefix of the meta key holding, per local order, the last remote twin that vanished."""
SKIP_CREATORS = ("demo",)
"""Orders made by these creators (demo history) are not sent to a remote Data Services."""
PICKUP_BATCH = 200
PICKUP_RETRY = 60.0
PAGE = 1000
SWEEP_EVERY = 10
"""Every this many reclaim rounds (a third of a lease each), a thorough one."""
SWEEP_LEASES = 100
"""How far back (in leases) a thorough round looks for consoles that are gone."""
WORKFLOW_ENGINE_NAMES = frozenset({"workflow execution engine"})
"""Restrictions any labconsole takes as naming itself (Biosero's SDK sets this one)."""
EMBEDDED_SWEEP = 30.0
"""Embedded mode: seconds between reads of the waiting orders when the server announced nothing."""
DROP_WAIT = 30.0
"""Seconds before an order the server refused to hand over is tried again."""
INSTANCE_KEY = "ds_instance"
"""This console's instance id on a shared Data Services (kept in the store, so a console restarted
on the same data directory is the same instance and keeps its claims)."""
LOST_PREFIX = "ds_lost:"
"""meta keys of adopted orders another console took over: never answered from here."""
JOB_PREFIX = "ds_job:"
"""meta keys of module jobs (capability orders) claimed and not answered yet, written before the
job is queued: a restarted console finds them (:meth:`DataServicesLink._resume_module_jobs`)."""
OWNER_PREFIX = "ds_owner:"
"""meta keys of those orders: the module id of the console that took each over."""
HEARTBEATS_KEPT = 86_400.0
"""Embedded mode: seconds heartbeats stay in the console's own Data Services (at least
``SWEEP_LEASES`` leases); a heartbeat says nothing once its lease is over, and one every third of
a lease would otherwise grow the store by megabytes a day."""
ROW_STATUS = ORDER_ROW_COLUMNS.index("status")
ROW_ASSIGNED = ORDER_ROW_COLUMNS.index("assigned_to")


@dataclass
class LinkState:
    mode: str
    url: str
    connected: bool = False
    error: str | None = None
    outbox: int = 0
    adopted: int = 0
    delivered: int = 0
    skipped: int = 0
    """Orders meant for labconsole that are currently not picked up (unreadable or refused)."""
    pickup_error: str | None = None
    """The latest such failure: ``<order id>: <reason>``."""

    def describe(self) -> str:
        if self.mode == "embedded":
            text = f"Data Services: embedded at {self.url}"
        else:
            state = "connected" if self.connected else f"unreachable ({self.error})" if self.error else "connecting"
            text = f"Data Services {self.url}: {state} · outbox {self.outbox}"
        if self.skipped:
            text += f" · {self.skipped} order{'s' if self.skipped != 1 else ''} not picked up " \
                    f"(latest {self.pickup_error})"
        return text


class DataServicesLink:
    """See the module docstring. ``runtime`` is a :class:`core.runtime.Runtime`."""

    def __init__(self, runtime: Runtime, settings: DataServicesSettings | None = None, *,
                 module_id: str = MODULE_ID, poll_interval: float = 1.0, port: int = 8105,
                 host: str = "127.0.0.1", token: str | None = None, timeout: float = 5.0,
                 limits: ServerLimits | None = None, lease: float = DEFAULT_LEASE,
                 backlog: int | None = None, compatible: Mapping[str, SpecifierSet] | None = None) -> None:
        self.runtime = runtime
        self.settings = settings
        self.module_id = module_id
        self.poll_interval = poll_interval
        self.server: EmbeddedDataServices | None = None
        self._port, self._host, self._token, self._timeout = port, host, token, timeout
        self._limits = limits
        self._skipped: dict[str, tuple[str, float]] = {}
        """order id -> (reason, loop time after which it is tried again) for orders not picked up."""
        self.client: DataServicesClient | None = None
        self.state = LinkState("remote" if settings else "embedded", settings.url if settings else "")
        self.tasks = Supervisor("data-services")
        self._wake = asyncio.Event()
        self._adopting = asyncio.Lock()
        """Held while a remote order's local mirror is created and linked (remote mode)."""
        self._watch: dict[str, str] = {}
        """local run/job id -> the order it answers (embedded: same store; remote: via ds_links)."""
        self.on_state: Callable[[LinkState], None] | None = None
        self.lease = lease
        self.backlog = backlog
        """At most this many claimed orders not started yet (remote mode): the rest stay on the
        Data Services for other consoles. Default: twice the instruments' capacity, at least 4."""
        self.identity: ModuleIdentity | None = None
        """This console's module id on a shared (remote) Data Services, kept by heartbeats."""
        self.leases: Leases | None = None
        """Its claims as leases on that Data Services (remote mode)."""
        self._held: dict[str, str] = {}
        """local mirror id -> Data Services order id, for every adopted order not finished."""
        self._started: set[str] = set()
        """Mirrors whose start this console recorded (and so may run every step of)."""
        self._lost: set[str] = set()
        """Mirrors another console took over: not run, not answered from here."""
        self._module_jobs: set[str] = set()
        self.taken_over = 0
        self.compatible: dict[str, SpecifierSet] = {k.lower(): v for k, v in (compatible or {}).items()}
        """Template name (lower case) -> the versions this console also runs orders for, with its
        latest (``[DATA SERVICES] compatible``, :func:`core.dataservices.config.compatible_from_ini`)."""
        self._beats: list[Any] = []
        self._all_beats: list[Any] = []
        self._fleet_at = 0.0
        """When the heartbeats were last read (epoch seconds; 0: never)."""
        self._lost_to: dict[str, str] = {}
        """Mirrors another console took over -> its module id."""
        self._told: dict[str, str] = {}
        self._v3_unassigned = True
        self._no_run: list[str] = []
        """Orders this console took over from consoles that were gone."""
        self.wakeups = 0
        """Embedded mode: server changes that woke the inbound loop (a waiting order to look at)."""
        self.polls = 0
        """Reads of the waiting orders (:meth:`poll_once`)."""
        self.outbox_busy = 0.0
        """Remote mode: seconds the outbox spent delivering (its rounds that sent something); the
        outbox delivers one request after another, so near the console's uptime it bounds how
        fast this console's orders reach the Data Services."""

    @property
    def embedded(self) -> bool:
        return self.settings is None

    # ------------------------------------------------------------------ lifecycle

    def check(self) -> None:
        """Refuse a configuration that cannot start (ConfigError) before anything else starts."""
        if self.embedded:
            check_exposure(self._host, self._token, field="--bind")

    async def claim_module_id(self) -> None:
        """Claim this console's module id on its Data Services (ConfigError if another console
        holds it); the runtime calls this before any instrument moves. Embedded, the heartbeats go
        into the console's own Data Services in-process, so consoles that share it see this one."""
        if self.identity is not None:
            return
        if self.embedded:
            self.server = self.server or self._embedded_server()
            identity = ModuleIdentity(LocalEvents(self.server.backend), self.module_id, lease=self.lease,
                                      describe=self._describe, instance=await self._instance())
            await identity.claim()
            self.identity = identity
            return
        self.client = self.client or DataServicesClient(self.settings.url if self.settings else "",
                                                        timeout=self._timeout, token=self._token)
        instance = await self._instance()
        identity = ModuleIdentity(self.client, self.module_id, lease=self.lease, describe=self._describe,
                                  instance=instance)
        await identity.claim()
        self.identity = identity
        self.leases = Leases(self.client, self.module_id, instance, lease=self.lease, now=time.time)
        # before the engine resumes anything: which adopted orders are still this console's
        await self._restore_watches()
        await self._restore_held()
        await self._check_held()
        if self.runtime.dispatcher is not None:
            self.runtime.dispatcher.admit = self._admit

    async def _instance(self) -> str:
        def op(c: sqlite3.Connection) -> str:
            row = c.execute("SELECT value FROM meta WHERE key = ?", (INSTANCE_KEY,)).fetchone()
            if row:
                return str(row[0])
            value = uuid.uuid4().hex
            c.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (INSTANCE_KEY, value))
            return value

        return await self.runtime.store.write(op)

    async def _restore_held(self) -> None:
        """Adopted orders not finished (held), and those another console took over (lost)."""
        def read(c: sqlite3.Connection) -> tuple[list[tuple[str, str, str]], list[str], list[tuple[str, str]],
                                                 dict[str, str]]:
            held = c.execute("SELECT l.local_id, l.remote_id, o.data FROM ds_links l "
                             "JOIN orders o ON o.id = l.local_id WHERE l.adopted = 1").fetchall()
            lost = [k[len(LOST_PREFIX):] for (k,) in c.execute(
                "SELECT key FROM meta WHERE key LIKE ?", (LOST_PREFIX + "%",)).fetchall()]
            owners = {k[len(OWNER_PREFIX):]: v for k, v in c.execute(
                "SELECT key, value FROM meta WHERE key LIKE ?", (OWNER_PREFIX + "%",)).fetchall()}
            runs = c.execute("SELECT o.id, o.parent_id FROM orders o JOIN ds_links l ON l.local_id = o.parent_id "
                             "WHERE l.adopted = 1 AND o.id IN (SELECT run_id FROM runs)").fetchall()
            return held, lost, runs, owners

        held, lost, runs, owners = await self.runtime.store.read(read)
        self._lost = set(lost)
        self._lost_to.update(owners)
        for run_id, answer in runs:  # a console stopped between creating the run and its watch
            if run_id not in self._watch:
                self._watch[run_id] = answer
                await self._save_watch(run_id, answer)
        with_run = set(self._watch.values())
        names = {n.lower() for n in self.runtime.engine.templates.names()}
        for local_id, remote_id, data in held:
            order = Order.model_validate_json(data)
            if local_id not in self._lost and order.status not in TERMINAL_STATUSES | {OrderStatus.Error}:
                self._held[local_id] = remote_id
                if local_id not in with_run and (order.templateName or "").lower() in names:
                    self._no_run.append(local_id)  # stopped before its run existed: started in start()

    def _describe(self) -> dict[str, Any]:
        rt = self.runtime
        views = rt.dispatcher.view() if rt.dispatcher is not None else []
        runnable = [t for t in rt.templates() if self._runnable(t)]
        if self.embedded:  # the orders it answers live in this console's store: no leases, no marks
            held = set(self._watch.values()) | self._module_jobs
            jobs = [j for i in rt.dispatcher.instruments.values() for j in i.running.values()] \
                if rt.dispatcher is not None else []
            running = {self._watch.get(j.run_id or "", j.order_id) for j in jobs} & held
        else:
            held = set(self._held.values())
            running = {r for local, r in self._held.items() if local in self._started}
        return {"templates": [f"{t.name}@{v}" for t in runnable for v in rt.engine.templates.versions(t.name)],
                "capabilities": sorted({c for v in views for c in v.capabilities}),
                "queue_depth": len(rt.dispatcher.queue) if rt.dispatcher is not None else 0,
                "running": sum(len(v.running) for v in views),
                "instruments": {v.id: instrument_state(v) for v in views},
                "held": sorted(held), "running_orders": sorted(running),
                "workcell": rt.workcell.name if rt.workcell is not None else "",
                "hosts_data_services": self.embedded}

    async def fleet(self, max_age: float = 0.0) -> list[FleetModule]:
        """The consoles on this Data Services (read-only; the latest heartbeat of each that posted
        in the last two leases), this one included. Heartbeats read less than ``max_age``
        seconds ago (by this call or the reclaim rounds) are not read again."""
        if self._event_log() is None:
            return []
        if not self._fleet_at or time.time() - self._fleet_at > max_age:
            await self._refresh_fleet()
        return latest_modules(self._all_beats, lease=self.lease, now=time.time())

    def is_foreign(self, assigned_to: str | None) -> bool:
        """Does ``assignedTo`` name a module other than this console (not its module id, not one
        of its instruments)?"""
        if not assigned_to or assigned_to == self.module_id:
            return False
        cell = self.runtime.workcell
        return cell is None or assigned_to not in {i.id for i in cell.instruments}

    def lost_owner(self, order_ids: Iterable[str]) -> str | None:
        """The module id of the console that took over this console's copy of an order (any of
        ``order_ids``: the order, its run, the order that run answers), or None."""
        return next((self._lost_to[i] for i in order_ids if i in self._lost_to), None)

    async def owner_of(self, order_ids: list[str], assigned_to: str | None) -> FleetModule | str | None:
        """The other workcell that owns an order: the console that took it over from this one
        (``order_ids``: the order, its run and the order that run answers), or the console
        module its ``assignedTo`` names. A :class:`FleetModule` when that console posted
        heartbeats lately, its module id when not, None for an order of this console."""
        owner = self.lost_owner(order_ids)
        if owner is None and not self.is_foreign(assigned_to):
            return None
        try:
            modules = {m.beat.module_id: m for m in await self.fleet(max_age=self.lease / 3)}
        except DataServicesError as exc:
            log.info("Data Services: consoles not read: %s", exc.cause)
            modules = {}
        if owner is not None:
            return modules.get(owner, owner)
        return modules.get(assigned_to or "")

    def _embedded_server(self) -> EmbeddedDataServices:
        from core.dataservices.inbox_routes import inbox_routes

        return EmbeddedDataServices(self.runtime.store, host=self._host, port=self._port, token=self._token,
                                    limits=self._limits, on_change=self._on_server_change,
                                    extra_routes=inbox_routes(lambda: getattr(self.runtime.engine, "inbox", None)))

    async def start(self) -> str:
        """Start the embedded server or connect to the remote one; register templates; start the loops."""
        await self.claim_module_id()
        if self.embedded:
            self.server = self.server or self._embedded_server()
            url = await self.server.start()
            self.state.url = url
            self.state.connected = True
        else:
            url = self.settings.url if self.settings else ""
        self.client = self.client or DataServicesClient(url, timeout=self._timeout, token=self._token)
        if self.identity is not None:
            self.tasks.spawn(self.identity.run(), "heartbeat")
        if self.embedded:
            self.tasks.spawn(self._prune_loop(), "heartbeats kept")
        if self.leases is not None:
            await self._refresh_fleet()
            for local_id in sorted(self._lost):
                await self._drop(local_id)
            for local_id in self._no_run:
                if local_id in self._held:
                    mirror = self.runtime.store.get_order(local_id)
                    await self._start_run(local_id, mirror,
                                          self._version_for(mirror, mirror.templateName or "") or None)
            self.tasks.spawn(self._reclaim_loop(), "reclaim")
        self.runtime.ledger.bus.subscribe(self._on_status, OrderStatusChanged)
        await self._restore_watches()
        self._answer_ended_runs()
        await self._resume_module_jobs()
        if self.embedded:  # our own server: the templates are there before anyone asks
            await self.register_templates()
        self.tasks.spawn(self._inbound_loop(), "inbound")
        if not self.embedded:
            self.tasks.spawn(self._outbound_loop(), "outbound")
        return url

    async def stop(self) -> None:
        await self.tasks.close()
        if self.identity is not None:
            await self.identity.leave()
            self.identity = None
        if self.client is not None:
            await self.client.close()
        if self.server is not None:
            await self.server.stop()

    def describe(self) -> str:
        return self.state.describe()

    def _changed(self) -> None:
        if self.on_state is not None:
            self.on_state(self.state)

    # ------------------------------------------------------------------ templates

    def _templates(self) -> list[OrderTemplate]:
        out = []
        for t in self.runtime.templates():
            inputs = [Parameter(name=p.name, value="" if p.default is None else str(p.default),
                                valueType={"integer": "Integer", "double": "Double", "boolean": "Boolean"}
                                .get(p.type.value, "String"), description=p.description or None)
                      for p in t.inputs]
            out.append(OrderTemplate(name=t.name, category="labconsole workflow",
                                     description=t.description or f"labconsole workflow v{t.version}",
                                     availableModuleIds=self.module_id, inputParameters=inputs))
        return out

    async def register_templates(self) -> int:
        assert self.client is not None
        templates = self._templates()
        for template in templates:
            await self.client.register_template(template)
        return len(templates)

    # ------------------------------------------------------------------ inbound

    def _wanted(self, order: Order) -> str | None:
        """'workflow', 'module' or None: is this order for labconsole?"""
        return self.route(order)[0]

    def _copy_of_another_console(self, order: Order) -> bool:
        """Whether ``order`` is a console's copy of one of its own orders (``createdBy`` "<module
        id> <local order id>", as :meth:`_deliver` writes it). Such a copy is created unassigned
        and claimed by its console right after: another console must not claim it meanwhile."""
        creator, _, local = (order.createdBy or "").partition(" ")
        if not local or " " in local or creator == self.module_id:
            return False
        return any(b.module_id == creator for b in self._beats) or _LOCAL_ORDER_ID.fullmatch(local) is not None

    def route(self, order: Order) -> tuple[str | None, str | None]:
        """('workflow' | 'module' | None, why not): can this console run ``order``?

        A workflow order needs a published template of that name whose steps' capabilities this
        workcell has; an order with a ``templateVersion`` needs that version, or one this
        console declares compatible (``[DATA SERVICES] compatible``). On a shared Data Services,
        ``restrictToModuleIds`` must name this console's module id, one of its instruments, or
        Biosero's workflow engine ("Workflow Execution Engine", what the SDK sets): the console
        is a workflow engine. "Why not" is a reason worth telling (a version mismatch), else None.
        """
        if (order.createdBy or "").startswith(f"{self.module_id} ") or self._is_ours(order.identifier):
            return None, None  # an order this console created there itself
        if self._copy_of_another_console(order):
            return None, None  # another console's copy of its own run or step, claimed by it
        cell = self.runtime.workcell
        restricted = set(order.restricted_modules)
        instruments = {i.id for i in cell.instruments} if cell is not None else set()
        mine = bool(restricted & instruments) or self.module_id in restricted
        if restricted and not mine and not self.embedded \
                and not {m.lower() for m in restricted} & WORKFLOW_ENGINE_NAMES:
            return None, None  # meant for another module
        name = (order.templateName or "").lower()
        template = self._template(name)
        if template is not None:
            # a parent workflow that scripts drive (seed 000's OrderScheduler pattern) is theirs
            if SCRIPT_DRIVEN_TAG in template.tags:
                return None, None
            if not self._runnable(template):
                return None, None
            if self._version_for(order, template.name) is None:
                asked = requested_version(order)
                if asked is not None and asked < 0:
                    return None, f"asks for {template.name} version {order.templateVersion!r}, not a number"
                return None, f"asks for {template.name} v{asked}"
            return "workflow", None
        if cell is not None:
            capabilities = {c.lower() for c in cell.capabilities}
            if name in capabilities and (not restricted or mine):
                return "module", None
        return None, None

    def _template(self, name: str) -> Any:
        """The latest published template called ``name`` in any case, or None."""
        return next((t for t in self.runtime.templates() if t.name.lower() == name.lower()), None)

    def _runnable(self, template: Any) -> bool:
        """Does this workcell offer every capability the template's steps need?"""
        cell = self.runtime.workcell
        if cell is None:
            return True
        offered = {c.lower() for c in cell.capabilities}
        return all(k.lower() in offered for st in template.steps for k in (st.kind, *st.reserve) if "." in k)

    def _version_for(self, order: Order, name: str) -> int | None:
        """The version of ``name`` this console runs ``order`` with; None if it has none that fits.
        0 means the latest (the order asks for no version)."""
        asked = requested_version(order)
        if asked is None:
            return 0
        versions = self.runtime.engine.templates.versions(name)
        if asked in versions:
            return asked
        compatible = self.compatible.get(name.lower())
        if compatible is not None and asked >= 0 and compatible.contains(str(asked)) and versions:
            return 0
        return None

    async def _tell_waiting(self, order: Order, why: str) -> None:
        """Say on the order (its ``statusDetails``) why no console runs it: the versions each has."""
        assert self.client is not None
        oid = order.identifier or ""
        name = order.templateName or ""
        have = []
        for beat in self._beats:
            versions = [f"v{v}" for n, _, v in (t.rpartition("@") for t in beat.templates)
                        if n.lower() == name.lower()]
            if versions:
                have.append(f"{beat.module_id} has {', '.join(versions)}")
        text = f"waiting: {why}; " + ("; ".join(sorted(set(have))) if have else "no workcell has it")
        if order.statusDetails == text or self._told.get(oid) == text:
            return
        self._told[oid] = text
        try:
            await self.client.update_order(oid, {"statusDetails": text})
        except DataServicesError as exc:
            log.info("order %s: why it waits not written: %s", oid, exc.cause)

    def _on_server_change(self, change: ServerChange) -> None:
        """Embedded mode: the server committed a change (called on this loop). Wake the inbound
        loop when it may have left an order for a module to claim."""
        if change.kind.startswith("template"):
            wake = True
        elif change.kind.startswith("order") and change.row is not None:
            status, assigned = change.row[ROW_STATUS], change.row[ROW_ASSIGNED]
            wake = not assigned and OrderStatus(status) in WAITING_STATUSES
        else:
            wake = False
        if wake:
            self.wakeups += 1
            self._wake.set()

    async def _inbound_loop(self) -> None:
        registered = self.embedded
        while True:
            self._wake.clear()  # a change announced while reading wakes the next read at once
            failed = True
            try:
                if not registered:
                    await self.register_templates()
                    registered = True
                await self.poll_once()
                self._mark(True, None)
                failed = False
            except DataServicesError as exc:
                self._mark(False, exc.cause)
            except Exception:  # noqa: BLE001 - keep the module alive, say why
                log.exception("Data Services inbound poll failed")
            if failed or not self.embedded:  # embedded: a failed read is tried again soon
                await asyncio.sleep(self.poll_interval)
                continue
            due = min((t for _reason, t in self._skipped.values()), default=math.inf)
            wait = max(0.0, min(EMBEDDED_SWEEP, due - asyncio.get_running_loop().time()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    async def poll_once(self) -> list[str]:
        """Claim and start every unassigned order meant for labconsole; return their ids.

        An order that cannot be read, or that the server refuses to hand over, is skipped (see
        :meth:`_pickup_failed`); the others are still picked up. Raises
        :class:`DataServicesError` only when the server cannot be reached at all.
        """
        assert self.client is not None
        self.polls += 1
        adopted = []
        now = asyncio.get_running_loop().time()
        for order in await self._unassigned():
            if self.leases is not None and self.unstarted() >= self._backlog():
                break  # enough claimed here: the others are left to other consoles
            oid = order.identifier or ""
            skipped = self._skipped.get(oid)
            if skipped is not None and now < skipped[1]:
                continue
            kind, why_not = self.route(order)
            if why_not is not None and self.leases is not None:
                await self._tell_waiting(order, why_not)
            if kind is None or not oid:
                continue
            try:
                if not await self._try_assign(oid):
                    continue
            except OrderNotFoundError:  # deleted since the list was read
                continue
            except DataServicesError as exc:
                if not _server_answered(exc):
                    raise  # unreachable: the whole poll fails and the link shows it
                self._pickup_failed(oid, f"the server refused to hand it over: {exc.cause}")
                continue
            except LabconsoleError as exc:  # the embedded server, in-process
                self._pickup_failed(oid, f"the server refused to hand it over: {exc}")
                continue
            self._picked_up(oid)
            if self.leases is not None and not await self.leases.claim(oid):
                continue  # taken over between try-assign and the claim mark: the other runs it
            if await self._adopt_or_report(order, kind):
                adopted.append(oid)
        self.state.adopted += len(adopted)
        return adopted

    async def _try_assign(self, order_id: str) -> bool:
        """Claim ``order_id`` for this module: in-process on the embedded server, else over HTTP."""
        if self.server is not None:
            return await self.server.backend.try_assign(order_id, self.module_id)
        assert self.client is not None
        return await self.client.try_assign(order_id, self.module_id)

    async def _adopt_or_report(self, order: Order, kind: str) -> bool:
        """Adopt ``order``; if labconsole cannot run it, set it to Error with the reason."""
        assert self.client is not None
        oid = order.identifier or ""
        try:
            await self._adopt(order, kind)
            return True
        except LabconsoleError as exc:
            try:
                await self.client.update_order_status(oid, OrderStatus.Error,
                                                      f"labconsole could not run it: {exc}")
            except DataServicesError as report:
                if not _server_answered(report):
                    raise
                self._pickup_failed(oid, f"could not run it ({exc}) nor report that: {report.cause}")
            return False

    # ------------------------------------------------------------------ leases (remote mode)

    def unstarted(self) -> int:
        return sum(1 for local_id in self._held if local_id not in self._started)

    def _backlog(self) -> int:
        if self.backlog is not None:
            return self.backlog
        d = self.runtime.dispatcher
        capacity = sum(i.capacity for i in d.instruments.values()) if d is not None else 2
        return max(4, 2 * capacity)

    async def _check_held(self) -> None:
        """At start: the adopted orders another console took over meanwhile are lost to this one."""
        assert self.leases is not None
        for local_id, remote_id in list(self._held.items()):
            h = await self.leases.holding(remote_id)
            if h.holder is None and await self.leases.claim(remote_id):
                continue  # this console died between try-assign and its claim mark
            h = await self.leases.holding(remote_id) if h.holder is None else h
            if h.holder != self.leases.instance:
                await self._lose(local_id, h)
            elif h.started:
                self._started.add(local_id)

    async def _admit(self, job: Any) -> bool:
        """Before a step starts: the first step of an adopted order records the start (a lease
        mark); if another console took the order over meanwhile, nothing starts here."""
        answer = self._watch.get(job.run_id) if job.run_id else None
        if answer is None and job.order_id in self._module_jobs:
            answer = job.order_id
        if answer is None or answer in self._started:
            return True
        if answer in self._lost:
            return await self._until_dropped()
        remote = self._held.get(answer)
        if remote is None or self.leases is None:
            return True
        delay = 0.2
        while True:  # an unrecorded start could be taken over: wait for the Data Services
            try:
                h = await self.leases.start(remote)
                break
            except DataServicesError as exc:
                self._mark(False, exc.cause)
                await asyncio.sleep(delay)
                delay = min(5.0, delay * 2)
        if self.leases.may_start(h):
            self._started.add(answer)
            return True
        await self._lose(answer, h)
        self._spawn(self._drop(answer))
        return await self._until_dropped()

    async def _until_dropped(self) -> bool:
        """A step of an order another console took over waits here, unstarted, until the run is
        cancelled (:meth:`_drop`), so it ends Canceled rather than failed; False if that never
        comes."""
        await asyncio.sleep(DROP_WAIT)
        return False

    async def _lose(self, local_id: str, h: Holding) -> None:
        why = f"taken over by {h.module_id or 'another console'} on Data Services"
        log.warning("Data Services: order %s (%s) is not run here: %s", local_id,
                    self._held.get(local_id), why)
        self._lost.add(local_id)
        self._held.pop(local_id, None)
        owner = h.module_id or ""
        if owner:
            self._lost_to[local_id] = owner

        def op(c: sqlite3.Connection) -> None:
            c.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (LOST_PREFIX + local_id, why))
            if owner:
                c.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                          (OWNER_PREFIX + local_id, owner))

        await self.runtime.store.write(op)

    async def _drop(self, local_id: str) -> None:
        """Stop this console's copy of an order another console took over (never answered)."""
        why = await self.runtime.store.read(lambda c: c.execute(
            "SELECT value FROM meta WHERE key = ?", (LOST_PREFIX + local_id,)).fetchone())
        reason = why[0] if why else "taken over by another console"
        for run_id in [r for r, a in self._watch.items() if a == local_id]:
            self._watch.pop(run_id, None)
            await self._forget_watch(run_id)
            try:
                if self.runtime.store.get_order(run_id).status not in TERMINAL_STATUSES:
                    await self.runtime.cancel(run_id, who=self.module_id, reason=reason)
            except LabconsoleError as exc:
                log.warning("run %s of order %s not cancelled: %s", run_id, local_id, exc)
        try:
            if self.runtime.store.get_order(local_id).status not in TERMINAL_STATUSES:
                await self.runtime.ledger.set_status(local_id, OrderStatus.Canceled, who=self.module_id,
                                                   why=reason)
        except LabconsoleError as exc:
            log.warning("order %s not closed: %s", local_id, exc)

    async def _reclaim_loop(self) -> None:
        rounds = 0
        while True:
            await asyncio.sleep(self.lease / 3)
            try:
                await self.reclaim_once(thorough=rounds % SWEEP_EVERY == 0)
            except DataServicesError as exc:
                self._mark(False, exc.cause)
            except Exception:  # noqa: BLE001 - keep reclaiming, say why
                log.exception("Data Services: reclaiming orders failed")
            rounds += 1

    async def reclaim_once(self, *, thorough: bool = True) -> list[str]:
        """Take over the unstarted orders of consoles that are gone (see
        :mod:`core.dataservices.leases`) and run them here; return their ids.

        The orders are read only when a console's heartbeats have stopped; a ``thorough`` round
        reads them anyway, with heartbeats from further back (consoles gone long ago, orders a
        console won with try-assign just before it died, before it could mark them)."""
        assert self.client is not None and self.leases is not None
        await self._refresh_fleet(SWEEP_LEASES if thorough else 2)
        beats, now = self._all_beats, time.time()
        latest: dict[str, Any] = {}
        for b in beats:
            if b.instance not in latest or b.at >= latest[b.instance].at:
                latest[b.instance] = b
        if not thorough and all(b.alive_until > now for b in latest.values()):
            return []
        orders = await self._all(lambda offset: self.client.executing_orders(limit=PAGE, offset=offset)
                                  if self.client else _none())
        orders += [o for o in await self._all(lambda offset: self.client.orders(
            statuses=WAITING_STATUSES, limit=PAGE, offset=offset) if self.client else _none())
            if o.assignedTo]
        taken = []
        for order, seen in await self.leases.takeable(beats, orders, self._can_take):
            oid = order.identifier or ""
            kind = self._wanted(order)
            if kind is None:
                continue
            if seen.holder != self.leases.instance and not await self.leases.take(oid, seen):
                continue
            self.taken_over += 1
            log.info("Data Services: order %s of %s taken over (its console is gone, it had not "
                     "started)", oid, order.assignedTo)
            if await self._adopt_or_report(order, kind):
                taken.append(oid)
        return taken

    async def _prune_loop(self) -> None:
        while True:
            try:
                await self.prune_heartbeats()
            except Exception:  # noqa: BLE001 - tried again next hour
                log.exception("Data Services: old heartbeats not removed")
            await asyncio.sleep(3600)

    async def prune_heartbeats(self, now: float | None = None) -> int:
        """Embedded mode: remove heartbeats older than :data:`HEARTBEATS_KEPT` from the console's own
        Data Services (this console's and those of consoles sharing it); return how many."""
        before = (time.time() if now is None else now) - max(HEARTBEATS_KEPT, SWEEP_LEASES * self.lease)

        def op(c: sqlite3.Connection) -> int:
            return int(c.execute("DELETE FROM ds_events WHERE topic = ? AND created < ?",
                                 (HEARTBEAT_TOPIC, before)).rowcount)

        return await self.runtime.store.write(op)

    def _event_log(self) -> EventLog | None:
        """Where heartbeats are read: in-process on the embedded Data Services, else its client."""
        return self.identity.client if self.identity is not None else self.client

    async def _refresh_fleet(self, leases: float = 2) -> None:
        events = self._event_log()
        assert events is not None
        self._all_beats = await recent_beats(events, time.time() - leases * self.lease)
        self._beats = _latest_per_module(self._all_beats)
        self._fleet_at = time.time()

    def _can_take(self, order: Order) -> bool:
        oid = order.identifier or ""
        if order.status not in EXECUTING_STATUSES | WAITING_STATUSES or self._wanted(order) is None:
            return False
        return self.runtime.store.read_sync(lambda c: c.execute(
            "SELECT 1 FROM ds_links WHERE remote_id = ?", (oid,)).fetchone()) is None

    @staticmethod
    async def _all(page: Callable[[int], Coroutine[Any, Any, list[Order]]]) -> list[Order]:
        out: list[Order] = []
        while True:
            got = await page(len(out))
            out += got
            if len(got) < PAGE:
                return out

    async def _unassigned(self) -> list[Order]:
        """``UnassignedOrders``, read one order at a time: an order that cannot be read is
        skipped for good (it will not become readable) instead of failing the whole list."""
        assert self.client is not None
        data = await self._unassigned_data()
        if not isinstance(data, list):
            raise DataServicesError(self.client.base_url, "expected a JSON list of orders, got "
                                                          f"{type(data).__name__}")
        orders = []
        for item in data:
            if not isinstance(item, dict):
                continue
            oid = str(next((v for k, v in item.items() if str(k).lower() == "identifier"), "") or "")
            problem = json_text_problem(item)
            if problem is not None:
                self._pickup_failed(oid, f"{problem[0]} {problem[1]}", retry_after=math.inf)
                continue
            try:
                orders.append(Order.from_dict(item, source=f"order {oid}"))
            except LabconsoleError as exc:
                self._pickup_failed(oid, f"cannot be read: {exc}", retry_after=math.inf)
        return orders

    async def _unassigned_data(self) -> Any:
        """The waiting orders to look at. On a shared Data Services only those of the templates
        and capabilities this console has, a few times its backlog (v3 ``orders/unassigned``
        filters by template name), so several consoles polling stay cheap; a server without that
        route is read through v2 ``UnassignedOrders`` whole, as before."""
        assert self.client is not None
        if self.server is not None:  # embedded: read in-process (off the loop), no HTTP
            backend = self.server.backend
            rows = await asyncio.to_thread(lambda: backend.list_orders(
                statuses=WAITING_STATUSES, unassigned=True, limit=PICKUP_BATCH))
            return [json.loads(r) for r in rows]
        if self.leases is not None and self._v3_unassigned:
            names = sorted({t.name for t in self.runtime.templates() if self._runnable(t)}
                           | set(self.runtime.workcell.capabilities if self.runtime.workcell else ()))
            if not names:
                return []
            try:
                return await self.client.get_json(f"{V3}/orders/unassigned", {
                    "templateName": names, "limit": max(50, 4 * self._backlog()), "offset": 0})
            except DataServicesError as exc:
                if not exc.cause.startswith("HTTP 404"):
                    raise
                self._v3_unassigned = False
                log.warning("Data Services %s has no GET %s/orders/unassigned (%s): reading %s/"
                            "OrderService/UnassignedOrders whole instead", self.client.base_url, V3,
                            exc.cause, V2)
        return await self.client.get_json(f"{V2}/OrderService/UnassignedOrders",
                                      {"limit": PICKUP_BATCH, "offset": 0})

    def _pickup_failed(self, order_id: str, reason: str, retry_after: float = PICKUP_RETRY) -> None:
        """Skip ``order_id`` for ``retry_after`` seconds; log it once per reason; show it."""
        previous = self._skipped.get(order_id)
        self._skipped[order_id] = (reason, asyncio.get_running_loop().time() + retry_after)
        if previous is None or previous[0] != reason:
            log.warning("Data Services: order %s is not picked up: %s", order_id or "(no id)", reason)
        self.state.skipped = len(self._skipped)
        self.state.pickup_error = f"{order_id or '(no id)'}: {reason}"
        self._changed()

    def _picked_up(self, order_id: str) -> None:
        if self._skipped.pop(order_id, None) is not None:
            self.state.skipped = len(self._skipped)
            if not self._skipped:
                self.state.pickup_error = None
            self._changed()

    async def _adopt(self, order: Order, kind: str) -> None:
        remote_id = order.identifier or ""
        template = self._template(order.templateName or "") if kind == "workflow" else None
        if template is not None:  # the name as published: an order may spell it in another case
            order = order.model_copy(update={"templateName": template.name})
        inputs = {p.name: p.typed_value for p in order.inputParameters if p.value not in (None, "")}
        version = (self._version_for(order, order.templateName or "") or None) if kind == "workflow" else None
        problems: list[str] = []
        if kind == "workflow":  # Biosero's lifecycle: Invalid (with the reasons) or Validated
            try:
                check_inputs(self.runtime.engine.templates.get(order.templateName or "", version), inputs)
            except InputError as exc:
                problems = [str(p) for p in exc.problems] or [str(exc)]
        if self.embedded:
            answer_id = remote_id
        else:  # a local mirror of the remote order, linked to it before the outbox can see it
            async with self._adopting:
                mirror = await self.runtime.ledger.create_order(
                    order.model_copy(update={"identifier": None, "assignedTo": self.module_id,
                                             "status": OrderStatus.Created}), who=f"Data Services {remote_id}")
                answer_id = mirror.identifier or ""
                await self._link(answer_id, remote_id, adopted=True)
            self._held[answer_id] = remote_id
        if kind == "module" and not problems:  # recorded before it can start: found after a restart
            await self._save_job(answer_id)
        if problems:
            self._held.pop(answer_id, None)
            await self.runtime.ledger.set_status(answer_id, OrderStatus.Invalid, who=self.module_id,
                                               why="inputs rejected: " + "; ".join(problems),
                                               changes={"validationErrors": problems})
            return
        if kind == "workflow":
            await self.runtime.ledger.set_status(answer_id, OrderStatus.Validated, who=self.module_id,
                                               why="inputs checked against the template")
        await self.runtime.ledger.set_status(answer_id, OrderStatus.Running, who=self.module_id,
                                           why="claimed by labconsole")
        if kind == "workflow":
            await self._start_run(answer_id, order, version)
        else:
            self._module_jobs.add(answer_id)
            self._spawn(self._run_module_job(answer_id, order))

    async def _start_run(self, answer_id: str, order: Order, version: int | None = None) -> None:
        """The run that answers ``answer_id`` (a child of it), watched, started."""
        inputs = {p.name: p.typed_value for p in order.inputParameters if p.value not in (None, "")}
        scheduled = order.scheduledStartTime \
            if order.schedulingStrategy is SchedulingStrategy.FirstAvailableSlot else None
        run_id = await self.runtime.engine.create_instance(
            order.templateName or "", inputs, parent_identifier=answer_id,
            who=order.createdBy or order.identifier or "", allow_duplicate=True,
            biosero_priority=order.priority, scheduled_start=scheduled, version=version)
        self._watch[run_id] = answer_id
        await self._save_watch(run_id, answer_id)
        await self.runtime.engine.execute_workflow(run_id)

    async def _run_module_job(self, answer_id: str, order: Order) -> None:
        from core.dispatcher import Job

        dispatcher = self.runtime.dispatcher
        job = Job(answer_id, order.model_copy(update={"identifier": answer_id}), order.templateName or "",
                  restrict=tuple(m for m in order.restricted_modules if m != self.module_id),
                  strategy=order.moduleRestrictionStrategy, biosero=int(order.priority),
                  on_started=lambda instrument: self.runtime.ledger.update_order(
                      answer_id, {"assignedTo": instrument}))
        try:
            if dispatcher is None:
                raise LabconsoleError("no instruments are dispatched in this console")
            outputs = await dispatcher.submit(job)
        except Exception as exc:  # noqa: BLE001 - reported on the order
            await self._answer(answer_id, OrderStatus.Error, f"{type(exc).__name__}: {exc}", None)
            return
        await self._answer(answer_id, OrderStatus.Complete, None, outputs)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        return self.tasks.spawn(coro, coro.__qualname__)

    async def _answer(self, order_id: str, status: OrderStatus, why: str | None,
                      outputs: dict[str, Any] | None) -> None:
        self._held.pop(order_id, None)
        self._started.discard(order_id)
        job = order_id in self._module_jobs
        self._module_jobs.discard(order_id)
        changes = None
        if outputs:
            changes = {"outputParameters": [to_parameter(k, v) for k, v in outputs.items()]}
        await self.runtime.ledger.set_status(order_id, status, who=self.module_id, why=why, changes=changes)
        if job:
            await self._forget_job(order_id)

    async def _remember(self, key: str, value: str) -> None:
        """Keep ``key`` = ``value`` in the store's meta table (what the link must know after a restart)."""
        await self.runtime.store.write(lambda c: c.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value)))

    async def _forget(self, key: str) -> None:
        def op(c: sqlite3.Connection) -> None:
            c.execute("DELETE FROM meta WHERE key = ?", (key,))

        await self.runtime.store.write(op)

    async def _save_job(self, answer_id: str) -> None:
        await self._remember(JOB_PREFIX + answer_id, "")

    async def _forget_job(self, answer_id: str) -> None:
        await self._forget(JOB_PREFIX + answer_id)

    async def _resume_module_jobs(self) -> list[str]:
        """The module jobs in flight when the console stopped, after a restart. One that had not
        started on an instrument is queued again; one that had (its order names the instrument,
        written before the instrument was told to start) is never run again: its order ends in
        Error, its outcome unknown, for an operator to decide. Returns the ids queued again."""
        keys = await self.runtime.store.read(lambda c: [k for (k,) in c.execute(
            "SELECT key FROM meta WHERE key LIKE ?", (JOB_PREFIX + "%",)).fetchall()])
        queued = []
        for answer_id in (k[len(JOB_PREFIX):] for k in keys):
            if answer_id in self._module_jobs:
                continue
            try:
                order = self.runtime.store.get_order(answer_id)
            except LabconsoleError:
                order = None
            if order is None or order.status in TERMINAL_STATUSES | {OrderStatus.Error} or answer_id in self._lost \
                    or (not self.embedded and answer_id not in self._held) or not order.assignedTo:
                # answered, dropped, taken over, or released meanwhile (unassigned: claimed anew)
                await self._forget_job(answer_id)
                continue
            if order.assignedTo and order.assignedTo != self.module_id:
                why = (f"outcome unknown: the console stopped while {order.templateName} was executing on "
                       f"{order.assignedTo}; it is not run again, an operator decides")
                log.warning("Data Services: module job %s: %s", answer_id, why)
                self._module_jobs.add(answer_id)
                await self._answer(answer_id, OrderStatus.Error, why, None)
                continue
            if order.status is not OrderStatus.Running:
                await self.runtime.ledger.set_status(answer_id, OrderStatus.Running, who=self.module_id,
                                                   why="claimed by labconsole")
            log.info("Data Services: module job %s (%s) queued again after a restart", answer_id,
                     order.templateName)
            self._module_jobs.add(answer_id)
            self._spawn(self._run_module_job(answer_id, order))
            queued.append(answer_id)
        return queued

    def _answer_ended_runs(self) -> None:
        """Runs the engine resumed and finished before this link listened (a restart): answer them."""
        for run_id in list(self._watch):
            try:
                status = self.runtime.store.get_order(run_id).status
            except LabconsoleError:
                continue
            if status in (OrderStatus.Complete, OrderStatus.Error, OrderStatus.Canceled):
                self._on_status(OrderStatusChanged(order_id=run_id, from_status=None, to_status=status,
                                                   who=self.module_id))

    def _on_status(self, event: Any) -> None:
        """A watched run ended: answer the order it runs for."""
        answer = self._watch.get(event.order_id)
        if answer is None or event.to_status not in (OrderStatus.Complete, OrderStatus.Error,
                                                      OrderStatus.Canceled):
            return
        self._watch.pop(event.order_id, None)
        run = self.runtime.store.get_order(event.order_id)
        outputs = {p.name: p.typed_value for p in run.outputParameters}  # Success stays a Boolean
        self._spawn(self._answer_watched(event.order_id, answer, event.to_status, run.statusDetails, outputs))

    async def _answer_watched(self, run_id: str, answer_id: str, status: OrderStatus, why: str | None,
                              outputs: dict[str, Any] | None) -> None:
        """Answer the order a run was made for, then forget that the run answers it (a watch left
        behind was answered again at every start). An order answered so already is only forgotten."""
        try:
            answered = self.runtime.store.get_order(answer_id).status is status
        except LabconsoleError:
            answered = False
        if not answered:
            await self._answer(answer_id, status, why, outputs)
        await self._forget_watch(run_id)

    async def _save_watch(self, run_id: str, answer_id: str) -> None:
        await self._remember(f"ds_watch:{run_id}", answer_id)

    async def _forget_watch(self, run_id: str) -> None:
        await self._forget(f"ds_watch:{run_id}")

    async def _restore_watches(self) -> None:
        rows = await self.runtime.store.read(lambda c: c.execute(
            "SELECT key, value FROM meta WHERE key LIKE 'ds_watch:%'").fetchall())
        for key, answer in rows:
            self._watch[key.split(":", 1)[1]] = answer

    # ------------------------------------------------------------------ outbound (remote mode)

    async def _link(self, local_id: str, remote_id: str, adopted: bool = False) -> None:
        await self.runtime.store.write(lambda c: c.execute(
            "INSERT OR REPLACE INTO ds_links (local_id, remote_id, adopted) VALUES (?,?,?)",
            (local_id, remote_id, int(adopted))))

    def _is_ours(self, remote_id: str | None) -> bool:
        if self.embedded or not remote_id:
            return False
        return self.runtime.store.read_sync(lambda c: c.execute(
            "SELECT 1 FROM ds_links WHERE remote_id = ? AND adopted = 0", (remote_id,)).fetchone()) is not None

    def _remote_of(self, local_id: str | None) -> str | None:
        if not local_id:
            return None
        row = self.runtime.store.read_sync(lambda c: c.execute(
            "SELECT remote_id FROM ds_links WHERE local_id = ?", (local_id,)).fetchone())
        return row[0] if row else None

    def outbox_depth(self) -> int:
        def read(c: sqlite3.Connection) -> int:
            cursor = _cursor(c)
            depth: int = c.execute("SELECT count(*) FROM transitions WHERE seq > ?",
                                   (cursor,)).fetchone()[0]
            return depth

        return self.runtime.store.read_sync(read)

    async def _outbound_loop(self) -> None:
        backoff = 0.5
        while True:
            try:
                began = time.monotonic()
                delivered = await self.deliver_pending()
                if delivered:
                    self.outbox_busy += time.monotonic() - began
                self._mark(True, None)
                backoff = 0.5
                if not delivered:
                    await asyncio.sleep(self.poll_interval / 4)
            except DataServicesError as exc:
                self._mark(False, exc.cause)
                await asyncio.sleep(backoff)
                backoff = min(30.0, backoff * 2)
            except Exception:  # noqa: BLE001
                log.exception("Data Services delivery failed")
                await asyncio.sleep(backoff)
            self.state.outbox = await self.runtime.store.read(lambda c: c.execute(
                "SELECT count(*) FROM transitions WHERE seq > ?", (_cursor(c),)).fetchone()[0])

    async def deliver_pending(self, batch: int = 200) -> int:
        """Deliver the transitions after the cursor, in order; return how many. Raises on failure.

        The orders table already holds each order's latest state, so an order that changed several
        times in the batch is sent once (at its first place, so parents still go before children),
        and the cursor moves once per batch: a batch cut short is sent again, which the keyed
        creates and idempotent updates make harmless.
        """
        assert self.client is not None
        async with self._adopting:  # a mirror being adopted is read with its link, never without
            rows = await self.runtime.store.read(lambda c: c.execute(
                "SELECT t.seq, t.order_id, o.data FROM transitions t JOIN orders o ON o.id = t.order_id "
                "WHERE t.seq > ? ORDER BY t.seq LIMIT ?", (_cursor(c), batch)).fetchall())
        sent: set[str] = set()
        for _seq, order_id, data in rows:
            if order_id in sent:
                continue
            sent.add(order_id)
            order = Order.model_validate_json(data)
            if (order.createdBy or "") not in SKIP_CREATORS:
                await self._deliver(order_id, order)
        if rows:
            last = rows[-1][0]
            await self.runtime.store.write(lambda c: c.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (CURSOR_KEY, str(last))))
            self.state.delivered += len(rows)
        return len(rows)

    async def _deliver(self, local_id: str, current: Order) -> None:
        """Make the remote twin of ``local_id`` match ``current`` (its latest local state)."""
        assert self.client is not None
        if local_id in self._lost:
            return  # another console holds that order now and answers it
        remote = self._remote_of(local_id)
        if remote is None:
            parent = self._remote_of(current.parentIdentifier)
            create = Order(templateName=current.templateName, parentIdentifier=parent,
                           inputParameters=current.inputParameters, priority=current.priority,
                           notes=current.notes, createdBy=f"{self.module_id} {local_id}",
                           schedulingStrategy=current.schedulingStrategy,
                           restrictToModuleIds=current.restrictToModuleIds,
                           moduleRestrictionStrategy=current.moduleRestrictionStrategy)
            try:
                remote = await self.client.create_order(create, idempotency_key=self._create_key(local_id))
            except CreateOutcomeUnknownError as exc:
                raise DataServicesError(self.client.base_url, f"create of {local_id} unconfirmed: {exc}") from None
            await self._link(local_id, remote)
            await self.client.try_assign(remote, self.module_id)
        try:
            if current.outputParameters and current.status in TERMINAL_STATUSES | {OrderStatus.Error}:
                await self.client.set_output_parameters(remote, {p.name: p.value or "" for p in current.outputParameters})
            await self.client.update_order_status(remote, current.status, current.statusDetails)
        except OrderNotFoundError:
            log.warning("remote order %s of %s is gone; relinking", remote, local_id)
            await self.runtime.store.write(lambda c: (  # the next twin's key names the one that vanished
                c.execute("DELETE FROM ds_links WHERE local_id = ?", (local_id,)),
                c.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (VANISHED_KEY + local_id, remote))))
            raise DataServicesError(self.client.base_url, f"order {remote} vanished; will recreate") from None

    def _create_key(self, local_id: str) -> str:
        """The idempotency key of the remote twin of ``local_id``: unique on a Data Services that
        several consoles share (each numbers its orders from Order_00001). A twin made after one
        vanished names that one: a Data Services that deleted an order but kept its key would
        otherwise answer with the deleted order again."""
        key = f"labconsole:{self.identity.instance}:{local_id}" if self.identity is not None else f"labconsole:{local_id}"
        row = self.runtime.store.read_sync(lambda c: c.execute(
            "SELECT value FROM meta WHERE key = ?", (VANISHED_KEY + local_id,)).fetchone())
        return key if row is None else f"{key}:after:{row[0]}"

    def _mark(self, ok: bool, error: str | None) -> None:
        if self.state.connected != ok or self.state.error != error:
            self.state.connected, self.state.error = ok, error
            self._changed()


def requested_version(order: Order) -> int | None:
    """The template version an order asks for (its ``templateVersion``: ``3`` or ``v3``), or None;
    -1 for one that is not a number (no console has it)."""
    text = (order.templateVersion or "").strip()
    if not text:
        return None
    try:
        return int(text.lstrip("vV"))
    except ValueError:
        return -1


def _latest_per_module(beats: list[Any]) -> list[Any]:
    latest: dict[str, Any] = {}
    for b in beats:
        if b.module_id not in latest or b.at >= latest[b.module_id].at:
            latest[b.module_id] = b
    return [latest[k] for k in sorted(latest)]


async def _none() -> list[Order]:
    return []


def _server_answered(exc: DataServicesError) -> bool:
    """The server answered (with an HTTP error about this request), as opposed to not at all."""
    return exc.cause.startswith("HTTP ")


def _cursor(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (CURSOR_KEY,)).fetchone()
    return int(row[0]) if row else 0


