"""SIGKILL a 1,000-run burst at random points, restart it each time, then check what survived.

usage: python bench/reliability/kill.py [--kills N] [--runs N] [--seed N]

Each cycle starts bench/reliability/kill_child.py on the same store and kills it after a random
number of acknowledged transitions or a random delay (some land during start-up and recovery);
the last cycle runs to the end. Prints one ``RESULT {json}`` line: acknowledged transitions
lost, non-idempotent steps executed twice, interrupted steps that became "outcome unknown", and
SQLite's integrity check.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHILD = Path(__file__).with_name("kill_child.py")


def cycle(db: Path, runs: int, exec_log: Path, kill_after: tuple[str, float] | None
          ) -> tuple[list[tuple[str, int, int]], int | None, bool]:
    """One child: returns (acks, returncode, finished)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, str(CHILD), str(db), str(runs), str(exec_log)],
                            stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    acks: list[tuple[str, int, int]] = []
    finished = False
    timer = None
    if kill_after is not None and kill_after[0] == "time":
        timer = threading.Timer(kill_after[1], proc.send_signal, (signal.SIGKILL,))
        timer.start()
    for line in proc.stdout:
        if line.startswith("ACK"):
            _, oid, seq, status = line.split()
            acks.append((oid, int(seq), int(status)))
            if kill_after is not None and kill_after[0] == "acks" and len(acks) >= kill_after[1]:
                proc.send_signal(signal.SIGKILL)
                kill_after = None  # read what was already printed: acknowledged too
        elif line.startswith("DONE"):
            finished = True
    returncode = proc.wait(timeout=600)
    if timer is not None:
        timer.cancel()
    return acks, returncode, finished


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=20261127)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="labconsole-kill-"))
    db, exec_log = work / "burst.sqlite3", work / "executions.log"
    acks: list[tuple[str, int, int]] = []
    killed = not_by_kill = 0
    # about 11 acknowledged transitions per run; the kills together use about 2/3 of them, so
    # they land all along the burst (every fifth kill is by time, during start-up and recovery)
    mean = max(10, 11 * args.runs // (args.kills * 3 // 2))
    t0 = time.monotonic()
    cycles = 0
    while killed < args.kills and cycles < 3 * args.kills:
        cycles += 1
        how = (("time", rng.uniform(0.2, 1.2)) if cycles % 5 == 0
               else ("acks", rng.randint(1, 2 * mean)))
        got, returncode, finished = cycle(db, args.runs, exec_log, how)
        acks += got
        if returncode == -signal.SIGKILL and not finished:
            killed += 1
        else:
            not_by_kill += 1
            if finished:
                break  # the burst is over: later kills would not land during it
    got, returncode, finished = cycle(db, args.runs, exec_log, None)
    acks += got
    seconds = time.monotonic() - t0

    conn = sqlite3.connect(db)
    integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
    logged = set(conn.execute("SELECT order_id, seq, to_status FROM transitions"))
    orders = {r[0] for r in conn.execute("SELECT id FROM orders")}
    runs = dict(Counter(r[0] for r in conn.execute("SELECT status FROM runs")))
    unknown = conn.execute("SELECT count(*) FROM step_runs WHERE status = 'unknown'").fetchone()[0]
    conn.close()
    lost = sum(1 for oid, seq, status in set(acks)
               if oid not in orders or (seq and (oid, seq, status) not in logged))
    executions: Counter[tuple[str, int]] = Counter()
    for line in exec_log.read_text().splitlines():
        _, oid, idempotent = line.split()
        executions[(oid, int(idempotent))] += 1
    twice = sum(1 for (_oid, idem), n in executions.items() if not idem and n > 1)
    rerun_idempotent = sum(n - 1 for (_oid, idem), n in executions.items() if idem and n > 1)
    result = {
        "kills": killed, "cycles_that_ended_otherwise": not_by_kill, "final_finished": finished,
        "acknowledged": len(set(acks)), "lost": lost, "non_idempotent_twice": twice,
        "idempotent_reruns": rerun_idempotent, "outcome_unknown": unknown, "runs": runs,
        "integrity": integrity, "seconds": round(seconds, 1),
    }
    result["rows"] = [
        {"figure": f"SIGKILLs during a {args.runs}-run burst", "value": f"{killed}",
         "target": f">= {args.kills}", "ok": killed >= args.kills},
        {"figure": "acknowledged transitions lost", "value": f"{lost} of {len(set(acks))}",
         "target": "0", "ok": lost == 0},
        {"figure": "non-idempotent steps executed twice", "value": f"{twice}", "target": "0",
         "ok": twice == 0},
        {"figure": "interrupted non-idempotent steps -> outcome unknown (idempotent re-runs)",
         "value": f"{unknown} ({rerun_idempotent})", "target": "info", "ok": True},
        {"figure": "integrity check after the kills", "value": integrity, "target": "ok",
         "ok": integrity == "ok" and finished},
    ]
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
