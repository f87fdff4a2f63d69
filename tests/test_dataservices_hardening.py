"""The embedded Data Services server against bad input: every refusal is a 4xx naming the field,
nothing unreadable is stored, and an order stored unreadably by an older version neither breaks
the server nor stops the console from picking up the others.

Real server on 127.0.0.1, real store, raw HTTP (httpx, or a socket where httpx would hide bytes).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from pathlib import Path

import httpx
import pytest
from helpers.bdm_support import run, serving

from core.dataservices.backend import DataServicesBackend
from core.dataservices.client import DataServicesClient
from core.dataservices.config import DataServicesSettings
from core.dataservices.link import DataServicesLink
from core.dataservices.server import DataServicesApp, EmbeddedDataServices
from core.orders import Order, OrderStatus
from core.runtime import SAMPLE_TEMPLATES, Runtime
from core.store import DB_FILENAME, Store
from core.workcell import parse_workcell

TEMPLATE = {"name": "Stitch", "inputParameters": [{"name": "Barcode", "valueType": "String"}],
            "outputParameters": [{"name": "Score", "valueType": "Double"}]}
SURROGATE = "\\ud800"  # as it travels in JSON text: a lone high surrogate escape
ROUTES = DataServicesApp(DataServicesBackend(None)).routes  # type: ignore[arg-type]


def _problem_fields(r: httpx.Response) -> dict[str, list[str]]:
    assert r.headers["content-type"].startswith("application/problem+json"), r.text
    return r.json().get("errors") or {}


async def _setup(c: httpx.AsyncClient) -> str:
    r = await c.post("/api/v2.0/OrderService/RegisterOrderTemplate", json=TEMPLATE)
    assert r.status_code == 200, r.text
    r = await c.post("/api/v3.0/orders", json={"templateName": "Stitch"})
    assert r.status_code == 200, r.text
    return r.json()


# --------------------------------------------------------------------------- lone surrogates

SURROGATE_WRITES = [
    ("POST", "/api/v3.0/orders", '{"templateName":"Stitch","notes":"%s"}', "notes"),
    ("POST", "/api/v2.0/OrderService/CreateOrder",
     '{"TemplateName":"Stitch","InputParameters":[{"name":"Barcode","value":"BC%s"}]}',
     "InputParameters[0].value"),
    ("POST", "/api/v3.0/orders", '{"templateName":"Stitch%s"}', "templateName"),
    ("POST", "/api/v3.0/orders", '{"templateName":"Stitch","createdBy":"me","%s":1}', "%s"),
    ("PUT", "/api/v3.0/orders/{id}", '{"notes":"%s"}', "notes"),
    ("PUT", "/api/v3.0/orders/{id}/output-parameters/Score", '{"value":"%s"}', "value"),
    ("POST", "/api/v2.0/OrderService/SetOutputParameters?orderId={id}", '{"Score":"%s"}', "Score"),
    ("POST", "/api/v2.0/OrderService/UpdateOrder?orderId={id}",
     '{"outputParameters":[{"name":"Score","value":"%s"}]}', "outputParameters[0].value"),
    ("PUT", "/api/v3.0/orders/{id}/state", '"%s"', "body"),
    ("PUT", "/api/v3.0/orders/{id}/status", '{"status":"Running","statusDetails":"%s"}',
     "statusDetails"),
    ("POST", "/api/v3.0/orders/{id}/try-assign", '{"to":"Module %s"}', "to"),
    ("POST", "/api/v2.0/OrderService/RegisterOrderTemplate", '{"name":"T%s"}', "name"),
    ("POST", "/api/v2.0/EventService", '{"topic":"%s"}', "topic"),
]


@pytest.mark.parametrize(("method", "path", "body", "field"), SURROGATE_WRITES,
                         ids=[f"{m} {p.split('?')[0]} {f}" for m, p, _b, f in SURROGATE_WRITES])
def test_a_lone_surrogate_is_refused_naming_the_field_and_the_order_stays_usable(
        store, method, path, body, field):
    async def scenario():
        async with serving(store) as server, httpx.AsyncClient(base_url=server.url) as c:
            oid = await _setup(c)
            r = await c.request(method, path.replace("{id}", oid), content=body % SURROGATE,
                                headers={"content-type": "application/json"})
            fields = _problem_fields(r)
            # the order is still readable and can still be claimed and changed
            got = await c.get(f"/api/v3.0/orders/{oid}")
            claim = await c.post(f"/api/v3.0/orders/{oid}/try-assign", json={"to": "Module A"})
            status = await c.put(f"/api/v3.0/orders/{oid}/status", json={"status": "Running"})
            listed = await c.get("/api/v3.0/orders")
            return r, fields, got, claim, status, listed

    r, fields, got, claim, status, listed = run(scenario())
    assert r.status_code == 400, r.text
    expected = field.replace("%s", "\\ud800")
    assert expected in fields, fields
    assert "lone surrogate" in r.json()["detail"]
    assert got.status_code == 200 and "\\ud800" not in got.text
    assert claim.status_code == 200 and claim.json() == {"orderAssigned": True}, claim.text
    assert status.status_code == 200, status.text
    assert SURROGATE not in listed.text and len(listed.json()) == 1  # nothing unreadable stored


def _legacy_order(db: Path, identifier: str, template: str, restrict: str | None = None) -> None:
    """An order as an older labconsole could store it: text with a lone surrogate in it."""
    order = Order(identifier=identifier, templateName=template, restrictToModuleIds=restrict,
                  notes="made by v0.9 \ud800", status=OrderStatus.Created)
    with sqlite3.connect(db) as conn:
        conn.execute(
            "INSERT INTO orders (id, seq, template_name, status, priority, created, updated, data) "
            "VALUES (?, 0, ?, ?, ?, 0, 0, ?)",
            (identifier, template, int(order.status), int(order.priority), order.to_json()))
    conn.close()


def test_an_unreadable_stored_order_gets_409_not_500(store, data_dir):
    _legacy_order(data_dir / DB_FILENAME, "Legacy_1", "Stitch")

    async def scenario():
        async with serving(store) as server, httpx.AsyncClient(base_url=server.url) as c:
            refused = [
                await c.post("/api/v3.0/orders/Legacy_1/try-assign", json={"to": "M"}),
                await c.put("/api/v3.0/orders/Legacy_1", json={"notes": "fixed"}),
                await c.put("/api/v3.0/orders/Legacy_1/output-parameters/Score", json={"value": "1"}),
                await c.post("/api/v2.0/OrderService/TryAssignOrder?orderId=Legacy_1&to=M")]
            # a status change needs no full read: an operator can still cancel it
            cancel = await c.put("/api/v3.0/orders/Legacy_1/status", json={"status": "Canceled"})
            return refused, cancel

    refused, cancel = run(scenario())
    assert cancel.status_code == 200, cancel.text
    for r in refused:
        assert r.status_code == 409, r.text
        assert r.json()["type"] == "OrderUnreadable"
        assert "Legacy_1" in r.json()["detail"] and "notes" in r.json()["detail"]


CELL = """
name: hardening cell
seed: 1
heartbeat_interval: 1s
stale_timeout: 10s
instruments:
  - {id: Sealer1, kind: Sealer, driver: simulated, capabilities: {Sealer.Seal: {duration: 20ms, jitter: 0s}}}
