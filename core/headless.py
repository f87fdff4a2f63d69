"""A console without a window: ``labconsole headless``.

The same runtime as the window (store, engine, dispatcher, simulated or real instruments) working
orders of a shared Data Services under its own module id, until SIGINT/SIGTERM. For a workcell PC
that needs no screen, and for several workcells (a fleet) tested together: each headless console
claims, runs and answers the orders it can run, with leases (see
:mod:`core.dataservices.leases`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from pathlib import Path

from packaging.specifiers import SpecifierSet

from core.clock import Clock, ScaledClock, SystemClock
from core.dataservices.config import DataServicesSettings
from core.dataservices.fleet import DEFAULT_LEASE
from core.errors import ConfigError
from core.tasks import stop_on_signals

log = logging.getLogger(__name__)


async def run(data_dir: Path, settings: DataServicesSettings, *, module_id: str, workcell: Path | None,
              templates: Path | None, speed: float = 1.0, lease: float = DEFAULT_LEASE,
              poll_interval: float = 1.0, token: str | None = None, backlog: int | None = None,
              ready: Callable[[str], None] | None = None, stop: asyncio.Event | None = None,
              compatible: Mapping[str, SpecifierSet] | None = None,
              stopped: Callable[[str], None] | None = None) -> int:
    """Work the Data Services' orders until ``stop`` is set (or SIGINT/SIGTERM); then tell
    ``stopped`` how many requests it sent the Data Services, by method, and how long its outbox
    spent delivering."""
    from core.dataservices.link import DataServicesLink
    from core.runtime import DEMO_WORKCELL, SAMPLE_TEMPLATES, Runtime
    from core.store import DB_FILENAME, Store

    if not speed > 0:
        raise ConfigError.at(f"must be more than 0, not {speed:g}", field="--speed")
    if backlog is not None and backlog < 1:
        raise ConfigError.at(f"must be at least 1, not {backlog}", field="--backlog")
    if not poll_interval > 0:
        raise ConfigError.at(f"must be more than 0 seconds, not {poll_interval:g}", field="--poll")
    clock: Clock = SystemClock() if speed == 1 else ScaledClock(speed)
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    stop_on_signals(stop)
    store = await asyncio.to_thread(lambda: Store(data_dir / DB_FILENAME).open())
    runtime = Runtime.build(data_dir, clock=clock, store=store, workcell=workcell or DEMO_WORKCELL,
                            metrics=False)
    link = DataServicesLink(runtime, settings, module_id=module_id, poll_interval=poll_interval,
                            lease=lease, token=token, backlog=backlog, compatible=compatible)
    try:
        await runtime.start(templates_dir=templates or SAMPLE_TEMPLATES, link=link)
        if ready is not None:
            ready(module_id)
        began = loop.time()
        await stop.wait()
        if stopped is not None and link.client is not None:
            sent = link.client.sent
            stopped(f"module {module_id} stopped: {sum(sent.values())} requests to the Data Services ("
                    + ", ".join(f"{method} {n}" for method, n in sorted(sent.items())) + "); outbox "
                    f"delivering {link.outbox_busy:.1f} s of {loop.time() - began:.1f} s")
        return 0
    finally:
        await runtime.close()
