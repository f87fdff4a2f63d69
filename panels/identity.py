"""How an instrument is reached and who answered, as text for the Robots panel and the
instrument detail window.

Everything comes from the driver's :class:`~core.drivers.base.DriverInfo` (driver kind,
endpoint, the identity the instrument reported when it connected) and the dispatcher's last
heartbeat round trip, both carried by :class:`~core.dispatcher.InstrumentView`. Pure functions,
no widgets: the panels decide where the text goes.
"""

from __future__ import annotations

from html import escape

from core.dispatcher import InstrumentView
from core.drivers.base import DriverInfo

DRIVER_LABELS: dict[str, str] = {
    "simulated": "Simulated",
    "sila": "SiLA 2",
    "agent": "Robot agent",
    "pylabrobot": "PyLabRobot",
    "madsci": "MADSci node",
}
"""The workcell file's driver kinds, as the operator reads them."""

HEADLINE: dict[str, tuple[str, ...]] = {
    "sila": ("Server name", "Server version"),
    "agent": ("Host", "Agent address"),
    "madsci": ("Node name", "Module"),
    "pylabrobot": ("Backend",),
}
"""Per driver kind, the identity labels short enough for a card's one line."""


def driver_label(info: DriverInfo | None) -> str:
    if info is None or not info.driver:
        return ""
    return DRIVER_LABELS.get(info.driver, info.driver)


def latency_text(seconds: float | None) -> str:
    """A heartbeat round trip: ``0.4 ms``, ``12 ms``, ``1.2 s``; '' before the first."""
    if seconds is None:
        return ""
    if seconds < 0.01:
        return f"{seconds * 1000:.1f} ms"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    return f"{seconds:.1f} s"


def short_backend(value: str) -> str:
    """``pylabrobot.liquid_handling.backends.chatterbox.LiquidHandlerChatterboxBackend`` reads
    ``LiquidHandlerChatterboxBackend``."""
    return value.rpartition(".")[2]


def connection_line(view: InstrumentView) -> str:
    """One line for a card or a table cell: driver kind, endpoint (without its explanation in
    parentheses) and the one or two identity facts that tell instruments apart.

    ``SiLA 2 · 127.0.0.1:50101 · SimReader 0.1`` ·
    ``Robot agent · ws://127.0.0.1:8765 · lab-pc-3 (127.0.0.1:51234)``
    """
    info = view.info
    if info is None:
        return ""
    endpoint = info.endpoint.split(" (", 1)[0]
    facts = dict(info.identity)
    wanted = [facts[label] for label in HEADLINE.get(info.driver, ()) if facts.get(label)]
    if info.driver == "pylabrobot":
        wanted = [short_backend(w) for w in wanted]
        endpoint = ""  # the backend says it better than "PyLabRobot chatterbox backend"
    if info.driver == "agent" and len(wanted) == 2:
        wanted = [f"{wanted[0]} ({wanted[1]})"]
    else:
        wanted = [" ".join(wanted)] if wanted else []
    return " · ".join(p for p in (driver_label(info), endpoint, *wanted) if p)


def identity_rows(view: InstrumentView) -> list[tuple[str, str]]:
    """Every fact about how the instrument is reached and who answered, in display order."""
    info = view.info
    rows: list[tuple[str, str]] = []
    if info is None:
        return rows
    if info.driver:
        rows.append(("Driver", f"{driver_label(info)} (driver: {info.driver})"))
    if info.endpoint:
        rows.append(("Endpoint", info.endpoint))
    seen = {label for label, _ in info.identity}
    rows += list(info.identity)
    for label, value in (("Vendor", info.vendor), ("Model", info.model), ("Serial", info.serial)):
        if value and label not in seen:
            rows.append((label, value))
    if view.latency is not None:
        rows.append(("Heartbeat round trip", latency_text(view.latency)))
    if info.driver and not info.identity:
        rows.append(("Identity", "not reported yet: the instrument has not connected"))
    return rows


def identity_html(view: InstrumentView) -> str:
    """:func:`identity_rows` as a two-column HTML table (labels muted by the caller's style)."""
    cells = "".join(f"<tr><td style='padding-right:12px'><b>{escape(label)}</b></td>"
                    f"<td>{escape(value)}</td></tr>" for label, value in identity_rows(view))
    return f"<table cellspacing='0' cellpadding='1'>{cells}</table>" if cells else ""


def identity_tooltip(view: InstrumentView) -> str:
    """The identity as a tooltip: the instrument's name, then one fact per line."""
    head = f"<b>{escape(view.name or view.id)}</b> ({escape(view.id)}, {escape(view.kind)})"
    table = identity_html(view)
    return head + (f"<br>{table}" if table else "")
