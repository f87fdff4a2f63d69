"""Search over all history, the live window and the Dashboard's counts, on a real store."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time

import pytest

from core.history import (
    ARCHIVED_COLUMN,
    HistoryQuery,
    HistorySearch,
    SearchSuperseded,
    fts_expression,
)
from core.orders import Order, OrderStatus
from core.store import APPLICATION_ID, MIGRATIONS, Store, _split_sql

DAY = 86400.0
NOW = time.time()


class At:
    """A clock standing still at ``t``, so the store writes the times a test chooses."""

    def __init__(self, t: float) -> None:
        self.t = t

    def now(self) -> float:
        return self.t


def run_ops(store: Store, *, at: float, status: OrderStatus = OrderStatus.Complete, steps: int = 3,
            template: str = "ELISA Readout", instrument: str = "Reader 1", details: str | None = None,
            notes: str | None = None, took: float = 600.0):
    """The write operation for one run (a parent order and its step orders) created at ``at``,
    ended ``took`` seconds later in ``status`` (steps Complete; the last one in Error for an
    Error run). Uses the store's own operations, so the triggers run as in production."""

    def op(conn: sqlite3.Connection) -> list[str]:
        try:
            store.clock = At(at)
            root, _ = store.new_order_op(Order(templateName=template, notes=notes), who="lims")(conn)
            ids = [root.identifier]
            for i in range(steps):
                child, _ = store.new_order_op(Order(templateName=f"{instrument.split()[0]}.Step{i}",
                                                    parentIdentifier=root.identifier), who="engine")(conn)
                ids.append(child.identifier)
            if status in (OrderStatus.Created, OrderStatus.Scheduled):
                if status is OrderStatus.Scheduled:
                    store.status_op(root.identifier, status, who="engine")(conn)
                return ids
            store.clock = At(at + took / 2)
            store.status_op(root.identifier, OrderStatus.Running, who="engine")(conn)
            for number, cid in enumerate(ids[1:], start=1):
                if status is OrderStatus.Canceled:
                    store.status_op(cid, OrderStatus.Canceled, who="alice", why=details)(conn)
                    continue
                store.status_op(cid, OrderStatus.Running, who="engine",
                                changes={"assignedTo": instrument})(conn)
                last = number == len(ids) - 1
                final = OrderStatus.Error if status is OrderStatus.Error and last else OrderStatus.Complete
                if status is OrderStatus.Running and last:
                    continue
                store.status_op(cid, final, who="engine", why=details if final is OrderStatus.Error else None)(conn)
            if status is not OrderStatus.Running:
                store.clock = At(at + took)
                store.status_op(root.identifier, status, who="engine", why=details)(conn)
            return ids
        finally:
            store.clock = None

    return op


def add_run(store: Store, **kwargs) -> list[str]:
    return store.write_sync(run_ops(store, **kwargs))


def ids_of(page) -> list[str]:
    return [r[0] for r in page.rows]


@pytest.fixture
def history(store):
    """A store with runs over 200 days: old finished ones, recent ones, unfinished ones."""
    made = {
        "old_elisa": add_run(store, at=NOW - 200 * DAY, template="ELISA Readout", instrument="Reader 1"),
        "old_error": add_run(store, at=NOW - 150 * DAY, status=OrderStatus.Error, template="Compound Screen",
                             instrument="Hamilton STAR 1", details="Tip pickup failed"),
        "old_cancel": add_run(store, at=NOW - 100 * DAY, status=OrderStatus.Canceled,
                              template="Plate Replication", instrument="PlateLoc", details="operator stop"),
        "mid_notes": add_run(store, at=NOW - 30 * DAY, template="Cell Culture Passage",
                             instrument="Cytomat 1", notes="Monday batch for Dr. Müller"),
        "recent": add_run(store, at=NOW - 2 * DAY, template="ELISA Readout", instrument="Reader 1"),
        "recent_error": add_run(store, at=NOW - 3600, status=OrderStatus.Error, template="Compound Screen",
                                instrument="Hamilton STAR 2", details="Door open", took=60),
        "running_old": add_run(store, at=NOW - 40 * DAY, status=OrderStatus.Running,
                               template="Compound Screen", instrument="Hamilton STAR 1"),
        "waiting": add_run(store, at=NOW - 60, status=OrderStatus.Scheduled, template="ELISA Readout"),
    }
    return HistorySearch(store), made


