"""The Fleet panel: the other workcells on this console's Data Services, read-only, from their
heartbeats; another workcell's order opens read-only in Detail, naming its owner.

Real parts: this console's runtime with its embedded Data Services on 127.0.0.1, a second
console's runtime working the same Data Services remotely (module ``cell-b``), a LIMS client
over HTTP, the main window driven by pytest-qt."""

from __future__ import annotations

import socket
import time

import fleetkit
import pytest
from conftest import save_screenshot
from PySide6.QtGui import QAction

from console.app import settings_for
from console.main_window import MainWindow
from core.clock import ScaledClock
from core.dataservices.client import DataServicesClient
from core.dataservices.config import DataServicesSettings
from core.dataservices.fleet import ModuleBeat, fleet
from core.dataservices.link import DataServicesLink
from core.orders import Order, OrderStatus, Parameter
from core.runtime import Runtime
from core.store import DB_FILENAME, Store
from core.workcell import parse_workcell

SLOW_READERS = """
name: slow readers
heartbeat_interval: 10m
stale_timeout: 2h
instruments:
  - {id: Reader1, kind: PlateReader, driver: simulated, options: {connect_time: 0s},
     capabilities: {PlateReader.ReadPlate: {duration: 2h, jitter: 0s}}}
  - {id: Reader2, kind: PlateReader, driver: simulated, options: {connect_time: 0s},
     capabilities: {PlateReader.ReadPlate: {duration: 2h, jitter: 0s}}}
"""
LEASE = 30.0


def _until(check, what: str, timeout: float = 20.0):  # noqa: ANN001, ANN202
    return fleetkit.until(check, timeout, what)


@pytest.fixture
def consoles(store, data_dir, tmp_path, qrun):
    """This console (sealer cell, embedded Data Services) and cell-b (two readers, remote)."""
    rt = Runtime.build(data_dir, store=store, clock=ScaledClock(200),
                       workcell=fleetkit.FLEET / "sealer.yaml", metrics=False)
    link = DataServicesLink(rt, None, module_id="cell-a", port=0, lease=LEASE)
    qrun(rt.start(templates_dir=fleetkit.TEMPLATES, link=link))
    b_dir = tmp_path / "cell-b"
    b_dir.mkdir()
    other = Runtime.build(b_dir, store=Store(b_dir / DB_FILENAME).open(),
                          workcell=parse_workcell(SLOW_READERS), metrics=False)
    b_link = DataServicesLink(other, DataServicesSettings(link.state.url, "test"), module_id="cell-b",
                              poll_interval=0.1, lease=6.0)
    qrun(other.start(templates_dir=fleetkit.TEMPLATES, link=b_link))
    yield rt, link, other, b_link
    qrun(other.close())
    other.store.close()
    qrun(rt.close())


