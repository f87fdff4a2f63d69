"""The embedded Data Services accepts users' bearer tokens (``labconsole users token NAME``), real
HTTP on 127.0.0.1."""

from __future__ import annotations

import httpx
import pytest
from helpers.bdm_support import run, serving

from core import users
from core.dataservices import EmbeddedDataServices
from core.errors import ConfigError


@pytest.fixture(autouse=True)
def cheap_scrypt(monkeypatch):
    monkeypatch.setattr(users, "SCRYPT_N", 2**12)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_user_tokens_next_to_the_server_token(store):
    users.add_user(store, "ann", "operator", "ann-password", who="root")
    users.add_user(store, "bob", "operator", "bob-password", who="root")
    ann, bob = users.issue_token(store, "ann", who="root"), users.issue_token(store, "bob", who="root")

    async def scenario():
        async with serving(store, token="s3cret") as server, httpx.AsyncClient(base_url=server.url) as c:
            codes = {}
            for label, headers in [("none", {}), ("server", bearer("s3cret")), ("ann", bearer(ann)),
                                   ("bob", bearer(bob)), ("forged", bearer("lcu_" + "A" * 43)),
                                   ("not bearer", {"Authorization": f"Basic {ann}"})]:
                codes[label] = (await c.get("/api/v2.0/version", headers=headers)).status_code
            users.revoke_tokens(store, "ann", who="root")
            users.set_enabled(store, "bob", False, who="root")
            codes["ann revoked"] = (await c.get("/api/v2.0/version", headers=bearer(ann))).status_code
            codes["bob disabled"] = (await c.get("/api/v2.0/version", headers=bearer(bob))).status_code
            return codes

    assert run(scenario()) == {"none": 401, "server": 200, "ann": 200, "bob": 200, "forged": 401,
                               "not bearer": 401, "ann revoked": 401, "bob disabled": 401}


def test_exposed_with_user_tokens_only(store):
    with pytest.raises(ConfigError, match="users token NAME"):
        EmbeddedDataServices(store, host="0.0.0.0", port=0)
    users.add_user(store, "ann", "operator", "ann-password", who="root")
    token = users.issue_token(store, "ann", who="root")

    async def scenario():
        async with serving(store, host="0.0.0.0") as server, httpx.AsyncClient(base_url=server.url) as c:
            assert server.url.startswith("http://127.0.0.1:")
            anonymous = (await c.get("/api/v2.0/version")).status_code
            signed_in = (await c.get("/api/v2.0/version", headers=bearer(token))).status_code
            return anonymous, signed_in

    assert run(scenario()) == (401, 200)


def test_loopback_without_a_token_stays_open(store):
    users.add_user(store, "ann", "operator", "ann-password", who="root")
    users.issue_token(store, "ann", who="root")

    async def scenario():
        async with serving(store) as server, httpx.AsyncClient(base_url=server.url) as c:
            return (await c.get("/api/v2.0/version")).status_code

    assert run(scenario()) == 200
