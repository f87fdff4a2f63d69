"""Remote robot agents: instruments run by a separate ``labconsole agent`` process.

The console listens (:class:`AgentHub`, a ``websockets`` asyncio server on the core's loop) and
agents connect to it, register by name and then execute the jobs the console assigns them
(protocol: :mod:`core.drivers.agent_protocol`). Each agent is one instrument of the workcell
file (``driver: agent``, its ``id`` is the agent's ``--name``); :class:`AgentDriver` is that
instrument's :class:`~core.drivers.base.Driver`, and the hub routes frames to it by name. Several
agents may offer the same capability; the dispatcher chooses among them like among any
instruments.

Security: the hub binds the host of the workcell's ``url``; a host other than loopback is only
accepted with ``token_env`` on every agent of that hub (checked when the file is loaded), and an
agent whose instrument has a token must present it in ``register`` (compared in constant time).

What happens when things go wrong:

- **Malformed frames** (bad JSON, wrong types, lone surrogates, deep nesting, unknown types) are
  answered with an ``error`` frame and logged (at most a few lines per connection every 10 s);
  frames over :data:`~core.drivers.agent_protocol.MAX_FRAME_BYTES` close the connection (1009).
- **Wrong version, wrong token, unknown name, missing capabilities**: ``error`` frame, then the
  connection is closed (policy violation); the agent exits with the message.
- **The agent disappears mid-job** (killed, network lost, no frame for three heartbeat
  intervals): the job waits ``reconnect_grace`` for the agent to come back. If it re-registers
  with the same name it reports the jobs it still runs (they continue) and those that ended
  meanwhile (their results follow and complete or fail the job); a job it does not report ends
  ``InstrumentUnavailable`` at once, as does every job when the grace runs out. The dispatcher
  turns that into "outcome unknown" for the operator, or a retry when the step is idempotent
  (the same rule as for every instrument whose link drops with a command sent).
- **The agent is not connected when a job is due**: ``execute`` waits ``connect_timeout`` for it
  and then fails with a retryable ``DriverError`` (code ``AgentNotConnected``): nothing was sent,
  so running the job again is safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pydantic import BaseModel
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from core.clock import Clock, SystemClock, to_datetime
from core.drivers.agent_protocol import (
    MAX_FRAME_BYTES,
    PROTOCOL_VERSION,
    Envelope,
    Heartbeat,
    JobAccept,
    JobAssign,
    JobCancel,
    JobComplete,
    JobFailed,
    JobProgress,
    JobReject,
    ProtocolError,
    Register,
    RobotRegistered,
    decode,
    encode,
)
from core.drivers.base import (
    DriverError,
    DriverInfo,
    DriverState,
    DriverStatus,
    InstrumentUnavailable,
    OrderCancelled,
    ProgressSink,
    StatusKey,
    UnsupportedCapability,
    announce_status,
    link_state,
    resolve_capability,
)
from core.events import EventBus

if TYPE_CHECKING:
    from core.orders import Order
    from core.workcell import InstrumentConfig

__all__ = ["AgentDriver", "AgentHub", "hubs_of", "wake_on_register"]

log = logging.getLogger(__name__)

LOOPBACK = ("127.0.0.1", "localhost", "::1")
REGISTER_TIMEOUT = 10.0
"""Seconds a new connection has to send ``register``."""
ROUND_TRIP_TIMEOUT = 5.0
"""Deadline of a network round trip (heartbeat, cancel); never applied to a command."""
STALE_BEATS = 3
"""A connection silent for this many heartbeat intervals is closed as lost."""


class _LogLimiter:
    """At most ``burst`` log lines per ``window`` seconds; says how many were held back."""

    def __init__(self, burst: int = 5, window: float = 10.0) -> None:
        self.burst, self.window = burst, window
        self.start, self.count, self.dropped = 0.0, 0, 0

    def __call__(self, level: int, msg: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self.start > self.window:
            if self.dropped:
                log.log(level, "%d similar messages not logged in the last %g s", self.dropped, self.window)
            self.start, self.count, self.dropped = now, 0, 0
        if self.count < self.burst:
            self.count += 1
            log.log(level, msg, *args)
        else:
            self.dropped += 1


@dataclass(eq=False)
class _Link:
    """One registered agent connection."""

    ws: ServerConnection
    name: str
    address: str
    hello: Register
    last_seen: float = field(default_factory=time.monotonic)
    replies: dict[str, asyncio.Future[Any]] = field(default_factory=dict)
    closed: bool = False

    async def send(self, kind: str, payload: BaseModel | dict[str, Any] | None = None, *,
                   reply_to: str | None = None) -> str:
        text, msg_id = encode(kind, payload, reply_to=reply_to)
        await self.ws.send(text)
        return msg_id

    async def request(self, kind: str, payload: BaseModel | dict[str, Any]) -> tuple[Envelope, Any]:
        """Send a frame and wait (at most :data:`ROUND_TRIP_TIMEOUT`) for the frame answering it."""
        text, msg_id = encode(kind, payload)
        future: asyncio.Future[tuple[Envelope, Any]] = asyncio.get_running_loop().create_future()
        self.replies[msg_id] = future
        try:
            await self.ws.send(text)
            async with asyncio.timeout(ROUND_TRIP_TIMEOUT):
                return await future
        finally:
            self.replies.pop(msg_id, None)


class AgentHub:
    """The WebSocket server agents connect to; routes each agent to its driver by name.

    Args:
        url: ``ws://HOST:PORT`` to listen on (port 0 picks a free one; see :attr:`url`).
        heartbeat_interval: How often agents send a heartbeat (told to them on registration).
    """

    def __init__(self, url: str, *, heartbeat_interval: float = 5.0) -> None:
        parts = urlsplit(url)
        self.host: str = "127.0.0.1" if parts.hostname in (None, "localhost") else str(parts.hostname)
        self.port = parts.port or 0
        self.heartbeat_interval = heartbeat_interval
        self.drivers: dict[str, AgentDriver] = {}
        self.on_register: Callable[[str], None] | None = None
        """Called with the agent's name after each registration (e.g. to wake the dispatcher)."""
        self._server: Server | None = None
        self._lock = asyncio.Lock()
        self._sweeper: asyncio.Task[None] | None = None
        self._connections: set[ServerConnection] = set()
        self.frames_in = 0
        self.bad_frames = 0

    @property
    def url(self) -> str:
        """The address agents connect to (with the real port once started)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ws://{host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    def add(self, driver: AgentDriver) -> None:
        self.drivers[driver.instrument_id] = driver

    async def start(self) -> None:
        """Listen (idempotent). Raises InstrumentUnavailable if the address cannot be bound."""
        async with self._lock:
            if self._server is not None:
                return
            try:
                self._server = await serve(
                    self._handle, self.host, self.port, max_size=MAX_FRAME_BYTES, compression=None,
                    ping_interval=None, max_queue=64,
                    server_header=f"labconsole-agent-hub/{PROTOCOL_VERSION}")
            except OSError as exc:
                raise InstrumentUnavailable(f"agent hub cannot listen on {self.url}: {exc.strerror or exc}",
                                            code="AgentHubUnavailable") from None
            if self.port == 0:
                self.port = self._server.sockets[0].getsockname()[1]
            self._sweeper = asyncio.create_task(self._sweep(), name=f"agent-hub-sweep-{self.port}")
            log.info("agent hub listening on %s for %s", self.url, ", ".join(self.drivers))

    async def close(self) -> None:
        """Stop listening and close every agent connection (agents then try to reconnect)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
            self._sweeper = None
        server, self._server = self._server, None
        if server is not None:
            server.close(close_connections=False)
            await asyncio.gather(*(ws.close(1001, "console shutting down")
                                   for ws in list(self._connections)), return_exceptions=True)
            await server.wait_closed()

    # ------------------------------------------------------------------ connections

    async def _sweep(self) -> None:
        """Close connections silent for :data:`STALE_BEATS` heartbeat intervals."""
        limit = STALE_BEATS * self.heartbeat_interval
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            now = time.monotonic()
            for driver in self.drivers.values():
                link = driver.link
                if link is not None and now - link.last_seen > limit:
                    log.warning("%s: no frame from the agent for %.0f s: connection closed as lost",
                                driver.instrument_id, now - link.last_seen)
                    driver.lost(link, f"no heartbeat for {now - link.last_seen:.0f} s")
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(link.ws.close(1011, "heartbeat timeout"), 2)

    async def _handle(self, ws: ServerConnection) -> None:
        self._connections.add(ws)
        peer = ws.remote_address
        address = f"{peer[0]}:{peer[1]}" if peer else "?"
        limiter = _LogLimiter()
        link: _Link | None = None
        try:
            link = await self._register(ws, address, limiter)
            if link is None:
                return
            async for frame in ws:
                self.frames_in += 1
                link.last_seen = time.monotonic()
                try:
                    envelope, payload = decode(frame)
                except ProtocolError as exc:
                    await self._bad_frame(ws, address, exc, limiter, link.name)
                    continue
                await self.drivers[link.name].on_message(link, envelope, payload)
        except ConnectionClosed as exc:
            rcvd = exc.rcvd
            if rcvd is not None and rcvd.code not in (1000, 1001):
                log.info("agent %s at %s closed the connection: %s %s", link.name if link else "?",
                         address, rcvd.code, rcvd.reason)
            elif exc.sent is not None and exc.sent.code == 1009:
                log.warning("agent %s at %s sent a frame over %d bytes: connection closed",
                            link.name if link else "?", address, MAX_FRAME_BYTES)
        except Exception:  # noqa: BLE001 - one connection never takes the hub down
            log.exception("agent connection from %s failed", address)
        finally:
            self._connections.discard(ws)
            if link is not None:
                driver = self.drivers.get(link.name)
                if driver is not None:
                    driver.lost(link, f"connection from {address} closed")

    async def _bad_frame(self, ws: ServerConnection, address: str, exc: ProtocolError,
                         limiter: _LogLimiter, name: str | None) -> None:
        self.bad_frames += 1
        limiter(logging.WARNING, "agent %s at %s: %s: %s", name or "?", address, exc.code, exc.message)
        text, _ = encode("error", {"code": exc.code, "message": exc.message}, reply_to=exc.reply_to)
        await ws.send(text)

    async def _refuse(self, ws: ServerConnection, address: str, code: str, message: str,
                      reply_to: str | None, driver: AgentDriver | None = None) -> None:
        log.warning("agent at %s refused: %s", address, message)
        if driver is not None:
            driver.refused(address, message)
        text, _ = encode("error", {"code": code, "message": message}, reply_to=reply_to)
        with contextlib.suppress(ConnectionClosed):
            await ws.send(text)
        await ws.close(1008 if code != "unsupported_version" else 1002, code)

    async def _register(self, ws: ServerConnection, address: str,
                        limiter: _LogLimiter) -> _Link | None:
        try:
            async with asyncio.timeout(REGISTER_TIMEOUT):
                frame = await ws.recv()
        except TimeoutError:
            await self._refuse(ws, address, "register_timeout",
                               f"no register frame within {REGISTER_TIMEOUT:g} s", None)
            return None
        self.frames_in += 1
        try:
            envelope, hello = decode(frame)
        except ProtocolError as exc:
            self.bad_frames += 1
            claimed = _claimed_name(frame)
            await self._refuse(ws, address, exc.code, exc.message, exc.reply_to,
                               self.drivers.get(claimed) if claimed is not None else None)
            return None
        if not isinstance(hello, Register):
            await self._refuse(ws, address, "not_registered",
                               f"the first frame must be 'register', got {envelope.type!r}", envelope.id)
            return None
        driver = self.drivers.get(hello.name)
        if driver is None:
            await self._refuse(ws, address, "unknown_agent",
                               f"no agent instrument named {hello.name!r} on {self.url} (agent "
                               f"instruments here: {', '.join(sorted(self.drivers)) or 'none'})",
                               envelope.id)
            return None
        if driver.token is not None and not hmac.compare_digest(
                (hello.token or "").encode(), driver.token.encode()):
            await self._refuse(ws, address, "unauthorized",
                               f"agent {hello.name!r}: the token is "
                               f"{'missing' if not hello.token else 'wrong'}", envelope.id, driver)
            return None
        missing = sorted(set(driver.info.capabilities) - set(hello.capabilities))
        if missing:
            await self._refuse(ws, address, "capabilities",
                               f"agent {hello.name!r} does not offer {', '.join(missing)}, which the "
                               f"workcell declares for it (it offers: "
                               f"{', '.join(hello.capabilities) or 'nothing'})", envelope.id, driver)
            return None
        old = driver.link
        if old is not None and not old.closed:
            if time.monotonic() - old.last_seen < 2 * self.heartbeat_interval:
                await self._refuse(ws, address, "already_connected",
                                   f"agent {hello.name!r} is already connected from {old.address}",
                                   envelope.id)
                return None
            driver.lost(old, f"replaced by a new connection from {address}")
            with contextlib.suppress(Exception):
                await asyncio.wait_for(old.ws.close(1001, "replaced by a new connection"), 2)
        link = _Link(ws, hello.name, address, hello)
        await driver.attach(link, envelope)
        if self.on_register is not None:
            self.on_register(hello.name)
        return link


