"""The operator inbox on a virtual clock: prompts, paused errors, approvals, locks, escalation."""

from __future__ import annotations

import asyncio
import json

import pytest
from enginekit import Kit, run_kit, template

from core.engine import RunStatus
from core.errors import InputError, StateError, TemplateError
from core.inbox import AlreadyAnsweredError, Inbox, InboxChanged, check_answer, parse_form
from core.store import Store
from core.templates import template_from_dict

FIELDS = [
    {"name": "volume", "type": "number", "unit": "µL", "min": 1, "max": 200, "label": "Volume"},
    {"name": "plate", "type": "barcode"},
    {"name": "lot", "type": "choice", "choices": ["A", "B"]},
    {"name": "sealed", "type": "yesno"},
    {"name": "note", "type": "text", "required": False},
]
ASK = template("Ask", [
    {"id": "ask", "kind": "prompt", "parameters": {"message": "Load the plate", "fields": FIELDS}},
    {"id": "use", "kind": "noop", "depends_on": ["ask"], "condition": "step_outputs['ask']['volume'] > 50",
     "input_mapping": {"plate": "step_outputs.ask.plate"}},
])
GOOD = {"volume": "120", "plate": "PL-0042", "lot": "B", "sealed": "yes"}


def test_forms_refuse_bad_answers_naming_the_field():
    fields = parse_form(FIELDS)
    assert check_answer(fields, GOOD) == {"volume": 120.0, "plate": "PL-0042", "lot": "B", "sealed": True}
    for bad, name, words in [
        ({**GOOD, "volume": 500}, "volume", "above the maximum 200 µL"),
        ({**GOOD, "volume": "lots"}, "volume", "a number is required"),
        ({**GOOD, "plate": "PL 42"}, "plate", "without spaces"),
        ({**GOOD, "lot": "C"}, "lot", "not one of A, B"),
        ({**GOOD, "sealed": "maybe"}, "sealed", "yes or no"),
        ({k: v for k, v in GOOD.items() if k != "plate"}, "plate", "an answer is required"),
        ({**GOOD, "colour": "red"}, "colour", "no such field"),
    ]:
        with pytest.raises(InputError) as exc:
            check_answer(fields, bad)
        assert exc.value.problems[0].where.field == name and words in str(exc.value)
    with pytest.raises(InputError, match=r"fields\[1\]\.type: 'date' is not one of"):
        parse_form([{"name": "a"}, {"name": "b", "type": "date"}])
    with pytest.raises(InputError, match=r"fields\[0\]\.min: 5 is above max 1"):
        parse_form([{"name": "a", "type": "number", "min": 5, "max": 1}])


def test_prompt_answer_becomes_the_steps_outputs_in_one_commit(data_dir):
    async def scenario(kit: Kit):
        inbox = Inbox(kit.engine)
        await kit.publish(ASK)
        run_id = await kit.run("Ask")
        await kit.clock.settle()
        [item] = inbox.items()
        assert (item.kind, item.run_id, item.step_id, item.title) == ("prompt", run_id, "ask", "Load the plate")
        assert [f.name for f in item.form] == ["volume", "plate", "lot", "sealed", "note"]
        with pytest.raises(InputError) as exc:
            await inbox.answer(item.id, {**GOOD, "volume": 0}, who="ann")
        assert exc.value.problems[0].where.field == "volume"
        assert inbox.items()[0].state == "open"  # a refused answer changes nothing
        # answer, outputs, audit, next step: one write (one transaction) by the answering task;
        # counted at the store's door, since other tasks (the next step starting, escalation,
        # notifications) may commit meanwhile
        writes = 0
        write = kit.store.write
        me = asyncio.current_task()

        async def counted(fn):
            nonlocal writes
            writes += asyncio.current_task() is me
            return await write(fn)

        kit.store.write = counted
        done = await inbox.answer(item.id, GOOD, who="ann", reason="loaded")
        kit.store.write = write
        assert writes == 1
        assert (done.state, done.answered_by, done.answer["volume"]) == ("answered", "ann", 120.0)
        with pytest.raises(AlreadyAnsweredError, match="already answered by ann"):
            await inbox.answer(item.id, GOOD, who="bob")
        await kit.until_done(run_id)
        return run_id

    kit_holder: list[Kit] = []

    async def wrapped(kit: Kit):
        kit_holder.append(kit)
        return await scenario(kit)

    run_id = run_kit(data_dir, wrapped)
    kit = kit_holder[0]
    steps = kit.steps(run_id)
    assert kit.engine.get_instance(run_id)["status"] == "completed"
    assert steps["ask"]["outputs"] == {"volume": 120.0, "plate": "PL-0042", "lot": "B", "sealed": True}
    assert steps["use"]["status"] == "completed"  # the answer fed its condition ...
    use = kit.store.get_order(steps["use"]["order_id"])
    assert use.get_input_parameter_value("plate") == "PL-0042"  # ... and its input mapping
    audit = [a for a in kit.store.audit_entries(steps["ask"]["order_id"]) if a.action == "answer"]
    assert audit and audit[0].who == "ann" and audit[0].reason == "loaded"


