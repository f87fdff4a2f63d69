"""Runs as a tree in the Jobs model against a brute-force oracle: after any sequence of live
frames, expansions and collapses, the shown rows are the runs that (or one of whose steps) pass
the filter, sorted by the column, each expanded run followed by all its steps in template order."""

from __future__ import annotations

import random

import pytest
from PySide6.QtCore import Qt

from core.orders import OrderStatus
from panels.jobs_filter import CREATED, ID, PARENT, STARTED, STATUS, OrderFilter
from panels.jobs_model import COLUMN_KEYS, COLUMNS, RANK, OrdersTableModel
from tests.test_gui_jobs_model import FILTERS, NOW, dataset, make_row


def tree_oracle(model: OrdersTableModel) -> list[str]:
    pred = model.filter.predicate(model.now())
    every = model.ix.all

    def passes(r):
        return pred is None or pred(r)

    tops = [r for r in every.values() if r[PARENT] is None or r[PARENT] not in every]
    kids = {r[ID]: [k for k in every.values() if k[PARENT] == r[ID]] for r in tops}
    shown = [r for r in tops if passes(r) or any(passes(k) for k in kids[r[ID]])]
    primary = COLUMNS[model.sort_column].sort
    shown.sort(key=lambda r: (primary(model.ix, r), r[RANK]),
               reverse=model.sort_order == Qt.SortOrder.DescendingOrder)
    out = []
    for r in shown:
        out.append(r[ID])
        if model.is_expanded(r[ID]):
            out.extend(k[ID] for k in kids[r[ID]])
    return out


def check(model: OrdersTableModel) -> None:
    shown = [model.order_id(i) for i in range(model.rowCount())]
    assert shown == tree_oracle(model)
    for i, oid in enumerate(shown):
        assert model.row_of(oid) == i
        assert model.row_data(i) is model.ix.all[oid], "rows are the latest versions"


@pytest.mark.parametrize("column", ["created", "status", "priority", "progress", "id"])
def test_tree_stays_exact_through_frames_and_expansions(qapp, column):
    rng = random.Random(COLUMN_KEYS.index(column))
    model = OrdersTableModel(now=lambda: NOW)
    model.reset(dataset(rng, 120))
    model.set_tree(True)
    runs = [oid for oid, r in model.ix.all.items() if r[PARENT] is None]
    assert model.rowCount() == len(runs), "steps are hidden by default"
    for spec in FILTERS:
        model.set_filter(spec)
        for order in (Qt.SortOrder.AscendingOrder, Qt.SortOrder.DescendingOrder):
            model.sort(COLUMN_KEYS.index(column), order)
            check(model)
            for step in range(4):
                for run in rng.sample(runs, 10):
                    model.set_expanded(run, not model.is_expanded(run))
                check(model)
                frame = {}
                for oid in rng.sample(list(model.ix.all), 25):
                    old = model.ix.all[oid]
                    frame[oid] = make_row(rng, oid, old[PARENT])[:CREATED] + (old[CREATED],) + \
                        make_row(rng, oid, old[PARENT])[STARTED:]
                n = len(model.ix.all) + 1
                run = f"Order_{n:05d}"
                frame[f"Order_{n + 1:05d}"] = make_row(rng, f"Order_{n + 1:05d}", run)  # step first
                frame[run] = make_row(rng, run, None)
                runs.append(run)
                model.apply(frame)
                running = [oid for oid, r in model.ix.all.items() if r[STATUS] == OrderStatus.Running]
                model.apply_progress({oid: rng.random() for oid in rng.sample(running, min(5, len(running)))})
                check(model)
                if step == 2:
                    model.expand_all(True)
                    check(model)
                    model.set_expanded(runs[0], False)
                    check(model)
            model.expand_all(False)
            check(model)


def test_a_step_match_brings_its_run_and_reveal_expands_it(qapp):
    rows = [("R1", None, "Run", "1", int(OrderStatus.Running), 1, 50, None, NOW - 10, NOW - 9, None, None),
            ("S1", "R1", "Reader.Read", "1", int(OrderStatus.Complete), 1, 50, "Reader 1", NOW - 9, NOW - 8,
             NOW - 7, None),
            ("S2", "R1", "Sealer.Seal", "1", int(OrderStatus.Paused), 1, 50, "Sealer", NOW - 9, NOW - 6, None,
             "Door open"),
            ("P1", None, "Plain", "1", int(OrderStatus.Complete), 1, 50, None, NOW - 5, NOW - 4, NOW - 3, None)]
    model = OrdersTableModel(now=lambda: NOW)
    model.reset(rows)
    model.set_tree(True)
    assert [model.order_id(i) for i in range(model.rowCount())] == ["P1", "R1"]
    model.set_filter(OrderFilter(statuses=frozenset({OrderStatus.Paused})))
    assert [model.order_id(i) for i in range(model.rowCount())] == ["R1"]
    assert model.index(0, 0).data() == "▸ R1"
    model.reveal("S2")
    assert [model.order_id(i) for i in range(model.rowCount())] == ["R1", "S1", "S2"]
    assert model.index(0, 0).data() == "▾ R1" and model.index(2, 0).data().strip() == "S2"
    model.set_tree(False)
    assert [model.order_id(i) for i in range(model.rowCount())] == ["S2"]


@pytest.mark.parametrize("tree", [False, True])
@pytest.mark.parametrize("column", ["created", "status", "progress"])
def test_removing_runs_and_single_steps_keeps_the_table_exact(qapp, column, tree):
    """Orders leave the live window (runs with their steps, and now and then one step of a run
    that stays): the rows shown are the oracle's after each removal, flat or as a tree, sorted
    either way, and the index forgets them (a step's place in its run too)."""
    from tests.test_gui_jobs_model import check as check_flat

    rng = random.Random(7 + COLUMN_KEYS.index(column))
    model = OrdersTableModel(now=lambda: NOW)
    model.reset(dataset(rng, 150))
    model.set_tree(tree)
    for order in (Qt.SortOrder.AscendingOrder, Qt.SortOrder.DescendingOrder):
        model.sort(COLUMN_KEYS.index(column), order)
        if tree:
            for run in rng.sample([o for o, r in model.ix.all.items() if r[PARENT] is None], 20):
                model.set_expanded(run, True)
        for _ in range(5):
            runs = [o for o, r in model.ix.all.items() if r[PARENT] is None]
            steps = [o for o, r in model.ix.all.items() if r[PARENT] is not None]
            gone = rng.sample(runs, 4) + rng.sample(steps, 2)
            expected = set(model.ix.all) - set(gone) - {k for g in gone for k in model.ix.children.get(g, ())}
            before = set(model.ix.all)
            assert model.remove(gone) == len(before - expected)
            assert set(model.ix.all) == expected
            assert all(k in expected for kids in model.ix.children.values() for k in kids)
            (check if tree else check_flat)(model)
    assert model.remove(["Order_99999"]) == 0
