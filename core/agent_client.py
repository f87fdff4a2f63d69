"""The robot agent process: connects to a console's agent hub and executes its jobs.

Run it as ``labconsole agent --console ws://HOST:PORT --name NAME --capabilities A,B``.
``NAME`` is the id of a ``driver: agent`` instrument in the console's workcell file. Without
``--handler`` the agent simulates each command the way a simulated instrument does: durations,
jitter, progress and outputs come from the workcell's description of the command, which the
console sends with each job.

With ``--handler module:function``, the function runs each job instead::

    # mylab/arm.py
    from core.agent_client import AgentJob
    from core.drivers.base import DriverError

    def move_plate(job: AgentJob) -> dict:            # or: async def ...
        if job.capability != "RobotArm.MovePlate":
            raise DriverError(f"cannot {job.capability}", code="UnsupportedCapability")
        for i, position in enumerate(path(job.inputs["source"], job.inputs["destination"])):
            if job.cancelled:                          # set when the console cancels the job
                raise DriverError("stopped", code="OrderCancelled")
            arm.move_to(position)                      # blocking calls are fine in a def
            job.progress((i + 1) / 10, {"position": position})
        return {"grip_force_n": arm.grip_force()}       # the step's output parameters

A plain ``def`` runs in a worker thread; an ``async def`` runs on the agent's loop and is
cancelled (``CancelledError``) when the console cancels the job. Raising
:class:`~core.drivers.base.DriverError` reports its ``code`` and ``retryable``; any other
exception fails the job as not retryable. ``job.simulate()`` runs the built-in simulation
(for a handler that only takes over some commands).

The agent reconnects (backing off up to 5 s) whenever the connection drops; jobs keep running
meanwhile, and their results are delivered after it registers again. It gives up only when the
console refuses it (wrong token, protocol version, unknown name or capabilities).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import json
import logging
import os
import random
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from core.clock import SystemClock
from core.drivers.agent_protocol import (
    MAX_FRAME_BYTES,
    PROTOCOL_VERSION,
    ErrorPayload,
    Heartbeat,
    JobAssign,
    JobCancel,
    ProtocolError,
    Register,
    RobotRegistered,
    RunningJob,
    decode,
    encode,
)
from core.drivers.base import DriverError, OrderCancelled
from core.errors import ConfigError, LabconsoleError

__all__ = ["AgentClient", "AgentJob", "AgentRefused", "load_handler"]

log = logging.getLogger("labconsole.agent")

Handler = Callable[["AgentJob"], Any]


class AgentRefused(LabconsoleError):
    """The console refused this agent (``code``: unauthorized, unsupported_version, ...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def load_handler(spec: str) -> Handler:
    """``module:function`` -> the function. Raises ConfigError naming what is wrong."""
    module_name, colon, attr = spec.partition(":")
    if not colon or not module_name or not attr:
        raise ConfigError(f"--handler {spec!r}: expected module:function, e.g. mylab.arm:move_plate")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"--handler {spec!r}: cannot import {module_name!r}: {exc}") from None
    target: Any = module
    for part in attr.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise ConfigError(f"--handler {spec!r}: {module_name!r} has no {attr!r}")
    if not callable(target):
        raise ConfigError(f"--handler {spec!r}: {attr!r} is not a function")
    handler: Handler = target
    return handler


@dataclass(eq=False)
class AgentJob:
    """One job as a handler sees it.

    Attributes:
        job_id: The console's order id.
        capability: ``"Feature.Command"``.
        inputs: The order's input parameters, typed (name -> value).
        order: The whole order as the console sent it (Data Services wire form).
        simulation: The workcell's description of the command (duration, outputs ...).
    """

    job_id: str
    capability: str
    inputs: dict[str, Any]
    order: dict[str, Any]
    simulation: dict[str, Any] | None
    _client: AgentClient = field(repr=False)
    cancel_event: threading.Event = field(default_factory=threading.Event, repr=False)
    task: asyncio.Task[Any] | None = field(default=None, repr=False)
    progress_value: float | None = None

    @property
    def agent(self) -> str:
        """This agent's name."""
        return self._client.name

    @property
    def cancelled(self) -> bool:
        """True once the console asked to stop this job."""
        return self.cancel_event.is_set()

    def progress(self, fraction: float | None = None, values: Mapping[str, Any] | None = None) -> None:
        """Report progress (0..1) and intermediate values; callable from any thread."""
        if fraction is not None:
            fraction = min(1.0, max(0.0, float(fraction)))
        self.progress_value = fraction
        payload = {"job_id": self.job_id, "progress": fraction,
                   "values": dict(values) if values is not None else None}
        loop = self._client.loop
        if loop is None:
            return
        try:
            in_loop = asyncio.get_running_loop() is loop
        except RuntimeError:
            in_loop = False
        if in_loop:
            self._client.emit("job_progress", payload)
        else:
            loop.call_soon_threadsafe(self._client.emit, "job_progress", payload)

    async def simulate(self) -> dict[str, Any]:
        """Run the built-in simulation of this command; returns its outputs."""
        return await self._client.simulate_job(self)


