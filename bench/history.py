"""History benchmark: a year of orders on disk, the live window, search, archive.

Generates ``--orders`` orders (default 1,000,000) straight into a store file, in time order as a
real store fills up: workflow runs with their step orders, 90 % finished more than 7 days ago
(spread over a year), the rest in the last 7 days, some of those unfinished; the text index is
brought up to date at the end, as a console's writer keeps it. The file is kept in ``--cache``
and reused by later runs.
Then measures, in one process:

* the live window (every unfinished order plus those finished in the last 7 days): time and rows,
  against loading every order (what a model of all history does) in the same run;
* the first page of a search across all history (text, status, template, time range), with the
  FTS5 index and with LIKE (the baseline), and a deep page through the keyset cursor;
* the event loop's lag (p99, a 1 ms sleep probe) while searches run under a stream of 1,000
  transitions/s;
* the cost per transition of the FTS triggers (CPU of one status transition with and without them);
* archiving every order finished more than 7 days ago, online (``Archiver.run``) with the probe
  running: time, orders/s, loop lag p99 and max, the writer's longest hold per batch; then counts
  and a check that every run is whole in one place, the hash chain verified across store and
  archive, and a search over store plus archive (``--archive-only``: this phase alone);
* RSS of the process after each phase.

usage: python bench/history.py [--orders 1000000] [--cache DIR] [--skip-archive | --archive-only]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core import audit_chain  # noqa: E402
from core.archive import ARCHIVE_FILENAME, Archiver  # noqa: E402
from core.history import HistoryQuery, HistorySearch  # noqa: E402
from core.orders import OrderStatus  # noqa: E402
from core.store import DB_FILENAME, Store, index_pending_text  # noqa: E402
from core.wire import format_datetime  # noqa: E402

DAY = 86400.0
WORKFLOWS = {
    "Cell Culture Passage": [("Decap", "Decapper 1"), ("Aspirate Media", "Hamilton STAR 1"),
                             ("Dispense Media", "Hamilton STAR 2"), ("Incubate", "Cytomat 1")],
    "ELISA Readout": [("Move To Reader", "PF400"), ("Read Absorbance", "Reader 1"), ("Seal", "PlateLoc")],
    "Plate Replication": [("Dispense", "Hamilton STAR 1"), ("Seal", "PlateLoc"),
                          ("Spin Down", "HiG4"), ("Store", "Cytomat 1")],
    "Compound Screen": [("Transfer Compounds", "Hamilton STAR 2"), ("Incubate 30 min", "Cytomat 1"),
                        ("Read Fluorescence", "Reader 1")],
}
ERRORS = ["Tip pickup failed", "Plate not detected", "Heartbeat lost", "Door open"]
ORDER_SQL = ("INSERT INTO orders (id, seq, parent_id, source_id, run_after_id, template_name, "
             "template_version, status, priority, numeric_priority, assigned_to, created, scheduled, "
             "started, ended, updated, status_details, data) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)")
TRANSITION_SQL = "INSERT INTO transitions (order_id, from_status, to_status, at, who, why) VALUES (?,?,?,?,?,?)"


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# ---------------------------------------------------------------------- generation


def generate(path: Path, n: int, now: float, seed: int = 11, recent: float = 0.10) -> None:
    """About ``n`` orders as runs with steps, written in large transactions (synchronous=OFF);
    a share ``recent`` of the runs made in the last 7 days, the rest over the year before."""
    Store(path).open().close()  # schema, migrations
    rng = random.Random(seed)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("PRAGMA cache_size = -200000")
    seq = 0
    made = 0
    names = list(WORKFLOWS)
    t0 = time.perf_counter()
    plan: list[str] = []
    planned = 0
    while planned < n:
        plan.append(rng.choice(names))
        planned += 1 + len(WORKFLOWS[plan[-1]])
    # created in time order, as a real store fills up (seq and rowid grow with time)
    times = sorted(now - rng.uniform(0, 7 * DAY) if rng.random() < recent else now - rng.uniform(8 * DAY, 365 * DAY)
                   for _ in plan)
    upcoming = iter(zip(plan, times, strict=True))
    while made < n:
        orders: list[tuple[object, ...]] = []
        transitions: list[tuple[object, ...]] = []
        while len(orders) < 50_000 and made < n:
            name, created = next(upcoming)
            steps = WORKFLOWS[name]
            recent = created >= now - 7 * DAY
            if recent and created > now - 3600:
                run_status = rng.choice([OrderStatus.Running, OrderStatus.Scheduled, OrderStatus.Created])
            elif recent and rng.random() < 0.05:
                run_status = OrderStatus.Running
            else:
                roll = rng.random()
                run_status = (OrderStatus.Complete if roll < 0.86 else OrderStatus.Error if roll < 0.95
                              else OrderStatus.Canceled)
            seq += 1
            run_id = f"Order_{seq:07d}"
            run_seq = seq
            failed_at = rng.randrange(len(steps)) if run_status is OrderStatus.Error else None
            t = created + rng.uniform(1, 20)
            run_started = t if run_status is not OrderStatus.Created else None
            children = []
            previous = None
            for index, (step, instrument) in enumerate(steps):
                seq += 1
                cid = f"Order_{seq:07d}"
                details = None
                if run_status is OrderStatus.Complete or (failed_at is not None and index < failed_at):
                    status = OrderStatus.Complete
                elif failed_at == index:
                    status, details = OrderStatus.Error, rng.choice(ERRORS)
                elif run_status is OrderStatus.Running and index == 0:
                    status = OrderStatus.Running
                elif run_status is OrderStatus.Canceled or (failed_at is not None and not recent):
                    status = OrderStatus.Canceled  # a failed run of last month: an operator closed it
                else:
                    status = OrderStatus.Created
                started = ended = None
                assigned = None
                if status in (OrderStatus.Complete, OrderStatus.Error, OrderStatus.Running):
                    assigned, started = instrument, t
                    if status is not OrderStatus.Running:
                        t += rng.uniform(20, 400)
                        ended = t
                elif status is OrderStatus.Canceled:
                    ended = t
                template = f"{instrument.split()[0]}.{step.replace(' ', '')}"
                children.append((cid, seq, run_id, previous, template, status, assigned, started, ended,
                                 details, f"{step}: {name}"))
                previous = cid
            run_ended = t if run_status in (OrderStatus.Complete, OrderStatus.Error, OrderStatus.Canceled) else None
            run_details = f"step failed: {children[failed_at][9]}" if failed_at is not None else None
            rows = [(run_id, run_seq, None, None, name, run_status, None, run_started, run_ended,
                     run_details, f"Workflow initiated: {name}"),
                    *children]
            for oid, oseq, parent, after, template, status, assigned, started, ended, details, notes in rows:
                data = {"identifier": oid, "parentIdentifier": parent, "sourceIdentifier": run_id,
                        "runAfterIdentifier": after, "templateName": template, "templateVersion": "1",
                        "status": status.name, "priority": "Standard", "assignedTo": assigned,
                        "creationTime": format_datetime_f(created), "createdBy": "bench",
                        "actualStartTime": format_datetime_f(started),
                        "actualEndTime": format_datetime_f(ended), "statusDetails": details,
                        "notes": notes, "inputParameters": [
                            {"name": "Barcode", "value": f"PL{rng.randint(10000, 99999)}", "valueType": "String"}]}
                orders.append((oid, oseq, parent, run_id, after, template, "1", int(status), 2, 50,
                               assigned, created, None, started, ended, ended or created, details,
                               json.dumps(data, separators=(",", ":"))))
                transitions.append((oid, None, 0, created, "bench", None))
                if status is not OrderStatus.Created:
                    transitions.append((oid, 0, int(status), ended or started or created, "bench", details))
                made += 1
        conn.execute("BEGIN")
        conn.executemany(ORDER_SQL, orders)
        conn.executemany(TRANSITION_SQL, transitions)
        conn.execute("COMMIT")
        print(f"\r  generated {made:,} orders ({time.perf_counter() - t0:.0f} s)", end="", flush=True)
    conn.execute("INSERT OR REPLACE INTO sequences (name, value) VALUES ('order', ?)", (seq,))
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    print()
    index_text(path)


def index_text(path: Path) -> int:
    """Bring the text index of a generated store up to date in one statement, as a console's
    writer keeps it (it indexes new orders when idle): a year-old store has no backlog, and
    the measurements should not pay for one. Returns how many orders were indexed."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("PRAGMA cache_size = -200000")
    t0 = time.perf_counter()
    conn.execute("BEGIN")
    pending = conn.execute("SELECT count(*) FROM orders_fts_pending").fetchone()[0]
    if pending:
        index_pending_text(conn, pending)
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    if pending:
        print(f"  text index brought up to date: {pending:,} orders in {time.perf_counter() - t0:.0f} s")
    return int(pending)


