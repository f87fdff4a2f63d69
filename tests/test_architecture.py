"""The import contract (core free of Qt; console > panels > core) is part of the suite."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_import_linter_contracts_hold():
    lint_imports = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run([str(lint_imports), "--config", str(ROOT / "pyproject.toml")],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 2 kept, 0 broken" in result.stdout


def test_core_imports_without_qt():
    code = ("import sys, pkgutil, importlib, core\n"
            "for m in pkgutil.walk_packages(core.__path__, 'core.'):\n"
            "    importlib.import_module(m.name)\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in "
            "('PySide6','qasync','pyqtgraph','shiboken6')]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)


WINDOW_WITHOUT_HTTP = """
import asyncio, pathlib, sys
from PySide6.QtWidgets import QApplication
import qasync
from console.app import settings_for
from console.main_window import MainWindow
from core.runtime import Runtime

app = QApplication([])
app.setQuitOnLastWindowClosed(False)
data_dir = pathlib.Path(sys.argv[1])

async def main():
    rt = Runtime.build(data_dir)
    await rt.start(templates_dir=None)
    window = MainWindow(rt, settings_for(data_dir))
    window.show()
    await window.load_orders()
    window.close()
    await rt.close()

loop = qasync.QEventLoop(app)
asyncio.set_event_loop(loop)
with loop:
    loop.run_until_complete(main())
bad = [m for m in ('httpx', 'click', 'rich', 'pygments') if m in sys.modules]
assert not bad, bad
"""


def test_the_window_does_not_import_an_http_client(tmp_path):
    """httpx (with the command-line modules its package imports: click, rich, pygments) costs
    the window about 20 MB; on embedded defaults nothing needs it until a webhook is sent."""
    result = subprocess.run([sys.executable, "-c", WINDOW_WITHOUT_HTTP, str(tmp_path)], cwd=ROOT,
                            timeout=120, capture_output=True, text=True,
                            env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    assert result.returncode == 0, result.stderr[-2000:]


def test_ruff_is_clean():
    ruff = Path(sys.executable).parent / "ruff"
    result = subprocess.run([str(ruff), "check", "core", "console", "panels", "tests", "bench"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
