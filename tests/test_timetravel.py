"""Time travel: moments rebuilt from snapshots plus replay match the log read naively, on real
SQLite files — with no snapshots yet, with stale snapshots after a backdated import, after a
SIGKILL and reopen — and the CSV export of a period."""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core import demo, timetravel
from core.errors import InputError
from core.inbox import NewItem, answer_op, open_item_op
from core.orders import Order, OrderStatus
from core.store import Store
from core.timetravel import OPEN_STATUSES, TimeMachine, parse_moment

ROOT = Path(__file__).resolve().parent.parent
WRITER = Path(__file__).parent / "helpers" / "timetravel_writer.py"
T0 = 1_800_000_000.0


class ManualClock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def now(self) -> float:
        return self.t


def truth(db: Path, at: float) -> tuple[dict[str, int], dict[int, int]]:
    """Open orders and counts by status at ``at``, read naively: each order's last transition."""
    conn = sqlite3.connect(db)
    last: dict[str, int] = {}
    for oid, to in conn.execute("SELECT order_id, to_status FROM transitions WHERE at <= ? ORDER BY at, seq",
                                (at,)):
        last[oid] = to
    conn.close()
    counts: dict[int, int] = {}
    for status in last.values():
        counts[status] = counts.get(status, 0) + 1
    return {o: s for o, s in last.items() if s in OPEN_STATUSES}, counts


def same(moment, expected) -> None:
    open_, counts = expected
    assert {o: s for o, (s, _t) in moment.open_orders.items()} == open_
    assert {k: v for k, v in moment.state.counts.items() if v} == counts


def history(store: Store, clock: ManualClock, n: int, seed: int = 1) -> list[str]:
    """``n`` writes: new orders and random transitions, the clock stepping 0–3 s (sometimes not at all)."""
    rng = random.Random(seed)
    open_orders: list[str] = []
    made: list[str] = []
    for _ in range(n):
        clock.t += rng.choice([0.0, 0.5, 1.0, 3.0])
        if not open_orders or rng.random() < 0.3:
            order, _ = store.write_sync(store.new_order_op(Order(templateName="Assay"), who="op"))
            open_orders.append(order.identifier)
            made.append(order.identifier)
        else:
            oid = rng.choice(open_orders)
            to = rng.choice([OrderStatus.Scheduled, OrderStatus.Running, OrderStatus.Complete,
                             OrderStatus.Error, OrderStatus.Canceled])
            store.write_sync(store.status_op(oid, to, who="op"))
            if to not in (OrderStatus.Scheduled, OrderStatus.Running):
                open_orders.remove(oid)
    return made


@pytest.fixture
def clocked(tmp_path):
    """A store file on a manual clock (commits without fsync: the file is real, the test fast)."""
    clock = ManualClock()
    store = Store(tmp_path / "tt.sqlite3", synchronous="OFF").open()
    store.clock = clock
    yield store, clock
    store.close()


def test_no_snapshots_yet_replays_from_the_start(clocked):
    store, clock = clocked
    history(store, clock, 400)
    machine = TimeMachine(store, every=100)
    assert machine.snapshot_count() == 0
    for at in (T0 - 1, T0 + 50, T0 + 300, clock.t + 10):
        moment = machine.moment_sync(at)
        same(moment, truth(store.path, at))
        assert moment.snapshot_at is None
    assert machine.moment_sync(T0 - 1).open_orders == {}


def test_snapshots_plus_replay_match_the_log_at_every_moment(clocked):
    store, clock = clocked
    history(store, clock, 2600)  # more snapshots than one commit writes
    machine = TimeMachine(store, every=100)
    report = machine.refresh_sync()
    assert report.built > timetravel.WRITE_BATCH
    total = store.read_sync(lambda c: c.execute("SELECT count(*) FROM transitions").fetchone()[0])
    assert report.built == total // 100 == machine.snapshot_count()
    rng = random.Random(5)
    end = clock.t
    for _ in range(40):
        at = rng.uniform(T0, end)
        moment = machine.moment_sync(at)
        same(moment, truth(store.path, at))
        assert moment.replayed < 100 + 50  # from the snapshot before, never the whole log
        baseline = machine.replay_from_start_sync(at)
        assert baseline.replayed > moment.replayed or moment.snapshot_at is None  # before the first snapshot
        assert baseline.open_orders == moment.open_orders
    # a second refresh with nothing new builds nothing
    assert machine.refresh_sync().built == 0


