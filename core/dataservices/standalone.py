"""The embedded Data Services on its own, headless: ``labconsole data-services``.

For a lab without a Biosero server, and for several consoles that share one Data Services: the
same wire-compatible server the console embeds, over a store of its own, until SIGINT/SIGTERM.
Its limits are those of one SQLite file on one machine; a lab that needs more points its
consoles at a Biosero Data Services instead.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from core.dataservices.server import EmbeddedDataServices, ServerLimits, TlsFiles, check_exposure
from core.store import DB_FILENAME, Store
from core.tasks import stop_on_signals

log = logging.getLogger(__name__)


async def serve(data_dir: Path, *, host: str = "127.0.0.1", port: int = 8105, token: str | None = None,
                limits: ServerLimits | None = None, tls: TlsFiles | None = None,
                ready: Callable[[str], None] | None = None, stop: asyncio.Event | None = None) -> int:
    """Serve until ``stop`` is set (or SIGINT/SIGTERM); scheduled backups as config.ini says."""
    from core.backup import ScheduledBackups

    check_exposure(host, token, field="--bind")  # refused before the store is opened
    store = await asyncio.to_thread(lambda: Store(data_dir / DB_FILENAME).open())
    stop = stop or asyncio.Event()
    stop_on_signals(stop)
    backups = ScheduledBackups.from_config(store.path)
    server = EmbeddedDataServices(store, host, port, token, limits=limits, tls=tls)
    try:
        url = await server.start()
        if backups is not None:
            backups.start()
        if ready is not None:
            ready(url)
        await stop.wait()
        return 0
    finally:
        if backups is not None:
            await backups.close()
        await server.stop()
        store.close()
