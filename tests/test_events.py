from __future__ import annotations

import asyncio

import pydantic
import pytest

from core.errors import ConfigError, InputError, Problem, ProblemList, TemplateError, Where
from core.events import Event, EventBus, OperatorAction, OrderStatusChanged
from core.orders import OrderStatus


def test_events_are_frozen():
    event = OperatorAction(who="alice", action="cancel", target="Order_00001")
    with pytest.raises(pydantic.ValidationError):
        event.who = "mallory"


def test_bus_delivers_by_type_and_isolates_failing_subscribers():
    bus = EventBus()
    got = []

    def boom(_event):
        raise RuntimeError("bad subscriber")

    bus.subscribe(boom, OperatorAction)
    sub = bus.subscribe(got.append, OperatorAction)
    bus.subscribe(lambda e: got.append(("any", type(e).__name__)))
    bus.publish(OperatorAction(who="a", action="pause"))
    bus.publish(OrderStatusChanged(order_id="O", from_status=None, to_status=OrderStatus.Created, who="x"))
    sub.close()
    bus.publish(OperatorAction(who="b", action="resume"))
    assert [g if isinstance(g, tuple) else g.who for g in got] == [
        "a", ("any", "OperatorAction"), ("any", "OrderStatusChanged"), ("any", "OperatorAction")]


def test_next_event_waits_for_a_match():
    async def scenario():
        bus = EventBus()
        waiter = asyncio.ensure_future(bus.next_event(OperatorAction, lambda e: e.who == "bob", timeout=2))
        await asyncio.sleep(0)
        bus.publish(OperatorAction(who="alice", action="x"))
        bus.publish(OperatorAction(who="bob", action="y"))
        return await waiter

    assert asyncio.run(scenario()).action == "y"
    assert issubclass(OperatorAction, Event)


def test_input_errors_say_where():
    problems = ProblemList(file="wf.yaml")
    problems.add("unknown key 'stpes'", field="stpes", line=3)
    problems.add("missing field", field="steps[1].kind", line=9)
    with pytest.raises(TemplateError) as info:
        problems.raise_if_any(TemplateError, "template wf.yaml rejected")
    text = str(info.value)
    assert "wf.yaml:3: stpes: unknown key 'stpes'" in text
    assert "wf.yaml:9: steps[1].kind: missing field" in text
    assert isinstance(info.value, InputError)
    one = ConfigError.at("not a URL", file="config.ini", field="DATA SERVICES.url", line=2)
    assert str(one.problems[0]) == "config.ini:2: DATA SERVICES.url: not a URL"
    assert str(Problem(Where(field="x"), "m")) == "x: m"
