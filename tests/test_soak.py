"""Proves the PySide6 pin: 50,000 of each kind of Python callback on the qasync loop."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import PySide6

HELPER = Path(__file__).parent / "helpers" / "soak.py"


def test_pinned_versions():
    assert PySide6.__version__ == "6.11.3", "6.12.0 aborts on Python 3.11 (none_dealloc)"
    assert version("qasync") == "0.28.0"


def test_fifty_thousand_callbacks_of_each_kind_run_cleanly():
    n = 50_000
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    result = subprocess.run([sys.executable, str(HELPER), str(n)], capture_output=True, text=True,
                            timeout=300, env=env)
    assert result.returncode == 0, f"soak crashed ({result.returncode}): {result.stderr[-2000:]}"
    assert f"slots={n} timers={n} asyncio={n}" in result.stdout
