"""Memory of the Jobs table model under a stream of order changes: does RSS grow without bound?

The model (:class:`panels.jobs_model.OrdersTableModel`) behind a shown ``QTableView``, offscreen,
is loaded with ``--orders`` orders (runs of 1-4 steps), then fed frames of changes as the
console's event bridge delivers them (``model.apply`` with changed rows, ``apply_progress`` with
progress reports), painted after each frame. Two phases:

* **steady**: only existing orders change (status, priority, details with a counter in them,
  assignment), so the data the model must keep is constant: any growth is a leak.
* **arrivals**: new runs arrive as well; growth per 1,000 new orders is what one order costs.

Sampled every ``--every`` frames: RSS (``/proc/self/statm``), Python allocated blocks
(``sys.getallocatedblocks``), objects tracked by the collector, and with ``--trace`` the top
allocation sites growing between the middle and the end (tracemalloc; slower).

usage: QT_QPA_PLATFORM=offscreen python bench/jobs_rss.py [--orders 20000] [--frames 3000]
       [--changes 50] [--every 250] [--arrivals 0] [--trace] [--no-view]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import sys
import time
import tracemalloc
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from PySide6.QtWidgets import QApplication, QTableView  # noqa: E402

from core.orders import OrderPriority, OrderStatus  # noqa: E402
from panels.jobs_filter import ID, PARENT, STATUS  # noqa: E402
from panels.jobs_model import OrdersTableModel  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE")
NOW = time.time()
LIVE = [OrderStatus.Created, OrderStatus.Scheduled, OrderStatus.Running, OrderStatus.Paused]
DONE = [OrderStatus.Complete, OrderStatus.Error, OrderStatus.Canceled]
TEMPLATES = ["ELISA Readout", "Cell Passage", "PlateReader.ReadPlate", "Sealer.Seal"]
INSTRUMENTS = [None, "Reader 1", "Reader 2", "Sealer", "Arm"]


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE / 2**20


def row(rng: random.Random, oid: str, parent: str | None, n: int) -> tuple:
    status = rng.choice(LIVE + DONE)
    started = NOW - rng.uniform(0, 3600) if status is not OrderStatus.Created else None
    ended = started + rng.uniform(1, 600) if started and status in DONE else None
    details = rng.choice([None, f"retrying in {n % 60} s (attempt {n % 5 + 1})", f"waiting for {rng.choice(INSTRUMENTS)}"])
    return (oid, parent, rng.choice(TEMPLATES), "1", int(status),
            int(rng.choice([OrderPriority.Elevated, OrderPriority.Standard])), rng.choice([20, 50, 80, 95]),
            rng.choice(INSTRUMENTS), NOW - rng.uniform(0, 86400), started, ended, details)


def runs(rng: random.Random, first: int, count: int) -> list[tuple]:
    out, n = [], first
    for _ in range(count):
        run = f"Order_{n:07d}"
        out.append(row(rng, run, None, n))
        n += 1
        for _ in range(rng.randint(1, 4)):
            out.append(row(rng, f"Order_{n:07d}", run, n))
            n += 1
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=20_000)
    parser.add_argument("--frames", type=int, default=3000)
    parser.add_argument("--changes", type=int, default=50, help="changed rows per frame")
    parser.add_argument("--every", type=int, default=250, help="frames between samples")
    parser.add_argument("--arrivals", type=int, default=0, help="new runs per frame (0: steady phase)")
    parser.add_argument("--trace", action="store_true", help="tracemalloc: top growing allocation sites")
    parser.add_argument("--no-view", action="store_true", help="the model alone, no QTableView")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    app = QApplication.instance() or QApplication([])
    model = OrdersTableModel(now=lambda: NOW)
    rows = runs(rng, 1, max(1, args.orders // 3))
    model.reset(rows)
    view = None
    if not args.no_view:
        view = QTableView()
        view.setModel(model)
        view.resize(1400, 900)
        view.show()
    app.processEvents()
    ids = [r[ID] for r in rows]
    current = {r[ID]: r for r in rows}
    next_id = len(rows) + 1
    gc.collect()
    samples = []
    if args.trace:
        tracemalloc.start(12)
    snapshots = {}
    for frame in range(args.frames + 1):
        if frame % args.every == 0:
            gc.collect()
            app.processEvents()
            samples.append({"frame": frame, "orders": len(current), "rss_mb": round(rss_mb(), 1),
                            "blocks": sys.getallocatedblocks(), "gc_objects": len(gc.get_objects())})
            if args.trace and frame in (args.frames // 2 // args.every * args.every, args.frames):
                snapshots[frame] = tracemalloc.take_snapshot()
        if frame == args.frames:
            break
        changed = {}
        for oid in rng.sample(ids, min(args.changes, len(ids))):
            old = current[oid]
            new = row(rng, oid, old[PARENT], frame * 1000 + rng.randrange(1000))
            changed[oid] = new
            current[oid] = new
        if args.arrivals:
            fresh = runs(rng, next_id, args.arrivals)
            next_id += len(fresh)
            for r in fresh:
                changed[r[ID]] = r
                current[r[ID]] = r
                ids.append(r[ID])
        model.apply(changed)
        running = [oid for oid, r in changed.items() if r[STATUS] == int(OrderStatus.Running)]
        model.apply_progress({oid: rng.random() for oid in running})
        if view is not None:
            view.viewport().repaint()
        app.processEvents()
    first, mid, last = samples[0], samples[len(samples) // 2], samples[-1]
    transitions = args.frames * args.changes
    result = {
        "orders": [first["orders"], last["orders"]], "frames": args.frames, "changes_per_frame": args.changes,
        "view": view is not None,
        "rss_mb": [s["rss_mb"] for s in samples],
        "rss_growth_mb_per_1000_changes_last_half": round(
            (last["rss_mb"] - mid["rss_mb"]) / max(1, (last["frame"] - mid["frame"]) * args.changes) * 1000, 3),
        "blocks_growth_last_half": last["blocks"] - mid["blocks"],
        "gc_objects_growth_last_half": last["gc_objects"] - mid["gc_objects"],
        "transitions": transitions,
    }
    if snapshots:
        a, b = sorted(snapshots)
        stats = snapshots[b].compare_to(snapshots[a], "traceback")[:5]
        result["top_growth"] = [{"kib": round(s.size_diff / 1024, 1), "count": s.count_diff,
                                 "where": [f"{f.filename.replace(str(ROOT) + '/', '')}:{f.lineno}"
                                           for f in s.traceback[:4]]} for s in stats]
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
