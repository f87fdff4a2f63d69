"""SiLA 2 instruments: one :class:`SilaDriver` per SiLA 2 server, on ``sila2`` 0.14.0.

The workcell file maps each capability to a command of the server's feature definitions::

    - id: PlateReader1
      kind: PlateReader
      driver: sila
      options:
        host: 127.0.0.1
        port: 50101
        insecure: true                       # loopback only; otherwise root_certs / server_cert
        commands:
          PlateReader.ReadPlate:
            command: PlateReader/ReadPlate    # Feature/Command of the server's FDL
            parameters: {plate: PlateId}      # order parameter -> SiLA parameter
            responses: {MeanAbsorbance: absorbance}   # SiLA response -> output parameter
            errors: {LampNotReady: {retryable: true}, PlateNotPresent: false}
      capabilities:
        PlateReader.ReadPlate: 90s           # nominal duration (estimates, simulator)

:meth:`SilaDriver.connect` reads every feature definition from the server and refuses a
mapping that does not fit it (unknown feature, command, parameter, response or error), naming
the file and line of the wrong entry. Unobservable commands are one call; observable commands
report their progress and intermediate responses to the progress sink while they run. SiLA
defined execution errors become :class:`DriverError` with the error identifier as ``code`` and
``retryable`` as the workcell says; validation errors name the parameter. Cancel goes through
the standard ``CancelController`` feature when the server offers it; otherwise the order ends as
:class:`OutcomeUnknown` (it may still run on the instrument). A lost link or a server restart
(new server UUID) while a command runs also ends it as :class:`OutcomeUnknown`; the driver then
goes Offline and reconnects by itself with exponential backoff.

``sila2`` is blocking and threaded: every gRPC call runs on this driver's own small thread
pool, progress is polled from the loop, so the event loop never waits on the network. Four
``sila2`` limits are worked around here: it switches protobuf to its pure-Python backend at
import (set before import below; it fails if another protobuf backend was loaded first), it has
no per-call deadline (the heartbeat calls the gRPC stub with a timeout), the client has no
cancel (the CancelController feature is called instead), and a lost info stream is silent
(detected from the library's info thread). These reach into ``sila2`` internals
(``_features``, ``_grpc_stub``, the info thread): keep this adapter thin. Move it to
``unitelabs-sila`` (asyncio-native, per-call timeouts, no global protobuf switch) when one of
these holds: ``sila2`` gets no release for a new Python or grpcio/protobuf we need; another
dependency needs the upb protobuf backend; the internals above change; or the thread cost
matters (more than a few dozen SiLA instruments per console).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")  # before sila2 imports
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # gRPC core logs every GOAWAY at INFO otherwise

import grpc  # noqa: E402
from sila2.client import SilaClient  # noqa: E402
from sila2.framework import (  # noqa: E402
    CommandExecutionNotAccepted,
    DefinedExecutionError,
    SilaConnectionError,
    UndefinedExecutionError,
    ValidationError,
)
from sila2.framework.command.observable_command import ObservableCommand  # noqa: E402
from sila2.framework.data_types.boolean import Boolean  # noqa: E402
from sila2.framework.data_types.constrained import Constrained  # noqa: E402
from sila2.framework.data_types.integer import Integer  # noqa: E402
from sila2.framework.data_types.list import List as SilaList  # noqa: E402
from sila2.framework.data_types.real import Real  # noqa: E402
from sila2.framework.data_types.string import String  # noqa: E402

from core.clock import Clock, to_datetime  # noqa: E402
from core.drivers.base import (  # noqa: E402
    DriverError,
    DriverInfo,
    DriverState,
    DriverStatus,
    InstrumentUnavailable,
    OrderCancelled,
    OutcomeUnknown,
    ProgressSink,
    StatusKey,
    WorkcellEntry,
    announce_status,
    link_state,
    raise_interrupt,
    resolve_capability,
)
from core.errors import Problem, Where, WorkcellError  # noqa: E402
from core.events import EventBus  # noqa: E402
from core.orders import Order  # noqa: E402
from core.workcell import InstrumentConfig, SilaCommandSpec, SilaOptions  # noqa: E402

if TYPE_CHECKING:
    from core.workcell import Workcell

__all__ = ["SilaDriver"]

log = logging.getLogger(__name__)

POLL_INTERVAL = 0.05
"""Seconds between two looks at a running observable command's progress."""
BACKOFF_FIRST, BACKOFF_MAX = 0.2, 30.0
"""Reconnect delays after a lost link: first, then doubling up to the maximum (seconds)."""
CANCEL_CONTROLLER = "CancelController"
_CLIENT_LOCK = threading.Lock()
"""One SilaClient created at a time in the process: concurrent creation races in sila2's
generation of the features' protobuf modules (``KeyError: 'SiLAService_pb2'``)."""


