"""The hash chain over transitions and audit rows: written by the store's ops, checked by
``audit verify`` (which names the first broken or missing row), exported with its hashes."""

from __future__ import annotations

import csv
import json
import logging
import sqlite3
from pathlib import Path

import pytest

from console.cli import main as cli
from core import audit_chain, demo
from core.orders import Order, OrderStatus
from core.store import DB_FILENAME, Store


def fill(store: Store, orders: int = 3) -> list[str]:
    """Orders with a few transitions each and audit rows, through the store's own ops."""
    ids = []
    for i in range(orders):
        o, _ = store.write_sync(store.new_order_op(Order(templateName="T"), who="ann", why=f"made {i}"))
        ids.append(o.identifier)
        store.write_sync(store.status_op(o.identifier, OrderStatus.Running, who="ann"))
        store.write_sync(store.audit_op("ann", "pause", o.identifier, "look", {"n": i, "text": "é\u2028"}))
    return ids


def tamper(path: Path, sql: str, params: tuple = ()) -> None:
    """Change the file behind the store's back, as somebody with the sqlite3 shell would."""
    conn = sqlite3.connect(path)
    conn.execute(sql, params)
    conn.commit()
    conn.close()


def verify(path: Path) -> audit_chain.Report:
    with Store(path).open() as s:
        return s.verify_chain()


def test_every_row_is_chained_and_verifies(store):
    fill(store)
    rows = store.read_sync(lambda c: c.execute(
        "SELECT seq, order_id, from_status, to_status, at, who, why, prev_hash, hash FROM transitions "
        "ORDER BY seq").fetchall())
    assert len(rows) == 6
    prev = audit_chain.GENESIS
    for r in rows:  # recomputed here from the documented encoding, independently of verify()
        assert r[7] == prev
        body = json.dumps(["transitions", r[0], *r[1:7], prev], ensure_ascii=True, separators=(",", ":"))
        assert r[8] == __import__("hashlib").sha256(body.encode()).hexdigest()
        prev = r[8]
    report = store.verify_chain()
    assert report.ok, report.render()
    assert [(c.table, c.rows, c.head) for c in report.chains] == [
        ("transitions", 6, prev), ("audit", 3, report.chains[1].head)]


def test_a_changed_why_is_named(store):
    fill(store)
    store.close()
    tamper(store.path, "UPDATE transitions SET why = 'nothing to see' WHERE seq = 3")
    report = verify(store.path)
    assert not report.ok
    f = report.first_problem
    assert (f.table, f.seq) == ("transitions", 3)
    assert "no longer match its hash" in f.what and "why='nothing to see'" in f.what
    assert report.chains[1].finding is None  # the audit chain is intact


def test_a_changed_audit_detail_is_named(store):
    fill(store)
    store.close()
    tamper(store.path, "UPDATE audit SET who = 'bob' WHERE seq = 2")
    f = verify(store.path).first_problem
    assert (f.table, f.seq) == ("audit", 2) and "who='bob'" in f.what


def test_a_removed_row_is_named(store):
    fill(store)
    store.close()
    tamper(store.path, "DELETE FROM transitions WHERE seq = 4")
    f = verify(store.path).first_problem
    assert (f.table, f.seq) == ("transitions", 4)
    assert "row(s) 4 missing" in f.what


def test_removed_last_rows_are_named(store):
    fill(store)
    store.close()
    tamper(store.path, "DELETE FROM audit WHERE seq >= 2")
    f = verify(store.path).first_problem
    assert (f.table, f.seq) == ("audit", 2)
    assert "2..3 missing at the end" in f.what


def test_reordered_rows_are_named(store):
    fill(store)
    store.close()
    # swap rows 2 and 3 (all their fields, hashes included): the order is what changed
    conn = sqlite3.connect(store.path)
    conn.execute("UPDATE transitions SET seq = -2 WHERE seq = 2")
    conn.execute("UPDATE transitions SET seq = 2 WHERE seq = 3")
    conn.execute("UPDATE transitions SET seq = 3 WHERE seq = -2")
    conn.commit()
    conn.close()
    f = verify(store.path).first_problem
    assert (f.table, f.seq) == ("transitions", 2)
    assert "prev_hash" in f.what and "reordered" in f.what


def test_a_row_written_outside_the_store_is_named(store):
    fill(store, 1)
    store.close()
    tamper(store.path, "INSERT INTO audit (at, who, action) VALUES (1, 'x', 'forged')")
    f = verify(store.path).first_problem
    assert (f.table, f.seq) == ("audit", 2) and "has no hash" in f.what


def test_rows_inserted_in_bulk_are_chained(store):
    fill(store, 1)
    demo.generate(store, 300, seed=3)  # inserts its transitions in one executemany
    report = store.verify_chain()
    assert report.ok, report.render()
    assert report.chains[0].rows > 300


