"""Checks on saved screenshots: a grab that rendered nothing is one flat colour."""

from __future__ import annotations

from pathlib import Path

import numpy as np

MIN_COLOURS = 3
"""A rendered widget has text or edges: background, foreground and anti-aliasing at least."""
MAX_DOMINANT = 0.999
"""Share of the most common colour above which the image counts as blank (nothing drawn)."""


def blank_reason(path: str | Path) -> str | None:
    """Why the PNG at ``path`` looks blank (uniform, or all but a few pixels one colour), or None."""
    from PySide6.QtGui import QImage

    image = QImage(str(path))
    if image.isNull():
        return f"{path}: not a readable image"
    image = image.convertToFormat(QImage.Format.Format_ARGB32)
    width, height = image.width(), image.height()
    if width == 0 or height == 0:
        return f"{path}: empty image ({width}x{height})"
    stride = image.bytesPerLine() // 4
    pixels = np.frombuffer(image.constBits(), dtype=np.uint32, count=stride * height)
    pixels = pixels.reshape(height, stride)[:, :width].ravel()
    colours, counts = np.unique(pixels, return_counts=True)
    dominant = counts.max() / pixels.size
    if len(colours) < MIN_COLOURS:
        return f"{path}: blank ({len(colours)} colour{'s' if len(colours) != 1 else ''} in {width}x{height})"
    if dominant > MAX_DOMINANT:
        return (f"{path}: blank ({dominant:.2%} of {width}x{height} pixels are #{int(colours[counts.argmax()]):08x})")
    return None
