"""The one crossing from core events to Qt: coalesced per frame.

Core events arrive on the bus one by one (possibly thousands per second). The bridge keeps only
the latest row per order and the other events in order, and hands them to Qt once per frame
(every ``interval_ms``, 25 ms by default) through a single signal emission. No Qt signal per
event, no asyncio task per event (specs/performance.md B.6: 40-120x cheaper). The frame timer
runs only while something is pending, so an idle console has no running timers.

A frame of many order rows (a bulk action changes thousands of orders a second) is handed over
in parts of at most ``step_rows`` rows, each in a loop step of its own, the frame's events with
the last part (an event never arrives before its order's row): applying 300 rows to the Jobs
table took 7-19 ms of one step.
"""

from __future__ import annotations

from itertools import islice
from typing import Any

from PySide6.QtCore import QObject, QTimer, Signal, Slot

from core.events import Event, EventBus, OrderCreated, OrderStatusChanged, OrderUpdated


class EventBridge(QObject):
    orders_changed = Signal(object)
    """dict[str, tuple]: order id -> latest order row (see core.store.ORDER_ROW_COLUMNS)."""
    events = Signal(object)
    """list[Event]: every event of the frame in order (for logs, alerts, metrics)."""

    def __init__(self, bus: EventBus, interval_ms: int = 25, parent: QObject | None = None,
                 step_rows: int = 100) -> None:
        super().__init__(parent)
        self._rows: dict[str, tuple[Any, ...]] = {}
        self._events: list[Event] = []
        self.frames = 0
        self.events_seen = 0
        self.step_rows = step_rows
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self._deliver_part)
        self._next_part = QTimer(self)  # the rest of a large frame, in the next loop step
        self._next_part.setSingleShot(True)
        self._next_part.setInterval(0)
        self._next_part.timeout.connect(self._deliver_part)
        self._subscription = bus.subscribe(self._on_event)

    def _on_event(self, event: Event) -> None:
        self.events_seen += 1
        if isinstance(event, OrderCreated | OrderStatusChanged | OrderUpdated) and event.row:
            self._rows[event.order_id] = event.row
        self._events.append(event)
        if not self._timer.isActive() and not self._next_part.isActive():
            self._timer.start()

    @Slot()
    def _deliver_part(self) -> None:
        """A frame, or its next ``step_rows`` rows when it has more (events with the last part)."""
        if len(self._rows) <= self.step_rows:
            self.flush()
            return
        self._timer.stop()
        part = dict(islice(self._rows.items(), self.step_rows))
        for order_id in part:
            del self._rows[order_id]
        self.frames += 1
        self.orders_changed.emit(part)
        self._next_part.start()

    @Slot()
    def flush(self) -> None:
        """Deliver all that is pending now (also called by tests instead of waiting a frame)."""
        self._timer.stop()
        self._next_part.stop()
        rows, events = self._rows, self._events
        self._rows, self._events = {}, []
        if not rows and not events:
            return
        self.frames += 1
        if rows:
            self.orders_changed.emit(rows)
        if events:
            self.events.emit(events)

    def close(self) -> None:
        self._timer.stop()
        self._next_part.stop()
        self._subscription.close()
