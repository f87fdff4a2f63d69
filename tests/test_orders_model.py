"""The order model reads and writes the Data Services wire format (specs/data-services.md)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from core.errors import ModelError
from core.orders import (
    ModuleRestrictionStrategy,
    ModuleStatus,
    Order,
    OrderPriority,
    OrderStatus,
    Parameter,
    ParameterCollection,
    ParameterValueType,
    SchedulingStrategy,
)
from core.wire import format_timespan, parse_datetime, parse_timespan

# specs/data-services.md §7.1, as returned to a module polling UnassignedOrders
SPEC_7_1 = """{"identifier":"Order_00689","parentIdentifier":"Order_00686","restrictToModuleIds":"AIMS",
 "moduleRestrictionStrategy":"NoRestriction","createdBy":"Order_00686","status":"Created",
 "creationTime":"2022-11-21T13:55:10.0514+00:00","scheduledStartTime":"0001-01-01T00:00:00+00:00",
 "actualStartTime":"0001-01-01T00:00:00+00:00","estimatedDuration":"00:00:00",
 "actualEndTime":"0001-01-01T00:00:00+00:00","templateName":"Stitch Images v2",
 "inputParameters":[{"name":"stitching_configuration","value":"stitching_v1","valueType":"String",
   "defaultValue":"stitching_v1","valueOptions":["stitching_v1","stitching_example_v2"],
   "validationRules":[],"tags":[],"description":"Name of the stitching configuration ..."}],
 "outputParameters":[{"name":"stitching_result","value":"","valueType":"String","defaultValue":"",
   "validationRules":[],"tags":[""],"description":"Result of the stitching operation."}],
 "schedulingStrategy":"ImmediateExecution"}"""

EVERY_ORDER_KEY = {
    "identifier", "parentIdentifier", "sourceIdentifier", "runAfterIdentifier", "restrictToModuleIds",
    "moduleRestrictionStrategy", "statusDetails", "createdBy", "notes", "status", "creationTime",
    "scheduledStartTime", "actualStartTime", "estimatedDuration", "actualEndTime", "templateName",
    "inputParameters", "outputParameters", "assignedTo", "validationErrors", "state",
    "schedulingStrategy", "log", "priority", "templateVersion", "templateLastModifiedDateUtc",
}


def _same_meaning(a, b):
    """Compare wire values by meaning: dates as instants, everything else exactly."""
    if isinstance(a, dict):
        return all(_same_meaning(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same_meaning(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, str) and len(a) >= 19 and a[4] == "-" and a[10] == "T":
        return parse_datetime(a) == parse_datetime(b)
    return a == b


def test_spec_order_round_trips_in_meaning():
    original = json.loads(SPEC_7_1)
    order = Order.from_dict(original)
    wire = json.loads(order.to_json())
    assert _same_meaning(original, wire)
    assert set(wire) == EVERY_ORDER_KEY, "every key present, nothing extra"
    again = Order.from_dict(wire)
    assert again == order
    assert wire["creationTime"] == "2022-11-21T13:55:10.051400+00:00"
    assert wire["scheduledStartTime"] == "0001-01-01T00:00:00+00:00"
    assert wire["estimatedDuration"] == "00:00:00"
    assert wire["sourceIdentifier"] is None and wire["priority"] == "Standard"
    assert order.get_input_parameter_value("stitching_configuration") == "stitching_v1"
    assert order.get_output_parameter_value("stitching_result") == ""
    assert order.get_input_parameter_value("absent") is None


def test_seed_example_runs_with_import_change_only():
    params = ParameterCollection([
        Parameter(name="Plate Count", value="4", valueType=ParameterValueType.STRING),
        Parameter(name="Cell Type", value="HEK293", valueType=ParameterValueType.STRING),
    ])
    order = Order(templateName="Cell Prep", scheduledStartTime=datetime.now(),
                  inputParameters=[{"name": "Plate Count", "value": "4"},
                                   {"name": "Cell Type", "value": "HEK293"}],
                  parentIdentifier="Order_00001")
    assert order.get_input_parameter_value("Plate Count") == "4"
    assert Order(templateName="x", inputParameters=params).inputParameters[1].value == "HEK293"
    assert order.status is OrderStatus.Created


def test_pascal_case_and_integer_enums_are_read():
    order = Order.from_dict({"TemplateName": "T", "Status": "running", "Priority": -1,
                             "ModuleRestrictionStrategy": 4, "SchedulingStrategy": "FirstAvailableSlot",
                             "CreationTime": "2025-01-01 00:00:00",
                             "InputParameters": [{"Name": "Volume", "Value": 12.5, "ValueType": "Double"}]})
    assert order.templateName == "T"
    assert order.status is OrderStatus.Running
    assert order.priority is OrderPriority.Elevated
    assert order.moduleRestrictionStrategy is ModuleRestrictionStrategy.FullRestriction
    assert order.schedulingStrategy is SchedulingStrategy.FirstAvailableSlot
    assert order.creationTime == datetime(2025, 1, 1, tzinfo=UTC)  # naive is UTC
    assert order.inputParameters[0].value == "12.5"
    assert order.get_input_parameter_value("Volume") == 12.5


def test_enum_integers_follow_the_server_table_and_know_bdm():
    assert [(s.name, int(s)) for s in OrderStatus][:3] == [("Created", 0), ("Invalid", 1), ("Validated", 2)]
    assert len(OrderStatus) == 11
    assert OrderStatus.Created.bdm_int == 1 and OrderStatus.Unknown.bdm_int == 11
    assert OrderStatus.from_bdm_int(8) is OrderStatus.Complete
    assert ModuleRestrictionStrategy.parse(1) is ModuleRestrictionStrategy.UnlessBusy
    assert ModuleRestrictionStrategy.from_bdm_int(1) is ModuleRestrictionStrategy.NoRestriction
    assert int(OrderPriority.Elevated) == -1 and OrderPriority.Unknown.bdm_int == 1
    assert [m.name for m in ModuleStatus] == ["Ready", "Busy", "Error", "Offline"]
    assert ParameterValueType.FLOAT is ParameterValueType.DOUBLE
    assert Parameter("x", "1.5", "Double").to_wire()["valueType"] == "Double"
    assert str(OrderStatus.Running) == "Running"


def test_boolean_outputs_are_typed_and_values_are_strings():
    order = Order(templateName="T", outputParameters={"Success": True, "Count": 3})
    assert order.outputParameters[0].value == "True"
    order.outputParameters[0].valueType = ParameterValueType.BOOLEAN
    assert order.get_output_parameter_value("Success") is True
    assert order.get_output_parameter_value("Count") == "3"


def test_timespans():
    assert parse_timespan("00:05:00") == timedelta(minutes=5)
    assert parse_timespan("1.02:03:04.5000000") == timedelta(days=1, hours=2, minutes=3, seconds=4.5)
    assert format_timespan(timedelta(days=1, hours=2, minutes=3, seconds=4.5)) == "1.02:03:04.5000000"
    assert format_timespan(None) == "00:00:00"
    with pytest.raises(ValueError, match="not a TimeSpan"):
        parse_timespan("five minutes")


def test_bad_payload_names_every_field():
    with pytest.raises(ModelError) as info:
        Order.from_dict({"status": "Sleeping", "priority": "Urgent",
                         "creationTime": "yesterday"}, source="inbox.json")
    text = str(info.value)
    assert "inbox.json: status" in text and "Sleeping" in text
    assert "inbox.json: priority" in text and "Urgent" in text
    assert "inbox.json: creationTime" in text
    assert len(info.value.problems) == 3


def test_a_keyword_that_is_not_a_field_is_refused_like_a_dataclass_does():
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'parentIdentifer' "
                                        r"\(did you mean 'parentIdentifier'\?\)"):
        Order(parentIdentifer="Order_00001")
    with pytest.raises(TypeError, match="unexpected keyword argument 'valu'"):
        Parameter(name="Plate Count", valu="4")
    assert Order(TemplateName="Cell Prep").templateName == "Cell Prep"  # case still does not matter
    assert Parameter("Plate Count", 4, "Integer").typed_value == 4


def test_reading_a_payload_still_ignores_keys_it_does_not_know():
    payload = {"templateName": "Cell Prep", "someNewServerField": 1,
               "inputParameters": [{"name": "Plate Count", "value": "4", "newParameterField": True}]}
    for order in (Order.from_dict(payload), Order.model_validate(payload),
                  Order.model_validate_json(json.dumps(payload))):
        assert order.templateName == "Cell Prep" and order.get_input_parameter_value("Plate Count") == "4"