def test_two_windows_answering_at_once_one_wins_the_other_is_told_who(data_dir):
    async def scenario(kit: Kit):
        inbox = Inbox(kit.engine)
        await kit.publish(ASK)
        await kit.run("Ask")
        await kit.clock.settle()
        [item] = inbox.items()
        results = await asyncio.gather(inbox.answer(item.id, GOOD, who="ann"),
                                       inbox.answer(item.id, GOOD, who="bob"), return_exceptions=True)
        return results

    results = run_kit(data_dir, scenario)
    [winner] = [r for r in results if not isinstance(r, BaseException)]
    [loser] = [r for r in results if isinstance(r, BaseException)]
    assert winner.answered_by in ("ann", "bob")
    assert isinstance(loser, AlreadyAnsweredError) and f"already answered by {winner.answered_by}" in str(loser)


@pytest.mark.parametrize("choice", ["retry", "skip", "recover", "cancel"])
def test_paused_error_is_answered_through_the_operator_actions(data_dir, choice):
    async def scenario(kit: Kit):
        inbox = Inbox(kit.engine)
        await kit.publish(template("Fragile", [
            {"id": "prep", "kind": "noop"},
            {"id": "read", "kind": "PlateReader.ReadPlate", "depends_on": ["prep"],
             "retry_policy": {"max_attempts": 1}},
            {"id": "after", "kind": "noop", "depends_on": ["read"]},
        ], failure_policy="pause"))
        run_id = await kit.run("Fragile")
        assert await kit.until_done(run_id) >= 0 and kit.engine.run_status(run_id) is RunStatus.PAUSED
        [item] = inbox.items()
        assert item.kind == "error" and item.step_id == "read"
        assert item.context["error_code"] == "SimulatedFailure" and "failed" in item.title
        assert [f.name for f in item.form][:1] == ["choice"]
        answer = {"choice": choice, "outputs": json.dumps({"od": 0.5}) if choice == "skip" else "",
                  "from_step": "prep"}
        await inbox.answer(item.id, answer, who="ann", reason="checked the reader")
        await kit.until_done(run_id)
        return run_id, inbox.item(item.id), kit

    run_id, item, kit = run_kit(data_dir, scenario, fail_kinds={"PlateReader.ReadPlate": 1})
    inst = kit.engine.get_instance(run_id)
    steps = {s["id"]: s for s in inst["steps"]}
    assert item.state == "answered" and item.answer["choice"] == choice
    if choice == "cancel":
        assert inst["status"] == "cancelled"
    else:
        assert inst["status"] == "completed"
    if choice == "skip":
        assert steps["read"]["status"] == "skipped" and steps["read"]["outputs"] == {"od": 0.5}
    actions = {a.action for a in kit.store.audit_entries() if a.who == "ann"}
    assert {"retry": "retry step", "skip": "skip step", "recover": "recover", "cancel": "cancel run"}[choice] in actions


