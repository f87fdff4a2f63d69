"""Start the console: QApplication + qasync loop + main window over the runtime."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import getpass
import hashlib
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core import gcpolicy
from core.api import RuntimeApi
from core.errors import LabconsoleError

if TYPE_CHECKING:
    from PySide6.QtCore import QSettings
    from PySide6.QtNetwork import QLocalSocket

    from core.dataservices.config import DataServicesSettings
    from core.dataservices.server import ServerLimits

log = logging.getLogger(__name__)


def settings_for(data_dir: Path) -> QSettings:
    from PySide6.QtCore import QSettings

    return QSettings(str(data_dir / "console.ini"), QSettings.Format.IniFormat)


async def _watch_store(runtime: RuntimeApi, interval: float = 2.0) -> None:
    """Pick up runs other processes (the command line) created or cancelled in the store."""
    while True:
        await asyncio.sleep(interval)
        try:
            await runtime.engine.sync_with_store()
        except LabconsoleError as exc:
            log.warning("store watch: %s", exc)


LINK_LINE_LIMIT = 4096
"""Longest request line a console accepts on its link socket."""


def link_server_name(data_dir: Path) -> str:
    """The local socket name a console listens on for ``labconsole open``: one per user and data
    dir (a console on another data dir, or of another user, never answers)."""
    user = str(os.getuid()) if hasattr(os, "getuid") else getpass.getuser()
    digest = hashlib.sha256(str(Path(data_dir).resolve()).encode()).hexdigest()[:20]
    return f"labconsole-{user}-{digest}"


class LinkListener:
    """The running console's end of deep links (``labconsole open ID``), on a QLocalServer.

    A client sends one JSON line ``{"open": "Order_00012"}``; ``focus(order_id)`` (a coroutine)
    shows the order and returns the answer, sent back as one JSON line: ``{"ok": true, "order":
    ..., "selected": true}`` or ``{"ok": false, "error": "..."}``. A socket left behind by a
    console that crashed is replaced; if another console already answers on this data dir, this
    one does not listen (and says so in the log).
    """

    def __init__(self, data_dir: Path, focus: Callable[[str], Coroutine[Any, Any, dict[str, Any]]]) -> None:
        from PySide6.QtNetwork import QLocalServer

        self.name = link_server_name(data_dir)
        self.focus = focus
        self.server = QLocalServer()
        self.server.setSocketOptions(QLocalServer.SocketOption.UserAccessOption)
        self.server.newConnection.connect(self._on_connection)
        self._tasks: set[asyncio.Task[Any]] = set()

    def start(self) -> bool:
        from PySide6.QtNetwork import QLocalServer, QLocalSocket

        probe = QLocalSocket()  # first: listening would replace the other console's socket
        probe.connectToServer(self.name)
        if probe.waitForConnected(200):  # a local connect answers at once, or fails at once
            probe.disconnectFromServer()
            log.warning("another console answers deep links on this data dir; this one does not")
            return False
        if self.server.listen(self.name):
            return True
        QLocalServer.removeServer(self.name)  # left behind by a console that did not close
        if not self.server.listen(self.name):
            log.warning("deep links: cannot listen on %s: %s", self.name, self.server.errorString())
            return False
        return True

    def close(self) -> None:
        """Stop listening and free the server now, on this (the GUI) thread. Left to the garbage
        collector, the server would be deleted on whatever thread collects it (a store or
        reader thread), which corrupts Qt's timers."""
        for task in list(self._tasks):
            task.cancel()
        self.server.newConnection.disconnect(self._on_connection)
        self.server.close()
        self.server.deleteLater()

    def _on_connection(self) -> None:
        while (sock := self.server.nextPendingConnection()) is not None:
            sock.readyRead.connect(functools.partial(self._on_ready, sock))
            sock.disconnected.connect(sock.deleteLater)
            if sock.bytesAvailable():  # the request may have arrived with the connection
                self._on_ready(sock)

    def _on_ready(self, sock: QLocalSocket) -> None:
        if not sock.canReadLine():
            if sock.bytesAvailable() > LINK_LINE_LIMIT:
                self._answer(sock, {"ok": False, "error": f"request longer than {LINK_LINE_LIMIT} bytes"})
            return
        line = bytes(sock.readLine(LINK_LINE_LIMIT + 1).data()).decode("utf-8", "replace")
        try:
            request = json.loads(line)
            order_id = request["open"] if isinstance(request, dict) else None
        except (ValueError, KeyError):
            order_id = None
        if not isinstance(order_id, str) or not order_id.strip():
            self._answer(sock, {"ok": False, "error": 'expected one JSON line {"open": ORDER_ID}'})
            return
        task: asyncio.Task[dict[str, Any]] = asyncio.get_event_loop().create_task(self.focus(order_id.strip()))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(functools.partial(self._finished, sock))

    def _finished(self, sock: QLocalSocket, task: asyncio.Task[dict[str, Any]]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        self._answer(sock, task.result() if exc is None else {"ok": False, "error": str(exc)})

    @staticmethod
    def _answer(sock: QLocalSocket, reply: dict[str, Any]) -> None:
        from PySide6.QtNetwork import QLocalSocket

        if sock.state() != QLocalSocket.LocalSocketState.ConnectedState:
            return
        sock.write(json.dumps(reply).encode() + b"\n")
        sock.flush()
        sock.disconnectFromServer()


async def focus_order_in(window: Any, runtime: RuntimeApi, order_id: str,
                         loaded: asyncio.Event | None = None) -> dict[str, Any]:
    """Show ``order_id`` in the window (a deep link), once ``loaded`` is set (the orders are
    listed): the answer says whether Jobs selected it."""
    from core.errors import OrderNotFoundError

    if loaded is not None:
        await loaded.wait()
    store = runtime.store
    try:
        await store.read(lambda _c: store.get_order(order_id))
    except OrderNotFoundError:
        return {"ok": False, "error": f"no order '{order_id}' in {store.path}"}
    window.focus_order(order_id)
    for _ in range(10):  # an order created a moment ago reaches the Jobs list a frame later
        if window.jobs.current_id() == order_id:
            break
        await asyncio.sleep(0.05)
    selected = window.jobs.current_id() == order_id
    log.info("deep link: %s %s", order_id, "selected in Jobs" if selected else "shown in Detail (not listed in Jobs)")
    return {"ok": True, "order": order_id, "selected": selected}


def config_file(data_dir: Path, config: Path | None) -> Path | None:
    """--config, else ./config.ini, else config.ini in the data dir (as Biosero sites keep it)."""
    if config is None:
        for candidate in (Path.cwd() / "config.ini", data_dir / "config.ini"):
            if candidate.is_file():
                return candidate
    return config


def data_services_settings(data_dir: Path, flag: str | None,
                           config: Path | None) -> DataServicesSettings | None:
    """URL from --data-services-url, $LABCONSOLE_DATA_SERVICES_URL or config.ini
    (``[DATA SERVICES] url = ...``). None means: start the embedded Data Services."""
    from core.dataservices.config import resolve_url

    return resolve_url(flag, config_file=config_file(data_dir, config))


async def start_demo_runs(runtime: RuntimeApi, count: int) -> list[str]:
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
    from core.dataservices.config import compatible_from_ini, lease_from_ini, module_id_from_ini
    from core.dataservices.fleet import DEFAULT_LEASE
    from core.dataservices.link import MODULE_ID, DataServicesLink

    settings = data_services_settings(data_dir, data_services_url, config)
    module_id = module_id_from_ini(config_file(data_dir, config)) or MODULE_ID
    link = DataServicesLink(runtime, settings, host=bind, port=port, token=token, limits=limits,
                            module_id=module_id, compatible=compatible_from_ini(config_file(data_dir, config)),
                            lease=lease_from_ini(config_file(data_dir, config)) or DEFAULT_LEASE)
    idle_minutes = idle_lock_minutes(config_file(data_dir, config))  # [USERS], checked before the window
    watcher = None
    links: LinkListener | None = None
    simulators = None
    try:
        link.check()  # refused before the window opens and before any instrument moves
        window = MainWindow(runtime, settings_for(data_dir))
        window.closed = asyncio.get_running_loop().create_future()
        for sig in (signal.SIGINT, signal.SIGTERM):  # Ctrl+C or a service stop closes cleanly
            signal.signal(sig, lambda *_: window.close())
        window.show()  # at once: instruments may take seconds to connect
        window.start_loop_lag()
        # deep links are taken at once and answered once the orders are listed
        loaded = asyncio.Event()
        links = LinkListener(data_dir, lambda order_id: focus_order_in(window, runtime, order_id, loaded))
        links.start()
        window.statusBar().showMessage("Connecting instruments, resuming runs…")
        if runtime.workcell is not None:  # SiLA instruments marked simulate: true (demo workcells)
            from console.sila_demo import SilaSimulators

            simulators = await SilaSimulators(runtime.workcell).start()
        gcpolicy.enable()  # connected instruments' objects stay out of full GC passes (core/gcpolicy.py)
        await runtime.start(link=link, schedules=True)
        await window.load_orders()
        loaded.set()
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
        if links is not None:
            links.close()
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        await runtime.close()
        if simulators is not None:
            await simulators.stop()


def main_gui(data_dir: Path, **options: object) -> int:
    import PySide6  # noqa: F401 - choose the binding before qasync looks for one
    import qasync
    from PySide6.QtWidgets import QApplication

    from panels.style import icon
    from panels.theme import SETTINGS_KEY, apply_theme, theme_name

    existing = QApplication.instance()
    app = existing if isinstance(existing, QApplication) else QApplication(sys.argv)
    app.setApplicationName("labconsole")
    app.setOrganizationName("labconsole")
    app.setQuitOnLastWindowClosed(False)  # the console coroutine ends the loop after cleaning up
    # the saved theme before any window exists, so nothing flashes in the other one
    apply_theme(app, theme_name(settings_for(data_dir).value(SETTINGS_KEY)))
    app.setWindowIcon(icon("labconsole", size=64))
    # Collect garbage on the GUI thread only (on a timer): an automatic collection may run on a
    # store or worker thread and free Qt objects there, which corrupts Qt's timers.
    from pyqtgraph.util.garbage_collector import GarbageCollector

    collector = GarbageCollector(interval=1.0)
    try:
        with asyncio.Runner(loop_factory=lambda: qasync.QEventLoop(app)) as runner:
            return runner.run(run_console(data_dir, **options))  # type: ignore[arg-type]
    except LabconsoleError as exc:
        print(f"labconsole: {exc}", file=sys.stderr)
        return 2
    finally:
        collector.timer.stop()
