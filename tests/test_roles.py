"""Roles restrict actions: viewer reads, operator acts on runs, supervisor also publishes templates,
takes instruments out of service and edits playbook rules and schedules, admin also manages users.
Enforced in the core (the runtime's action entry, publish, scheduler, playbook, users), refused with
a message naming the user, the role and the action, before anything changes."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest
from dispatchkit import WORKCELL

from core import users
from core.clock import VirtualClock
from core.playbook import Playbook
from core.runtime import Runtime
from core.schedules import Frequency, Schedule, Scheduler
from core.store import APPLICATION_ID, DB_FILENAME, MIGRATIONS, Store, _split_sql
from core.templates import template_from_dict
from core.users import PermissionDenied, SignaturePolicy
from core.workcell import parse_workcell

FLOW = {"name": "Flow", "definition": {"steps": [
    {"id": "read", "kind": "PlateReader.ReadPlate"},
    {"id": "seal", "kind": "Sealer.Seal", "depends_on": ["read"]}]}}
RULE = {"id": "r1", "error_code": "*", "response": "retry", "max_attempts": 2}


@pytest.fixture(autouse=True)
def cheap_scrypt(monkeypatch):
    monkeypatch.setattr(users, "SCRYPT_N", 2**12)
    monkeypatch.setattr(users, "_DUMMY_HASH", None)


def run_rt(data_dir, scenario, *, with_users: bool = True, policy: SignaturePolicy | None = None):
    async def main():
        store = Store(data_dir / DB_FILENAME).open()
        if with_users:
            for name, role in (("ada", "admin"), ("ann", "supervisor"), ("bob", "operator"), ("vic", "viewer")):
                users.add_user(store, name, role, f"{name}-password", who="root")
        clock = VirtualClock.for_store(store)
        rt = Runtime.build(data_dir, clock=clock, store=store, workcell=parse_workcell(WORKCELL), seed=1,
                           signatures=policy or SignaturePolicy())
        await rt.start(templates_dir=None)
        await clock.settle()
        await rt.engine.publish(template_from_dict(FLOW))
        try:
            return await scenario(rt, clock)
        finally:
            await rt.close()

    return asyncio.run(main())


def test_each_role_may_what_the_roles_below_it_may():
    assert users.ROLES == ("viewer", "operator", "supervisor", "admin")
    for action in users.PERMISSIONS:
        allowed = [r for r in users.ROLES if users.may(r, action)]
        assert allowed == list(users.ROLES[users.ROLES.index(users.required_role(action)):]), action
    assert not users.may("viewer", "cancel") and users.may("operator", "cancel")
    assert not users.may("operator", "template publish") and users.may("supervisor", "template publish")
    assert not users.may("operator", "out of service") and not users.may("operator", "playbook")
    assert not users.may("supervisor", "users") and users.may("admin", "users")
    assert not users.may("nobody-role", "cancel")
    with pytest.raises(ValueError, match="'launch' is not an action with a role"):
        users.may("admin", "launch")


def test_a_viewer_reads_but_cannot_act(data_dir):
    async def scenario(rt, clock):
        with pytest.raises(PermissionDenied, match="start run: 'vic' is signed in as viewer; start run needs "
                                                   "the operator role or above"):
            await rt.start_run("Flow", {}, who="vic")
        run = await rt.start_run("Flow", {}, who="bob")
        before = rt.order(run).status
        for action in ("cancel", "pause", "retry"):
            with pytest.raises(PermissionDenied, match=f"^{action}: 'vic' is signed in as viewer"):
                await getattr(rt, action)(run, who="vic", reason="look")
        with pytest.raises(PermissionDenied, match="cancel: 'vic' is signed in as viewer"):
            await rt.bulk("cancel", [run], who="vic", reason="look")
        seen = rt.order(run), rt.history(run), rt.audit(run), rt.why_waiting(run)  # reading is allowed
        return run, before, seen, rt.store.audit_entries()

    run, before, (order, history, audit, _), every = run_rt(data_dir, scenario)
    assert order.status == before and history  # nothing the viewer tried happened
    assert not [e for e in every if e.who == "vic"]


def test_an_operator_runs_orders_but_publishes_nothing_and_keeps_instruments_in_service(data_dir):
    async def scenario(rt, clock):
        run = await rt.start_run("Flow", {}, who="bob")
        await rt.pause(run, who="bob", reason="hold")
        with pytest.raises(PermissionDenied, match="template publish: 'bob' is signed in as operator; "
                                                   "template publish needs the supervisor role or above"):
            await rt.publish_template(template_from_dict({**FLOW, "description": "v2"}), who="bob")
        with pytest.raises(PermissionDenied, match="out of service: 'bob' is signed in as operator"):
            await rt.instrument_action("Sealer", "out_of_service", who="bob", reason="cleaning")
        with pytest.raises(PermissionDenied, match="playbook: 'bob' is signed in as operator"):
            await Playbook.attach(rt.engine).add(RULE, who="bob")
        scheduler = Scheduler(rt)
        with pytest.raises(PermissionDenied, match="schedules: 'bob' is signed in as operator"):
            await scheduler.add(Schedule("Flow", Frequency.DAILY, at="09:30"), who="bob")
        with pytest.raises(PermissionDenied, match="users: 'bob' is signed in as operator; users needs the "
                                                   "admin role$"):
            users.add_user(rt.store, "eve", "admin", "eve-password", who="bob")
        users.set_password(rt.store, "bob", "new-bob-password", who="bob")  # one's own password
        await rt.cancel(run, who="bob", reason="done")
        return (rt.templates()[0].version, {v.id: v for v in rt.instruments()}["Sealer"].in_service,
                Playbook.attach(rt.engine).rules, scheduler.entries(), users.get_user(rt.store, "eve"),
                rt.engine.run_status(run).value)

    version, in_service, rules, schedules, eve, status = run_rt(data_dir, scenario)
    assert (version, in_service, rules, schedules, eve) == (1, True, [], [], None)
    assert status == "cancelled"


def test_a_supervisor_publishes_and_takes_out_of_service_an_admin_manages_users(data_dir):
    async def scenario(rt, clock):
        published = await rt.publish_template(template_from_dict({**FLOW, "description": "v2"}), who="ann")
        await rt.instrument_action("Sealer", "out_of_service", who="ann", reason="cleaning")
        await Playbook.attach(rt.engine).add(RULE, who="ann")
        with pytest.raises(PermissionDenied, match="users: 'ann' is signed in as supervisor; users needs "
                                                   "the admin role"):
            users.set_enabled(rt.store, "bob", False, who="ann")
        users.add_user(rt.store, "eve", "viewer", "eve-password", who="ada")
        users.set_enabled(rt.store, "bob", False, who="ada")
        with pytest.raises(PermissionDenied, match="cancel: user 'bob' is disabled"):
            await rt.cancel(await rt.start_run("Flow", {}, who="ann"), who="bob", reason="x")
        return published.version, {v.id: v for v in rt.instruments()}["Sealer"].in_service

    assert run_rt(data_dir, scenario) == (2, False)


def test_the_signer_role_counts_and_single_user_mode_checks_nothing(data_dir, tmp_path):
    policy = SignaturePolicy(frozenset({"template publish"}), "config.ini")

    async def signed(rt, clock):
        sig = await users.asign(rt.store, "bob", "bob-password", "approved", "template publish", "Flow")
        with pytest.raises(PermissionDenied, match="template publish: 'bob' is signed in as operator"):
            await rt.publish_template(template_from_dict(FLOW), who="ann", signature=sig)
        return rt.templates()[0].version

    assert run_rt(data_dir, signed, policy=policy) == 1

    async def anyone(rt, clock):  # no users: the operating-system user (or any name) does anything
        await rt.instrument_action("Sealer", "out_of_service", who="vic", reason="cleaning")
        return (await rt.publish_template(template_from_dict({**FLOW, "description": "v2"}), who="vic")).version

    other = tmp_path / "single"
    other.mkdir()
    assert run_rt(other, anyone, with_users=False) == 2


def test_migration_adds_the_viewer_role_keeping_users_and_tokens(tmp_path, cheap_scrypt):
    path = tmp_path / DB_FILENAME
    conn = sqlite3.connect(path, isolation_level=None)
    before = next(i for i, m in enumerate(MIGRATIONS) if "'viewer'" in m)
    for number, script in enumerate(MIGRATIONS[:before]):
        for statement in _split_sql(script):
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {number + 1}")
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute("INSERT INTO users (name, role, password_hash, enabled, created, created_by) "
                 "VALUES ('ann', 'admin', ?, 1, 1.0, 'root')", (users.hash_password("ann-password"),))
    conn.execute("INSERT INTO user_tokens (token_hash, user_name, created) VALUES (?, 'ann', 1.0)",
                 (users.token_hash("lcu_old"),))
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("INSERT INTO users (name, role, password_hash, created, created_by) "
                     "VALUES ('vic', 'viewer', 'x', 1.0, 'root')")
    conn.close()
    with Store(path).open() as store:
        users.add_user(store, "vic", "viewer", "vic-password", who="ann")
        assert [(u.name, u.role) for u in users.list_users(store)] == [("ann", "admin"), ("vic", "viewer")]
        assert store.read_sync(lambda c: users.user_for_token(c, "lcu_old")) == "ann"
        assert users.authenticate(store, "ann", "ann-password").role == "admin"
        assert store.read_sync(lambda c: c.execute("PRAGMA foreign_keys").fetchone()[0]) == 1
        with pytest.raises(sqlite3.IntegrityError):  # the token's reference to users still holds
            store.write_sync(lambda c: c.execute(
                "INSERT INTO user_tokens (token_hash, user_name, created) VALUES ('h', 'nobody', 1.0)"))
