"""The Jobs table model against a brute-force oracle: after any sequence of live frames, the rows
it shows are exactly the filtered rows, in exactly the sorted order, and every row is found where
the model says it is."""

from __future__ import annotations

import random

import pytest
from PySide6.QtCore import Qt

from core.orders import OrderPriority, OrderStatus
from panels.jobs_filter import (
    ASSIGNED,
    CREATED,
    DETAILS,
    ENDED,
    ID,
    NPRI,
    PARENT,
    PRIORITY,
    STARTED,
    STATUS,
    TEMPLATE,
    OrderFilter,
    SavedView,
    SavedViews,
)
from panels.jobs_model import COLUMN_KEYS, COLUMNS, RANK, OrdersTableModel

NOW = 1_800_000_000.0
STATUSES = [OrderStatus.Created, OrderStatus.Scheduled, OrderStatus.Running, OrderStatus.Paused,
            OrderStatus.Error, OrderStatus.Complete, OrderStatus.Canceled]
TEMPLATES = ["ELISA Readout", "Cell Passage", "Reader.Read", "Sealer.Seal"]
INSTRUMENTS = [None, "Reader 1", "Reader 2", "Sealer"]


def make_row(rng: random.Random, oid: str, parent: str | None) -> tuple:
    status = rng.choice(STATUSES)
    started = NOW - rng.uniform(0, 7200) if status is not OrderStatus.Created else None
    ended = (started + rng.uniform(1, 600)) if started and status in (
        OrderStatus.Complete, OrderStatus.Error, OrderStatus.Canceled) else None
    return (oid, parent, rng.choice(TEMPLATES), "1", int(status),
            int(rng.choice([OrderPriority.Elevated, OrderPriority.Standard])), rng.choice([20, 50, 80, 95]),
            rng.choice(INSTRUMENTS), NOW - rng.uniform(0, 86400 * 3), started, ended,
            rng.choice([None, "Plate not detected", "Door open"]))


def dataset(rng: random.Random, runs: int) -> list[tuple]:
    rows, n = [], 0
    for _ in range(runs):
        n += 1
        run = f"Order_{n:05d}"
        rows.append(make_row(rng, run, None))
        for _ in range(rng.randint(1, 4)):
            n += 1
            rows.append(make_row(rng, f"Order_{n:05d}", run))
    return rows


def check(model: OrdersTableModel) -> None:
    """Visible rows == oracle(filter) sorted by (column value, rank), in the view's direction."""
    pred = model.filter.predicate(model.now())
    every = list(model.ix.all.values())
    expected = [r for r in every if pred is None or pred(r)]
    primary = COLUMNS[model.sort_column].sort
    expected.sort(key=lambda r: (primary(model.ix, r), r[RANK]),
                  reverse=model.sort_order == Qt.SortOrder.DescendingOrder)
    shown = [model.row_data(i) for i in range(model.rowCount())]
    assert [r[ID] for r in shown] == [r[ID] for r in expected]
    assert shown == expected, "rows are the latest versions"
    for i, r in enumerate(shown):
        assert model.row_of(r[ID]) == i


FILTERS = [
    OrderFilter(),
    OrderFilter(statuses=frozenset({OrderStatus.Running, OrderStatus.Error})),
    OrderFilter(kind="runs", priorities=frozenset({"Elevated", "high"})),
    OrderFilter(kind="steps", instruments=frozenset({"Reader 1", ""})),
    OrderFilter(text="door", templates=frozenset({"ELISA Readout", "Reader.Read"})),
    OrderFilter(time_preset="custom", time_field="started", time_from=NOW - 3600, time_to=NOW),
]


@pytest.mark.parametrize("column", COLUMN_KEYS)
def test_live_frames_keep_the_table_exact(qapp, column):
    rng = random.Random(COLUMN_KEYS.index(column))
    model = OrdersTableModel(now=lambda: NOW)
    model.reset(dataset(rng, 120))
    for spec in FILTERS:
        model.set_filter(spec)
        for order in (Qt.SortOrder.AscendingOrder, Qt.SortOrder.DescendingOrder):
            model.sort(COLUMN_KEYS.index(column), order)
            check(model)
            for _ in range(4):
                ids = list(model.ix.all)
                frame = {}
                for oid in rng.sample(ids, 25):  # status, instrument, priority ... changes
                    old = model.ix.all[oid]
                    frame[oid] = make_row(rng, oid, old[PARENT])[:CREATED] + (old[CREATED],) + \
                        make_row(rng, oid, old[PARENT])[STARTED:]
                for _ in range(3):  # a new run with steps arrives
                    n = len(model.ix.all) + 1
                    run = f"Order_{n:05d}"
                    frame[run] = make_row(rng, run, None)
                    frame[f"Order_{n + 1:05d}"] = make_row(rng, f"Order_{n + 1:05d}", run)
                model.apply(frame)
                running = [oid for oid, r in model.ix.all.items() if r[STATUS] == OrderStatus.Running]
                model.apply_progress({oid: rng.random() for oid in rng.sample(running, min(5, len(running)))})
                check(model)


