"""DataServicesClient over real HTTP: the embedded server, and servers that fail on purpose.

Bad paths are real too: a closed port, a listener that never answers, a web server that is not
Data Services, and a TCP proxy that loses answers after the server committed them.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from helpers.bdm_support import LossyProxy, run, serving

from core.dataservices import (
    CreateOutcomeUnknownError,
    DataServicesClient,
    EventMessage,
    EventNotFoundError,
    OrderTemplate,
    OrderTemplateNotFoundError,
    RetryPolicy,
)
from core.errors import ConfigError, DataServicesError, OrderNotFoundError
from core.orders import Order, OrderStatus, Parameter, ParameterValueType

TEMPLATE = OrderTemplate(
    name="Dispense", category="Liquid", inputParameters=[
        Parameter(name="Volume", value="", valueType=ParameterValueType.DOUBLE, unit="uL")],
    outputParameters=[Parameter(name="Dispensed", value="False", valueType=ParameterValueType.BOOLEAN),
                      Parameter(name="Actual", value="", valueType=ParameterValueType.DOUBLE)])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_orders_templates_and_events_round_trip(store):
    async def scenario():
        async with serving(store) as server, DataServicesClient(server.url, timeout=5) as ds:
            assert (await ds.version()).startswith("1.6.2")
            await ds.register_template(TEMPLATE)
            await ds.register_template({"Name": "Hidden", "IsHidden": True})
            names = [t.name for t in await ds.list_templates()]
            assert names == ["Dispense", "Hidden"]
            assert [t.name for t in await ds.list_templates(exclude_hidden=True)] == ["Dispense"]
            assert (await ds.find_template("dispense")).outputParameters[0].valueType \
                is ParameterValueType.BOOLEAN

            parent = await ds.create_order(Order(templateName="Dispense", notes="plate run"))
            oid = await ds.create_order(Order(
                templateName="Dispense", parentIdentifier=parent, restrictToModuleIds="Disp-1",
                inputParameters=[{"name": "Volume", "value": 12.5}],
                scheduledStartTime=datetime(2025, 5, 1, 8, 0, tzinfo=UTC),
                estimatedDuration=timedelta(minutes=2)))
            order = await ds.get_order(oid)
            assert order.status is OrderStatus.Created and order.parentIdentifier == parent
            assert order.get_input_parameter_value("Volume") == 12.5
            assert order.estimatedDuration == timedelta(minutes=2)
            assert order.scheduledStartTime == datetime(2025, 5, 1, 8, 0, tzinfo=UTC)

            assert [o.identifier for o in await ds.unassigned_orders(module_id="Disp-2")] == [parent]
            assert [o.identifier for o in await ds.unassigned_orders(module_id="Disp-1")] == [parent, oid]
            assert await ds.unassigned_orders(template_names=["Other"]) == []
            assert await ds.try_assign(oid, "Disp-1") is True
            assert await ds.try_assign(oid, "Disp-2") is False
            await ds.update_order_status(oid, OrderStatus.Running)
            assert [o.identifier for o in await ds.executing_orders()] == [oid]
            await ds.persist_state(oid, '{"step": 2}')
            await ds.set_output_parameters(oid, {"Dispensed": True, "Actual": 12.4})
            await ds.update_order_status(oid, OrderStatus.Complete, "dispensed")
            done = await ds.get_order(oid)
            assert done.state == '{"step": 2}' and done.statusDetails == "dispensed"
            assert done.get_output_parameter_value("Dispensed") is True
            assert done.get_output_parameter_value("Actual") == 12.4
            assert done.actualStartTime is not None and done.actualEndTime >= done.actualStartTime
            assert await ds.get_order_status(oid) is OrderStatus.Complete
            assert [o.identifier for o in await ds.completed_orders()] == [oid]
            assert [o.identifier for o in await ds.orders(statuses=[OrderStatus.Created])] == [parent]
            assert [o.identifier for o in await ds.descendants_and_self(parent)] == [parent, oid]

            event_id = await ds.publish_event(EventMessage(
                topic="Biosero.DataModels.Events.LocationChangedEvent", subjects=["PLATE-1"],
                data='{"itemIdentifier": "PLATE-1", "coordinates": "A1"}'))
            event = await ds.get_event(event_id)
            assert event.data == '{"itemIdentifier": "PLATE-1", "coordinates": "A1"}'
            found = await ds.query_events(topic="Biosero.DataModels.Events.LocationChangedEvent")
            assert [e.eventId for e in found] == [event_id]
            assert [e.eventId for e in await ds.query_events(subjects_contains="PLATE")] == [event_id]
            status_events = await ds.query_events(association_id=oid)
            assert [e.data_json()["orderStatus"] for e in status_events[1:]] == ["Running", "Complete"]

            await ds.delete_template("Hidden")
            with pytest.raises(OrderTemplateNotFoundError):
                await ds.get_template("Hidden")

    run(scenario())


def test_unknown_ids_raise_not_found_errors(store):
    async def scenario():
        async with serving(store) as server, DataServicesClient(server.url, timeout=5) as ds:
            await ds.register_template({"name": "Known"})
            with pytest.raises(OrderNotFoundError, match="Order_00404"):
                await ds.get_order("Order_00404")
            with pytest.raises(OrderNotFoundError):
                await ds.update_order_status("Order_00404", OrderStatus.Running)
            with pytest.raises(OrderNotFoundError):
                await ds.try_assign("Order_00404", "m")
            with pytest.raises(EventNotFoundError, match="e-1"):
                await ds.get_event("e-1")
            with pytest.raises(OrderTemplateNotFoundError) as err:
                await ds.find_template("Unknown Thing")
            assert "'Known'" in str(err.value)
            with pytest.raises(OrderTemplateNotFoundError):
                await ds.delete_template("Unknown Thing")

    run(scenario())


def test_an_unreachable_url_fails_within_the_timeout_naming_url_and_cause():
    port = _free_port()  # nothing listens there any more
    url = f"http://127.0.0.1:{port}"

    async def scenario():
        async with DataServicesClient(url, timeout=1.5) as ds:
            started = time.monotonic()
            with pytest.raises(DataServicesError) as err:
                await ds.get_order("Order_00001")
            elapsed = time.monotonic() - started
            assert elapsed < 1.5 + 0.5
            message = str(err.value)
            assert url in message and "cannot connect" in message
            assert "refused" in message.lower()
            with pytest.raises(DataServicesError) as err:  # creates fail the same way (never sent)
                await ds.create_order(Order(templateName="T"))
            assert url in str(err.value) and "cannot connect" in str(err.value)

    run(scenario())


def test_a_server_that_never_answers_fails_within_the_timeout():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)  # accepts at the kernel, never reads or answers
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"

    async def scenario():
        async with DataServicesClient(url, timeout=1.0) as ds:
            started = time.monotonic()
            with pytest.raises(DataServicesError) as err:
                await ds.get_order_status("Order_00001")
            assert time.monotonic() - started < 1.0 + 0.5
            assert url in str(err.value) and "no answer within 1 s" in str(err.value)

    try:
        run(scenario())
    finally:
        listener.close()


class _NotDataServices(BaseHTTPRequestHandler):
    """A web server that is not Data Services: 404 HTML under /api, 200 HTML elsewhere."""

    def do_GET(self):  # noqa: N802 - http.server's naming
        status = 404 if self.path.startswith("/api/") else 200
        body = b"<html><body>Welcome to nginx!</body></html>"
        if self.path.startswith("/api/v2.0/version"):
            status = 200
        self.send_response(status)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_a_wrong_url_is_reported_as_not_data_services():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _NotDataServices)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}"

    async def scenario():
        async with DataServicesClient(url, timeout=2) as ds:
            with pytest.raises(DataServicesError) as err:
                await ds.get_order("Order_00001")
            message = str(err.value)
            assert "HTTP 404" in message and f"is {url} a Data Services server?" in message
            assert not isinstance(err.value, OrderNotFoundError)
            with pytest.raises(DataServicesError) as err:
                await ds.version()
            assert "not JSON" in str(err.value) and "Welcome to nginx" in str(err.value)

    try:
        run(scenario())
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_bad_base_url_is_a_config_error():
    for bad in ("10.0.0.234:8105", "ftp://host:8105", "http://host:8105/api", "http://:8105",
                "http://host:99999"):
        with pytest.raises(ConfigError):
            DataServicesClient(bad)


def test_a_lost_create_answer_is_resent_with_the_same_key_and_not_doubled(store):
    async def scenario():
        async with serving(store) as server:
            proxy = LossyProxy(int(server.url.rsplit(":", 1)[1]))
            url = await proxy.start()
            try:
                async with DataServicesClient(url, timeout=5) as ds:
                    proxy.lose("CreateOrder")
                    oid = await ds.create_order(Order(templateName="T"), idempotency_key="outbox-17")
                    assert oid == "Order_00001"
                    creates = [r for r in proxy.requests if "CreateOrder" in r]
                    assert len(creates) == 2  # sent, answer lost, resent with the same key
                    assert store.count_orders() == 1
                    # a later resend of the same outbox entry (e.g. after a restart) is deduplicated
                    async with DataServicesClient(url, timeout=5) as fresh:
                        assert await fresh.create_order(Order(templateName="T"),
                                                        idempotency_key="outbox-17") == oid
                    assert store.count_orders() == 1
            finally:
                await proxy.stop()

    run(scenario())


def test_a_lost_create_answer_without_key_support_is_not_resent(store):
    async def scenario():
        async with serving(store) as server:
            # a server that does not advertise idempotency keys (as Biosero's does not)
            proxy = LossyProxy(int(server.url.rsplit(":", 1)[1]),
                               strip_headers=("Labconsole-Idempotency",))
            url = await proxy.start()
            try:
                async with DataServicesClient(url, timeout=5) as ds:
                    proxy.lose("CreateOrder")
                    with pytest.raises(CreateOutcomeUnknownError) as err:
                        await ds.create_order(Order(templateName="T"), idempotency_key="k-9")
                    assert err.value.idempotency_key == "k-9"
                    assert url in str(err.value) and "not resent" in str(err.value)
                    assert sum("CreateOrder" in r for r in proxy.requests) == 1
                    assert store.count_orders() == 1  # it was created: the operator must check
            finally:
                await proxy.stop()

    run(scenario())


def test_reads_are_retried_and_a_lost_claim_is_checked_before_resending(store):
    async def scenario():
        async with serving(store) as server:
            proxy = LossyProxy(int(server.url.rsplit(":", 1)[1]))
            url = await proxy.start()
            try:
                async with DataServicesClient(url, timeout=5) as ds:
                    oid = await ds.create_order(Order(templateName="T"))
                    proxy.lose("OrderService/Order?", times=2)
                    assert (await ds.get_order(oid)).identifier == oid
                    assert sum("OrderService/Order?" in r for r in proxy.requests) == 3
                    proxy.lose("try-assign")
                    assert await ds.try_assign(oid, "Mod-1") is True  # landed; answer lost
                    assert sum("try-assign" in r for r in proxy.requests) == 1
                    assert (await ds.get_order(oid)).assignedTo == "Mod-1"
                    other = await ds.create_order(Order(templateName="T"))
                    await ds.try_assign(other, "Mod-2")
                    proxy.lose("try-assign")
                    assert await ds.try_assign(other, "Mod-1") is False
            finally:
                await proxy.stop()

    run(scenario())


def test_retries_stop_after_the_policy_allows(store):
    async def scenario():
        async with serving(store) as server:
            proxy = LossyProxy(int(server.url.rsplit(":", 1)[1]))
            url = await proxy.start()
            try:
                policy = RetryPolicy(initial_interval=0.01, maximum_attempts=3)
                async with DataServicesClient(url, timeout=5, retry=policy) as ds:
                    proxy.lose("version", times=5)
                    with pytest.raises(DataServicesError) as err:
                        await ds.version()
                    assert "after 3 attempts" in str(err.value)
                    assert "closed the connection" in str(err.value)
            finally:
                await proxy.stop()

    run(scenario())


def test_the_client_sends_the_token(store):
    async def scenario():
        async with serving(store, token="t0k3n") as server:
            async with DataServicesClient(server.url, timeout=5) as anonymous:
                with pytest.raises(DataServicesError) as err:
                    await anonymous.version()
                assert "HTTP 401" in str(err.value) and "token" in str(err.value)
            async with DataServicesClient(server.url, timeout=5, token="t0k3n") as ds:
                assert await ds.create_order(Order(templateName="T")) == "Order_00001"

    run(scenario())


def test_cancelling_a_call_cancels_it_promptly():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"

    async def scenario():
        async with DataServicesClient(url, timeout=30) as ds:
            task = asyncio.ensure_future(ds.get_order("Order_00001"))
            await asyncio.sleep(0.2)
            started = time.monotonic()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert time.monotonic() - started < 0.5

    try:
        run(scenario())
    finally:
        listener.close()