def everything(search: HistorySearch, query: HistoryQuery) -> list[str]:
    """Every match, page by page through the cursor."""
    found: list[str] = []
    cursor = None
    for _ in range(100):
        page = search.search_sync(query, cursor)
        found += ids_of(page)
        cursor = page.next_cursor
        if cursor is None:
            return found
    raise AssertionError("paging did not end")


def test_text_search_finds_id_template_instrument_details_and_notes(history):
    search, made = history
    assert ids_of(search.search_sync(HistoryQuery(text="tip pickup"))) == [made["old_error"][-1],
                                                                           made["old_error"][0]]
    assert ids_of(search.search_sync(HistoryQuery(text="door"))) == [made["recent_error"][-1],
                                                                     made["recent_error"][0]]
    assert ids_of(search.search_sync(HistoryQuery(text="muller monday"))) == [made["mid_notes"][0]]
    assert ids_of(search.search_sync(HistoryQuery(text="plate repl*"))) == [made["old_cancel"][0]]
    assert ids_of(search.search_sync(HistoryQuery(text="plate repl"))) == []  # whole words
    assert ids_of(search.search_sync(HistoryQuery(text=made["old_elisa"][2]))) == [made["old_elisa"][2]]
    hamilton = set(search.search_sync(HistoryQuery(text="hamilton star 1")).rows[i][0] for i in range(3))
    assert hamilton <= set(made["old_error"][1:] + made["running_old"][1:])


def test_pages_are_newest_first_and_the_cursor_walks_every_match_once(history, store):
    search, made = history
    all_ids = [r[0] for r in store.order_rows(order_by="seq DESC")]
    for limit in (1, 3, 7, 100):
        assert everything(search, HistoryQuery(limit=limit)) == all_ids
    steps = everything(search, HistoryQuery(text="engine step", limit=2, text_mode="like"))
    assert steps == []  # LIKE looks at the same five fields; "engine" is in none of them
    reader = everything(search, HistoryQuery(text="reader", limit=2))  # Reader.StepN or Reader 1
    assert reader == [i for i in all_ids if i in made["waiting"][1:] + made["recent"][1:] + made["old_elisa"][1:]]


def test_filters_status_template_and_time_ranges(history, store):
    search, made = history
    errors = everything(search, HistoryQuery(statuses=frozenset({OrderStatus.Error}), limit=2))
    assert errors == [made["recent_error"][-1], made["recent_error"][0], made["old_error"][-1], made["old_error"][0]]
    two = everything(search, HistoryQuery(statuses=frozenset({OrderStatus.Error, OrderStatus.Canceled}), limit=3))
    assert sorted(two) == sorted(errors + made["old_cancel"])
    assert two == sorted(two, key=lambda i: int(i.split("_")[1]), reverse=True)
    screens = everything(search, HistoryQuery(templates=frozenset({"Compound Screen", "Plate Replication"})))
    assert screens == [made["running_old"][0], made["recent_error"][0], made["old_cancel"][0], made["old_error"][0]]
    created = everything(search, HistoryQuery(created_from=NOW - 160 * DAY, created_to=NOW - 90 * DAY))
    assert sorted(created) == sorted(made["old_error"] + made["old_cancel"])
    ended = everything(search, HistoryQuery(ended_from=NOW - 3 * DAY, text="reader"))
    assert ended == list(reversed(made["recent"][1:]))
    search.range_rows_cap = 1  # every range is "wide": it leads only when far back, the results are the same
    assert sorted(everything(search, HistoryQuery(created_from=NOW - 160 * DAY, created_to=NOW - 90 * DAY))) \
        == sorted(created)
    assert everything(search, HistoryQuery(ended_from=NOW - 3 * DAY, text="reader")) == ended


