"""Instrument drivers: the :class:`Driver` protocol and its implementations.

``core.drivers.base`` holds the protocol, states and errors (re-exported here);
``core.drivers.simulated`` the simulated instruments; ``core.drivers.faults`` the fault
injection spec. Implementations are imported from their modules (or lazily from here), so that
importing the protocol stays cheap.
"""

from __future__ import annotations

from typing import Any

from core.drivers.base import (
    MODULE_STATUS,
    Driver,
    DriverError,
    DriverInfo,
    DriverState,
    DriverStatus,
    InstrumentUnavailable,
    OrderCancelled,
    OutcomeUnknown,
    ProgressSink,
    UnsupportedCapability,
    no_progress,
    resolve_capability,
)

__all__ = [
    "MODULE_STATUS",
    "Driver",
    "DriverError",
    "DriverInfo",
    "DriverState",
    "DriverStatus",
    "FaultSpec",
    "Faults",
    "InstrumentUnavailable",
    "OrderCancelled",
    "OutcomeUnknown",
    "ProgressSink",
    "SimulatedDriver",
    "UnsupportedCapability",
    "no_progress",
    "resolve_capability",
]

_LAZY = {"SimulatedDriver": "core.drivers.simulated", "FaultSpec": "core.drivers.faults",
         "Faults": "core.drivers.faults"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'core.drivers' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