def test_acting_from_elsewhere_settles_the_item_and_names_who(data_dir):
    async def scenario(kit: Kit):
        inbox = Inbox(kit.engine)
        await kit.publish(ASK)
        run_id = await kit.run("Ask")
        await kit.clock.settle()
        [item] = inbox.items()
        await kit.engine.skip_step(run_id, "ask", {"volume": 10}, who="carl", reason="from the jobs table")
        with pytest.raises(AlreadyAnsweredError, match="carl"):
            await inbox.answer(item.id, GOOD, who="ann")
        return inbox.item(item.id)

    item = run_kit(data_dir, scenario)
    assert item.state == "answered" and item.answer == {"action": "skip step: from the jobs table"}


def test_recovering_from_elsewhere_settles_the_runs_error_item(data_dir):
    async def scenario(kit: Kit):
        inbox = Inbox(kit.engine)
        await kit.publish(template("Fragile", [
            {"id": "prep", "kind": "noop"},
            {"id": "read", "kind": "PlateReader.ReadPlate", "depends_on": ["prep"],
             "retry_policy": {"max_attempts": 1}},
        ], failure_policy="pause"))
        run_id = await kit.run("Fragile")
        await kit.until_done(run_id)
        [item] = inbox.items()
        assert item.kind == "error" and item.state == "open"
        await kit.engine.recover(run_id, "prep", who="carl", reason="reader cleaned")
        await kit.until_done(run_id)
        return inbox.item(item.id), kit.engine.run_status(run_id)

    item, status = run_kit(data_dir, scenario, fail_kinds={"PlateReader.ReadPlate": 1})
    assert status is RunStatus.COMPLETED
    assert (item.state, item.answered_by, item.answer) == ("answered", "carl", {"action": "recover: reader cleaned"})


def test_approval_needs_a_second_person_and_rejection_fails_the_step(data_dir):
    async def scenario(kit: Kit):
        inbox = Inbox(kit.engine)
        await kit.publish(template("Release", [
            {"id": "approve", "kind": "prompt",
             "parameters": {"message": "Release the batch?", "approval": {"two_people": True}}},
            {"id": "ship", "kind": "noop", "depends_on": ["approve"]}], failure_policy="abort"))
        ok = await kit.run("Release", who="alice")
        no = await kit.run("Release", who="alice")
        await kit.clock.settle()
        a, b = sorted(inbox.items(kind="approval"), key=lambda i: i.run_id != ok)
        assert a.context["requested_by"] == "alice"
        with pytest.raises(StateError, match="alice requested this run and cannot also approve it"):
            await inbox.answer(a.id, {"approved": "yes"}, who="alice")
        await inbox.answer(a.id, {"approved": "yes"}, who="bob")
        await inbox.answer(b.id, {"approved": "no", "reason": "wrong lot"}, who="bob")
        await kit.until_done(ok)
        await kit.until_done(no)
        return ok, no, kit

    ok, no, kit = run_kit(data_dir, scenario)
    assert kit.engine.get_instance(ok)["status"] == "completed"
    assert kit.steps(ok)["approve"]["outputs"]["approved_by"] == "bob"
    assert kit.engine.get_instance(no)["status"] == "failed"
    assert "Rejected by bob: wrong lot" in kit.steps(no)["approve"]["error"]


def test_prompt_timeout_gives_the_declared_default_and_escalation_raises_priority(data_dir):
    async def scenario(kit: Kit):
        inbox = Inbox(kit.engine, escalate_after={"prompt": 600})
        await kit.publish(template("Timed", [
            {"id": "ask", "kind": "prompt", "parameters": {
                "message": "Continue?", "fields": [{"name": "go", "type": "yesno"}],
                "timeout": "1h", "default": {"go": False}}}]))
        await kit.publish(ASK)
        timed = await kit.run("Timed")
        await kit.run("Ask")
        await kit.clock.settle()
        assert inbox.counts() == (2, 0)
        await kit.clock.advance(700)
        assert await inbox.escalate() == 2 and inbox.counts() == (2, 2)
        assert await inbox.escalate() == 0  # once each
        assert all(i.escalated and i.priority == 90 for i in inbox.items())
        await kit.until_done(timed)
        return timed, inbox, kit

    timed, inbox, kit = run_kit(data_dir, scenario)
    assert kit.steps(timed)["ask"]["outputs"] == {"go": False}
    item = inbox.items(state="answered")[0]
    assert item.answered_by == "timeout"


