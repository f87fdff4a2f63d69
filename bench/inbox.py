"""Inbox benchmark: a bad night — 10,000 runs each waiting at a prompt — offscreen, on the qasync loop.

Measures:

- **setup**: the runs created and started (each a real run whose prompt opened an inbox item).
- **panel ready**: the Inbox panel built over the 10,000 open items, shown and painted.
- **filter**: free text that matches one run, free text that matches every item, and a kind.
- **answer one**: one item answered through the inbox: commits it took (answer, the step's
  outputs, the audit entry and the run's completion share one) and the time.
- **impact preview** of a bulk cancel over the 10,000 runs, with the event-loop lag meanwhile
  (an ``await asyncio.sleep(0.005)`` probe: p50 / p99 / max).

usage: QT_QPA_PLATFORM=offscreen python bench/inbox.py [--runs 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import PySide6  # noqa: E402, F401 - the binding, before qasync looks for one
import qasync  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from console.bridge import EventBridge  # noqa: E402
from core.impact import preview  # noqa: E402
from core.inbox import Inbox, InboxChanged  # noqa: E402
from core.runtime import Runtime  # noqa: E402
from core.templates import template_from_dict  # noqa: E402
from panels.inbox import InboxPanel  # noqa: E402
from panels.widgets import LoopLagProbe  # noqa: E402

TEMPLATE = {"name": "Night check", "definition": {"steps": [
    {"id": "check", "kind": "prompt", "parameters": {"message": "Check the plate in the hotel", "fields": [
        {"name": "volume", "type": "number", "unit": "µL", "min": 1, "max": 200},
        {"name": "plate", "type": "barcode"}, {"name": "ok", "type": "yesno"}]}}]}}


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


async def main(args: argparse.Namespace) -> None:
    data = Path(tempfile.mkdtemp(prefix="bench-inbox-"))
    runtime = Runtime.build(data, workcell=None, metrics=False)
    await runtime.start(templates_dir=None)
    await runtime.engine.publish(template_from_dict(TEMPLATE))
    inbox = Inbox.of(runtime)
    engine = runtime.engine
    t0 = time.perf_counter()
    run_ids: list[str] = []
    for i in range(0, args.runs, 200):
        batch = await asyncio.gather(*(engine.create_instance("Night check", {}, who="night", allow_duplicate=True)
                                       for _ in range(min(200, args.runs - i))))
        run_ids += batch
        await asyncio.gather(*(engine.execute_workflow(r) for r in batch))
    while inbox.counts()[0] < args.runs:
        await runtime.ledger.bus.next_event(InboxChanged, timeout=60)
    print(f"setup: {args.runs:,} runs waiting at a prompt in {time.perf_counter() - t0:.1f} s")

    bridge = EventBridge(runtime.ledger.bus)
    t = time.perf_counter()
    panel = InboxPanel(runtime, bridge)
    panel.resize(1280, 720)
    panel.show()
    panel.repaint()
    ready = time.perf_counter() - t
    print(f"panel ready: {ms(ready)} for {len(panel.model.rows):,} open items (target ≤ 200 ms)")

    timings = {}
    for label, action in (("one run", lambda: panel.search.setText(run_ids[args.runs // 2])),
                          ("every item", lambda: panel.search.setText("hotel")),
                          ("clear", lambda: panel.search.setText("")),
                          ("kind", lambda: panel.kind_box.setCurrentIndex(panel.kind_box.findData("prompt")))):
        t = time.perf_counter()
        action()
        panel.table.viewport().repaint()
        timings[label] = time.perf_counter() - t
    print("filter: " + ", ".join(f"{k} {ms(v)}" for k, v in timings.items()) + " (target ≤ 50 ms)")

    item = inbox.items(limit=1)[0]
    before = runtime.store.commit_count
    t = time.perf_counter()
    await inbox.answer(item.id, {"volume": 50, "plate": "PL-1", "ok": "yes"}, who="bench")
    took = time.perf_counter() - t
    print(f"answer one: {runtime.store.commit_count - before} commit(s), {ms(took)} (target 1 commit)")

    probe = LoopLagProbe()
    probe.start()
    await asyncio.sleep(0.3)
    probe.record_all()
    t = time.perf_counter()
    impact = await preview(runtime.store, "cancel", run_ids)
    took = time.perf_counter() - t
    await asyncio.sleep(0.05)
    lags = sorted(probe.stop_recording())
    probe.stop()
    p50 = statistics.median(lags) if lags else 0.0
    p99 = lags[min(len(lags) - 1, int(len(lags) * 0.99))] if lags else 0.0
    print(f"impact preview, bulk cancel of {len(run_ids):,} runs: {ms(took)} (target ≤ 500 ms); "
          f"{impact.summary()}")
    print(f"loop lag meanwhile: p50 {ms(p50)}, p99 {ms(p99)}, max {ms(lags[-1] if lags else 0.0)} "
          f"over {len(lags)} samples (target p99 ≤ 16 ms)")
    panel.shutdown()
    panel.close()
    bridge.close()
    await runtime.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10_000)
    app = QApplication.instance() or QApplication(sys.argv)
    app.setQuitOnLastWindowClosed(False)
    with asyncio.Runner(loop_factory=lambda: qasync.QEventLoop(app)) as runner:
        runner.run(main(parser.parse_args()))
