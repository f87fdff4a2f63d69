"""Mutation testing with mutmut: core/dispatcher.py, core/store.py, core/engine/ and
core/dataservices/link.py against their tests ([tool.mutmut] in pyproject.toml).

usage: python bench/reliability/mutation.py [--quick N] [--seed N]

Runs in a scratch copy of the working tree (mutmut writes a mutants/ folder). mutmut generates
every mutant and maps each function to the tests that run it; ``--quick N`` then checks a
seeded random sample of N mutants (0: all of them, which takes hours). Score: mutants killed
(a test failed, or it timed out) out of those checked; "no tests" mutants count as survivors.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TARGET = 0.90


def scratch_copy() -> Path:
    work = Path(tempfile.mkdtemp(prefix="labconsole-mutation-"))
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                           cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    for name in filter(None, files):
        source = ROOT / name.decode()
        if source.is_file():
            (work / name.decode()).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, work / name.decode())
    (work / "mutants").mkdir()
    if (ROOT / ".bdm-venv").exists():  # the Biosero client's venv, which some tests drive
        (work / "mutants" / ".bdm-venv").symlink_to(ROOT / ".bdm-venv")
    return work


def mutmut(work: Path, *names: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("mutmut", path=str(Path(sys.executable).parent)) or "mutmut"
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    env.pop("PYTHONPATH", None)  # the mutated copy must be what the tests import
    return subprocess.run([exe, "run", *names], cwd=work, capture_output=True, text=True, env=env)


def exit_codes(work: Path) -> dict[str, int | None]:
    codes: dict[str, int | None] = {}
    for meta in (work / "mutants").rglob("*.meta"):
        codes.update(json.loads(meta.read_text())["exit_code_by_key"])
    return codes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", type=int, default=300, help="mutants sampled (0: all)")
    parser.add_argument("--seed", type=int, default=20261127)
    args = parser.parse_args()
    from mutmut.stats import status_by_exit_code

    work = scratch_copy()
    if args.quick:
        mutmut(work, "labconsole.generate-only*")  # generates and maps tests; matches no mutant
        names = sorted(exit_codes(work))
        if not names:
            raise SystemExit("mutmut generated no mutants (see its output in " + str(work) + ")")
        chosen = random.Random(args.seed).sample(names, min(args.quick, len(names)))
    else:
        names = chosen = []
    done = mutmut(work, *chosen)
    codes = exit_codes(work)
    names = names or sorted(codes)
    checked = {n: codes.get(n) for n in (chosen or names)}
    status = Counter(status_by_exit_code[c] for c in checked.values())
    killed = status["killed"] + status["timeout"] + status["caught by type check"]
    total = sum(n for s, n in status.items() if s != "not checked")
    score = killed / total if total else 0.0
    survivors = sorted(n for n, c in checked.items() if status_by_exit_code[c] in ("survived", "no tests"))
    (work / "survivors.txt").write_text("\n".join(survivors) + "\n")
    detail = ", ".join(f"{s} {n}" for s, n in sorted(status.items()))
    sample = f"{len(chosen)} sampled of {len(names)}" if chosen else f"all {len(names)}"
    print("RESULT " + json.dumps({"status": dict(status), "survivors": str(work / "survivors.txt"),
                                  "mutmut_exit": done.returncode, "rows": [
        {"figure": f"mutation score, mutmut ({sample}; {detail})",
         "value": f"{score:.0%} ({killed}/{total})", "target": f">= {TARGET:.0%}",
         "ok": score >= TARGET and total > 0}]}))


if __name__ == "__main__":
    main()
