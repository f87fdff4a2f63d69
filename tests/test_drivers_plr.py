"""The PyLabRobot driver on PyLabRobot's chatterbox backends (no device; output silenced)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("pylabrobot")

from core.drivers import DriverError, DriverState, InstrumentUnavailable, OrderCancelled  # noqa: E402
from core.drivers.base import OutcomeUnknown  # noqa: E402
from core.drivers.pylabrobot import PyLabRobotDriver  # noqa: E402
from core.errors import WorkcellError  # noqa: E402
from core.orders import Order  # noqa: E402
from core.workcell import build_drivers, load_workcell, parse_workcell  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DECK = ROOT / "resources" / "plr" / "ot2-deck.json"
STATE = ROOT / "resources" / "plr" / "ot2-state.json"


def lh_text(*, backend: str = "chatterbox", extra: str = "", state: bool = True,
            commands: str = "") -> str:
    return f"""\
name: PLR cell
instruments:
  - id: LH1
    kind: LiquidHandler
    driver: pylabrobot
    options:
      backend: {backend}
      deck: {DECK}
{f"      state: {STATE}" if state else ""}
{extra}
      commands:
        LiquidHandler.Transfer:
          operation: transfer
          parameters: {{from: source_plate, well: source_well, to: target_plate, wells: target_wells}}
          errors: {{NoTipError: true}}
{commands}
    capabilities:
      LiquidHandler.Aspirate: 5s
      LiquidHandler.Dispense: 5s
      LiquidHandler.Transfer: 20s
  - id: Reader1
    kind: PlateReader
    driver: pylabrobot
    options: {{machine: plate_reader, plate: cor_96_wellplate_360uL_Fb}}
    capabilities:
      PlateReader.ReadAbsorbance: 30s
