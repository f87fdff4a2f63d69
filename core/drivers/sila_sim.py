"""Simulated SiLA 2 servers: real ``sila2`` servers on this machine that behave like the
simulated instruments.

:class:`SimulatedSilaServer` serves one ``driver: sila`` instrument of a workcell file on its
``options.host``/``options.port`` (loopback only). Its features are the definitions in
``resources/sila/<Feature>.sila.xml`` named by the instrument's ``options.commands``, plus the
standard ``CancelController``; ``sila2`` builds them at run time from the XML (no generated
code). Each command runs like :class:`~core.drivers.simulated.SimulatedDriver` runs it: the
capability's ``duration`` (or its ``duration_input`` parameter), ``jitter``, ``progress_steps``
and ``outputs`` from the workcell file, in real time. Observable commands report progress,
remaining time and intermediate responses; responses are the capability's outputs mapped back to
SiLA response identifiers.

Errors and faults (:class:`~core.drivers.faults.Faults`, e.g. ``--faults fail_next=1``): an
empty string parameter (no plate) raises the command's first defined error that the workcell
marks not retryable; an injected failure raises its first error whose ``retryable`` flag matches
``faults.retryable``; ``hang`` runs until cancelled; ``disconnect`` restarts the server (new
server UUID) in the middle of the command. Heartbeat, connect and outcome-unknown faults are
driver-side only and not simulated here.

``labconsole sila-sim --workcell FILE`` starts one server per SiLA instrument of ``FILE``.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")  # before sila2 imports
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # gRPC core logs every GOAWAY at INFO otherwise

import sila2.server.sila_server as _sila_server_module  # noqa: E402
from sila2.framework import DefinedExecutionError, Feature, UndefinedExecutionError  # noqa: E402
from sila2.framework.data_types.boolean import Boolean  # noqa: E402
from sila2.framework.data_types.constrained import Constrained  # noqa: E402
from sila2.framework.data_types.integer import Integer  # noqa: E402
from sila2.framework.data_types.list import List as SilaList  # noqa: E402
from sila2.framework.data_types.real import Real  # noqa: E402
from sila2.framework.data_types.string import String  # noqa: E402
from sila2.server import FeatureImplementationBase, SilaServer  # noqa: E402

from core.drivers.faults import Faults  # noqa: E402
from core.drivers.simulated import generate_outputs  # noqa: E402
from core.durations import DurationError, parse_duration  # noqa: E402
from core.orders import Order  # noqa: E402
from core.workcell import CapabilitySpec, InstrumentConfig, SilaCommandSpec, SilaOptions  # noqa: E402

__all__ = ["FEATURES_DIR", "SimulatedSilaServer", "quiet_sila_logs"]

FEATURES_DIR = Path(__file__).resolve().parents[2] / "resources" / "sila"
"""Feature definitions the simulated servers serve (``<Feature identifier>.sila.xml``)."""

_LOOPBACK = ("127.0.0.1", "localhost", "::1")


class _NoBroadcast:
    """Stands in for sila2's discovery broadcaster: its constructor opens a zeroconf socket on
    every interface (and a thread) even with discovery off, and never closes it."""

    registered_server_infos: tuple[Any, ...] = ()

    def register_server(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("discovery is off for simulated SiLA servers")

    def unregister_server(self, *args: Any, **kwargs: Any) -> None:
        return None


def quiet_sila_logs(*feature_ids: str) -> None:
    """sila2 servers log every call at INFO and every defined error as an ERROR traceback
    (to loggers named after the features)."""
    for name in ("sila2", "SiLAService", "observable-command-manager-org", "CancelController",
                 *feature_ids):
        logging.getLogger(name).setLevel(logging.CRITICAL)


_features: dict[Path, Feature] = {}
_features_lock = threading.Lock()


def _feature(path: Path) -> Feature:
    """A feature compiled once per process (compiling takes tens of milliseconds)."""
    with _features_lock:
        if path not in _features:
            _features[path] = Feature(path.read_text(encoding="utf-8"))
        return _features[path]


class _Halted(Exception):
    """The server stopped under a running command."""


@dataclass
class _Command:
    capability: str
    spec: CapabilitySpec
    sila: SilaCommandSpec | None
    node: Any  # sila2 Command


class SimulatedSilaServer:
    """One simulated SiLA 2 server for one workcell instrument.

    Args:
        config: A ``driver: sila`` instrument; ``options.host`` must be a loopback address.
        seed: Seed of all random draws (durations, outputs, faults).
        faults: Injected faults (see the module docstring).
        cancel_controller: Whether to serve the CancelController feature.
        port: Overrides ``options.port`` (tests pick a free one).
        private_key, cert_chain: PEM key and certificate: serve TLS instead of plain text.
        features_dir: Where the ``<Feature>.sila.xml`` files are.
        server_uuid: UUID of the first start (a TLS certificate names it); restarts draw new ones.
    """

    def __init__(self, config: InstrumentConfig, *, seed: int | str = 0, faults: Faults | None = None,
                 cancel_controller: bool = True, port: int | None = None,
                 private_key: bytes | None = None, cert_chain: bytes | None = None,
                 features_dir: Path = FEATURES_DIR, server_uuid: str | None = None) -> None:
        options = SilaOptions.model_validate(config.options)
        if options.host not in _LOOPBACK:
            raise ValueError(f"{config.id}: simulated SiLA servers run on this machine only "
                             f"(host 127.0.0.1), not {options.host!r}")
        self.config = config
        self.host = "127.0.0.1" if options.host == "localhost" else options.host
        self.port = port or options.port
        self.seed = seed
        self.faults = faults or Faults()
        self.cancel_controller = cancel_controller
        self._tls = (private_key, cert_chain) if private_key and cert_chain else None
        self._fail_next = self.faults.fail_next
        self._disconnect_in = self.faults.disconnect_after
        self._commands: dict[tuple[str, str], _Command] = {}
        self._feature_ids: list[str] = []
        for capability, spec in config.capabilities.items():
            sila = options.commands.get(capability)
            if sila is None:
                continue
            feature_id, _, command_id = sila.command.partition("/")
            path = features_dir / f"{feature_id}.sila.xml"
            if not path.is_file():
                raise FileNotFoundError(f"{config.id}: no feature definition {path} for "
                                        f"{capability} ({sila.command})")
            feature = _feature(path)
            node = (feature._observable_commands.get(command_id)
                    or feature._unobservable_commands.get(command_id))
            if node is None:
                raise ValueError(f"{config.id}: {path.name} has no command {command_id!r} "
                                 f"for {capability}")
            if feature_id not in self._feature_ids:
                self._feature_ids.append(feature_id)
            self._commands[(feature_id, command_id)] = _Command(capability, spec, sila, node)
        self._features_dir = features_dir
        self._lock = threading.Lock()
        self._runs = 0
        self._executions: dict[str, threading.Event] = {}
        self._halt = threading.Event()
        self._server: SilaServer | None = None
        self._next_uuid = server_uuid

    # ------------------------------------------------------------------ lifecycle

    @property
    def server_uuid(self) -> str | None:
        return str(self._server.server_uuid) if self._server is not None else None

    @property
    def running(self) -> bool:
        return self._server is not None and self._server.running

    def start(self) -> None:
        """Start serving (a new server UUID each time)."""
        quiet_sila_logs(*self._feature_ids)
        namespace = vars(_sila_server_module)  # the name SilaServer's constructor looks up
        original = namespace["SilaServiceBroadcaster"]
        namespace["SilaServiceBroadcaster"] = _NoBroadcast
        try:
            server = SilaServer(server_name=self.config.display_name[:255],
                                server_type=self.config.kind,
                                server_description=f"Simulated {self.config.kind} ({self.config.id})",
                                server_version="1.0", server_vendor_url="https://labconsole.invalid",
                                max_grpc_workers=32, max_child_task_workers=32,
                                server_uuid=self._next_uuid)
            self._next_uuid = None
        finally:
            namespace["SilaServiceBroadcaster"] = original
        features = [_feature(self._features_dir / f"{f}.sila.xml") for f in self._feature_ids]
        if self.cancel_controller:
            features.append(_feature(self._features_dir / "CancelController.sila.xml"))
        for feature in features:
            server.set_feature_implementation(feature, self._implementation(feature, server))
        self._halt = threading.Event()
        if self._tls is None:
            server.start_insecure(self.host, self.port, enable_discovery=False)
        else:
            server.start(self.host, self.port, private_key=self._tls[0], cert_chain=self._tls[1],
                         enable_discovery=False)
        self._server = server

    def stop(self) -> None:
        """Stop abruptly, like a power cut: connections drop, running commands end."""
        server, self._server = self._server, None
        if server is None:
            return
        server.grpc_server.stop(None)  # drop every connection first: clients see the link go
        self._halt.set()
        for event in list(self._executions.values()):
            event.set()
        if server.running:
            server.stop(grace_period=0)

    def restart(self) -> None:
        """Stop and start again on the same port: the server comes back with a new UUID."""
        self.stop()
        for _ in range(50):  # the port may take a moment to be free again
            try:
                self.start()
                return
            except RuntimeError:
                time.sleep(0.05)
        self.start()

    def __enter__(self) -> SimulatedSilaServer:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ------------------------------------------------------------------ features

    def _implementation(self, feature: Feature, server: SilaServer) -> FeatureImplementationBase:
        sim = self
        members: dict[str, Any] = {}
        feature_id = feature._identifier
        if feature_id == "CancelController":
            def cancel_command(impl: Any, execution_uuid: str, *, metadata: Any) -> None:
                event = sim._executions.get(execution_uuid)
                if event is None:
                    raise DefinedExecutionError(
                        feature.defined_execution_errors["InvalidCommandExecutionUUID"],
                        f"no running command execution {execution_uuid}")
                event.set()

            def cancel_all(impl: Any, *, metadata: Any) -> None:
                for event in list(sim._executions.values()):
                    event.set()

            members = {"CancelCommand": cancel_command, "CancelAll": cancel_all}
        else:
            for command_id, node in {**feature._unobservable_commands,
                                     **feature._observable_commands}.items():
                command = self._commands.get((feature_id, command_id)) or _Command(
                    f"{feature_id}.{command_id}", CapabilitySpec(duration=1.0), None, node)
                members[command_id] = self._handler(command, feature)
        simulation: type[FeatureImplementationBase] = type(f"{feature_id}Simulation",
                                                           (FeatureImplementationBase,), members)
        return simulation(server)

    def _handler(self, command: _Command, feature: Feature) -> Any:
        sim = self
        names = [p._identifier for p in command.node.parameters]

        def handle(impl: Any, *params: Any, metadata: Any, instance: Any = None) -> Any:
            return sim._run(command, feature, dict(zip(names, params, strict=True)), instance)

        return handle

    # ------------------------------------------------------------------ one run

    def _run(self, command: _Command, feature: Feature, params: dict[str, Any], instance: Any) -> Any:
        with self._lock:
            self._runs += 1
            run_number = self._runs
            rng = random.Random(f"{self.seed}:{self.config.id}:{run_number}")
            draw_disconnect, draw_hang, draw_fail, fault_at = (rng.random() for _ in range(4))
            f = self.faults
            fault = None
            if self._disconnect_in is not None:
                if self._disconnect_in == 0:
                    fault, self._disconnect_in = "disconnect", None
                else:
                    self._disconnect_in -= 1
            if fault is None and draw_disconnect < f.disconnect_rate:
                fault = "disconnect"
            if fault is None and (f.hang or draw_hang < f.hang_rate):
                fault = "hang"
            if fault is None and self._fail_next > 0:
                self._fail_next -= 1
                fault = "fail"
            if fault is None and draw_fail < f.rate:
                fault = "fail"
        spec = command.spec
        errors = command.node.defined_execution_errors
        if any(isinstance(_base(p.data_type), String) and not params[p._identifier]
               for p in command.node.parameters) and errors:
            error = self._error(command, errors, retryable=False)
            missing = " / ".join(k for k, v in params.items() if v == "")
            raise DefinedExecutionError(error, f"{missing} is empty")
        duration = self._duration(command, params)
        spread = spec.jitter.spread(duration)
        if spread:
            duration = max(0.0, duration + rng.uniform(-spread, spread))
        stop_at = duration * (0.1 + 0.8 * fault_at) if fault else duration
        cancel = threading.Event()
        if instance is not None:
            self._executions[str(instance.execution_uuid)] = cancel
            instance.begin_execution()
        try:
            steps = spec.progress_steps if duration > 0 else 1
            done = 0.0
            for i in range(1, steps + 1):
                mark = duration * i / steps
                if mark > stop_at:
                    break
                self._wait(mark - done, cancel)
                done = mark
                if instance is not None:
                    instance.progress = i / steps
                    instance.estimated_remaining_time = timedelta(seconds=duration - done)
                    if command.node.intermediate_responses:
                        instance.send_intermediate_response(
                            self._intermediate(command, i / steps, i))
            self._wait(stop_at - done, cancel)
            if fault == "fail":
                error = self._error(command, errors, retryable=self.faults.retryable)
                if error is None:
                    raise UndefinedExecutionError("simulated failure")
                raise DefinedExecutionError(error, "simulated fault")
            if fault == "hang":
                self._wait(float("inf"), cancel)
            if fault == "disconnect":
                threading.Thread(target=self.restart, name=f"sila-sim-restart-{self.config.id}",
                                 daemon=True).start()
                self._wait(float("inf"), cancel)
            return self._responses(command, params, rng)
        finally:
            if instance is not None:
                self._executions.pop(str(instance.execution_uuid), None)

    def _wait(self, seconds: float, cancel: threading.Event) -> None:
        deadline = time.monotonic() + seconds
        while True:
            if self._halt.is_set():
                raise _Halted("server stopped")
            if cancel.is_set():
                raise UndefinedExecutionError("Command execution was cancelled")
            left = deadline - time.monotonic()
            if left <= 0:
                return
            cancel.wait(min(left, 0.05))

    def _duration(self, command: _Command, params: dict[str, Any]) -> float:
        spec = command.spec
        for name in spec.duration_input or ():
            ident = (command.sila.parameters.get(name, name) if command.sila else name)
            if params.get(ident) not in (None, ""):
                try:
                    return parse_duration(params[ident])
                except DurationError:
                    break
        return spec.duration

    def _error(self, command: _Command, errors: list[Any], *, retryable: bool) -> Any:
        flags = command.sila.errors if command.sila else {}
        for error in errors:
            flag = flags.get(error._identifier)
            if (flag.retryable if flag else False) == retryable:
                return error
        return errors[0] if errors else None

    def _intermediate(self, command: _Command, fraction: float, step: int) -> Any:
        node = command.node.intermediate_responses
        values = {}
        count = next((o.count for o in (command.spec.outputs or {}).values() if o.count), None)
        for field in node.fields:
            base = _base(field.data_type)
            values[field._identifier] = (round(fraction * count) if isinstance(base, Integer) and count
                                         else step if isinstance(base, Integer)
                                         else fraction if isinstance(base, Real)
                                         else f"{step}" if isinstance(base, String) else None)
        return node.namedtuple_type(**values)

    def _responses(self, command: _Command, params: dict[str, Any], rng: random.Random) -> Any:
        inputs = dict(params)
        if command.sila is not None:  # the workcell's order parameter names as well
            inputs.update({name: params[ident] for name, ident in command.sila.parameters.items()
                           if ident in params})
        order = Order(templateName=command.capability,
                      inputParameters=[{"name": k, "value": v} for k, v in inputs.items()])
        outputs = generate_outputs(command.capability, command.spec, order, rng)
        by_key = {_key(k): v for k, v in outputs.items()}
        names = command.sila.responses if command.sila else {}
        values = {}
        for field in command.node.responses.fields:
            name = names.get(field._identifier, field._identifier)
            value = outputs.get(name, by_key.get(_key(name)))
            values[field._identifier] = _as_type(field.data_type, value, rng)
        return command.node.responses.namedtuple_type(**values)


def _key(name: str) -> str:
    return "".join(c for c in name.lower() if c.isalnum())


def _base(data_type: Any) -> Any:
    return data_type.base_type if isinstance(data_type, Constrained) else data_type


def _as_type(data_type: Any, value: Any, rng: random.Random) -> Any:
    """``value`` as the response's SiLA type; a plausible one if the outputs have none."""
    base = _base(data_type)
    if isinstance(base, SilaList):
        items = value if isinstance(value, list) else []
        return [_as_type(base.element_type, v, rng) for v in items]
    if isinstance(base, Boolean):
        return True if value is None else bool(value)
    if isinstance(base, Integer):
        try:
            return int(round(float(value)))
        except (TypeError, ValueError):
            return 0
    if isinstance(base, Real):
        try:
            return float(value)
        except (TypeError, ValueError):
            return round(rng.random(), 3)
    if isinstance(base, String):
        return "" if value is None else str(value)
    return value
