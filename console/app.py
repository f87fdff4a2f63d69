"""Start the console: QApplication + qasync loop + main window over the runtime."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from core.errors import LabconsoleError

if TYPE_CHECKING:
    from core.dataservices.server import ServerLimits

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


def config_file(data_dir: Path, config: Path | None) -> Path | None:
    """--config, else ./config.ini, else config.ini in the data dir (as Biosero sites keep it)."""
    if config is None:
        for candidate in (Path.cwd() / "config.ini", data_dir / "config.ini"):
            if candidate.is_file():
                return candidate
    return config


def data_services_settings(data_dir: Path, flag: str | None, config: Path | None):  # noqa: ANN201
    """URL from --data-services-url, $LABCONSOLE_DATA_SERVICES_URL or config.ini
    (``[DATA SERVICES] url = ...``). None means: start the embedded Data Services."""
    from core.dataservices.config import resolve_url

    return resolve_url(flag, config_file=config_file(data_dir, config))


async def start_demo_runs(runtime, count: int) -> list[str]:  # noqa: ANN001
    """Start ``count`` runs of the published templates in turn (stand-in inputs), to watch the
    simulated workcell work."""
    from core.rehearsal import stand_in_inputs

    templates = runtime.templates()
    started = []
    for n in range(count):
        t = templates[n % len(templates)]
        started.append(await runtime.start_run(t.name, stand_in_inputs(t, n), who="demo", allow_duplicate=True))
    return started


async def run_console(data_dir: Path, *, demo_orders: int = 0, workcell: Path | None = None,
                      faults: str | None = None, data_services_url: str | None = None,
                      config: Path | None = None, bind: str = "127.0.0.1", port: int = 8105,
                      token: str | None = None, demo_runs: int = 0,
                      limits: ServerLimits | None = None) -> int:
    from console.main_window import MainWindow
    from core.runtime import DEMO_WORKCELL, Runtime
    from core.store import DB_FILENAME, Store

    if demo_orders:  # written by a short-lived process: its memory is not the console's to keep
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "console", "--data-dir", str(data_dir), "demo-orders", str(demo_orders))
        if await proc.wait() != 0:
            raise LabconsoleError(f"writing {demo_orders} demo orders failed (exit {proc.returncode})")
    from core.users import SignaturePolicy, idle_lock_minutes

    signatures = SignaturePolicy.from_ini(config_file(data_dir, config))  # [SIGNATURES] of --config too
    store = await asyncio.to_thread(lambda: Store(data_dir / DB_FILENAME).open())
    runtime = Runtime.build(data_dir, store=store, workcell=workcell or DEMO_WORKCELL, faults=faults,
                            signatures=signatures)
    from core.dataservices.config import module_id_from_ini
    from core.dataservices.link import MODULE_ID, DataServicesLink

    settings = data_services_settings(data_dir, data_services_url, config)
    module_id = module_id_from_ini(config_file(data_dir, config)) or MODULE_ID
    link = DataServicesLink(runtime, settings, host=bind, port=port, token=token, limits=limits,
                            module_id=module_id)
    idle_minutes = idle_lock_minutes(config_file(data_dir, config))  # [USERS], checked before the window
    watcher = None
    try:
        link.check()  # refused before the window opens and before any instrument moves
        window = MainWindow(runtime, settings_for(data_dir))
        window.closed = asyncio.get_running_loop().create_future()
        for sig in (signal.SIGINT, signal.SIGTERM):  # Ctrl+C or a service stop closes cleanly
            signal.signal(sig, lambda *_: window.close())
        window.show()  # at once: instruments may take seconds to connect
        window.start_loop_lag()
        window.statusBar().showMessage("Connecting instruments, resuming runs…")
        await runtime.start(link=link, schedules=True)
        await window.load_orders()
        from panels.login import start_session

        if await start_session(window, runtime, idle_minutes) is False:  # named users: sign in
            return 0
        # the 100k order rows and the models live for the whole shift: keep them out of the
        # cyclic GC's way (full collections over them cost 140-215 ms stalls; bench/gui.py)
        gc.freeze()
        if demo_runs:
            await start_demo_runs(runtime, demo_runs)
        watcher = asyncio.create_task(_watch_store(runtime))
        await window.closed
        return 0
    finally:
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        await runtime.close()


def main_gui(data_dir: Path, **options: object) -> int:
    import PySide6  # noqa: F401 - choose the binding before qasync looks for one
    import qasync
    from PySide6.QtWidgets import QApplication

    from panels.style import icon
    from panels.theme import SETTINGS_KEY, apply_theme, theme_name

    app = QApplication.instance() or QApplication(sys.argv)
    app.setApplicationName("labconsole")
    app.setOrganizationName("labconsole")
    app.setQuitOnLastWindowClosed(False)  # the console coroutine ends the loop after cleaning up
    # the saved theme before any window exists, so nothing flashes in the other one
    apply_theme(app, theme_name(settings_for(data_dir).value(SETTINGS_KEY)))
    app.setWindowIcon(icon("labconsole", size=64))
    try:
        with asyncio.Runner(loop_factory=lambda: qasync.QEventLoop(app)) as runner:
            return runner.run(run_console(data_dir, **options))  # type: ignore[arg-type]
    except LabconsoleError as exc:
        print(f"labconsole: {exc}", file=sys.stderr)
        return 2