def test_a_wide_time_range_far_back_leads_the_query_and_one_near_now_filters_the_scan(history, store):
    """Over its cap, a range leads the query when more orders came after it than it holds (the
    newest-first scan would walk them all first: 3.6 s for 3 days of a 10,000,000-order store
    200 days back); near now the scan stays. The pages are the same either way."""
    from core.history import _page_sql

    search, made = history
    search.range_rows_cap = 2

    def leading(query: HistoryQuery) -> str:
        sql = store.read_sync(lambda c: _page_sql(c, "main", query, None, search.range_rows_cap))[0][0]
        return sql.split("INDEXED BY ")[1].split()[0]

    far = HistoryQuery(created_from=NOW - 160 * DAY, created_to=NOW - 90 * DAY)
    assert leading(far) == "orders_by_created"
    assert sorted(everything(search, far)) == sorted(made["old_error"] + made["old_cancel"])
    near = HistoryQuery(created_from=NOW - 45 * DAY, created_to=NOW - 1 * DAY)
    assert leading(near) == "orders_by_seq"
    assert sorted(everything(search, near)) == sorted(made["mid_notes"] + made["running_old"] + made["recent"])
    assert leading(HistoryQuery(created_from=NOW - 3 * DAY)) == "orders_by_seq"  # open-ended: up to now


def test_fts_and_like_agree_on_whole_words(history):
    search, _ = history
    for text in ("door", "Reader", "hamilton", "tip pickup", "müller", "Order_00003", "nothing-like-it"):
        fts = everything(search, HistoryQuery(text=text, limit=4))
        like = everything(search, HistoryQuery(text=text, limit=4, text_mode="like"))
        assert fts == like, text


def test_fts_index_follows_transitions_updates_and_new_orders(store):
    search = HistorySearch(store)
    ids = add_run(store, at=NOW - DAY, status=OrderStatus.Error, details="Plate not detected")
    assert set(ids_of(search.search_sync(HistoryQuery(text="detected")))) == {ids[0], ids[-1]}
    store.write_sync(store.status_op(ids[-1], OrderStatus.Error, who="alice", why="Gripper jammed"))
    assert ids_of(search.search_sync(HistoryQuery(text="detected"))) == [ids[0]]
    assert ids_of(search.search_sync(HistoryQuery(text="gripper"))) == [ids[-1]]
    store.write_sync(store.update_op(ids[1], {"notes": "re-run on Tuesday"}))
    assert ids_of(search.search_sync(HistoryQuery(text="tuesday"))) == [ids[1]]
    store.write_sync(store.update_op(ids[1], {"notes": "done"}))
    assert ids_of(search.search_sync(HistoryQuery(text="tuesday"))) == []
    store.write_sync(lambda c: c.execute("INSERT INTO orders_fts (orders_fts, rank) VALUES ('integrity-check', 1)"))


def test_migration_indexes_the_orders_already_in_the_store_and_may_run_twice(tmp_path):
    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    for number, script in enumerate(MIGRATIONS):
        if "orders_fts" in script:
            break
        for statement in _split_sql(script):
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {number + 1}")
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute("INSERT INTO orders (id, seq, template_name, status, priority, assigned_to, created, "
                 "updated, status_details, data) VALUES ('Order_00001', 1, 'ELISA Readout', 7, 2, "
                 "'Reader 1', 1.0, 1.0, 'all wells read', '{\"notes\": \"legacy note\"}')")
    conn.close()
    with Store(path).open() as store:
        search = HistorySearch(store)
        for text in ("legacy", "wells", "reader", "elisa"):
            assert ids_of(search.search_sync(HistoryQuery(text=text))) == ["Order_00001"], text
        again = next(m for m in MIGRATIONS if "orders_fts" in m)
        store.write_sync(lambda c: [c.execute(s) for s in _split_sql(again)])
        assert ids_of(search.search_sync(HistoryQuery(text="legacy"))) == ["Order_00001"]
        assert store.read_sync(lambda c: c.execute(
            "SELECT count(*) FROM orders_fts WHERE orders_fts MATCH 'legacy'").fetchone()[0]) == 1


