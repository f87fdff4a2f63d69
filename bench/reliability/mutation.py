"""Mutation testing with mutmut: core/dispatcher.py, core/store.py, core/engine/ and
core/dataservices/link.py against their tests ([tool.mutmut] in pyproject.toml).

usage: python bench/reliability/mutation.py [--quick N] [--seed N] [--budget SECONDS]
       [--max-children N] [--report PATH] [--keep]

Runs in a scratch copy of the working tree (mutmut writes a mutants/ folder), removed at the end
unless ``--keep``. mutmut generates every mutant and maps each function to the tests that run it;
``--quick N`` then checks a seeded random sample of N mutants (0: all of them, which takes hours).
The sample depends only on the source and the seed: the same tree and seed check the same
mutants. Score: mutants killed (a test failed, or it timed out) out of those checked; "no tests"
mutants count as survivors. The run stops at ``--budget`` seconds of wall time (mutmut's own
per-mutant limit is ``timeout_multiplier`` times the tests' clean duration); what was checked by
then is scored and the figure says how many were not. ``--report`` gets each survivor's diff.

Equivalent mutants are set aside before sampling, counted and named in the report: those that only
change the case of an SQL statement's keywords or names (SQLite reads ``SELECT`` and ``select``
alike), which no test can tell apart. A case change inside a quoted SQL value (``'Canceled'``) or in
any other string is a real mutant.
"""

from __future__ import annotations

import argparse
import ast
import copy
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TARGET = 0.90
MUTMUT = (sys.executable, "-m", "mutmut")
"""mutmut run by this interpreter (its console script keeps the path of the venv it was installed from)."""


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


def mutmut(work: Path, log: Path, budget: float, *args: str) -> tuple[int | None, bool]:
    """Run ``mutmut ARGS`` in ``work`` (output to ``log``); (exit code, whether it hit ``budget``).
    On the budget its whole process group is stopped, so no test process is left behind."""
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    env.pop("PYTHONPATH", None)  # the mutated copy must be what the tests import
    with log.open("a") as out:
        proc = subprocess.Popen([*MUTMUT, *args], cwd=work, stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
        try:
            return proc.wait(timeout=max(1.0, budget)), False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            return None, True


def exit_codes(work: Path) -> dict[str, int | None]:
    codes: dict[str, int | None] = {}
    for meta in (work / "mutants").rglob("*.meta"):
        codes.update(json.loads(meta.read_text())["exit_code_by_key"])
    return codes


SQL_START = re.compile(r"\s*(SELECT|INSERT|UPDATE|DELETE|REPLACE|CREATE|DROP|ALTER|PRAGMA|WITH|BEGIN|COMMIT|"
                       r"ROLLBACK|SAVEPOINT|RELEASE|VACUUM|ANALYZE|REINDEX|ATTACH|DETACH)\b", re.IGNORECASE)
SQL_VALUE = re.compile(r"'(?:[^']|'')*'")
"""A quoted value inside an SQL statement: its case matters."""


def sql_case_blind(text: str) -> str:
    """An SQL statement as SQLite compares it: keywords and names in any case, quoted values as written."""
    if not SQL_START.match(text):
        return text
    out, at = [], 0
    for value in SQL_VALUE.finditer(text):
        out += [text[at:value.start()].lower(), value.group()]
        at = value.end()
    return "".join([*out, text[at:].lower()])


class _SqlCaseBlind(ast.NodeTransformer):
    def visit_Constant(self, node: ast.Constant) -> ast.Constant:
        return ast.Constant(sql_case_blind(node.value)) if isinstance(node.value, str) else node


def _shape(fn: ast.FunctionDef | ast.AsyncFunctionDef, *, blind: bool) -> str:
    body = ast.Module(body=copy.deepcopy(fn.body), type_ignores=[])
    return ast.dump(_SqlCaseBlind().visit(body) if blind else body)


def equivalent_mutants(work: Path, names: Iterable[str]) -> set[str]:
    """The mutants among ``names`` whose function differs from its original only in the case of an
    SQL statement (see the module's docstring). A name is ``module.function__mutmut_N``; the mutated
    module in ``work/mutants`` holds each mutant and the ``__mutmut_orig`` copy it was made from."""
    by_module: dict[str, list[str]] = {}
    for name in names:
        module, _, function = name.partition(".x")
        by_module.setdefault(module, []).append("x" + function)
    found: set[str] = set()
    for module, functions in by_module.items():
        path = work / "mutants" / Path(*module.split(".")).with_suffix(".py")
        if not path.is_file():
            continue
        defs = {node.name: node for node in ast.walk(ast.parse(path.read_text()))
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)}
        for function in functions:
            mutant, orig = defs.get(function), defs.get(re.sub(r"__mutmut_\d+$", "__mutmut_orig", function))
            if mutant is None or orig is None:
                continue
            if (_shape(mutant, blind=False) != _shape(orig, blind=False)
                    and _shape(mutant, blind=True) == _shape(orig, blind=True)):
                found.add(f"{module}.{function}")
    return found


