"""SIGKILL during a bulk cancel: every run is either fully canceled with its audit entry or
untouched — never half (core/engine/decision.py: one transaction per chunk of actions)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.orders import OrderStatus
from core.store import DB_FILENAME, Store

ROOT = Path(__file__).resolve().parent.parent
HELPER = Path(__file__).parent / "helpers" / "bulk_cancel_crash.py"
RUNS = 60


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_kill_during_bulk_cancel_leaves_each_run_whole(tmp_path, seed):
    rng = random.Random(seed)
    proc = subprocess.Popen([sys.executable, str(HELPER), str(tmp_path), str(RUNS)],
                            stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.stdout is not None
    runs: list[str] = []
    chunks = 0
    kill_after = rng.randrange(1, RUNS // 10)  # chunks committed before the kill
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if line.startswith("READY "):
            runs = line.split()[1:]
        elif line.startswith("CHUNK "):
            chunks += 1
            if chunks >= kill_after:
                time.sleep(rng.random() * 0.01)  # somewhere inside the next chunk
                break
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the child died of the SIGKILL, not of something else"
    assert len(runs) == RUNS and chunks >= kill_after

    store = Store(tmp_path / DB_FILENAME).open()
    try:
        audited = {a.target for a in store.audit_entries() if a.action == "cancel run"}
        canceled = 0
        for run_id in runs:
            statuses = {r[4] for r in store.order_rows("id = ? OR parent_id = ?", (run_id, run_id))}
            if run_id in audited:
                assert statuses == {int(OrderStatus.Canceled)}, (run_id, statuses)
                canceled += 1
            else:
                assert int(OrderStatus.Canceled) not in statuses, (run_id, statuses)
        assert canceled >= kill_after * 10, "every acknowledged chunk survived"
        assert canceled < RUNS, "the kill came before the end"
        assert store.integrity_check() == "ok"
    finally:
        store.close()