def test_scrubbing_forward_and_back_replays_only_what_lies_between(clocked):
    store, clock = clocked
    history(store, clock, 1200)
    machine = TimeMachine(store, every=100)
    machine.refresh_sync()
    moment = machine.moment_sync(T0 + 100)
    at = moment.at
    for step in [5, 5, 30, -20, 60, -200, 3, 3]:
        at += step
        nxt = machine.moment_sync(at, previous=moment)
        same(nxt, truth(store.path, at))
        if step > 0:
            assert nxt.snapshot_at is None  # replayed from the moment before: only the rows between
            assert nxt.replayed == store.read_sync(lambda c, a=moment.at, b=at: c.execute(
                "SELECT count(*) FROM transitions WHERE at > ? AND at <= ?", (a, b)).fetchone()[0])
        moment = nxt


def test_writes_after_a_refresh_and_a_backdated_import_are_seen(clocked):
    store, clock = clocked
    history(store, clock, 800)
    machine = TimeMachine(store, every=100)
    machine.refresh_sync()
    # live writes after the refresh
    history(store, clock, 200, seed=9)
    same(machine.moment_sync(clock.t), truth(store.path, clock.t))
    # a bulk import of orders whose transitions lie in the past (before most snapshots)
    demo.generate(store, 120, seed=3)
    backdated = store.read_sync(lambda c: c.execute("SELECT min(at) FROM transitions WHERE who='demo'").fetchone()[0])
    for at in (T0 + 300, clock.t, backdated + 10):
        same(machine.moment_sync(at), truth(store.path, at))
    before = machine.snapshot_count()
    report = machine.refresh_sync()
    assert report.dropped > 0 or before == 0
    for at in (T0 + 300, clock.t):
        same(machine.moment_sync(at), truth(store.path, at))


def test_instruments_inbox_and_actions_at_a_moment(clocked):
    store, clock = clocked
    order, _ = store.write_sync(store.new_order_op(Order(templateName="Read"), who="op"))
    oid = order.identifier

    def log(inst: str, frm: str | None, to: str, orders: list[str]) -> None:
        store.write_sync(lambda c: c.execute(
            "INSERT INTO instrument_log (instrument_id, at, from_status, to_status, detail, order_ids) "
            "VALUES (?,?,?,?,?,?)", (inst, clock.t, frm, to, f"{to.lower()}", json.dumps(orders))))

    clock.t += 10
    log("Reader 1", None, "Idle", [])
    clock.t += 10
    store.write_sync(store.status_op(oid, OrderStatus.Running, who="op"))
    log("Reader 1", "Idle", "Busy", [oid])
    item = store.write_sync(open_item_op(NewItem(kind="prompt", title="Load plate PL123", order_id=oid), clock.t))
    store.write_sync(store.audit_op("alice", "pause run", target=oid, reason="check the lid"))
    busy_at = clock.t
    clock.t += 60
    store.write_sync(answer_op(item, "alice", {"choice": "done"}, clock.t))
    store.write_sync(store.status_op(oid, OrderStatus.Complete, who="op"))
    log("Reader 1", "Busy", "Idle", [])
    machine = TimeMachine(store, every=100, window=600)

    during = machine.moment_sync(busy_at + 1)
    assert during.instruments["Reader 1"].status == "Busy"
    assert during.running_on("Reader 1") == (oid,)
    assert [i.title for i in during.inbox] == ["Load plate PL123"]
    assert during.inbox[0].answered_at == clock.t
    assert [(a.who, a.action, a.target) for a in during.actions] == [("alice", "pause run", oid)]
    assert during.status_of(oid) is OrderStatus.Running
    assert during.rows[oid][2] == "Read"  # template name for the view

    after = machine.moment_sync(clock.t)
    assert after.instruments["Reader 1"].status == "Idle"
    assert after.inbox == []
    assert after.status_of(oid) is None and after.count(OrderStatus.Complete) == 1
    assert [r.to_status for r in after.recent][:1] == [int(OrderStatus.Complete)]

    before = machine.moment_sync(T0 - 5)
    assert before.instruments["Reader 1"].status is None
    assert before.inbox == [] and before.actions == [] and before.open_orders == {}