def _key(name: str) -> str:
    return "".join(c for c in name.lower() if c.isalnum())


@dataclass
class _Bound:
    """One capability bound to a command of the connected server."""

    capability: str
    spec: SilaCommandSpec
    command: Any  # sila2 ClientObservableCommand | ClientUnobservableCommand
    parameters: dict[str, Any]  # SiLA parameter identifier -> sila2 Parameter node
    observable: bool
    intermediate: bool


@dataclass
class _Run:
    order_id: str
    capability: str
    task: asyncio.Task[Any] | None
    bound: _Bound
    execution_uuid: str | None = None
    progress: float | None = None
    instance: Any = None  # the sila2 command instance, once initiated
    interrupt: DriverError | None = None
    uuid_known: asyncio.Event = field(default_factory=asyncio.Event)


class SilaDriver(WorkcellEntry):
    """A SiLA 2 server satisfying :class:`~core.drivers.base.Driver`.

    Args:
        config: The instrument as the workcell file declares it (``options`` are
            :class:`~core.workcell.SilaOptions`).
        clock: Timestamps of heartbeats (network waits are real time).
        bus: If given, state changes are published as ``InstrumentStatusChanged``.
        workcell: The workcell the instrument belongs to: locates messages (file:line) and
            certificate files (relative to the workcell file).
        index: The instrument's position in ``workcell.instruments``.
    """

    def __init__(self, config: InstrumentConfig, clock: Clock | None = None, *,
                 bus: EventBus | None = None, workcell: Workcell | None = None,
                 index: int | None = None, max_threads: int = 8) -> None:
        super().__init__(config, clock, bus, workcell, index)
        self.options = SilaOptions.model_validate(config.options)
        self.info = DriverInfo.of(config, endpoint=f"{self.address} ({self.security})")
        self._executor = ThreadPoolExecutor(max_threads, thread_name_prefix=f"sila-{config.id}")
        self._client: SilaClient | None = None
        self._server_uuid: str | None = None
        self.server_name = ""
        self._has_cancel = False
        self._bound: dict[str, _Bound] = {}
        self._runs: dict[str, _Run] = {}
        self._lock = asyncio.Lock()
        self._connecting = False
        self._wanted = False  # connect() called and disconnect() not: reconnect after losses
        self._reconnect_task: asyncio.Task[None] | None = None
        self._detail = "not connected"
        self._last_heartbeat: float | None = None
        self._run_count = 0
        self._published: StatusKey | None = None

    # ------------------------------------------------------------------ where

    @property
    def address(self) -> str:
        return f"{self.options.host}:{self.options.port}"

    @property
    def security(self) -> str:
        """How the link is trusted, as the workcell file says."""
        o = self.options
        if o.insecure:
            return "plain text, this machine only"
        if o.server_cert:
            return f"TLS, pinned certificate {o.server_cert}"
        if o.root_certs:
            return f"TLS, CA file {o.root_certs}"
        return "TLS, the system's CAs"

    # ------------------------------------------------------------------ Driver protocol

    async def connect(self) -> None:
        self._wanted = True
        async with self._lock:
            if self._client is not None:
                return
            self._connecting = True
            self._announce()
            try:
                await self._open()
            except BaseException as exc:
                if not isinstance(exc, DriverError | WorkcellError):
                    self._detail = f"connect failed: {exc}"
                raise
            finally:
                self._connecting = False
                self._announce()

    async def disconnect(self) -> None:
        self._wanted = False
        if self._reconnect_task is not None:
            self._reconnect_task.cancel()
            self._reconnect_task = None
        self._lose(f"{self.instrument_id}: disconnected", "disconnected", reconnect=False)

    async def status(self) -> DriverStatus:
        return DriverStatus(self.state, self._detail, list(self._runs),
                            to_datetime(self._last_heartbeat) if self._last_heartbeat else None)

    async def heartbeat(self) -> float:
        self._require_connected()
        started = time.monotonic()
        try:
            uuid = await self._read_uuid()
        except Exception as exc:  # noqa: BLE001 - any failure is a missing heartbeat
            detail = (f"no heartbeat answer within {self.options.heartbeat_timeout:g} s"
                      if _timed_out(exc) else f"heartbeat failed ({_why(exc)})")
            self._lose(f"{self.instrument_id}: {detail}", detail)
            raise InstrumentUnavailable(f"{self.instrument_id}: SiLA server {self.address}: {detail}",
                                        instrument_id=self.instrument_id) from None
        if uuid != self._server_uuid:
            detail = f"server restarted (server UUID {self._server_uuid} -> {uuid})"
            self._lose(f"{self.instrument_id}: {detail}", detail)
            raise InstrumentUnavailable(f"{self.instrument_id}: SiLA server {self.address}: {detail}",
                                        instrument_id=self.instrument_id)
        self._last_heartbeat = self.clock.now()
        return time.monotonic() - started

    async def cancel(self, order_id: str) -> bool:
        run = self._runs.get(order_id)
        if run is None or run.task is None:
            return False
        if run.interrupt is not None:
            return isinstance(run.interrupt, OrderCancelled)
        where = f"{self.instrument_id}: {run.capability} of order {order_id}"
        if not (run.bound.observable and self._has_cancel and self._client is not None):
            why = ("an unobservable command cannot be cancelled" if not run.bound.observable
                   else "the server has no CancelController")
            run.interrupt = OutcomeUnknown(f"{where} was abandoned, not cancelled ({why}); it may "
                                           f"still run on the instrument or have run",
                                           instrument_id=self.instrument_id)
            run.task.cancel()
            return False
        try:
            await asyncio.wait_for(run.uuid_known.wait(), self.options.connect_timeout)
            cancel = self._client._features[CANCEL_CONTROLLER]._client_commands["CancelCommand"]
            await self._call(cancel, run.execution_uuid)
        except (Exception, TimeoutError) as exc:  # noqa: BLE001 - not confirmed: False
            log.info("%s: cancel not confirmed: %s", where, _why(exc))
            return False
        if run.interrupt is None and run.task is not None and not run.task.done():
            run.interrupt = OrderCancelled(f"{where} cancelled (SiLA CancelController)",
                                           instrument_id=self.instrument_id)
            run.task.cancel()
        return True

    async def execute(self, order: Order, progress: ProgressSink) -> dict[str, Any]:
        self._require_connected()
        capability = resolve_capability(order, self.info.capabilities, self.instrument_id)
        bound = self._bound[capability]
        order_id = order.identifier or f"{self.instrument_id}-run-{self._run_count + 1}"
        self._run_count += 1
        if order_id in self._runs:
            raise DriverError(f"{self.instrument_id}: order {order_id} is already running here",
                              code="AlreadyRunning", instrument_id=self.instrument_id)
        params = self._parameters(order, order_id, bound)
        run = _Run(order_id, capability, asyncio.current_task(), bound)
        self._runs[order_id] = run
        self._announce()
        try:
            if bound.observable:
                return await self._observable(run, params, progress)
            return await self._unobservable(run, params)
        except asyncio.CancelledError:
            raise_interrupt(run.interrupt, run.task)
        finally:
            del self._runs[order_id]
            self._announce()

    # ------------------------------------------------------------------ state

    @property
    def state(self) -> DriverState:
        return link_state(connecting=self._connecting, connected=self._client is not None, busy=bool(self._runs))

    @property
    def server_uuid(self) -> str | None:
        """UUID of the connected server (None when not connected)."""
        return self._server_uuid

    @property
    def has_cancel(self) -> bool:
        """Whether the connected server offers the CancelController feature."""
        return self._has_cancel

    def _require_connected(self) -> None:
        if self._client is None:
            raise InstrumentUnavailable(f"{self.instrument_id}: not connected to SiLA server "
                                        f"{self.address}" + (f" ({self._detail})" if self._detail else ""),
                                        instrument_id=self.instrument_id)

    def _announce(self) -> None:
        self._published = announce_status(self.bus, self._published, self.instrument_id, self.state,
                                          self._detail, self._runs, self.config.enabled)

    def _lose(self, message: str, detail: str, *, except_run: _Run | None = None,
              reconnect: bool = True) -> None:
        """The link is gone: close it, end running orders as OutcomeUnknown, reconnect later."""
        client, self._client, self._server_uuid = self._client, None, None
        self._detail = detail
        if client is not None:
            self._executor.submit(client.close)
        for run in list(self._runs.values()):
            if run is not except_run and run.interrupt is None and run.task is not None:
                run.interrupt = OutcomeUnknown(
                    f"{message} during {run.capability} of order {run.order_id}; it may or may "
                    f"not have run", instrument_id=self.instrument_id)
                run.task.cancel()
        self._announce()
        if reconnect and self._wanted and (self._reconnect_task is None or self._reconnect_task.done()):
            self._reconnect_task = asyncio.get_running_loop().create_task(
                self._reconnect(), name=f"sila-reconnect-{self.instrument_id}")

    async def _reconnect(self) -> None:
        delay = BACKOFF_FIRST
        while self._wanted and self._client is None:
            await asyncio.sleep(delay)
            try:
                await self.connect()
            except WorkcellError as exc:  # the server no longer fits the workcell: operator
                self._detail = f"reconnect refused: {exc.summary}"
                self._announce()
                return
            except Exception as exc:  # noqa: BLE001 - try again later
                log.info("%s: reconnect failed, next try in %.1f s: %s", self.instrument_id,
                         min(delay * 2, BACKOFF_MAX), exc)
                delay = min(delay * 2, BACKOFF_MAX)

    # ------------------------------------------------------------------ connecting

    async def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run one blocking ``sila2`` call on the driver's threads."""
        return await asyncio.get_running_loop().run_in_executor(self._executor,
                                                                partial(fn, *args, **kwargs))

    def _credentials(self) -> dict[str, Any]:
        o = self.options
        if o.insecure:
            return {"insecure": True}
        name = o.server_cert or o.root_certs
        if name is None:
            return {}  # the system's trusted CAs
        path = self._base_dir / name
        try:
            return {"root_certs": path.read_bytes()}
        except OSError as exc:
            key = "server_cert" if o.server_cert else "root_certs"
            raise InstrumentUnavailable(f"{self.where('options', key)}: {self.instrument_id}: cannot "
                                        f"read {path}: {exc.strerror}",
                                        instrument_id=self.instrument_id) from None

    def _dial(self, credentials: dict[str, Any]) -> tuple[SilaClient, str, str, list[tuple[str, Any]]]:
        """Connect and read who answered: (client, server UUID, server name, identity pairs)."""
        with _CLIENT_LOCK:  # sila2 builds protobuf modules while it creates a client: not thread-safe
            client = SilaClient(self.options.host, self.options.port, **credentials)
        try:
            service = client.SiLAService
            uuid, name = str(service.ServerUUID.get()), service.ServerName.get()
            identity: list[tuple[str, Any]] = [
                ("Server name", name), ("Server type", service.ServerType.get()),
                ("Server UUID", uuid), ("Server version", service.ServerVersion.get()),
                ("Vendor", service.ServerVendorURL.get()),
                ("Description", service.ServerDescription.get()),
                ("Features", sorted(f for f in client._features if f != "SiLAService")),
                ("Cancel", "CancelController" if CANCEL_CONTROLLER in client._features
                 else "not offered (orders cannot be stopped)")]
            return client, uuid, name, identity
        except BaseException:
            client.close()
            raise

    async def _open(self) -> None:
        credentials = self._credentials()
        future = asyncio.get_running_loop().run_in_executor(self._executor, self._dial, credentials)
        where = self.where("options", "host")
        try:
            client, uuid, name, identity = await asyncio.wait_for(asyncio.shield(future),
                                                        self.options.connect_timeout)
        except TimeoutError:
            future.add_done_callback(_close_late)
            raise self._unreachable(where, f"no answer within {self.options.connect_timeout:g} s") from None
        except Exception as exc:  # noqa: BLE001 - sila2/grpc raise many kinds
            why = _why(exc)
            mismatch = self._tls_mismatch(why)
            if mismatch is not None:  # point at the security option, say what differs
                raise self._unreachable(self.where("options", mismatch[0]), f"{why}; {mismatch[1]}") from None
            raise self._unreachable(where, why) from None
        try:
            bound = self._bind(client)
        except WorkcellError as exc:
            self._detail = exc.summary
            self._executor.submit(client.close)
            raise
        self._client, self._server_uuid, self.server_name = client, uuid, name
        self.info = self.info.identified(identity)
        self._bound = bound
        self._has_cancel = CANCEL_CONTROLLER in client._features
        self._detail = ""
        self._last_heartbeat = self.clock.now()

    def _tls_mismatch(self, why: str) -> tuple[str, str] | None:
        """(option key, explanation) when a failed connect looks like the console and the server
        disagree about TLS; None otherwise."""
        o, low = self.options, why.lower()
        if o.insecure:
            if "socket closed" in low:
                return "insecure", ("the server closed the plain-text connection: it may require TLS "
                                    "(give server_cert or root_certs instead of insecure: true)")
            return None
        if not any(word in low for word in ("ssl", "handshake", "certificate")):
            return None
        key = "server_cert" if o.server_cert else "root_certs" if o.root_certs else "host"
        if "wrong_version_number" in low or "wrong version number" in low:
            return key, ("TLS handshake failed: the server speaks plain text, not TLS (on this "
                         "machine only, use insecure: true)")
        trusted = o.server_cert or o.root_certs or "the system's CAs"
        return key, f"TLS handshake failed: the server's certificate is not trusted by {trusted}"

    def _unreachable(self, where: Where, why: str) -> InstrumentUnavailable:
        self._detail = f"cannot reach SiLA server {self.address}: {why}"
        return InstrumentUnavailable(f"{where}: instrument {self.instrument_id}: cannot reach SiLA "
                                     f"server {self.address}: {why}", instrument_id=self.instrument_id)

    def _bind(self, client: SilaClient) -> dict[str, _Bound]:
        """Check every capability's mapping against the server's features (all problems)."""
        problems: list[Problem] = []
        bound: dict[str, _Bound] = {}
        features = client._features
        offered = ", ".join(sorted(f for f in features if f != "SiLAService")) or "none"
        for capability in sorted(self.info.capabilities):
            spec = self.options.commands.get(capability)
            at = ("options", "commands", capability)
            if spec is None:
                problems.append(Problem(self.where("capabilities", capability),
                                        f"capability {capability!r} has no SiLA command"))
                continue
            feature_id, _, command_id = spec.command.partition("/")
            feature = features.get(feature_id)
            if feature is None:
                problems.append(Problem(self.where(*at, "command"),
                                        f"SiLA server {self.address} has no feature "
                                        f"{feature_id!r} (features: {offered})"))
                continue
            command = feature._client_commands.get(command_id)
            if command is None:
                problems.append(Problem(self.where(*at, "command"),
                                        f"feature {feature_id!r} has no command {command_id!r} "
                                        f"(commands: {', '.join(sorted(feature._client_commands))})"))
                continue
            node = command._wrapped_command
            params = {p._identifier: p for p in node.parameters}
            answers = {r._identifier for r in node.responses}
            observable = isinstance(node, ObservableCommand)
            intermediate = False
            if isinstance(node, ObservableCommand) and node.intermediate_responses:
                intermediate = True
                answers |= {r._identifier for r in node.intermediate_responses}
            errors = {e._identifier for e in node.defined_execution_errors}
            for name, target in spec.parameters.items():
                if target not in params:
                    problems.append(Problem(self.where(*at, "parameters", name),
                                            f"{spec.command} has no parameter {target!r} "
                                            f"(parameters: {', '.join(params) or 'none'})"))
            for name in spec.responses:
                if name not in answers:
                    problems.append(Problem(self.where(*at, "responses", name),
                                            f"{spec.command} has no response {name!r} "
                                            f"(responses: {', '.join(sorted(answers)) or 'none'})"))
            for name in spec.errors:
                if name not in errors:
                    problems.append(Problem(self.where(*at, "errors", name),
                                            f"{spec.command} defines no error {name!r} "
                                            f"(errors: {', '.join(sorted(errors)) or 'none'})"))
            bound[capability] = _Bound(capability, spec, command, params, observable, intermediate)
        if problems:
            raise WorkcellError(f"instrument {self.instrument_id}: the workcell does not fit SiLA "
                                f"server {self.address}", problems)
        return bound

    async def _read_uuid(self) -> str:
        """The server's UUID, with a deadline (``sila2`` itself has none)."""
        client = self._client
        if client is None:
            raise InstrumentUnavailable("not connected")
        timeout = self.options.heartbeat_timeout

        def read() -> str:
            service = client._features["SiLAService"]
            prop = service._unobservable_properties["ServerUUID"]
            message = service._grpc_stub.Get_ServerUUID(prop.get_parameters_message(), timeout=timeout)
            return str(prop.to_native_type(message))

        return await asyncio.wait_for(self._call(read), timeout + 1.0)

    # ------------------------------------------------------------------ one order

    def _parameters(self, order: Order, order_id: str, bound: _Bound) -> dict[str, Any]:
        """The order's inputs as the command's parameters, typed and checked one by one."""
        spec = bound.spec
        by_key = {_key(p): p for p in bound.parameters}
        given: dict[str, tuple[str, Any]] = {}
        for p in order.inputParameters:
            target = spec.parameters.get(p.name) or by_key.get(_key(p.name))
            if target is not None and target not in given:
                given[target] = (p.name, p.typed_value)
        where = f"{self.instrument_id}: order {order_id}: {bound.capability} ({spec.command})"
        params: dict[str, Any] = {}
        for ident, node in bound.parameters.items():
            if ident not in given:
                names = [k for k, v in spec.parameters.items() if v == ident]
                raise DriverError(f"{where}: parameter {ident!r} is missing (give it as "
                                  f"{' or '.join(repr(n) for n in names or [ident])})",
                                  code="InvalidParameter", instrument_id=self.instrument_id)
            name, value = given[ident]
            try:
                value = _convert(node.data_type, value)
                node.data_type.to_message(value)  # checks constraints before anything is sent
            except (ValidationError, ValueError, TypeError) as exc:
                raise DriverError(f"{where}: parameter {ident!r} (from {name!r}) = {value!r}: "
                                  f"{getattr(exc, 'message', None) or exc}",
                                  code="ValidationError", instrument_id=self.instrument_id) from None
            params[ident] = value
        return params

    def _outputs(self, values: Mapping[str, Any], bound: _Bound) -> dict[str, Any]:
        names = bound.spec.responses
        return {names.get(k, k): _plain(v) for k, v in values.items()}

    async def _unobservable(self, run: _Run, params: dict[str, Any]) -> dict[str, Any]:
        try:
            result = await self._call(run.bound.command, **params)
        except Exception as exc:  # noqa: BLE001 - translated
            raise await self._failed(exc, run) from None
        return self._outputs(result._asdict(), run.bound)

    async def _observable(self, run: _Run, params: dict[str, Any],
                          progress: ProgressSink) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        try:
            instance = await self._call(run.bound.command, **params)
        except Exception as exc:  # noqa: BLE001 - translated
            raise await self._failed(exc, run) from None
        run.execution_uuid, run.instance = str(instance.execution_uuid), instance
        run.uuid_known.set()
        subscription = None
        try:
            if run.bound.intermediate:
                def forward(item: Any) -> None:  # on a sila2 thread
                    loop.call_soon_threadsafe(self._intermediate, run, item, progress)

                subscription = await self._call(instance.subscribe_to_intermediate_responses)
                subscription.add_callback(forward)
            last: float | None = None
            resubscribed = 0
            while not instance.done:
                fraction = instance.progress
                if fraction is not None and fraction != last:
                    last = run.progress = fraction
                    progress(fraction, None)
                if not _info_alive(instance) and not instance.done:
                    # the status stream ended early: the link dropped or the server restarted
                    lost = await self._stream_lost(run)
                    if lost is not None or resubscribed >= 3:
                        raise lost or self._unknown(run, "the status stream keeps dropping")
                    resubscribed += 1
                    instance.cancel_execution_info_subscription()
                    instance = run.instance = type(instance)(
                        self._client, run.bound.command, instance.execution_uuid,
                        instance.lifetime_of_execution)
                await asyncio.sleep(POLL_INTERVAL)
            try:
                result = await self._call(instance.get_responses)
            except Exception as exc:  # noqa: BLE001 - translated
                raise await self._failed(exc, run) from None
            if last != 1.0:
                progress(1.0, None)
            return self._outputs(result._asdict(), run.bound)
        finally:
            instance.cancel_execution_info_subscription()
            if subscription is not None:
                subscription.cancel()

    def _intermediate(self, run: _Run, item: Any, progress: ProgressSink) -> None:
        if run.order_id in self._runs and run.interrupt is None:
            fraction = run.instance.progress if run.instance is not None else None
            run.progress = fraction if fraction is not None else run.progress
            progress(run.progress, self._outputs(item._asdict(), run.bound))

    def _unknown(self, run: _Run, why: str) -> OutcomeUnknown:
        return OutcomeUnknown(f"{self.instrument_id}: {run.capability} of order {run.order_id}: "
                              f"{why}; it may or may not have run", instrument_id=self.instrument_id)

    async def _stream_lost(self, run: _Run) -> OutcomeUnknown | None:
        """Why a command's status stream ended early: None if the server is still the same."""
        try:
            uuid = await self._read_uuid()
        except Exception as exc:  # noqa: BLE001 - unreachable
            detail = f"connection lost ({_why(exc)})"
        else:
            if uuid == self._server_uuid:
                return None
            detail = f"server restarted (server UUID {self._server_uuid} -> {uuid})"
        self._lose(f"{self.instrument_id}: {detail}", detail, except_run=run)
        return self._unknown(run, f"{detail} while it ran")

    async def _failed(self, exc: BaseException, run: _Run) -> DriverError:
        """The DriverError for a failed call of ``run``'s command."""
        spec = run.bound.spec
        where = f"{self.instrument_id}: {run.capability} of order {run.order_id} ({spec.command})"
        if isinstance(exc, DefinedExecutionError):
            error = spec.errors.get(exc.identifier)
            return DriverError(f"{where}: {exc.identifier}: {exc.message}", code=exc.identifier,
                               retryable=error.retryable if error else False,
                               instrument_id=self.instrument_id)
        if isinstance(exc, ValidationError):
            parameter = str(exc.parameter_fully_qualified_identifier or "?").rpartition("/")[2]
            return DriverError(f"{where}: parameter {parameter!r} rejected by the instrument: "
                               f"{exc.message}", code="ValidationError",
                               instrument_id=self.instrument_id)
        if isinstance(exc, CommandExecutionNotAccepted):
            return DriverError(f"{where}: not accepted: {exc}", code="CommandExecutionNotAccepted",
                               retryable=True, instrument_id=self.instrument_id)
        if isinstance(exc, UndefinedExecutionError):
            return DriverError(f"{where}: {exc.message}", code="UndefinedExecutionError",
                               instrument_id=self.instrument_id)
        if isinstance(exc, SilaConnectionError | grpc.RpcError):
            return await self._stream_lost(run) or self._unknown(run, f"call failed ({_why(exc)})")
        return DriverError(f"{where}: {type(exc).__name__}: {exc}", code="SilaError",
                           instrument_id=self.instrument_id)

    def __repr__(self) -> str:
        return f"SilaDriver({self.instrument_id!r}, {self.address}, state={self.state.value})"


