"""The error playbook: rules decide before the template's policies, audited as the playbook's."""

from __future__ import annotations

import pytest
from enginekit import Kit, run_kit, template

from core.engine import RunStatus
from core.inbox import Inbox
from core.playbook import Playbook, PlaybookError, load_rules, parse_rules

FLAKY = template("Flaky", [
    {"id": "read", "kind": "PlateReader.ReadPlate", "retry_policy": {"max_attempts": 1}},
    {"id": "seal", "kind": "Sealer.Seal", "depends_on": ["read"]},
], failure_policy="abort")


def _run_with(data_dir, rule, fails=2):
    async def scenario(kit: Kit):
        playbook = Playbook.attach(kit.engine)
        inbox = Inbox(kit.engine)
        await playbook.add(rule, who="ann")
        await kit.publish(FLAKY)
        run_id = await kit.run("Flaky")
        await kit.until_done(run_id)
        return run_id, kit, inbox.items()

    return run_kit(data_dir, scenario, fail_kinds={"PlateReader.ReadPlate": fails})


def test_retry_rule_retries_with_backoff_where_the_template_would_abort(data_dir):
    run_id, kit, _ = _run_with(data_dir, {"id": "reader-retry", "error_code": "SimulatedFailure",
                                          "capability": "PlateReader.ReadPlate", "response": "retry",
                                          "max_attempts": 3, "backoff": 5})
    assert kit.engine.get_instance(run_id)["status"] == "completed"
    read = kit.steps(run_id)["read"]
    assert read["attempt"] == 3
    decisions = [a for a in kit.store.audit_entries(read["order_id"]) if a.who == "playbook"]
    assert [(a.action, a.reason) for a in decisions] == [("retry step", "rule reader-retry")] * 2
    assert [a.details["delay"] for a in decisions] == [5, 10]
    whys = [t.why for t in kit.store.transitions(read["order_id"]) if t.why and "playbook rule" in t.why]
    assert whys[0].startswith("Retry 2/3 in 5.0 s after SimulatedFailure")


def test_exhausted_retry_rule_leaves_the_template_policy_to_abort(data_dir):
    run_id, kit, _ = _run_with(data_dir, {"id": "r", "error_code": "SimulatedFailure", "response": "retry",
                                          "max_attempts": 2, "backoff": 1}, fails=5)
    inst = kit.engine.get_instance(run_id)
    assert inst["status"] == "failed" and kit.steps(run_id)["seal"]["status"] == "cancelled"
    assert any(a.action == "fail step" and a.who == "playbook" for a in kit.store.audit_entries())


def test_skip_rule_gives_outputs_and_the_run_goes_on(data_dir):
    run_id, kit, _ = _run_with(data_dir, {"id": "skip-read", "error_code": "SimulatedFailure", "response": "skip",
                                          "outputs": {"od": 0}})
    steps = kit.steps(run_id)
    assert kit.engine.get_instance(run_id)["status"] == "completed"
    assert steps["read"]["status"] == "skipped" and steps["read"]["outputs"] == {"od": 0}
    assert steps["seal"]["status"] == "completed"
    assert [a.action for a in kit.store.audit_entries(steps["read"]["order_id"]) if a.who == "playbook"] == \
        ["skip step"]


def test_cancel_rule_cancels_the_run(data_dir):
    run_id, kit, _ = _run_with(data_dir, {"id": "stop", "error_code": "*", "template": "Flaky", "response": "cancel"})
    assert kit.engine.get_instance(run_id)["status"] == "cancelled"
    assert any(a.action == "cancel run" and a.reason == "rule stop" for a in kit.store.audit_entries(run_id))


def test_pause_rule_asks_the_inbox_and_rules_for_other_places_do_not_match(data_dir):
    run_id, kit, items = _run_with(data_dir, {"id": "ask", "error_code": "SimulatedFailure", "response": "pause",
                                              "capability": "PlateReader.ReadPlate"})
    assert kit.engine.run_status(run_id) is RunStatus.PAUSED
    [item] = items
    assert item.kind == "error" and item.context["rule"] == "ask"
    (data_dir / "other").mkdir()
    run_id, kit, _ = _run_with(data_dir / "other", {"id": "sealer-only", "error_code": "SimulatedFailure",
                                          "capability": "Sealer.Seal", "response": "skip"})
    assert kit.engine.get_instance(run_id)["status"] == "failed"  # the template's abort applied


def test_rule_files_are_checked_with_file_line_and_round_trip(tmp_path):
    bad = tmp_path / "playbook.yaml"
    bad.write_text("rules:\n"
                   "  - id: a\n"
                   "    error_code: TipNotDetected\n"
                   "    capability: LiquidHandler.Aspirate\n"
                   "    response: retry\n"
                   "    max_attempts: 3\n"
                   "  - id: b\n"
                   "    error_code: Jam\n"
                   "    response: explode\n"
                   "  - id: a\n"
                   "    error_code: X\n"
                   "    response: cancel\n")
    with pytest.raises(PlaybookError) as exc:
        load_rules(bad, capabilities={"LiquidHandler.Transfer"})
    text = str(exc.value)
    assert f"{bad}:4: rules[0].capability: unknown capability 'LiquidHandler.Aspirate'" in text
    assert f"{bad}:9: rules[1].response: 'explode' is not one of retry, skip, pause, cancel" in text
    assert f"{bad}:10: rules[2].id: id 'a' is used by rule 0 too" in text
    good = parse_rules("- id: r\n  error_code: Timeout\n  response: retry\n  max_attempts: 2\n  backoff: 30\n",
                       "p.yaml")
    from core.playbook import dump_rules

    assert parse_rules(dump_rules(good), "again.yaml") == good


def test_operators_repeated_choice_becomes_a_proposal_and_accepting_makes_a_rule(data_dir):
    pausing = template("Pausing", [{"id": "read", "kind": "PlateReader.ReadPlate",
                                    "retry_policy": {"max_attempts": 1}}], failure_policy="pause")

    async def scenario(kit: Kit):
        playbook = Playbook.attach(kit.engine)
        inbox = Inbox(kit.engine, propose_after=2)
        await kit.publish(pausing)
        for n in range(2):
            kit.executor.fail_kinds["PlateReader.ReadPlate"] = 1  # fails once: the operator's retry works
            run_id = await kit.run("Pausing")
            await kit.until_done(run_id)
            [item] = inbox.items(kind="error")
            if n == 1:
                assert item.suggestion == {"choice": "retry"}  # preselected: what was chosen before
            await inbox.answer(item.id, {"choice": "retry"}, who="ann")
            await kit.until_done(run_id)
        [proposal] = inbox.items(kind="proposal")
        assert proposal.title.startswith("Retry chosen 2 times for SimulatedFailure on")
        await inbox.answer(proposal.id, {"accept": "yes"}, who="ann")
        assert [r.response for r in playbook.rules] == ["retry"]
        kit.executor.fail_kinds["PlateReader.ReadPlate"] = 1
        run_id = await kit.run("Pausing")
        await kit.until_done(run_id)
        return run_id, kit, inbox

    run_id, kit, inbox = run_kit(data_dir, scenario)
    assert kit.engine.get_instance(run_id)["status"] == "completed"  # the learned rule retried it
    assert not inbox.items()
    assert any(a.action == "accept proposal" and a.who == "ann" for a in kit.store.audit_entries())
