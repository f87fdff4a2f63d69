"""The Help menu's pages: keyboard shortcuts, where the data lives, About.

Each page is an HTML text built from what the window holds now (its actions and shortcuts, the
runtime's files, the Data Services link), shown in a :class:`HelpDialog` opened with ``open()``
(never ``exec()``, which would re-enter the event loop).
"""

from __future__ import annotations

import platform
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from html import escape
from importlib import metadata
from pathlib import Path
from typing import Any

import PySide6
from PySide6.QtCore import qVersion
from PySide6.QtGui import QAction, QKeySequence, QShortcut
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QTextBrowser, QVBoxLayout, QWidget


@dataclass(frozen=True)
class Shortcut:
    """One keyboard shortcut as the Help page lists it."""

    where: str
    what: str
    keys: str


def _where(widget: Any, docks: Mapping[str, QWidget]) -> str:
    """The dock (panel) an action belongs to, else "Window"."""
    node = widget
    while node is not None:
        for name, dock in docks.items():
            if node is dock:
                return name
        node = node.parent() if hasattr(node, "parent") else None
    return "Window"


def collect_shortcuts(root: QWidget, docks: Mapping[str, QWidget]) -> list[Shortcut]:
    """Every action and shortcut under ``root`` that has a key, by panel, without repeats."""
    seen: set[tuple[str, str, str]] = set()
    out: list[Shortcut] = []
    items: Iterable[Any] = [*root.findChildren(QAction), *root.findChildren(QShortcut)]
    for item in items:
        keys = item.shortcuts() if isinstance(item, QAction) else [item.key()]
        keys = [k for k in keys if not k.isEmpty()]
        if not keys:
            continue
        if isinstance(item, QAction):
            what = item.text().replace("&", "")
        else:
            what = item.whatsThis() or item.objectName() or "Shortcut"
        where = _where(item.parent(), docks)
        text = ", ".join(k.toString(QKeySequence.SequenceFormat.NativeText) for k in keys)
        key = (where, what, text)
        if key not in seen:
            seen.add(key)
            out.append(Shortcut(where, what, text))
    out.sort(key=lambda s: (s.where != "Window", s.where, s.what))
    return out


def shortcuts_html(shortcuts: list[Shortcut]) -> str:
    rows = "".join(f"<tr><td>{escape(s.where)}</td><td>{escape(s.what)}</td><td><b>{escape(s.keys)}</b></td></tr>"
                   for s in shortcuts)
    return ("<h3>Keyboard shortcuts</h3><p>Order actions work on the selection in Jobs (and the "
            "order shown in Detail); editor keys work while the template editor has the focus.</p>"
            "<table cellspacing='0' cellpadding='3'><tr><th align='left'>Where</th>"
            "<th align='left'>Action</th><th align='left'>Keys</th></tr>" + rows + "</table>")


def data_html(data_dir: Path, store_path: Path, settings_file: str, views_file: Path | None,
              data_services: str | None) -> str:
    items = [("Data folder", str(data_dir)),
             ("Order store (SQLite, every order, transition and audit entry)", str(store_path)),
             ("Window layout and theme", settings_file)]
    if views_file is not None:
        items.append(("Saved Jobs views", str(views_file)))
    items.append(("Data Services", data_services or "not started yet"))
    rows = "".join(f"<tr><td>{escape(k)}</td><td><code>{escape(v)}</code></td></tr>" for k, v in items)
    return ("<h3>Where the data lives</h3><table cellspacing='0' cellpadding='3'>" + rows + "</table>"
            "<p>Start with <code>--data-dir DIR</code> (or <code>LABCONSOLE_DATA_DIR</code>) to use "
            "another folder. Other Data Services clients (Biosero's OrderScheduler, modules) reach "
            "this console at the Data Services address.</p>")


def versions() -> dict[str, str]:
    """Versions of labconsole, Qt, PySide6 and Python."""
    try:
        own = metadata.version("labconsole")
    except metadata.PackageNotFoundError:
        own = "not installed (source tree)"
    return {"labconsole": own, "Qt": qVersion(), "PySide6": PySide6.__version__,
            "Python": f"{platform.python_version()} ({sys.implementation.name})"}


def about_html() -> str:
    rows = "".join(f"<tr><td>{escape(k)}</td><td><b>{escape(v)}</b></td></tr>" for k, v in versions().items())
    return ("<h3>labconsole</h3><p>Operator console for lab-automation workflows: orders, runs, "
            "instruments and templates on one screen, wire-compatible with Biosero Data Services.</p>"
            "<table cellspacing='0' cellpadding='3'>" + rows + "</table>")


class HelpDialog(QDialog):
    """One help page (HTML) with a Close button; opened with ``open()``."""

    def __init__(self, title: str, html: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(title)
        self.setObjectName("helpDialog")
        self.text = QTextBrowser(self)
        self.text.setOpenExternalLinks(False)
        self.text.setHtml(html)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, self)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.text, 1)
        layout.addWidget(buttons)
        self.resize(640, 480)
