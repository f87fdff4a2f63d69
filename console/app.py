"""Start the console: QApplication + qasync loop + main window over the store."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

from core.errors import LabconsoleError

log = logging.getLogger(__name__)


def settings_for(data_dir: Path):  # noqa: ANN201 - QSettings, imported lazily
    from PySide6.QtCore import QSettings

    return QSettings(str(data_dir / "console.ini"), QSettings.Format.IniFormat)


async def run_console(data_dir: Path, *, demo_orders: int = 0) -> int:
    from console.main_window import MainWindow
    from core import demo
    from core.facade import Core
    from core.store import DB_FILENAME, Store

    store = await asyncio.to_thread(lambda: Store(data_dir / DB_FILENAME).open())
    try:
        if demo_orders:
            await asyncio.to_thread(demo.generate, store, demo_orders)
        core = Core(store)
        window = MainWindow(core, settings_for(data_dir))
        window.closed = asyncio.get_running_loop().create_future()
        window.show()
        await window.load_orders()
        await window.closed
        return 0
    finally:
        store.close()


def main_gui(data_dir: Path, *, demo_orders: int = 0) -> int:
    import PySide6  # noqa: F401 - choose the binding before qasync looks for one
    import qasync
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(sys.argv)
    app.setApplicationName("labconsole")
    app.setOrganizationName("labconsole")
    try:
        with asyncio.Runner(loop_factory=lambda: qasync.QEventLoop(app)) as runner:
            return runner.run(run_console(data_dir, demo_orders=demo_orders))
    except LabconsoleError as exc:
        print(f"labconsole: {exc}", file=sys.stderr)
        return 2