def test_fleet_panel_lists_the_other_workcells_and_their_orders_open_read_only(consoles, data_dir, qtbot, qrun):
    rt, link, other, b_link = consoles
    url = link.state.url

    async def setup():  # noqa: ANN202
        async with DataServicesClient(url) as lims:
            read = await lims.create_order(Order(templateName="Fleet Read",
                                                 inputParameters=[Parameter(name="plate", value="P7")]))
            # cell-b claims it (this cell has no reader) and starts reading (for two hours)
            await _until(lambda: _heartbeat_says_running(lims, read), "cell-b's heartbeat names the order")
            now = time.time()
            # a console that was killed (its heartbeats stopped) and one that left
            await lims.publish_event(ModuleBeat("cell-gone", "inst-gone", "bench-7", 4242, now - 2 * LEASE / 3,
                                                LEASE / 2, queue_depth=3, running=1, running_orders=("Order_09999",),
                                                instruments={"Incubator1": "Busy", "Arm1": "Error"},
                                                workcell="incubator cell").event())
            await lims.publish_event(ModuleBeat("cell-left", "inst-left", "bench-8", 4343, now - 5, 0.0,
                                                instruments={"Sealer9": "Ready"}).event())
            return read

    read = qrun(setup(), 30_000)
    w = MainWindow(rt, settings_for(data_dir))
    qtbot.addWidget(w)
    w.show()
    qrun(w.load_orders())
    panel = w.fleet
    w.go_to("Fleet")
    qtbot.waitUntil(lambda: panel.reads_done >= 1, timeout=10_000)
    assert panel.refresh_timer.isActive() and panel.refresh_timer.interval() == int(LEASE / 3 * 1000), \
        "refreshed once per heartbeat period while shown"
    rows = {panel.tree.topLevelItem(i).text(0): panel.tree.topLevelItem(i)
            for i in range(panel.tree.topLevelItemCount())}
    assert set(rows) == {"cell-b", "cell-gone", "cell-left"}, "the other workcells, not this one"
    b = rows["cell-b"]
    assert [b.text(c) for c in range(1, 8)] == ["Alive", b.text(2), "0", "1", f"1: {read}", "2: 1 Busy, 1 Ready",
                                                socket.gethostname()]
    children = {b.child(i).text(0): b.child(i).text(1) for i in range(b.childCount())}
    assert set(children) == {"Reader1", "Reader2"} and sorted(children.values()) == ["Busy", "Ready"]
    assert "slow readers" in b.toolTip(0) and "Fleet Read@1" in b.toolTip(0)
    gone = rows["cell-gone"]
    assert (gone.text(7), gone.text(1), gone.text(3), gone.text(5)) == ("bench-7", "Stale", "3", "1: Order_09999")
    assert gone.text(2).endswith("ago") and gone.text(6) == "2: 1 Busy, 1 Error"
    assert rows["cell-left"].text(1) == "Stopped"
    assert "3 other workcells" in panel.summary.text() and "1 alive, 1 stale, 1 stopped" in panel.summary.text()
    assert "This console is cell-a" in panel.summary.text()

    # no polling faster than needed: a second tick within the heartbeat period reads nothing
    assert link.client is not None
    sent = sum(link.client.sent.values())
    panel.tick()
    qtbot.waitUntil(lambda: panel.reads_done >= 2, timeout=10_000)
    assert sum(link.client.sent.values()) == sent

    for theme in ("light", "dark"):
        w.set_theme(theme)
        for size in ((1280, 720), (1920, 1080)):
            w.resize(*size)
            qtbot.wait(80)
            save_screenshot(w, f"fleet-{size[0]}x{size[1]}-{theme}")
    w.set_theme("light")

    # cell-b's order (in this console's own Data Services) opens read-only, naming its owner
    w.docks["Detail"].raise_()
    w.detail.show_order(read)
    qtbot.waitUntil(lambda: w.detail.data is not None and w.detail.data.order_id == read, timeout=10_000)
    detail = w.detail
    assert detail.data.order.status is OrderStatus.Running
    assert detail.owner_line.isVisible()
    assert "cell-b" in detail.owner_line.text() and "slow readers" in detail.owner_line.text()
    assert "read-only" in detail.owner_line.text()
    assert not any(button.isEnabled() for button in detail.buttons.values())
    assert not detail.why_box.isVisible(), "its own workcell decides when it runs"
    assert "Owned by workcell cell-b" in detail.buttons["cancel"].toolTip()
    save_screenshot(w, "fleet-detail-owner-1920x1080-light")

    # hidden: no refresh timer
    w.docks["Fleet"].hide()
    qtbot.waitUntil(lambda: not panel.refresh_timer.isActive(), timeout=5_000)
    w.close()


async def _heartbeat_says_running(client: DataServicesClient, order_id: str) -> bool:
    modules = {m.beat.module_id: m for m in await fleet(client, lease=LEASE)}
    b = modules.get("cell-b")
    return b is not None and order_id in b.beat.running_orders


def test_a_console_alone_on_its_embedded_data_services_says_no_other_workcell_shares_it(store, data_dir, qtbot,
                                                                                         qrun):
    rt = Runtime.build(data_dir, store=store, clock=ScaledClock(200),
                       workcell=fleetkit.FLEET / "sealer.yaml", metrics=False)
    link = DataServicesLink(rt, None, port=0)
    w = MainWindow(rt, settings_for(data_dir))
    qtbot.addWidget(w)
    w.show()
    w.go_to("Fleet")
    assert "Not connected to a Data Services yet" in w.fleet.summary.text()
    qrun(rt.start(templates_dir=fleetkit.TEMPLATES, link=link))
    qrun(w.load_orders())
    w.fleet.refresh()
    qtbot.waitUntil(lambda: w.fleet.reads_done >= 1, timeout=10_000)
    text = w.fleet.summary.text()
    assert "No other workcell shares this Data Services" in text and "embedded in this console" in text
    assert not w.fleet.tree.isVisible()
    save_screenshot(w.fleet, "fleet-alone")
    w.close()
    qrun(rt.close())


ONE_SLOW_READER = """
name: one slow reader
heartbeat_interval: 10m
stale_timeout: 2h
instruments:
  - {id: Reader1, kind: PlateReader, driver: simulated, options: {connect_time: 0s},
     capabilities: {PlateReader.ReadPlate: {duration: 2h, jitter: 0s}}}
"""


