"""PyLabRobot machines: one :class:`PyLabRobotDriver` per liquid handler or plate reader.

An optional driver: ``pip install 'labconsole[plr]'`` brings PyLabRobot (0.2.2). The workcell
names the backend, the deck layout (a PyLabRobot deck JSON file, as ``deck.save(path)`` writes
it) and what each capability does::

    - id: LiquidHandler1
      kind: LiquidHandler
      driver: pylabrobot
      options:
        backend: chatterbox                  # or module:Class of a PyLabRobot backend
        backend_options: {num_channels: 8}
        deck: ../plr/ot2-deck.json           # relative to the workcell file
        commands:
          LiquidHandler.Transfer:
            operation: transfer
            parameters: {from: source_plate}  # order parameter -> operation argument
            errors: {NoTipError: true}        # PyLabRobot exception -> retryable
      capabilities:
        LiquidHandler.Aspirate: 5s
        LiquidHandler.Dispense: 5s
        LiquidHandler.Transfer: 20s

Operations and their arguments (order parameters, matched ignoring case, ``_`` and spaces):

- ``aspirate`` / ``dispense``: ``plate`` (a resource of the deck), ``wells`` (``A1``,
  ``A1:H1`` or ``A1,B3``), ``volume`` (uL per well, or a JSON list), optional ``channels``
  (``0,1``). Aspirate mounts a fresh tip on every channel without one, from the deck's tip
  racks; the tips stay on for the dispense, which drops them afterwards (into the trash, or
  back into their rack on a deck without trash) unless ``keep_tips`` is true. Outputs ``Wells``, ``Channels``, ``Volumes`` and,
  with volume tracking, ``Remaining`` (aspirate) or ``Contains`` (dispense), in uL per well.
- ``transfer``: ``source_plate``, ``source_well``, ``target_plate``, ``target_wells``,
  ``volume`` (uL per target well): a fresh tip on channel 0, one aspiration, one dispense per
  target, the tip discarded (or returned to its rack on a deck without trash). Outputs
  ``Source``, ``Targets``, ``Volume`` (total) and ``SourceRemaining``.
- ``read_absorbance`` (``wavelength``), ``read_fluorescence`` (``excitation_wavelength``,
  ``emission_wavelength``, ``focal_height``), ``read_luminescence`` (``focal_height``) of a
  ``machine: plate_reader`` holding the ``plate`` definition the options name. Outputs
  ``WellValues`` (row by row) and ``Mean``.

Progress is reported after each step of an operation (tip pick-up, aspiration, each dispense,
tip drop) with the step's name as ``Stage``. :meth:`PyLabRobotDriver.cancel` stops an order
between two of these steps (a backend command already sent runs to its end: PyLabRobot cannot
abort one), so the order ends as :class:`OrderCancelled` and tips may still be mounted.
PyLabRobot exceptions become :class:`DriverError` with the exception's class name as ``code``
(for a channel error, the first channel's) and ``retryable`` as ``commands.*.errors`` says; an
I/O error of the backend after a command went out is :class:`OutcomeUnknown`.

PyLabRobot has no liveness query: :meth:`PyLabRobotDriver.heartbeat` proves only that the
machine's setup finished and has not been stopped, and a backend that loses its device is found
by the next command. Tip and volume tracking are PyLabRobot globals: connecting switches both on
for the whole process; instruments with ``volume_tracking: false`` disable their containers'
trackers. The chatterbox backends print every operation; their output goes to this module's
logger at DEBUG instead of stdout.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

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
    WorkcellEntry,
    announce_status,
    link_state,
    resolve_capability,
)
from core.errors import Problem, WorkcellError
from core.events import EventBus
from core.instruments import InstrumentConfig, PlrCommandSpec, PyLabRobotOptions

if TYPE_CHECKING:
    from core.orders import Order
    from core.workcell import Workcell

__all__ = ["OPERATION_ARGUMENTS", "PyLabRobotDriver"]

log = logging.getLogger(__name__)

OPERATION_ARGUMENTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "aspirate": (("plate", "wells", "volume"), ("channels",)),
    "dispense": (("plate", "wells", "volume"), ("channels", "keep_tips")),
    "transfer": (("source_plate", "source_well", "target_plate", "target_wells", "volume"), ()),
    "read_absorbance": (("wavelength",), ()),
    "read_fluorescence": (("excitation_wavelength", "emission_wavelength", "focal_height"), ()),
    "read_luminescence": (("focal_height",), ()),
}
"""Operation -> (required arguments, optional arguments)."""

_READS = ("read_absorbance", "read_fluorescence", "read_luminescence")
_IO_ERRORS = (OSError, ConnectionError, TimeoutError)


def _key(name: str) -> str:
    return "".join(c for c in name.lower() if c.isalnum())


def _snake(name: str) -> str:
    out = "".join(f"_{c.lower()}" if c.isupper() else c for c in name)
    return out.lstrip("_")


def _quiet(module_name: str) -> None:
    """Send a chatterbox module's prints to the log instead of stdout."""
    module = importlib.import_module(module_name)

    def to_log(*args: Any, **_kwargs: Any) -> None:
        log.debug("%s", " ".join(str(a) for a in args))

    module.print = to_log  # type: ignore[attr-defined]