def test_export_of_a_period_writes_transitions_and_actions_in_time_order(clocked, tmp_path):
    store, clock = clocked
    made = history(store, clock, 60)
    clock.t += 1
    store.write_sync(store.audit_op("bob", "cancel", target=made[0], reason="wrong plate"))
    start, end = T0 + 20, clock.t
    machine = TimeMachine(store)
    report = machine.export_sync(tmp_path / "out" / "period.csv", start, end)
    with open(report.path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    expected = store.read_sync(lambda c: c.execute(
        "SELECT count(*) FROM transitions WHERE at >= ? AND at <= ?", (start, end)).fetchone()[0])
    assert report.transitions == expected == sum(r["kind"] == "transition" for r in rows)
    assert report.actions == 1
    action = next(r for r in rows if r["kind"] == "action")
    assert (action["who"], action["to_status_or_action"], action["why_or_reason"]) == ("bob", "cancel", "wrong plate")
    times = [float(r["at_epoch"]) for r in rows]
    assert times == sorted(times) and min(times) >= start and max(times) <= end
    assert not list((tmp_path / "out").glob("*.partial"))
    with pytest.raises(InputError, match="end"):
        machine.export_sync(tmp_path / "bad.csv", end, start)
    assert not (tmp_path / "bad.csv").exists()


def test_go_to_field_parses_and_names_bad_input():
    from datetime import UTC

    now = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC
    assert parse_moment("-2h", now=now) == now - 7200
    assert parse_moment("- 30 m", now=now) == now - 1800
    assert parse_moment("2027-01-15 03:10", now=now, tz=UTC) == now - 4 * 3600 - 50 * 60
    assert parse_moment("03:10", now=now, tz=UTC) == now - 4 * 3600 - 50 * 60
    assert parse_moment("09:00", now=now, tz=UTC) == now + 3600 - 86400  # the last 09:00 before now
    assert parse_moment("2027-01-15T08:00:00Z", now=now) == now
    for bad in ("", "yesterday", "25:00", "2027-13-01"):
        with pytest.raises(InputError, match="go to"):
            parse_moment(bad, now=now)


def test_every_below_a_hundred_is_refused(clocked):
    with pytest.raises(ValueError, match="every"):
        TimeMachine(clocked[0], every=10)


def _run_and_kill(db: Path, seed: int, kill_after: int) -> tuple[int, int]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, str(WRITER), str(db), str(seed)], stdout=subprocess.PIPE,
                            text=True, env=env)
    acks = snaps = 0
    deadline = time.monotonic() + 60
    assert proc.stdout is not None
    while acks < kill_after and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        acks += line.startswith("ACK")
        snaps += line.startswith("SNAP")
    proc.send_signal(signal.SIGKILL)
    proc.stdout.read()
    assert proc.wait() == -signal.SIGKILL, "the writer ended before the kill"
    return acks, snaps


def test_moments_stay_right_after_a_kill_and_reopen(tmp_path):
    db = tmp_path / "kill.sqlite3"
    acks, snaps = _run_and_kill(db, 11, 700)
    assert acks >= 700 and snaps >= 2
    with Store(db).open() as store:
        machine = TimeMachine(store, every=100)
        assert machine.snapshot_count() > 0
        first, last = machine.reach_sync()
        rng = random.Random(2)
        for at in [first, last, *(rng.uniform(first, last) for _ in range(15))]:
            same(machine.moment_sync(at), truth(db, at))
        machine.refresh_sync()
        for at in (last, rng.uniform(first, last)):
            same(machine.moment_sync(at), truth(db, at))
    # the killed writer's rows written after its last refresh, and then more: still right
    acks, _ = _run_and_kill(db, 12, 300)
    with Store(db).open() as store:
        machine = TimeMachine(store, every=100)
        first, last = machine.reach_sync()
        for at in (last, (first + last) / 2):
            same(machine.moment_sync(at), truth(db, at))


