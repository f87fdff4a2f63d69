"""Simulated instruments: realistic durations, progress, outputs and injected faults.

A :class:`SimulatedDriver` is one instrument of the workcell file run in pure asyncio. Every
wait goes through the injected :class:`~core.clock.Clock`, so under a ``VirtualClock`` a
90-minute incubation takes no real time, and under a ``ScaledClock`` a rehearsal runs 100x.
It costs no thread and no task of its own: ``execute`` runs in the caller's task.

Determinism: each order run draws from its own generator seeded with
``(seed, instrument id, run number)``, so the same seed and the same sequence of orders give
the same durations, outputs and faults, whatever else runs concurrently.

Faults (:class:`~core.drivers.faults.Faults`) strike at a random point of the run, after some
progress: a failure raises ``DriverError(code="SimulatedFailure")``; a hang waits until the
order is cancelled; a disconnect raises ``InstrumentUnavailable`` in every running order and
leaves the instrument offline until :meth:`SimulatedDriver.connect`; an unknown outcome runs
the command to the end, then raises ``OutcomeUnknown``.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from core.clock import Clock, to_datetime
from core.drivers.base import (
    DriverError,
    DriverInfo,
    DriverState,
    DriverStatus,
    InstrumentUnavailable,
    OrderCancelled,
    OutcomeUnknown,
    ProgressSink,
    StatusKey,
    announce_status,
    raise_interrupt,
    resolve_capability,
)
from core.drivers.faults import Faults, FaultSpec
from core.durations import DurationError, parse_duration
from core.events import EventBus
from core.instruments import CapabilitySpec, InstrumentConfig, OutputSpec
from core.orders import Order

__all__ = ["DEFAULT_OUTPUTS", "SimulatedDriver", "generate_outputs", "order_inputs"]


def _o(**kwargs: Any) -> OutputSpec:
    return OutputSpec(**kwargs)


_PLATE = ["plate", "plate_id", "PlateId", "barcode"]
DEFAULT_OUTPUTS: dict[str, dict[str, OutputSpec]] = {
    "PlateReader.ReadPlate": {
        "plate": _o(type="string", from_input=_PLATE),
        "wavelength": _o(type="integer", from_input=["wavelength", "wavelength_nm"], min=450,
                         max=450, unit="nm"),
        "well_values": _o(type="list", count=96, min=0.04, max=3.2, decimals=4, unit="OD"),
        "absorbance": _o(of="well_values", reduce="mean", decimals=4, unit="OD"),
        "temperature": _o(min=24.5, max=25.5, decimals=1, unit="°C"),
    },
    "LiquidHandler.Transfer": {
        "volume_ul": _o(from_input=["volume_ul", "volume"], spread=0.01, min=20, max=200,
                        decimals=1, unit="uL"),
        "tips_used": _o(type="integer", min=8, max=96),
    },
    "LiquidHandler.Aspirate": {
        "volume_ul": _o(from_input=["volume_ul", "volume"], spread=0.01, min=20, max=200,
                        decimals=1, unit="uL"),
    },
    "LiquidHandler.Dispense": {
        "volume_ul": _o(from_input=["volume_ul", "volume"], spread=0.01, min=20, max=200,
                        decimals=1, unit="uL"),
    },
    "LiquidHandler.Dilute": {
        "dilution_factor": _o(from_input=["factor", "dilution_factor"], min=2, max=10, decimals=1),
        "final_volume_ul": _o(min=150, max=200, decimals=1, unit="uL"),
    },
    "Incubator.Incubate": {
        "plate": _o(type="string", from_input=_PLATE),
        "temperature": _o(from_input="temperature", spread=0.005, min=36.8, max=37.2, decimals=1,
                          unit="°C"),
        "co2_percent": _o(min=4.9, max=5.1, decimals=2, unit="%"),
        "humidity_percent": _o(min=92, max=96, decimals=1, unit="%"),
        "slot": _o(type="integer", min=1, max=44),
    },
    "Incubator.Load": {"slot": _o(type="integer", min=1, max=44)},
    "Incubator.Unload": {"slot": _o(type="integer", min=1, max=44)},
    "RobotArm.MovePlate": {
        "plate": _o(type="string", from_input=_PLATE),
        "source": _o(type="string", from_input=["source", "from"]),
        "destination": _o(type="string", from_input=["destination", "to"]),
        "grip_force_n": _o(min=14.5, max=15.5, decimals=2, unit="N"),
    },
    "Sealer.Seal": {
        "plate": _o(type="string", from_input=_PLATE),
        "seal_temperature": _o(from_input=["seal_temperature", "temperature"], spread=0.005,
                               min=164, max=166, decimals=1, unit="°C"),
        "seal_time_s": _o(from_input=["seal_time", "seal_time_s"], min=2.0, max=3.0,
                          decimals=2, unit="s"),
    },
    "Sealer.Peel": {"peel_verified": _o(type="boolean", value=True)},
    "Centrifuge.Spin": {
        "speed_rpm": _o(from_input=["speed_rpm", "speed", "rpm"], spread=0.002, min=2000,
                        max=2000, decimals=0, unit="rpm"),
        "temperature": _o(min=20, max=22, decimals=1, unit="°C"),
        "imbalance_g": _o(min=0.0, max=0.8, decimals=2, unit="g"),
    },
    "Decapper.Decap": {
        "tubes_decapped": _o(type="integer", from_input=["tube_count", "tubes"], min=96, max=96),
    },
    "Decapper.Recap": {
        "tubes_recapped": _o(type="integer", from_input=["tube_count", "tubes"], min=96, max=96),
    },
    "BarcodeReader.Scan": {
        "barcode": _o(type="string", choices=["PLT-000142", "PLT-000143", "PLT-000144"]),
    },
}
"""Built-in plausible outputs by capability, used when the workcell declares none."""


def _key(name: str) -> str:
    return "".join(c for c in name.lower() if c.isalnum())


def order_inputs(order: Order) -> dict[str, Any]:
    """The order's input values (typed), keyed by name without case, ``_`` or spaces."""
    return {_key(p.name): p.typed_value for p in order.inputParameters}


