"""The driver protocol: how the core talks to any instrument.

Every instrument — simulated, SiLA 2, a remote robot agent — is one object satisfying
:class:`Driver`. The core never knows which kind it holds. The contract, in short:

- :meth:`Driver.connect` / :meth:`Driver.disconnect` open and close the link;
- :meth:`Driver.execute` runs one order (one step) and returns its output parameters,
  reporting progress through a :class:`ProgressSink` while it runs;
- :meth:`Driver.cancel` asks the instrument to stop one running order;
- :meth:`Driver.heartbeat` proves the instrument is still there;
- :meth:`Driver.status` says what it is doing now.

Ownership rules that every implementation and every caller relies on:

- **The engine owns timeouts and retries.** A driver never imposes its own deadline on a
  command (it may on a network round trip). On a step timeout or an operator cancel the
  engine calls :meth:`Driver.cancel` first, then cancels its own task.
- **Errors are** :class:`DriverError` **and its subclasses**, each with a ``code`` (a SiLA
  defined-error identifier or one of ours) and a ``retryable`` flag that feeds the retry
  policy. :class:`OutcomeUnknown` is never retried unless the step is idempotent.
- **Drivers do not persist anything.** They report; the engine records.

The one mapping from :class:`DriverState` to Data Services' :class:`~core.orders.ModuleStatus`
lives here (:attr:`DriverState.module_status`), so every view and the Data Services exchange
agree on what "Ready" means.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, Protocol, runtime_checkable

from core.clock import Clock, SystemClock
from core.errors import LabconsoleError, Where
from core.orders import ModuleStatus

if TYPE_CHECKING:
    from core.events import EventBus
    from core.instruments import InstrumentConfig
    from core.orders import Order

__all__ = [
    "MODULE_STATUS",
    "Driver",
    "DriverError",
    "DriverInfo",
    "DriverState",
    "DriverStatus",
    "InstrumentUnavailable",
    "OrderCancelled",
    "OutcomeUnknown",
    "ProgressSink",
    "UnsupportedCapability",
    "WorkcellEntry",
    "link_state",
    "no_progress",
    "resolve_capability",
]


class DriverState(StrEnum):
    """What a driver is doing, as the Robots panel shows it."""

    DISCONNECTED = "disconnected"
    """No link to the instrument (never connected, closed, or lost)."""
    CONNECTING = "connecting"
    """:meth:`Driver.connect` is in progress."""
    IDLE = "idle"
    """Connected, nothing running; accepts orders."""
    BUSY = "busy"
    """Connected, at least one order running."""
    ERROR = "error"
    """The instrument reported a fault it cannot clear by itself."""
    NEEDS_OPERATOR = "needs_operator"
    """Someone has to look at the instrument (e.g. it restarted while an order was in flight)."""

    @property
    def module_status(self) -> ModuleStatus:
        """The Data Services module status for this state (see :data:`MODULE_STATUS`)."""
        return MODULE_STATUS[self]


MODULE_STATUS: Mapping[DriverState, ModuleStatus] = {
    DriverState.DISCONNECTED: ModuleStatus.Offline,
    DriverState.CONNECTING: ModuleStatus.Offline,
    DriverState.IDLE: ModuleStatus.Ready,
    DriverState.BUSY: ModuleStatus.Busy,
    DriverState.ERROR: ModuleStatus.Error,
    DriverState.NEEDS_OPERATOR: ModuleStatus.Error,
}
"""DriverState -> ModuleStatus, the only place this mapping is written down."""


@dataclass(frozen=True)
class DriverInfo:
    """Identity of an instrument, shown in the Robots panel and used for dispatch.

    Attributes:
        name: Display name (e.g. ``"Plate reader 1"``). The instrument *id* is the key under
            which the workcell holds the driver, not part of this record.
        kind: Instrument kind (``"PlateReader"``, ``"LiquidHandler"`` ...).
        vendor: Manufacturer, if known.
        model: Model name, if known.
        serial: Serial number, if known.
        capabilities: Commands the instrument accepts, each ``"Feature.Command"``
            (``"PlateReader.ReadPlate"``). The dispatcher matches a step's capability here.
        driver: The workcell file's driver kind (``"simulated"``, ``"sila"``, ``"agent"``,
            ``"pylabrobot"``, ``"madsci"``).
        endpoint: Where the console reaches the instrument, as the operator would look for it
            (``"127.0.0.1:50101 (TLS, pinned certificate)"``, the agent hub's ``ws://`` URL, a
            MADSci node's URL, a PyLabRobot backend).
        identity: What the instrument said about itself when it connected, as ``(label,
            value)`` pairs in display order: a SiLA server's name, type, UUID and version, an
            agent's address, host and version, a MADSci node's name, id and module, a PyLabRobot
            machine and backend class. Empty before the first connect; after the link drops it
            keeps the last one seen (the state says the instrument is gone).

    Capabilities never change after construction (the dispatcher indexes them); a driver
    replaces :attr:`Driver.info` with :meth:`identified` when it learns who answered.
    """

    name: str
    kind: str
    vendor: str = ""
    model: str = ""
    serial: str = ""
    capabilities: frozenset[str] = frozenset()
    driver: str = ""
    endpoint: str = ""
    identity: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, config: Any, *, serial: str | None = None, endpoint: str = "") -> DriverInfo:
        """The identity a workcell file gives an instrument (an ``InstrumentConfig``)."""
        return cls(name=config.display_name, kind=config.kind, vendor=config.vendor, model=config.model,
                   serial=serial if serial is not None else config.serial,
                   capabilities=frozenset(config.capabilities), driver=config.driver,
                   endpoint=endpoint)

    def identified(self, identity: Iterable[tuple[str, Any]], *, endpoint: str | None = None,
                   serial: str | None = None) -> DriverInfo:
        """This record with what the instrument reported: ``identity`` pairs whose value is
        empty or None are left out, the others are shown as text (a list joined by commas)."""
        pairs: list[tuple[str, str]] = []
        for label, value in identity:
            if isinstance(value, set | frozenset):
                value = ", ".join(sorted(map(str, value)))
            elif isinstance(value, list | tuple):
                value = ", ".join(map(str, value))
            if value is not None and value != "":
                pairs.append((label, str(value)))
        return replace(self, identity=tuple(pairs), endpoint=self.endpoint if endpoint is None else endpoint,
                       serial=self.serial if serial is None else serial)


@dataclass
class DriverStatus:
    """A driver's answer to :meth:`Driver.status`.

    Attributes:
        state: What the driver is doing.
        detail: Human-readable detail (``"connection lost during PlateReader.ReadPlate"``).
        running: Identifiers of the orders running on the instrument now.
        last_heartbeat: When the instrument last answered (UTC), or None if never.
    """

    state: DriverState
    detail: str = ""
    running: list[str] = field(default_factory=list)
    last_heartbeat: datetime | None = None

    @property
    def module_status(self) -> ModuleStatus:
        """Data Services module status of :attr:`state`."""
        return MODULE_STATUS[self.state]


class DriverError(LabconsoleError):
    """An instrument command failed.

    Args:
        message: What went wrong, for a person (names the instrument and the command).
        code: Machine-readable reason: the SiLA defined-error identifier
            (``"PlateNotPresent"``) or one of labconsole's own. Defaults to the class's code.
        retryable: Whether running the same order again may succeed. Feeds the retry policy.
            Defaults to the class's value.
        instrument_id: The instrument that raised it, when known.
    """

    code: str = "DriverError"
    retryable: bool = False

    def __init__(self, message: str = "", *, code: str | None = None,
                 retryable: bool | None = None, instrument_id: str | None = None) -> None:
        if code is not None:
            self.code = code
        if retryable is not None:
            self.retryable = retryable
        self.instrument_id = instrument_id
        super().__init__(message or self.code)

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.code

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.message!r}, code={self.code!r}, "
                f"retryable={self.retryable!r})")


class InstrumentUnavailable(DriverError):
    """The instrument cannot be reached: connect or heartbeat failed, or the link dropped.

    Retryable by default: the same order may run once the instrument is back.
    """

    code = "InstrumentUnavailable"
    retryable = True


class OrderCancelled(DriverError):
    """The order stopped because :meth:`Driver.cancel` was called for it."""

    code = "OrderCancelled"
    retryable = False


class OutcomeUnknown(DriverError):
    """The link was lost *after* the command was sent: it may or may not have run.

    Not retryable by default; the engine retries it only for steps marked idempotent and
    otherwise asks the operator.
    """

    code = "OutcomeUnknown"
    retryable = False


class UnsupportedCapability(DriverError):
    """The order asks for a command the instrument does not offer."""

    code = "UnsupportedCapability"
    retryable = False


ProgressSink = Callable[[float | None, Mapping[str, Any] | None], None]
"""Receives progress while an order runs: ``sink(fraction, values)``.

``fraction`` is 0..1 (None if the instrument cannot tell); ``values`` are intermediate
responses (e.g. ``{"WellsRead": 48}``) or None. Called synchronously from the driver, so it must
be cheap (store the latest value; never start a task per call).
"""


def no_progress(fraction: float | None, values: Mapping[str, Any] | None) -> None:
    """A :data:`ProgressSink` that ignores everything."""


@runtime_checkable
class Driver(Protocol):
    """One instrument, as the core sees it. All methods are coroutines on the core's loop.

    Attributes:
        info: Identity and capabilities. Capabilities are fixed; :attr:`DriverInfo.identity`
            (and the endpoint) is filled by :meth:`connect` from what the instrument reports
            and may change when it reconnects (a restarted SiLA server has a new UUID).
    """

    info: DriverInfo

    async def connect(self) -> None:
        """Open the link and make the instrument ready for orders.

        Also used to reconnect after the link was lost. Idempotent when already connected.

        Raises:
            InstrumentUnavailable: the instrument cannot be reached.
        """
        ...

    async def disconnect(self) -> None:
        """Close the link. Orders still running end with :class:`InstrumentUnavailable`.

        Never raises for an instrument that is already gone.
        """
        ...

    async def status(self) -> DriverStatus:
        """What the instrument is doing now. Cheap; never waits on a command."""
        ...

    async def execute(self, order: Order, progress: ProgressSink) -> dict[str, Any]:
        """Run one order and return its output parameters (name -> value).

        The command is chosen from the order's ``templateName`` (see :func:`resolve_capability`);
        its parameters are the order's input parameters. Progress and intermediate values go to
        ``progress`` while it runs. The driver applies no deadline of its own to the command.

        Raises:
            OrderCancelled: :meth:`cancel` was called for this order while it ran.
            InstrumentUnavailable: not connected, or the link dropped before the command ran.
            OutcomeUnknown: the link dropped after the command was sent.
            UnsupportedCapability: the instrument has no such command.
            DriverError: the instrument reported an error (``code`` says which).
            asyncio.CancelledError: the caller cancelled its own task (also when it called
                :meth:`cancel` first); the caller's cancellation always wins.
        """
        ...

    async def cancel(self, order_id: str) -> bool:
        """Ask the instrument to stop the running order ``order_id``.

        Returns True if the instrument confirmed it will stop (the pending :meth:`execute` then
        raises :class:`OrderCancelled` promptly, or ``CancelledError`` if the caller also
        cancelled the task running it), False if it cannot cancel or the order is not
        running there (the engine then stops waiting and may flag the instrument for an
        operator).
        """
        ...

    async def heartbeat(self) -> float:
        """Check the instrument is alive; return the round trip in seconds.

        Raises:
            InstrumentUnavailable: no answer, or not connected.
        """
        ...


_WORDS = re.compile(r"[^a-z0-9]")


def _norm(text: str) -> str:
    return _WORDS.sub("", text.lower())


def resolve_capability(order: Order, capabilities: Collection[str],
                       instrument_id: str | None = None) -> str:
    """The capability (``"Feature.Command"``) an order asks for, among ``capabilities``.

    Matched against the order's ``templateName``, first exactly, then ignoring case, spaces,
    ``_`` and ``-``, against the full name (``"PlateReader.ReadPlate"``) or the command alone
    (``"ReadPlate"``, ``"read_plate"``). An order without a template name goes to the only
    capability of a single-capability instrument. Shared by all drivers so they choose commands the same way.

    Raises:
        UnsupportedCapability: nothing matches, or the command name is ambiguous.
    """
    name = order.templateName or ""
    if name in capabilities:
        return name
    wanted = _norm(name)
    full = [c for c in capabilities if _norm(c) == wanted]
    if len(full) == 1:
        return full[0]
    short = [c for c in capabilities if _norm(c.rpartition(".")[2]) == wanted]
    if len(short) == 1:
        return short[0]
    if not wanted and len(capabilities) == 1:
        return next(iter(capabilities))
    who = f"{instrument_id}: " if instrument_id else ""
    offered = ", ".join(sorted(capabilities)) or "none"
    if len(short) > 1:
        raise UnsupportedCapability(
            f"{who}order {order.identifier} asks for {name!r}, which matches several commands "
            f"({', '.join(sorted(short))}); use the full name", instrument_id=instrument_id)
    raise UnsupportedCapability(
        f"{who}order {order.identifier} asks for {name!r}, which this instrument does not "
        f"offer (capabilities: {offered})", instrument_id=instrument_id)


def raise_interrupt(interrupt: BaseException | None, task: asyncio.Task[Any] | None) -> NoReturn:
    """Inside ``except asyncio.CancelledError``: a command the driver itself interrupted ends
    with ``interrupt`` (cancelled, instrument lost ...); a cancellation of the caller's own task
    (or one with no interrupt recorded) goes on as a cancellation."""
    if interrupt is None or (task is not None and task.uncancel() > 0):
        raise  # re-raises the CancelledError being handled
    raise interrupt from None


StatusKey = tuple[DriverState, str | None, tuple[str, ...]]


def announce_status(bus: EventBus | None, previous: StatusKey | None, instrument_id: str,
                    state: DriverState, detail: str | None, orders: Collection[str],
                    enabled: bool) -> StatusKey | None:
    """Publish the instrument's status if (state, detail, orders) changed since ``previous``;
    returns what was published last (the driver keeps it for the next call)."""
    if bus is None:
        return previous
    key: StatusKey = (state, detail, tuple(orders))
    if key != previous:
        from core.events import InstrumentStatusChanged

        bus.publish(InstrumentStatusChanged(instrument_id=instrument_id, status=state.module_status,
                                            detail=detail or state.value, current_orders=key[2],
                                            enabled=enabled))
    return key


class WorkcellFile(Protocol):
    """What a driver needs of its workcell file (``core.workcell.Workcell``, which imports the
    drivers, so it is not imported here)."""

    @property
    def source(self) -> str | None: ...

    def where(self, path: Sequence[str | int]) -> Where: ...


class WorkcellEntry:
    """What a driver configured by one entry of a workcell file keeps: the entry, the clock, the
    bus, and where the entry stands in its file (located messages, paths relative to the file)."""

    def __init__(self, config: InstrumentConfig, clock: Clock | None, bus: EventBus | None,
                 workcell: WorkcellFile | None, index: int | None) -> None:
        self.config = config
        self.instrument_id = config.id
        self.clock = clock or SystemClock()
        self.bus = bus
        self._workcell = workcell
        self._index = index
        source = workcell.source if workcell is not None else None
        self._base_dir = Path(source).parent if source else Path.cwd()

    def where(self, *path: str | int) -> Where:
        """File:line of ``path`` under this instrument's entry of the workcell file."""
        if self._workcell is None or self._index is None:
            return Where(None, ".".join(str(p) for p in (self.instrument_id, *path)))
        return self._workcell.where(("instruments", self._index, *path))


def link_state(*, connecting: bool, connected: bool, busy: bool) -> DriverState:
    """The state of a driver that holds a link to its instrument: connecting, disconnected, or
    busy/idle by whether it has work under way."""
    if connecting:
        return DriverState.CONNECTING
    if not connected:
        return DriverState.DISCONNECTED
    return DriverState.BUSY if busy else DriverState.IDLE
