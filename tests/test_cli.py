"""The headless command line against a real store."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QUICK = """name: Quick
inputs: [{name: n, type: integer}]
definition:
  steps:
    - {id: a, kind: noop}
    - {id: b, kind: noop, depends_on: [a], condition: "input_data['n'] > 1"}
"""


def lc(*args: str, data_dir: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, LABCONSOLE_DATA_DIR=str(data_dir), PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-m", "console", *args], capture_output=True, text=True,
                            env=env, timeout=120, cwd=ROOT)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_validate_reports_each_bad_file_with_lines(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: B\ndefinition:\n  steps:\n    - {id: a, kind: noop, depends_on: [zz]}\n")
    good = ROOT / "resources" / "templates" / "elisa_readout.yaml"
    result = lc("templates", "validate", str(good), str(bad), data_dir=tmp_path, check=False)
    assert result.returncode == 1
    assert f"{good}: ok (ELISA Readout, 6 steps)" in result.stdout
    assert "bad.yaml:4: definition.steps[0].depends_on[0]: depends on unknown step 'zz'" in result.stdout


def test_run_status_list_terminate(tmp_path):
    quick = tmp_path / "quick.yaml"
    quick.write_text(QUICK)
    assert "Quick: version 1" in lc("templates", "publish", str(quick), data_dir=tmp_path).stdout
    done = lc("workflow", "run", "Quick", "--input", '{"n": 1}', "--wait", data_dir=tmp_path).stdout
    run_id = done.splitlines()[0]
    assert f"{run_id}: completed, 100% (2/2 steps)" in done
    assert "b                skipped" in done
    pending = lc("workflow", "run", "Quick", "--input", '{"n": 2}', data_dir=tmp_path).stdout.strip()
    listing = lc("workflow", "list", data_dir=tmp_path).stdout
    assert "2 of 2 runs" in listing and run_id in listing
    # the second run was created by a process that exited; the next one resumes it
    status = lc("workflow", "status", pending, data_dir=tmp_path).stdout
    assert f"{pending}: pending, 0%" in status  # the command line never executes other runs
    # seed 004: a workflow's name stands for its latest run
    assert lc("workflow", "status", "Quick", data_dir=tmp_path).stdout == status
    nothing = lc("workflow", "status", "Nothing", data_dir=tmp_path, check=False)
    assert nothing.returncode == 2 and "no run and no workflow with runs named 'Nothing'" in nothing.stderr
    assert "wrong plate" not in status
    result = lc("workflow", "terminate", pending, "--reason", "wrong plate", data_dir=tmp_path)
    assert f"{pending}: cancelled" in result.stdout
    assert f"{pending}: cancelled" in lc("workflow", "status", pending, data_dir=tmp_path).stdout
    again = lc("workflow", "terminate", pending, "--reason", "again", data_dir=tmp_path, check=False)
    assert again.returncode == 2 and "illegal transition cancelled -> cancelled" in again.stderr
    # seed 004: terminate NAME stops the workflow's latest run
    third = lc("workflow", "run", "Quick", "--input", '{"n": 3}', data_dir=tmp_path).stdout.strip()
    by_name = lc("workflow", "terminate", "Quick", "--reason", "by name", data_dir=tmp_path)
    assert f"{third}: cancelled" in by_name.stdout
    assert f"{third}: cancelled" in lc("workflow", "status", third, data_dir=tmp_path).stdout
    bad = lc("workflow", "run", "Nope", data_dir=tmp_path, check=False)
    assert bad.returncode == 2 and "no template 'Nope'" in bad.stderr
    bad_input = lc("workflow", "run", "Quick", "--input", '{"n": "x"}', data_dir=tmp_path, check=False)
    assert bad_input.returncode == 2 and "inputs of Quick: n: invalid literal for int()" in bad_input.stderr


def test_schedules_from_the_command_line(tmp_path):
    quick = tmp_path / "quick.yaml"
    quick.write_text(QUICK)
    lc("templates", "publish", str(quick), data_dir=tmp_path)
    added = lc("schedules", "add", "Quick", "--every", "daily", "--at", "06:30", "--timezone", "Europe/Berlin",
               "--input", '{"n": 2}', data_dir=tmp_path).stdout
    sid = added.split(":")[0]
    assert "Quick '0 30 6 * * *' (Europe/Berlin), next run" in added
    assert f"{sid}: paused" in lc("schedules", "pause", sid, data_dir=tmp_path).stdout
    listing = lc("schedules", "list", data_dir=tmp_path).stdout
    assert sid in listing and "paused" in listing
    bad = lc("schedules", "add", "Quick", "--cron", "0 9 * * 1-5 extra words", data_dir=tmp_path, check=False)
    assert bad.returncode == 2 and "has 7 fields" in bad.stderr


def test_bad_status_cron_and_inputs_are_refused_without_a_traceback(tmp_path):
    quick = tmp_path / "quick.yaml"
    quick.write_text(QUICK)
    lc("templates", "publish", str(quick), data_dir=tmp_path)
    status = lc("workflow", "list", "--status", "bogus", data_dir=tmp_path, check=False)
    assert status.returncode == 2 and "Traceback" not in status.stderr
    assert "'bogus' is not a run status; use one of: pending, running, paused, completed" in status.stderr
    never = lc("schedules", "add", "Quick", "--cron", "0 0 31 4 *", data_dir=tmp_path, check=False)
    assert never.returncode == 2 and "Traceback" not in never.stderr
    assert "cron: '0 0 31 4 *': never fires" in never.stderr
    listed = lc("schedules", "add", "Quick", "--cron", "0 9 * * *", "--input", "[1,2]", data_dir=tmp_path,
                check=False)
    assert listed.returncode == 2 and "inputs: inputs must be a JSON object" in listed.stderr
    seed004 = tmp_path / "cleanup.yaml"
    seed004.write_text("name: Cleanup\nconfig: {schedule: '0 0 30 2 *'}\ntasks:\n  - name: sweep\n")
    for verb, code in (("validate", 1), ("publish", 2)):
        result = lc("templates", verb, str(seed004), data_dir=tmp_path, check=False)
        assert result.returncode == code and "cleanup.yaml:2: config.schedule: '0 0 30 2 *': never fires" in (
            result.stdout + result.stderr)
    assert "Traceback" not in lc("schedules", "list", data_dir=tmp_path).stderr


def test_validate_and_publish_check_capabilities_against_the_workcell(tmp_path):
    odd = tmp_path / "odd.yaml"
    odd.write_text("name: Odd\ndefinition:\n  steps:\n    - {id: a, kind: Spectro.Scan}\n")
    demo = str(ROOT / "resources" / "workcells" / "demo.yaml")
    assert lc("templates", "validate", str(odd), data_dir=tmp_path).returncode == 0  # no workcell: kinds unchecked
    bad = lc("--workcell", demo, "templates", "validate", str(odd), data_dir=tmp_path, check=False)
    assert bad.returncode == 1 and "odd.yaml:4" in bad.stdout and "Spectro.Scan" in bad.stdout
    refused = lc("--workcell", demo, "templates", "publish", str(odd), data_dir=tmp_path, check=False)
    assert refused.returncode == 2 and "Spectro.Scan" in refused.stderr
    # headless commands build the workcell's instruments with --faults: a spec naming an
    # instrument the workcell lacks is refused, naming the option and the instruments there are
    faulty = lc("--workcell", demo, "--faults", "hang@Nobody=true", "workflow", "list", data_dir=tmp_path, check=False)
    assert faulty.returncode == 2 and "--faults: 'Nobody': no instrument 'Nobody' in the workcell" in faulty.stderr
    assert "Traceback" not in faulty.stderr