# --------------------------------------------------------------------------- helpers


def _why(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, SilaConnectionError) and isinstance(exc.exception, grpc.RpcError):
        return f"{exc.exception.code().name}: {exc.exception.details()}"
    if isinstance(exc, grpc.RpcError):
        return f"{exc.code().name}: {exc.details()}"
    return str(exc) or type(exc).__name__


def _timed_out(exc: BaseException) -> bool:
    inner = getattr(exc, "exception", exc)
    return isinstance(exc, TimeoutError) or (isinstance(inner, grpc.RpcError)
                                             and inner.code() == grpc.StatusCode.DEADLINE_EXCEEDED)


def _close_late(future: Any) -> None:
    """A connect that answered after its deadline: close what it opened."""
    if not future.cancelled() and future.exception() is None:
        future.result()[0].close()


def _info_alive(instance: Any) -> bool:
    """Whether sila2's status stream thread of an observable command still runs."""
    thread = getattr(instance, "_ClientObservableCommandInstance__info_update_thread", None)
    return not isinstance(thread, threading.Thread) or thread.is_alive()


def _convert(data_type: Any, value: Any) -> Any:
    """An order value (typed from its string) as the SiLA parameter's Python type."""
    base = data_type.base_type if isinstance(data_type, Constrained) else data_type
    if isinstance(base, SilaList):
        items = json.loads(value) if isinstance(value, str) else value
        if not isinstance(items, list):
            raise TypeError("expected a list (JSON, e.g. [1, 2])")
        return [_convert(base.element_type, v) for v in items]
    if isinstance(base, Boolean):
        if isinstance(value, str):
            low = value.strip().lower()
            if low not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError("expected true or false")
            return low in ("true", "1", "yes")
        return bool(value)
    if isinstance(base, Integer):
        number = float(value) if isinstance(value, str) else value
        if isinstance(number, bool) or not float(number).is_integer():
            raise ValueError("expected a whole number")
        return int(number)
    if isinstance(base, Real):
        if isinstance(value, bool):
            raise TypeError("expected a number")
        return float(value)
    if isinstance(base, String):
        return "" if value is None else str(value)
    return value


def _plain(value: Any) -> Any:
    """Response values as plain JSON-able Python (named tuples of structures become dicts)."""
    if isinstance(value, list | tuple) and not hasattr(value, "_asdict"):
        return [_plain(v) for v in value]
    if hasattr(value, "_asdict"):
        return {k: _plain(v) for k, v in value._asdict().items()}
    return value