@dataclass
class _Run:
    order_id: str
    capability: str
    cancel_requested: bool = False


class PyLabRobotDriver(WorkcellEntry):
    """A PyLabRobot liquid handler or plate reader satisfying :class:`~core.drivers.base.Driver`.

    Args:
        config: The instrument as the workcell file declares it (``options`` are
            :class:`~core.instruments.PyLabRobotOptions`).
        clock: Timestamps of heartbeats.
        bus: If given, state changes are published as ``InstrumentStatusChanged``.
        workcell: The workcell the instrument belongs to: locates messages (file:line) and the
            deck and state files (relative to the workcell file).
        index: The instrument's position in ``workcell.instruments``.
    """

    def __init__(self, config: InstrumentConfig, clock: Clock | None = None, *,
                 bus: EventBus | None = None, workcell: Workcell | None = None,
                 index: int | None = None) -> None:
        super().__init__(config, clock, bus, workcell, index)
        self.options = PyLabRobotOptions.model_validate(config.options)
        self.info = DriverInfo.of(config, endpoint=f"PyLabRobot {self.options.backend} backend")
        self.machine: Any = None  # the PyLabRobot LiquidHandler or PlateReader once connected
        self.deck: Any = None
        self._operations: dict[str, PlrCommandSpec] = {}
        self._runs: dict[str, _Run] = {}
        self._lock = asyncio.Lock()
        self._connecting = False
        self._detail = "not connected"
        self._last_heartbeat: float | None = None
        self._published: StatusKey | None = None
        self._run_count = 0

    # ------------------------------------------------------------------ Driver protocol

    async def connect(self) -> None:
        async with self._lock:
            if self.machine is not None:
                return
            self._connecting = True
            self._announce()
            try:
                try:
                    self._operations = self._bind()
                    machine = await self._build()
                except WorkcellError as exc:
                    self._detail = exc.summary
                    raise
                try:
                    await machine.setup()
                except Exception as exc:  # noqa: BLE001 - any backend failure: unavailable
                    self._detail = f"setup failed: {type(exc).__name__}: {exc}"
                    raise InstrumentUnavailable(
                        f"{self.where('options', 'backend')}: instrument {self.instrument_id}: "
                        f"PyLabRobot {self.options.backend} setup failed: {type(exc).__name__}: "
                        f"{exc}", instrument_id=self.instrument_id) from None
                self.machine = machine
                self._detail = ""
                self._last_heartbeat = self.clock.now()
                self.info = self.info.identified(self._identity(machine))
            finally:
                self._connecting = False
                self._announce()

    async def disconnect(self) -> None:
        machine, self.machine = self.machine, None
        self._detail = "disconnected"
        if machine is not None and machine.setup_finished:
            try:
                await machine.stop()
            except Exception as exc:  # noqa: BLE001 - never raises for a machine already gone
                log.info("%s: stop failed: %s", self.instrument_id, exc)
        self._announce()

    async def status(self) -> DriverStatus:
        return DriverStatus(self.state, self._detail, list(self._runs),
                            to_datetime(self._last_heartbeat) if self._last_heartbeat else None)

    async def heartbeat(self) -> float:
        started = time.monotonic()
        if self.machine is None or not self.machine.setup_finished:
            raise InstrumentUnavailable(f"{self.instrument_id}: PyLabRobot machine not set up"
                                        + (f" ({self._detail})" if self._detail else ""),
                                        instrument_id=self.instrument_id)
        self._last_heartbeat = self.clock.now()
        return time.monotonic() - started

    async def cancel(self, order_id: str) -> bool:
        run = self._runs.get(order_id)
        if run is None:
            return False
        run.cancel_requested = True
        return True

    async def execute(self, order: Order, progress: ProgressSink) -> dict[str, Any]:
        if self.machine is None:
            raise InstrumentUnavailable(f"{self.instrument_id}: not connected"
                                        + (f" ({self._detail})" if self._detail else ""),
                                        instrument_id=self.instrument_id)
        capability = resolve_capability(order, self.info.capabilities, self.instrument_id)
        spec = self._operations[capability]
        self._run_count += 1
        order_id = order.identifier or f"{self.instrument_id}-run-{self._run_count}"
        if order_id in self._runs:
            raise DriverError(f"{self.instrument_id}: order {order_id} is already running here",
                              code="AlreadyRunning", instrument_id=self.instrument_id)
        where = f"{self.instrument_id}: {capability} of order {order_id} ({spec.operation})"
        args = self._arguments(order, spec, where)
        run = _Run(order_id, capability)
        self._runs[order_id] = run
        self._announce()
        sent = False

        async def step(stage: str, fraction: float, call: Awaitable[Any]) -> Any:
            nonlocal sent
            if run.cancel_requested:
                call.close()  # type: ignore[attr-defined]
                raise OrderCancelled(f"{where}: cancelled before {stage}",
                                     instrument_id=self.instrument_id)
            sent = True
            result = await call
            progress(fraction, {"Stage": stage})
            if run.cancel_requested and fraction < 1.0:
                raise OrderCancelled(f"{where}: cancelled after {stage}",
                                     instrument_id=self.instrument_id)
            return result

        try:
            return await self._operation(spec.operation, args, step, where)
        except (DriverError, asyncio.CancelledError):
            raise
        except _IO_ERRORS as exc:
            raise (OutcomeUnknown if sent else InstrumentUnavailable)(
                f"{where}: backend I/O failed: {type(exc).__name__}: {exc}"
                + ("; it may or may not have run" if sent else ""),
                instrument_id=self.instrument_id) from None
        except Exception as exc:  # noqa: BLE001 - PyLabRobot's errors, translated
            raise self._failed(exc, spec, where) from None
        finally:
            del self._runs[order_id]
            self._announce()

    # ------------------------------------------------------------------ state

    @property
    def state(self) -> DriverState:
        return link_state(connecting=self._connecting, connected=self.machine is not None, busy=bool(self._runs))

    def _announce(self) -> None:
        self._published = announce_status(self.bus, self._published, self.instrument_id, self.state,
                                          self._detail, self._runs, self.config.enabled)

    # ------------------------------------------------------------------ connecting

    def _bind(self) -> dict[str, PlrCommandSpec]:
        """Each capability's operation; refuses unknown ones and wrong argument names."""
        problems: list[Problem] = []
        bound: dict[str, PlrCommandSpec] = {}
        for capability in sorted(self.info.capabilities):
            spec = self.options.commands.get(capability)
            if spec is None:
                guess = _snake(capability.rpartition(".")[2])
                guess = {"read_plate": "read_absorbance"}.get(guess, guess)
                if guess not in OPERATION_ARGUMENTS:
                    problems.append(Problem(
                        self.where("capabilities", capability),
                        f"capability {capability!r} names no PyLabRobot operation: add "
                        f"options.commands.{capability}.operation "
                        f"({', '.join(OPERATION_ARGUMENTS)})"))
                    continue
                spec = PlrCommandSpec(operation=guess)
            reads = spec.operation in _READS
            if reads != (self.options.machine == "plate_reader"):
                problems.append(Problem(
                    self.where("options", "commands", capability, "operation")
                    if capability in self.options.commands else self.where("capabilities", capability),
                    f"{spec.operation} is not an operation of a {self.options.machine}"))
            required, optional = OPERATION_ARGUMENTS[spec.operation]
            for name, target in spec.parameters.items():
                if target not in required + optional:
                    problems.append(Problem(
                        self.where("options", "commands", capability, "parameters", name),
                        f"{spec.operation} has no argument {target!r} "
                        f"(arguments: {', '.join(required + optional)})"))
            bound[capability] = spec
        if problems:
            raise WorkcellError(f"instrument {self.instrument_id}: the workcell does not fit "
                                f"PyLabRobot", problems)
        return bound

    def _backend(self) -> Any:
        o = self.options
        if o.backend == "chatterbox":
            if o.machine == "plate_reader":
                _quiet("pylabrobot.plate_reading.chatterbox")
                from pylabrobot.plate_reading.chatterbox import PlateReaderChatterboxBackend

                return PlateReaderChatterboxBackend(**o.backend_options)
            _quiet("pylabrobot.liquid_handling.backends.chatterbox")
            from pylabrobot.liquid_handling.backends.chatterbox import (
                LiquidHandlerChatterboxBackend,
            )

            return LiquidHandlerChatterboxBackend(**o.backend_options)
        module_name, _, class_name = o.backend.partition(":")
        try:
            cls = getattr(importlib.import_module(module_name), class_name)
            return cls(**o.backend_options)
        except (ImportError, AttributeError, TypeError, ValueError) as exc:
            raise WorkcellError(f"instrument {self.instrument_id}: cannot create the PyLabRobot "
                                f"backend", [Problem(self.where("options", "backend"),
                                                     f"{o.backend}: {type(exc).__name__}: {exc}")]
                                ) from None

    async def _build(self) -> Any:
        from pylabrobot.resources import set_tip_tracking, set_volume_tracking

        set_tip_tracking(True)
        set_volume_tracking(True)
        backend = self._backend()
        if self.options.machine == "plate_reader":
            return self._plate_reader(backend)
        deck = await asyncio.to_thread(self._load_deck)
        from pylabrobot.liquid_handling import LiquidHandler

        self.deck = deck
        return LiquidHandler(backend=backend, deck=deck, name=self.instrument_id)

    def _identity(self, machine: Any) -> list[tuple[str, Any]]:
        """What the set-up machine says about itself, for the Robots panel."""
        backend = machine.backend
        o = self.options
        import pylabrobot

        return [
            ("Machine", f"{type(machine).__name__} {machine.name}"),
            ("Backend", f"{type(backend).__module__}.{type(backend).__qualname__}"),
            ("Channels", getattr(backend, "num_channels", None)),
            ("Deck", f"{type(self.deck).__name__} from {o.deck}" if self.deck is not None else None),
            ("Deck state", o.state), ("Plate", o.plate),
            ("PyLabRobot", getattr(pylabrobot, "__version__", None))]

    def _load_deck(self) -> Any:
        from pylabrobot.resources import Container, Deck, TipRack

        assert self.options.deck is not None  # checked by the options model
        path = self._base_dir / self.options.deck
        try:
            deck = Deck.load_from_json_file(str(path))
        except Exception as exc:  # noqa: BLE001 - any parse failure: the file is wrong
            raise WorkcellError(f"instrument {self.instrument_id}: cannot load the deck layout",
                                [Problem(self.where("options", "deck"),
                                         f"{path}: {type(exc).__name__}: {exc}")]) from None
        if self.options.state:
            state_path = self._base_dir / self.options.state
            try:
                deck.load_state_from_file(str(state_path))
            except Exception as exc:  # noqa: BLE001
                raise WorkcellError(f"instrument {self.instrument_id}: cannot load the deck state",
                                    [Problem(self.where("options", "state"),
                                             f"{state_path}: {type(exc).__name__}: {exc}")]
                                    ) from None
        else:
            for rack in deck.get_all_children():
                if isinstance(rack, TipRack):
                    rack.fill()
        if not self.options.volume_tracking:
            for item in deck.get_all_children():
                if isinstance(item, Container):
                    item.tracker.disable()
        return deck

    def _plate_reader(self, backend: Any) -> Any:
        import pylabrobot.resources as resources
        from pylabrobot.plate_reading import PlateReader

        factory = getattr(resources, self.options.plate or "", None)
        if not callable(factory):
            raise WorkcellError(f"instrument {self.instrument_id}: unknown plate definition",
                                [Problem(self.where("options", "plate"),
                                         f"PyLabRobot has no plate definition "
                                         f"{self.options.plate!r}")])
        reader = PlateReader(name=self.instrument_id, size_x=150, size_y=100, size_z=50,
                             backend=backend)
        reader.assign_child_resource(factory(name=f"{self.instrument_id}_plate"))
        return reader

    # ------------------------------------------------------------------ one order

    def _arguments(self, order: Order, spec: PlrCommandSpec, where: str) -> dict[str, Any]:
        required, optional = OPERATION_ARGUMENTS[spec.operation]
        by_key = {_key(a): a for a in required + optional}
        args: dict[str, Any] = {}
        for p in order.inputParameters:
            target = spec.parameters.get(p.name) or by_key.get(_key(p.name))
            if target is not None and target not in args:
                args[target] = p.typed_value
        for name in required:
            if name not in args:
                given = [k for k, v in spec.parameters.items() if v == name]
                raise DriverError(f"{where}: parameter {name!r} is missing (give it as "
                                  f"{' or '.join(repr(n) for n in given or [name])})",
                                  code="InvalidParameter", instrument_id=self.instrument_id)
        return args

    def _bad(self, where: str, name: str, value: Any, why: str) -> DriverError:
        return DriverError(f"{where}: parameter {name!r} = {value!r}: {why}",
                           code="ValidationError", instrument_id=self.instrument_id)

    def _plate(self, args: dict[str, Any], name: str, where: str) -> Any:
        from pylabrobot.resources import Container, ItemizedResource

        plate_name = str(args[name])
        if not self.deck.has_resource(plate_name):
            names = sorted(r.name for r in self.deck.children)
            raise self._bad(where, name, plate_name, f"no such resource on the deck "
                                                     f"(deck: {', '.join(names)})")
        plate = self.deck.get_resource(plate_name)
        if not isinstance(plate, ItemizedResource | Container):
            raise self._bad(where, name, plate_name, "not a plate or container")
        return plate

    def _wells(self, plate: Any, args: dict[str, Any], name: str, where: str) -> list[Any]:
        from pylabrobot.resources import ItemizedResource

        text = str(args[name]).replace(" ", "")
        if not isinstance(plate, ItemizedResource):
            return [plate]
        wells: list[Any] = []
        try:
            for part in filter(None, text.split(",")):
                wells += plate[part] if ":" in part else [plate.get_item(part)]
        except (KeyError, IndexError, ValueError, AttributeError) as exc:
            raise self._bad(where, name, text, f"not wells of {plate.name} ({exc})") from None
        if not wells:
            raise self._bad(where, name, text, "no wells")
        return wells

    def _volumes(self, args: dict[str, Any], count: int, where: str) -> list[float]:
        value = args["volume"]
        try:
            items = json.loads(value) if isinstance(value, str) and value.strip().startswith("[") \
                else value
            vols = ([float(v) for v in items] if isinstance(items, list)
                    else [float(items)] * count)
        except (TypeError, ValueError):
            raise self._bad(where, "volume", value, "expected uL (a number or a list)") from None
        if len(vols) != count or any(v <= 0 or v != v for v in vols):
            raise self._bad(where, "volume", value, f"expected {count} positive volume(s)")
        return vols

    def _channels(self, args: dict[str, Any], count: int, where: str) -> list[int]:
        value = args.get("channels")
        if value is None:
            channels = list(range(count))
        else:
            try:
                channels = [int(c) for c in str(value).strip("[]").split(",") if c.strip()]
            except ValueError:
                raise self._bad(where, "channels", value, "expected channel numbers") from None
        n = self.machine.backend.num_channels
        if len(channels) != count or any(not 0 <= c < n for c in channels):
            raise self._bad(where, "channels", value,
                            f"expected {count} channel(s) among 0..{n - 1}")
        return channels

    def _fresh_tips(self, count: int) -> list[Any]:
        from pylabrobot.resources import TipRack

        spots = [spot for rack in self.deck.get_all_children() if isinstance(rack, TipRack)
                 for spot in rack.get_all_items() if spot.has_tip()]
        if len(spots) < count:
            from pylabrobot.resources.errors import NoTipError

            raise NoTipError(f"{count} tip(s) needed, {len(spots)} left in the tip racks")
        return spots[:count]

    async def _operation(self, operation: str, args: dict[str, Any],
                         step: Callable[[str, float, Awaitable[Any]], Awaitable[Any]],
                         where: str) -> dict[str, Any]:
        lh = self.machine
        if operation in _READS:
            return await self._read(operation, args, step, where)
        if operation == "transfer":
            source = self._wells(self._plate(args, "source_plate", where), args, "source_well", where)
            if len(source) != 1:
                raise self._bad(where, "source_well", args["source_well"], "expected one well")
            targets = self._wells(self._plate(args, "target_plate", where), args, "target_wells",
                                  where)
            vols = self._volumes(args, len(targets), where)
            stages = 3 + len(targets)
            if lh.head[0].has_tip:
                raise DriverError(f"{where}: channel 0 holds a tip (left by an aspirate): "
                                  f"a transfer needs it free", code="HasTipError",
                                  instrument_id=self.instrument_id)
            await step("pick up tip", 1 / stages, lh.pick_up_tips(self._fresh_tips(1),
                                                                   use_channels=[0]))
            try:
                await step("aspirate", 2 / stages, lh.aspirate(source, vols=[sum(vols)],
                                                               use_channels=[0]))
                for i, (target, vol) in enumerate(zip(targets, vols, strict=True)):
                    await step(f"dispense {target.get_identifier()}", (3 + i) / stages,
                               lh.dispense([target], vols=[vol], use_channels=[0]))
            finally:  # the tip goes, also after a failure or a cancel
                if lh.head[0].has_tip:
                    await self._drop_tips([0])
            await step("drop tip", 1.0, _done())
            return {"Source": f"{args['source_plate']}:{source[0].get_identifier()}",
                    "Targets": [t.get_identifier() for t in targets], "Volume": sum(vols),
                    "SourceRemaining": _volume(source[0])}
        wells = self._wells(self._plate(args, "plate", where), args, "wells", where)
        vols = self._volumes(args, len(wells), where)
        channels = self._channels(args, len(wells), where)
        if operation == "aspirate":
            bare = [c for c in channels if not lh.head[c].has_tip]
            if bare:
                await step("pick up tips", 0.5, lh.pick_up_tips(self._fresh_tips(len(bare)),
                                                                 use_channels=bare))
            await step("aspirate", 1.0, lh.aspirate(wells, vols=vols, use_channels=channels))
            after = {"Remaining": [_volume(w) for w in wells]}
        else:
            keep = str(args.get("keep_tips", "false")).strip().lower() in ("true", "1", "yes")
            await step("dispense", 1.0 if keep else 0.5,
                       lh.dispense(wells, vols=vols, use_channels=channels))
            if not keep:
                await step("drop tips", 1.0, self._drop_tips(channels))
            after = {"Contains": [_volume(w) for w in wells]}
        result = {"Wells": [w.get_identifier() for w in wells], "Channels": channels,
                  "Volumes": vols}
        if self.options.volume_tracking:
            result.update(after)
        return result

    async def _drop_tips(self, channels: Sequence[int]) -> None:
        lh = self.machine
        try:
            self.deck.get_trash_area()
        except Exception:  # noqa: BLE001 - no trash on this deck: back into the rack
            await lh.return_tips(use_channels=list(channels), allow_nonzero_volume=True)
        else:
            await lh.discard_tips(use_channels=list(channels))

    async def _read(self, operation: str, args: dict[str, Any],
                    step: Callable[[str, float, Awaitable[Any]], Awaitable[Any]],
                    where: str) -> dict[str, Any]:
        numbers: dict[str, float] = {}
        for name, value in args.items():
            if name in OPERATION_ARGUMENTS[operation][0]:
                try:
                    numbers[name] = float(value)
                except (TypeError, ValueError):
                    raise self._bad(where, name, value, "expected a number") from None
        call = getattr(self.machine, operation)
        kwargs: dict[str, Any] = {k: int(v) if k.endswith("wavelength") else v
                                  for k, v in numbers.items()}
        result = await step("read", 1.0, call(use_new_return_type=True, **kwargs))
        data = result[0]["data"] if result else []
        values = [v for row in data for v in row if v is not None]
        return {"WellValues": values, "Mean": sum(values) / len(values) if values else None,
                **{k: v for k, v in kwargs.items()}}

    def _failed(self, exc: Exception, spec: PlrCommandSpec, where: str) -> DriverError:
        from pylabrobot.liquid_handling.errors import ChannelizedError

        inner: BaseException = exc
        detail = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, ChannelizedError) and exc.errors:
            channel, inner = next(iter(exc.errors.items()))
            detail = f"channel {channel}: {type(inner).__name__}: {inner}"
        code = type(inner).__name__
        error = spec.errors.get(code)
        return DriverError(f"{where}: {detail}", code=code,
                           retryable=error.retryable if error else False,
                           instrument_id=self.instrument_id)

    def __repr__(self) -> str:
        return (f"PyLabRobotDriver({self.instrument_id!r}, {self.options.machine}, "
                f"{self.options.backend}, state={self.state.value})")


async def _done() -> None:
    """Nothing to send: marks a step already done."""


def _volume(container: Any) -> float | None:
    tracker = getattr(container, "tracker", None)
    if tracker is None or tracker.is_disabled:
        return None
    return float(tracker.get_used_volume())
