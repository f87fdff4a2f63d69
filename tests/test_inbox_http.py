"""Inbox items listed and answered over HTTP on the embedded Data Services server (real sockets)."""

from __future__ import annotations

import json

import httpx
from enginekit import Kit, run_kit, template

from core.dataservices.inbox_routes import inbox_routes
from core.dataservices.server import EmbeddedDataServices
from core.inbox import TOPIC_ANSWERED, TOPIC_OPENED, Inbox

ASK = template("AskHttp", [
    {"id": "ask", "kind": "prompt", "parameters": {"message": "Temperature of the cold room?", "fields": [
        {"name": "celsius", "type": "number", "unit": "°C", "min": -30, "max": 10}]}},
    {"id": "log", "kind": "noop", "depends_on": ["ask"]}])


def test_a_lims_lists_and_answers_an_item_over_http_with_the_token(data_dir):
    async def scenario(kit: Kit):
        inbox = Inbox(kit.engine)
        await kit.publish(ASK)
        run_id = await kit.run("AskHttp")
        await kit.clock.settle()
        server = EmbeddedDataServices(kit.store, port=0, token="s3cret", extra_routes=inbox_routes(lambda: inbox))
        async with server, httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            auth = {"Authorization": "Bearer s3cret"}
            assert (await http.get("/api/v3.0/inbox")).status_code == 401
            listed = (await http.get("/api/v3.0/inbox", headers=auth)).json()
            assert [(i["kind"], i["runId"], i["stepId"]) for i in listed] == [("prompt", run_id, "ask")]
            assert listed[0]["fields"][0] == {"name": "celsius", "type": "number", "unit": "°C", "min": -30.0,
                                              "max": 10.0}
            url = f"/api/v3.0/inbox/{listed[0]['id']}/answer"
            bad = await http.post(url, json={"answeredBy": "lims", "values": {"celsius": 25}}, headers=auth)
            assert bad.status_code == 400 and "above the maximum 10 °C" in bad.json()["detail"]
            assert list(bad.json()["errors"]) == ["celsius"]
            nobody = await http.post(url, json={"values": {"celsius": 4}}, headers=auth)
            assert nobody.status_code == 400 and list(nobody.json()["errors"]) == ["answeredBy"]
            ok = await http.post(url, json={"answeredBy": "lims", "values": {"celsius": "4.5"},
                                            "reason": "sensor 2"}, headers=auth)
            assert ok.status_code == 200 and ok.json()["state"] == "answered"
            again = await http.post(url, json={"answeredBy": "phone", "values": {"celsius": 4}}, headers=auth)
            assert again.status_code == 409 and "already answered by lims" in again.json()["detail"]
            missing = await http.get("/api/v3.0/inbox/999", headers=auth)
            assert missing.status_code == 404
            opened = (await http.get("/api/v3.0/events", params={"topic": TOPIC_OPENED}, headers=auth)).json()
            answered = (await http.get("/api/v3.0/events", params={"topic": TOPIC_ANSWERED}, headers=auth)).json()
            assert [e["associationId"] for e in opened] == [run_id]
            assert [(e["actorId"], json.loads(e["data"])["answer"]) for e in answered] == [("lims", {"celsius": 4.5})]
            assert "/api/v3.0/inbox/{id}/answer" in (await http.get("/openapi.json", headers=auth)).text
        await kit.until_done(run_id)
        return kit.steps(run_id), kit.engine.get_instance(run_id)["status"]

    steps, status = run_kit(data_dir, scenario)
    assert steps["ask"]["outputs"] == {"celsius": 4.5} and status == "completed"
