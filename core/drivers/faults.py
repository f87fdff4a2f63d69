"""Fault injection for simulated instruments, written compactly for command lines and files.

A fault spec is a comma-separated list of ``key=value`` items. An item applies to every
instrument, or to one instrument when the key carries ``@<instrument id>``::

    rate=0.05,fail_next=2,hang=PlateReader1,disconnect_after=10
    rate@Sealer1=0.5,heartbeat@Centrifuge1=slow,heartbeat_delay=40s,seed=7

Keys (all optional):

======================  =====================================================================
``seed=N``              seed for every random draw (overrides the workcell's ``seed``)
``rate=P``              probability (0..1) that an order fails with a ``DriverError``
``fail_next=N``         the next N orders fail
``retryable=BOOL``      whether injected failures are retryable (default true)
``hang=IDS``            orders never finish until cancelled; ``IDS`` is ``true``/``false``,
                        ``*``, or instrument ids joined by ``+`` (``hang=PlateReader1+Sealer1``)
``hang_rate=P``         probability that an order hangs until cancelled
``disconnect_after=N``  the link drops during order N+1 (once): that order raises
                        ``InstrumentUnavailable``, and everything fails until ``connect()``
``disconnect=IDS``      the link drops during the next order (same as ``disconnect_after=0``)
``disconnect_rate=P``   probability that the link drops during an order
``unknown_rate=P``      probability that an order ends in ``OutcomeUnknown``
``unknown_next=N``      the next N orders end in ``OutcomeUnknown``
``heartbeat=MODE``      ``ok``, ``slow`` (answers after ``heartbeat_delay``), ``missing``
                        (raises ``InstrumentUnavailable``) or ``hang`` (never answers)
``heartbeat_delay=D``   round trip of a slow heartbeat (a duration, default ``10s``)
``connect_fail=N``      the next N ``connect()`` calls fail
======================  =====================================================================

A bad spec raises :class:`FaultSpecError` naming every bad item.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from core.durations import DurationError, parse_duration
from core.errors import ConfigError, Problem, Where

__all__ = ["FaultSpec", "FaultSpecError", "Faults", "HeartbeatMode"]

HeartbeatMode = Literal["ok", "slow", "missing", "hang"]


class FaultSpecError(ConfigError):
    """A fault spec that does not parse; lists every bad item."""


@dataclass(frozen=True)
class Faults:
    """The faults in force on one instrument (all off by default)."""

    rate: float = 0.0
    """Probability that an order fails with a ``DriverError`` (code ``SimulatedFailure``)."""
    fail_next: int = 0
    """The next this-many orders fail."""
    retryable: bool = True
    """Whether injected failures are marked retryable."""
    hang: bool = False
    """Every order hangs until cancelled."""
    hang_rate: float = 0.0
    """Probability that an order hangs until cancelled."""
    disconnect_after: int | None = None
    """The link drops during order number ``disconnect_after + 1`` (counted from now), once."""
    disconnect_rate: float = 0.0
    """Probability that the link drops during an order."""
    unknown_rate: float = 0.0
    """Probability that an order ends in ``OutcomeUnknown``."""
    unknown_next: int = 0
    """The next this-many orders end in ``OutcomeUnknown``."""
    heartbeat: HeartbeatMode = "ok"
    """How heartbeats behave: answer, answer slowly, fail, or never answer."""
    heartbeat_delay: float = 10.0
    """Round trip of a slow heartbeat, seconds."""
    connect_fail: int = 0
    """The next this-many ``connect()`` calls fail."""

    @property
    def active(self) -> bool:
        """True if any fault is switched on."""
        return self != Faults(heartbeat_delay=self.heartbeat_delay, retryable=self.retryable)


_PROBABILITIES = {"rate", "hang_rate", "disconnect_rate", "unknown_rate"}
_COUNTS = {"fail_next", "unknown_next", "connect_fail", "disconnect_after"}
_FLAGS = {"hang", "disconnect", "retryable"}
_HEARTBEAT_MODES = ("ok", "slow", "missing", "hang")
_KEYS = sorted(_PROBABILITIES | _COUNTS | _FLAGS | {"heartbeat", "heartbeat_delay", "seed"})
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}
_ALL = {"*", "all"}


@dataclass(frozen=True)
class FaultSpec:
    """A parsed fault spec: settings for every instrument plus per-instrument overrides.

    Build it with :meth:`parse`; get one instrument's :class:`Faults` with
    :meth:`for_instrument`.
    """

    common: Mapping[str, Any] = field(default_factory=dict)
    """Settings that apply to every instrument (``Faults`` field -> value)."""
    scoped: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Instrument id -> settings that apply to it only (win over :attr:`common`)."""
    seed: int | None = None
    """The ``seed=`` item, if given."""
    text: str = ""
    """The spec as written."""

    @classmethod
    def parse(cls, text: str, *, source: str = "fault spec") -> FaultSpec:
        """Parse ``text``; ``source`` names where it came from in error messages.

        Raises:
            FaultSpecError: one problem per bad item, each quoting the item.
        """
        common: dict[str, Any] = {}
        scoped: dict[str, dict[str, Any]] = {}
        seed: int | None = None
        problems: list[Problem] = []

        def bad(item: str, message: str) -> None:
            problems.append(Problem(Where(source, repr(item)), message))

        for raw in text.split(","):
            item = raw.strip()
            if not item:
                continue
            key, eq, value = item.partition("=")
            key, value = key.strip(), value.strip()
            if not eq:
                bad(item, f"expected key=value (keys: {', '.join(_KEYS)})")
                continue
            key, _, target = key.partition("@")
            key, target = key.strip().lower(), target.strip()
            if key not in _KEYS:
                bad(item, f"unknown key {key!r} (keys: {', '.join(_KEYS)})")
                continue
            if "@" in item.partition("=")[0] and not target:
                bad(item, "an instrument id must follow '@'")
                continue
            try:
                if key == "seed":
                    if target:
                        raise ValueError("seed applies to the whole workcell; drop the '@'")
                    seed = _count(value)
                    continue
                for name, setting, instruments in _settings(key, value):
                    if target and instruments is not None:
                        raise ValueError("give the instrument either after '@' or as the value, "
                                         "not both")
                    targets = [target] if target else instruments
                    if targets is None:
                        common[name] = setting
                    else:
                        for t in targets:
                            scoped.setdefault(t, {})[name] = setting
            except ValueError as exc:
                bad(item, str(exc))
        if problems:
            raise FaultSpecError(f"bad fault spec {text!r}", problems)
        return cls(common, scoped, seed, text)

    @property
    def instruments(self) -> frozenset[str]:
        """Instrument ids the spec names."""
        return frozenset(self.scoped)

    def check_instruments(self, known: Collection[str], *, source: str = "fault spec") -> None:
        """Raise :class:`FaultSpecError` if the spec names an instrument not in ``known``."""
        unknown = sorted(self.instruments - set(known))
        if unknown:
            raise FaultSpecError(f"bad fault spec {self.text!r}", [
                Problem(Where(source, repr(i)),
                        f"no instrument {i!r} in the workcell (instruments: {', '.join(sorted(known))})")
                for i in unknown])

    def for_instrument(self, instrument_id: str, base: Faults | None = None) -> Faults:
        """The faults in force on ``instrument_id``: ``base``, then common, then scoped items."""
        return dataclasses.replace(base or Faults(), **{**self.common,
                                                       **self.scoped.get(instrument_id, {})})

    def __str__(self) -> str:
        return self.text


