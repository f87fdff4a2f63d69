"""`mypy --strict` over the core modules that are kept fully typed.

STRICT lists the files and packages that must stay clean. Modules they import are analysed for
their types but their own errors are not reported here (``--follow-imports=silent``): a module is
held to the strict bar once it is on the list. Settings come from ``[tool.mypy]`` in
pyproject.toml; the cache lives in ``tmp/.mypy_cache`` so later runs are incremental.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

STRICT = [
    "core/states.py",
    "core/tasks.py",
    "core/errors.py",
    "core/clock.py",
    "core/events.py",
    "core/facade.py",
    "core/orders.py",
    "core/wire.py",
    "core/store.py",
    "core/metrics.py",
    "core/dispatcher.py",
    "core/drivers/base.py",
    "core/drivers/faults.py",
    "core/drivers/simulated.py",
]


def test_strict_modules_type_check() -> None:
    missing = [p for p in STRICT if not (ROOT / p).exists()]
    assert not missing, f"STRICT names paths that do not exist: {missing}"
    cmd = [
        sys.executable,
        "-m",
        "mypy",
        "--strict",
        "--follow-imports=silent",
        "--config-file",
        str(ROOT / "pyproject.toml"),
        "--cache-dir",
        str(ROOT / "tmp" / ".mypy_cache"),
        *STRICT,
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (
        f"mypy --strict reported problems (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}"
    )