def module_of(name: str) -> str:
    """``core.engine.control.xǁOperatorControlǁ_plan__mutmut_3`` -> ``core/engine``."""
    path = name.split(".x")[0].split(".")
    return "/".join(path[:2]) if path[1] == "engine" else "/".join(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", type=int, default=300, help="mutants sampled (0: all)")
    parser.add_argument("--seed", type=int, default=20261127)
    parser.add_argument("--budget", type=float, default=3600.0, help="seconds of wall time, at most")
    parser.add_argument("--max-children", type=int, default=2, help="mutants tested at once")
    parser.add_argument("--report", type=Path, default=Path(tempfile.gettempdir()) / "labconsole-mutation-report.txt",
                        help="where each survivor's diff is written")
    parser.add_argument("--keep", action="store_true", help="keep the scratch copy")
    args = parser.parse_args()
    from mutmut.stats import status_by_exit_code

    started = time.monotonic()
    work = scratch_copy()
    log = work / "mutmut.log"
    try:
        left = lambda: args.budget - (time.monotonic() - started)  # noqa: E731
        names: list[str] = []
        chosen: list[str] = []
        equivalent: set[str] = set()
        if args.quick:
            # generates the mutants and maps tests to functions; the name matches no mutant
            mutmut(work, log, left(), "run", "labconsole.generate-only*")
            names = sorted(exit_codes(work))
            if not names:
                fail(f"mutmut generated no mutants ({log_tail(log)})")
            equivalent = equivalent_mutants(work, names)
            names = [n for n in names if n not in equivalent]
            chosen = random.Random(args.seed).sample(names, min(args.quick, len(names)))
        code, stopped = mutmut(work, log, left(), "run", "--max-children", str(args.max_children), *chosen)
        codes = exit_codes(work)
        names = names or sorted(codes)
        checked = {n: codes.get(n) for n in (chosen or names)}
        status = Counter(status_by_exit_code[c] for c in checked.values())
        killed = status["killed"] + status["timeout"] + status["caught by type check"]
        total = sum(n for s, n in status.items() if s != "not checked")
        if total == 0:
            fail(f"mutmut checked no mutant (exit {code}{', budget reached' if stopped else ''}): {log_tail(log)}")
        score = killed / total
        survivors = sorted(n for n, c in checked.items() if status_by_exit_code[c] in ("survived", "no tests"))
        write_report(work, log, args.report, survivors, checked, status_by_exit_code, equivalent)
        detail = ", ".join(f"{s} {n}" for s, n in sorted(status.items()))
        sample = f"{len(chosen)} sampled of {len(names)}, seed {args.seed}" if chosen else f"all {len(names)}"
        if equivalent:
            sample += f"; {len(equivalent)} equivalent set aside (SQL in another case)"
        if stopped:
            detail += f"; stopped at the {args.budget:g} s budget"
        rows = [{"figure": f"mutation score, mutmut ({sample}; {detail})",
                 "value": f"{score:.0%} ({killed}/{total})", "target": f">= {TARGET:.0%}",
                 "ok": score >= TARGET and not stopped}]
        by_module: dict[str, Counter[str]] = {}
        for n, c in checked.items():
            by_module.setdefault(module_of(n), Counter())[status_by_exit_code[c]] += 1
        for module, counts in sorted(by_module.items()):
            done = sum(v for k, v in counts.items() if k != "not checked")
            dead = counts["killed"] + counts["timeout"] + counts["caught by type check"]
            rows.append({"figure": f"  of which {module}", "value": f"{dead}/{done}", "target": "", "ok": True})
        print("RESULT " + json.dumps({"status": dict(status), "report": str(args.report), "mutmut_exit": code,
                                      "seconds": round(time.monotonic() - started), "rows": rows}))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def fail(message: str) -> None:
    print("RESULT " + json.dumps({"rows": [{"figure": "mutation score, mutmut: probe failed", "value": message[:300],
                                            "target": f">= {TARGET:.0%}", "ok": False}]}))
    raise SystemExit(1)


def log_tail(log: Path, lines: int = 3) -> str:
    text = log.read_text(errors="replace") if log.exists() else ""
    spinner = {chr(c) for c in range(0x2800, 0x2900)}  # mutmut's progress spinner (Braille patterns)
    useful = [t.strip() for t in text.replace("\r", "\n").splitlines() if t.strip() and t.strip()[0] not in spinner]
    return " | ".join(useful[-lines:])


def write_report(work: Path, log: Path, report: Path, survivors: list[str], checked: dict[str, int | None],
                 status_by_exit_code: dict[int | None, str], equivalent: set[str]) -> None:
    parts = [f"{len(survivors)} survivors of {len(checked)} sampled mutants\n"]
    for name in survivors:
        shown = subprocess.run([*MUTMUT, "show", name], cwd=work, capture_output=True, text=True,
                               env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
        parts.append(shown.stdout or f"# {name}: {status_by_exit_code[checked[name]]}\n")
    parts.append("\nsampled: " + ", ".join(f"{n} {status_by_exit_code[c]}" for n, c in sorted(checked.items())) + "\n")
    parts.append(f"\nset aside as equivalent (SQL in another case), {len(equivalent)}: "
                 + ", ".join(sorted(equivalent)) + "\n")
    report.write_text("\n".join(parts))


if __name__ == "__main__":
    main()
