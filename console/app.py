"""Start the console: QApplication + qasync loop + main window over the runtime."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from pathlib import Path

from core.errors import LabconsoleError

log = logging.getLogger(__name__)


def settings_for(data_dir: Path):  # noqa: ANN201 - QSettings, imported lazily
    from PySide6.QtCore import QSettings

    return QSettings(str(data_dir / "console.ini"), QSettings.Format.IniFormat)


async def _watch_store(runtime, interval: float = 2.0) -> None:  # noqa: ANN001
    """Pick up runs other processes (the command line) created or cancelled in the store."""
    while True:
        await asyncio.sleep(interval)
        try:
            await runtime.engine.sync_with_store()
        except LabconsoleError as exc:
            log.warning("store watch: %s", exc)


async def run_console(data_dir: Path, *, demo_orders: int = 0, workcell: Path | None = None,
                      faults: str | None = None) -> int:
    from console.main_window import MainWindow
    from core import demo
    from core.runtime import DEMO_WORKCELL, Runtime
    from core.store import DB_FILENAME, Store

    store = await asyncio.to_thread(lambda: Store(data_dir / DB_FILENAME).open())
    if demo_orders:
        await asyncio.to_thread(demo.generate, store, demo_orders)
    runtime = Runtime.build(data_dir, store=store, workcell=workcell or DEMO_WORKCELL, faults=faults)
    watcher = None
    try:
        await runtime.start()
        window = MainWindow(runtime, settings_for(data_dir))
        window.closed = asyncio.get_running_loop().create_future()
        window.show()
        await window.load_orders()
        watcher = asyncio.create_task(_watch_store(runtime))
        await window.closed
        return 0
    finally:
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        await runtime.close()


def main_gui(data_dir: Path, *, demo_orders: int = 0, workcell: Path | None = None,
             faults: str | None = None) -> int:
    import PySide6  # noqa: F401 - choose the binding before qasync looks for one
    import qasync
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(sys.argv)
    app.setApplicationName("labconsole")
    app.setOrganizationName("labconsole")
    try:
        with asyncio.Runner(loop_factory=lambda: qasync.QEventLoop(app)) as runner:
            return runner.run(run_console(data_dir, demo_orders=demo_orders, workcell=workcell,
                                          faults=faults))
    except LabconsoleError as exc:
        print(f"labconsole: {exc}", file=sys.stderr)
        return 2
