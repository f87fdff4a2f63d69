"""Wire formats of Biosero Data Services: enum names, dates, TimeSpans, key casing.

Data Services speaks .NET: enums travel as names in responses and are read as names *or*
integers in requests; dates are ``DateTimeOffset`` ISO strings with an offset, the unset value
being ``0001-01-01T00:00:00+00:00``; durations are ``TimeSpan`` strings ``[d.]hh:mm:ss[.fffffff]``;
request keys may be camelCase or PascalCase. This module holds those rules in one place so the
models, the client and the embedded server agree on them.
"""

from __future__ import annotations

import enum
import logging
import re
from datetime import UTC, datetime, timedelta
from typing import Any

log = logging.getLogger(__name__)

UNSET_DATE = "0001-01-01T00:00:00+00:00"
ZERO_TIMESPAN = "00:00:00"


class WireEnum(enum.IntEnum):
    """An enum whose integer values are the Data Services *server* integers.

    On the wire it is written by name. It is read from a name (any case) or an integer. Integers
    follow the server table (specs/data-services.md §2.6); ``bdm_int`` gives the
    biosero-data-models numbering, which is off by one for some enums.
    """

    @classmethod
    def _bdm_offset(cls) -> int:
        return 0

    @property
    def bdm_int(self) -> int:
        """The integer biosero-data-models (and the seed documents) use for this member."""
        return int(self) + self._bdm_offset()

    @classmethod
    def from_bdm_int(cls, value: int) -> WireEnum:
        return cls(value - cls._bdm_offset())

    @property
    def wire(self) -> str:
        return self.name

    def __str__(self) -> str:
        return self.name

    def __format__(self, spec: str) -> str:
        return format(self.name, spec)

    @classmethod
    def parse(cls, value: Any, *, field: str = "") -> WireEnum:
        """Read a member from a name (case-insensitive), an integer, or a member."""
        if isinstance(value, cls):
            return value
        if isinstance(value, bool):
            raise ValueError(f"{cls.__name__}: expected a name or integer, got {value!r}")
        if isinstance(value, int):
            try:
                member = cls(value)
            except ValueError:
                raise ValueError(f"{value} is not a {cls.__name__} integer "
                                 f"(valid: {', '.join(f'{m.name}={int(m)}' for m in cls)})") from None
            if cls._bdm_offset():
                log.warning("%s%s given as integer %d: read by the server table as %s "
                            "(biosero-data-models would mean %s)", cls.__name__,
                            f" ({field})" if field else "", value, member.name,
                            _bdm_name(cls, value))
            return member
        if isinstance(value, str):
            text = value.strip()
            if re.fullmatch(r"-?\d+", text):
                return cls.parse(int(text), field=field)
            found = _by_lower_name(cls).get(text.lower())
            if found is not None:
                return found
            raise ValueError(f"{value!r} is not a {cls.__name__} "
                             f"(valid: {', '.join(m.name for m in cls)})")
        raise ValueError(f"{cls.__name__}: expected a name or integer, got {type(value).__name__}")


def _by_lower_name(cls: type[WireEnum]) -> dict[str, WireEnum]:
    cache = cls.__dict__.get("_lower_cache")
    if cache is None:
        cache = {name.lower(): member for name, member in cls.__members__.items()}
        type.__setattr__(cls, "_lower_cache", cache)
    return cache


def _bdm_name(cls: type[WireEnum], value: int) -> str:
    try:
        return cls.from_bdm_int(value).name
    except ValueError:
        return "nothing"


# --------------------------------------------------------------------------- dates


def parse_datetime(value: Any) -> datetime | None:
    """Parse a Data Services date. Unset (``0001-01-01``) and empty give None.

    Accepts ISO 8601 with an offset or ``Z``, up to 7 fractional digits, naive ISO times and
    space-separated naive times; naive times are taken as UTC (as Data Services does).
    """
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, str):
        text = value.strip()
        if text.startswith("0001-01-01"):
            return None
        text = text.replace(" ", "T", 1) if "T" not in text and " " in text else text
        text = _trim_fraction(text)
        try:
            dt = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"{value!r} is not an ISO 8601 date-time") from None
    else:
        raise ValueError(f"expected a date-time string, got {type(value).__name__}")
    if dt.year == 1 and dt.month == 1 and dt.day == 1:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt


_FRACTION = re.compile(r"(\.\d{6})\d+")


def _trim_fraction(text: str) -> str:
    # .NET writes up to 7 fractional digits; keep microseconds.
    return _FRACTION.sub(r"\1", text, count=1)


def format_datetime(value: datetime | None) -> str:
    """Write a date as Data Services does: ISO with ``+00:00``; unset as ``0001-01-01...``."""
    if value is None:
        return UNSET_DATE
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat()


# --------------------------------------------------------------------------- TimeSpan

_TIMESPAN = re.compile(r"^(?P<neg>-)?(?:(?P<d>\d+)\.)?(?P<h>\d{1,2}):(?P<m>\d{2})(?::(?P<s>\d{2})(?:\.(?P<f>\d{1,7}))?)?$")


def parse_timespan(value: Any) -> timedelta | None:
    """Parse a .NET TimeSpan (``[-][d.]hh:mm[:ss[.fffffff]]``), seconds as a number, or None."""
    if value is None or value == "":
        return None
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("expected a TimeSpan, got a boolean")
    if isinstance(value, int | float):
        return timedelta(seconds=float(value))
    if isinstance(value, str):
        m = _TIMESPAN.match(value.strip())
        if not m:
            raise ValueError(f"{value!r} is not a TimeSpan (expected hh:mm:ss)")
        frac = (m["f"] or "0").ljust(7, "0")
        td = timedelta(days=int(m["d"] or 0), hours=int(m["h"]), minutes=int(m["m"]),
                       seconds=int(m["s"] or 0), microseconds=int(frac) // 10)
        return -td if m["neg"] else td
    raise ValueError(f"expected a TimeSpan string, got {type(value).__name__}")


def format_timespan(value: timedelta | None) -> str:
    """Write a TimeSpan as .NET does: ``hh:mm:ss``, ``d.hh:mm:ss``, fraction only when present."""
    if value is None:
        return ZERO_TIMESPAN
    sign = "-" if value < timedelta(0) else ""
    value = abs(value)
    total_us = value.days * 86_400_000_000 + value.seconds * 1_000_000 + value.microseconds
    days, rem = divmod(total_us, 86_400_000_000)
    hours, rem = divmod(rem, 3_600_000_000)
    minutes, rem = divmod(rem, 60_000_000)
    seconds, micros = divmod(rem, 1_000_000)
    text = f"{hours:02d}:{minutes:02d}:{seconds:02d}"
    if days:
        text = f"{days}.{text}"
    if micros:
        text += f".{micros * 10:07d}"
    return sign + text


# --------------------------------------------------------------------------- keys


def camel_keys(data: dict[str, Any], known: dict[str, str]) -> dict[str, Any]:
    """Bind request keys case-insensitively (as ASP.NET does) to the ``known`` field names.

    ``known`` maps lower-cased names to the canonical field name. Unknown keys are kept as they
    are, so the caller can decide whether to refuse them.
    """
    out: dict[str, Any] = {}
    for key, value in data.items():
        out[known.get(key.lower(), key) if isinstance(key, str) else key] = value
    return out


def now_utc() -> datetime:
    return datetime.now(UTC)