def test_live_window_is_unfinished_plus_recently_finished(history, store):
    search, made = history
    rows = asyncio.run(search.live_window(7, now=NOW))
    got = [r[0] for r in rows]
    want = made["recent"] + made["recent_error"] + made["running_old"] + made["waiting"]
    assert sorted(got, key=lambda i: int(i.split("_")[1])) == got  # arrival order
    assert set(got) == set(want)
    assert [r[0] for r in asyncio.run(search.live_window(365, now=NOW))] == \
        [r[0] for r in store.order_rows()]
    # a step canceled without an end time counts from its creation
    old = add_run(store, at=NOW - 20 * DAY, status=OrderStatus.Canceled)
    store.write_sync(lambda c: c.execute("UPDATE orders SET ended = NULL WHERE id = ?", (old[1],)))
    assert old[1] not in {r[0] for r in asyncio.run(search.live_window(7, now=NOW))}
    assert old[1] in {r[0] for r in asyncio.run(search.live_window(21, now=NOW))}


def test_dashboard_counts_match_the_rows(history, store):
    search, _ = history
    day_start = NOW - DAY
    counts = asyncio.run(search.dashboard(day_start))
    rows = store.order_rows()
    by_status: dict[OrderStatus, int] = {}
    for r in rows:
        by_status[OrderStatus(r[4])] = by_status.get(OrderStatus(r[4]), 0) + 1
    assert counts.by_status == by_status
    assert counts.completed_today == sum(1 for r in rows if r[4] == OrderStatus.Complete and (r[10] or 0) >= day_start)
    assert counts.failed_today == sum(1 for r in rows if r[4] == OrderStatus.Error and (r[10] or 0) >= day_start)
    assert counts.created_today == sum(1 for r in rows if r[8] >= day_start)
    assert counts.failed_today == 2 and counts.archived == 0


def test_a_new_search_skips_a_queued_one(history, store):
    search, _ = history
    gate = threading.Event()

    async def scenario():
        blockers = [asyncio.ensure_future(store.read(lambda c: gate.wait(10))) for _ in range(2)]
        first = asyncio.ensure_future(search.search(HistoryQuery(text="reader")))
        second = asyncio.ensure_future(search.search(HistoryQuery(text="door")))
        await asyncio.sleep(0.05)
        gate.set()
        await asyncio.gather(*blockers)
        with pytest.raises(SearchSuperseded):
            await first
        return await second

    page = asyncio.run(scenario())
    assert len(page.rows) == 2


def test_a_new_search_interrupts_a_running_one(history, store):
    search, _ = history
    conn = store.read_sync(lambda c: c)  # this thread's reader connection
    steps = []

    def newer_search_arrives() -> int:
        steps.append(1)
        if len(steps) == 1:
            search.cancel()  # what search() does when the filter changes: interrupt the old query
        return 0

    conn.set_progress_handler(newer_search_arrives, 1)
    try:
        with pytest.raises(SearchSuperseded):
            search.search_sync(HistoryQuery(text="zzz", text_mode="like"))
    finally:
        conn.set_progress_handler(None, 0)
    assert search.search_sync(HistoryQuery(text="door")).rows  # the connection works on


def test_cancelling_the_caller_interrupts_its_query(history, store):
    search, _ = history

    async def scenario():
        task = asyncio.ensure_future(search.search(HistoryQuery(text="reader")))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return await search.search(HistoryQuery(text="reader"))

    assert asyncio.run(scenario()).rows


def test_count_and_reach(history, store):
    search, made = history
    assert asyncio.run(search.count(HistoryQuery(text="reader"))) == (9, False)
    assert asyncio.run(search.count(HistoryQuery(), cap=5)) == (5, True)
    reach = asyncio.run(search.reach())
    assert reach.oldest == pytest.approx(NOW - 200 * DAY)
    assert reach.live_orders == store.count_orders() and reach.archive.state == "none"


def test_fts_expression_and_bad_queries():
    assert fts_expression('Order_00042 "x" AND-OR ham*') == \
        '"order" AND "00042" AND "x" AND "and" AND "or" AND "ham"*'
    assert fts_expression("--") == ""
    with pytest.raises(ValueError, match="text_mode"):
        HistoryQuery(text_mode="regex")
    with pytest.raises(ValueError, match="limit"):
        HistoryQuery(limit=0)


def test_punctuation_only_text_falls_back_to_like(history):
    search, _ = history
    assert search.search_sync(HistoryQuery(text="--")).rows == []
    assert all(r[ARCHIVED_COLUMN] == 0 for r in search.search_sync(HistoryQuery()).rows)
