"""Rehearsal numbers against a case small enough to compute by hand."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.errors import InputError
from core.rehearsal import rehearse
from core.workcell import parse_workcell

ROOT = Path(__file__).resolve().parent.parent
CELL = """
name: one sealer
seed: 1
instruments:
  - {id: Sealer1, kind: Sealer, driver: simulated, capabilities: {Sealer.Seal: {duration: 10s, jitter: 0s}}}
  - {id: Arm1, kind: RobotArm, driver: simulated, capabilities: {RobotArm.MovePlate: {duration: 5s, jitter: 0s}}}
"""
TEMPLATE = """name: Seal one
definition:
  steps:
    - {id: move, kind: RobotArm.MovePlate}
    - {id: seal, kind: Sealer.Seal, depends_on: [move]}
"""


def test_hand_computed_small_case(tmp_path):
    """Three runs of move (5 s, one arm) then seal (10 s, one sealer).

    Arm: moves at 0-5, 5-10, 10-15. Sealer: 5-15, 15-25, 25-35. Makespan 35 s.
    Waits (queued -> running): moves 0, 5, 10; seals 0 (5->5), 5 (10->15), 10 (15->25).
    Mean wait 30/6 = 5 s, max 10 s. Utilisation: arm 15/35, sealer 30/35. Throughput 3/35 s.
    """
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "seal.yaml").write_text(TEMPLATE)
    report = asyncio.run(rehearse(parse_workcell(CELL), tmp_path / "t", 3, speed="max", data_dir=tmp_path))
    assert report.completed == 3 and report.failed == 0
    assert report.makespan == pytest.approx(35.0, abs=0.01)
    assert sorted(round(w, 3) for w in report.waits) == [0, 0, 5, 5, 10, 10]
    assert report.mean_wait == pytest.approx(5.0) and report.max_wait == pytest.approx(10.0)
    assert report.utilisation["Arm1"] == pytest.approx(15 / 35, abs=1e-3)
    assert report.utilisation["Sealer1"] == pytest.approx(30 / 35, abs=1e-3)
    assert report.throughput_per_hour == pytest.approx(3 / 35 * 3600, rel=1e-3)
    assert "Sealer1" in report.render() and "runs/hour" in report.render()


def test_faults_count_failures_and_recoveries(tmp_path):
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "seal.yaml").write_text(TEMPLATE.replace(
        "kind: Sealer.Seal, depends_on: [move]", "kind: Sealer.Seal, depends_on: [move], "
        "retry_policy: {max_attempts: 3, initial_interval: 1, jitter: 0}"))
    report = asyncio.run(rehearse(parse_workcell(CELL), tmp_path / "t", 4, speed="max", data_dir=tmp_path,
                                  faults="fail_next@Sealer1=2"))
    assert report.completed == 4
    # two seal attempts failed; each failed seal succeeded on a retry (one step twice, or two once)
    assert report.step_failures == 2 and 1 <= report.recoveries <= 2


def test_required_inputs_get_stand_in_values_and_bad_counts_are_refused(tmp_path):
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "x.yaml").write_text("name: X\ninputs: [{name: plate, type: string}, {name: n, type: integer}]\n"
                                           "definition:\n  steps: [{id: a, kind: noop}]\n")
    report = asyncio.run(rehearse(parse_workcell(CELL), tmp_path / "t", 2, data_dir=tmp_path))
    assert report.completed == 2
    with pytest.raises(InputError, match="--orders must be at least 1"):
        asyncio.run(rehearse(parse_workcell(CELL), tmp_path / "t", 0, data_dir=tmp_path))


def test_command_line(tmp_path):
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "seal.yaml").write_text(TEMPLATE)
    (tmp_path / "cell.yaml").write_text(CELL)
    result = subprocess.run([sys.executable, "-m", "console", "rehearse", "--workcell", str(tmp_path / "cell.yaml"),
                             "--templates", str(tmp_path / "t"), "--orders", "3", "--speed", "max"],
                            capture_output=True, text=True, timeout=120, cwd=ROOT,
                            env=dict(os.environ, PYTHONPATH=str(ROOT), LABCONSOLE_DATA_DIR=str(tmp_path / "d")))
    assert result.returncode == 0, result.stderr
    assert "rehearsal: 3 orders in 0:00:35 of workcell time" in result.stdout
    bad = subprocess.run([sys.executable, "-m", "console", "rehearse", "--workcell", str(tmp_path / "cell.yaml"),
                          "--templates", str(tmp_path / "t"), "--orders", "3", "--faults", "rate=lots"],
                         capture_output=True, text=True, timeout=120, cwd=ROOT,
                         env=dict(os.environ, PYTHONPATH=str(ROOT), LABCONSOLE_DATA_DIR=str(tmp_path / "d")))
    assert bad.returncode == 2 and "rate=lots" in bad.stderr