@dataclass(eq=False)
class _Job:
    job_id: str
    capability: str
    progress: ProgressSink
    future: asyncio.Future[dict[str, Any]]
    accepted: bool = False
    cancel_requested: bool = False
    lost_timer: asyncio.TimerHandle | None = None


class AgentDriver:
    """One remote robot agent as a :class:`~core.drivers.base.Driver`.

    Args:
        config: The instrument as the workcell file declares it (``options``: ``url``,
            ``token_env``, ``connect_timeout``, ``reconnect_grace``).
        hub: The hub the agent connects to (shared by the agents of the same ``url``).
        token: The token the agent must present, or None.
        clock: Timestamps (last heartbeat) come from it.
        bus: If given, state changes are published as ``InstrumentStatusChanged``.
    """

    def __init__(self, config: InstrumentConfig, hub: AgentHub, *, token: str | None = None,
                 clock: Clock | None = None, bus: EventBus | None = None,
                 connect_timeout: float = 5.0, reconnect_grace: float = 10.0) -> None:
        self.config = config
        self.instrument_id = config.id
        self.info = DriverInfo.of(config, endpoint=f"{hub.url} (agent hub)")
        self.max_concurrent = config.max_concurrent
        self.hub = hub
        self.token = token
        self.clock = clock or SystemClock()
        self.bus = bus
        self.connect_timeout = connect_timeout
        self.reconnect_grace = reconnect_grace
        self.link: _Link | None = None
        self._registered = asyncio.Event()
        self._refusal: str | None = None
        """Why the last agent that dialled in under this name was refused (until one registers)."""
        self._refusals = 0
        self._changed = asyncio.Event()
        """Set when an agent registers or is refused under this name."""
        self._connected = False
        self._connecting = False
        self._jobs: dict[str, _Job] = {}
        self._simulations: dict[str, dict[str, Any]] = {}
        self._detail = "not connected"
        self._published: StatusKey | None = None
        self.latency: float | None = None
        """Last heartbeat round trip in seconds (None before the first)."""
        self.last_heartbeat: float | None = None
        """Clock time of the last frame from the agent."""
        self.heartbeats = 0
        """Heartbeats received from the agent."""
        hub.add(self)

    # ------------------------------------------------------------------ what the panel shows

    @property
    def agent_address(self) -> str | None:
        """``host:port`` of the connected agent, or None."""
        return self.link.address if self.link is not None else None

    @property
    def agent_host(self) -> str:
        """Host name and pid the agent reported, or ''."""
        if self.link is None:
            return ""
        hello = self.link.hello
        return f"{hello.hostname} pid {hello.pid}" if hello.pid is not None else hello.hostname

    @property
    def state(self) -> DriverState:
        return link_state(connecting=self._connecting, connected=self._connected and self.link is not None,
                          busy=bool(self._jobs))

    @property
    def running(self) -> list[str]:
        return list(self._jobs)

    # ------------------------------------------------------------------ Driver protocol

    async def connect(self) -> None:
        await self.hub.start()
        if self._connected and self.link is not None:
            return
        self._connecting = True
        self._announce()
        try:
            if self.link is None:
                refusals = self._refusals  # an agent refused while this connect waits fails it
                try:
                    async with asyncio.timeout(self.connect_timeout):
                        while not self._registered.is_set():
                            if self._refusals != refusals and self._refusal is not None:
                                self._detail = self._refusal
                                raise InstrumentUnavailable(f"{self.instrument_id}: {self._refusal}",
                                                            instrument_id=self.instrument_id)
                            self._changed.clear()
                            await self._changed.wait()
                except TimeoutError:
                    last = f"; last refused: {self._refusal}" if self._refusal else ""
                    self._detail = f"agent has not connected to {self.hub.url}{last}"
                    raise InstrumentUnavailable(
                        f"{self.instrument_id}: agent has not connected to {self.hub.url} within "
                        f"{self.connect_timeout:g} s (start it with: labconsole agent --console "
                        f"{self.hub.url} --name {self.instrument_id} --capabilities "
                        f"{','.join(sorted(self.info.capabilities))}){last}",
                        instrument_id=self.instrument_id) from None
            self._connected = True
            self._detail = ""
        finally:
            self._connecting = False
            self._announce()

    async def disconnect(self) -> None:
        self._connected = False
        self._detail = "disconnected"
        link = self.link
        for job in list(self._jobs.values()):
            self._finish(job, InstrumentUnavailable(
                f"{self.instrument_id}: disconnected during {job.capability} of order {job.job_id}",
                instrument_id=self.instrument_id))
        if link is not None:
            self.link = None
            self._registered.clear()
            link.closed = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(link.ws.close(1001, "instrument disconnected by the console"), 2)
        self._announce()

    async def status(self) -> DriverStatus:
        detail = self._detail
        if self.link is not None and not detail:
            detail = f"agent at {self.link.address}" + (
                f", latency {self.latency * 1000:.1f} ms" if self.latency is not None else "")
        return DriverStatus(self.state, detail, list(self._jobs),
                            to_datetime(self.last_heartbeat) if self.last_heartbeat else None)

    async def heartbeat(self) -> float:
        link = self._require_link()
        started = time.perf_counter()
        try:
            await link.request("heartbeat", Heartbeat(running=list(self._jobs)))
        except (TimeoutError, ConnectionClosed) as exc:
            why = "no answer" if isinstance(exc, TimeoutError) else "connection closed"
            raise InstrumentUnavailable(f"{self.instrument_id}: heartbeat: {why}",
                                        instrument_id=self.instrument_id) from None
        self.latency = time.perf_counter() - started
        return self.latency

    async def cancel(self, order_id: str) -> bool:
        job = self._jobs.get(order_id)
        link = self.link
        if job is None or link is None:
            return False
        try:
            _, answer = await link.request("job_cancel", JobCancel(job_id=order_id))
        except (TimeoutError, ConnectionClosed):
            return False
        accepted = isinstance(answer, JobCancel) and bool(answer.accepted)
        if accepted:
            job.cancel_requested = True
        return accepted

    async def execute(self, order: Order, progress: ProgressSink) -> dict[str, Any]:
        capability = resolve_capability(order, self.info.capabilities, self.instrument_id)
        job_id = order.identifier or f"{self.instrument_id}-{uuid.uuid4().hex[:12]}"
        if job_id in self._jobs:
            raise DriverError(f"{self.instrument_id}: order {job_id} is already running here",
                              code="AlreadyRunning", instrument_id=self.instrument_id)
        if len(self._jobs) >= self.max_concurrent:
            raise DriverError(f"{self.instrument_id}: busy ({len(self._jobs)} of "
                              f"{self.max_concurrent} orders running)", code="InstrumentBusy",
                              retryable=True, instrument_id=self.instrument_id)
        link = await self._wait_for_link()
        simulation = self._simulations.get(capability)
        if simulation is None:
            spec = self.config.capabilities[capability]
            simulation = spec.model_dump(mode="json", exclude_none=True, exclude={"jitter"})
            simulation["jitter"] = str(spec.jitter)
            self._simulations[capability] = simulation
        assign = JobAssign(job_id=job_id, capability=capability,
                           inputs={p.name: p.typed_value for p in order.inputParameters if p.name},
                           order=order.to_wire(), simulation=simulation)
        job = _Job(job_id, capability, progress, asyncio.get_running_loop().create_future())
        self._jobs[job_id] = job
        self._announce()
        try:
            try:
                await link.send("job_assign", assign)
            except ConnectionClosed:
                # the frame may or may not have reached the agent: wait for it to come back
                self._lost_job(job)
            return await job.future
        except asyncio.CancelledError:
            if not job.future.done() and self.link is not None:
                # the caller gave up on the job: stop it on the agent as well (no wait)
                job.cancel_requested = True
                with contextlib.suppress(Exception):
                    await asyncio.shield(self.link.send("job_cancel", JobCancel(job_id=job_id)))
            raise
        finally:
            if job.lost_timer is not None:
                job.lost_timer.cancel()
            if self._jobs.get(job_id) is job:
                del self._jobs[job_id]
            self._announce()

    # ------------------------------------------------------------------ link events (hub)

    def _require_link(self) -> _Link:
        if self.link is None or not self._connected:
            raise InstrumentUnavailable(f"{self.instrument_id}: agent not connected"
                                        + (f" ({self._detail})" if self._detail else ""),
                                        instrument_id=self.instrument_id)
        return self.link

    async def _wait_for_link(self) -> _Link:
        if self.link is None:
            try:
                async with asyncio.timeout(self.connect_timeout):
                    await self._registered.wait()
            except TimeoutError:
                raise DriverError(f"{self.instrument_id}: agent not connected (waited "
                                  f"{self.connect_timeout:g} s); nothing was sent",
                                  code="AgentNotConnected", retryable=True,
                                  instrument_id=self.instrument_id) from None
        assert self.link is not None
        return self.link

    async def attach(self, link: _Link, envelope: Envelope) -> None:
        """A registration was accepted: reconcile the jobs, answer ``robot_registered``."""
        hello = link.hello
        reported = {r.job_id for r in hello.running} | set(hello.finished)
        stale = [r.job_id for r in hello.running if r.job_id not in self._jobs]
        for job in list(self._jobs.values()):
            if job.job_id not in reported and (job.lost_timer is not None or job.accepted):
                self._finish(job, InstrumentUnavailable(
                    f"{self.instrument_id}: agent reconnected without order {job.job_id} "
                    f"({job.capability}): it restarted while running it; outcome unknown",
                    instrument_id=self.instrument_id))
            elif job.job_id in reported:
                if job.lost_timer is not None:
                    job.lost_timer.cancel()
                    job.lost_timer = None
                job.accepted = True
        self.link = link
        self._detail = ""
        self._refusal = None
        self._changed.set()
        self.last_heartbeat = self.clock.now()
        self.info = self.info.identified(
            [("Agent", hello.name), ("Agent address", link.address), ("Host", hello.hostname),
             ("Process id", hello.pid), ("Agent version", hello.agent_version),
             ("Protocol", f"version {PROTOCOL_VERSION}"),
             ("Token", "required" if self.token is not None else "none (this machine only)")],
            endpoint=f"{self.hub.url} (agent hub)")
        self._registered.set()
        if stale:
            log.warning("%s: the agent still runs %s, which the console no longer waits for: "
                        "asking it to stop", self.instrument_id, ", ".join(stale))
        await link.send("robot_registered", RobotRegistered(
            name=self.instrument_id, heartbeat_interval=self.hub.heartbeat_interval, cancel=stale),
            reply_to=envelope.id)
        log.info("%s: agent registered from %s (%s)", self.instrument_id, link.address,
                 self.agent_host or "unknown host")
        self._announce()

    def refused(self, address: str, message: str) -> None:
        """An agent dialling in under this instrument's name was refused: the cause is kept for
        the Robots panel and fails a connect that waits for an agent."""
        if self.link is not None:
            return  # an agent is connected: the refused one changes nothing
        self._refusal = f"agent at {address} refused: {message}"
        self._refusals += 1
        self._detail = self._refusal
        self._changed.set()
        self._announce()

    def lost(self, link: _Link, why: str) -> None:
        """The agent's connection ended: its jobs wait ``reconnect_grace`` for it to return."""
        for future in link.replies.values():
            if not future.done():
                future.set_exception(ConnectionClosed(None, None))
        if link.closed:
            return
        link.closed = True
        if self.link is not link:
            return
        self.link = None
        self._registered.clear()
        self._detail = f"agent connection lost: {why}"
        log.warning("%s: %s", self.instrument_id, self._detail)
        for job in list(self._jobs.values()):
            self._lost_job(job)
        self._announce()

    def _lost_job(self, job: _Job) -> None:
        if job.lost_timer is None and not job.future.done():
            job.lost_timer = asyncio.get_running_loop().call_later(
                self.reconnect_grace, self._grace_over, job)

    def _grace_over(self, job: _Job) -> None:
        job.lost_timer = None
        if self.link is None:
            self._finish(job, InstrumentUnavailable(
                f"{self.instrument_id}: connection to the agent lost during {job.capability} of "
                f"order {job.job_id}, and it did not come back within {self.reconnect_grace:g} s; "
                f"the command was sent, so it may or may not have run",
                instrument_id=self.instrument_id))

    def _finish(self, job: _Job, result: dict[str, Any] | BaseException) -> None:
        if job.lost_timer is not None:
            job.lost_timer.cancel()
            job.lost_timer = None
        if job.future.done():
            return
        if isinstance(result, BaseException):
            job.future.set_exception(result)
        else:
            job.future.set_result(result)

    async def on_message(self, link: _Link, envelope: Envelope, payload: Any) -> None:
        self.last_heartbeat = self.clock.now()
        if envelope.reply_to is not None:
            future = link.replies.get(envelope.reply_to)
            if future is not None and not future.done():
                future.set_result((envelope, payload))
                return
        if isinstance(payload, Heartbeat):
            self.heartbeats += 1
            if envelope.reply_to is None:
                await link.send("heartbeat", Heartbeat(running=list(self._jobs)), reply_to=envelope.id)
            return
        job_id = getattr(payload, "job_id", None)
        job = self._jobs.get(job_id) if job_id is not None else None
        if isinstance(payload, JobProgress):
            if job is not None:
                job.progress(payload.progress, payload.values)
            return
        if job is None:
            if isinstance(payload, JobComplete | JobFailed | JobReject):
                log.warning("%s: result of order %s arrived after the console stopped waiting for "
                            "it (%s): %s", self.instrument_id, job_id, envelope.type,
                            payload.model_dump_json())
            elif isinstance(payload, JobAccept):
                log.info("%s: order %s started after the console stopped waiting: asking the "
                         "agent to stop it", self.instrument_id, job_id)
                await link.send("job_cancel", JobCancel(job_id=payload.job_id))
            elif not isinstance(payload, JobCancel):
                await link.send("error", {"code": "unexpected", "message":
                                          f"a {envelope.type!r} frame is not expected from an agent"},
                                reply_to=envelope.id)
            return
        where = f"{self.instrument_id}: {job.capability} of order {job.job_id}"
        if isinstance(payload, JobAccept):
            job.accepted = True
        elif isinstance(payload, JobComplete):
            self._finish(job, dict(payload.outputs))
        elif isinstance(payload, JobFailed):
            if payload.code == OrderCancelled.code or job.cancel_requested and payload.code == "Cancelled":
                error: DriverError = OrderCancelled(f"{where} cancelled", instrument_id=self.instrument_id)
            elif payload.code == UnsupportedCapability.code:
                error = UnsupportedCapability(f"{where}: {payload.message}", instrument_id=self.instrument_id)
            else:
                error = DriverError(f"{where} failed: {payload.message or payload.code}",
                                    code=payload.code, retryable=payload.retryable,
                                    instrument_id=self.instrument_id)
            self._finish(job, error)
        elif isinstance(payload, JobReject):
            self._finish(job, DriverError(f"{where} refused by the agent: {payload.message or payload.code}",
                                          code=payload.code, retryable=payload.retryable,
                                          instrument_id=self.instrument_id))

    def _announce(self) -> None:
        self._published = announce_status(self.bus, self._published, self.instrument_id, self.state,
                                          self._detail, self._jobs, self.config.enabled)

    def __repr__(self) -> str:
        return f"AgentDriver({self.instrument_id!r}, state={self.state.value})"


