"""The MADSci driver against a real MADSci REST node (madsci-node-module 0.8.1 in .madsci-venv)
on 127.0.0.1: tests/helpers/madsci_node.py."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core.drivers import DriverError, DriverState, InstrumentUnavailable, OrderCancelled
from core.drivers.base import OutcomeUnknown
from core.drivers.madsci import MadsciDriver
from core.errors import WorkcellError
from core.events import EventBus, InstrumentStatusChanged
from core.orders import ModuleStatus, Order
from core.workcell import build_drivers, load_workcell, parse_workcell
from tests.helpers.madsci_support import MadsciNode, free_port


def cell_text(url: str, *, action: str = "transfer", extra: str = "") -> str:
    return f"""\
name: MADSci cell
instruments:
  - id: LH2
    kind: LiquidHandler
    driver: madsci
    options:
      url: {url}
      request_timeout: 2s
      poll_interval: 0.05s
      actions:
        LiquidHandler.Transfer:
          action: {action}
          parameters: {{from: source, to: target}}
          results: {{count: TransferCount}}
          errors: {{TipClogged: true}}
{extra}
    capabilities:
      LiquidHandler.Transfer: 1s
      PlateReader.ReadPlate: 1s
"""


def driver_for(tmp_path: Path, url: str, bus: EventBus | None = None, **kwargs: Any) -> MadsciDriver:
    path = tmp_path / "madsci.yaml"
    path.write_text(cell_text(url, **kwargs))
    return build_drivers(load_workcell(path), clock=None, bus=bus)["LH2"]  # type: ignore[arg-type,return-value]


def transfer(oid: str, source: str = "A1", volume: Any = 5, duration: Any = 0.2) -> Order:
    return Order(identifier=oid, templateName="Transfer",
                 inputParameters=[{"name": "from", "value": source}, {"name": "to", "value": "B1"},
                                  {"name": "volume", "value": volume},
                                  {"name": "duration", "value": duration}])


@pytest.fixture(scope="module")
def node() -> Iterator[MadsciNode]:
    n = MadsciNode()
    n.start()
    yield n
    n.close()


def test_connect_execute_outputs_progress_and_status(tmp_path, node):
    async def scenario() -> None:
        bus = EventBus()
        seen: list[InstrumentStatusChanged] = []
        bus.subscribe(seen.append, InstrumentStatusChanged)
        d = driver_for(tmp_path, node.url, bus=bus)
        await d.connect()
        assert d.node_name == "lh_node" and d.node_id and "cancel" in d.admin_commands
        assert d.state is DriverState.IDLE and await d.heartbeat() < 5
        events: list[Any] = []
        out = await d.execute(transfer("o1"), lambda f, v: events.append((f, v)))
        assert out["source"] == "A1" and out["volume"] == 5.0 and out["TransferCount"] >= 1
        assert (None, {"ActionStatus": "running"}) in events and events[-1] == (1.0, None)
        read = await d.execute(Order(identifier="o2", templateName="ReadPlate",
                                     inputParameters=[{"name": "plate", "value": "P1"},
                                                      {"name": "wavelength", "value": "600"}]),
                               lambda f, v: None)
        assert len(read["values"]) == 96 and read["wavelength"] == 600
        assert ModuleStatus.Busy in [e.status for e in seen] and seen[-1].status is ModuleStatus.Ready
        await d.disconnect()
        assert d.state is DriverState.DISCONNECTED
        with pytest.raises(InstrumentUnavailable):
            await d.execute(transfer("o3"), lambda f, v: None)

    asyncio.run(scenario())


def test_failed_actions_retryable_fatal_and_bad_arguments(tmp_path, node):
    async def scenario() -> None:
        d = driver_for(tmp_path, node.url)
        await d.connect()
        with pytest.raises(DriverError) as fatal:
            await d.execute(transfer("f1", source="empty"), lambda f, v: None)
        assert (fatal.value.code, fatal.value.retryable) == ("TooLittleLiquid", False)
        assert "no liquid in empty" in fatal.value.message
        with pytest.raises(DriverError) as retry:
            await d.execute(transfer("f2", source="clogged"), lambda f, v: None)
        assert (retry.value.code, retry.value.retryable) == ("TipClogged", True)
        with pytest.raises(DriverError) as typed:
            await d.execute(transfer("f3", volume="lots"), lambda f, v: None)
        assert typed.value.code == "ValidationError" and "'volume'" in typed.value.message
        with pytest.raises(DriverError) as missing:
            await d.execute(Order(identifier="f4", templateName="Transfer",
                                  inputParameters=[{"name": "from", "value": "A1"}]),
                            lambda f, v: None)
        assert missing.value.code == "InvalidParameter" and "'target'" in missing.value.message
        assert "'to'" in missing.value.message
        assert (await d.execute(transfer("ok"), lambda f, v: None))["source"] == "A1"
        await d.disconnect()

    asyncio.run(scenario())


def test_cancel_pause_and_resume(tmp_path, node):
    async def scenario() -> None:
        d = driver_for(tmp_path, node.url)
        await d.connect()
        running = asyncio.Event()
        task = asyncio.create_task(d.execute(
            transfer("c1", duration=30), lambda f, v: running.set() if v else None))
        await asyncio.wait_for(running.wait(), 10)
        assert await d.cancel("c1") is True
        with pytest.raises(OrderCancelled):
            await asyncio.wait_for(task, 10)
        assert await d.cancel("c1") is False
        # pause holds a running action; the state says someone has to look
        running.clear()
        task = asyncio.create_task(d.execute(
            transfer("p1", duration=0.5), lambda f, v: running.set() if v else None))
        await asyncio.wait_for(running.wait(), 10)
        assert await d.pause() is True
        await d.heartbeat()
        assert d.state is DriverState.NEEDS_OPERATOR
        await asyncio.sleep(0.8)
        assert not task.done()
        assert await d.resume() is True
        assert (await asyncio.wait_for(task, 10))["source"] == "A1"
        await d.heartbeat()
        assert d.state is DriverState.IDLE
        await d.disconnect()

    asyncio.run(scenario())


def test_node_restart_mid_action_is_outcome_unknown_and_loss_goes_offline(tmp_path):
    node = MadsciNode()
    node.start()
    try:
        async def scenario() -> None:
            bus = EventBus()
            seen: list[InstrumentStatusChanged] = []
            bus.subscribe(seen.append, InstrumentStatusChanged)
            d = driver_for(tmp_path, node.url, bus=bus)
            await d.connect()
            first = d.node_id
            running = asyncio.Event()
            task = asyncio.create_task(d.execute(
                transfer("r1", duration=30), lambda f, v: running.set() if v else None))
            await asyncio.wait_for(running.wait(), 10)
            await asyncio.to_thread(node.restart)
            with pytest.raises(OutcomeUnknown, match="may or may not have run"):
                await asyncio.wait_for(task, 30)
            assert d.state is DriverState.DISCONNECTED and seen[-1].status is ModuleStatus.Offline
            await d.connect()
            assert d.node_id != first
            assert (await d.execute(transfer("r2"), lambda f, v: None))["source"] == "A1"
            await asyncio.to_thread(node.stop)
            with pytest.raises(InstrumentUnavailable, match="heartbeat failed"):
                await d.heartbeat()
            assert (await d.status()).module_status is ModuleStatus.Offline
            await d.disconnect()

        asyncio.run(scenario())
    finally:
        node.close()


def test_wrong_action_or_argument_refused_at_connect_with_location(tmp_path, node):
    async def scenario() -> None:
        bus = EventBus()
        seen: list[InstrumentStatusChanged] = []
        bus.subscribe(seen.append, InstrumentStatusChanged)
        d = driver_for(tmp_path, node.url, bus=bus, action="transfur")
        with pytest.raises(WorkcellError) as exc:
            await d.connect()
        text = str(exc.value)
        assert "madsci.yaml:12" in text and "no action 'transfur'" in text and "transfer" in text
        assert d.state is DriverState.DISCONNECTED
        assert seen[-1].status is ModuleStatus.Offline and "does not fit" in seen[-1].detail
        text_file = cell_text(node.url).replace("{from: source, to: target}", "{from: src}")
        (tmp_path / "arg.yaml").write_text(text_file)
        d = build_drivers(load_workcell(tmp_path / "arg.yaml"), clock=None)["LH2"]
        with pytest.raises(WorkcellError) as exc:
            await d.connect()
        assert "arg.yaml:13" in str(exc.value) and "no argument 'src'" in str(exc.value)
        unreachable = driver_for(tmp_path, f"http://127.0.0.1:{free_port()}")
        with pytest.raises(InstrumentUnavailable) as down:
            await unreachable.connect()
        assert "madsci.yaml:7" in str(down.value) and "LH2" in str(down.value)

    asyncio.run(scenario())
    with pytest.raises(WorkcellError) as exc:
        parse_workcell(cell_text("http://10.0.0.5:2000"), "remote.yaml")
    assert "remote.yaml:7" in str(exc.value) and "plain http" in str(exc.value)