def truth_with_archive(db: Path, archive: Path, at: float) -> tuple[dict[str, int], dict[int, int]]:
    """:func:`truth` over the store's transitions and the archive's (each transition once)."""
    conn = sqlite3.connect(db)
    conn.execute("ATTACH ? AS archive", (str(archive),))
    last: dict[str, int] = {}
    for oid, to in conn.execute(
            "SELECT order_id, to_status FROM (SELECT * FROM main.transitions UNION SELECT * FROM archive.transitions) "
            "WHERE at <= ? ORDER BY at, seq", (at,)):
        last[oid] = to
    conn.close()
    counts: dict[int, int] = {}
    for status in last.values():
        counts[status] = counts.get(status, 0) + 1
    return {o: s for o, s in last.items() if s in OPEN_STATUSES}, counts


def test_archived_orders_stand_in_past_moments_with_their_status_then(clocked, tmp_path):
    """Orders archived since stood open then: every moment before the cut-off lists them with
    their status then, from snapshots or from the start, and the export of a period holds their
    transitions. Without the archive file the moment says so and shows the store's orders."""
    from core.archive import ARCHIVE_FILENAME, Archiver

    store, clock = clocked
    history(store, clock, 1500)
    cut = T0 + (clock.t - T0) * 0.6
    result = Archiver(store).run_sync(cut)
    assert result.orders > 50
    archive = store.path.with_name(ARCHIVE_FILENAME)
    archived = {r[0] for r in sqlite3.connect(archive).execute("SELECT id FROM orders")}
    machine = TimeMachine(store, every=100, window=30)
    rng = random.Random(8)
    moments = [rng.uniform(T0, cut) for _ in range(12)]
    shown_archived = 0
    for use_snapshots in (False, True):
        if use_snapshots:
            assert machine.refresh_sync().built > 0
        for at in moments:
            moment = machine.moment_sync(at)
            same(moment, truth_with_archive(store.path, archive, at))
            assert moment.archive is not None and moment.archive.state == "ok" and moment.archive_note is None
            if use_snapshots:
                assert moment.replayed < 100 + 50  # from a snapshot that holds the archived orders
            open_archived = archived & set(moment.open_orders)
            shown_archived += len(open_archived)
            running = {o for o in open_archived if moment.status_of(o) is OrderStatus.Running}
            assert running <= set(moment.rows)  # their rows are there for the views (template, instrument)
    assert shown_archived > 20, "the moments before the cut-off held archived orders open then"
    # the recent transitions and the export of a period include the archived orders' rows
    at = moments[0]
    recent = {r.seq for r in machine.moment_sync(at).recent}
    conn = sqlite3.connect(archive)
    in_window = {r[0] for r in conn.execute("SELECT seq FROM transitions WHERE at > ? AND at <= ?", (at - 30, at))}
    conn.close()
    assert in_window <= recent
    report = machine.export_sync(tmp_path / "period.csv", T0, cut)
    with open(report.path, newline="") as fh:
        exported = {r["order_or_target"] for r in csv.DictReader(fh) if r["kind"] == "transition"}
    assert archived <= exported
    assert machine.reach_sync()[0] <= T0 + 3.0

    # no archive file: the past is the store's, and says what it leaves out
    moved = archive.with_name("elsewhere.sqlite3")
    archive.rename(moved)
    for suffix in ("-wal", "-shm"):
        Path(str(archive) + suffix).unlink(missing_ok=True)
    moment = machine.moment_sync(moments[1])
    same(moment, truth(store.path, moments[1]))
    assert moment.archive is not None and moment.archive.state == "missing"
    assert f"{result.orders:,} archived orders are left out" in moment.archive_note
    assert str(archive) in moment.archive_note
    # damaged: not a database
    archive.write_bytes(b"this is not a database" * 100)
    moment = machine.moment_sync(moments[1])
    same(moment, truth(store.path, moments[1]))
    assert moment.archive.state == "damaged" and "cannot be read" in moment.archive_note
    # back in place: the archived orders are part of the past again
    archive.unlink()
    moved.rename(archive)
    same(machine.moment_sync(moments[1]), truth_with_archive(store.path, archive, moments[1]))
