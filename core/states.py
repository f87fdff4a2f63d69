"""The run and step vocabularies (seed 002) and how they show as Biosero order statuses.

A neutral module: the engine decides these states, events carry them, read models and panels
show them. Nothing here depends on anything but :mod:`core.orders`.
"""

from __future__ import annotations

from enum import StrEnum

from core.orders import OrderStatus


class StepStatus(StrEnum):
    """Task states of a step (seed 002), plus ``unknown`` for an outcome the console cannot know."""

    PENDING = "pending"
    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    COMPLETED = "completed"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"

    @property
    def is_final(self) -> bool:
        return self in STEP_FINAL

    @property
    def needs_operator(self) -> bool:
        """Failed for good, or an outcome nobody knows: a person decides what happens next."""
        return self in (StepStatus.FAILED, StepStatus.UNKNOWN)


class RunStatus(StrEnum):
    """Workflow states (seed 002)."""

    PENDING = "pending"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    RECOVERING = "recovering"

    @property
    def is_final(self) -> bool:
        return self in RUN_FINAL


STEP_ORDER_STATUS: dict[StepStatus, OrderStatus] = {
    StepStatus.PENDING: OrderStatus.Created,
    StepStatus.QUEUED: OrderStatus.Scheduled,
    StepStatus.RETRYING: OrderStatus.Scheduled,
    StepStatus.RUNNING: OrderStatus.Running,
    StepStatus.COMPLETED: OrderStatus.Complete,
    StepStatus.FAILED: OrderStatus.Error,
    StepStatus.UNKNOWN: OrderStatus.Error,
    StepStatus.SKIPPED: OrderStatus.Canceled,
    StepStatus.CANCELLED: OrderStatus.Canceled,
}
"""How a step's state shows as the Biosero status of its child order (the one table)."""

RUN_ORDER_STATUS: dict[RunStatus, OrderStatus] = {
    RunStatus.PENDING: OrderStatus.Created,
    RunStatus.RUNNING: OrderStatus.Running,
    RunStatus.RECOVERING: OrderStatus.Running,
    RunStatus.PAUSED: OrderStatus.Paused,
    RunStatus.COMPLETED: OrderStatus.Complete,
    RunStatus.FAILED: OrderStatus.Error,
    RunStatus.CANCELLED: OrderStatus.Canceled,
}
"""How a run's state shows as the Biosero status of its parent order."""

DONE_OK = frozenset({StepStatus.COMPLETED, StepStatus.SKIPPED})
"""Step states that satisfy a dependency."""
STEP_FINAL = frozenset({StepStatus.COMPLETED, StepStatus.SKIPPED, StepStatus.FAILED,
                        StepStatus.CANCELLED, StepStatus.UNKNOWN})
RUN_FINAL = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED})
STEP_RETRYABLE = frozenset({StepStatus.FAILED, StepStatus.CANCELLED, StepStatus.UNKNOWN})
"""Step states an operator may retry."""

__all__ = ["DONE_OK", "RUN_FINAL", "RUN_ORDER_STATUS", "STEP_FINAL", "STEP_ORDER_STATUS",
           "STEP_RETRYABLE", "RunStatus", "StepStatus"]
