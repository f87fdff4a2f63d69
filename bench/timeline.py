"""Timeline benchmark: the Workcell timeline painting a forecast of ``--runs`` queued runs.

A forecast (16 plays) of ``--runs`` runs of a four-step template (seal, read, seal, wait) on a
sealer and ``--readers`` plate readers with jittered durations; then, offscreen at 1920x1080:
turning the forecast into bars, and painting the canvas (median of ``--repeat`` paints) with the
4-hour and the 1-hour horizon. The baseline in the same run is painting every bar whatever the
horizon (no culling of what lies outside the view).

usage: QT_QPA_PLATFORM=offscreen python bench/timeline.py [--runs 500] [--readers 2] [--repeat 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from PySide6.QtWidgets import QApplication  # noqa: E402

from core.durations_model import DurationsModel  # noqa: E402
from core.forecast import InstrumentState, RunState, Snapshot, forecast  # noqa: E402
from core.templates import template_from_dict  # noqa: E402
from core.workcell import parse_workcell  # noqa: E402
from panels import timeline  # noqa: E402

NOW = time.time()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=500)
    ap.add_argument("--readers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
    app = QApplication.instance() or QApplication([])
    readers = [f"Reader{i + 1}" for i in range(args.readers)]
    cell = parse_workcell("name: bench\nseed: 1\ninstruments:\n"
                          "  - {id: Sealer, kind: Sealer, driver: simulated, capabilities: "
                          "{Sealer.Seal: {duration: 20s, jitter: 5s}}}\n"
                          + "".join(f"  - {{id: {r}, kind: PlateReader, driver: simulated, capabilities: "
                                    "{PlateReader.ReadPlate: {duration: 60s, jitter: 10s}}}\n" for r in readers))
    template = template_from_dict({"name": "Seal read seal", "version": 1, "definition": {"steps": [
        {"id": "seal", "kind": "Sealer.Seal"},
        {"id": "read", "kind": "PlateReader.ReadPlate", "depends_on": ["seal"]},
        {"id": "reseal", "kind": "Sealer.Seal", "depends_on": ["read"]},
        {"id": "wait", "kind": "delay", "parameters": {"seconds": 30}, "depends_on": ["reseal"]}]}})
    runs = tuple(RunState(f"Order_{i:05d}", template, "running", 50, NOW + i, {}, {}) for i in range(args.runs))
    instruments = (InstrumentState("Sealer", ("Sealer.Seal",)),
                   *(InstrumentState(r, ("PlateReader.ReadPlate",)) for r in readers))
    t0 = time.perf_counter()
    result = forecast(Snapshot(NOW, runs, instruments), DurationsModel(cell), samples=16)
    made = time.perf_counter() - t0
    t0 = time.perf_counter()
    bars = timeline.bars_from(result)
    to_bars = time.perf_counter() - t0
    canvas = timeline.TimelineCanvas()
    canvas.resize(1500, 400)
    canvas.set_data(["Sealer", *readers], bars, NOW)
    last = max(b.end for b in bars)
    print(f"forecast of {args.runs} runs: {made * 1000:.0f} ms; {len(bars):,} bars, the last ending "
          f"{(last - NOW) / 3600:.1f} h ahead; forecast to bars: {to_bars * 1000:.1f} ms")

    def paint(hours: int) -> tuple[float, int]:
        canvas.hours = hours
        times = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            canvas.grab()
            times.append(time.perf_counter() - t)
        return statistics.median(times), canvas.painted_bars

    for hours in (4, 1):
        seconds, drawn = paint(hours)
        print(f"paint, next {hours} h: median {seconds * 1000:.1f} ms ({drawn:,} bars in view)")
    original = canvas.span
    canvas.span = lambda: (NOW - timeline.PAST, last + 1)  # type: ignore[method-assign]
    seconds, drawn = paint(4)
    canvas.span = original  # type: ignore[method-assign]
    print(f"baseline, every bar drawn (the whole forecast in view): median {seconds * 1000:.1f} ms ({drawn:,} bars)")
    del app
    return 0


if __name__ == "__main__":
    sys.exit(main())
