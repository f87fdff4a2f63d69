"""Python steps: handlers on the handler path run in worker processes, get inputs and the
outputs of their dependencies, give outputs to later steps, conditions and mappings; a crash,
a hang or bad data fails only the step."""

from __future__ import annotations

import asyncio
import json
import os
import textwrap
from pathlib import Path
from typing import Any

import pytest

from core import pysteps
from core.engine import Engine, SimulatedExecutor, StepFailure
from core.errors import TemplateError
from core.ledger import Ledger
from core.store import DB_FILENAME, Store
from core.templates import parse_template, template_from_dict

HANDLERS = '''
import asyncio
import os
import time
from pydantic import BaseModel


class Reading(BaseModel):
    plate: str
    od: float


class Verdict(BaseModel):
    plate: str
    passed: bool


def double(input_data):
    return {"value": input_data["value"] * 2, "seen": sorted(input_data)}


async def add_one(input_data, step_outputs):
    await asyncio.sleep(0)
    return {"value": input_data["value"] + 1, "deps": sorted(step_outputs)}


def judge(reading: Reading) -> Verdict:
    return Verdict(plate=reading.plate, passed=reading.od < 1.0)


def bad_output(reading: Reading) -> Verdict:
    return {"plate": reading.plate, "passed": "not really"}


def no_args():
    return {"pid": os.getpid()}


def hang(input_data):
    time.sleep(3600)


def hang_telling(input_data):
    with open(input_data["pid_file"] + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.replace(input_data["pid_file"] + ".tmp", input_data["pid_file"])
    time.sleep(3600)


def slow_once(input_data):
    marker = input_data["marker"]
    if not os.path.exists(marker):
        open(marker, "w").close()
        time.sleep(3600)
    return {"ok": True}


def crash(input_data):
    os._exit(7)


def flaky(input_data):
    marker = input_data["marker"]
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise ConnectionError("reader busy")
    return {"ok": True}


class Permanent(Exception):
    retryable = False


def refuse(input_data):
    raise Permanent("plate is cracked")


def not_a_dict(input_data):
    return [1, 2]
'''


def _steps(*steps: dict[str, Any], **definition: Any) -> dict[str, Any]:
    inputs = definition.pop("inputs", [])
    return {"name": definition.pop("name", "py"), "inputs": inputs,
            "definition": {"steps": list(steps), **definition}}


def _scenario(data_dir: Path, body):
    handlers = data_dir / "handlers"
    handlers.mkdir(exist_ok=True)
    (handlers / "labsteps.py").write_text(HANDLERS)

    async def main():
        store = Store(data_dir / DB_FILENAME).open()
        engine = Engine(Ledger(store), SimulatedExecutor(_RealClock()), seed=1)
        await engine.start()
        try:
            return await body(engine)
        finally:
            await engine.close()
            store.close()

    return asyncio.run(main())


class _RealClock:
    def now(self) -> float:
        import time

        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


async def _run(engine: Engine, data: dict[str, Any], inputs: dict[str, Any] | None = None,
               timeout: float = 60) -> dict[str, Any]:
    t = await engine.publish(template_from_dict(data))
    run_id = await engine.create_instance(t.name, inputs or {}, allow_duplicate=True)
    await engine.execute_workflow(run_id)
    await engine.wait(run_id, timeout)
    return engine.get_instance(run_id)


def _by_id(instance: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["id"]: s for s in instance["steps"]}


def test_outputs_flow_to_later_steps_conditions_and_mappings(data_dir):
    data = _steps(
        {"id": "a", "kind": "python", "handler": "labsteps.double"},
        {"id": "b", "handler": "labsteps.add_one", "depends_on": "a"},  # kind python by default
        {"id": "big", "kind": "noop", "depends_on": ["b"], "condition": "step_outputs['b']['value'] > 10",
         "input_mapping": {"got": "step_outputs.b.value"}},
        {"id": "small", "kind": "noop", "depends_on": ["b"], "condition": "step_outputs['b']['value'] <= 10"},
        inputs=[{"name": "value", "type": "integer"}])
    inst = _scenario(data_dir, lambda engine: _run(engine, data, {"value": 5}))
    steps = _by_id(inst)
    assert inst["status"] == "completed", inst
    assert steps["a"]["outputs"] == {"value": 10, "seen": ["value"]}
    # b gets the run inputs overlaid with a's outputs, and a's outputs by step id
    assert steps["b"]["outputs"] == {"value": 11, "deps": ["a"]}
    assert steps["big"]["status"] == "completed" and steps["small"]["status"] == "skipped"