def test_an_older_store_is_chained_once_when_it_migrates(data_dir, monkeypatch, caplog):
    import core.store as store_module

    path = data_dir / DB_FILENAME
    monkeypatch.setattr(store_module, "SCHEMA_VERSION", store_module.CHAIN_SCHEMA - 1)
    old = Store(path).open()

    def legacy(conn: sqlite3.Connection) -> None:  # rows as the schema before the chain wrote them
        for i in range(5):
            conn.execute("INSERT INTO transitions (order_id, from_status, to_status, at, who, why) "
                         "VALUES (?,?,?,?,?,?)", (f"O{i}", None, 0, 1700000000 + i, "ann", None))
        conn.execute("INSERT INTO audit (at, who, action, target) VALUES (1700000000.5, 'ann', 'cancel', 'O1')")

    old.write_sync(legacy)
    old.close()
    monkeypatch.undo()
    with caplog.at_level(logging.INFO, logger="core.store"), Store(path).open() as s:
        assert s.read_sync(lambda c: c.execute("PRAGMA user_version").fetchone()[0]) == store_module.SCHEMA_VERSION
        [started] = [r.getMessage() for r in caplog.records if "audit chain started" in r.msg]
        assert started.startswith(f"{path}: audit chain started: ") and "'sealed_through_seq': 5" in started
        report = s.verify_chain()
        assert report.ok, report.render()
        assert report.start["transitions"] == {"sealed_through_seq": 5, "rows": 5}
        assert report.start["audit"]["sealed_through_seq"] == 1
        assert "rows sealed then: transitions through seq 5, audit through seq 1" in report.render()
        s.write_sync(s.audit_op("bob", "resume", "O1"))
        assert s.verify_chain().chains[1].rows == 2
    tamper(path, "UPDATE transitions SET at = 1 WHERE seq = 2")  # a backfilled row is protected too
    assert verify(path).first_problem.seq == 2


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_export_carries_the_chain_and_verifies_elsewhere(store, tmp_path, fmt):
    fill(store, 4)
    at = [r[0] for r in store.read_sync(lambda c: c.execute("SELECT at FROM transitions ORDER BY seq").fetchall())]
    data = store.export_chain(at[2], at[6])  # transitions 3..6 only
    out = tmp_path / f"export.{fmt}"
    audit_chain.write_export(data, out, fmt)
    t = data["tables"]["transitions"]
    assert [r[0] for r in t["rows"]] == [3, 4, 5, 6]
    assert t["before"] == {"seq": 2, "hash": store.read_sync(
        lambda c: c.execute("SELECT hash FROM transitions WHERE seq = 2").fetchone()[0])}
    report = audit_chain.verify_export(out)
    assert report.ok, report.render()
    assert report.chains[0].rows == 4
    # an edited export is caught, naming the row
    if fmt == "json":
        doc = json.loads(out.read_text())
        doc["tables"]["transitions"]["rows"][1][6] = "edited"
        out.write_text(json.dumps(doc))
    else:
        rows = list(csv.reader(out.open()))
        hit = next(i for i, r in enumerate(rows) if r[0] == "transitions" and r[1] == "row" and r[2] == "4")
        rows[hit][rows[0].index("why")] = json.dumps("edited")
        with out.open("w", newline="") as f:
            csv.writer(f).writerows(rows)
    f = audit_chain.verify_export(out).first_problem
    assert (f.table, f.seq) == ("transitions", 4) and "why='edited'" in f.what


def test_an_export_whose_first_row_was_cut_is_caught(store, tmp_path):
    fill(store, 3)
    data = store.export_chain(0, 4e9)
    data["tables"]["audit"]["rows"].pop(0)
    out = tmp_path / "cut.json"
    audit_chain.write_export(data, out, "json")
    f = audit_chain.verify_export(out).first_problem
    assert (f.table, f.seq) == ("audit", 1) and "missing" in f.what


def test_cli_verify_export_and_verify_file(data_dir, tmp_path, capsys):
    with Store.open_in(data_dir) as s:
        fill(s, 2)
    assert cli(["audit", "verify"]) == 0
    assert "ok transitions: 4 rows" in capsys.readouterr().out
    out = tmp_path / "trail.csv"
    assert cli(["audit", "export", "--from", "2000-01-01", "--to", "2100-01-01", "--format", "csv", str(out)]) == 0
    assert "6 rows (transitions 4, audit 2)" in capsys.readouterr().out
    assert cli(["audit", "verify", "--file", str(out)]) == 0
    capsys.readouterr()
    tamper(data_dir / DB_FILENAME, "UPDATE transitions SET why = 'x' WHERE seq = 2")
    assert cli(["audit", "verify"]) == 1
    captured = capsys.readouterr()
    assert "BROKEN transitions row seq 2" in captured.out
    assert "first problem at transitions row seq 2" in captured.err


def test_cli_refuses_bad_dates_and_files(data_dir, tmp_path, capsys):
    assert cli(["audit", "export", "--from", "yesterday", "--to", "2100-01-01", str(tmp_path / "x")]) == 2
    assert "--from" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "something else"}')
    assert cli(["audit", "verify", "--file", str(bad)]) == 2
    assert "not a labconsole audit export" in capsys.readouterr().err


def test_a_signature_in_progress_goes_to_its_target_only(store):
    """Under a signature for target X, the audit rows of its actions on X carry it; a row on Y
    written in the same block does not; a signature for no target (a bulk action) goes to all."""
    record = {"user": "ann", "role": "admin", "meaning": "approval", "at": 1.0, "action": "pause"}
    token = audit_chain.SIGNING.set((frozenset({"pause"}), "order-x", record))
    try:
        store.write_sync(store.audit_op("ann", "pause", "order-x", "look", {"n": 1}))
        store.write_sync(store.audit_op("ann", "pause", "order-y", "look", {"n": 2}))
        store.write_sync(store.audit_op("ann", "resume", "order-x", None, None))
    finally:
        audit_chain.SIGNING.reset(token)
    token = audit_chain.SIGNING.set((frozenset({"pause"}), None, record))
    try:
        store.write_sync(store.audit_op("ann", "pause", "order-z", None, None))
    finally:
        audit_chain.SIGNING.reset(token)
    store.write_sync(store.audit_op("ann", "pause", "order-x", None, None))
    got = [(e.target, e.action, e.details) for e in store.audit_entries()]
    assert got == [("order-x", "pause", {"n": 1, "signature": record}),
                   ("order-y", "pause", {"n": 2}),
                   ("order-x", "resume", None),
                   ("order-z", "pause", {"signature": record}),
                   ("order-x", "pause", None)]
    assert store.verify_chain().ok
