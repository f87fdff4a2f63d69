"""The main window's layout at 1280x720 and 1920x1080, light and dark: every dock tab shows its
whole title, and the Playbook form fits its dock (no field or button cut at the right, no
horizontal scrolling), wherever the dock is. Screenshots are saved under tests/screenshots/."""

from __future__ import annotations

import contextlib

import pytest
from conftest import save_screenshot
from PySide6.QtCore import QPoint, Qt
from PySide6.QtWidgets import QApplication, QMainWindow, QTabBar, QWidget
from pytestqt.exceptions import TimeoutError as WaitTimeout

from console.app import settings_for
from console.main_window import MainWindow
from core.runtime import Runtime
from panels.playbook import COLUMNS
from panels.theme import apply_theme

SIZES = ((1280, 720), (1920, 1080))
THEMES = ("light", "dark")
GROUPS = ({"Jobs", "Templates", "Schedules", "Playbook", "Metrics"},
          {"Detail", "Robots", "Inbox (12)", "Timeline", "Fleet"})


@pytest.fixture(params=SIZES, ids=lambda size: f"{size[0]}x{size[1]}")
def window(request, store, data_dir, qtbot, qapp):
    """The console opened on a screen of the given size (its first layout made at that size)."""
    runtime = Runtime.build(data_dir, store=store, metrics=False)  # the demo workcell, not started
    w = MainWindow(runtime, settings_for(data_dir))
    qtbot.addWidget(w)
    w._on_inbox_counts(12, 0)  # the Inbox tab's title as it reads with a dozen items waiting
    w.resize(*request.param)
    w.show()
    qtbot.waitUntil(lambda: w.size().toTuple() == request.param)
    yield w
    w.close()
    apply_theme(qapp, "light")


def _settle(window: MainWindow, theme: str) -> str:
    """Switch to ``theme``; the tag of the screenshots at this size and theme."""
    window.set_theme(theme)
    QApplication.processEvents()
    return f"{window.width()}x{window.height()}-{theme}"


def shown_tab_bars(window: QMainWindow) -> list[QTabBar]:
    """The dock tab bars the operator sees (Qt parks the bars it no longer uses off the window)."""
    return [bar for bar in window.findChildren(QTabBar, options=Qt.FindChildOption.FindDirectChildrenOnly)
            if bar.isVisible() and window.rect().intersects(bar.geometry())]


def cut_titles(bar: QTabBar, *, all_in_view: bool = True) -> list[str]:
    """Titles the bar does not show whole: a tab narrower than its title needs (elided), or, with
    ``all_in_view``, a tab out of the bar's sight (scrolled away)."""
    cut = []
    for i in range(bar.count()):
        rect, text = bar.tabRect(i), bar.tabText(i)
        if rect.width() < bar.tabSizeHint(i).width() or rect.width() <= bar.fontMetrics().horizontalAdvance(text):
            cut.append(f"{text!r}: {rect.width()} px, needs {bar.tabSizeHint(i).width()}")
        elif all_in_view and not bar.rect().contains(rect):
            cut.append(f"{text!r}: out of sight at x={rect.x()} in a {bar.width()} px bar")
    return cut


def test_every_dock_tab_title_is_shown_whole(window):
    """At 1280x720 the nine tabs under the Detail area were cut to two letters ("Re…")."""
    for theme in THEMES:
        tag = _settle(window, theme)
        bars = shown_tab_bars(window)
        for bar in bars:
            assert not cut_titles(bar), f"{tag}: {cut_titles(bar)}"
        groups = [{bar.tabText(i) for i in range(bar.count())} for bar in bars]
        assert sorted(groups, key=len) == sorted(GROUPS, key=len), f"{tag}: tab groups {groups}"
        for bar in bars:
            # the bar is under its own group's docks, not drawn over another dock
            assert bar.geometry().top() >= window.docks["Jobs"].geometry().bottom() - 1, tag
        save_screenshot(window, f"layout-main-window-{tag}")


def test_a_crowded_tab_group_scrolls_rather_than_cutting_titles(window):
    """Docks the operator moves into one narrow area: each tab keeps its whole title and the bar
    scrolls to the ones out of sight (Qt's dock tab bars elided them to a letter or two)."""
    for name in ("Templates", "Schedules", "Playbook", "Metrics"):
        window.tabifyDockWidget(window.docks["Detail"], window.docks[name])
    window.docks["Detail"].raise_()
    for theme in THEMES:
        tag = _settle(window, theme)
        crowded = next(bar for bar in shown_tab_bars(window) if bar.count() == 9)
        assert not cut_titles(crowded, all_in_view=False), f"{tag}: {cut_titles(crowded, all_in_view=False)}"
        assert crowded.usesScrollButtons(), tag
        save_screenshot(window, f"layout-crowded-tabs-{tag}")


def _right_edge_in(widget: QWidget, ancestor: QWidget) -> int:
    return widget.mapTo(ancestor, QPoint(widget.width(), 0)).x()