def test_typed_models_are_validated_on_both_sides_naming_the_field(data_dir):
    ok = _steps({"id": "judge", "handler": "labsteps.judge"}, name="ok",
                inputs=[{"name": "plate", "type": "string"}, {"name": "od", "type": "double"}])
    missing = _steps({"id": "judge", "handler": "labsteps.judge"}, name="missing",
                     inputs=[{"name": "plate", "type": "string"}])
    bad_out = _steps({"id": "judge", "handler": "labsteps.bad_output"}, name="bad_out",
                     inputs=[{"name": "plate", "type": "string"}, {"name": "od", "type": "double"}])

    async def body(engine):
        return (await _run(engine, ok, {"plate": "P1", "od": 0.4}),
                await _run(engine, missing, {"plate": "P1"}),
                await _run(engine, bad_out, {"plate": "P1", "od": 0.4}))

    good, no_od, wrong = _scenario(data_dir, body)
    assert _by_id(good)["judge"]["outputs"] == {"plate": "P1", "passed": True}
    step = _by_id(no_od)["judge"]
    assert no_od["status"] == "failed" and step["attempt"] == 1  # not retried
    assert "Reading: input field 'od': Field required" in step["error"]
    assert "Verdict: output field 'passed'" in _by_id(wrong)["judge"]["error"]


def test_a_crash_or_a_hang_fails_only_the_step_and_the_worker_is_replaced(data_dir):
    hang = _steps({"id": "h", "handler": "labsteps.hang", "timeout_seconds": 1,
                   "retry_policy": {"max_attempts": 1}}, name="hang")
    crash = _steps({"id": "c", "handler": "labsteps.crash", "retry_policy": {"max_attempts": 1}}, name="crash")
    after = _steps({"id": "n", "handler": "labsteps.no_args"}, name="after")

    async def body(engine):
        return (await _run(engine, hang), await _run(engine, crash), await _run(engine, after))

    hung, crashed, fine = _scenario(data_dir, body)
    assert hung["status"] == "failed" and "timed out after 1 s" in _by_id(hung)["h"]["error"]
    assert crashed["status"] == "failed"
    assert "worker process died (exit code 7)" in _by_id(crashed)["c"]["error"]
    pid = _by_id(fine)["n"]["outputs"]["pid"]
    assert pid != os.getpid()  # it ran in a worker, and the console lives on


def test_cancel_kills_the_python_steps_worker_and_the_next_call_gets_a_new_one(data_dir, tmp_path):
    pid_file = tmp_path / "worker.pid"
    hang = _steps({"id": "h", "handler": "labsteps.hang_telling", "parameters": {"pid_file": str(pid_file)}},
                  name="hang-until-cancelled")
    after = _steps({"id": "n", "handler": "labsteps.no_args"}, name="after-cancel")

    def gone(pid: int) -> bool:
        try:
            os.kill(pid, 0)
            stat = Path(f"/proc/{pid}/stat").read_text()
        except (ProcessLookupError, FileNotFoundError):  # reaped, possibly between the two calls
            return True
        return stat.split(")")[-1].split()[0] == "Z"  # killed, not reaped

    async def body(engine):
        t = await engine.publish(template_from_dict(hang))
        run_id = await engine.create_instance(t.name, {}, allow_duplicate=True)
        await engine.execute_workflow(run_id)
        for _ in range(1500):  # the worker starts (spawn) and calls the handler
            if pid_file.exists():
                break
            await asyncio.sleep(0.02)
        pid = int(pid_file.read_text())
        alive_before = not gone(pid)
        started_before = pysteps.POOL.started
        await engine.cancel(run_id)
        await engine.wait(run_id, 30)
        for _ in range(500):
            if gone(pid):
                break
            await asyncio.sleep(0.02)
        return pid, alive_before, gone(pid), engine.get_instance(run_id), started_before, await _run(engine, after)

    pid, alive_before, killed, cancelled, started_before, next_run = _scenario(data_dir, body)
    assert alive_before and killed, f"worker {pid} still running after the cancel"
    assert cancelled["status"] == "cancelled" and _by_id(cancelled)["h"]["status"] == "cancelled"
    assert next_run["status"] == "completed"
    assert _by_id(next_run)["n"]["outputs"]["pid"] not in (pid, os.getpid())
    assert pysteps.POOL.started == started_before + 1  # a fresh worker, not the killed one


