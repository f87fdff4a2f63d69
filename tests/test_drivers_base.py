"""The driver protocol: states, the one ModuleStatus mapping, errors and command resolution."""

from __future__ import annotations

import pytest

from core.clock import VirtualClock
from core.drivers import (
    MODULE_STATUS,
    Driver,
    DriverError,
    DriverState,
    DriverStatus,
    InstrumentUnavailable,
    OrderCancelled,
    OutcomeUnknown,
    UnsupportedCapability,
    resolve_capability,
)
from core.drivers.simulated import SimulatedDriver
from core.errors import LabconsoleError
from core.orders import ModuleStatus, Order
from core.workcell import InstrumentConfig


def test_every_state_maps_to_a_module_status():
    assert set(MODULE_STATUS) == set(DriverState)
    assert DriverState.IDLE.module_status is ModuleStatus.Ready
    assert DriverState.BUSY.module_status is ModuleStatus.Busy
    assert DriverState.ERROR.module_status is ModuleStatus.Error
    assert DriverState.NEEDS_OPERATOR.module_status is ModuleStatus.Error
    assert DriverState.DISCONNECTED.module_status is ModuleStatus.Offline
    assert DriverState.CONNECTING.module_status is ModuleStatus.Offline
    assert DriverStatus(DriverState.BUSY).module_status is ModuleStatus.Busy


@pytest.mark.parametrize(("cls", "code", "retryable"), [
    (DriverError, "DriverError", False),
    (InstrumentUnavailable, "InstrumentUnavailable", True),
    (OrderCancelled, "OrderCancelled", False),
    (OutcomeUnknown, "OutcomeUnknown", False),
    (UnsupportedCapability, "UnsupportedCapability", False),
])
def test_error_family_defaults(cls, code, retryable):
    error = cls("PlateReader1: something happened")
    assert isinstance(error, LabconsoleError) and isinstance(error, DriverError)
    assert (error.code, error.retryable) == (code, retryable)
    assert str(error) == "PlateReader1: something happened"


def test_error_code_and_retryable_can_be_given():
    error = DriverError("no plate in the reader", code="PlateNotPresent", retryable=True,
                        instrument_id="PlateReader1")
    assert (error.code, error.retryable, error.instrument_id) == ("PlateNotPresent", True, "PlateReader1")
    assert "PlateNotPresent" in repr(error)
    assert DriverError(code="PlateNotPresent").message == "PlateNotPresent"
    assert InstrumentUnavailable("x", retryable=False).retryable is False
    assert InstrumentUnavailable.retryable is True  # the class default is untouched


CAPS = {"PlateReader.ReadPlate", "PlateReader.Shake", "Sealer.Seal"}


@pytest.mark.parametrize(("name", "expected"), [
    ("PlateReader.ReadPlate", "PlateReader.ReadPlate"),
    ("platereader.readplate", "PlateReader.ReadPlate"),
    ("ReadPlate", "PlateReader.ReadPlate"),
    ("read_plate", "PlateReader.ReadPlate"),
    ("Read Plate", "PlateReader.ReadPlate"),
    ("seal", "Sealer.Seal"),
])
def test_resolve_capability(name, expected):
    assert resolve_capability(Order(templateName=name), CAPS) == expected


def test_resolve_capability_refuses_unknown_and_ambiguous_names():
    with pytest.raises(UnsupportedCapability) as info:
        resolve_capability(Order(identifier="O7", templateName="Centrifuge.Spin"), CAPS, "PR1")
    message = str(info.value)
    assert "PR1" in message and "O7" in message and "Centrifuge.Spin" in message
    assert "PlateReader.ReadPlate" in message  # lists what it does offer
    with pytest.raises(UnsupportedCapability, match="several commands"):
        resolve_capability(Order(templateName="Read"), {"A.Read", "B.Read"})
    with pytest.raises(UnsupportedCapability):
        resolve_capability(Order(), CAPS)


def test_single_capability_takes_an_order_without_template_name():
    assert resolve_capability(Order(), {"Sealer.Seal"}) == "Sealer.Seal"
    with pytest.raises(UnsupportedCapability):
        resolve_capability(Order(templateName="Spin"), {"Sealer.Seal"})


def test_simulated_driver_satisfies_the_protocol():
    config = InstrumentConfig(id="Sealer1", kind="Sealer", driver="simulated",
                              capabilities={"Sealer.Seal": "8s"})
    driver = SimulatedDriver(config, VirtualClock())
    assert isinstance(driver, Driver)
    assert driver.info.capabilities == frozenset({"Sealer.Seal"})
    assert driver.info.name == "Sealer1"