def _lookup(inputs: Mapping[str, Any], names: list[str] | None) -> Any:
    for name in names or ():
        value = inputs.get(_key(name))
        if value is not None and value != "":
            return value
    return None


def generate_outputs(capability: str, spec: CapabilitySpec, order: Order,
                     rng: random.Random) -> dict[str, Any]:
    """Output parameters of one simulated run: the spec's outputs (or the built-in ones for
    well-known commands) plus ``Success: True``. A string output echoing an input the order
    does not have is left out."""
    specs = spec.outputs if spec.outputs is not None else DEFAULT_OUTPUTS.get(capability, {})
    inputs = order_inputs(order)
    out: dict[str, Any] = {}
    reductions = []
    for name, o in specs.items():
        if o.of is not None:
            reductions.append((name, o))
        else:
            value = _value(o, inputs, rng)
            if value is not None:  # e.g. an echo of an input the order does not have
                out[name] = value
    for name, o in reductions:
        values = out.get(o.of or "")
        if isinstance(values, list) and values:
            result = {"mean": sum(values) / len(values), "sum": sum(values),
                      "min": min(values), "max": max(values)}[o.reduce or "mean"]
            out[name] = round(result, o.decimals)
    out.setdefault("Success", True)
    return out


def _value(o: OutputSpec, inputs: Mapping[str, Any], rng: random.Random) -> Any:
    if o.value is not None:
        return o.value
    given = _lookup(inputs, o.from_input)
    if given is not None:
        return _scatter(o, given, rng)
    if o.choices:
        return rng.choice(o.choices)
    if o.type == "list":  # e.g. 96 wells: the same draws as _number, without the call per value
        lo = o.min if o.min is not None else 0.0
        span = (o.max if o.max is not None else lo + 1.0) - lo
        draw, decimals = rng.random, o.decimals
        return [round(lo + span * draw(), decimals) for _ in range(o.count or 0)]
    if o.type == "boolean":
        return True
    if o.type == "string":
        return None
    return _number(o, rng)