def _fits(window: MainWindow, qtbot, tag: str) -> None:
    panel = window.playbook
    dock = window.docks["Playbook"]
    area = panel.form_area
    editor = area.widget()
    viewport = area.viewport()
    # the scroll area settles the form's width on a later pass of the event loop
    with contextlib.suppress(WaitTimeout):
        qtbot.waitUntil(lambda: editor.width() <= viewport.width(), timeout=2000)
    assert not area.horizontalScrollBar().isVisible(), f"{tag}: the form scrolls sideways"
    assert editor.minimumSizeHint().width() <= viewport.width(), \
        f"{tag}: the form needs {editor.minimumSizeHint().width()} px, its dock gives {viewport.width()}"
    assert editor.width() <= viewport.width(), f"{tag}: form {editor.width()} px in {viewport.width()}"
    assert _right_edge_in(panel, dock) <= dock.width(), tag
    for widget in panel.fields:  # in the scrolling part
        right = _right_edge_in(widget, viewport)
        assert right <= viewport.width(), f"{tag}: {type(widget).__name__} ends at {right} px, beyond {viewport.width()}"
    for widget in (*panel.fields, panel.save_button, panel.remove_button, panel.import_button,
                   panel.export_button, panel.feedback, panel.table, panel.form_area):
        right = _right_edge_in(widget, panel)
        assert right <= panel.width(), f"{tag}: {type(widget).__name__} ends at {right} px, beyond {panel.width()}"
        assert widget.width() >= widget.minimumSizeHint().width(), \
            f"{tag}: {type(widget).__name__} squeezed to {widget.width()} px"
    if not panel.side_by_side():
        rows = panel.table.viewport().height() / panel.table.verticalHeader().defaultSectionSize()
        assert rows >= 4, f"{tag}: the rules table shows {rows:.1f} rows over the form"
    for button in (panel.save_button, panel.remove_button, panel.import_button, panel.export_button):
        assert not button.visibleRegion().isEmpty(), f"{tag}: {button.text()} out of sight"
    if panel.side_by_side():  # beside the form, the table keeps every column title whole
        header = panel.table.horizontalHeader()
        for c in range(header.count()):
            assert header.sectionSize(c) >= header.sectionSizeHint(c), \
                f"{tag}: column {COLUMNS[c]!r} {header.sectionSize(c)} px, needs {header.sectionSizeHint(c)}"
    for bar in shown_tab_bars(window):
        assert not cut_titles(bar), f"{tag}: {cut_titles(bar)}"


def test_the_playbook_form_fits_its_dock(window, qtbot):
    """At 1920x1080 the Playbook form was wider than its dock: its right part (field ends, the
    Import and Export buttons) was cut behind a horizontal scroll bar."""
    panel = window.playbook
    panel.rule_id.setText("sealer-jam-on-the-second-plate-of-a-long-overnight-run")
    panel.error_code.setText("SimulatedFailure")
    panel.capability.setCurrentText("LiquidHandler.AspirateAndDispenseWithTipChange")
    panel._say("capability: unknown capability 'LiquidHandler.AspirateAndDispenseWithTipChange' "
               "(the workcell's instruments offer 14 others)", "text_error")
    window.docks["Playbook"].raise_()
    qtbot.waitUntil(panel.isVisible)
    for theme in THEMES:
        tag = _settle(window, theme)
        _fits(window, qtbot, tag)
        save_screenshot(window, f"layout-playbook-{tag}")
        save_screenshot(panel, f"playbook-{tag}")
    # a choice's list shows the longest name whole, however narrow the box
    box = panel.capability
    box.showPopup()
    try:
        assert box.view().width() >= box.view().sizeHintForColumn(0), "names cut in the list"
    finally:
        box.hidePopup()


def test_the_playbook_form_fits_the_narrow_area_beside_jobs(window, qtbot):
    """In the narrow area beside Jobs (where the Playbook dock was) the form fits too: under the
    table when the table's columns would not fit beside it."""
    window.tabifyDockWidget(window.docks["Detail"], window.docks["Playbook"])
    window.docks["Playbook"].raise_()
    panel = window.playbook
    qtbot.waitUntil(panel.isVisible)
    for theme in THEMES:
        tag = "narrow-" + _settle(window, theme)
        _fits(window, qtbot, tag)
        if not panel.side_by_side():
            assert panel.table.width() == panel.form_side.width(), tag  # both take the dock's width
        save_screenshot(window, f"layout-playbook-{tag}")


def test_a_layout_saved_with_the_nine_tabs_together_gives_way_to_the_default(store, data_dir, qtbot, qapp):
    """A layout saved before the two tab groups would bring the nine cut tabs back at every start."""
    runtime = Runtime.build(data_dir, store=store, metrics=False)
    settings = settings_for(data_dir)
    old = MainWindow(runtime, settings)
    qtbot.addWidget(old)
    old.resize(1280, 720)
    old.show()
    for name in ("Templates", "Schedules", "Playbook", "Metrics"):
        old.tabifyDockWidget(old.docks["Detail"], old.docks[name])
    QApplication.processEvents()
    state = old.saveState(2)  # as the version before the two groups saved it
    old.close()  # saves the layout
    settings.setValue("main/state", state)
    settings.sync()
    again = MainWindow(runtime, settings_for(data_dir))
    qtbot.addWidget(again)
    again.show()
    QApplication.processEvents()
    assert again.width() <= 1280, again.size()
    groups = sorted(({bar.tabText(i) for i in range(bar.count())} for bar in shown_tab_bars(again)), key=len)
    assert groups == sorted(({t.replace(" (12)", "") for t in g} for g in GROUPS), key=len), groups
    for bar in shown_tab_bars(again):
        assert not cut_titles(bar), cut_titles(bar)
    again.close()
