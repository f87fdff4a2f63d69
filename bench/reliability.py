"""The standing reliability suite: attacks the console the way a reliability engineer would and
prints one table of figures, each with the command that produced it.

usage: python bench/reliability.py [--profile full|short] [--only NAME[,NAME]] [--quick N]

Probes (each a script in bench/reliability/, run in its own process, printing ``RESULT {json}``):

* ``kill``      SIGKILL at >= 50 random points during a 1,000-run burst: acknowledged
                transitions lost, non-idempotent steps executed twice, integrity check.
* ``outage``    the Data Services server goes away in remote mode (60 s; 10 s short): orders
                lost, duplicated, time to drain the outbox once it is back.
* ``vanish``    an instrument vanishes mid-step: what happens to idempotent and non-idempotent
                steps, how long until it is declared offline.
* ``fuzz``      the loaders' property tests (tests/test_loaders_fuzz.py) with 10x (short: 2x)
                the examples: every input ends in a value or a located error.
* ``api``       schemathesis against the embedded Data Services' /openapi.json: every route,
                count of 5xx answers.
* ``attacks``   slow connections and a 200 MB body against the embedded Data Services.
* ``soak``      8 hours (short: 1 hour) of runs on the virtual clock: RSS, fds, threads and
                database size per 1,000 transitions; growth over the last half.
* ``mutation``  mutmut on core/dispatcher.py, core/store.py, core/engine/ and
                core/dataservices/link.py with their tests; the share of mutants killed
                (a seeded sample of 300 mutants; short: 20; ``--quick N`` chooses N, 0 all;
                stopped after 90 minutes, short 15, scoring what was checked by then).

The exit status is 1 if a figure misses its target.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROBES = ROOT / "bench" / "reliability"
ORDER = ["kill", "outage", "vanish", "fuzz", "api", "attacks", "soak", "mutation"]


def probe_command(name: str, profile: str, quick: int | None) -> list[str]:
    short = profile == "short"
    script = str(PROBES / f"{name}.py")
    if name == "kill":
        return [script, "--kills", "50", "--runs", "1000"]
    if name == "outage":
        return [script, "--seconds", "10" if short else "60"]
    if name == "vanish":
        return [script]
    if name == "fuzz":
        return [script, "--scale", "2" if short else "10"]
    if name == "api":
        return [script, "--examples", "5" if short else "25"]
    if name == "attacks":
        return [script, "--slow", "300" if short else "1100"]
    if name == "soak":
        return [script, "--hours", "1" if short else "8"]
    if name == "mutation":
        n = quick if quick is not None else (20 if short else 300)
        return [script, "--quick", str(n), "--budget", "900" if short else "5400"]
    raise ValueError(name)


def run_probe(name: str, argv: list[str]) -> tuple[list[dict], float, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), QT_QPA_PLATFORM="offscreen")
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, *argv], capture_output=True, text=True, env=env, cwd=ROOT)
    seconds = time.monotonic() - t0
    result = None
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            result = json.loads(line[len("RESULT "):])
    if result is None:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        return ([{"figure": f"{name}: probe failed (exit {proc.returncode})",
                  "value": " | ".join(tail)[:300], "target": "runs", "ok": False}], seconds, "")
    return result["rows"], seconds, proc.stderr


def display(argv: list[str]) -> str:
    shown = [str(Path(a).relative_to(ROOT)) if a.startswith(str(ROOT)) else a for a in argv]
    return "python " + shlex.join(shown)


def main() -> int:
    parser = argparse.ArgumentParser(description="labconsole reliability suite")
    parser.add_argument("--profile", choices=["full", "short"], default="full")
    parser.add_argument("--short", action="store_const", const="short", dest="profile",
                        help="same as --profile short (the CI profile)")
    parser.add_argument("--only", default="", help="comma-separated probes: " + ", ".join(ORDER))
    parser.add_argument("--quick", type=int, default=None, help="mutation: sample N mutants")
    args = parser.parse_args()
    names = [n for n in args.only.split(",") if n] or ORDER
    unknown = [n for n in names if n not in ORDER]
    if unknown:
        parser.error(f"unknown probe {', '.join(unknown)} (probes: {', '.join(ORDER)})")
    table: list[tuple[dict, str]] = []
    for name in names:
        argv = probe_command(name, args.profile, args.quick)
        print(f"[{name}] {display(argv)} ...", file=sys.stderr, flush=True)
        rows, seconds, _ = run_probe(name, argv)
        print(f"[{name}] {seconds:.0f} s", file=sys.stderr, flush=True)
        table += [(row, display(argv)) for row in rows]
    widths = [max(len(r["figure"]) for r, _ in table), max(len(str(r["value"])) for r, _ in table),
              max(len(str(r["target"])) for r, _ in table)]
    head = f"{'figure':<{widths[0]}}  {'value':<{widths[1]}}  {'target':<{widths[2]}}  ok    command"
    print(f"labconsole reliability ({args.profile} profile)")
    print(head)
    print("-" * len(head))
    failed = 0
    for row, command in table:
        mark = "yes" if row["ok"] else "NO"
        failed += not row["ok"]
        print(f"{row['figure']:<{widths[0]}}  {row['value']!s:<{widths[1]}}  "
              f"{row['target']!s:<{widths[2]}}  {mark:<4}  {command}")
    print(f"{len(table) - failed} of {len(table)} figures on target")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