def _number(o: OutputSpec, rng: random.Random) -> float | int:
    lo = o.min if o.min is not None else 0.0
    hi = o.max if o.max is not None else (lo + 1.0)
    if o.type == "integer":
        return rng.randint(math.ceil(lo), math.floor(hi))
    return round(rng.uniform(lo, hi), o.decimals)


def _scatter(o: OutputSpec, given: Any, rng: random.Random) -> Any:
    try:
        number = float(given)
    except (TypeError, ValueError):
        return given
    if o.spread:
        number *= 1 + rng.uniform(-o.spread, o.spread)
    if o.type == "integer":
        return round(number)
    if o.type in ("string", "boolean"):
        return given
    return round(number, o.decimals)


@dataclass
class _Run:
    order_id: str
    capability: str
    task: asyncio.Task[Any] | None
    interrupt: DriverError | None = None


@dataclass(frozen=True)
class _Plan:
    duration: float
    fault: str | None  # "fail" | "hang" | "disconnect" | "unknown"
    fault_at: float  # fraction of the duration where the fault strikes
    rng: random.Random


class SimulatedDriver:
    """A simulated instrument satisfying :class:`~core.drivers.base.Driver`.

    Args:
        config: The instrument as the workcell file declares it (capabilities, durations,
            jitter, outputs, ``max_concurrent``, ``options``).
        clock: Every wait goes through it.
        seed: Seed for all random draws; None picks one (kept in :attr:`seed`, so a run can be
            repeated).
        faults: Fault injection: a :class:`Faults`, a :class:`FaultSpec` (this instrument's
            part is used) or spec text; applied on top of ``options.faults`` of the config.
        bus: If given, state changes are published as ``InstrumentStatusChanged``.
    """

    def __init__(self, config: InstrumentConfig, clock: Clock, *, seed: int | str | None = 0,
                 faults: Faults | FaultSpec | str | None = None,
                 bus: EventBus | None = None) -> None:
        self.config = config
        self.instrument_id = config.id
        self.max_concurrent = config.max_concurrent
        self.clock = clock
        self.seed = random.randrange(2**32) if seed is None else seed
        self.info = DriverInfo.of(config, serial=config.serial or f"SIM-{config.id}",
                                  endpoint="in this process").identified(
            [("Simulation", "durations, progress and outputs from the workcell file"),
             ("Seed", self.seed)])
        self.bus = bus
        options = config.simulated_options
        self._connect_time = options.connect_time
        self._heartbeat_latency = options.heartbeat_latency
        base = FaultSpec.parse(options.faults, source=f"{config.id}.options.faults"
                               ).for_instrument(config.id) if options.faults else Faults()
        if isinstance(faults, str):
            faults = FaultSpec.parse(faults)
        if isinstance(faults, FaultSpec):
            faults = faults.for_instrument(config.id, base)
        self._faults = Faults()
        self.inject(faults or base)
        self._runs: dict[str, _Run] = {}
        self._connected = False
        self._connecting = False
        self._detail = "not connected"
        self._last_heartbeat: float | None = None
        self._run_count = 0
        self._published: StatusKey | None = None

    # ------------------------------------------------------------------ faults

    @property
    def faults(self) -> Faults:
        """The faults in force now."""
        return self._faults

    def inject(self, faults: Faults | None = None, **changes: Any) -> Faults:
        """Replace the faults in force (``faults``) or change some (``fail_next=2``).

        The countdowns (``fail_next``, ``unknown_next``, ``connect_fail``,
        ``disconnect_after``) restart for the fields given (all of them when ``faults`` is
        given); the others keep counting. Returns the faults now in force.
        """
        self._faults = replace(faults or self._faults, **changes)
        given = set(changes) if faults is None else None
        if given is None or "fail_next" in given:
            self._fail_next = self._faults.fail_next
        if given is None or "unknown_next" in given:
            self._unknown_next = self._faults.unknown_next
        if given is None or "connect_fail" in given:
            self._connect_fail = self._faults.connect_fail
        if given is None or "disconnect_after" in given:
            self._disconnect_in = self._faults.disconnect_after
        return self._faults

    # ------------------------------------------------------------------ Driver protocol

    async def connect(self) -> None:
        if self._connected:
            return
        self._connecting = True
        self._announce()
        try:
            if self._connect_time > 0:
                await self.clock.sleep(self._connect_time)
            if self._connect_fail > 0:
                self._connect_fail -= 1
                self._detail = "connection refused (simulated)"
                raise InstrumentUnavailable(f"{self.instrument_id}: connection refused (simulated)",
                                            instrument_id=self.instrument_id)
        finally:
            self._connecting = False
        self._connected = True
        self._detail = ""
        self._last_heartbeat = self.clock.now()
        self._announce()

    async def disconnect(self) -> None:
        self._drop(f"{self.instrument_id}: disconnected", "disconnected")

    async def status(self) -> DriverStatus:
        return DriverStatus(self.state, self._detail, list(self._runs),
                            to_datetime(self._last_heartbeat) if self._last_heartbeat else None)

    async def heartbeat(self) -> float:
        self._require_connected()
        mode = self._faults.heartbeat
        if mode == "missing":
            raise InstrumentUnavailable(f"{self.instrument_id}: no heartbeat answer (simulated)",
                                        instrument_id=self.instrument_id)
        if mode == "hang":
            await asyncio.get_running_loop().create_future()  # until the caller gives up
        latency = self._faults.heartbeat_delay if mode == "slow" else self._heartbeat_latency
        if latency > 0:
            await self.clock.sleep(latency)
            self._require_connected()
        self._last_heartbeat = self.clock.now()
        return latency

    async def cancel(self, order_id: str) -> bool:
        run = self._runs.get(order_id)
        if run is None or run.task is None:
            return False
        if run.interrupt is None:
            run.interrupt = OrderCancelled(f"{self.instrument_id}: {run.capability} of order "
                                           f"{order_id} cancelled", instrument_id=self.instrument_id)
            run.task.cancel()
        return True

    async def execute(self, order: Order, progress: ProgressSink) -> dict[str, Any]:
        self._require_connected()
        capability = resolve_capability(order, self.info.capabilities, self.instrument_id)
        order_id = order.identifier or f"{self.instrument_id}-run-{self._run_count + 1}"
        if order_id in self._runs:
            raise DriverError(f"{self.instrument_id}: order {order_id} is already running here",
                              code="AlreadyRunning", instrument_id=self.instrument_id)
        if len(self._runs) >= self.max_concurrent:
            raise DriverError(f"{self.instrument_id}: busy ({len(self._runs)} of "
                              f"{self.max_concurrent} orders running)", code="InstrumentBusy",
                              retryable=True, instrument_id=self.instrument_id)
        spec = self.config.capabilities[capability]
        plan = self._plan(spec, order)
        run = _Run(order_id, capability, asyncio.current_task())
        self._runs[order_id] = run
        self._announce()
        try:
            return await self._run(run, spec, plan, order, progress)
        except asyncio.CancelledError:
            raise_interrupt(run.interrupt, run.task)
        finally:
            del self._runs[order_id]
            self._announce()

    # ------------------------------------------------------------------ state

    @property
    def state(self) -> DriverState:
        if self._connecting:
            return DriverState.CONNECTING
        if not self._connected:
            return DriverState.DISCONNECTED
        return DriverState.BUSY if self._runs else DriverState.IDLE

    @property
    def running(self) -> list[str]:
        """Ids of the orders running now."""
        return list(self._runs)

    def _require_connected(self) -> None:
        if not self._connected:
            raise InstrumentUnavailable(f"{self.instrument_id}: not connected"
                                        + (f" ({self._detail})" if self._detail else ""),
                                        instrument_id=self.instrument_id)

    def _drop(self, message: str, detail: str, *, except_run: _Run | None = None) -> None:
        """Lose the link: every running order (but ``except_run``) ends InstrumentUnavailable."""
        self._connected = False
        self._detail = detail
        for run in list(self._runs.values()):
            if run is not except_run and run.interrupt is None and run.task is not None:
                run.interrupt = InstrumentUnavailable(f"{message} during {run.capability} of "
                                                      f"order {run.order_id}",
                                                      instrument_id=self.instrument_id)
                run.task.cancel()
        self._announce()

    def _announce(self) -> None:
        self._published = announce_status(self.bus, self._published, self.instrument_id, self.state,
                                          self._detail, self._runs, self.config.enabled)

    # ------------------------------------------------------------------ one run

    def _plan(self, spec: CapabilitySpec, order: Order) -> _Plan:
        self._run_count += 1
        rng = random.Random(f"{self.seed}:{self.instrument_id}:{self._run_count}")
        f = self._faults
        # Always the same number of draws, so turning a fault on does not shift durations.
        draw_disconnect, draw_hang, draw_fail, draw_unknown, fault_at = (rng.random()
                                                                          for _ in range(5))
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
        if fault is None and self._unknown_next > 0:
            self._unknown_next -= 1
            fault = "unknown"
        if fault is None and draw_unknown < f.unknown_rate:
            fault = "unknown"
        duration = self._nominal(spec, order)
        spread = spec.jitter.spread(duration)
        if spread:
            duration = max(0.0, duration + rng.uniform(-spread, spread))
        return _Plan(duration, fault, 0.1 + 0.8 * fault_at, rng)

    def _nominal(self, spec: CapabilitySpec, order: Order) -> float:
        if spec.duration_input:
            given = _lookup(order_inputs(order), spec.duration_input)
            if given is not None:
                try:
                    return parse_duration(given)
                except DurationError as exc:
                    raise DriverError(f"{self.instrument_id}: order {order.identifier}: input "
                                      f"{'/'.join(spec.duration_input)}: {exc}",
                                      code="InvalidParameter",
                                      instrument_id=self.instrument_id) from None
        return spec.duration

    async def _run(self, run: _Run, spec: CapabilitySpec, plan: _Plan, order: Order,
                   progress: ProgressSink) -> dict[str, Any]:
        total = plan.duration
        stop_at = total * plan.fault_at if plan.fault in ("fail", "hang", "disconnect") else total
        steps = spec.progress_steps if total > 0 else 1
        done = 0.0
        for i in range(1, steps + 1):
            mark = total * i / steps
            if mark > stop_at:
                break
            if mark > done:
                await self.clock.sleep(mark - done)
                done = mark
            progress(i / steps, {"Elapsed": round(done, 3), "Remaining": round(total - done, 3)})
        if stop_at > done:
            await self.clock.sleep(stop_at - done)
        where = f"{self.instrument_id}: {run.capability} of order {run.order_id}"
        if plan.fault == "fail":
            raise DriverError(f"{where} failed (simulated fault)", code="SimulatedFailure",
                              retryable=self._faults.retryable, instrument_id=self.instrument_id)
        if plan.fault == "hang":
            await asyncio.get_running_loop().create_future()  # never finishes; cancel ends it
        if plan.fault == "disconnect":
            self._drop(f"{self.instrument_id}: connection lost", "connection lost (simulated)",
                       except_run=run)
            raise InstrumentUnavailable(f"{where}: connection lost (simulated)",
                                        instrument_id=self.instrument_id)
        if plan.fault == "unknown":
            raise OutcomeUnknown(f"{where}: connection lost after the command was sent; it may "
                                 f"or may not have run (simulated)", instrument_id=self.instrument_id)
        return generate_outputs(run.capability, spec, order, plan.rng)

    def __repr__(self) -> str:
        return f"SimulatedDriver({self.instrument_id!r}, state={self.state.value})"