def _settings(key: str, value: str) -> list[tuple[str, Any, list[str] | None]]:
    """(Faults field, value, instruments or None for all) for one item."""
    if key in _PROBABILITIES:
        return [(key, _probability(value), None)]
    if key in _COUNTS:
        return [(key, _count(value), None)]
    if key == "heartbeat":
        mode = value.lower()
        if mode not in _HEARTBEAT_MODES:
            raise ValueError(f"heartbeat must be one of {', '.join(_HEARTBEAT_MODES)}, got {value!r}")
        return [("heartbeat", mode, None)]
    if key == "heartbeat_delay":
        try:
            return [("heartbeat_delay", parse_duration(value), None)]
        except DurationError as exc:
            raise ValueError(str(exc)) from None
    # flags: hang, disconnect, retryable
    low = value.lower()
    name, on = ("disconnect_after", 0) if key == "disconnect" else (key, True)
    off: Any = None if key == "disconnect" else False
    if low in _TRUE or low in _ALL:
        return [(name, on, None)]
    if low in _FALSE:
        return [(name, off, None)]
    if key == "retryable":
        raise ValueError(f"retryable must be true or false, got {value!r}")
    ids = [i.strip() for i in value.split("+")]
    if not value or not all(ids):
        raise ValueError(f"{key} takes true, false, * or instrument ids joined by '+', got {value!r}")
    return [(name, on, ids)]


def _probability(value: str) -> float:
    try:
        p = float(value.rstrip("%")) / (100 if value.endswith("%") else 1)
    except ValueError:
        raise ValueError(f"expected a probability between 0 and 1 (or a percentage), got {value!r}") from None
    if not 0.0 <= p <= 1.0 or math.isnan(p):
        raise ValueError(f"a probability must be between 0 and 1, got {value!r}")
    return p


def _count(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise ValueError(f"expected a whole number, got {value!r}") from None
    if n < 0:
        raise ValueError(f"must not be negative, got {value!r}")
    return n
