"""Theme colours are resolved once per theme change (never per table cell), every status and
text colour reads at WCAG AA (4.5:1) on its background in both themes, and the template editor
(canvas, nodes, banners, titles) follows the theme."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor

import panels.style
import panels.theme
from core import demo
from core.orders import OrderStatus
from panels.jobs_model import STATUS_COLUMN, OrdersTableModel
from panels.theme import TEXT_PAIRS, THEME_NAMES, apply_theme, contrast_ratio, load_theme


@pytest.fixture
def light_again(qapp):
    yield
    apply_theme(qapp, "light")


def test_jobs_model_resolves_theme_colours_once_per_theme_change(store, qapp, light_again, monkeypatch):
    demo.generate(store, 300)
    model = OrdersTableModel()
    model.reset(store.order_rows())
    apply_theme(qapp, "light")
    resolutions = model.theme_resolutions
    calls = []
    real = panels.theme.current_theme

    def counted():
        calls.append(1)
        return real()

    monkeypatch.setattr(panels.theme, "current_theme", counted)
    monkeypatch.setattr(panels.style, "current_theme", counted)
    cells = [model.index(r, c) for r in range(model.rowCount()) for c in range(model.columnCount())]
    for index in cells:
        index.data(Qt.ItemDataRole.ForegroundRole)
        index.data(Qt.ItemDataRole.DecorationRole)
    assert not calls, f"{len(calls)} theme look-ups while painting {len(cells)} cells"

    apply_theme(qapp, "dark")
    assert model.theme_resolutions == resolutions + 1
    row = model.row_data(0)
    colour = model.index(0, STATUS_COLUMN).data(Qt.ItemDataRole.ForegroundRole)
    assert colour == QColor(load_theme("dark").status[OrderStatus(row[4]).name])


@pytest.mark.parametrize("name", THEME_NAMES)
def test_every_status_and_text_colour_meets_wcag_aa(name):
    theme = load_theme(name)
    low = []
    for fg, bg in TEXT_PAIRS:
        for status_key in (theme.status if fg == "status:*" else (None,)):
            fg_ref = f"status:{status_key}" if status_key else fg
            ratio = contrast_ratio(theme.resolve(fg_ref), theme.resolve(bg))
            if ratio < 4.5:
                low.append(f"{fg_ref} {theme.resolve(fg_ref).name()} on {bg} {theme.resolve(bg).name()}: "
                           f"{ratio:.2f}")
    assert not low, f"{name} theme below 4.5:1: " + "; ".join(low)


def test_contrast_ratio_is_wcag():
    assert contrast_ratio(QColor("#000000"), QColor("#ffffff")) == pytest.approx(21.0)
    assert contrast_ratio(QColor("#777777"), QColor("#ffffff")) == pytest.approx(4.48, abs=0.01)


def _max_contrast(widget) -> float:
    """The strongest contrast between the widget's background (its corner) and any pixel of it."""
    image = widget.grab().toImage()
    background = image.pixelColor(1, 1)
    step = max(1, image.width() // 300)
    return max(contrast_ratio(image.pixelColor(x, y), background)
               for x in range(0, image.width(), step) for y in range(image.height()))


def test_templates_panel_and_editor_follow_the_dark_theme(qtbot, qrun, store, data_dir, tmp_path, qapp,
                                                        light_again):
    from PySide6.QtWidgets import QLabel
    from test_gui_templates import boot, sample_dir, save_screenshot

    from panels.editor.graph import colors
    from panels.templates import TemplatesPanel

    rt, _clock = boot(qrun, store, data_dir, templates=sample_dir(tmp_path))
    panel = TemplatesPanel(rt, None)
    qtbot.addWidget(panel)
    panel.resize(1280, 720)
    panel.show()
    qtbot.waitUntil(lambda: panel.list_model.rowCount() == 3)
    qrun(panel.open_template(panel.list_model.rows()[0].name))
    apply_theme(qapp, "dark")
    panel.show_message("Opened a template")
    dark = load_theme("dark")
    for _ in range(3):
        qapp.processEvents()
    titles = [w for w in panel.findChildren(QLabel)
              if w.text() in ("Templates", "Step kinds — drag onto the canvas", "Workflow") and w.isVisible()]
    assert len(titles) >= 2
    for label in [*titles, panel.message, panel.editor.banner, panel.editor.status]:
        assert _max_contrast(label) >= 4.5, f"{label.text()!r} is hard to read in the dark theme"
    # the canvas, its steps and the banners are dark too
    view = panel.editor.view
    corner = view.viewport().grab().toImage().pixelColor(2, 2)
    assert corner == QColor(dark.colors["canvas_bg"]), corner.name()
    assert colors().card == QColor(dark.colors["node_bg"]) and colors().ink == QColor(dark.colors["node_ink"])
    banner = panel.editor.banner.grab().toImage().pixelColor(2, 2)
    assert banner == QColor(dark.colors["banner_info_bg"]), banner.name()
    save_screenshot(panel, "templates-editor-dark-1280x720")
    apply_theme(qapp, "light")
    qapp.processEvents()
    assert view.viewport().grab().toImage().pixelColor(2, 2) == QColor(load_theme("light").colors["canvas_bg"])
    panel.shutdown()
    panel.close()
    qrun(rt.close())
