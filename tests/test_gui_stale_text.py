"""No stale text: the load note's count, Jobs buttons of the selected order, the Detail subtitle
after a retry, and the Log tab showing what the store holds from before it was opened."""

from __future__ import annotations

import pytest
from test_gui_jobs import Lab
from test_gui_jobs_adopted import screenshots

from core.orders import OrderStatus
from core.templates import template_from_dict

CAREFUL = {"name": "Careful seal", "inputs": [{"name": "plate", "type": "string"}],
           "definition": {"failure_policy": "pause", "steps": [
               {"id": "seal", "kind": "Sealer.Seal", "retry_policy": {"max_attempts": 1}}]}}


@pytest.fixture
def lab(store, data_dir, qtbot, qrun):
    made = Lab(store, data_dir, qtbot, qrun, detail=True, faults="fail_next@Sealer=1,retryable=false")
    qrun(made.rt.engine.publish(template_from_dict(CAREFUL)))
    yield made
    made.close()


def test_load_note_and_buttons_follow_the_orders(lab):
    panel = lab.jobs
    lab.load()
    assert "0 orders" in panel.status_line.text()
    runs = lab.start_runs(2)
    lab.sync()
    assert panel.model.total == 6
    assert "0 orders" not in panel.status_line.text() and "6 orders" in panel.status_line.text()

    lab.advance(1)
    panel.select_order(runs[0])
    assert panel.bulk_buttons["cancel"].isEnabled() and not panel.bulk_buttons["retry"].isEnabled()
    lab.qrun(lab.rt.cancel(runs[0], who="ann", reason="from the command line"))
    lab.sync()
    assert panel.current_id() == runs[0]
    assert not panel.bulk_buttons["cancel"].isEnabled(), "Cancel follows the order's new status"
    assert panel.bulk_buttons["retry"].isEnabled(), "Retry follows the order's new status"


def test_detail_after_a_retry_and_its_stored_log(lab):
    detail = lab.detail
    run = lab.qrun(lab.rt.start_run("Careful seal", {"plate": "P1"}, who="ann"))
    lab.until(lambda: lab.rt.engine.get_instance(run)["status"] == "paused")
    paused_details = lab.rt.order(run).statusDetails
    assert paused_details
    lab.load()

    # the Log tab shows what happened before Detail was ever opened
    lab.jobs.select_order(run)
    lab.qtbot.waitUntil(lambda: detail.data is not None and detail.data.order_id == run, timeout=5000)
    assert paused_details in detail.subtitle.text()
    log = detail.log.toPlainText()
    step = lab.rt.engine.get_instance(run)["steps"][0]["order_id"]
    assert "run transition: Created → Running by engine: started" in log, log
    assert "run audit: start run by ann" in log
    assert "Paused" in log and "seal transition:" in log and "Error" in log
    assert "seal instrument: Sealer" in log, "instrument log rows about its steps are shown"
    assert "(none yet)" in log or "— events while shown —" in log
    detail.tabs.setCurrentWidget(detail.log)
    screenshots(lab.window, "detail-stored-log")

    # retry the failed step: once it runs again the subtitle no longer says it waits for a person
    lab.qrun(lab.rt.retry(step, who="ann"))
    lab.until(lambda: not lab.rt.run_is_active(run))
    lab.qtbot.waitUntil(lambda: detail.data.order.status is OrderStatus.Complete, timeout=5000)
    assert paused_details not in detail.subtitle.text()
    assert "retry" in detail.log.toPlainText()