def test_a_copy_another_workcell_took_over_opens_read_only_naming_it(tmp_path, data_dir, qtbot, qrun):
    """cell-a claims two reads and starts one; it stops; cell-b takes over the read cell-a never
    started. Restarted, cell-a's copy of that order shows in Detail as cell-b's, read-only."""
    shared = Store(tmp_path / "shared" / DB_FILENAME).open()
    from core.dataservices.server import EmbeddedDataServices

    server = EmbeddedDataServices(shared, port=0)
    url = qrun(server.start())
    settings = DataServicesSettings(url, "test")
    cell = parse_workcell(ONE_SLOW_READER)

    def console(name: str, d) -> tuple[Runtime, DataServicesLink]:  # noqa: ANN001
        d.mkdir(exist_ok=True)
        rt = Runtime.build(d, store=Store(d / DB_FILENAME).open(), workcell=cell, metrics=False)
        return rt, DataServicesLink(rt, settings, module_id=name, poll_interval=0.1, lease=1.5)

    a, a_link = console("cell-a", data_dir)
    qrun(a.start(templates_dir=fleetkit.TEMPLATES, link=a_link))

    async def claim_two():  # noqa: ANN202
        async with DataServicesClient(url) as lims:
            ids = [await lims.create_order(Order(templateName="Fleet Read")) for _ in range(2)]
        await _until(lambda: _true(len(a_link._held) == 2 and len(a_link._started) == 1
                                   and len(a.store.runs_for_orders(list(a_link._held))) == 2),
                     "cell-a holds both, made a run for each and started one")
        return ids

    qrun(claim_two(), 30_000)
    mirror = next(local for local in a_link._held if local not in a_link._started)
    qrun(a.close())
    b, b_link = console("cell-b", tmp_path / "cell-b")
    qrun(b.start(templates_dir=fleetkit.TEMPLATES, link=b_link))
    qrun(_until(lambda: _true(b_link.taken_over == 1), "cell-b takes over the read cell-a never started"),
         30_000)
    a2, a2_link = console("cell-a", data_dir)
    qrun(a2.start(templates_dir=fleetkit.TEMPLATES, link=a2_link))
    w = MainWindow(a2, settings_for(data_dir))
    qtbot.addWidget(w)
    w.show()
    qrun(w.load_orders())
    try:
        qtbot.waitUntil(lambda: a2.store.get_order(mirror).status is OrderStatus.Canceled, timeout=10_000)
        w.docks["Detail"].raise_()
        w.detail.show_order(mirror)
        qtbot.waitUntil(lambda: w.detail.data is not None and w.detail.data.order_id == mirror, timeout=10_000)
        detail = w.detail
        assert detail.owner_line.isVisible() and "cell-b" in detail.owner_line.text()
        assert detail.data.owner is not None and detail.data.owner.beat.module_id == "cell-b"
        assert not any(button.isEnabled() for button in detail.buttons.values()), "no Retry of cell-b's order"
        run = detail.data.run_id
        assert run is not None and run != mirror
        detail.show_order(run)  # its run too
        qtbot.waitUntil(lambda: w.detail.data is not None and w.detail.data.order_id == run, timeout=10_000)
        assert "cell-b" in detail.owner_line.text() and not detail.buttons["retry"].isEnabled()
        save_screenshot(w, "fleet-taken-over-detail")
        # Jobs: the run (which stands for the copy) offers nothing but its details
        jobs = w.jobs
        jobs.filter_bar.choose_view("All orders")  # it opens on "Needs attention"
        qtbot.waitUntil(lambda: jobs.model.row_of(run) is not None, timeout=10_000)
        assert jobs.owner_elsewhere(run) == "cell-b" and not jobs.is_managed(run)
        jobs.select_order(run)
        assert not jobs.bulk_buttons["retry"].isEnabled()
        menu = jobs.build_menu(jobs.model.row_of(run))
        try:
            assert any("owned by cell-b" in a.text() for a in menu.actions() if a.isSeparator())
            retry = menu.findChild(QAction, "retry")
            assert retry is not None and not retry.isEnabled()
        finally:
            menu.deleteLater()
        # this console's own run is still its own
        own = next(r for r in a2.store.runs_for_orders(list(a2_link._held)).values())
        assert jobs.owner_elsewhere(own) is None and jobs.is_managed(own)
    finally:
        w.close()
        qrun(a2.close())
        qrun(b.close())
        qrun(server.stop())
        shared.close()


async def _true(value: bool) -> bool:
    return value


def test_the_console_that_runs_the_data_services_is_named_so(consoles, data_dir, qtbot, qrun):
    rt, link, _other, _b_link = consoles

    async def beat():  # noqa: ANN202
        async with DataServicesClient(link.state.url) as lims:
            await lims.publish_event(ModuleBeat("cell-hub", "inst-hub", "hub-pc", 5151, time.time(), LEASE,
                                                hosts_data_services=True).event())

    qrun(beat(), 30_000)
    w = MainWindow(rt, settings_for(data_dir))
    qtbot.addWidget(w)
    w.show()
    qrun(w.load_orders())
    panel = w.fleet
    w.go_to("Fleet")
    qtbot.waitUntil(lambda: panel.reads_done >= 1 and panel.tree.topLevelItemCount() >= 2, timeout=10_000)
    rows = {panel.tree.topLevelItem(i).text(0): panel.tree.topLevelItem(i)
            for i in range(panel.tree.topLevelItemCount())}
    assert rows["cell-hub"].text(7) == "hub-pc · runs the Data Services"
    assert "runs the Data Services the workcells share" in rows["cell-hub"].toolTip(0)
    assert rows["cell-b"].text(7) == socket.gethostname(), "a console working it remotely is not named so"
