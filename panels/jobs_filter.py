"""What the Jobs table shows: a filter over order rows, and saved views.

:class:`OrderFilter` is a frozen value (status, priority, instrument, template, kind, run, time
range, free text). :meth:`OrderFilter.predicate` compiles it once into one Python function over
the light order rows of ``core.store.ORDER_ROW_COLUMNS``; the table model calls it per row, so a
filter over 100,000 rows costs tens of milliseconds and never goes through
a Qt sort-filter proxy model.

:class:`SavedViews` keeps named views (a filter plus a sort) in a JSON file in the data directory,
next to the store, so an operator's "Needs attention" view survives restarts.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from core.errors import ConfigError
from core.history import HistoryQuery
from core.inifile import read_section
from core.orders import OrderPriority, OrderStatus

log = logging.getLogger(__name__)

# Positions in an order row (core.store.ORDER_ROW_COLUMNS).
ID, PARENT, TEMPLATE, VERSION, STATUS, PRIORITY, NPRI, ASSIGNED, CREATED, STARTED, ENDED, DETAILS = range(12)

Row = tuple[Any, ...]
Predicate = Callable[[Row], bool]

TIME_PRESETS: dict[str, tuple[str, float | None]] = {
    "any": ("Any time", None),
    "1h": ("Last hour", 3600.0),
    "8h": ("Last 8 hours", 8 * 3600.0),
    "24h": ("Last 24 hours", 86400.0),
    "7d": ("Last 7 days", 7 * 86400.0),
    "custom": ("Custom range", None),
}
"""Time-range presets: key -> (label, seconds back from now; None = unbounded or custom)."""

TIME_FIELDS: dict[str, tuple[str, int]] = {"created": ("Created", CREATED),
                                           "started": ("Started", STARTED),
                                           "ended": ("Ended", ENDED)}
"""Which timestamp a time range applies to: key -> (label, row position)."""

PRIORITY_CHOICES: dict[str, str] = {
    "Elevated": "Elevated (Biosero)",
    "Standard": "Standard (Biosero)",
    "high": "High (70-100)",
    "normal": "Normal (31-69)",
    "low": "Low (0-30)",
}
"""Priority filter choices. Biosero priorities and numeric bands combine with AND between the two
groups and OR within a group."""

_BANDS: dict[str, tuple[int, int]] = {"high": (70, 100), "normal": (31, 69), "low": (0, 30)}

KINDS: dict[str, str] = {"all": "Runs and steps", "runs": "Runs only", "steps": "Steps only"}

LIVE_DAYS = 7.0
"""Finished orders of the last this many days stay in the Jobs table (``[JOBS] live_days``);
older ones are reached through "Search all history"."""
LIVE_DAYS_KEY = "live_days"


def live_days_from_ini(path: Path | None) -> float:
    """``[JOBS] live_days`` of a config.ini (days, a positive number; :data:`LIVE_DAYS` when it is
    not set). A bad value raises :class:`ConfigError` naming the file, line and field."""
    found = read_section(path, "JOBS")
    if found is None:
        return LIVE_DAYS
    section, text = found
    raw = section.get(LIVE_DAYS_KEY, fallback="").strip()
    if not raw:
        return LIVE_DAYS
    line, inside = None, False
    for number, raw_line in enumerate(text.splitlines(), start=1):
        stripped = raw_line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            inside = stripped[1:-1].strip().upper() == "JOBS"
        elif inside and stripped.split("=", 1)[0].split(":", 1)[0].strip().lower() == LIVE_DAYS_KEY:
            line = number
    try:
        days = float(raw.lower().removesuffix("d").strip())
    except ValueError:
        days = float("nan")
    if not days > 0 or days == float("inf"):
        raise ConfigError.at(f"{raw!r} is not a number of days above 0 (e.g. 7)", file=path,
                             line=line, field=f"JOBS.{LIVE_DAYS_KEY}")
    return days


UNASSIGNED = ""
"""The instrument filter value that matches orders not assigned to any instrument."""


@dataclass(frozen=True)
class OrderFilter:
    """Which orders the Jobs table shows. The empty filter shows every order."""

    statuses: frozenset[OrderStatus] = frozenset()
    priorities: frozenset[str] = frozenset()
    """Keys of :data:`PRIORITY_CHOICES`."""
    instruments: frozenset[str] = frozenset()
    """Instrument ids (``assigned_to``); :data:`UNASSIGNED` for orders on no instrument."""
    templates: frozenset[str] = frozenset()
    kind: str = "all"
    """``all``, ``runs`` (parent orders) or ``steps`` (orders of a run's steps)."""
    run: str | None = None
    """Only this run and its step orders."""
    time_preset: str = "any"
    time_field: str = "created"
    time_from: float | None = None
    """Start of a custom range (epoch seconds), with ``time_preset == "custom"``."""
    time_to: float | None = None
    text: str = ""
    """Case-insensitive substring of id, run, template, instrument or details."""

    # ------------------------------------------------------------------ compiling

    @property
    def is_empty(self) -> bool:
        return self == OrderFilter()

    def time_bounds(self, now: float) -> tuple[float | None, float | None]:
        """The time range as absolute epoch seconds (presets count back from ``now``)."""
        if self.time_preset == "custom":
            return self.time_from, self.time_to
        seconds = TIME_PRESETS.get(self.time_preset, ("", None))[1]
        return (now - seconds, None) if seconds is not None else (None, None)

    def predicate(self, now: float) -> Predicate | None:
        """One function row -> bool for this filter (None: everything passes).

        Relative time ranges are fixed to absolute bounds here, so the predicate gives the same
        answer for a row whenever it is asked (the model relies on that to keep its rows sorted).
        """
        checks: list[Predicate] = []
        if self.run:
            run = self.run
            checks.append(lambda r: r[ID] == run or r[PARENT] == run)
        if self.kind == "runs":
            checks.append(lambda r: r[PARENT] is None)
        elif self.kind == "steps":
            checks.append(lambda r: r[PARENT] is not None)
        if self.statuses:
            wanted = frozenset(int(s) for s in self.statuses)
            checks.append(lambda r: r[STATUS] in wanted)
        if self.templates:
            templates = self.templates
            checks.append(lambda r: r[TEMPLATE] in templates)
        if self.instruments:
            instruments = self.instruments
            checks.append(lambda r: (r[ASSIGNED] or UNASSIGNED) in instruments)
        biosero = frozenset(int(OrderPriority[p]) for p in self.priorities if p in OrderPriority.__members__)
        if biosero:
            checks.append(lambda r: r[PRIORITY] in biosero)
        bands = [_BANDS[p] for p in self.priorities if p in _BANDS]
        if bands:
            checks.append(lambda r: any(lo <= r[NPRI] <= hi for lo, hi in bands))
        lo, hi = self.time_bounds(now)
        if lo is not None or hi is not None:
            pos = TIME_FIELDS.get(self.time_field, TIME_FIELDS["created"])[1]
            low = float("-inf") if lo is None else lo
            high = float("inf") if hi is None else hi
            checks.append(lambda r: r[pos] is not None and low <= r[pos] <= high)
        needle = self.text.strip().lower()
        if needle:
            # Template names, instruments and details repeat across many rows: each distinct
            # value is lowered and searched once (ids and run ids are nearly all distinct).
            shared = _Contains(needle)

            def text_matches(r: Row) -> bool:
                parent = r[PARENT]
                return (needle in r[ID].lower() or (parent is not None and needle in parent.lower())
                        or shared[r[TEMPLATE]] or shared[r[ASSIGNED]] or shared[r[DETAILS]])
            checks.append(text_matches)
        if not checks:
            return None
        pred = checks[0]
        for check in checks[1:]:
            pred = _both(pred, check)
        return pred

    # ------------------------------------------------------------------ describing

    def describe(self) -> str:
        """A short human description, e.g. ``Error, Paused · ELISA Readout · last 24 hours``."""
        parts: list[str] = []
        if self.run:
            parts.append(f"run {self.run}")
        if self.kind != "all":
            parts.append(KINDS[self.kind].lower())
        if self.statuses:
            parts.append(", ".join(s.name for s in sorted(self.statuses)))
        if self.priorities:
            parts.append(", ".join(PRIORITY_CHOICES[p].split(" (")[0] for p in sorted(self.priorities)))
        if self.instruments:
            parts.append(", ".join(i or "unassigned" for i in sorted(self.instruments)))
        if self.templates:
            parts.append(", ".join(sorted(self.templates)))
        if self.time_preset != "any":
            label = TIME_PRESETS[self.time_preset][0].lower()
            parts.append(f"{TIME_FIELDS[self.time_field][0].lower()} {label}")
        if self.text.strip():
            parts.append(f"“{self.text.strip()}”")
        return " · ".join(parts) or "all orders"

    # ------------------------------------------------------------------ persistence

    def to_json(self) -> dict[str, Any]:
        return {"statuses": sorted(s.name for s in self.statuses), "priorities": sorted(self.priorities),
                "instruments": sorted(self.instruments), "templates": sorted(self.templates),
                "kind": self.kind, "run": self.run, "time_preset": self.time_preset,
                "time_field": self.time_field, "time_from": self.time_from, "time_to": self.time_to,
                "text": self.text}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> OrderFilter:
        """Read :meth:`to_json` output; unknown names are dropped rather than failing."""
        statuses = frozenset(OrderStatus[s] for s in data.get("statuses", ()) if s in OrderStatus.__members__)
        kind = data.get("kind", "all")
        preset = data.get("time_preset", "any")
        time_field = data.get("time_field", "created")
        return cls(statuses=statuses,
                   priorities=frozenset(p for p in data.get("priorities", ()) if p in PRIORITY_CHOICES),
                   instruments=frozenset(str(i) for i in data.get("instruments", ())),
                   templates=frozenset(str(t) for t in data.get("templates", ())),
                   kind=kind if kind in KINDS else "all", run=data.get("run") or None,
                   time_preset=preset if preset in TIME_PRESETS else "any",
                   time_field=time_field if time_field in TIME_FIELDS else "created",
                   time_from=_float(data.get("time_from")), time_to=_float(data.get("time_to")),
                   text=str(data.get("text", "")))

    def with_(self, **changes: Any) -> OrderFilter:
        return replace(self, **changes)


HISTORY_FIELDS = ("text", "statuses", "templates", "time")
"""What "Search all history" searches on disk: free text (whole words), status, template and a
created or ended time range. Priority, instrument, kind and the started time filter the live
window only."""


def history_query(spec: OrderFilter, now: float, limit: int = 200) -> HistoryQuery:
    """The on-disk search for what ``spec`` asks of all history (see :data:`HISTORY_FIELDS`)."""
    lo, hi = spec.time_bounds(now)
    created: tuple[float | None, float | None] = (None, None)
    ended: tuple[float | None, float | None] = (None, None)
    if lo is not None or hi is not None:
        # the half-open range of the search, ``hi`` included as the live filter includes it
        bounds = (lo, hi + 1e-6 if hi is not None else None)
        if spec.time_field == "ended":
            ended = bounds
        else:
            created = bounds
    return HistoryQuery(text=spec.text.strip(), statuses=spec.statuses, templates=spec.templates,
                        created_from=created[0], created_to=created[1], ended_from=ended[0],
                        ended_to=ended[1], limit=limit)


class _Contains(dict[str | None, bool]):
    """value -> whether ``needle`` is a case-insensitive substring of it, computed once per value."""

    def __init__(self, needle: str) -> None:
        super().__init__()
        self.needle = needle

    def __missing__(self, value: str | None) -> bool:
        found = self[value] = value is not None and self.needle in value.lower()
        return found


def _both(first: Predicate, second: Predicate) -> Predicate:
    return lambda r: first(r) and second(r)


def _float(value: Any) -> float | None:
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class SavedView:
    """A named filter and sort of the Jobs table."""

    name: str
    filter: OrderFilter = field(default_factory=OrderFilter)
    sort_column: str | None = None
    """Column key (see ``panels.jobs_model.COLUMNS``); None keeps the current sort."""
    descending: bool = True
    builtin: bool = False


ACTIVE = frozenset({OrderStatus.Created, OrderStatus.Validated, OrderStatus.Scheduled,
                    OrderStatus.Running, OrderStatus.Paused})
NEEDS_ATTENTION = frozenset({OrderStatus.Error, OrderStatus.Paused, OrderStatus.Unknown})
"""Statuses that wait for a person: failed, paused (by an operator or on a prompt), outcome unknown."""
BUILTIN_VIEWS: tuple[SavedView, ...] = (
    SavedView("Needs attention", OrderFilter(statuses=NEEDS_ATTENTION), "ended", True, builtin=True),
    SavedView("All orders", OrderFilter(), "created", True, builtin=True),
    SavedView("Active runs", OrderFilter(statuses=ACTIVE, kind="runs"), "created", True, builtin=True),
    SavedView("Failed, last 24 h", OrderFilter(statuses=frozenset({OrderStatus.Error}), time_preset="24h",
                                          time_field="ended"), "ended", True, builtin=True),
)


OPEN_VIEW = BUILTIN_VIEWS[0].name
"""The view Jobs opens on when the operator has not been on another one ("Needs attention")."""


class SavedViews:
    """Named views kept in a JSON file (written atomically); built-in views come first.

    The file also keeps the view the operator last picked (:attr:`opened`), which Jobs opens on
    at the next start."""

    FILENAME = "jobs_views.json"

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._views: dict[str, SavedView] = {}
        self.opened: str | None = None
        """The view (built-in or saved) the operator last picked; None: none picked yet."""
        self.error: str | None = None
        """Why the file could not be read or written, if it could not (shown to the operator)."""
        self._load()

    def _load(self) -> None:
        if self.path is None or not self.path.exists():
            return
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            opened = data.get("open_on")
            self.opened = opened if isinstance(opened, str) and opened else None
            for item in data.get("views", []):
                view = SavedView(str(item["name"]), OrderFilter.from_json(item.get("filter", {})),
                                 item.get("sort_column"), bool(item.get("descending", True)))
                self._views[view.name] = view
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            self.error = f"saved views in {self.path} could not be read: {exc}"
            log.warning("%s", self.error)

    def names(self) -> list[str]:
        return [v.name for v in BUILTIN_VIEWS] + sorted(self._views)

    def get(self, name: str) -> SavedView | None:
        for view in BUILTIN_VIEWS:
            if view.name == name:
                return view
        return self._views.get(name)

    def save(self, view: SavedView) -> None:
        """Add or replace a view (built-in names are refused) and write the file."""
        if any(v.name == view.name for v in BUILTIN_VIEWS):
            raise ValueError(f"'{view.name}' is a built-in view; choose another name")
        if not view.name.strip():
            raise ValueError("a view needs a name")
        self._views[view.name] = replace(view, builtin=False)
        self._write()

    def delete(self, name: str) -> None:
        if self._views.pop(name, None) is not None:
            self._write()

    def remember(self, name: str) -> None:
        """Keep ``name`` as the view to open on next time (writes the file when it changes)."""
        if name == self.opened or self.get(name) is None:
            return
        self.opened = name
        self._write()

    def open_on(self) -> str:
        """The view to open on: the one the operator last picked, if it still exists, else
        :data:`OPEN_VIEW`."""
        return self.opened if self.opened is not None and self.get(self.opened) is not None else OPEN_VIEW

    def user_views(self) -> Iterable[SavedView]:
        return (self._views[n] for n in sorted(self._views))

    def _write(self) -> None:
        if self.path is None:
            return
        data = {"views": [{"name": v.name, "filter": v.filter.to_json(), "sort_column": v.sort_column,
                           "descending": v.descending} for v in self.user_views()],
                "open_on": self.opened}
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
            os.replace(tmp, self.path)
            self.error = None
        except OSError as exc:
            self.error = f"saved views could not be written to {self.path}: {exc}"
            log.warning("%s", self.error)
            raise
