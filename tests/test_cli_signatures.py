"""The command line acts as a named user with --user: their role is checked, and the actions
config.ini's [SIGNATURES] require are signed with the password (file or prompt) and recorded in
the hash chain, like the window's."""

from __future__ import annotations

import getpass

import pytest

from console.cli import main as cli
from core import users
from core.store import Store

QUICK = """name: Quick
definition:
  steps:
    - {id: a, kind: noop}
"""


@pytest.fixture(autouse=True)
def cheap_scrypt(monkeypatch):
    monkeypatch.setattr(users, "SCRYPT_N", 2**12)
    monkeypatch.setattr(users, "_DUMMY_HASH", None)


@pytest.fixture
def lab(data_dir, tmp_path):
    (data_dir / "config.ini").write_text("[SIGNATURES]\nrequire = template publish, cancel\n")
    with Store.open_in(data_dir) as store:
        for name, role in (("ann", "supervisor"), ("bob", "operator"), ("vic", "viewer")):
            users.add_user(store, name, role, f"{name}-password", who="root")
    files = {}
    for name in ("ann", "bob", "vic"):
        files[name] = tmp_path / f"{name}.pw"
        files[name].write_text(f"{name}-password\n")
    quick = tmp_path / "quick.yaml"
    quick.write_text(QUICK)
    return data_dir, files, quick


def audit(data_dir, action):
    with Store.open_in(data_dir) as store:
        assert store.verify_chain().ok
        return [e for e in store.audit_entries() if e.action == action]


def test_publish_needs_a_supervisor_signature(lab, capsys):
    data_dir, pw, quick = lab
    assert cli(["templates", "publish", str(quick)]) == 2
    err = capsys.readouterr().err
    assert "--user: template publish needs an electronic signature ([SIGNATURES] require in " in err
    assert str(data_dir / "config.ini") in err and "Traceback" not in err

    assert cli(["templates", "publish", str(quick), "--user", "bob", "--password-file", str(pw["bob"])]) == 2
    assert ("template publish: 'bob' is signed in as operator; template publish needs the supervisor role "
            "or above") in capsys.readouterr().err

    assert cli(["templates", "publish", str(quick), "--user", "ann", "--password-file", str(pw["bob"])]) == 2
    assert "wrong user name or password" in capsys.readouterr().err
    assert [e for e in audit(data_dir, "publish template") if e.target == "Quick"] == []

    assert cli(["templates", "publish", str(quick), "--user", "ann", "--password-file", str(pw["ann"]),
                "--meaning", "reviewed"]) == 0
    assert "Quick: version 1" in capsys.readouterr().out
    (row,) = [e for e in audit(data_dir, "publish template") if e.target == "Quick"]
    assert row.who == "ann"
    assert row.details["signature"] == {"user": "ann", "role": "supervisor", "meaning": "reviewed",
                                        "at": row.details["signature"]["at"], "action": "template publish"}


def test_run_by_role_and_terminate_signed_from_a_prompt(lab, capsys, monkeypatch):
    data_dir, pw, quick = lab
    assert cli(["templates", "publish", str(quick), "--user", "ann", "--password-file", str(pw["ann"])]) == 0
    capsys.readouterr()
    assert cli(["workflow", "run", "Quick", "--user", "vic", "--password-file", str(pw["vic"])]) == 2
    assert "start run: 'vic' is signed in as viewer; start run needs the operator role" in capsys.readouterr().err
    assert cli(["workflow", "run", "Quick", "--user", "bob", "--password-file", str(pw["bob"])]) == 0
    run_id = capsys.readouterr().out.strip()

    assert cli(["workflow", "terminate", run_id, "--reason", "wrong plate"]) == 2
    assert "--user: cancel needs an electronic signature" in capsys.readouterr().err
    asked: list[str] = []
    monkeypatch.setattr(getpass, "getpass", lambda prompt: asked.append(prompt) or "bob-password")
    assert cli(["workflow", "terminate", run_id, "--reason", "wrong plate", "--user", "bob",
                "--meaning", "performed"]) == 0
    assert f"{run_id}: cancelled" in capsys.readouterr().out
    assert asked == ["Password for bob: "]  # asked once: the sign-in and the signature share it
    (row,) = audit(data_dir, "cancel run")
    assert (row.who, row.reason, row.target) == ("bob", "wrong plate", run_id)
    assert row.details["signature"]["meaning"] == "performed" and row.details["signature"]["role"] == "operator"
    with Store.open_in(data_dir) as store:
        created = [t for t in store.transitions(run_id) if t.to_status.name == "Created"]
    assert created and created[0].who == "bob"
