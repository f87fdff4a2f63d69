"""SIGKILL a writer mid-burst: every acknowledged transition survives, the file stays sound."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.store import Store

HELPER = Path(__file__).parent / "helpers" / "burst_writer.py"
ROOT = Path(__file__).resolve().parent.parent


def _run_and_kill(db: Path, kill_after_acks: int, group: bool) -> list[tuple[str, int, int]]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, str(HELPER), str(db), "100000", "1" if group else "0"],
                            stdout=subprocess.PIPE, text=True, env=env)
    acks = []
    deadline = time.monotonic() + 60
    assert proc.stdout is not None
    while len(acks) < kill_after_acks and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if line.startswith("ACK"):
            _, oid, seq, status = line.split()
            acks.append((oid, int(seq), int(status)))
    proc.send_signal(signal.SIGKILL)
    # Anything already printed was acknowledged too: read it before the pipe closes.
    rest = proc.stdout.read()
    returncode = proc.wait()
    # the child died of the SIGKILL mid-burst, not of an error or by finishing first
    assert returncode == -signal.SIGKILL, f"writer exited with {returncode}, not by SIGKILL"
    assert "DONE" not in rest, "the writer finished before the kill"
    for line in rest.splitlines():
        if line.startswith("ACK"):
            _, oid, seq, status = line.split()
            acks.append((oid, int(seq), int(status)))
    return acks


@pytest.mark.parametrize("group", [True, False], ids=["group-commit", "commit-each"])
def test_acknowledged_transitions_survive_sigkill(tmp_path, group):
    rng = random.Random(20261123 + group)
    for attempt in range(4):
        db = tmp_path / f"kill-{attempt}.sqlite3"
        acks = _run_and_kill(db, rng.randint(5, 400), group)
        assert acks, "the child acknowledged nothing"
        conn = sqlite3.connect(db)
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        logged = {(r[0], r[1], r[2]) for r in conn.execute(
            "SELECT order_id, seq, to_status FROM transitions")}
        orders = {r[0]: r[1] for r in conn.execute("SELECT id, status FROM orders")}
        conn.close()
        for oid, seq, status in acks:
            assert oid in orders, f"acknowledged order {oid} lost (kill {attempt})"
            if seq:
                assert (oid, seq, status) in logged, f"acknowledged transition {seq} lost"
        # and the store reopens cleanly after the crash
        with Store(db).open() as store:
            assert store.integrity_check() == "ok"
