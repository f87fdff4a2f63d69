"""Look and feel: View > Theme switches the whole application and is kept; every status has a
colour and its own mark; screenshots of the console with the demo workcell running over
100,000 orders, in both themes (saved under tests/screenshots/ to be looked at)."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import pytest
from conftest import save_screenshot
from PySide6.QtGui import QColor, QImage, QPalette
from PySide6.QtWidgets import QApplication

from console.app import settings_for
from console.main_window import MainWindow
from core import demo
from core.clock import VirtualClock
from core.orders import OrderStatus
from core.runtime import Runtime
from core.store import DB_FILENAME, Store
from panels.style import ICONS_DIR, ORDER_MARKS, STATE_MARKS, state_icon, status_icon
from panels.theme import SETTINGS_KEY, THEME_NAMES, apply_theme, current_theme, load_theme


@pytest.fixture
def light_again(qapp):
    """Whatever a test switches to, the next test starts in the light theme."""
    yield
    apply_theme(qapp, "light")


def _window_color() -> QColor:
    return QApplication.palette().color(QPalette.ColorRole.Window)


def test_theme_menu_switches_the_application_and_is_kept(store, data_dir, qtbot, light_again):
    runtime = Runtime.build(data_dir, store=store, workcell=None, metrics=False)
    window = MainWindow(runtime, settings_for(data_dir))
    qtbot.addWidget(window)
    window.show()
    assert current_theme().name == "light" and window.theme_actions["light"].isChecked()
    assert _window_color() == QColor(load_theme("light").palette["Window"])
    light_card = window.dashboard.kpi["jobs"].styleSheet()

    # View > Theme > Dark, through the menu itself
    view_menu = next(a.menu() for a in window.menuBar().actions() if a.text() == "&View")
    theme_menu = next(a.menu() for a in view_menu.actions() if a.text() == "&Theme")
    assert [a.text() for a in theme_menu.actions()] == ["Light", "Dark"]
    next(a for a in theme_menu.actions() if a.text() == "Dark").trigger()
    assert current_theme().name == "dark" and window.theme_actions["dark"].isChecked()
    assert _window_color() == QColor(load_theme("dark").palette["Window"])
    assert window.dashboard.kpi["jobs"].styleSheet() != light_card, "cards follow the theme"
    assert load_theme("dark").colors["card"] in window.dashboard.kpi["jobs"].styleSheet()
    assert settings_for(data_dir).value(SETTINGS_KEY) == "dark"
    window.close()

    # the next start comes up dark
    apply_theme(QApplication.instance(), "light")
    again = MainWindow(runtime, settings_for(data_dir))
    qtbot.addWidget(again)
    assert current_theme().name == "dark" and again.theme_actions["dark"].isChecked()
    assert _window_color() == QColor(load_theme("dark").palette["Window"])
    again.close()


def test_every_status_has_a_colour_and_its_own_mark(qapp, light_again):
    assert len(set(ORDER_MARKS.values())) == len(OrderStatus), "one mark per order status"
    assert len(set(STATE_MARKS.values())) == len(STATE_MARKS), "one mark per instrument state"
    for mark in {*ORDER_MARKS.values(), *STATE_MARKS.values()}:
        assert (ICONS_DIR / f"badge-{mark}.svg").is_file()
    for name in THEME_NAMES:
        theme = apply_theme(qapp, name)
        for status in OrderStatus:
            assert status.name in theme.status
            assert not status_icon(status).pixmap(16, 16).isNull()
        for state in STATE_MARKS:
            assert state in theme.status
            assert not state_icon(state).pixmap(16, 16).isNull()
    light, dark = load_theme("light"), load_theme("dark")
    assert light.status["Running"] != dark.status["Running"], "lighter on dark backgrounds"


# ---------------------------------------------------------------------------- screenshots


@pytest.fixture(scope="module")
def big_store(tmp_path_factory) -> Path:
    """A store with 100,000 demo orders, made once for the module and copied per test."""
    path = tmp_path_factory.mktemp("big") / DB_FILENAME
    with Store(path).open() as s:
        demo.generate(s, 100_000)
    return path


async def _start(runtime: Runtime, clock: VirtualClock) -> None:
    """Start the runtime; the demo instruments take virtual seconds to connect."""
    task = asyncio.ensure_future(runtime.start())
    while not task.done():
        await clock.advance(1)
    await task


async def _work(runtime: Runtime, clock: VirtualClock, sample, minutes: int) -> None:
    """Keep the demo workcell busy for ``minutes`` of virtual time, sampling the charts."""
    plates = 0
    for step in range(minutes * 4):
        if step % 6 == 0:
            for name in ("ELISA Readout", "Plate Replication", "Cell Culture Passage"):
                plates += 1
                inputs = {"plate_id": f"PL{plates:05d}"} if name == "ELISA Readout" else {}
                run_id = await runtime.engine.create_instance(name, inputs, allow_duplicate=True,
                                                              who="ann")
                await runtime.engine.execute_workflow(run_id)
        await clock.advance(15)
        sample()


def test_screenshots_of_the_console_at_work(big_store, data_dir, qtbot, qrun, light_again):
    for suffix in ("", "-wal", "-shm"):
        if Path(f"{big_store}{suffix}").exists():
            shutil.copy(f"{big_store}{suffix}", data_dir / f"{DB_FILENAME}{suffix}")
    store = Store(data_dir / DB_FILENAME).open()
    clock = VirtualClock.for_store(store, start=time.time() - 3600)
    runtime = Runtime.build(data_dir, clock=clock, store=store, seed=7)
    try:
        qrun(_start(runtime, clock), timeout_ms=30_000)
        window = MainWindow(runtime, settings_for(data_dir))
        qtbot.addWidget(window)
        window.show()
        assert qrun(window.load_orders(), timeout_ms=30_000) >= 100_000
        window.start_loop_lag()
        qrun(_work(runtime, clock, window.metrics.sample, minutes=45), timeout_ms=60_000)
        qrun(runtime.instrument_action("Sealer1", "out_of_service", who="ann",
                                       reason="replacing the seal roll"))
        qrun(runtime.instrument_action("Decapper1", "disable", who="ann", reason="gripper check"))
        window.bridge.flush()
        window.dashboard.refresh()
        window.robots.refresh()
        window.metrics.set_range(3600.0)

        first = window.jobs.model.order_id(0)
        window.jobs.select_order(first)
        qtbot.waitUntil(lambda: window.detail.data is not None and window.detail.data.order_id == first,
                        timeout=10_000)  # the shots show its details, not them being read
        shots: dict[str, Path] = {}
        for width, height in ((1280, 720), (1920, 1080)):
            window.resize(width, height)
            QApplication.processEvents()
            for theme in ("light", "dark"):
                tag = f"{width}x{height}-{theme}"
                window.set_theme(theme)
                window.dashboard.set_expanded(False)
                window.docks["Jobs"].raise_()  # Templates (raised below) shares its area
                window.docks["Detail"].raise_()
                qtbot.waitUntil(lambda: window.detail.isVisible() and window.jobs.isVisible())
                QApplication.processEvents()
                shots[f"main-window-{tag}"] = save_screenshot(window, f"main-window-{tag}")
                shots[f"jobs-{tag}"] = save_screenshot(window.jobs, f"jobs-{tag}")
                shots[f"detail-{tag}"] = save_screenshot(window.detail, f"detail-{tag}")
                window.dashboard.set_expanded(True)
                window.dashboard.refresh()
                QApplication.processEvents()
                shots[f"dashboard-{tag}"] = save_screenshot(window.dashboard, f"dashboard-{tag}")
                shots[f"main-window-expanded-{tag}"] = save_screenshot(window, f"main-window-expanded-{tag}")
                window.dashboard.set_expanded(False)
                window.docks["Robots"].raise_()
                window.robots.show_table(False)
                qtbot.waitUntil(lambda: window.robots.isVisible())
                window.robots.refresh()
                QApplication.processEvents()
                shots[f"robots-cards-{tag}"] = save_screenshot(window.robots, f"robots-cards-{tag}")
                window.robots.show_table(True)
                QApplication.processEvents()
                shots[f"robots-table-{tag}"] = save_screenshot(window.robots, f"robots-table-{tag}")
                window.docks["Metrics"].raise_()
                qtbot.waitUntil(lambda: window.metrics.isVisible())
                window.metrics.redraw(force=True)
                QApplication.processEvents()
                shots[f"metrics-{tag}"] = save_screenshot(window.metrics, f"metrics-{tag}")
                window.docks["Templates"].raise_()
                qtbot.waitUntil(lambda: window.templates.isVisible())
                if window.templates.editor.document.published is None:
                    qrun(window.templates.open_template(window.templates.list_model.rows()[0].name))
                QApplication.processEvents()
                shots[f"templates-{tag}"] = save_screenshot(window.templates, f"templates-{tag}")
                shots[f"main-window-templates-{tag}"] = save_screenshot(window, f"main-window-templates-{tag}")

        for name, path in shots.items():
            image = QImage(str(path))
            assert not image.isNull() and image.width() > 300, name
        # what the screenshots show is what the core says
        assert window.robots.cards["Sealer1"].state.text() == "Out of service"
        assert window.dashboard.kpi["jobs"].value.text() != "0"
        assert len(window.metrics.history.ring) >= 45 * 4
        assert window.lag_probe.running and window.loop_lag.text().startswith("loop lag p99")
        window.close()
        assert not window.lag_probe.running
        for panel in (window.dashboard, window.robots):
            assert not panel.refresh_timer.isActive()
        assert not window.metrics.sample_timer.isActive() and not window.metrics.redraw_timer.isActive()
    finally:
        qrun(runtime.close(), timeout_ms=30_000)