class AgentClient:
    """A robot agent: registers with the console as ``name`` and executes its jobs.

    Args:
        console: ``ws://HOST:PORT`` (or ``wss://`` behind a TLS proxy) of the console's hub.
        name: The instrument id this agent is in the console's workcell.
        capabilities: ``"Feature.Command"`` names it offers.
        token: Token the console requires for this agent, if any.
        handler: Runs each job (see the module docstring); None simulates.
        max_concurrent: Jobs it runs at once (None: as many as the console sends).
        reconnect: Reconnect when the connection drops (False: return instead).
        seed: Seed of the built-in simulation.
    """

    def __init__(self, console: str, name: str, capabilities: list[str], *, token: str | None = None,
                 handler: Handler | None = None, max_concurrent: int | None = None,
                 reconnect: bool = True, max_backoff: float = 5.0, seed: int | str | None = None) -> None:
        parts = urlsplit(console)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise ConfigError(f"--console {console!r}: expected ws://HOST:PORT or wss://HOST:PORT")
        self.console = console
        self.loopback = parts.hostname in ("127.0.0.1", "localhost", "::1")
        self.name = name
        self.capabilities = list(capabilities)
        self.token = token
        self.handler = handler
        self.max_concurrent = max_concurrent
        self.reconnect = reconnect
        self.max_backoff = max_backoff
        self.seed = seed if seed is not None else f"agent:{name}"
        self.loop: asyncio.AbstractEventLoop | None = None
        self.jobs: dict[str, AgentJob] = {}
        self.registered = asyncio.Event()
        self.heartbeat_interval = 5.0
        self.latency: float | None = None
        self._results: dict[str, tuple[str, dict[str, Any]]] = {}
        self._queue: asyncio.Queue[tuple[str, dict[str, Any], str | None]] | None = None
        self._sims: dict[str, Any] = {}
        self._stopping = asyncio.Event()
        self._beat_sent: dict[str, float] = {}

    # ------------------------------------------------------------------ lifecycle

    def stop(self) -> None:
        """Leave :meth:`run` (the current connection closes)."""
        self._stopping.set()

    async def run(self) -> None:
        """Connect, register, execute jobs; reconnect on loss until :meth:`stop`.

        Raises:
            AgentRefused: the console refused the registration.
        """
        self.loop = asyncio.get_running_loop()
        backoff = 0.2
        while not self._stopping.is_set():
            try:
                async with connect(self.console, max_size=MAX_FRAME_BYTES, compression=None,
                                   open_timeout=10, ping_interval=20, ping_timeout=20,
                                   proxy=None if self.loopback else True,
                                   user_agent_header=f"labconsole-agent/{PROTOCOL_VERSION}") as ws:
                    backoff = 0.2
                    await self._session(ws)
            except AgentRefused as exc:
                if exc.code != "already_connected":
                    raise
                log.warning("%s", exc)
            except (OSError, ConnectionClosed, InvalidHandshake, TimeoutError) as exc:
                log.warning("connection to %s: %s", self.console, exc or type(exc).__name__)
            except InvalidURI as exc:
                raise ConfigError(f"--console {self.console!r}: {exc}") from None
            self.registered.clear()
            if not self.reconnect or self._stopping.is_set():
                break
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(backoff):
                    await self._stopping.wait()
            backoff = min(backoff * 2, self.max_backoff)
        for job in list(self.jobs.values()):
            if job.task is not None:
                job.task.cancel()

    async def _session(self, ws: ClientConnection) -> None:
        hello = Register(name=self.name, capabilities=self.capabilities, token=self.token,
                         agent_version=f"labconsole/{PROTOCOL_VERSION}", hostname=socket.gethostname(),
                         pid=os.getpid(),
                         running=[RunningJob(job_id=j.job_id, capability=j.capability,
                                             progress=j.progress_value) for j in self.jobs.values()],
                         finished=list(self._results))
        await ws.send(encode("register", hello)[0])
        async with asyncio.timeout(10):
            frame = await ws.recv()
        try:
            envelope, answer = decode(frame)
        except ProtocolError as exc:
            raise AgentRefused(exc.code, f"console {self.console} answered with a bad frame: {exc.message}") from None
        if isinstance(answer, ErrorPayload):
            raise AgentRefused(answer.code, f"console {self.console} refused agent {self.name!r}: "
                                            f"{answer.message}")
        if not isinstance(answer, RobotRegistered):
            raise AgentRefused("protocol", f"console {self.console} answered register with {envelope.type!r}")
        self.heartbeat_interval = answer.heartbeat_interval
        for job_id in answer.cancel:
            self._cancel_job(job_id)
        queue: asyncio.Queue[tuple[str, dict[str, Any], str | None]] = asyncio.Queue()
        self._queue = queue
        for kind, payload in list(self._results.values()):
            queue.put_nowait((kind, payload, None))
        self.registered.set()
        log.info("registered with %s as %s (%s)", self.console, self.name, ", ".join(self.capabilities))
        writer = asyncio.create_task(self._writer(ws, queue), name="agent-writer")
        beater = asyncio.create_task(self._beats(), name="agent-heartbeat")
        stopper = asyncio.create_task(self._stopping.wait(), name="agent-stop")
        reader = asyncio.create_task(self._reader(ws), name="agent-reader")
        try:
            done, _ = await asyncio.wait({writer, reader, stopper}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stopper and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        finally:
            self._queue = None
            for task in (writer, beater, stopper, reader):
                task.cancel()
            await asyncio.gather(writer, beater, stopper, reader, return_exceptions=True)

    async def _writer(self, ws: ClientConnection, queue: asyncio.Queue[Any]) -> None:
        while True:
            kind, payload, reply_to = await queue.get()
            text, msg_id = encode(kind, payload, reply_to=reply_to)
            if kind == "heartbeat" and reply_to is None:
                self._beat_sent[msg_id] = time.perf_counter()
            await ws.send(text)
            if kind in ("job_complete", "job_failed"):
                self._results.pop(payload["job_id"], None)

    async def _beats(self) -> None:
        """A heartbeat every interval, +-10 % at random: agents that registered together (after
        the console restarted) drift apart instead of reaching the console's loop in one burst."""
        jitter = random.Random()
        while True:
            self.emit("heartbeat", {"running": list(self.jobs)})
            if len(self._beat_sent) > 100:
                self._beat_sent.clear()
            await asyncio.sleep(self.heartbeat_interval * jitter.uniform(0.9, 1.1))

    def emit(self, kind: str, payload: BaseModel | dict[str, Any], reply_to: str | None = None) -> None:
        body = payload.model_dump(mode="json") if isinstance(payload, BaseModel) else payload
        if kind in ("job_complete", "job_failed"):
            self._results[body["job_id"]] = (kind, body)
        if self._queue is not None:
            self._queue.put_nowait((kind, body, reply_to))

    # ------------------------------------------------------------------ frames from the console

    async def _reader(self, ws: ClientConnection) -> None:
        async for frame in ws:
            try:
                envelope, payload = decode(frame)
            except ProtocolError as exc:
                log.warning("bad frame from the console: %s: %s", exc.code, exc.message)
                self.emit("error", {"code": exc.code, "message": exc.message}, exc.reply_to)
                continue
            if isinstance(payload, Heartbeat):
                if envelope.reply_to is None:
                    self.emit("heartbeat", {"running": list(self.jobs)}, envelope.id)
                else:
                    sent = self._beat_sent.pop(envelope.reply_to, None)
                    if sent is not None:
                        self.latency = time.perf_counter() - sent
            elif isinstance(payload, JobAssign):
                self._assign(payload)
            elif isinstance(payload, JobCancel):
                accepted = self._cancel_job(payload.job_id)
                self.emit("job_cancel", {"job_id": payload.job_id, "accepted": accepted}, envelope.id)
            elif isinstance(payload, ErrorPayload):
                log.warning("the console reports a bad frame from this agent: %s: %s",
                            payload.code, payload.message)
            else:
                self.emit("error", {"code": "unexpected", "message":
                                     f"a {envelope.type!r} frame is not expected from the console"},
                           envelope.id)

    def _assign(self, assign: JobAssign) -> None:
        def reject(code: str, message: str, retryable: bool = False) -> None:
            log.warning("job %s rejected: %s", assign.job_id, message)
            self.emit("job_reject", {"job_id": assign.job_id, "code": code, "message": message,
                                      "retryable": retryable})

        if assign.job_id in self.jobs or assign.job_id in self._results:
            return reject("AlreadyRunning", f"order {assign.job_id} is already running here")
        if assign.capability not in self.capabilities:
            return reject("UnsupportedCapability", f"agent {self.name!r} does not offer "
                          f"{assign.capability!r} (it offers: {', '.join(self.capabilities)})")
        if self.max_concurrent is not None and len(self.jobs) >= self.max_concurrent:
            return reject("InstrumentBusy", f"busy ({len(self.jobs)} of {self.max_concurrent} "
                          f"jobs running)", retryable=True)
        job = AgentJob(assign.job_id, assign.capability, dict(assign.inputs), dict(assign.order),
                       assign.simulation, self)
        self.jobs[job.job_id] = job
        job.task = asyncio.create_task(self._run_job(job), name=f"agent-job-{job.job_id}")
        self.emit("job_accept", {"job_id": job.job_id})

    def _cancel_job(self, job_id: str) -> bool:
        job = self.jobs.get(job_id)
        if job is None:
            return False
        job.cancel_event.set()
        sim = self._sims.get(job.capability)
        if sim is not None and job_id in sim.running:
            asyncio.ensure_future(sim.cancel(job_id))
        elif job.task is not None and not self._threaded(job):
            job.task.cancel()
        return True

    def _threaded(self, job: AgentJob) -> bool:
        return self.handler is not None and not inspect.iscoroutinefunction(self.handler)

    # ------------------------------------------------------------------ running a job

    async def _run_job(self, job: AgentJob) -> None:
        started = time.perf_counter()
        log.debug("job %s: %s started", job.job_id, job.capability)
        try:
            if self.handler is None:
                result: Any = await self.simulate_job(job)
            elif inspect.iscoroutinefunction(self.handler):
                result = await self.handler(job)
            else:
                result = await asyncio.to_thread(self.handler, job)
                if inspect.isawaitable(result):
                    result = await result
            outputs = dict(result) if isinstance(result, Mapping) else {}
            if result is not None and not isinstance(result, Mapping):
                raise TypeError(f"the handler returned {type(result).__name__}, expected a dict of outputs")
            json.dumps(outputs, allow_nan=True)
        except asyncio.CancelledError:
            if not job.cancelled:
                raise
            self._failed(job, OrderCancelled(f"{job.capability} of order {job.job_id} cancelled"))
        except DriverError as exc:
            self._failed(job, exc)
        except Exception as exc:  # noqa: BLE001 - the handler's bug is the job's failure, not the agent's
            log.exception("job %s: handler failed", job.job_id)
            self._failed(job, DriverError(f"{type(exc).__name__}: {exc}", code="AgentHandlerError"))
        else:
            log.debug("job %s: complete in %.3f s", job.job_id, time.perf_counter() - started)
            self.emit("job_complete", {"job_id": job.job_id, "outputs": outputs,
                                        "duration": round(time.perf_counter() - started, 6)})
        finally:
            self.jobs.pop(job.job_id, None)

    def _failed(self, job: AgentJob, exc: DriverError) -> None:
        code = OrderCancelled.code if job.cancelled and exc.code in ("OrderCancelled", "Cancelled") else exc.code
        log.info("job %s: failed: %s (%s, %s)", job.job_id, exc.message, code,
                 "retryable" if exc.retryable else "not retryable")
        self.emit("job_failed", {"job_id": job.job_id, "code": code, "message": exc.message,
                                  "retryable": exc.retryable})

    async def simulate_job(self, job: AgentJob) -> dict[str, Any]:
        from core.drivers.simulated import SimulatedDriver
        from core.orders import Order
        from core.workcell import InstrumentConfig

        if job.simulation is None:
            raise DriverError(f"no simulation given for {job.capability}", code="NoSimulation")
        key = job.capability + json.dumps(job.simulation, sort_keys=True)
        sim = self._sims.get(key)
        if sim is None:
            kind = job.capability.partition(".")[0]
            config = InstrumentConfig(id=self.name if _is_id(self.name) else "agent", kind=kind,
                                      driver="simulated", max_concurrent=10_000,
                                      capabilities={job.capability: job.simulation})
            sim = SimulatedDriver(config, SystemClock(), seed=self.seed)
            await sim.connect()
            self._sims[key] = sim
        self._sims[job.capability] = sim  # where a cancel finds it
        order = Order.from_dict({**job.order, "identifier": job.job_id,
                                 "templateName": job.capability}, source=f"job {job.job_id}")
        if job.cancelled:
            raise OrderCancelled(f"{job.capability} of order {job.job_id} cancelled")
        return await sim.execute(order, job.progress)


def _is_id(text: str) -> bool:
    return bool(text) and text[0].isascii() and text[0].isalpha() and all(
        c.isascii() and (c.isalnum() or c in "_.-") for c in text)
