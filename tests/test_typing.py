"""`mypy --strict` over the modules that are kept fully typed: core, console and panels.

STRICT lists the files and packages that must stay clean (panels/ file by file: the Jobs panel's
four files are not on it yet). Modules they import are analysed for their types but their own
errors are not reported here (``--follow-imports=silent``): a module is held to the strict bar
once it is on the list. Settings come from ``[tool.mypy]`` in pyproject.toml. The run keeps its
own cache, ``tmp/.mypy_cache_strict``, so later runs are incremental: mypy replays a cached
module's errors even where that module is only followed, so the cache of full ``mypy core/``
runs (``tmp/.mypy_cache``) would report modules not listed here.
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
    "core/ledger.py",
    "core/api.py",
    "console",
    "panels/__init__.py",
    "panels/actions.py",
    "panels/base.py",
    "panels/charts.py",
    "panels/dashboard.py",
    "panels/detail.py",
    "panels/detail_steps.py",
    "panels/detail_tables.py",
    "panels/dialogs.py",
    "panels/help.py",
    "panels/inbox.py",
    "panels/instrument_detail.py",
    "panels/login.py",
    "panels/metrics.py",
    "panels/palette.py",
    "panels/playbook.py",
    "panels/robots.py",
    "panels/schedules.py",
    "panels/signature.py",
    "panels/style.py",
    "panels/templates.py",
    "panels/theme.py",
    "panels/widgets.py",
    "panels/editor",
    "core/orders.py",
    "core/wire.py",
    "core/store.py",
    "core/metrics.py",
    "core/dispatcher.py",
    "core/backup.py",
    "core/runtime.py",
    "core/rehearsal.py",
    "core/drivers/base.py",
    "core/drivers/faults.py",
    "core/drivers/simulated.py",
    "core/dataservices/",
    "core/headless.py",
    "core/prometheus.py",
    "core/engine",
    "core/templates.py",
    "core/sourcemap.py",
    "core/conditions.py",
    "core/instruments.py",
    "core/workcell.py",
    "core/durations.py",
    "core/demo.py",
    "core/inifile.py",
    "core/compat",
    "core/schedules.py",
    "core/drivers/agent.py",
    "core/agent_client.py",
    "core/history.py",
    "core/archive.py",
    "core/audit_chain.py",
    "core/users.py",
    "core/inbox.py",
    "core/playbook.py",
    "core/impact.py",
    "core/notify.py",
    "core/forecast.py",
    "core/windows.py",
    "core/durations_model.py",
    "core/pysteps.py",
    "core/storefile.py",
    "core/drivers/pylabrobot.py",
    "core/drivers/madsci.py",
    "panels/jobs.py",
    "panels/jobs_model.py",
    "panels/jobs_filter.py",
    "panels/jobs_filterbar.py",
    "core/drivers/sila.py",
    "core/drivers/sila_sim.py",
    "core/__init__.py",
    "core/drivers/__init__.py",
    "core/drivers/agent_protocol.py",
    "core/gcpolicy.py",
    "core/template_diff.py",
    "panels/identity.py",
    "core/timetravel.py",
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
        str(ROOT / "tmp" / ".mypy_cache_strict"),
        *STRICT,
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (
        f"mypy --strict reported problems (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}"
    )