def test_seed_001_retry_on_timeout_retries_a_timed_out_step_or_fails_it(data_dir, tmp_path):
    def slow_once(name: str, retry_on_timeout: bool) -> dict[str, Any]:
        return _steps({"id": "s", "handler": "labsteps.slow_once", "timeout_seconds": 1,
                       "parameters": {"marker": str(tmp_path / name)},
                       "retry_policy": {"max_attempts": 3, "initial_interval": 0.01,
                                        "retry_on_timeout": retry_on_timeout}}, name=name)

    async def body(engine):
        return await _run(engine, slow_once("retried", True)), await _run(engine, slow_once("not-retried", False))

    retried, not_retried = _scenario(data_dir, body)
    r, n = _by_id(retried)["s"], _by_id(not_retried)["s"]
    assert retried["status"] == "completed" and r["attempt"] == 2 and r["outputs"] == {"ok": True}
    assert not_retried["status"] == "failed" and n["attempt"] == 1
    assert n["error_code"] == "Timeout" and "timed out after 1 s" in n["error"]


def test_failures_retry_per_policy_unless_not_retryable(data_dir, tmp_path):
    flaky = _steps({"id": "f", "handler": "labsteps.flaky", "parameters": {"marker": str(tmp_path / "m")},
                    "retry_policy": {"max_attempts": 3, "initial_interval": 0.01}}, name="flaky")
    refuse = _steps({"id": "r", "handler": "labsteps.refuse", "retry_policy": {"max_attempts": 3}}, name="refuse")
    shape = _steps({"id": "s", "handler": "labsteps.not_a_dict"}, name="shape")
    absent = _steps({"id": "x", "handler": "labsteps.nowhere"}, {"id": "y", "handler": "nomodule.fn"},
                    name="absent", failure_policy="continue")

    async def body(engine):
        return [await _run(engine, t) for t in (flaky, refuse, shape, absent)]

    flaked, refused, shaped, missing = _scenario(data_dir, body)
    assert flaked["status"] == "completed" and _by_id(flaked)["f"]["attempt"] == 2
    r = _by_id(refused)["r"]
    assert r["attempt"] == 1 and "Permanent: plate is cracked (labsteps.py:" in r["error"]
    assert "returned a list" in _by_id(shaped)["s"]["error"]
    x, y = _by_id(missing)["x"], _by_id(missing)["y"]
    assert "module labsteps has no nowhere" in x["error"]
    assert "no module nomodule in the handler path" in y["error"] and str(data_dir / "handlers") in y["error"]


def test_handlers_come_only_from_the_handler_path(tmp_path):
    paths = (tmp_path / "handlers",)
    (tmp_path / "handlers").mkdir()

    async def call(name):
        return await pysteps.run_handler(name, {}, paths=paths)

    with pytest.raises(StepFailure, match="no module os in the handler path"):
        asyncio.run(call("os.getcwd"))  # the standard library is not on the handler path
    with pytest.raises(StepFailure, match="must be a dotted path"):
        asyncio.run(call("__import__('os')"))


