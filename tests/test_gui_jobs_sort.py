"""The Jobs model's three ways of sorting (grouping by value, a numeric argsort, a comparison
sort) and its shared strings, each against the brute-force oracle of test_gui_jobs_model."""

from __future__ import annotations

import random

import pytest
from PySide6.QtCore import Qt

from core.orders import OrderStatus
from panels import jobs_model
from panels.jobs_filter import ASSIGNED, DETAILS, ID, PARENT, STATUS, TEMPLATE, OrderFilter
from panels.jobs_model import COLUMN_KEYS, OrderIndex, OrdersTableModel
from tests.test_gui_jobs_model import NOW, check, dataset, make_row


@pytest.mark.parametrize("how", ["group", "numeric", "compare", None])
@pytest.mark.parametrize("column", COLUMN_KEYS)
def test_every_sort_method_matches_the_oracle(qapp, monkeypatch, column, how):
    """Each way of sorting forced on every column (None: the model's own choice, over enough
    rows that it samples), then live frames and progress reports on top."""
    if how is not None:
        monkeypatch.setattr(jobs_model, "sort_method", lambda _values: how)
    rng = random.Random(100 + COLUMN_KEYS.index(column))
    model = OrdersTableModel(now=lambda: NOW)
    model.reset(dataset(rng, 700))  # about 2,500 rows: above GROUP_SAMPLE
    assert model.total > jobs_model.GROUP_SAMPLE
    for spec in (OrderFilter(), OrderFilter(statuses=frozenset({OrderStatus.Running, OrderStatus.Complete}))):
        model.set_filter(spec)
        for order in (Qt.SortOrder.AscendingOrder, Qt.SortOrder.DescendingOrder):
            model.sort(COLUMN_KEYS.index(column), order)
            check(model)
            ids = list(model.ix.all)
            frame = {}
            for oid in rng.sample(ids, 30):
                frame[oid] = make_row(rng, oid, model.ix.all[oid][PARENT])
            model.apply(frame)
            running = [oid for oid, r in model.ix.all.items() if r[STATUS] == OrderStatus.Running]
            model.apply_progress({oid: rng.random() for oid in rng.sample(running, min(8, len(running)))})
            check(model)


def test_the_model_chooses_grouping_for_few_values_and_argsort_for_numbers():
    rng = random.Random(5)
    rows = dataset(rng, 700)
    ix = OrderIndex.build(rows, lambda: NOW)
    chosen = {}
    for key in ("template", "status", "instrument", "created", "duration", "id", "run"):
        column = COLUMN_KEYS.index(key)
        values = [jobs_model.COLUMNS[column].sort(ix, r) for r in ix.all.values()]
        chosen[key] = jobs_model.sort_method(values)
        keys, ordered = ix.visible(None, column)
        assert keys == sorted(values)
        assert [(k, r[jobs_model.RANK]) for k, r in zip(keys, ordered, strict=True)] == sorted(
            (v, r[jobs_model.RANK]) for v, r in zip(values, ix.all.values(), strict=True))
    assert chosen == {"template": "group", "status": "group", "instrument": "group", "created": "numeric",
                      "duration": "numeric", "id": "numeric", "run": "numeric"}
    assert jobs_model.sort_method(list(range(10))) == "compare", "few rows: no sampling"


def test_repeated_strings_are_shared_and_values_unchanged():
    rows = dataset(random.Random(9), 300)
    copies = [tuple(v[:1] + v[1:] if isinstance(v, str) else v for v in r) for r in rows]
    ix = OrderIndex.build(copies, lambda: NOW)
    stored = list(ix.all.values())
    assert [r[:jobs_model.RANK] for r in stored] == rows
    by_template: dict[str, int] = {}
    for r in stored:
        by_template.setdefault(r[TEMPLATE], id(r[TEMPLATE]))
        assert id(r[TEMPLATE]) == by_template[r[TEMPLATE]]
        if r[PARENT] is not None:
            assert r[PARENT] is ix.all[r[PARENT]][ID], "a step points at its run's own id string"
    instruments = {id(r[ASSIGNED]) for r in stored if r[ASSIGNED] == "Reader 1"}
    assert len(instruments) == 1
    step = next(r for r in stored if r[PARENT] is not None)
    fresh = tuple("".join(list(v)) if isinstance(v, str) else v for v in step[:jobs_model.RANK])
    again, _new = ix.put(fresh)
    assert again == step and again[TEMPLATE] is step[TEMPLATE] and again[PARENT] is step[PARENT]


@pytest.mark.parametrize("needle", ["order_0001", "00012", "READER", "door", "seal", "1", "zzz", "Reader 2"])
def test_text_filter_matches_any_of_id_run_template_instrument_details(needle):
    rows = dataset(random.Random(11), 200)
    pred = OrderFilter(text=needle).predicate(NOW)
    low = needle.lower()
    expected = [r for r in rows if any(v is not None and low in v.lower()
                                       for v in (r[ID], r[PARENT], r[TEMPLATE], r[ASSIGNED], r[DETAILS]))]
    assert [r for r in rows if pred(r)] == expected
    if needle == "00012":
        assert any(r[ID] != "Order_00012" and r[PARENT] == "Order_00012" for r in expected), "steps by run id"
