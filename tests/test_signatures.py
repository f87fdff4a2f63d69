"""Electronic signatures: configured actions need the password again; the signature is written with
the action, in the same audit row, inside the hash chain."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from dispatchkit import WORKCELL

from core import users
from core.clock import VirtualClock
from core.errors import ConfigError, StateError
from core.runtime import Runtime
from core.store import DB_FILENAME, Store
from core.templates import template_from_dict
from core.users import SignaturePolicy
from core.workcell import parse_workcell

FLOW = {"name": "Flow", "definition": {"steps": [
    {"id": "read", "kind": "PlateReader.ReadPlate"},
    {"id": "seal", "kind": "Sealer.Seal", "depends_on": ["read"]}]}}
POLICY = SignaturePolicy(frozenset({"cancel", "skip", "template publish", "out of service"}), "config.ini")


@pytest.fixture(autouse=True)
def cheap_scrypt(monkeypatch):
    monkeypatch.setattr(users, "SCRYPT_N", 2**12)
    monkeypatch.setattr(users, "_DUMMY_HASH", None)


def run_rt(data_dir, scenario, *, with_users: bool = True):
    async def main():
        store = Store(data_dir / DB_FILENAME).open()
        if with_users:
            users.add_user(store, "ann", "supervisor", "ann-password", who="root")
            users.add_user(store, "bob", "operator", "bob-password", who="root")
        clock = VirtualClock.for_store(store)
        rt = Runtime.build(data_dir, clock=clock, store=store, workcell=parse_workcell(WORKCELL), seed=1,
                           signatures=POLICY)
        await rt.start(templates_dir=None)
        await clock.settle()
        await rt.engine.publish(template_from_dict(FLOW))
        try:
            return await scenario(rt, clock)
        finally:
            await rt.close()

    return asyncio.run(main())


def signed(entry):
    return (entry.details or {}).get("signature")


def test_single_user_mode_needs_no_signature(data_dir):
    async def scenario(rt, clock):
        run = await rt.start_run("Flow", {})
        return (await rt.cancel(run, reason="no users")).ok

    assert run_rt(data_dir, scenario, with_users=False)


def test_cancel_needs_a_valid_signature_which_is_recorded_in_the_chain(data_dir):
    async def scenario(rt, clock):
        run = await rt.start_run("Flow", {}, who="bob")
        with pytest.raises(StateError, match=r"cancel needs an electronic signature \(\[SIGNATURES\] require"):
            await rt.cancel(run, who="bob", reason="unsigned")
        with pytest.raises(users.AuthenticationError):
            await users.asign(rt.store, "ann", "wrong-password", "approved", "cancel", run)
        sig = await users.asign(rt.store, "ann", "ann-password", "approved", "cancel", run)
        forged = dataclasses.replace(sig, user="bob")
        with pytest.raises(StateError, match="cancel: the electronic signature is not valid"):
            await rt.cancel(run, reason="forged", signature=forged)
        other = await users.asign(rt.store, "ann", "ann-password", "approved", "cancel", "Order_99999")
        with pytest.raises(StateError, match="given for Order_99999"):
            await rt.cancel(run, reason="elsewhere", signature=other)
        assert rt.run_is_active(run)  # nothing of the refused attempts happened
        result = await rt.cancel(run, who="bob", reason="contaminated", signature=sig)
        with pytest.raises(StateError, match="already used"):
            await rt.cancel(run, reason="same signature twice", signature=dataclasses.replace(sig))
        return run, result, rt.audit(run), rt.store.audit_entries(), rt.store.verify_chain()

    run, result, entries, every, report = run_rt(data_dir, scenario)
    assert result.ok
    cancel = [e for e in entries if e.action == "cancel run"]
    assert len(cancel) == 1 and cancel[0].who == "ann" and cancel[0].reason == "contaminated"
    assert signed(cancel[0]) == {"user": "ann", "role": "supervisor", "meaning": "approved",
                                 "at": signed(cancel[0])["at"], "action": "cancel"}
    assert [e.who for e in every if e.action == "signature refused"] == ["ann"]
    assert report.ok, report.render()


def test_wrong_action_and_expired_signatures_are_refused(data_dir, monkeypatch):
    async def scenario(rt, clock):
        run = await rt.start_run("Flow", {})
        await rt.pause(run, reason="hold the seal step while signatures are tried")
        step = rt.engine.get_instance(run)["steps"][1]["order_id"]
        for_cancel = await users.asign(rt.store, "bob", "bob-password", "performed", "cancel", step)
        with pytest.raises(StateError, match="skip: the electronic signature was given for 'cancel'"):
            await rt.skip(step, {}, reason="x", signature=for_cancel)
        for_skip = await users.asign(rt.store, "bob", "bob-password", "performed", "skip", step)
        ttl = users.SIGNATURE_TTL
        monkeypatch.setattr(users, "SIGNATURE_TTL", -1.0)  # measured on real time: as if long ago
        with pytest.raises(StateError, match="skip: the electronic signature has expired"):
            await rt.skip(step, {}, reason="late", signature=for_skip)
        monkeypatch.setattr(users, "SIGNATURE_TTL", ttl)
        fresh = await users.asign(rt.store, "bob", "bob-password", "performed", "skip", step)
        await rt.skip(step, {}, reason="not needed", signature=fresh)
        return [e for e in rt.audit(step) if e.action == "skip step"]

    skips = run_rt(data_dir, scenario)
    assert len(skips) == 1 and signed(skips[0])["user"] == "bob" and signed(skips[0])["action"] == "skip"


def test_out_of_service_and_publish_carry_the_signature_in_their_own_audit_rows(data_dir):
    async def scenario(rt, clock):
        with pytest.raises(StateError, match="out of service needs an electronic signature"):
            await rt.instrument_action("Sealer", "out_of_service", reason="cleaning")
        sig = await users.asign(rt.store, "ann", "ann-password", "approved", "out of service", "Sealer")
        await rt.instrument_action("Sealer", "out_of_service", reason="cleaning", signature=sig)
        await rt.instrument_action("Sealer", "release", reason="clean")  # not configured: no signature
        template = template_from_dict({**FLOW, "description": "v2"})
        with pytest.raises(StateError, match="template publish needs an electronic signature"):
            await rt.publish_template(template)
        sig = await users.asign(rt.store, "ann", "ann-password", "approved", "template publish", "Flow")
        published = await rt.publish_template(template, signature=sig)
        return published, rt.store.audit_entries(), {v.id: v for v in rt.instruments()}

    published, entries, view = run_rt(data_dir, scenario)
    assert published.version == 2
    by_action = {e.action: e for e in entries}
    oos = by_action["take out of service"]
    assert oos.who == "ann" and signed(oos)["action"] == "out of service" and oos.target == "Sealer"
    assert signed(by_action["release to service"]) is None
    pub = by_action["publish template"]
    assert pub.who == "ann" and pub.details["version"] == 2 and signed(pub)["action"] == "template publish"
    assert view["Sealer"].in_service  # released again


def test_bulk_cancel_with_one_signature(data_dir):
    async def scenario(rt, clock):
        runs = [await rt.start_run("Flow", {"n": i}) for i in range(3)]
        with pytest.raises(StateError, match="cancel needs an electronic signature"):
            await rt.bulk("cancel", runs, reason="batch")
        sig = await users.asign(rt.store, "ann", "ann-password", "approved", "cancel")
        result = await rt.bulk("cancel", runs, reason="batch", signature=sig)
        return result, rt.store.audit_entries()

    result, entries = run_rt(data_dir, scenario)
    assert all(r.ok for r in result)
    rows = [e for e in entries if e.action in ("cancel run", "bulk cancel")]
    assert len(rows) == 4 and all(signed(e)["user"] == "ann" and e.who == "ann" for e in rows)


def test_policy_from_config_ini(tmp_path):
    ini = tmp_path / "config.ini"
    ini.write_text("[STORE]\nbackup_every = 24h\n\n[SIGNATURES]\nrequire = cancel, Skip,  template publish, "
                   "out_of_service\n")
    assert SignaturePolicy.from_ini(ini).require == {"cancel", "skip", "template publish", "out of service"}
    assert SignaturePolicy.from_ini(tmp_path / "absent.ini").require == frozenset()
    ini.write_text("[SIGNATURES]\nrequire = cancel, delete everything\n")
    with pytest.raises(ConfigError) as err:
        SignaturePolicy.from_ini(ini)
    assert f"{ini}:2: SIGNATURES.require" in str(err.value) and "'delete everything'" in str(err.value)


def test_sign_refuses_unknown_meanings_and_actions(store):
    users.add_user(store, "ann", "admin", "ann-password", who="root")
    with pytest.raises(users.InputError, match="meaning"):
        users.sign(store, "ann", "ann-password", "because", "cancel", "x")
    with pytest.raises(users.InputError, match="not an action that can be signed"):
        users.sign(store, "ann", "ann-password", "approved", "launch", "x")
