"""Named users: scrypt password hashes, roles, the users CLI, single-user mode by default."""

from __future__ import annotations

import base64
import hashlib

import pytest

from console.cli import main as cli
from core import users
from core.errors import InputError, NotFoundError, StateError
from core.store import Store


@pytest.fixture
def cheap_scrypt(monkeypatch):
    """Tests other than the one about the parameters hash at a lower cost (same code path)."""
    monkeypatch.setattr(users, "SCRYPT_N", 2**12)
    monkeypatch.setattr(users, "_DUMMY_HASH", None)


def test_default_parameters_are_sound_and_the_hash_is_salted():
    stored = users.hash_password("correct horse")
    scheme, n, r, p, salt, key = stored.split("$")
    assert (scheme, int(n), int(r), int(p)) == ("scrypt", 2**17, 8, 1)  # OWASP's scrypt minimum
    assert len(base64.b64decode(salt)) == 16 and len(base64.b64decode(key)) == 32
    assert base64.b64decode(key) == hashlib.scrypt(b"correct horse", salt=base64.b64decode(salt),
                                                   n=2**17, r=8, p=1, maxmem=256 * 2**20, dklen=32)
    assert users.check_password("correct horse", stored)
    assert not users.check_password("correct horsf", stored)


def test_same_password_different_hashes_and_old_parameters_still_verify(cheap_scrypt, monkeypatch):
    a, b = users.hash_password("s3cret-pass"), users.hash_password("s3cret-pass")
    assert a != b
    monkeypatch.setattr(users, "SCRYPT_N", 2**13)  # the cost is raised later: old hashes still work
    assert users.check_password("s3cret-pass", a)
    assert not users.check_password("s3cret-pass", "md5$abc")


def test_single_user_mode_until_a_user_is_added(store, cheap_scrypt):
    assert not users.has_users(store) and users.list_users(store) == []
    ann = users.add_user(store, "ann", "supervisor", "ann-password", who="root")
    assert (ann.name, ann.role, ann.enabled, ann.created_by) == ("ann", "supervisor", True, "root")
    assert users.has_users(store)
    assert users.authenticate(store, "ANN", "ann-password").name == "ann"  # names ignore case
    with pytest.raises(users.AuthenticationError, match="wrong user name or password"):
        users.authenticate(store, "ann", "wrong-password")
    with pytest.raises(users.AuthenticationError):
        users.authenticate(store, "nobody", "ann-password")
    refused = [a for a in store.audit_entries() if a.action == "login refused"]
    assert [a.who for a in refused] == ["ann", "nobody"]
    assert store.verify_chain().ok


def test_refusals_name_the_field(store, cheap_scrypt):
    with pytest.raises(InputError, match="at least 8 characters"):
        users.add_user(store, "ann", "operator", "short", who="root")
    with pytest.raises(InputError, match="not a role"):
        users.add_user(store, "ann", "boss", "long-enough", who="root")
    with pytest.raises(InputError, match="not a user name"):
        users.add_user(store, "ann smith", "operator", "long-enough", who="root")
    with pytest.raises(InputError, match="must not be the user name"):
        users.add_user(store, "annabelle", "operator", "Annabelle", who="root")
    users.add_user(store, "ann", "admin", "long-enough", who="root")
    with pytest.raises(StateError, match="already exists"):
        users.add_user(store, "Ann", "operator", "long-enough", who="root")
    with pytest.raises(NotFoundError, match="no user 'bob'"):
        users.set_password(store, "bob", "long-enough", who="root")


def test_disable_passwd_and_the_last_admin(store, cheap_scrypt):
    users.add_user(store, "ann", "admin", "ann-password", who="root")
    users.add_user(store, "bob", "operator", "bob-password", who="ann")
    with pytest.raises(StateError, match="last enabled admin"):
        users.set_enabled(store, "ann", False, who="ann")
    users.set_enabled(store, "bob", False, who="ann")
    with pytest.raises(users.AuthenticationError):
        users.authenticate(store, "bob", "bob-password")
    users.set_enabled(store, "bob", True, who="ann")
    users.set_password(store, "bob", "new-password", who="ann")
    with pytest.raises(users.AuthenticationError):
        users.authenticate(store, "bob", "bob-password")
    assert users.authenticate(store, "bob", "new-password").role == "operator"
    actions = [(a.who, a.action, a.target) for a in store.audit_entries()]
    assert ("ann", "user disable", "bob") in actions and ("ann", "user passwd", "bob") in actions
    stored = store.read_sync(lambda c: c.execute("SELECT password_hash FROM users").fetchall())
    assert all(h.startswith("scrypt$") and "password" not in h for (h,) in stored)


