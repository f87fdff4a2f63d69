"""The loaders' property tests with more examples: templates, workcells and cron strings.

usage: python bench/reliability/fuzz.py [--scale N]

Runs tests/test_loaders_fuzz.py with LABCONSOLE_FUZZ_SCALE=N (N times each property's
examples) and reports the examples run and the properties that failed (a traceback out of a
loader, or an error without its location, fails a property).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=10)
    args = parser.parse_args()
    env = dict(os.environ, PYTHONPATH=str(ROOT), LABCONSOLE_FUZZ_SCALE=str(args.scale))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "--hypothesis-show-statistics", "tests/test_loaders_fuzz.py"],
                          capture_output=True, text=True, env=env, cwd=ROOT)
    out = proc.stdout
    examples = sum(int(n) for n in re.findall(r"(\d+) passing(?: examples)?,", out))
    failing = sum(int(n) for n in re.findall(r"(\d+) failing(?: examples)?,", out))
    passed = int(m.group(1)) if (m := re.search(r"(\d+) passed", out)) else 0
    failed = int(m.group(1)) if (m := re.search(r"(\d+) failed", out)) else 0
    ok = proc.returncode == 0 and failed == 0
    print("RESULT " + json.dumps({"rows": [
        {"figure": f"loader property tests, {args.scale}x examples (templates, workcells, cron)",
         "value": f"{passed} passed, {failed} failed; {examples} examples, {failing} failing",
         "target": "0 failed", "ok": ok}]}))


if __name__ == "__main__":
    main()
