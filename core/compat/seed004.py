"""Seed 004's Moose workflows: ``Task``, ``TaskConfig``, ``Workflow``, ``WorkflowConfig`` and the
``_workflows`` registry, as labconsole templates of Python steps.

::

    from core.compat.seed004 import Task, TaskConfig, Workflow, WorkflowConfig, _workflows

    validate_task = Task[WorkflowInput, ValidationResult](
        name="validateInput", config=TaskConfig(run=validate_input, timeout="30s", retries=3))
    validate_task.config.on_complete = [process_task]
    workflow = Workflow(name="DataProcessingWorkflow",
                        config=WorkflowConfig(starting_task=validate_task, timeout="1h", retries=3))

    await publish_workflows(runtime)        # every registered workflow becomes a template
    run = await workflow.run(runtime, {"user_id": "123", ...})

A workflow is a template of the same name; each task reachable from ``starting_task`` through
``on_complete`` is a Python step named after the task, depending on the tasks that name it.
``Task[In, Out]``'s models (or the function's annotations) validate the task's input and output
in the worker, naming the field that is wrong. A task receives the run's input overlaid with the
outputs of the tasks before it (the parent's output becomes the child's input). ``timeout`` is
"30s" / "5m" / "1h"; ``retries`` are retries after the first attempt (the workflow's are the
default of its tasks); ``schedule`` is a cron expression the console's schedules pick up.

A task function is known by reference to the process that registered it. A console started later
(a schedule firing after a restart, a run resumed after one) finds it only if its module is on the
handler path (``resources/handlers``, ``<data dir>/handlers`` or config.ini's ``[HANDLERS] path``):
publishing a scheduled workflow whose task module is not there logs a warning saying so.
"""

from __future__ import annotations

import logging
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from core.compat.seed001 import _engine_of
from core.durations import parse_duration
from core.pysteps import PYTHON_KIND, find_handler, paths_for, register_callable
from core.templates import WorkflowTemplate, template_from_dict

log = logging.getLogger(__name__)

In = TypeVar("In")
Out = TypeVar("Out")


@dataclass
class TaskConfig:
    run: Callable[..., Any]
    on_complete: list[Task[Any, Any]] | None = None
    timeout: str | None = None
    retries: int | None = None
    start_within: Mapping[str, Any] | None = None
    """``{"after": task or task name, "max": "10m", "min": "1m"}``: when this task may start."""
    min_delay: str | float | None = None
    """Not sooner than this after the task it follows ends."""

    def __post_init__(self) -> None:
        if not callable(self.run):
            raise TypeError(f"TaskConfig.run must be a function, not {type(self.run).__name__}")
        if self.timeout is not None:
            parse_duration(self.timeout)  # "5x" fails here, naming the value


class Task(Generic[In, Out]):
    """A typed task. ``Task[In, Out](name=..., config=TaskConfig(...))``."""

    def __init__(self, name: str, config: TaskConfig) -> None:
        self.name = name
        self.config = config

    @property
    def models(self) -> tuple[type | None, type | None]:
        """(In, Out) as given with ``Task[In, Out]`` (None where not given or None)."""
        alias = getattr(self, "__orig_class__", None)
        args = typing.get_args(alias) if alias is not None else ()
        found = [a if isinstance(a, type) and a is not type(None) else None for a in args]
        return (found + [None, None])[0], (found + [None, None])[1]

    def __repr__(self) -> str:
        return f"Task(name={self.name!r})"


@dataclass
class WorkflowConfig:
    starting_task: Task[Any, Any]
    schedule: str | None = None
    timeout: str | None = None
    retries: int | None = None
    deadline: str | None = None
    """The run should end within this long of its start."""


class _Registry(dict[str, "Workflow"]):
    """Every ``Workflow`` created, by name (Moose's ``moose_lib.dmv2._registry._workflows``)."""


_workflows = _Registry()


