"""Dispatcher.send_to: a queued step restricted to one instrument, audited with the stored order
changed in the same transaction; refused when the capability or the restriction does not allow it."""

from __future__ import annotations

import pytest
from dispatchkit import run_dkit

from core.errors import NotFoundError, StateError
from core.events import OperatorAction, OrderUpdated
from core.orders import ModuleRestrictionStrategy

READ = {"id": "read", "kind": "PlateReader.ReadPlate"}


def _pinned(name: str, reader: str, seconds: int, strategy: str = "FullRestriction") -> tuple[str, list]:
    return name, [{**READ, "restrict_to": [reader], "module_restriction": strategy,
                   "parameters": {"duration": seconds}}]


def test_send_a_queued_step_to_an_instrument(data_dir):
    async def scenario(kit):
        await kit.publish(*_pinned("Hog1", "Reader1", 100))
        await kit.publish(*_pinned("Hog2", "Reader2", 600))
        await kit.publish(*_pinned("Pinned1", "Reader1", 60))
        await kit.publish("Any", [READ])
        hog1, hog2 = await kit.run("Hog1"), await kit.run("Hog2")
        await kit.clock.advance(1)
        free = await kit.run("Any")          # queued first: would take Reader1 when it frees
        pinned = await kit.run("Pinned1")
        await kit.clock.advance(1)
        a, b = kit.steps(free)["read"]["order_id"], kit.steps(pinned)["read"]["order_id"]
        events = []
        kit.ledger.bus.subscribe(events.append)
        audit_before = len(kit.store.audit_entries())

        with pytest.raises(StateError, match=r"restricted to Reader1 \(FullRestriction\): it may run "
                                             r"only there, not on Reader2"):
            await kit.dispatcher.send_to(b, "Reader2", who="ann", reason="faster")
        with pytest.raises(StateError, match="Sealer cannot run .*: the step needs PlateReader.ReadPlate, "
                                             "Sealer offers Sealer.Seal"):
            await kit.dispatcher.send_to(a, "Sealer", who="ann")
        with pytest.raises(NotFoundError, match="no instrument 'Nope'"):
            await kit.dispatcher.send_to(a, "Nope", who="ann")
        hog_step = kit.steps(hog1)["read"]["order_id"]
        with pytest.raises(StateError, match="is not waiting in the queue"):
            await kit.dispatcher.send_to(hog_step, "Reader1", who="ann")
        assert len(kit.store.audit_entries()) == audit_before, "refusals change nothing"
        assert kit.dispatcher.queue.jobs[b].restrict == ("Reader1",)
        assert kit.store.get_order(a).restrictToModuleIds is None

        job = await kit.dispatcher.send_to(a, "Reader2", who="ann", reason="Reader1 needs recalibration")
        row = kit.store.order_rows("id = ?", (a,))[0]  # before the dispatch pass it asked for
        assert job.restrict == ("Reader2",) and job.strategy is ModuleRestrictionStrategy.FullRestriction
        stored = kit.store.get_order(a)
        assert stored.restrictToModuleIds == "Reader2"
        assert stored.moduleRestrictionStrategy is ModuleRestrictionStrategy.FullRestriction
        entry = kit.store.audit_entries(a)[-1]
        assert (entry.who, entry.action, entry.reason) == ("ann", "send to instrument", "Reader1 needs recalibration")
        assert entry.details == {"instrument": "Reader2", "before": {"restrictToModuleIds": None,
                                                                     "moduleRestrictionStrategy": "NoRestriction"}}
        # the views redraw the step's table row from the event: it carries the new row and names
        # the fields that changed
        updated = [e for e in events if isinstance(e, OrderUpdated) and e.order_id == a]
        assert [(e.fields, e.row) for e in updated] == [(("restrictToModuleIds", "moduleRestrictionStrategy"), row)]
        assert any(isinstance(e, OperatorAction) and e.target == a for e in events)
        assert "restricted to Reader2 (FullRestriction)" in kit.dispatcher.why_waiting(a)
        # Reader1 frees first and takes the step pinned to it; the sent one waits for Reader2
        await kit.until_done(hog1, hog2, free, pinned)
        return kit.steps(free)["read"]["instrument"], kit.steps(pinned)["read"]["instrument"]

    assert run_dkit(data_dir, scenario) == ("Reader2", "Reader1")


def test_a_conditional_restriction_allows_another_instrument_only_while_its_condition_holds(data_dir):
    async def scenario(kit):
        await kit.publish(*_pinned("Hog1", "Reader1", 600))
        await kit.publish(*_pinned("Hog2", "Reader2", 600))
        await kit.publish(*_pinned("UnlessError1", "Reader1", 60, "UnlessError"))
        await kit.run("Hog1")
        await kit.run("Hog2")
        await kit.clock.advance(1)
        run_id = await kit.run("UnlessError1")
        await kit.clock.advance(1)
        step = kit.steps(run_id)["read"]["order_id"]
        with pytest.raises(StateError, match=r"restricted to Reader1 \(UnlessError\): Reader2 may take it "
                                             r"only while all of them are in Error"):
            await kit.dispatcher.send_to(step, "Reader2", who="ann")
        # the instrument it is restricted to is always allowed
        job = await kit.dispatcher.send_to(step, "Reader1", who="ann")
        return job.strategy

    assert run_dkit(data_dir, scenario) is ModuleRestrictionStrategy.FullRestriction
