"""After an action on a filtered list the acted-on order leaves the table: nothing else becomes
the current order, Detail stays on the acted-on order, and no button acts on a row the operator
did not choose."""

from __future__ import annotations

import pytest
from test_gui_jobs import Lab
from test_gui_jobs_adopted import screenshots

from core.orders import OrderStatus
from panels.dialogs import ReasonDialog
from panels.jobs_filter import OrderFilter


@pytest.fixture
def lab(store, data_dir, qtbot, qrun):
    made = Lab(store, data_dir, qtbot, qrun, detail=True)
    yield made
    made.close()


def test_the_acted_on_order_leaving_the_filter_moves_nothing(lab):
    runs = lab.start_runs(5)
    lab.load()
    lab.advance(1)
    panel, detail = lab.jobs, lab.detail
    panel.filter_bar.set_filter(OrderFilter(kind="runs", statuses=frozenset({OrderStatus.Running})))
    shown = panel.model.visible_ids()
    assert len(shown) >= 3
    target = shown[1]  # neighbours on both sides
    chosen: list[str] = []
    panel.order_selected.connect(chosen.append)
    assert panel.select_order(target)
    lab.qtbot.waitUntil(lambda: detail.data is not None and detail.data.order_id == target, timeout=5000)

    task = panel.trigger("cancel")
    dialog = lab.dialog(ReasonDialog)
    dialog.reason_edit.setText("contaminated")
    dialog.ok_button.click()
    lab.wait_task(task)
    lab.sync()
    assert lab.rt.order(target).status is OrderStatus.Canceled
    assert panel.model.row_of(target) is None, "a canceled run leaves a Running filter"

    assert chosen == [target], f"the current order jumped to {chosen[1:]}"
    assert panel.current_id() is None and panel.selected_count() == 0
    assert not any(b.isEnabled() for b in panel.bulk_buttons.values())
    lab.qtbot.waitUntil(lambda: detail.data is not None and detail.data.order.status is OrderStatus.Canceled,
                        timeout=5000)
    assert detail.order_id == target
    assert not detail.buttons["cancel"].isEnabled()
    screenshots(lab.window, "jobs-after-cancel-on-filtered-list")
    assert set(runs) >= set(panel.model.visible_ids())
