"""Prometheus metrics of a console, on a local port when config.ini enables them.

```ini
[METRICS]
prometheus_port = 9464        # serve /metrics there (off when absent)
prometheus_bind = 127.0.0.1   # the default; another address exposes it to the network
```

Served by ``prometheus_client`` on its own thread. What it reports is read on the console's
event loop once a second into a snapshot (the scrape never touches the runtime from another
thread), plus counters and a histogram fed by the order events as they happen:

- ``labconsole_queue_depth``: steps waiting for an instrument; ``labconsole_claimed_unstarted``:
  orders claimed from a shared Data Services and not started;
- ``labconsole_orders_finished_total{status}``: workflow runs and jobs that ended (throughput);
- ``labconsole_step_duration_seconds{capability}``: how long steps ran (simulated clock seconds
  when the clock is accelerated);
- ``labconsole_instrument_state{instrument,state}``: 1 for each instrument's current state;
- ``labconsole_outbox_depth``: transitions not yet delivered to a remote Data Services;
- ``labconsole_loop_lag_seconds``: how late the event loop woke for the last snapshot.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from core.errors import ConfigError
from core.events import OrderStatusChanged
from core.inifile import read_section
from core.orders import TERMINAL_STATUSES, OrderStatus

if TYPE_CHECKING:
    from core.runtime import Runtime

log = logging.getLogger(__name__)

SECTION = "METRICS"
BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, float("inf"))
ENDED = TERMINAL_STATUSES | {OrderStatus.Error}


@dataclass(frozen=True)
class PrometheusSettings:
    port: int
    bind: str = "127.0.0.1"


def settings_from_ini(path: Path | None) -> PrometheusSettings | None:
    """``[METRICS] prometheus_port`` (and ``prometheus_bind``) of a config.ini, or None (off)."""
    found = read_section(path, SECTION)
    if found is None or "prometheus_port" not in found[0]:
        return None
    section, text = found
    raw = section["prometheus_port"].strip()
    line = next((i for i, t in enumerate(text.splitlines(), 1) if t.strip().lower().startswith("prometheus_port")),
                None)
    if not raw.isdigit() or not 1 <= int(raw) <= 65535:
        raise ConfigError.at(f"prometheus_port {raw!r} must be a port number from 1 to 65535",
                             file=path, field=f"{SECTION}.prometheus_port", line=line)
    return PrometheusSettings(int(raw), section.get("prometheus_bind", "127.0.0.1").strip() or "127.0.0.1")


@dataclass
class Snapshot:
    queue_depth: int = 0
    claimed_unstarted: int = 0
    outbox_depth: int = 0
    loop_lag: float = 0.0
    instruments: dict[str, str] = field(default_factory=dict)
    states: tuple[str, ...] = ()


class ConsoleMetrics(Collector):
    """The collector and the loop-side task that feeds it."""

    def __init__(self, runtime: Runtime, settings: PrometheusSettings, interval: float = 1.0) -> None:
        from core.orders import ModuleStatus

        self.runtime, self.settings, self.interval = runtime, settings, interval
        self.snapshot = Snapshot(states=tuple(s.name for s in ModuleStatus))
        self._lock = threading.Lock()
        self._finished: dict[str, int] = {}
        self._durations: dict[str, list[int]] = {}
        self._sums: dict[str, float] = {}
        self._running_since: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None
        self._server: Any = None
        self.url = ""

    # ------------------------------------------------------------------ loop side

    def start(self) -> ConsoleMetrics:
        registry = CollectorRegistry()
        registry.register(self)
        try:
            self._server, _thread = start_http_server(self.settings.port, addr=self.settings.bind,
                                                      registry=registry)
        except OSError as exc:
            raise ConfigError.at(f"cannot serve metrics on {self.settings.bind}:{self.settings.port}: "
                                 f"{exc.strerror or exc}", field=f"{SECTION}.prometheus_port") from None
        self.url = f"http://{self.settings.bind}:{self._server.server_port}/metrics"
        self.runtime.ledger.bus.subscribe(self._on_status, OrderStatusChanged)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="prometheus-snapshot")
        log.info("Prometheus metrics on %s", self.url)
        return self

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self._server is not None:
            await asyncio.to_thread(self._server.shutdown)
            self._server.server_close()

    def _on_status(self, event: Any) -> None:
        now = self.runtime.clock.now()
        if event.to_status is OrderStatus.Running:
            self._running_since.setdefault(event.order_id, now)
            return
        if event.to_status not in ENDED:
            return
        started = self._running_since.pop(event.order_id, None)
        try:
            order = self.runtime.store.get_order(event.order_id)
        except Exception:  # noqa: BLE001 - a metric never breaks the console
            return
        name = order.templateName or ""
        with self._lock:
            if "." in name and started is not None:  # a step on an instrument capability
                seconds = max(0.0, now - started)
                counts = self._durations.setdefault(name, [0] * len(BUCKETS))
                for i, bound in enumerate(BUCKETS):
                    if seconds <= bound:
                        counts[i] += 1
                self._sums[name] = self._sums.get(name, 0.0) + seconds
            elif order.parentIdentifier is None or "." in name:  # a run or a job: throughput
                self._finished[event.to_status.name] = self._finished.get(event.to_status.name, 0) + 1

    async def _run(self) -> None:
        while True:
            expected = time.monotonic() + self.interval
            await asyncio.sleep(self.interval)
            lag = max(0.0, time.monotonic() - expected)
            rt = self.runtime
            d, link = rt.dispatcher, rt.link
            snap = Snapshot(
                queue_depth=len(d.queue) if d is not None else 0,
                claimed_unstarted=link.unstarted() if link is not None and link.leases is not None else 0,
                outbox_depth=link.state.outbox if link is not None else 0,
                loop_lag=lag, instruments={v.id: v.status.name for v in rt.instruments()},
                states=self.snapshot.states)
            with self._lock:
                self.snapshot = snap

    # ------------------------------------------------------------------ scrape side (its thread)

    def collect(self) -> Iterator[Any]:
        with self._lock:
            snap = self.snapshot
            finished = dict(self._finished)
            durations = {k: list(v) for k, v in self._durations.items()}
            sums = dict(self._sums)
        yield GaugeMetricFamily("labconsole_queue_depth", "Steps waiting for an instrument",
                                value=snap.queue_depth)
        yield GaugeMetricFamily("labconsole_claimed_unstarted",
                                "Orders claimed from a shared Data Services, not started", value=snap.claimed_unstarted)
        yield GaugeMetricFamily("labconsole_outbox_depth", "Transitions not yet delivered to Data Services",
                                value=snap.outbox_depth)
        yield GaugeMetricFamily("labconsole_loop_lag_seconds", "How late the event loop woke",
                                value=snap.loop_lag)
        total = CounterMetricFamily("labconsole_orders_finished", "Runs and jobs that ended",
                                    labels=["status"])
        for status, count in sorted(finished.items()):
            total.add_metric([status], count)
        yield total
        hist = HistogramMetricFamily("labconsole_step_duration_seconds", "How long steps ran",
                                     labels=["capability"])
        for name, counts in sorted(durations.items()):
            hist.add_metric([name], [(_le(b), c) for b, c in zip(BUCKETS, counts, strict=True)],
                            sum_value=sums.get(name, 0.0))
        yield hist
        states = GaugeMetricFamily("labconsole_instrument_state", "1 for the instrument's current state",
                                   labels=["instrument", "state"])
        for inst, current in sorted(snap.instruments.items()):
            for state in snap.states:
                states.add_metric([inst, state], 1.0 if state == current else 0.0)
        yield states


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else f"{bound:g}"


def from_config(runtime: Runtime) -> ConsoleMetrics | None:
    """The metrics of ``runtime`` when config.ini (./ or the data dir's) enables them, else None."""
    from core.backup import find_config

    settings = settings_from_ini(find_config(runtime.store.path.parent))
    return ConsoleMetrics(runtime, settings) if settings is not None else None
