"""Soak: hours of runs on the virtual clock, resources sampled per 1,000 transitions.

usage: python bench/reliability/soak.py [--hours H] [--interval S] [--trace N]

The demo workcell (simulated instruments, metrics on) runs a four-step workflow started every S
virtual seconds for H virtual hours, as fast as the machine allows. Every 1,000 order
transitions it samples the process's RSS, open file descriptors, threads and the database size
(file + WAL). Plateau: RSS, fds and threads grow by at most 5 % over the last half of the soak
(the database grows with the data it keeps, by design). ``--trace N`` prints the N allocation
sites (tracemalloc) that grew most over the last half.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import tempfile
import threading
import tracemalloc
from pathlib import Path

from core.clock import VirtualClock
from core.events import OrderCreated, OrderStatusChanged
from core.runtime import Runtime
from core.store import DB_FILENAME, Store
from core.templates import template_from_dict
from core.workcell import parse_workcell

CELL = """
name: soak cell
seed: 7
heartbeat_interval: 5s
stale_timeout: 30s
instruments:
  - {id: LiquidHandler1, kind: LiquidHandler, driver: simulated, capabilities: {LiquidHandler.Transfer: {duration: 3s, jitter: 10%}}}
  - {id: Reader1, kind: PlateReader, driver: simulated, capabilities: {PlateReader.ReadPlate: {duration: 4s, jitter: 10%}}}
  - {id: Reader2, kind: PlateReader, driver: simulated, capabilities: {PlateReader.ReadPlate: {duration: 4s, jitter: 10%}}}
  - {id: Arm, kind: RobotArm, driver: simulated, capabilities: {RobotArm.MovePlate: {duration: 1s, jitter: 0s}}}
  - {id: Sealer1, kind: Sealer, driver: simulated, capabilities: {Sealer.Seal: {duration: 2s, jitter: 0s}}}
"""
TEMPLATE = {"name": "Soak", "definition": {"steps": [
    {"id": "transfer", "kind": "LiquidHandler.Transfer", "idempotent": True},
    {"id": "move", "kind": "RobotArm.MovePlate", "depends_on": ["transfer"], "idempotent": True},
    {"id": "read", "kind": "PlateReader.ReadPlate", "depends_on": ["move"]},
    {"id": "seal", "kind": "Sealer.Seal", "depends_on": ["read"]},
]}}


def proc_status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def sample(db: Path, transitions: int) -> dict[str, float]:
    gc.collect()
    wal = db.with_name(db.name + "-wal")
    return {"transitions": transitions, "rss_mb": proc_status("VmRSS") / 1024,
            "fds": len(os.listdir("/proc/self/fd")), "threads": threading.active_count(),
            "os_threads": proc_status("Threads"),
            "db_mb": (db.stat().st_size + (wal.stat().st_size if wal.exists() else 0)) / 2**20}


def growth(samples: list[dict[str, float]], key: str) -> float:
    """Relative growth of ``key`` over the last half of the samples."""
    half = samples[len(samples) // 2:]
    start, end = half[0][key], half[-1][key]
    return (end - start) / start if start else 0.0


def per_thousand(samples: list[dict[str, float]], key: str) -> float:
    half = samples[len(samples) // 2:]
    span = half[-1]["transitions"] - half[0]["transitions"]
    return (half[-1][key] - half[0][key]) / span * 1000 if span else 0.0


async def soak(hours: float, interval: float, trace: int) -> dict:
    work = Path(tempfile.mkdtemp(prefix="labconsole-soak-"))
    db = work / DB_FILENAME
    store = Store(db).open()
    clock = VirtualClock.for_store(store)
    rt = Runtime.build(work, clock=clock, store=store, workcell=parse_workcell(CELL, "soak.yaml"))
    await rt.start(templates_dir=None)
    await rt.engine.publish(template_from_dict(TEMPLATE))
    transitions = 0
    samples: list[dict[str, float]] = []
    next_sample = 1000

    def count(_event: object) -> None:
        nonlocal transitions
        transitions += 1

    rt.ledger.bus.subscribe(count, (OrderCreated, OrderStatusChanged))
    end = clock.now() + hours * 3600
    snapshots = []
    while clock.now() < end:
        await rt.start_run("Soak", who="soak", allow_duplicate=True)
        await clock.advance(interval)
        if transitions >= next_sample:
            samples.append(sample(db, transitions))
            next_sample += 1000
            if trace and len(samples) in (2, 1 + (int(hours * 3600 / interval) * 20 // 1000) // 2):
                snapshots.append(tracemalloc.take_snapshot())
    await clock.advance(600)  # let the last runs finish
    runs = rt.store.read_sync(lambda c: dict(c.execute(
        "SELECT status, count(*) FROM runs GROUP BY status").fetchall()))
    await rt.close()
    store.close()
    top = []
    if trace and len(snapshots) >= 1:
        last = tracemalloc.take_snapshot()
        for stat in last.compare_to(snapshots[-1], "lineno")[:trace]:
            top.append(str(stat))
    return {"samples": samples, "runs": runs, "transitions": transitions, "top": top}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=8.0)
    parser.add_argument("--interval", type=float, default=6.0, help="virtual seconds between runs")
    parser.add_argument("--trace", type=int, default=0)
    args = parser.parse_args()
    if args.trace:
        tracemalloc.start(10)
    result = asyncio.run(soak(args.hours, args.interval, args.trace))
    samples = result["samples"]
    for line in result["top"]:
        print(line)
    if len(samples) < 4:
        rows = [{"figure": "soak", "value": f"{len(samples)} samples", "target": ">= 4 samples", "ok": False}]
    else:
        first, last = samples[0], samples[-1]
        g = {k: growth(samples, k) for k in ("rss_mb", "fds", "threads", "db_mb")}
        rows = [
            {"figure": f"soak {args.hours:g} h virtual, {result['transitions']} transitions: RSS "
                       "first -> last (growth over last half, per 1,000)",
             "value": f"{first['rss_mb']:.0f} -> {last['rss_mb']:.0f} MB ({g['rss_mb']:+.1%}, "
                      f"{per_thousand(samples, 'rss_mb'):+.2f} MB)",
             "target": "<= +5 %", "ok": g["rss_mb"] <= 0.05},
            {"figure": "soak: open fds, threads (growth over last half)",
             "value": f"{first['fds']} -> {last['fds']} ({g['fds']:+.0%}), {first['threads']} -> "
                      f"{last['threads']} ({g['threads']:+.0%})",
             "target": "<= +5 %", "ok": g["fds"] <= 0.05 and g["threads"] <= 0.05},
            {"figure": "soak: database size (per 1,000 transitions, last half)",
             "value": f"{first['db_mb']:.1f} -> {last['db_mb']:.1f} MB "
                      f"({per_thousand(samples, 'db_mb'):.2f} MB)",
             "target": "info (the data is kept)", "ok": True},
        ]
    print("RESULT " + json.dumps({"samples": samples, "runs": result["runs"], "rows": rows}))


if __name__ == "__main__":
    main()
