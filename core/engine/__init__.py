"""The workflow engine, read top-down:

- :mod:`core.engine.types` — what an executor gets (``StepRequest``) and the ``StepExecutor``
  contract, failures, parameters;
- :mod:`core.engine.registry` — published templates;
- :mod:`core.engine.state` — runs and steps in memory, the one timer heap;
- :mod:`core.engine.tables` — every query of the ``runs`` and ``step_runs`` tables;
- :mod:`core.engine.decision` — one decision or operator action = one transaction;
- :mod:`core.engine.views` — frozen read models in the seeds' shapes;
- :mod:`core.engine.dag` — runs as DAGs: creating, scheduling, failure policy;
- :mod:`core.engine.control` and :mod:`core.engine.recovery` — operator actions, start-up and resuming after a
  restart; :mod:`core.engine.engine` puts them together as ``Engine``;
- :mod:`core.engine.simulated` — steps without instruments.
"""

from core.engine import tables
from core.engine.control import Act, Action
from core.engine.engine import Engine
from core.engine.registry import TemplateRegistry, check_inputs
from core.engine.simulated import SimulatedExecutor
from core.engine.types import (
    ClaimingExecutor,
    StepExecutor,
    StepFailure,
    StepRequest,
    StopReason,
    classify,
    run_outputs,
    started,
    to_parameter,
    to_parameters,
)
from core.engine.views import RunView, RunViews, StepView
from core.states import RUN_ORDER_STATUS, STEP_ORDER_STATUS, RunStatus, StepStatus

__all__ = ["RUN_ORDER_STATUS", "tables", "STEP_ORDER_STATUS", "Act", "Action", "ClaimingExecutor", "Engine", "RunStatus", "RunView",
           "RunViews", "SimulatedExecutor", "StepExecutor", "StepFailure", "StepRequest", "StepStatus",
           "StepView", "StopReason", "TemplateRegistry", "check_inputs", "classify", "run_outputs",
           "started", "to_parameter", "to_parameters"]