@dataclass
class Workflow:
    name: str
    config: WorkflowConfig
    _tasks: list[Task[Any, Any]] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        _workflows[self.name] = self

    def tasks(self) -> Iterator[Task[Any, Any]]:
        """Tasks reachable from the starting task, each once, parents first."""
        seen: dict[int, Task[Any, Any]] = {}
        todo = [self.config.starting_task]
        while todo:
            task = todo.pop(0)
            if id(task) in seen:
                continue
            seen[id(task)] = task
            todo += list(task.config.on_complete or ())
        return iter(seen.values())

    def get_task_names(self) -> list[str]:
        return [t.name for t in self.tasks()]

    def get_task(self, name: str) -> Task[Any, Any] | None:
        return next((t for t in self.tasks() if t.name == name), None)

    def to_template(self) -> WorkflowTemplate:
        tasks = list(self.tasks())
        parents: dict[str, list[str]] = {}
        for task in tasks:
            for child in task.config.on_complete or ():
                parents.setdefault(child.name, []).append(task.name)
        steps = []
        for task in tasks:
            in_model, out_model = task.models
            step: dict[str, Any] = {"id": task.name, "name": task.name, "kind": PYTHON_KIND,
                                    "handler": register_callable(task.config.run, in_model, out_model),
                                    "depends_on": parents.get(task.name, [])}
            if task.config.timeout is not None:
                step["timeout_seconds"] = task.config.timeout
            if task.config.retries is not None:
                step["retry_policy"] = {"max_attempts": int(task.config.retries) + 1}
            if task.config.start_within is not None:
                window = dict(task.config.start_within)
                if isinstance(window.get("after"), Task):
                    window["after"] = window["after"].name
                step["start_within"] = window
            if task.config.min_delay is not None:
                step["min_delay"] = task.config.min_delay
            steps.append(step)
        definition: dict[str, Any] = {"steps": steps}
        if self.config.timeout is not None:
            definition["default_timeout_seconds"] = self.config.timeout
        if self.config.retries is not None:
            definition["default_retry_policy"] = {"max_attempts": int(self.config.retries) + 1}
        if self.config.deadline is not None:
            definition["deadline"] = self.config.deadline
        data: dict[str, Any] = {"name": self.name, "tags": ["moose"], "definition": definition}
        if self.config.schedule is not None:
            data["schedule"] = self.config.schedule
        return template_from_dict(data, source=f"workflow '{self.name}'")

    async def publish(self, runtime: Any) -> WorkflowTemplate:
        engine = _engine_of(runtime)
        template = self.to_template()
        if template.schedule:
            self._warn_unreachable(template, paths_for(engine.store.path.parent))
        return await engine.publish(template, who="moose workflow")

    def _warn_unreachable(self, template: WorkflowTemplate, paths: tuple[Any, ...]) -> None:
        """A scheduled workflow fires in whatever console runs then: say which task functions
        such a console cannot find (their module is not on the handler path)."""
        for step in template.steps:
            try:
                find_handler(step.handler or "", paths)
            except Exception as exc:  # noqa: BLE001 - StepFailure naming the module and the path
                log.warning("workflow '%s' is scheduled (%s), but task '%s' (%s) runs only while this "
                            "process is up: %s. Put its module in a handler directory so that a console "
                            "started later can run it.", self.name, template.schedule, step.id,
                            step.handler, exc)

    async def run(self, runtime: Any, input_data: dict[str, Any] | None = None, *,
                  wait: bool = True) -> dict[str, Any]:
        """Publish, start a run with ``input_data`` and (``wait``) return the run once it has ended."""
        engine = _engine_of(runtime)
        await self.publish(runtime)
        run_id = await engine.create_instance(self.name, input_data or {}, allow_duplicate=True,
                                              who="moose workflow")
        await engine.execute_workflow(run_id, async_execution=not wait)
        return engine.get_instance(run_id)


async def publish_workflows(runtime: Any) -> list[WorkflowTemplate]:
    """Publish every registered workflow (their schedules then come with the templates)."""
    out = [await wf.publish(runtime) for wf in list(_workflows.values())]
    schedules = getattr(runtime, "schedules", None)
    if schedules is not None:
        await schedules.adopt_template_schedules()
    return out


__all__ = ["Task", "TaskConfig", "Workflow", "WorkflowConfig", "_workflows", "publish_workflows"]