"""


async def _until(read, status: OrderStatus, timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while (await read()).status is not status:
        assert loop.time() < end, f"not {status.name} in time"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("mode", ["embedded", "remote"])
def test_one_unreadable_order_never_blocks_pickup_of_the_others(tmp_path, caplog, mode):
    """An order stored with a lone surrogate (by an older version) sits first in line; the
    console skips it, says so once with its id and the reason, and picks up the rest."""
    console_dir, remote_dir = tmp_path / "console", tmp_path / "remote"
    console_dir.mkdir()
    remote_dir.mkdir()
    ds_dir = console_dir if mode == "embedded" else remote_dir
    Store(ds_dir / DB_FILENAME).open().close()  # schema in place
    _legacy_order(ds_dir / DB_FILENAME, "Legacy_1", "Sealer.Seal", "Sealer1")
    caplog.set_level(logging.WARNING, logger="core.dataservices.link")

    async def scenario():
        remote_store = remote = None
        settings = None
        if mode == "remote":
            remote_store = Store(remote_dir / DB_FILENAME).open()
            remote = EmbeddedDataServices(remote_store, port=0)
            settings = DataServicesSettings(await remote.start(), "test")
        store = Store(console_dir / DB_FILENAME).open()
        runtime = Runtime.build(console_dir, store=store, workcell=parse_workcell(CELL))
        await runtime.start(templates_dir=SAMPLE_TEMPLATES)
        link = DataServicesLink(runtime, settings, poll_interval=0.05, port=0, timeout=2.0)
        try:
            url = await link.start()
            client = DataServicesClient(url)
            good = [await client.create_order(Order(templateName="Sealer.Seal",
                                                    restrictToModuleIds="Sealer1"))
                    for _ in range(2)]
            for oid in good:
                await _until(lambda oid=oid: client.get_order(oid), OrderStatus.Complete)
            for _ in range(10):  # more polls over the bad order: still logged once
                await link.poll_once()
            await client.close()
            return good, link.state, link.describe()
        finally:
            await link.stop()
            await runtime.close()
            if remote is not None:
                await remote.stop()
                remote_store.close()

    good, state, described = run(scenario(), timeout=90)
    assert len(good) == 2
    assert state.skipped == 1
    assert state.pickup_error is not None and state.pickup_error.startswith("Legacy_1: ")
    assert "lone surrogate" in state.pickup_error and "notes" in state.pickup_error
    assert "1 order not picked up" in described and "Legacy_1" in described
    said = [r for r in caplog.records if "Legacy_1" in r.getMessage()]
    assert len(said) == 1, [r.getMessage() for r in said]
    assert not [r for r in caplog.records if r.exc_info], "no tracebacks"


# --------------------------------------------------------------------------- 500s on bad input


BAD_INPUT = [
    ("GET", "/api/v3.0/orders?offset=" + str(2**63), None, "offset"),
    ("GET", "/api/v2.0/OrderService/Orders?limit=" + str(2**64), None, "limit"),
    ("POST", "/api/v3.0/orders", '{"templateName":"Stitch","inputParameters":' + "[" * 5000
     + "]" * 5000 + "}", "body"),
    ("POST", "/api/v3.0/orders", '{"templateName":"Stitch","notes":' + '{"a":' * 100 + "1"
     + "}" * 100 + "}", "notes.a.a.a"),
    ("POST", "/api/v3.0/orders", '{"templateName":"Stitch","inputParameters":5}', "inputParameters"),
    ("POST", "/api/v3.0/orders", '{"templateName":"Stitch","outputParameters":"x"}',
     "outputParameters"),
    ("POST", "/api/v3.0/orders", '{"templateName":"Stitch","estimatedDuration":"99999999999.00:00:00"}',
     "estimatedDuration"),
    ("POST", "/api/v3.0/orders", '{"templateName":"Stitch","estimatedDuration":1e300}',
     "estimatedDuration"),
    ("POST", "/api/v2.0/OrderService/CreateOrder",
     '{"TemplateName":"Stitch","EstimatedDurationInMinutes":1e300}', "estimatedDurationInMinutes"),
    ("PUT", "/api/v3.0/orders/{id}", '{"estimatedDuration":"99999999999.00:00:00"}',
     "estimatedDuration"),
    ("GET", "/api/v3.0/events?topic=%ED%A0%80", None, "topic"),
    ("GET", "/api/v3.0/orders/executing?assignedTo=%ED%A0%80", None, "assignedTo"),
    ("GET", "/api/v3.0/order-templates/%ED%A0%80", None, "path"),
    ("DELETE", "/api/v2.0/OrderService/DeleteOrderTemplate?templateName=%ED%A0%80", None,
     "templateName"),
    ("POST", "/api/v2.0/OrderService/PersistState?orderId={id}", b"\xff\xfe", "body"),
]


@pytest.mark.parametrize(("method", "path", "body", "field"), BAD_INPUT,
                         ids=[f"{m} {p[:50]} {f}" for m, p, _b, f in BAD_INPUT])
def test_ordinary_bad_input_is_a_400_naming_the_field(store, method, path, body, field):
    async def scenario():
        async with serving(store) as server, httpx.AsyncClient(base_url=server.url) as c:
            oid = await _setup(c)
            r = await c.request(method, path.replace("{id}", oid), content=body,
                                headers={"content-type": "application/json"})
            after = await c.get("/api/v3.0/orders")
            return r, after

    r, after = run(scenario())
    assert r.status_code == 400, r.text
    fields = _problem_fields(r)
    assert any(name.startswith(field) for name in fields), fields
    assert len(after.json()) == 1  # nothing was stored


@pytest.mark.parametrize("route", ROUTES, ids=[f"{r.method} {r.url_path}" for r in ROUTES])
def test_every_route_refuses_an_offset_sqlite_cannot_hold(store, route):
    """Every route of the app (enumerated from it, so a new route is covered too) gets
    offset=2**63 and limit=2**63; list routes answer 400 naming them, none answers 5xx."""
    path = route.url_path.replace("{id}", "Order_00001").replace("{name}", "Stitch")

    async def scenario():
        async with serving(store) as server, httpx.AsyncClient(base_url=server.url) as c:
            await _setup(c)
            out = []
            for name in ("offset", "limit"):
                out.append(await c.request(route.method, path, params={name: str(2**63)},
                                           content=b"{}" if route.body else None))
            return out

    for name, r in zip(("offset", "limit"), run(scenario()), strict=True):
        assert r.status_code < 500, r.text
        if route.paged:
            assert r.status_code == 400, r.text
            assert name in _problem_fields(r)


# --------------------------------------------------------------------------- OpenAPI


def test_openapi_document_lists_every_route(store):
    async def scenario():
        async with serving(store) as server, httpx.AsyncClient(base_url=server.url) as c:
            return await c.get("/openapi.json")

    r = run(scenario())
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    doc = r.json()
    assert doc["openapi"].startswith("3.")
    for route in ROUTES:
        operation = doc["paths"][route.url_path][route.method.lower()]
        names = {p["name"] for p in operation["parameters"]}
        assert set(route.query) <= names
        assert {p[1:-1] for p in route.path.split("/") if p.startswith("{")} <= names
        assert ("requestBody" in operation) == (route.body is not None)
    assert sum(len(ops) for ops in doc["paths"].values()) == len(ROUTES)
    json.dumps(doc)  # serialisable as is