"""


def drivers(tmp_path: Path, **kwargs: Any) -> dict[str, PyLabRobotDriver]:
    path = tmp_path / "plr.yaml"
    path.write_text(lh_text(**kwargs))
    return build_drivers(load_workcell(path), clock=None)  # type: ignore[arg-type,return-value]


def order(oid: str, kind: str, **inputs: Any) -> Order:
    return Order(identifier=oid, templateName=kind,
                 inputParameters=[{"name": k, "value": v} for k, v in inputs.items()])


def test_aspirate_dispense_transfer_and_read_with_outputs_and_progress(tmp_path, capfd):
    async def scenario() -> None:
        d = drivers(tmp_path)
        lh, reader = d["LH1"], d["Reader1"]
        await asyncio.gather(lh.connect(), reader.connect())
        assert lh.state is DriverState.IDLE and await lh.heartbeat() < 1
        seen: list[Any] = []
        out = await lh.execute(order("a1", "Aspirate", plate="source", wells="A1:C1", volume=50),
                               lambda f, v: seen.append((f, v)))
        assert out == {"Wells": ["A1", "B1", "C1"], "Channels": [0, 1, 2],
                       "Volumes": [50.0] * 3, "Remaining": [150.0] * 3}
        assert seen == [(0.5, {"Stage": "pick up tips"}), (1.0, {"Stage": "aspirate"})]
        out = await lh.execute(order("d1", "LiquidHandler.Dispense", plate="dest", wells="A2,B2,C2",
                                     volume="[10, 20, 50]"), lambda f, v: None)
        assert out["Contains"] == [10.0, 20.0, 50.0]
        assert not any(lh.machine.head[c].has_tip for c in range(3))  # dropped after dispensing
        seen.clear()
        out = await lh.execute(order("t1", "Transfer", **{"from": "source", "well": "H12",
                                                         "to": "dest", "wells": "A12:C12",
                                                         "volume": 30}),
                               lambda f, v: seen.append((f, v)))
        assert out == {"Source": "source:H12", "Targets": ["A12", "B12", "C12"], "Volume": 90.0,
                       "SourceRemaining": 110.0}
        assert [f for f, _ in seen] == pytest.approx([1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6, 1.0])
        assert seen[-1][1] == {"Stage": "drop tip"}
        assert not lh.machine.head[0].has_tip  # discarded into the OT-2 trash
        read = await reader.execute(order("r1", "ReadAbsorbance", wavelength=450), lambda f, v: None)
        assert len(read["WellValues"]) == 96 and read["wavelength"] == 450
        await asyncio.gather(lh.disconnect(), reader.disconnect())
        assert lh.state is DriverState.DISCONNECTED
        with pytest.raises(InstrumentUnavailable):
            await lh.heartbeat()

    asyncio.run(scenario())
    out, _ = capfd.readouterr()
    assert "Aspirating" not in out and "Setting up" not in out  # chatterbox output silenced


def test_errors_fatal_retryable_and_bad_parameters(tmp_path):
    async def scenario() -> None:
        lh = drivers(tmp_path)["LH1"]
        await lh.connect()
        with pytest.raises(DriverError) as fatal:  # dest is empty: volume tracking refuses
            await lh.execute(order("t1", "Transfer", **{"from": "dest", "well": "A1", "to": "source",
                                                       "wells": "A1", "volume": 10}), lambda f, v: None)
        assert (fatal.value.code, fatal.value.retryable) == ("TooLittleLiquidError", False)
        assert not lh.machine.head[0].has_tip  # the tip went to the trash all the same
        # 96 tips, one used above: after 31 x 3 and 2 transfers none is left: a transfer then
        # fails retryably (refill the rack)
        for i in range(31):
            await lh.execute(order(f"ok{i}", "Aspirate", plate="source", wells="A1:C1", volume=1),
                             lambda f, v: None)
            await lh.execute(order(f"d{i}", "Dispense", plate="dest", wells="A1:C1", volume=1),
                             lambda f, v: None)
        for i in range(2):
            await lh.execute(order(f"t{i}", "Transfer", **{"from": "source", "well": "A2",
                                                          "to": "dest", "wells": "A1",
                                                          "volume": 1}), lambda f, v: None)
        with pytest.raises(DriverError) as tips:
            await lh.execute(order("t2", "Transfer", **{"from": "source", "well": "A2", "to": "dest",
                                                       "wells": "A1", "volume": 10}), lambda f, v: None)
        assert (tips.value.code, tips.value.retryable) == ("NoTipError", True)
        for bad, words in ((dict(plate="nowhere", wells="A1", volume=5), "'plate' = 'nowhere'"),
                           (dict(plate="source", wells="Z99", volume=5), "'wells' = 'Z99'"),
                           (dict(plate="source", wells="A1", volume="lots"), "'volume' = 'lots'"),
                           (dict(plate="source", wells="A1", volume=5, channels=9), "'channels'"),
                           (dict(plate="source", wells="A1"), "'volume' is missing")):
            with pytest.raises(DriverError) as exc:
                await lh.execute(order("bad", "Aspirate", **bad), lambda f, v: None)
            assert words in exc.value.message and exc.value.code in ("ValidationError",
                                                                     "InvalidParameter")
        await lh.disconnect()

    asyncio.run(scenario())


def test_cancel_between_steps_and_device_loss_mid_command(tmp_path):
    async def scenario() -> None:
        slow = drivers(tmp_path, backend="tests.helpers.plr_backends:SlowChatterbox",
                       extra="      backend_options: {delay: 0.3}")["LH1"]
        await slow.connect()
        staged = asyncio.Event()
        task = asyncio.create_task(slow.execute(
            order("c1", "Transfer", **{"from": "source", "well": "A1", "to": "dest",
                                       "wells": "A1:H1", "volume": 5}),
            lambda f, v: staged.set() if v and v["Stage"] == "aspirate" else None))
        await asyncio.wait_for(staged.wait(), 10)
        assert slow.state is DriverState.BUSY and await slow.cancel("c1") is True
        with pytest.raises(OrderCancelled, match="cancelled after dispense A1"):
            await task
        assert not slow.machine.head[0].has_tip and await slow.cancel("c1") is False
        await slow.disconnect()

        lost = drivers(tmp_path, backend="tests.helpers.plr_backends:UnpluggedChatterbox")["LH1"]
        await lost.connect()
        await lost.execute(order("a", "Aspirate", plate="source", wells="A1", volume=5),
                           lambda f, v: None)
        assert lost.machine.head[0].has_tip
        with pytest.raises(OutcomeUnknown, match="may or may not have run"):
            await lost.execute(order("d", "Dispense", plate="dest", wells="A1", volume=5),
                               lambda f, v: None)
        await lost.disconnect()

    asyncio.run(scenario())


def test_wrong_operation_argument_and_files_refused_with_location(tmp_path):
    text = lh_text(commands="        LiquidHandler.Aspirate: {operation: aspirate, "
                            "parameters: {well: wellz}}")
    (tmp_path / "bad.yaml").write_text(text)
    lh = build_drivers(load_workcell(tmp_path / "bad.yaml"), clock=None)["LH1"]

    async def scenario() -> None:
        with pytest.raises(WorkcellError) as exc:
            await lh.connect()
        assert "bad.yaml:16" in str(exc.value) and "no argument 'wellz'" in str(exc.value)
        assert lh.state is DriverState.DISCONNECTED

    asyncio.run(scenario())
    (tmp_path / "broken.json").write_text('{"type": "OTDeck", "children": [')
    (tmp_path / "broken.yaml").write_text(lh_text().replace(str(DECK), "broken.json"))
    broken = build_drivers(load_workcell(tmp_path / "broken.yaml"), clock=None)["LH1"]

    async def broken_deck() -> None:
        with pytest.raises(WorkcellError) as exc:
            await broken.connect()
        assert "broken.yaml:8" in str(exc.value) and "broken.json" in str(exc.value)
        status = await broken.status()
        assert status.state is DriverState.DISCONNECTED and "deck" in status.detail

    asyncio.run(broken_deck())
    with pytest.raises(WorkcellError) as exc:
        parse_workcell(lh_text().replace(str(DECK), "nowhere/deck.json"), "cell.yaml")
    assert "cell.yaml:8: instruments[0].options.deck" in str(exc.value) and "no such file" in str(exc.value)
    with pytest.raises(WorkcellError) as exc:
        parse_workcell(lh_text().replace("machine: plate_reader, plate: cor_96_wellplate_360uL_Fb",
                                         "machine: plate_reader"), "cell.yaml")
    assert "a plate reader needs plate" in str(exc.value)


def test_without_pylabrobot_the_driver_is_refused_naming_the_extra(tmp_path):
    """In a Python that cannot import pylabrobot, building the workcell names the extra and
    the line of ``driver: pylabrobot``."""
    path = tmp_path / "plr.yaml"
    path.write_text(lh_text())
    code = ("import sys; sys.modules['pylabrobot'] = None\n"
            "import importlib.util; importlib.util.find_spec = lambda n, *a: None if n == 'pylabrobot' "
            "else _find(n, *a)\n")
    script = (
        "import importlib.util\n_find = importlib.util.find_spec\n" + code +
        "from core.workcell import build_drivers, load_workcell\n"
        "from core.errors import WorkcellError\n"
        f"try:\n    build_drivers(load_workcell({str(path)!r}), None)\n"
        "except WorkcellError as exc:\n    print(exc)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         cwd=ROOT, timeout=60)
    assert f"{path}:5" in out.stdout and "pip install 'labconsole[plr]'" in out.stdout, out
    assert "LH1" in out.stdout and "Reader1" in out.stdout


def test_demo_plr_workcell_loads_and_its_machines_run():
    workcell = load_workcell(ROOT / "resources" / "workcells" / "demo-plr.yaml")

    async def scenario() -> None:
        d = build_drivers(workcell, clock=None)
        ot2, reader = d["OT2"], d["Reader1"]
        await asyncio.gather(ot2.connect(), reader.connect())
        out = await ot2.execute(order("t", "Transfer", **{"from": "source", "well": "A1",
                                                         "to": "dest", "wells": "A1:D1",
                                                         "volume": 15}), lambda f, v: None)
        assert out["SourceRemaining"] == 140.0 and out["Targets"] == ["A1", "B1", "C1", "D1"]
        read = await reader.execute(order("r", "ReadAbsorbance", wavelength=600), lambda f, v: None)
        assert len(read["WellValues"]) == 96
        await asyncio.gather(ot2.disconnect(), reader.disconnect())

    asyncio.run(scenario())