def test_config_ini_replaces_the_handler_path(tmp_path):
    (tmp_path / "config.ini").write_text("[HANDLERS]\npath = site_handlers\n")
    assert pysteps.handler_paths(tmp_path / "data", tmp_path / "config.ini") == ((tmp_path / "site_handlers").resolve(),)
    defaults = pysteps.handler_paths(tmp_path / "data", tmp_path / "absent.ini")
    assert defaults == (pysteps.DEFAULT_HANDLERS, tmp_path / "data" / "handlers")


def test_templates_check_the_handler_and_its_kind():
    text = textwrap.dedent("""\
        name: t
        steps:
          - {id: a, kind: python}
          - {id: b, kind: noop, handler: x.y}
          - {id: c, handler: "not a path"}
        """)
    with pytest.raises(TemplateError) as err:
        parse_template(text, "t.yaml")
    message = str(err.value)
    assert "t.yaml:3: steps[0].handler: a python step needs a handler" in message
    assert "t.yaml:4: steps[1].handler: a handler is for kind 'python' steps, not 'noop'" in message
    assert "t.yaml:5: steps[2].handler: handler 'not a path' must be a dotted path" in message


def test_handler_survives_export_and_the_sample_template_mixes_instruments(data_dir):
    from core.runtime import SAMPLE_TEMPLATES
    from core.templates import load_template

    t = load_template(SAMPLE_TEMPLATES / "plate_normalization.yaml")
    again = template_from_dict(t.to_definition())
    assert again.step("volumes").handler == "dilution.compute_volumes"
    assert [s.kind for s in again.steps] == ["PlateReader.ReadPlate", "python", "LiquidHandler.Transfer"]


def test_the_sample_template_runs_on_the_demo_workcell_and_dispenses_what_python_computed(data_dir):
    """Plate Normalization on the demo workcell: the reader's ODs go to dilution.compute_volumes in
    a worker, and the liquid handler's Transfer gets the diluent volumes it computed. Instrument
    time is virtual; the Python step runs in real time (the clock waits while it is in flight)."""
    import importlib.util

    from core.clock import VirtualClock
    from core.runtime import DEMO_WORKCELL, SAMPLE_TEMPLATES, Runtime

    spec = importlib.util.spec_from_file_location("dilution", pysteps.DEFAULT_HANDLERS / "dilution.py")
    dilution = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(dilution)

    async def scenario():
        store = Store(data_dir / DB_FILENAME).open()
        clock = VirtualClock.for_store(store)
        runtime = Runtime.build(data_dir, clock=clock, store=store, workcell=DEMO_WORKCELL, seed=3)
        starting = asyncio.ensure_future(runtime.start(SAMPLE_TEMPLATES))
        await clock.run_until(starting.done, step=0.5)  # instruments connect on the virtual clock
        await starting
        try:
            run_id = await runtime.start_run("Plate Normalization", {"plate_id": "P-17", "target_od": 0.5})
            for _ in range(20_000):
                run = runtime.engine.get_instance(run_id)
                if run["status"] in ("completed", "failed", "cancelled"):
                    break
                if _by_id(run)["volumes"]["status"] in ("queued", "running"):
                    await asyncio.sleep(0.02)  # the worker runs in real time: let it
                else:
                    await clock.advance(min(5.0, max(0.0, (clock.next_deadline or clock.now() + 1) - clock.now())))
            steps = _by_id(run)
            dispense = runtime.order(steps["dispense"]["order_id"])
            received = {k: dispense.get_input_parameter_value(k) for k in ("volumes_ul", "volume_ul", "plate")}
            return run, steps, received
        finally:
            await runtime.close()

    run, steps, received = asyncio.run(scenario())
    assert run["status"] == "completed", run
    wells = steps["read"]["outputs"]["well_values"]
    expected = dilution.compute_volumes({"well_values": wells, "target_od": 0.5})
    assert steps["volumes"]["outputs"] == expected and expected["wells_to_dilute"] > 0
    assert steps["dispense"]["status"] == "completed" and steps["dispense"]["instrument"]
    assert json.loads(received["volumes_ul"]) == expected["diluent_volumes_ul"]  # on the wire as JSON text
    assert float(received["volume_ul"]) == expected["total_diluent_ul"] and received["plate"] == "P-17"