def test_cli_users(data_dir, tmp_path, capsys, cheap_scrypt):
    pw = tmp_path / "pw"
    pw.write_text("first-password\n")
    assert cli(["users", "list"]) == 0
    assert "single-user mode" in capsys.readouterr().out
    assert cli(["users", "add", "ann", "--role", "admin", "--password-file", str(pw)]) == 0
    assert "ann: added as admin" in capsys.readouterr().out
    assert cli(["users", "add", "bob", "--role", "operator", "--password-file", str(pw)]) == 0
    assert cli(["users", "disable", "bob"]) == 0
    capsys.readouterr()
    assert cli(["users", "list"]) == 0
    out = capsys.readouterr().out
    assert "ann" in out and "admin" in out and "bob" in out and "disabled" in out
    pw.write_text("second-password\n")
    assert cli(["users", "passwd", "ann", "--password-file", str(pw)]) == 0
    assert cli(["users", "token", "ann"]) == 0
    token = capsys.readouterr().out.strip().splitlines()[-1]
    assert token.startswith("lcu_")
    with Store.open_in(data_dir) as s:
        assert users.authenticate(s, "ann", "second-password").name == "ann"
        assert s.read_sync(lambda c: users.user_for_token(c, token)) == "ann"
        stored = s.read_sync(lambda c: c.execute("SELECT token_hash FROM user_tokens").fetchall())
        assert stored == [(hashlib.sha256(token.encode()).hexdigest(),)]  # only the hash is kept
    with pytest.raises(SystemExit):
        cli(["users", "add", "carl", "--role", "chief", "--password-file", str(pw)])
    assert "invalid choice: 'chief'" in capsys.readouterr().err
    pw.write_text("short\n")
    assert cli(["users", "add", "carl", "--role", "operator", "--password-file", str(pw)]) == 2
    assert "password" in capsys.readouterr().err


def test_cli_users_act_as_a_named_admin(data_dir, tmp_path, capsys, cheap_scrypt, monkeypatch):
    """``--user NAME``: the password comes from LABCONSOLE_PASSWORD or a prompt, the role is
    checked and the audit names that user instead of the operating-system account."""
    import getpass

    pw = tmp_path / "pw"
    pw.write_text("carl-password\n")
    with Store.open_in(data_dir) as s:
        users.add_user(s, "ann", "admin", "ann-password", who="root")
        users.add_user(s, "bob", "operator", "bob-password", who="root")
    monkeypatch.setenv("LABCONSOLE_PASSWORD", "ann-password")
    assert cli(["users", "add", "carl", "--role", "viewer", "--password-file", str(pw), "--user", "ann"]) == 0
    assert "carl: added as viewer" in capsys.readouterr().out

    monkeypatch.setenv("LABCONSOLE_PASSWORD", "bob-password")  # an operator may not change users
    assert cli(["users", "disable", "carl", "--user", "bob"]) == 2
    assert "users: 'bob' is signed in as operator; users needs the admin role" in capsys.readouterr().err
    monkeypatch.setenv("LABCONSOLE_PASSWORD", "not-anns-password")
    assert cli(["users", "disable", "carl", "--user", "ann"]) == 2
    assert "wrong user name or password" in capsys.readouterr().err

    monkeypatch.delenv("LABCONSOLE_PASSWORD")  # no variable: asked at the terminal
    asked: list[str] = []
    monkeypatch.setattr(getpass, "getpass", lambda prompt: asked.append(prompt) or "ann-password")
    assert cli(["users", "disable", "carl", "--user", "ann"]) == 0
    assert asked == ["Password for ann: "]
    with Store.open_in(data_dir) as s:
        assert not users.get_user(s, "carl").enabled
        rows = [(a.who, a.action, a.target) for a in s.audit_entries()]
    assert ("ann", "user add", "carl") in rows and ("ann", "user disable", "carl") in rows
    assert ("ann", "command line refused", None) in rows
    assert not any(a == "user disable" and who == "bob" for who, a, _t in rows)
