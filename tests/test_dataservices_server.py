"""The embedded Data Services server on the wire: a real server on 127.0.0.1, a real store, raw HTTP.

These tests check bytes and shapes as clients see them (specs/data-services.md §5, §6); the
client tests and the Biosero-client tests build on them.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading

import httpx
import pytest
from helpers.bdm_support import run, serving

from core.dataservices import EmbeddedDataServices
from core.errors import ConfigError
from core.orders import Order, OrderStatus

BDM_ORDER_KEYS = {  # biosero.datamodels.ordering.Order, which is built with Order(**json)
    "identifier", "parentIdentifier", "sourceIdentifier", "runAfterIdentifier",
    "restrictToModuleIds", "moduleRestrictionStrategy", "statusDetails", "createdBy", "notes",
    "status", "creationTime", "scheduledStartTime", "actualStartTime", "estimatedDuration",
    "actualEndTime", "templateName", "templateVersion", "templateLastModifiedDateUtc",
    "inputParameters", "outputParameters", "assignedTo", "validationErrors", "state",
    "schedulingStrategy", "log", "priority"}
PARAMETER_KEYS = {"name", "value", "valueType", "unit", "defaultValue", "valueOptions",
                  "validationRules", "tags", "identity", "description"}
EVENT_KEYS = {  # biosero.datamodels.events.EventMessage, built with EventMessage(**json)
    "eventId", "topic", "start", "end", "organizationId", "groupId", "ownerId", "accessPolicy",
    "sharingPolicy", "retentionPolicy", "associationId", "activityId", "actorId", "subjects",
    "tags", "orchestratorId", "operatorId", "moduleId", "sourceTraceIds", "encryptionProvider",
    "createdDateUtc", "expirationDateUtc", "data"}
UNSET = "0001-01-01T00:00:00+00:00"
TEMPLATE = {
    "name": "Stitch Images", "category": "Imaging", "description": "Stitch tiles",
    "inputParameters": [
        {"name": "Barcode", "value": "", "valueType": "String", "defaultValue": ""},
        {"name": "Tiles", "value": "", "valueType": "Integer", "defaultValue": "9", "unit": "count"}],
    "outputParameters": [
        {"name": "Ok", "value": "False", "valueType": "Boolean", "defaultValue": "False"},
        {"name": "Score", "value": "", "valueType": "Double"}],
}


async def _register(c: httpx.AsyncClient, template: dict = TEMPLATE) -> None:
    r = await c.post("/api/v2.0/OrderService/RegisterOrderTemplate", json=template)
    assert r.status_code == 200, r.text


async def _create(c: httpx.AsyncClient, body: dict | None = None, **headers: str) -> str:
    r = await c.post("/api/v2.0/OrderService/CreateOrder",
                     json=body or {"TemplateName": "Stitch Images",
                                   "InputParameters": [{"name": "Barcode", "value": "BC-1"}]},
                     headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    return r.json()


def test_routes_are_case_insensitive_slashes_collapse_and_double_encoded_values_are_read(store):
    async def scenario():
        async with serving(store) as server, httpx.AsyncClient(base_url=server.url) as c:
            await _register(c)
            oid = await _create(c)
            assert oid == "Order_00001"
            base = server.url
            r = await c.get(f"{base}//API/V2.0//orderservice/ORDER?ORDERID={oid}")
            assert r.status_code == 200 and r.json()["identifier"] == oid
            r = await c.get(f"{base}/api/v3.0/ORDERS/{oid}")
            assert r.status_code == 200 and r.json()["identifier"] == oid
            # biosero-data-models' OrderClient: "?orderId=orderId=...&to=to=..."
            r = await c.post(f"{base}/api/v2.0/OrderService/TryAssignOrder"
                             f"?orderId=orderId={oid}&to=to=Module+A")
            assert r.status_code == 200 and r.json() is True
            r = await c.post(f"{base}/api/v2.0/OrderService/SetOutputParameters?orderId=orderId={oid}",
                             json={"Score": "0.5"})
            assert r.status_code == 200
            order = (await c.get(f"/api/v3.0/orders/{oid}")).json()
            assert order["assignedTo"] == "Module A"
            assert {p["name"]: p["value"] for p in order["outputParameters"]}["Score"] == "0.5"
            r = await c.delete(f"{base}/api/v2.0/OrderService/DeleteOrderTemplate"
                               "?templateName=templateName=Stitch+Images")
            assert r.status_code == 200 and r.json() is True
            r = await c.get("/api/v3.0/order-templates/Stitch%20Images")
            assert r.status_code == 404 and "OrderTemplateNotFound" in r.text

    run(scenario())


def test_order_json_has_every_key_enums_by_name_and_net_dates(store):
    async def scenario():
        async with serving(store) as server, httpx.AsyncClient(base_url=server.url) as c:
            await _register(c)
            oid = await _create(c, {"TemplateName": "stitch images", "ScheduledStartTime":
                                    "2025-01-01T12:00:00", "EstimatedDurationInMinutes": 1.5,
                                    "InputParameters": [{"name": "Barcode", "value": "BC-1"}],
                                    "RestrictToModuleIds": "AIMS", "Priority": -1})
            raw = (await c.get("/api/v2.0/OrderService/Order", params={"orderId": oid})).text
            order = json.loads(raw)
            assert set(order) == BDM_ORDER_KEYS
            assert order["templateName"] == "Stitch Images"  # the template's own spelling
            assert order["status"] == "Created"
            assert order["schedulingStrategy"] == "ImmediateExecution"
            assert order["moduleRestrictionStrategy"] == "NoRestriction"
            assert order["priority"] == "Elevated"
            assert order["scheduledStartTime"] == "2025-01-01T12:00:00+00:00"  # naive read as UTC
            assert order["actualStartTime"] == UNSET and order["actualEndTime"] == UNSET
            assert order["estimatedDuration"] == "00:01:30"
            assert order["creationTime"].endswith("+00:00")
            assert order["sourceIdentifier"] == oid and order["parentIdentifier"] is None
            assert order["validationErrors"] == [] and order["statusDetails"] is None
            for p in order["inputParameters"] + order["outputParameters"]:
                assert set(p) == PARAMETER_KEYS, p
                assert isinstance(p["value"], str) and p["validationRules"] == []
            status = await c.get("/api/v2.0/OrderService/OrderStatus", params={"orderId": oid})
            assert status.text == '"Created"'

    run(scenario())


def test_create_fills_parameters_from_the_template(store):
    async def scenario():
        async with serving(store) as server, httpx.AsyncClient(base_url=server.url) as c:
            await _register(c)
            oid = await _create(c, {"templateName": "Stitch Images", "inputParameters": [
                {"name": "Barcode", "value": "BC-7"}, {"name": "Extra", "value": "x"}]})
            order = (await c.get(f"/api/v3.0/orders/{oid}")).json()
            inputs = {p["name"]: p for p in order["inputParameters"]}
            assert list(inputs) == ["Barcode", "Tiles", "Extra"]
            assert inputs["Barcode"]["value"] == "BC-7"
            assert inputs["Tiles"]["value"] == "9"  # not given: the template's default
            assert inputs["Tiles"]["valueType"] == "Integer" and inputs["Tiles"]["unit"] == "count"
            outputs = {p["name"]: p for p in order["outputParameters"]}
            assert outputs["Ok"]["valueType"] == "Boolean" and outputs["Ok"]["value"] == "False"
            assert outputs["Score"]["valueType"] == "Double"

    run(scenario())


def test_status_codes_and_body_rules(store):
    async def scenario():
        async with serving(store) as server, httpx.AsyncClient(base_url=server.url) as c:
            await _register(c)
            oid = await _create(c)
            # v2 POSTs: 200 with a JSON body
            r = await c.post("/api/v2.0/OrderService/UpdateOrderStatus",
                             params={"orderId": oid, "status": "Running"}, content='"string"')
            assert (r.status_code, r.text) == (200, "true")
            r = await c.post("/api/v2.0/OrderService/PersistState", params={"orderId": oid},
                             json='{"step": 1}')
            assert (r.status_code, r.text) == (200, "true")
            # v3 PUT: 200 with an empty body
            r = await c.put(f"/api/v3.0/orders/{oid}/status",
                            json={"status": "Complete", "statusDetails": "done"})
            assert (r.status_code, r.content) == (200, b"")
            # DELETE: a non-empty JSON body
            r = await c.delete("/api/v3.0/order-templates/Stitch Images")
            assert r.status_code == 200 and r.json() is True
            # 404 bodies as the SDK recognises them
            r = await c.get("/api/v3.0/orders/Order_09999")
            assert r.status_code == 404 and "OrderNotFound" in r.text
            r = await c.post("/api/v2.0/OrderService/UpdateOrderStatus",
                             params={"orderId": "Nope", "status": "Running"})
            assert r.status_code == 404 and "OrderNotFound" in r.text
            r = await c.delete("/api/v2.0/OrderService/DeleteOrderTemplate",
                               params={"templateName": "Stitch Images"})
            assert r.status_code == 404 and "OrderTemplateNotFound" in r.text
            r = await c.get("/api/v3.0/events/e-404")
            assert r.status_code == 404 and "Event with EventId 'e-404'" in r.text
            # not a route, wrong method, bad input
            r = await c.get("/api/v2.0/NoSuchService/Thing")
            assert r.status_code == 404 and "no Data Services route" in r.text
            r = await c.delete(f"/api/v3.0/orders/{oid}/status")
            assert r.status_code == 405 and r.headers["allow"] == "PUT"
            r = await c.post("/api/v2.0/OrderService/CreateOrder", content=b"{not json")
            assert r.status_code == 400 and "not JSON" in r.json()["detail"]
            r = await c.post("/api/v2.0/OrderService/CreateOrder", json={"notes": "no template"})
            assert r.status_code == 400 and "templateName" in r.json()["detail"]
            r = await c.put(f"/api/v3.0/orders/{oid}/status", json={"status": "Finished"})
            assert r.status_code == 400 and "OrderStatus" in r.json()["detail"]
            r = await c.get("/api/v2.0/version")
            assert r.status_code == 200 and isinstance(r.json(), str)

    run(scenario())


def test_ids_come_from_the_store_sequence_shared_with_the_console(store):
    async def scenario():
        async with serving(store) as server, httpx.AsyncClient(base_url=server.url) as c:
            first = await _create(c, {"templateName": "Unregistered"})
            console, _row = await store.insert_order(Order(templateName="Console job"), who="op")
            second = await _create(c, {"templateName": "Unregistered"})
            assert [first, console.identifier, second] == ["Order_00001", "Order_00002", "Order_00003"]
            assert store.get_order(second).templateName == "Unregistered"
            r = await c.get(f"/api/v3.0/orders/{console.identifier}")
            assert r.json()["templateName"] == "Console job"

    run(scenario())


def test_idempotency_keys_and_client_chosen_identifiers(store):
    async def scenario():
        async with serving(store) as server, httpx.AsyncClient(base_url=server.url) as c:
            body = {"templateName": "T"}
            a = await _create(c, body, **{"Idempotency-Key": "k-1"})
            b = await _create(c, body, **{"Idempotency-Key": "k-1"})
            assert a == b and store.count_orders() == 1
            assert await _create(c, {"templateName": "T", "identifier": "LIMS-42"}) == "LIMS-42"
            r = await c.post("/api/v2.0/OrderService/CreateOrder",
                             json={"templateName": "T", "identifier": "LIMS-42"})
            assert r.status_code == 409 and "LIMS-42" in r.text
            r = await c.post("/api/v2.0/OrderService/CreateOrder",
                             json={"templateName": "T", "identifier": "Order_00077"})
            assert r.status_code == 400 and "assigned by the server" in r.text
            r = await c.post("/api/v2.0/OrderService/CreateOrder",
                             json={"templateName": "T", "identifier": "a b&c"})
            assert r.status_code == 400 and "identifier" in r.text
            assert store.count_orders() == 2

    run(scenario())


def test_try_assign_is_atomic_and_assigned_orders_leave_unassigned_at_once(store):
    async def scenario():
        async with serving(store) as server, httpx.AsyncClient(base_url=server.url) as c:
            oid = await _create(c, {"templateName": "T"})
            other = await _create(c, {"templateName": "T"})
            listed = (await c.get("/api/v2.0/OrderService/UnassignedOrders")).json()
            assert [o["identifier"] for o in listed] == [oid, other]

            async def claim(i: int) -> bool:
                r = await c.post(f"/api/v3.0/orders/{oid}/try-assign", json={"To": f"module-{i}"})
                assert r.status_code == 200, r.text
                return r.json()["orderAssigned"]

            results = await asyncio.gather(*(claim(i) for i in range(20)))
            assert results.count(True) == 1
            winner = f"module-{results.index(True)}"
            listed = (await c.get("/api/v2.0/OrderService/UnassignedOrders")).json()
            assert [o["identifier"] for o in listed] == [other]
            assert (await c.get(f"/api/v3.0/orders/{oid}")).json()["assignedTo"] == winner
            # a started order cannot be claimed either
            await c.put(f"/api/v3.0/orders/{other}/status", json={"status": "Running"})
            r = await c.post("/api/v2.0/OrderService/TryAssignOrder",
                             params={"orderId": other, "to": "late"})
            assert r.json() is False
            r = await c.post("/api/v3.0/orders/Nope/try-assign", json={"to": "x"})
            assert r.status_code == 404 and "OrderNotFound" in r.text

    run(scenario())


def test_update_status_sets_timestamps_and_repeats_change_nothing(store):
    async def scenario():
        async with serving(store) as server, httpx.AsyncClient(base_url=server.url) as c:
            oid = await _create(c, {"templateName": "T"})
            for _ in range(2):
                await c.post("/api/v2.0/OrderService/UpdateOrderStatus",
                             params={"orderId": oid, "status": "running"}, content='"string"')
            running = (await c.get(f"/api/v3.0/orders/{oid}")).json()
            assert running["status"] == "Running" and running["actualStartTime"] != UNSET
            assert running["actualEndTime"] == UNSET and running["statusDetails"] is None
            for _ in range(2):
                await c.put(f"/api/v3.0/orders/{oid}/status",
                            json={"Status": "Error", "StatusDetails": "gripper jam"})
            failed = (await c.get(f"/api/v3.0/orders/{oid}")).json()
            assert failed["status"] == "Error" and failed["statusDetails"] == "gripper jam"
            assert failed["actualEndTime"] != UNSET
            assert failed["actualStartTime"] == running["actualStartTime"]
            moves = [(t.from_status, t.to_status) for t in store.transitions(oid)]
            assert moves == [(None, OrderStatus.Created), (OrderStatus.Created, OrderStatus.Running),
                             (OrderStatus.Running, OrderStatus.Error)]
            assert store.transitions(oid)[-1].why == "gripper jam"

    run(scenario())


def test_set_output_parameters_upserts_by_name_keeping_the_template_value_type(store):
    async def scenario():
        async with serving(store) as server, httpx.AsyncClient(base_url=server.url) as c:
            await _register(c)
            oid = await _create(c)
            await c.post("/api/v2.0/OrderService/SetOutputParameters", params={"orderId": oid},
                         json={"Ok": "True", "Note": "first"})
            await c.post("/api/v2.0/OrderService/SetOutputParameters", params={"orderId": oid},
                         json={"Note": "second", "Score": "0.93"})
            await c.put(f"/api/v3.0/orders/{oid}/output-parameters/Score", json={"value": "0.95"})
            outputs = {p["name"]: p for p in (await c.get(f"/api/v3.0/orders/{oid}")).json()[
                "outputParameters"]}
            assert [(n, p["value"], p["valueType"]) for n, p in outputs.items()] == [
                ("Ok", "True", "Boolean"), ("Score", "0.95", "Double"), ("Note", "second", "String")]
            assert store.get_order(oid).get_output_parameter_value("Ok") is True
            r = await c.post("/api/v2.0/OrderService/SetOutputParameters", params={"orderId": oid},
                             json="not an object")
            assert r.status_code == 400

    run(scenario())


def test_templates_upsert_by_name_honour_limit_and_keep_workflow_bytes(store):
    workflow = json.dumps({"$type": "Conductor.Workflow", "name": "W", "scripts": [
        {"name": "s", "language": "C#", "code": "var x = 1;\r\nreturn x;"}]}, indent=1)

    async def scenario():
        async with serving(store) as server, httpx.AsyncClient(base_url=server.url) as c:
            await _register(c, {"name": "Demo", "description": "old"})
            await _register(c, {"NAME": "DEMO", "Description": "new", "Workflow": workflow,
                                "InputParameters": None})
            for i in range(4):
                await _register(c, {"name": f"T{i}", "isHidden": i == 3})
            await _register(c, {"name": "Plate/Reader"})
            all_ = (await c.get("/api/v2.0/OrderService/OrderTemplates?limit=1000&offset=0")).json()
            assert [t["name"] for t in all_] == ["DEMO", "T0", "T1", "T2", "T3", "Plate/Reader"]
            demo = all_[0]
            assert demo["description"] == "new" and demo["workflow"] == workflow
            assert demo["inputParameters"] == [] and demo["isHidden"] is False
            assert demo["defaultEstimatedDuration"] == "00:00:00"
            assert set(demo) == {"name", "category", "description", "requiredCapabilities",
                                 "availableModuleIds", "icon", "color", "inputParameters",
                                 "outputParameters", "validationScript", "validationScriptLanguage",
                                 "defaultEstimatedDuration", "durationEstimationScript",
                                 "durationEstimationScriptLanguage", "schedulingStrategy",
                                 "workflow", "isHidden"}
            page = (await c.get("/api/v2.0/OrderService/OrderTemplates?limit=2&offset=1")).json()
            assert [t["name"] for t in page] == ["T0", "T1"]
            visible = (await c.get("/api/v3.0/order-templates?excludeHidden=true&limit=2000")).json()
            assert "T3" not in [t["name"] for t in visible] and len(visible) == 5
            one = await c.get("/api/v3.0/order-templates/demo")
            assert one.json()["name"] == "DEMO"
            slash = await c.get("/api/v3.0/order-templates/Plate%2FReader")
            assert slash.status_code == 200 and slash.json()["name"] == "Plate/Reader"
            r = await c.put("/api/v3.0/order-templates/T0", json={"isHidden": True, "color": "#FF0000"})
            assert (r.status_code, r.content) == (200, b"")
            t0 = (await c.get("/api/v3.0/order-templates/T0")).json()
            assert t0["isHidden"] is True and t0["color"] == "#FF0000"

    run(scenario())


def test_events_are_stored_verbatim_and_queryable(store):
    data = '{"Id": 0, "ModuleIdentifier": "PY-1", "Status": 1, "ClassName": "x"}'

    async def scenario():
        async with serving(store, emit_order_events=True) as server, \
                httpx.AsyncClient(base_url=server.url) as c:
            r = await c.post("/api/v2.0/EventService", json={
                "Topic": "Biosero.DataModels.Events.ModuleStatusUpdateEvent", "ActorId": "Python Script",
                "Data": data, "Subjects": ["PY-1", "PLATE-9"]})
            assert r.status_code == 200
            first = r.json()
            assert isinstance(first, str) and len(first) == 36
            r = await c.post("/api/v2.0/EventService", json={
                "eventId": "e-2", "topic": "Biosero.DataModels.Events.LocationChangedEvent",
                "data": '{"itemIdentifier":"PLATE-9"}', "start": "2025-01-01T00:00:00Z",
                "end": "2025-01-01T00:00:01.1234567+00:00"})
            assert r.json() == "e-2"
            again = await c.post("/api/v2.0/EventService", json={"eventId": "e-2", "topic": "other"})
            assert again.json() == "e-2"
            v3 = await c.post("/api/v3.0/events", json={"topic": "t3", "data": "{}"})
            assert set(v3.json()) == {"eventId"}

            event = (await c.get(f"/api/v3.0/events/{first}")).json()
            assert set(event) == EVENT_KEYS
            assert event["data"] == data and event["actorId"] == "Python Script"
            assert event["start"] != UNSET and event["end"] != UNSET  # defaulted to now
            assert event["expirationDateUtc"] is None

            async def query(body: dict, **params) -> list[str]:
                r = await c.post("/api/v2.0/QueryService/Events", json=body, params=params)
                assert r.status_code == 200, r.text
                return [e["eventId"] for e in r.json()]

            everything = await query({})
            assert everything == [first, "e-2", v3.json()["eventId"]]
            assert await query({"Topic": "Biosero.DataModels.Events.LocationChangedEvent"}) == ["e-2"]
            assert await query({"subjectsContains": "PLATE"}) == [first]
            assert await query({"Start": "2025-01-01 00:00:00", "End": "2025-01-01 00:00:02"}) == ["e-2"]
            assert await query({}, limit=1, offset=1) == ["e-2"]
            stored = (await c.get("/api/v3.0/events/e-2")).json()
            assert stored["topic"] == "Biosero.DataModels.Events.LocationChangedEvent"
            assert stored["end"] == "2025-01-01T00:00:01.123456+00:00"
            created = [e["createdDateUtc"] for e in
                       (await c.post("/api/v2.0/QueryService/Events", json={})).json()]
            assert created == sorted(created)

            oid = await _create(c, {"templateName": "T"})
            await c.put(f"/api/v3.0/orders/{oid}/status", json={"status": "Running"})
            order_events = (await c.post("/api/v2.0/QueryService/Events",
                                         json={"associationId": oid})).json()
            assert [e["topic"].rsplit(".", 1)[1] for e in order_events] == [
                "OrderCreatedEvent", "OrderStatusChangedEvent"]
            assert json.loads(order_events[0]["data"])["orderIdentifier"] == oid
            assert json.loads(order_events[1]["data"])["orderStatus"] == "Running"

    run(scenario())


def test_changes_are_announced_on_the_loop_that_started_the_server(store):
    seen: list[tuple[str, str, int]] = []

    async def scenario():
        loop_thread = threading.get_ident()
        done = asyncio.Event()

        def on_change(change):
            seen.append((change.kind, change.subject, threading.get_ident()))
            if change.kind == "order_status":
                assert change.status_change is not None
                assert change.status_change.to_status is OrderStatus.Complete
                done.set()

        async with serving(store, on_change=on_change) as server, \
                httpx.AsyncClient(base_url=server.url) as c:
            await _register(c, {"name": "T"})
            oid = await _create(c, {"templateName": "T"})
            await c.post(f"/api/v3.0/orders/{oid}/try-assign", json={"to": "m"})
            await c.put(f"/api/v3.0/orders/{oid}/status", json={"status": "Complete"})
            await asyncio.wait_for(done.wait(), 5)
        assert {t for _k, _s, t in seen} == {loop_thread}
        assert [(k, s) for k, s, _t in seen] == [("template", "T"), ("order_created", oid),
                                                 ("order_updated", oid), ("order_status", oid)]

    run(scenario())


def test_a_token_makes_every_request_need_the_bearer_header(store):
    async def scenario():
        async with serving(store, token="s3cret") as server, \
                httpx.AsyncClient(base_url=server.url) as c:
            r = await c.get("/api/v2.0/version")
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
            r = await c.get("/api/v2.0/version", headers={"Authorization": "Bearer wrong"})
            assert r.status_code == 401
            r = await c.get("/api/v2.0/version", headers={"Authorization": "Bearer s3cret"})
            assert r.status_code == 200

    run(scenario())


def test_binding_beyond_loopback_needs_a_token(store):
    with pytest.raises(ConfigError) as err:
        EmbeddedDataServices(store, host="0.0.0.0", port=0)
    assert "token" in str(err.value) and "0.0.0.0" in str(err.value)
    assert EmbeddedDataServices(store, host="0.0.0.0", port=0, token="t").token == "t"
    assert EmbeddedDataServices(store, host="localhost", port=0).token is None


def test_a_taken_port_moves_to_the_next_free_one(store):
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(1)
    taken = blocker.getsockname()[1]

    async def scenario():
        async with serving(store, port=taken, port_attempts=5) as server:
            port = int(server.url.rsplit(":", 1)[1])
            assert taken < port < taken + 5
            async with httpx.AsyncClient() as c:
                assert (await c.get(f"{server.url}/api/v2.0/version")).status_code == 200
        with pytest.raises(ConfigError) as err:
            async with serving(store, port=taken, port_attempts=1):
                pass
        assert f"{taken}" in str(err.value) and "in use" in str(err.value)

    try:
        run(scenario())
    finally:
        blocker.close()


def test_v3_filters_update_order_and_persist_state(store):
    async def scenario():
        async with serving(store) as server, httpx.AsyncClient(base_url=server.url) as c:
            root = await _create(c, {"templateName": "Run"})
            a = await _create(c, {"templateName": "Read", "parentIdentifier": root,
                                  "restrictToModuleIds": "Reader-1, Reader-2"})
            b = await _create(c, {"templateName": "Wash", "parentIdentifier": a})
            ids = lambda r: [o["identifier"] for o in r.json()]  # noqa: E731
            r = await c.get("/api/v3.0/orders/unassigned", params={"restrictToModuleIds": "Reader-2"})
            assert ids(r) == [a]
            r = await c.get("/api/v3.0/orders/unassigned?templateName=wash&templateName=Run")
            assert ids(r) == [root, b]
            r = await c.get("/api/v3.0/orders", params={"status": "Created", "limit": 2, "offset": 1})
            assert ids(r) == [a, b]
            await c.put(f"/api/v3.0/orders/{a}/status", json={"status": "Running"})
            await c.put(f"/api/v3.0/orders/{b}/status", json={"status": "Paused"})
            r = await c.get("/api/v3.0/orders/executing", params={"sourceIdentifier": root})
            assert ids(r) == [a, b]
            r = await c.get(f"/api/v3.0/orders/{a}/descendants-and-self")
            assert ids(r) == [a, b]
            r = await c.post("/api/v2.0/OrderService/UpdateOrder", json={
                "Identifier": b, "Notes": "rerun", "Priority": "Elevated", "Status": "Complete"})
            assert (r.status_code, r.text) == (200, "true")
            r = await c.put(f"/api/v3.0/orders/{b}/state", json={"state": "step 3"})
            assert (r.status_code, r.content) == (200, b"")
            wash = (await c.get(f"/api/v3.0/orders/{b}")).json()
            assert (wash["notes"], wash["priority"], wash["state"]) == ("rerun", "Elevated", "step 3")
            assert wash["status"] == "Paused"  # status changes only through UpdateOrderStatus
            r = await c.get("/api/v2.0/OrderService/Orders", params={"createdOnOrBefore": "yesterday"})
            assert r.status_code == 400 and "createdOnOrBefore" in r.text

    run(scenario())