def format_datetime_f(value: float | None) -> str | None:
    from datetime import UTC, datetime

    return None if value is None else format_datetime(datetime.fromtimestamp(value, UTC))


# ---------------------------------------------------------------------- phases


async def probe(lags: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        t0 = time.perf_counter()
        await asyncio.sleep(0.001)
        lags.append(time.perf_counter() - t0 - 0.001)


def search_cases(now: float) -> list[tuple[str, dict[str, object], bool]]:
    """(label, query fields, has text)."""
    return [
        ("text: 'Hamilton'", {"text": "Hamilton"}, True),
        ("text: 'tip pickup'", {"text": "tip pickup"}, True),
        ("text: an id 'Order_0123457'", {"text": "Order_0123457"}, True),
        ("text: 'reader seal' (two words)", {"text": "reader seal"}, True),
        ("status: Canceled", {"statuses": frozenset({OrderStatus.Canceled})}, False),
        ("status: Error + text 'door'", {"statuses": frozenset({OrderStatus.Error}), "text": "door"}, True),
        ("template: 'ELISA Readout'", {"templates": frozenset({"ELISA Readout"})}, False),
        ("created in 3 days, 200 days ago", {"created_from": now - 200 * DAY, "created_to": now - 197 * DAY}, False),
        ("ended in 1 day + text 'cytomat'", {"ended_from": now - 100 * DAY, "ended_to": now - 99 * DAY,
                                             "text": "cytomat"}, True),
    ]


def timed_search(search: HistorySearch, query: HistoryQuery, repeat: int = 3) -> tuple[float, int]:
    best = float("inf")
    rows = 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        page = search.search_sync(query)
        best = min(best, time.perf_counter() - t0)
        rows = len(page.rows)
    return best, rows


def phase_search(store: Store, now: float) -> None:
    search = HistorySearch(store)
    print("\nsearch across all history, first page of 100 (best of 3), FTS5 vs LIKE in the same run")
    print(f"  {'query':40} {'FTS ms':>9} {'rows':>5} {'LIKE ms':>9} {'rows':>5} {'LIKE/FTS':>9}")
    for label, fields, has_text in search_cases(now):
        fts_s, fts_rows = timed_search(search, HistoryQuery(limit=100, **fields))  # type: ignore[arg-type]
        if has_text:
            like_s, like_rows = timed_search(search, HistoryQuery(limit=100, text_mode="like", **fields),  # type: ignore[arg-type]
                                             repeat=1)
            print(f"  {label:40} {fts_s * 1000:9.1f} {fts_rows:5d} {like_s * 1000:9.1f} {like_rows:5d} "
                  f"{like_s / fts_s:8.1f}x")
        else:
            print(f"  {label:40} {fts_s * 1000:9.1f} {fts_rows:5d} {'(no text)':>9}")
    query = HistoryQuery(text="Hamilton", limit=100)
    cursor = None
    t0 = time.perf_counter()
    for _ in range(50):
        page = search.search_sync(query, cursor)
        cursor = page.next_cursor
    deep = (time.perf_counter() - t0) / 50
    print(f"  keyset paging: 50 pages of 'Hamilton', {deep * 1000:.1f} ms per page (page 50 as fast as page 1)")


async def phase_loop_lag(store: Store, now: float, seconds: float = 5.0) -> None:
    """A 1,000 transitions/s stream alone, then with searches back to back; a 1 ms sleep probe
    measures the event loop in both (the first is the baseline)."""
    search = HistorySearch(store)
    ids = [r[0] for r in store.order_rows("status IN (0, 3)", limit=2000, order_by="seq DESC")]
    cycle = [OrderStatus.Scheduled, OrderStatus.Created]
    cases = search_cases(now)

    async def measure(with_search: bool) -> tuple[list[float], int, int]:
        lags: list[float] = []
        stop = asyncio.Event()
        prober = asyncio.create_task(probe(lags, stop))
        done = searches = 0

        async def stream() -> None:
            nonlocal done
            t_start = time.perf_counter()
            pending: set[asyncio.Task[object]] = set()
            i = 0
            while time.perf_counter() - t_start < seconds:
                due = int((time.perf_counter() - t_start) * 1000)
                while i < due:
                    task = asyncio.create_task(store.set_status(ids[i % len(ids)], cycle[(i // len(ids)) % 2],
                                                                who="bench"))
                    pending.add(task)
                    task.add_done_callback(pending.discard)
                    i += 1
                await asyncio.sleep(0.002)
            await asyncio.gather(*pending, return_exceptions=True)
            done = i

        async def searcher() -> None:
            nonlocal searches
            t_start = time.perf_counter()
            while time.perf_counter() - t_start < seconds:
                _, fields, _ = cases[searches % len(cases)]
                await search.search(HistoryQuery(limit=100, **fields))  # type: ignore[arg-type]
                searches += 1

        await asyncio.gather(stream(), *([searcher()] if with_search else []))
        stop.set()
        await prober
        return lags, done, searches

    base, base_done, _ = await measure(False)
    lags, done, searches = await measure(True)
    print(f"\nloop lag under a 1,000 transitions/s stream ({seconds:.0f} s each, 1 ms sleep probe):")
    print(f"  stream alone (baseline):       {base_done / seconds:5.0f} transitions/s, probe p99 "
          f"{pct(base, 0.99) * 1000:5.1f} ms, max {max(base) * 1000:5.1f} ms")
    print(f"  stream + searches back to back: {done / seconds:5.0f} transitions/s, {searches} searches, "
          f"probe p99 {pct(lags, 0.99) * 1000:5.1f} ms, max {max(lags) * 1000:5.1f} ms "
          f"(p99 ratio {pct(lags, 0.99) / max(pct(base, 0.99), 1e-6):.2f})")


def phase_transition_cost(tmp: Path, reps: int = 6) -> None:
    """Writer-thread CPU per status transition with the FTS triggers, with only the update
    trigger's WHEN test, and with no triggers: same store layout, same ops, interleaved
    repetitions, the lowest of each (the machine is shared)."""
    from core.orders import Order

    variants = ("no triggers", "WHEN test only", "FTS triggers")
    stores: dict[str, tuple[Store, list[str]]] = {}
    for number, variant in enumerate(variants):
        store = Store(tmp / f"cost-{number}.sqlite3", synchronous="OFF").open()
        ids = [store.write_sync(store.new_order_op(Order(templateName="Bench", notes="cost"), who="b"))[0].identifier
               for _ in range(200)]
        if variant != "FTS triggers":
            store.write_sync(lambda c: [c.execute(f"DROP TRIGGER {t}") for t in
                                        ("orders_fts_insert", "orders_fts_update", "orders_fts_delete")])
        if variant == "WHEN test only":
            when = next(line for line in (Path(__file__).resolve().parent.parent / "core" / "schema" /
                                          "009_history.sql").read_text().split("CREATE TRIGGER")
                        if "orders_fts_update" in line).split("BEGIN")[0]
            store.write_sync(lambda c, w=when: c.execute(f"CREATE TRIGGER {w.replace('orders_fts_update', 'probe', 1)} "
                                                         "BEGIN SELECT 1; END"))
        stores[variant] = (store, ids)
    cycle = [OrderStatus.Scheduled, OrderStatus.Running]
    best = dict.fromkeys(variants, float("inf"))
    for rep in range(reps):
        for variant, (store, ids) in stores.items():
            ops = [store.status_op(ids[i % 200], cycle[(i // 200) % 2], who="b",
                                   why=f"Door open {rep}-{i}" if i % 6 == 0 else None) for i in range(3000)]

            def run_all(conn: sqlite3.Connection, ops: list = ops) -> float:  # type: ignore[type-arg]
                t0 = time.thread_time()
                for op in ops:
                    op(conn)
                return time.thread_time() - t0

            best[variant] = min(best[variant], store.write_sync(run_all) / len(ops))
    for store, _ in stores.values():
        store.close()
    base = best["no triggers"]
    print("\ncost per transition on the writer thread (CPU of status_op, no fsync; 1 in 6 changes the "
          "status details; \"FTS triggers\" are the store's own: they note the order for the text index, "
          "which the writer updates later; \"WHEN test only\" is migration 9's test of the index "
          "being in the write, with an empty body):")
    for variant in variants:
        print(f"  {variant:16} {best[variant] * 1e6:6.1f} us  ({best[variant] / base:.2f}x, "
              f"+{(best[variant] - base) * 1e6:.1f} us)")


def chain_transitions(store: Store) -> None:
    """Hash-chain the generated transitions (the generator writes them unchained) so the chain
    can be verified after the archive, as on a console's store; not part of any measurement."""
    unchained = store.read_sync(lambda c: c.execute(
        "SELECT count(*) FROM transitions WHERE hash IS NULL").fetchone()[0])
    if not unchained:
        return
    t0 = time.perf_counter()
    store.write_sync(lambda c: audit_chain.backfill(c, time.time(), 8))
    report = store.verify_chain()
    print(f"\n(set-up: {unchained:,} generated transitions hash-chained in {time.perf_counter() - t0:.0f} s; "
          f"chain {'verified' if report.ok else 'BROKEN: ' + str(report.first_problem)} before the archive)")


async def phase_archive(store: Store, now: float, total: int) -> None:
    chain_transitions(store)
    lags: list[float] = []
    stop = asyncio.Event()
    prober = asyncio.create_task(probe(lags, stop))
    archiver = Archiver(store, batch_orders=500)
    rss0 = rss_mb()
    result = await archiver.run(now - 7 * DAY)
    stop.set()
    await prober
    print(f"\narchive of everything finished before 7 days ago, online: {result.orders:,} orders, "
          f"{result.transitions:,} transitions in {result.seconds:.1f} s ({result.orders / result.seconds:,.0f} "
          f"orders/s, {result.batches} batches)")
    print(f"  loop lag meanwhile: p99 {pct(lags, 0.99) * 1000:.1f} ms, max {max(lags) * 1000:.1f} ms "
          f"({len(lags)} probes); the writer held per batch: p99 "
          f"{pct(result.batch_seconds, 0.99) * 1000:.0f} ms, max {max(result.batch_seconds) * 1000:.0f} ms; "
          f"RSS {rss0:.0f} -> {rss_mb():.0f} MB")
    live = store.count_orders()
    arc = sqlite3.connect(store.path.with_name(ARCHIVE_FILENAME))
    archived = arc.execute("SELECT count(*) FROM orders").fetchone()[0]
    arc.execute("ATTACH ? AS live", (str(store.path),))
    both = arc.execute("SELECT count(*) FROM orders a JOIN live.orders o ON o.id = a.id").fetchone()[0]
    split = arc.execute("SELECT count(*) FROM (SELECT source_id FROM orders GROUP BY source_id) a "
                        "JOIN live.orders o ON o.source_id = a.source_id").fetchone()[0]
    arc.close()
    print(f"  after: {live:,} in the store + {archived:,} in the archive = {live + archived:,} "
          f"(generated {total:,}); in both: {both}; runs split across the two: {split}")
    t0 = time.perf_counter()
    report = store.verify_chain()
    chain = {c.table: c.rows for c in report.chains}
    print(f"  hash chain after: {'verified' if report.ok else 'BROKEN'} in {time.perf_counter() - t0:.1f} s "
          f"({chain.get('transitions', 0):,} transitions across store and archive, {chain.get('audit', 0):,} "
          f"audit rows){'' if report.ok else ': ' + str(report.first_problem)}")
    search = HistorySearch(store)
    for label, fields, _ in search_cases(now)[:3]:
        s, rows = timed_search(search, HistoryQuery(limit=100, **fields))  # type: ignore[arg-type]
        print(f"  search store + archive, {label:32} {s * 1000:7.1f} ms, {rows} rows")


async def phase_live_window(store: Store) -> None:
    search = HistorySearch(store)
    rss0 = rss_mb()
    t0 = time.perf_counter()
    rows = await search.live_window(7)
    window_s = time.perf_counter() - t0
    rss1 = rss_mb()
    t0 = time.perf_counter()
    everything = await store.read(lambda c: c.execute(
        "SELECT id, parent_id, template_name, template_version, status, priority, numeric_priority, "
        "assigned_to, created, started, ended, status_details FROM orders ORDER BY seq").fetchall())
    all_s = time.perf_counter() - t0
    rss2 = rss_mb()
    count_all = len(everything)
    del everything
    t0 = time.perf_counter()
    counts = await search.dashboard(time.time() - DAY)
    dash_s = time.perf_counter() - t0
    print(f"\nlive window (unfinished + finished in the last 7 days): {len(rows):,} rows in "
          f"{window_s * 1000:.0f} ms, RSS +{rss1 - rss0:.0f} MB")
    print(f"  baseline, every order's row: {count_all:,} rows in {all_s * 1000:.0f} ms, RSS "
          f"+{rss2 - rss1:.0f} MB more; window/all time {window_s / all_s:.2f}, rows {len(rows) / count_all:.2f}")
    print(f"  dashboard counts from indexes: {dash_s * 1000:.0f} ms "
          f"({sum(counts.by_status.values()):,} orders by status, {counts.completed_today} completed today)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--orders", type=int, default=1_000_000)
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "lc-history-bench")
    ap.add_argument("--skip-archive", action="store_true")
    ap.add_argument("--archive-only", action="store_true", help="measure the online archive alone")
    ap.add_argument("--lag-seconds", type=float, default=5.0)
    ap.add_argument("--generate-only", action="store_true", help="make the cached store and stop")
    ap.add_argument("--live-orders", type=int, default=None, metavar="N",
                    help="about N orders made in the last 7 days (default: 10 %% of --orders); "
                         "e.g. --orders 10000000 --live-orders 100000 is ten times the history of "
                         "the default 1,000,000 with the same live work")
    args = ap.parse_args()
    sys.setswitchinterval(0.001)
    args.cache.mkdir(parents=True, exist_ok=True)
    recent = 0.10 if args.live_orders is None else min(1.0, args.live_orders / args.orders)
    name = f"orders-{args.orders}" + ("" if args.live_orders is None else f"-live{args.live_orders}")
    source = args.cache / f"{name}.sqlite3"
    stamp = args.cache / f"{name}.now"
    if not source.exists() or not stamp.exists():
        print(f"generating {args.orders:,} orders into {source} (kept for later runs)")
        stamp.unlink(missing_ok=True)
        source.unlink(missing_ok=True)
        now = time.time()
        generate(source, args.orders, now, recent=recent)
        stamp.write_text(str(now))
    now = float(stamp.read_text())
    if args.generate_only:
        return
    print(f"history benchmark: {args.orders:,} orders, store {source.stat().st_size / 1e6:.0f} MB; RSS {rss_mb():.0f} MB")
    work = Path(tempfile.mkdtemp(prefix="lc-history-", dir=args.cache))
    try:
        db = work / DB_FILENAME
        t0 = time.perf_counter()
        shutil.copyfile(source, db)
        print(f"  (working copy made in {time.perf_counter() - t0:.1f} s)")
        t0 = time.perf_counter()
        store = Store(db).open()
        print(f"store open: {(time.perf_counter() - t0) * 1000:.0f} ms")
        total = store.count_orders()
        try:
            if not args.archive_only:
                asyncio.run(phase_live_window(store))
                phase_search(store, now)
                asyncio.run(phase_loop_lag(store, now, args.lag_seconds))
                phase_transition_cost(work)
            if not args.skip_archive:
                asyncio.run(phase_archive(store, now, total))
        finally:
            store.close()
        print(f"\nRSS at the end: {rss_mb():.0f} MB (peak {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