def test_a_frame_with_very_many_moves_rebuilds_and_keeps_the_selection(qapp):
    from PySide6.QtCore import QItemSelectionModel

    rng = random.Random(3)
    model = OrdersTableModel(now=lambda: NOW)
    model.reset(dataset(rng, 400))
    model.sort(COLUMN_KEYS.index("status"), Qt.SortOrder.AscendingOrder)
    selection = QItemSelectionModel(model)
    chosen = model.order_id(10)
    selection.select(model.index(10, 0), QItemSelectionModel.SelectionFlag.Select)
    rebuilds = model.rebuilds
    frame = {oid: r[:STATUS] + (int(OrderStatus.Canceled),) + r[STATUS + 1:RANK]
             for oid, r in model.ix.all.items()}
    model.apply(frame)
    assert model.rebuilds == rebuilds + 1, "one rebuild, not a move per row"
    check(model)
    assert [model.order_id(i.row()) for i in selection.selectedIndexes()] == [chosen]


def test_progress_and_current_step_of_a_run():
    model = OrdersTableModel(now=lambda: NOW)
    run = ("R1", None, "ELISA Readout", "1", int(OrderStatus.Running), 0, 50, None, NOW - 100, NOW - 90, None, None)
    s1 = ("S1", "R1", "Reader.Read", "1", int(OrderStatus.Complete), 0, 50, "Reader 1", NOW - 100, NOW - 90,
          NOW - 60, None)
    s2 = ("S2", "R1", "Sealer.Seal", "1", int(OrderStatus.Running), 0, 50, "Sealer", NOW - 100, NOW - 60, None, None)
    s3 = ("S3", "R1", "Hotel.Store", "1", int(OrderStatus.Created), 0, 50, None, NOW - 100, None, None, None)
    model.reset([run, s1, s2, s3])
    assert model.progress(model.get("R1")) == pytest.approx(1 / 3)
    assert model.current_step(model.get("R1")) == "▶ Sealer.Seal"
    model.apply_progress({"S2": 0.5})
    assert model.progress(model.get("R1")) == pytest.approx(1.5 / 3)
    assert model.progress(model.get("S2")) == 0.5
    assert model.ix.duration_text(model.get("S2")) == "1:00"
    model.apply({"S2": s2[:STATUS] + (int(OrderStatus.Error),) + s2[STATUS + 1:ENDED] + (NOW - 30, "Door open")})
    assert model.current_step(model.get("R1")) == "✕ Sealer.Seal"
    assert "S2" not in model.ix.fraction
    assert model.get("S2")[DETAILS] == "Door open" and model.get("S2")[ASSIGNED] == "Sealer"
    assert model.get("S2")[TEMPLATE] == "Sealer.Seal" and model.get("S2")[NPRI] == 50
    assert model.get("S2")[PRIORITY] == 0


def test_saved_views_survive_a_restart_and_a_bad_file(tmp_path):
    path = tmp_path / SavedViews.FILENAME
    views = SavedViews(path)
    spec = OrderFilter(statuses=frozenset({OrderStatus.Error}), instruments=frozenset({"Reader 1"}),
                       time_preset="custom", time_from=NOW - 60, time_to=NOW, text="plate")
    views.save(SavedView("Reader trouble", spec, "ended", True))
    with pytest.raises(ValueError, match="built-in"):
        views.save(SavedView("All orders", spec))
    again = SavedViews(path)
    assert again.get("Reader trouble").filter == spec
    assert again.get("Reader trouble").sort_column == "ended"
    assert again.names()[:4] == ["Needs attention", "All orders", "Active runs", "Failed, last 24 h"]
    again.delete("Reader trouble")
    assert SavedViews(path).get("Reader trouble") is None
    path.write_text("{not json")
    broken = SavedViews(path)
    assert broken.error and "could not be read" in broken.error
    assert broken.get("All orders") is not None
