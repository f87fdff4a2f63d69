"""The engine: :class:`~core.engine.dag.DagEngine` (runs as durable DAGs: creating, scheduling,
failure policy) with :class:`~core.engine.control.OperatorControl` (the operator's actions) and
:class:`~core.engine.recovery.Recovery` (start-up, crash recovery, changes made elsewhere)."""

from __future__ import annotations

from core.engine.control import OperatorControl
from core.engine.recovery import Recovery


class Engine(OperatorControl, Recovery):
    """Runs workflow templates as durable DAGs of orders (see :mod:`core.engine.dag`)."""
