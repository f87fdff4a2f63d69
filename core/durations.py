"""Durations written by people: ``90``, ``"30s"``, ``"5m"``, ``"1h30m"``, ``"250ms"``.

One parser for every file labconsole reads (workcells, workflow templates, the command line)::

    parse_duration(90)          -> 90.0
    parse_duration("1.5s")      -> 1.5
    parse_duration("5m")        -> 300.0
    parse_duration("1h 30m")    -> 5400.0
    parse_duration("250ms")     -> 0.25
    parse_duration("00:05:00")  -> 300.0      (hh:mm:ss, as Data Services writes TimeSpans)

A bare number is seconds. Units: ``ms``, ``s``, ``m``/``min``, ``h``, ``d`` (also ``sec``,
``second(s)``, ``minute(s)``, ``hour(s)``, ``day(s)``). Negative, infinite and NaN values are
refused. :data:`Duration` is the pydantic field type (``timeout: Duration = 30.0``), so a model
field accepts the same spellings and reports a bad one as a validation error on that field.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator

__all__ = ["Duration", "DurationError", "format_duration", "parse_duration"]


class DurationError(ValueError):
    """A value that is not a duration. The message quotes the value and shows valid spellings."""


_UNITS: dict[str, float] = {
    "ms": 0.001, "msec": 0.001, "millisecond": 0.001, "milliseconds": 0.001,
    "s": 1.0, "sec": 1.0, "secs": 1.0, "second": 1.0, "seconds": 1.0,
    "m": 60.0, "min": 60.0, "mins": 60.0, "minute": 60.0, "minutes": 60.0,
    "h": 3600.0, "hr": 3600.0, "hrs": 3600.0, "hour": 3600.0, "hours": 3600.0,
    "d": 86400.0, "day": 86400.0, "days": 86400.0,
}
_PART = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]+)\s*")
_CLOCK = re.compile(r"(?:(\d+)\.)?(\d+):(\d{1,2}):(\d{1,2}(?:\.\d+)?)")
_HINT = 'use seconds (90) or a number with a unit: "250ms", "30s", "5m", "1h30m", "2d"'


def parse_duration(value: Any) -> float:
    """Seconds (a non-negative finite float) from a number, a string or a ``timedelta``.

    Raises:
        DurationError: ``value`` is not a duration, or it is negative, infinite or NaN.
    """
    if isinstance(value, bool):  # bool is an int; True seconds is surely a mistake
        raise DurationError(f"expected a duration, got {value!r}; {_HINT}")
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:  # an int beyond any float
            raise DurationError(f"duration must be finite, got {value!r:.40}...") from None
    elif isinstance(value, str):
        seconds = _parse_text(value)
    else:
        raise DurationError(f"expected a duration, got {type(value).__name__} {value!r}; {_HINT}")
    if math.isnan(seconds) or math.isinf(seconds):
        raise DurationError(f"duration must be finite, got {value!r}")
    if seconds < 0:
        raise DurationError(f"duration must not be negative, got {value!r}")
    return seconds


def _parse_text(text: str) -> float:
    s = text.strip()
    if not s:
        raise DurationError(f"empty duration; {_HINT}")
    try:
        return float(s)  # "90", "1.5", "-3" (refused by the caller), "inf"
    except ValueError:
        pass
    clock = _CLOCK.fullmatch(s)
    if clock:
        days, hours, minutes, secs = clock.groups()
        if int(minutes) >= 60 or float(secs) >= 60:
            raise DurationError(f"bad duration {text!r}: minutes and seconds must be below 60")
        return int(days or 0) * 86400 + int(hours) * 3600 + int(minutes) * 60 + float(secs)
    total, pos = 0.0, 0
    while pos < len(s):
        m = _PART.match(s, pos)
        if not m:
            raise DurationError(f"bad duration {text!r}; {_HINT}")
        number, unit = m.groups()
        factor = _UNITS.get(unit.lower())
        if factor is None:
            raise DurationError(f"bad duration {text!r}: unknown unit {unit!r}; {_HINT}")
        total += float(number) * factor
        pos = m.end()
    return total


def format_duration(seconds: float) -> str:
    """A short human form: ``0.25`` -> ``"250ms"``, ``90`` -> ``"1m30s"``, ``5400`` -> ``"1h30m"``.

    The result parses back with :func:`parse_duration` (to the millisecond below a minute, to
    the second above).
    """
    if seconds < 0 or not math.isfinite(seconds):
        raise DurationError(f"cannot format {seconds!r} as a duration")
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    if seconds < 60:
        text = f"{seconds:.3f}".rstrip("0").rstrip(".")
        return f"{text}s"
    total = round(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, total = divmod(total, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


Duration = Annotated[float, BeforeValidator(parse_duration)]
"""Pydantic field type: seconds as ``float``, written as a number or any :func:`parse_duration` form."""
