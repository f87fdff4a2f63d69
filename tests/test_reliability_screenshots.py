"""Screenshots prove something was drawn: a blank grab fails the test that saved it."""

from __future__ import annotations

import pytest
from conftest import save_screenshot
from helpers.images import blank_reason
from PySide6.QtGui import QColor, QImage
from PySide6.QtWidgets import QLabel, QWidget


def test_a_uniform_or_nearly_uniform_image_is_blank(tmp_path):
    flat = QImage(300, 200, QImage.Format.Format_ARGB32)
    flat.fill(QColor("#202124"))
    flat.save(str(tmp_path / "flat.png"))
    assert "blank (1 colour in 300x200)" in blank_reason(tmp_path / "flat.png")
    flat.setPixelColor(5, 5, QColor("white"))
    flat.setPixelColor(6, 5, QColor("grey"))
    flat.save(str(tmp_path / "speck.png"))
    assert "% of 300x200 pixels are #ff202124" in blank_reason(tmp_path / "speck.png")
    assert "not a readable image" in blank_reason(tmp_path / "missing.png")


def test_save_screenshot_refuses_a_widget_that_drew_nothing(qtbot):
    empty = QWidget()
    empty.resize(320, 200)
    empty.setStyleSheet("background: #202124")
    qtbot.addWidget(empty)
    with pytest.raises(AssertionError, match="screenshot reliability-blank shows nothing"):
        save_screenshot(empty, "reliability-blank")
    label = QLabel("Plate reader 1 — ready")
    label.resize(320, 60)
    qtbot.addWidget(label)
    assert blank_reason(save_screenshot(label, "reliability-label")) is None
