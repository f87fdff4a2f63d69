"""The one crossing from core events to Qt: coalesced per frame.

Core events arrive on the bus one by one (possibly thousands per second). The bridge keeps only
the latest row per order and the other events in order, and hands them to Qt once per frame
(every ``interval_ms``, 25 ms by default) through a single signal emission. No Qt signal per
event, no asyncio task per event (specs/performance.md B.6: 40-120x cheaper). The frame timer
runs only while something is pending, so an idle console has no running timers.

A frame of many order rows (a bulk action changes thousands of orders a second) is handed over
in parts of at most ``step_rows`` rows, each in a loop step of its own, then the frame's events
in a step of their own (an event never arrives before its order's row): applying 300 rows to the
Jobs table took 7-19 ms of one step, and a bulk action's frame holds hundreds of events that
every panel sorts out. A small frame is handed over in one step, rows then events.
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
        self._parted = False
        """The frame under way was handed over in parts."""
        self._due: list[Event] | None = None
        """The events of the rows handed over in the last step: they go in the next one."""
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
        """A frame; or of a large one its next ``step_rows`` rows, or its events after its last part."""
        self._timer.stop()
        if self._due is not None:
            events, self._due = self._due, None
            self.events.emit(events)
            if self._rows or self._events:  # what came meanwhile: the next frame
                self._timer.start()
            return
        if len(self._rows) <= self.step_rows:
            if not self._parted:
                self.flush()
                return
            self._parted = False  # the last part; its events in the next step
            rows, self._rows = self._rows, {}
            self._due, self._events = self._events, []
            self.frames += 1
            if rows:
                self.orders_changed.emit(rows)
            self._next_part.start()
            return
        part = dict(islice(self._rows.items(), self.step_rows))
        for order_id in part:
            del self._rows[order_id]
        self._parted = True
        self.frames += 1
        self.orders_changed.emit(part)
        self._next_part.start()

    @Slot()
    def flush(self) -> None:
        """Deliver all that is pending now (also called by tests instead of waiting a frame)."""
        self._timer.stop()
        self._next_part.stop()
        rows, events = self._rows, (self._due or []) + self._events
        self._rows, self._events, self._due, self._parted = {}, [], None, False
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
