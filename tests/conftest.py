"""Shared fixtures: headless Qt, a qasync loop that pytest-qt can drive, an isolated data dir."""

from __future__ import annotations

import asyncio
import gc
import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = ROOT / "tests" / "screenshots"


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    monkeypatch.setenv("LABCONSOLE_DATA_DIR", str(d))
    return d


@pytest.fixture
def store(data_dir: Path):
    from core.store import DB_FILENAME, Store

    s = Store(data_dir / DB_FILENAME).open()
    yield s
    s.close()


@pytest.fixture
def qloop(qapp):
    """A qasync loop on the already running pytest-qt application.

    ``qtbot.waitUntil``/``waitSignal`` run its asyncio callbacks. Teardown never calls ``stop()``
    (that calls ``QApplication.exit()`` outside ``exec()`` and breaks every later nested loop);
    it clears the running flag instead. Exceptions the loop saw fail the test.
    """
    import qasync

    loop = qasync.QEventLoop(qapp, already_running=True)
    errors: list[dict] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    yield loop
    pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in pending:
        task.cancel()
    loop._QEventLoop__is_running = False  # qasync 0.28.0 private flag (pinned)
    asyncio.events._set_running_loop(None)
    loop.close()
    assert not errors, f"event loop errors: {errors}"


def run(loop, coro, qtbot, timeout_ms: int = 10_000):
    """Run ``coro`` as a task on the qasync ``loop`` and wait for it with Qt's event loop."""
    task = loop.create_task(coro)
    qtbot.waitUntil(task.done, timeout=timeout_ms)
    return task.result()


@pytest.fixture
def qrun(qloop, qtbot):
    return lambda coro, timeout_ms=10_000: run(qloop, coro, qtbot, timeout_ms)


@pytest.fixture(autouse=True)
def _no_leaked_top_level_widgets(request):
    """Fail a GUI test that leaves top-level widgets alive (napari-style hygiene)."""
    if "qapp" not in request.fixturenames and "qtbot" not in request.fixturenames:
        yield
        return
    from PySide6.QtWidgets import QApplication

    before = {id(w) for w in QApplication.topLevelWidgets()}
    yield
    QApplication.processEvents()
    leaked = [w for w in QApplication.topLevelWidgets()
              if id(w) not in before and w.isVisible()]
    # Qt objects the test dropped in reference cycles are freed now, on this (the GUI) thread:
    # left to the garbage collector they would be freed on whatever thread next triggers a
    # collection (a store writer, a worker), which corrupts Qt's timers and crashes later.
    gc.collect()
    QApplication.processEvents()
    assert not leaked, f"top-level widgets left open: {[type(w).__name__ for w in leaked]}"


def save_screenshot(widget, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    assert widget.grab().save(str(path)), f"could not save {path}"
    from helpers.images import blank_reason

    reason = blank_reason(path)
    assert reason is None, f"screenshot {name} shows nothing: {reason}"
    return path


sys.path.insert(0, str(ROOT / "tests"))