def hubs_of(drivers: Mapping[str, Any] | Iterable[Any]) -> list[AgentHub]:
    """The distinct agent hubs used by ``drivers`` (a mapping or an iterable of drivers)."""
    values = drivers.values() if isinstance(drivers, Mapping) else drivers
    hubs: dict[int, AgentHub] = {}
    for driver in values:
        if isinstance(driver, AgentDriver):
            hubs.setdefault(id(driver.hub), driver.hub)
    return list(hubs.values())


def wake_on_register(hubs: Iterable[AgentHub], instruments: Mapping[str, Any]) -> None:
    """When an agent registers, let the dispatcher try to connect its instrument at its next
    heartbeat round (``instruments``: the dispatcher's, each with ``connected`` and
    ``next_reconnect``), instead of after its reconnect back-off."""
    def woke(name: str) -> None:
        inst = instruments.get(name)
        if inst is not None and not inst.connected:
            inst.next_reconnect = 0.0

    for hub in hubs:
        hub.on_register = woke


def _claimed_name(frame: str | bytes) -> str | None:
    """The agent name a register frame that failed its checks claims, if it can be read."""
    try:
        payload = json.loads(frame).get("payload")
    except (ValueError, TypeError, AttributeError):
        return None
    name = payload.get("name") if isinstance(payload, dict) else None
    return name if isinstance(name, str) else None