def test_a_bad_prompt_declaration_fails_the_step_naming_the_field(data_dir):
    """Declared in the template, it is refused when the template loads (tests/test_inbox_templates.py);
    given at run time through an input mapping, the step fails naming the field."""
    with pytest.raises(TemplateError, match=r"steps\[0\]\.parameters\.fields\[0\]\.default"):
        template_from_dict(template("BadAsk", [{"id": "ask", "kind": "prompt", "parameters": {
            "message": "?", "fields": [{"name": "n", "type": "number", "max": 5, "default": 9}]}}]))

    async def scenario(kit: Kit):
        Inbox(kit.engine)
        await kit.publish(template("MappedAsk", [{"id": "ask", "kind": "prompt", "parameters": {"message": "?"},
                                                  "input_mapping": {"fields": "input_data.fields"}}],
                                   inputs=[{"name": "fields", "type": "json"}], failure_policy="abort"))
        run_id = await kit.run("MappedAsk", {"fields": [{"name": "n", "type": "number", "max": 5, "default": 9}]})
        await kit.until_done(run_id)
        return kit.steps(run_id)["ask"]

    step = run_kit(data_dir, scenario)
    assert step["status"] == "failed" and "parameters.fields[0].default" in step["error"]


def test_items_survive_a_restart_and_a_prompt_rerun_keeps_its_item(data_dir):
    db = data_dir / "engine.sqlite3"

    async def first(kit: Kit):
        inbox = Inbox(kit.engine)
        await kit.publish(ASK)
        run_id = await kit.run("Ask")
        await kit.clock.settle()
        return run_id, inbox.items()[0].id

    run_id, item_id = run_kit(data_dir, first)

    async def second():
        store = Store(db).open()
        kit = Kit(store)
        inbox = Inbox(kit.engine)
        await kit.engine.start()
        await kit.clock.settle()
        items = inbox.items()
        await inbox.answer(item_id, GOOD, who="ann")
        await kit.until_done(run_id)
        status = kit.engine.run_status(run_id)
        await kit.engine.close()
        store.close()
        return items, status

    items, status = asyncio.run(second())
    assert [i.id for i in items] == [item_id]  # the same item, not a second one
    assert status is RunStatus.COMPLETED


def test_hands_in_the_cell_lock_is_refused_without_instruments(data_dir):
    async def scenario(kit: Kit):
        inbox = Inbox(kit.engine)
        with pytest.raises(StateError, match="no workcell"):
            await inbox.lock(["Sealer1"], who="ann")

    run_kit(data_dir, scenario)


def test_a_run_that_ends_unanswered_closes_its_items_naming_how_it_ended(data_dir):
    async def scenario(kit: Kit):
        inbox = Inbox(kit.engine)
        await kit.publish(template("Waits", [
            {"id": "ask", "kind": "prompt", "parameters": {"message": "Load the plate", "fields": FIELDS}}],
            default_timeout_seconds="1h"))
        run_id = await kit.run("Waits")
        await kit.clock.settle()
        [item] = inbox.items()
        assert item.state == "open"
        await kit.until_done(run_id)
        return kit.engine.get_instance(run_id)["status"], inbox.item(item.id)

    status, item = run_kit(data_dir, scenario)
    assert status == "failed"
    assert (item.state, item.answer, item.answered_by) == ("answered", {"action": "run failed"}, "engine")


def test_a_run_that_ends_unanswered_tells_the_windows_which_runs_items_closed(data_dir):
    async def scenario(kit: Kit):
        told: list[InboxChanged] = []
        kit.ledger.bus.subscribe(told.append, InboxChanged)
        await kit.publish(template("Waits", [
            {"id": "ask", "kind": "prompt", "parameters": {"message": "Load the plate", "fields": FIELDS}}],
            default_timeout_seconds="1h"))
        run_id = await kit.run("Waits")
        await kit.clock.settle()
        await kit.until_done(run_id)
        await kit.clock.settle()
        return run_id, [(e.run_id, e.state) for e in told if e.state == "answered"]

    run_id, answered = run_kit(data_dir, scenario)
    assert answered == [(run_id, "answered")]
