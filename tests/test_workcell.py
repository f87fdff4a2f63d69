"""Workcell files: the demo loads, every kind of mistake is reported with file:line, drivers build."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from core.clock import VirtualClock
from core.drivers import Driver, DriverState
from core.drivers.faults import FaultSpecError
from core.drivers.simulated import SimulatedDriver
from core.errors import WorkcellError
from core.events import EventBus, InstrumentStatusChanged
from core.orders import Order
from core.workcell import Jitter, build_drivers, load_workcell, parse_workcell

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "resources" / "workcells" / "demo.yaml"

GOOD = """\
name: small
instruments:
  - id: PR1
    kind: PlateReader
    driver: simulated
    capabilities:
      PlateReader.ReadPlate: {duration: 90s, jitter: 10%}
      PlateReader.Shake: 20s
  - id: Arm1
    kind: RobotArm
    driver: simulated
    capabilities:
      RobotArm.MovePlate: {duration: 12, jitter: 2s}
"""


def problems_of(text: str, file: str = "cell.yaml") -> list[str]:
    with pytest.raises(WorkcellError) as info:
        parse_workcell(text, file)
    return [str(p) for p in info.value.problems]


def one_problem(text: str, file: str = "cell.yaml") -> str:
    found = problems_of(text, file)
    assert len(found) == 1, found
    return found[0]


# --------------------------------------------------------------------------- good files


def test_demo_workcell_loads_and_is_realistic():
    wc = load_workcell(DEMO)
    assert wc.source == str(DEMO)
    assert len(wc.instruments) >= 6
    kinds = {i.kind for i in wc.instruments}
    assert {"LiquidHandler", "PlateReader", "Incubator", "RobotArm", "Sealer", "Centrifuge"} <= kinds
    for capability in ("PlateReader.ReadPlate", "LiquidHandler.Transfer", "Incubator.Incubate",
                       "RobotArm.MovePlate", "Sealer.Seal", "Centrifuge.Spin"):
        assert wc.instruments_for(capability), capability
    durations = [c.duration for i in wc.instruments for c in i.capabilities.values()]
    assert min(durations) >= 1 and max(durations) <= 3600  # seconds to minutes
    assert all(c.jitter != Jitter() for i in wc.instruments for c in i.capabilities.values())
    assert (wc.heartbeat_interval, wc.stale_timeout) == (5.0, 30.0)
    assert len(wc.instruments_for("LiquidHandler.Transfer")) == 2
    assert wc.instrument("Incubator1").max_concurrent == 44


def test_demo_templates_find_their_instruments():
    wc = load_workcell(DEMO)
    kinds = set()
    for path in (ROOT / "resources" / "templates").glob("*.yaml"):
        kinds |= {line.split(":", 1)[1].strip() for line in path.read_text().splitlines()
                  if line.strip().startswith(("kind:", "run:"))}
    missing = {k for k in kinds if "." in k} - wc.capabilities
    assert not missing, f"demo templates use capabilities the demo workcell lacks: {missing}"


def test_defaults_shorthands_and_lookups():
    wc = parse_workcell(GOOD)
    assert wc.name == "small" and wc.seed is None
    assert (wc.heartbeat_interval, wc.stale_timeout) == (5.0, 30.0)
    reader = wc.instrument("PR1")
    assert reader.display_name == "PR1" and reader.max_concurrent == 1 and reader.enabled
    assert reader.capabilities["PlateReader.Shake"].duration == 20.0
    assert reader.capabilities["PlateReader.ReadPlate"].jitter == Jitter(fraction=0.1)
    assert wc.instrument("Arm1").capabilities["RobotArm.MovePlate"].jitter == Jitter(seconds=2.0)
    assert wc.capabilities == {"PlateReader.ReadPlate", "PlateReader.Shake", "RobotArm.MovePlate"}
    with pytest.raises(KeyError, match="no instrument 'Nope'.*PR1, Arm1"):
        wc.instrument("Nope")


def test_json_workcell(tmp_path: Path):
    data = {"name": "json cell", "heartbeat_interval": "2s", "stale_timeout": 10,
            "instruments": [{"id": "S1", "kind": "Sealer", "driver": "simulated",
                             "capabilities": {"Sealer.Seal": {"duration": "8s"}}}]}
    path = tmp_path / "cell.json"
    path.write_text(json.dumps(data, indent=2))
    wc = load_workcell(path)
    assert wc.heartbeat_interval == 2.0 and wc.instrument("S1").capabilities["Sealer.Seal"].duration == 8
    data["instruments"][0]["driver"] = "telepathy"
    path.write_text(json.dumps(data, indent=2))
    with pytest.raises(WorkcellError) as info:
        load_workcell(path)
    assert f"{path}:9: instruments[0].driver: unknown driver 'telepathy'" in str(info.value)


# --------------------------------------------------------------------------- each kind of mistake


def test_unknown_key_with_a_suggestion_and_line():
    text = GOOD.replace("      PlateReader.Shake: 20s", "      PlateReader.Shake: {duraton: 20s}")
    found = problems_of(text)
    assert ("cell.yaml:8: instruments[0].capabilities.PlateReader.Shake.duraton: "
            "unknown key 'duraton' (did you mean 'duration'?)") in found
    assert "cell.yaml:8: instruments[0].capabilities.PlateReader.Shake.duration: " \
           "missing required key 'duration'" in found


def test_unknown_top_level_key_lists_the_allowed_keys():
    message = one_problem("colour: blue\n" + GOOD)
    assert message.startswith("cell.yaml:1: colour: unknown key 'colour' (allowed: version, name")


def test_missing_field():
    message = one_problem(GOOD.replace("    kind: RobotArm\n", ""))
    assert message == "cell.yaml:9: instruments[1].kind: missing required key 'kind'"


def test_bad_durations_and_jitter():
    text = (GOOD.replace("{duration: 90s, jitter: 10%}", "{duration: 5 parsecs, jitter: 150%}")
            .replace("name: small", "name: small\nheartbeat_interval: often"))
    found = problems_of(text)
    assert any(p.startswith("cell.yaml:2: heartbeat_interval: bad duration 'often'") for p in found)
    assert any(p.startswith("cell.yaml:8: instruments[0].capabilities.PlateReader.ReadPlate.duration: "
                            "bad duration '5 parsecs': unknown unit 'parsecs'") for p in found)
    assert any("jitter '150%' must be between 0% and 100%" in p for p in found)
    assert len(found) == 3


def test_negative_duration_and_zero_heartbeat():
    text = GOOD.replace("duration: 12,", "duration: -3,").replace("name: small",
                                                                   "name: small\nheartbeat_interval: 0")
    found = problems_of(text)
    assert any("heartbeat_interval" in p and "greater than 0" in p for p in found)
    assert any(p.startswith("cell.yaml:14:") and "must not be negative" in p for p in found)


def test_stale_timeout_must_exceed_heartbeat_interval():
    message = one_problem("heartbeat_interval: 30s\nstale_timeout: 10s\n" + GOOD)
    assert message == ("cell.yaml:2: stale_timeout: stale_timeout (10 s) must be longer than "
                       "heartbeat_interval (30 s)")


def test_duplicate_ids():
    message = one_problem(GOOD.replace("id: Arm1", "id: PR1"))
    assert message == ("cell.yaml:9: instruments[1].id: duplicate instrument id 'PR1' "
                       "(first used in instruments[0], line 3)")


def test_unknown_driver():
    message = one_problem(GOOD.replace("driver: simulated\n    capabilities:\n      RobotArm",
                                       "driver: quantum\n    capabilities:\n      RobotArm"))
    assert message == ("cell.yaml:11: instruments[1].driver: unknown driver 'quantum' "
                       "(drivers: simulated, sila, agent, pylabrobot, madsci)")


def test_bad_ids_and_capability_names():
    text = GOOD.replace("id: Arm1", "id: 'Arm 1'").replace("RobotArm.MovePlate", "MovePlate")
    found = problems_of(text)
    assert any(p.startswith("cell.yaml:9: instruments[1].id: 'Arm 1' is not a valid id") for p in found)
    assert any(p.startswith("cell.yaml:13: instruments[1].capabilities.MovePlate: capability "
                            "'MovePlate' must be 'Kind.Command'") for p in found)


def test_driver_options_are_checked_per_driver():
    text = GOOD.replace("    driver: simulated\n    capabilities:\n      RobotArm",
                        "    driver: simulated\n    options: {connect_time: soon, faults: 'rate=7', "
                        "bogus: 1}\n    capabilities:\n      RobotArm")
    found = problems_of(text)
    assert len(found) == 3
    assert all(p.startswith("cell.yaml:12: instruments[1].options.") for p in found)
    assert any("bogus: unknown key 'bogus'" in p for p in found)
    assert any("connect_time: bad duration 'soon'" in p for p in found)
    assert any("faults: 'rate=7': a probability must be between 0 and 1" in p for p in found)


def test_sila_and_agent_options():
    sila = ("instruments:\n  - id: R1\n    kind: PlateReader\n    driver: sila\n"
            "    options: {host: 10.0.0.5, port: 50052, insecure: true}\n"
            "    capabilities: {PlateReader.ReadPlate: 1}\n"
            "  - id: A1\n    kind: RobotArm\n    driver: agent\n    options: {url: http://x}\n"
            "    capabilities: {RobotArm.MovePlate: 1}\n")
    found = problems_of(sila)
    assert any(p.startswith("cell.yaml:5: instruments[0].options.insecure: insecure is allowed only") for p in found)
    assert any(p.startswith("cell.yaml:10: instruments[1].options.url: url must start with ws://")
               for p in found)


def test_outputs_are_checked():
    text = GOOD.replace("PlateReader.Shake: 20s", """PlateReader.Shake:
        duration: 20s
        outputs:
          mean: {of: values, reduce: mean}
          values: {type: double}
          bad_range: {min: 5, max: 1}
          no_count: {type: list}""")
    found = problems_of(text)
    assert any(p.startswith("cell.yaml:11: ") and "of: 'values' must name a list output" in p
               for p in found)
    assert any(p.startswith("cell.yaml:13: ") and "min (5) is greater than max (1)" in p for p in found)
    assert any(p.startswith("cell.yaml:14: ") and "a list output needs count" in p for p in found)


def test_empty_lists_and_wrong_shapes():
    assert one_problem("name: x\ninstruments: []\n") == "cell.yaml:2: instruments: must not be empty"
    message = one_problem(GOOD.replace("      RobotArm.MovePlate: {duration: 12, jitter: 2s}\n", " {}\n")
                          .replace("capabilities:\n {}", "capabilities: {}"))
    assert message == "cell.yaml:12: instruments[1].capabilities: must not be empty"
    with pytest.raises(WorkcellError, match="expected a mapping with 'instruments', got a list"):
        parse_workcell("- a\n- b\n", "cell.yaml")
    with pytest.raises(WorkcellError, match="got an empty file"):
        parse_workcell("", "cell.yaml")
    with pytest.raises(WorkcellError, match="cell.yaml:2"):
        parse_workcell("name: x\n  bad: [indent\n", "cell.yaml")


def test_step_types_must_name_offered_capabilities():
    message = one_problem(GOOD + "step_types:\n  read: {capability: PlateReader.ReadPlat}\n")
    assert message == ("cell.yaml:15: step_types.read.capability: no instrument offers "
                       "'PlateReader.ReadPlat' (did you mean 'PlateReader.ReadPlate'?)")


def test_every_problem_is_listed_at_once():
    text = ("colour: blue\n" + GOOD.replace("id: Arm1", "id: PR1").replace("    kind: PlateReader\n", "")
            .replace("jitter: 2s", "jitter: lots"))
    with pytest.raises(WorkcellError) as info:
        parse_workcell(text, "cell.yaml")
    error = info.value
    assert len(error.problems) == 4
    assert str(error).startswith("workcell cell.yaml is not valid (4 problems):")
    lines = [p.where.line for p in error.problems]
    assert lines == sorted(lines) and None not in lines


def test_missing_file_names_the_file(tmp_path: Path):
    with pytest.raises(WorkcellError, match="nope.yaml: cannot read"):
        load_workcell(tmp_path / "nope.yaml")


# --------------------------------------------------------------------------- building drivers


def test_build_drivers_for_the_demo_and_run_one_order_each():
    async def scenario():
        wc = load_workcell(DEMO)
        clock, bus = VirtualClock(), EventBus()
        seen: list[InstrumentStatusChanged] = []
        bus.subscribe(seen.append, InstrumentStatusChanged)
        drivers = build_drivers(wc, clock, bus)
        assert list(drivers) == [i.id for i in wc.instruments]
        assert all(isinstance(d, Driver) and isinstance(d, SimulatedDriver) for d in drivers.values())
        assert {d.seed for d in drivers.values()} == {wc.seed}
        connecting = [asyncio.ensure_future(d.connect()) for d in drivers.values()]
        await clock.run_until(lambda: all(t.done() for t in connecting))
        tasks = [asyncio.ensure_future(d.execute(Order(identifier=f"O-{iid}",
                                                       templateName=sorted(d.info.capabilities)[0]),
                                                 lambda f, v: None))
                 for iid, d in drivers.items()]
        took = await clock.run_until(lambda: all(t.done() for t in tasks))
        assert all(t.result()["Success"] for t in tasks)
        assert 60 < took < 3600
        assert {e.instrument_id for e in seen} == set(drivers)
        assert [(await d.status()).state for d in drivers.values()] == [DriverState.IDLE] * len(drivers)
    asyncio.run(scenario())


def test_build_drivers_with_faults_and_seed():
    wc = parse_workcell(GOOD)
    drivers = build_drivers(wc, VirtualClock(), faults="seed=4,hang=PR1,rate=0.1")
    assert drivers["PR1"].faults.hang and not drivers["Arm1"].faults.hang
    assert drivers["Arm1"].faults.rate == 0.1
    assert drivers["PR1"].seed == 4
    assert build_drivers(wc, VirtualClock(), faults="seed=4", seed=9)["PR1"].seed == 9
    unseeded = build_drivers(wc, VirtualClock())
    assert len({d.seed for d in unseeded.values()}) == 1  # one seed repeats the whole workcell
    with pytest.raises(FaultSpecError, match="--faults.*no instrument 'Reader7'"):
        build_drivers(wc, VirtualClock(), faults="hang=Reader7")


def test_a_driver_that_is_not_a_name_is_a_located_problem():
    text = GOOD.replace("driver: simulated", "driver: {simulated: true}", 1)
    with pytest.raises(WorkcellError) as info:
        parse_workcell(text, "cell.yaml")
    assert "cell.yaml:5: instruments[0].driver: Input should be a valid string" in str(info.value)


def test_workcell_aliases_and_size_are_bounded(tmp_path):
    lol = ["name: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lol += [f"x{i}: &a{i} [{', '.join(['*a' if i == 0 else f'*a{i - 1}'] * 9)}]" for i in range(8)]
    with pytest.raises(WorkcellError, match=r"cell.yaml:2: more than 100000 values once aliases"):
        parse_workcell("\n".join(lol), "cell.yaml")
    big = tmp_path / "big.yaml"
    big.write_text("name: '" + "x" * 1_000_001 + "'\n")
    with pytest.raises(WorkcellError, match=r"file is larger than 1000000 bytes"):
        load_workcell(big)


def test_workcell_and_the_simulated_driver_do_not_import_each_other():
    """The instrument models live in core.instruments; drivers read them from there, and only
    core.workcell (which builds drivers) imports a driver module."""
    import grimp

    graph = grimp.build_graph("core")
    assert not graph.chain_exists(importer="core.drivers.simulated", imported="core.workcell")
    assert not graph.chain_exists(importer="core.instruments", imported="core.workcell")
    assert not graph.chain_exists(importer="core.instruments", imported="core.drivers.simulated")
