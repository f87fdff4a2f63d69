"""Workflow templates: one model, three file dialects, complete validation, versions.

The model (:class:`WorkflowTemplate`, :class:`Step`, :class:`RetryPolicy`, :class:`InputParameter`)
is the only template format in labconsole; the GUI editor, the engine and the files all use it.

Files are JSON or YAML in one of three dialects, detected from their shape:

``definition`` (seed 001, the native one)::

    name: ELISA Readout
    description: Read and seal a plate
    tags: [elisa]
    inputs: [{name: plate_id, type: string}]
    definition:
      default_timeout_seconds: 3600
      failure_policy: abort            # abort | pause | continue
      error_handlers: {read: notify}   # step id -> handler step id ("*" = any step)
      steps:
        - id: read
          name: Read absorbance
          kind: PlateReader.ReadPlate  # a capability, or delay / prompt / noop ("handler" also read)
          depends_on: []
          condition: "input_data['plate_id'] != ''"
          input_mapping: {plate: input_data.plate_id}
          retry_policy: {max_attempts: 3, backoff_multiplier: 2, max_backoff_seconds: 300}
          timeout_seconds: 600

``job_orchestrator`` (seed 002): ``steps`` with ``name``, ``task_type``, ``dependencies`` given by
index, ``max_retries``, ``timeout``, ``estimated_duration``; ``max_recovery_attempts``.

``moose`` (seed 004): ``tasks`` with ``name``, ``run`` (the step kind), ``on_complete`` chains,
``timeout: "5m"``, ``retries``; ``config: {starting_task, timeout: "1h", retries, schedule}``.

:func:`load_template` rejects a bad file with every problem listed, each naming file, field path
and line; nothing is half-loaded.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.conditions import check_condition
from core.durations import parse_duration
from core.errors import Problem, ProblemList, TemplateError, Where
from core.sourcemap import Document, load_document, parse_document, render_path

BUILTIN_KINDS = frozenset({"delay", "prompt", "noop"})


class FailurePolicy(StrEnum):
    """What a run does when a step fails for good (after retries and error handlers)."""

    ABORT = "abort"        # cancel what is pending, run ends in Error
    PAUSE = "pause"        # run pauses for the operator (retry, skip, recover, cancel)
    CONTINUE = "continue"  # other branches go on; dependants of the failed step are skipped


class ParameterType(StrEnum):
    STRING = "string"
    INTEGER = "integer"
    DOUBLE = "double"
    BOOLEAN = "boolean"
    JSON = "json"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RetryPolicy(_Model):
    """Capped exponential backoff with jitter (Temporal's vocabulary)."""

    max_attempts: int = Field(1, ge=1, le=100)
    initial_interval: float = Field(1.0, ge=0)
    backoff_multiplier: float = Field(2.0, ge=1)
    max_backoff: float = Field(300.0, ge=0)
    jitter: float = Field(0.1, ge=0, le=1)
    """Fraction of the delay added or removed at random."""
    non_retryable: tuple[str, ...] = ()
    """Error codes or type names that fail the step at once."""
    retry_on_timeout: bool = True

    def delay(self, attempt: int, rand: float = 0.5) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based); ``rand`` in [0, 1)."""
        base = min(self.max_backoff, self.initial_interval * self.backoff_multiplier ** (attempt - 1))
        return max(0.0, base * (1 + self.jitter * (2 * rand - 1)))


class InputParameter(_Model):
    name: str
    type: ParameterType = ParameterType.STRING
    required: bool = True
    default: Any = None
    description: str = ""

    def coerce(self, value: Any) -> Any:
        """Convert ``value`` to this parameter's type; ValueError says why not."""
        if self.type is ParameterType.STRING:
            return value if isinstance(value, str) else json.dumps(value) if isinstance(value, dict | list) else str(value)
        if self.type is ParameterType.INTEGER:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(f"{value!r} is not an integer")
            return int(value)
        if self.type is ParameterType.DOUBLE:
            if isinstance(value, bool):
                raise ValueError(f"{value!r} is not a number")
            return float(value)
        if self.type is ParameterType.BOOLEAN:
            if isinstance(value, bool):
                return value
            if str(value).strip().lower() in ("true", "1", "yes"):
                return True
            if str(value).strip().lower() in ("false", "0", "no"):
                return False
            raise ValueError(f"{value!r} is not a boolean")
        return json.loads(value) if isinstance(value, str) else value


class Step(_Model):
    id: str = Field(min_length=1)
    name: str = ""
    kind: str = Field(min_length=1)
    """An instrument capability ``Kind.Command`` or a built-in: delay, prompt, noop."""
    parameters: dict[str, Any] = Field(default_factory=dict)
    input_mapping: dict[str, str] = Field(default_factory=dict)
    """parameter -> ``input_data.X``, ``step_outputs.STEP.Y`` or ``context.Z``."""
    depends_on: tuple[str, ...] = ()
    condition: str | None = None
    retry_policy: RetryPolicy | None = None
    timeout: float | None = Field(None, gt=0)
    idempotent: bool = False
    estimated_duration: float | None = Field(None, ge=0)
    execution_mode: str = "sequential"
    restrict_to: tuple[str, ...] = ()
    """Instrument (module) ids the step may run on, with ``module_restriction`` semantics."""
    module_restriction: str = "NoRestriction"
    """A Biosero ModuleRestrictionStrategy name: NoRestriction, UnlessBusy, UnlessError,
    UnlessOffline, FullRestriction."""
    reserve: tuple[str, ...] = ()
    """More capabilities held for the whole step, reserved together with the one that runs it
    (e.g. the robot arm that keeps the plate at the reader): all or nothing, never one by one."""
    position: tuple[float, float] | None = None
    """Where the editor drew the step (kept so a layout survives a save)."""

    @property
    def is_builtin(self) -> bool:
        return self.kind in BUILTIN_KINDS

    @property
    def label(self) -> str:
        return self.name or self.id


class WorkflowTemplate(_Model):
    name: str = Field(min_length=1)
    version: int = 0
    """0 for a draft; published versions count from 1 and never change."""
    description: str = ""
    tags: tuple[str, ...] = ()
    inputs: tuple[InputParameter, ...] = ()
    steps: tuple[Step, ...] = ()
    error_handlers: dict[str, str] = Field(default_factory=dict)
    default_timeout: float | None = Field(None, gt=0)
    """Timeout of the whole run, in seconds."""
    failure_policy: FailurePolicy = FailurePolicy.ABORT
    max_recovery_attempts: int = Field(3, ge=0)
    default_retry_policy: RetryPolicy = RetryPolicy()
    schedule: str | None = None
    """A cron expression the template was declared with (seed 004); used by schedules."""

    def step(self, step_id: str) -> Step:
        for s in self.steps:
            if s.id == step_id:
                return s
        raise KeyError(step_id)

    @property
    def handler_steps(self) -> frozenset[str]:
        """Steps that only run as error handlers."""
        return frozenset(self.error_handlers.values())

    def retry_policy(self, step: Step) -> RetryPolicy:
        return step.retry_policy or self.default_retry_policy

    def content_hash(self) -> str:
        """Hash of everything but name/version: equal templates publish as one version."""
        body = self.model_dump(mode="json", exclude={"version"})
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]

    def to_definition(self) -> dict[str, Any]:
        """The native (seed 001) file shape; :func:`load_template` reads it back identically."""
        steps = []
        for s in self.steps:
            d: dict[str, Any] = {"id": s.id, "name": s.name, "kind": s.kind}
            if s.parameters:
                d["parameters"] = dict(s.parameters)
            if s.input_mapping:
                d["input_mapping"] = dict(s.input_mapping)
            d["depends_on"] = list(s.depends_on)
            if s.condition:
                d["condition"] = s.condition
            if s.retry_policy is not None:
                d["retry_policy"] = s.retry_policy.model_dump(mode="json")
            if s.timeout is not None:
                d["timeout_seconds"] = s.timeout
            if s.idempotent:
                d["idempotent"] = True
            if s.estimated_duration is not None:
                d["estimated_duration"] = s.estimated_duration
            if s.reserve:
                d["reserve"] = list(s.reserve)
            if s.restrict_to:
                d["restrict_to"] = list(s.restrict_to)
            if s.module_restriction != "NoRestriction":
                d["module_restriction"] = s.module_restriction
            if s.position is not None:
                d["position"] = list(s.position)
            steps.append(d)
        definition: dict[str, Any] = {"steps": steps, "error_handlers": dict(self.error_handlers),
                                      "failure_policy": self.failure_policy.value,
                                      "max_recovery_attempts": self.max_recovery_attempts}
        if self.default_timeout is not None:
            definition["default_timeout_seconds"] = self.default_timeout
        if self.default_retry_policy != RetryPolicy():
            definition["default_retry_policy"] = self.default_retry_policy.model_dump(mode="json")
        out: dict[str, Any] = {"name": self.name, "description": self.description,
                               "tags": list(self.tags),
                               "inputs": [i.model_dump(mode="json", exclude_defaults=True) | {"name": i.name}
                                          for i in self.inputs],
                               "definition": definition}
        if self.version:
            out["version"] = self.version
        if self.schedule:
            out["schedule"] = self.schedule
        return out


# ============================================================================ loading


def load_template(path: str | Path, *, capabilities: Iterable[str] | None = None) -> WorkflowTemplate:
    """Load and fully check a template file (any dialect). Raises TemplateError listing everything."""
    doc = load_document(path, TemplateError)
    return template_from_document(doc, capabilities=capabilities)


def parse_template(text: str, file: str = "<template>.yaml", *,
                   capabilities: Iterable[str] | None = None) -> WorkflowTemplate:
    return template_from_document(parse_document(text, file, TemplateError), capabilities=capabilities)


def template_from_dict(data: dict[str, Any], *, source: str = "<template>",
                       capabilities: Iterable[str] | None = None) -> WorkflowTemplate:
    return template_from_document(Document(source, data), capabilities=capabilities)


def detect_dialect(data: Any) -> str:
    if isinstance(data, dict):
        if "tasks" in data:
            return "moose"
        steps = data.get("steps")
        if isinstance(steps, list) and steps and all(isinstance(s, dict) for s in steps) and any(
                "task_type" in s or ("dependencies" in s and "id" not in s) for s in steps):
            return "job_orchestrator"
    return "definition"


def template_from_document(doc: Document, *, capabilities: Iterable[str] | None = None) -> WorkflowTemplate:
    problems = ProblemList(file=doc.file)
    data = doc.data
    if not isinstance(data, dict):
        raise TemplateError(f"template {doc.file} rejected",
                            [Problem(doc.where(()), "a template must be a mapping with a name and steps")])
    dialect = detect_dialect(data)
    raw = {"moose": _from_moose, "job_orchestrator": _from_job_orchestrator,
           "definition": _from_definition}[dialect](doc, problems)
    template = None
    if raw is not None and not problems:
        try:
            template = WorkflowTemplate.model_validate(raw.value)
        except ValidationError as exc:
            for err in exc.errors():
                loc = tuple(err["loc"])
                source_path = raw.source_path(loc)
                problems.problems.append(Problem(doc.where(source_path), _pydantic_message(err)))
    if template is not None:
        for where_path, message in check_template(template, capabilities=capabilities):
            problems.problems.append(Problem(doc.where(raw.source_path(where_path)), message))
    problems.raise_if_any(TemplateError, f"template {doc.file} rejected")
    assert template is not None
    return template


def _pydantic_message(err: dict[str, Any]) -> str:
    if err["type"] == "extra_forbidden":
        return "unknown key"
    if err["type"] == "missing":
        return "missing field"
    return err["msg"]


class _Raw:
    """The model-shaped dict built from a file, and how model paths map back to file paths."""

    def __init__(self, value: dict[str, Any], step_paths: list[tuple], base: tuple = ()) -> None:
        self.value = value
        self.step_paths = step_paths
        self.base = base
        self.renames: dict[str, str] = {}

    def source_path(self, loc: tuple) -> tuple:
        if loc and loc[0] == "steps" and len(loc) > 1 and isinstance(loc[1], int) \
                and loc[1] < len(self.step_paths):
            rest = tuple(self.renames.get(p, p) if isinstance(p, str) else p for p in loc[2:])
            return self.step_paths[loc[1]] + rest
        if loc and loc[0] in ("error_handlers", "default_timeout", "failure_policy",
                              "max_recovery_attempts", "default_retry_policy"):
            key = {"default_timeout": "default_timeout_seconds"}.get(loc[0], loc[0])
            return (*self.base, key, *loc[1:])
        return loc


_STEP_KEYS_001 = {"id", "name", "kind", "handler", "parameters", "input_mapping", "depends_on",
                  "condition", "retry_policy", "timeout_seconds", "timeout", "idempotent",
                  "estimated_duration", "execution_mode", "position", "description", "reserve",
                  "restrict_to", "module_restriction"}
_RETRY_KEYS = {"max_attempts", "initial_interval", "initial_interval_seconds", "backoff_multiplier",
               "max_backoff_seconds", "max_backoff", "jitter", "non_retryable", "retry_on_timeout"}
_TOP_KEYS_001 = {"name", "version", "description", "tags", "inputs", "definition", "steps",
                 "error_handlers", "default_timeout_seconds", "failure_policy", "max_recovery_attempts",
                 "default_retry_policy", "schedule", "dialect"}
_DEF_KEYS = {"steps", "error_handlers", "default_timeout_seconds", "failure_policy",
             "max_recovery_attempts", "default_retry_policy", "inputs"}


def _unknown(doc: Document, problems: ProblemList, mapping: dict, allowed: set[str], path: tuple) -> None:
    for key in mapping:
        if key not in allowed:
            problems.problems.append(Problem(doc.where((*path, key)),
                                             f"unknown key '{key}' (expected one of: {', '.join(sorted(allowed))})"))


def _duration(doc: Document, problems: ProblemList, value: Any, path: tuple) -> float | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except (ValueError, TypeError) as exc:
        problems.problems.append(Problem(doc.where(path), f"unparsable duration: {exc}"))
        return None


def _retry(doc: Document, problems: ProblemList, value: Any, path: tuple) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        problems.problems.append(Problem(doc.where(path), "retry_policy must be a mapping"))
        return None
    _unknown(doc, problems, value, _RETRY_KEYS, path)
    out = {k: v for k, v in value.items() if k in ("max_attempts", "backoff_multiplier", "jitter",
                                                   "retry_on_timeout")}
    if "non_retryable" in value:
        out["non_retryable"] = tuple(value["non_retryable"] or ())
    for key, target in (("initial_interval", "initial_interval"), ("initial_interval_seconds", "initial_interval"),
                        ("max_backoff_seconds", "max_backoff"), ("max_backoff", "max_backoff")):
        if key in value:
            seconds = _duration(doc, problems, value[key], (*path, key))
            if seconds is not None:
                out[target] = seconds
    return out


def _inputs(doc: Document, problems: ProblemList, value: Any, path: tuple) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, dict):  # {name: type} or {name: {type:..., default:...}}
        out = []
        for name, spec in value.items():
            out.append({"name": name, **(spec if isinstance(spec, dict) else {"type": spec})})
        return out
    if isinstance(value, list):
        return value
    problems.problems.append(Problem(doc.where(path), "inputs must be a list or a mapping"))
    return []


def _from_definition(doc: Document, problems: ProblemList) -> _Raw | None:
    data = doc.data
    _unknown(doc, problems, data, _TOP_KEYS_001, ())
    if "definition" in data:
        definition, base = data["definition"], ("definition",)
        if not isinstance(definition, dict):
            problems.problems.append(Problem(doc.where(base), "definition must be a mapping"))
            return None
        _unknown(doc, problems, definition, _DEF_KEYS, base)
    else:
        definition, base = data, ()
    if "name" not in data:
        problems.problems.append(Problem(doc.where(("name",)), "missing field 'name'"))
    steps_in = definition.get("steps")
    if not isinstance(steps_in, list) or not steps_in:
        problems.problems.append(Problem(doc.where((*base, "steps")),
                                         "missing field 'steps' (a non-empty list)"))
        return None
    steps, step_paths = [], []
    for i, s in enumerate(steps_in):
        path = (*base, "steps", i)
        step_paths.append(path)
        if not isinstance(s, dict):
            problems.problems.append(Problem(doc.where(path), "a step must be a mapping"))
            continue
        _unknown(doc, problems, s, _STEP_KEYS_001, path)
        step: dict[str, Any] = {k: s[k] for k in ("id", "name", "parameters", "input_mapping",
                                                  "condition", "idempotent", "execution_mode",
                                                  "position") if k in s}
        for key in ("reserve", "restrict_to"):
            if key in s:
                step[key] = tuple(s[key] or ()) if isinstance(s[key], list | tuple) else \
                    tuple(x.strip() for x in str(s[key]).split(",") if x.strip())
        if "module_restriction" in s:
            step["module_restriction"] = s["module_restriction"]
        if "kind" in s or "handler" in s:
            step["kind"] = s.get("kind", s.get("handler"))
        else:
            problems.problems.append(Problem(doc.where(path), "missing field 'kind'"))
        if "id" not in s:
            problems.problems.append(Problem(doc.where(path), "missing field 'id'"))
        if "depends_on" in s:
            step["depends_on"] = tuple(s["depends_on"] or ())
        for key in ("timeout_seconds", "timeout"):
            if key in s:
                step["timeout"] = _duration(doc, problems, s[key], (*path, key))
        if "estimated_duration" in s:
            step["estimated_duration"] = _duration(doc, problems, s["estimated_duration"],
                                                   (*path, "estimated_duration"))
        if "retry_policy" in s:
            step["retry_policy"] = _retry(doc, problems, s["retry_policy"], (*path, "retry_policy"))
        steps.append(step)
    value: dict[str, Any] = {
        "name": data.get("name"), "description": data.get("description", ""),
        "tags": tuple(data.get("tags") or ()), "steps": steps,
        "inputs": _inputs(doc, problems, definition.get("inputs", data.get("inputs")), ("inputs",)),
    }
    if "version" in data:
        value["version"] = data["version"]
    if "schedule" in data:
        value["schedule"] = data["schedule"]
    for key in ("error_handlers", "failure_policy", "max_recovery_attempts"):
        if key in definition:
            value[key] = definition[key]
    if "default_timeout_seconds" in definition:
        value["default_timeout"] = _duration(doc, problems, definition["default_timeout_seconds"],
                                             (*base, "default_timeout_seconds"))
    if "default_retry_policy" in definition:
        value["default_retry_policy"] = _retry(doc, problems, definition["default_retry_policy"],
                                               (*base, "default_retry_policy"))
    raw = _Raw(value, step_paths, base)
    raw.renames = {"timeout": "timeout_seconds"}
    return raw


_STEP_KEYS_002 = {"name", "task_type", "handler", "dependencies", "max_retries", "timeout",
                  "estimated_duration", "parameters", "idempotent", "condition", "id"}


def _from_job_orchestrator(doc: Document, problems: ProblemList) -> _Raw | None:
    data = doc.data
    _unknown(doc, problems, data, {"name", "description", "tags", "steps", "max_recovery_attempts",
                                   "inputs", "failure_policy", "dialect"}, ())
    if "name" not in data:
        problems.problems.append(Problem(doc.where(("name",)), "missing field 'name'"))
    steps_in = data["steps"]
    ids: list[str] = []
    for i, s in enumerate(steps_in):
        ids.append(str(s.get("id") or _slug(str(s.get("name", f"step{i}")))) if isinstance(s, dict) else f"step{i}")
    seen: dict[str, int] = {}
    for i, sid in enumerate(ids):  # make generated ids unique
        if sid in seen and "id" not in steps_in[i]:
            ids[i] = f"{sid}_{i}"
        seen[ids[i]] = i
    steps, step_paths = [], []
    for i, s in enumerate(steps_in):
        path = ("steps", i)
        step_paths.append(path)
        if not isinstance(s, dict):
            problems.problems.append(Problem(doc.where(path), "a step must be a mapping"))
            continue
        _unknown(doc, problems, s, _STEP_KEYS_002, path)
        if "name" not in s:
            problems.problems.append(Problem(doc.where(path), "missing field 'name'"))
        kind = s.get("task_type", s.get("handler"))
        if kind is None:
            problems.problems.append(Problem(doc.where(path), "missing field 'task_type'"))
        deps = []
        for j, dep in enumerate(s.get("dependencies") or ()):
            if not isinstance(dep, int) or isinstance(dep, bool) or not 0 <= dep < len(steps_in):
                problems.problems.append(Problem(doc.where((*path, "dependencies", j)),
                                                 f"dependency {dep!r} is not the index of a step "
                                                 f"(0..{len(steps_in) - 1})"))
            else:
                deps.append(ids[dep])
        step: dict[str, Any] = {"id": ids[i], "name": s.get("name", ""), "kind": kind,
                                "depends_on": tuple(deps),
                                **{k: s[k] for k in ("parameters", "idempotent", "condition") if k in s}}
        if "max_retries" in s:
            step["retry_policy"] = {"max_attempts": int(s["max_retries"]) + 1}
        if "timeout" in s:
            step["timeout"] = _duration(doc, problems, s["timeout"], (*path, "timeout"))
        if "estimated_duration" in s:
            step["estimated_duration"] = _duration(doc, problems, s["estimated_duration"],
                                                   (*path, "estimated_duration"))
        steps.append(step)
    value = {"name": data.get("name"), "description": data.get("description", ""),
             "tags": tuple(data.get("tags") or ()), "steps": steps,
             "inputs": _inputs(doc, problems, data.get("inputs"), ("inputs",)),
             **{k: data[k] for k in ("max_recovery_attempts", "failure_policy") if k in data}}
    raw = _Raw(value, step_paths)
    raw.renames = {"kind": "task_type", "retry_policy": "max_retries", "depends_on": "dependencies"}
    return raw


_TASK_KEYS = {"name", "run", "kind", "on_complete", "timeout", "retries", "parameters",
              "input_mapping", "condition", "idempotent", "description"}


def _from_moose(doc: Document, problems: ProblemList) -> _Raw | None:
    data = doc.data
    _unknown(doc, problems, data, {"name", "description", "tags", "tasks", "config", "inputs",
                                   "failure_policy", "dialect"}, ())
    if "name" not in data:
        problems.problems.append(Problem(doc.where(("name",)), "missing field 'name'"))
    config = data.get("config") or {}
    if not isinstance(config, dict):
        problems.problems.append(Problem(doc.where(("config",)), "config must be a mapping"))
        config = {}
    _unknown(doc, problems, config, {"starting_task", "timeout", "retries", "schedule"}, ("config",))
    tasks = data["tasks"]
    if not isinstance(tasks, list) or not tasks:
        problems.problems.append(Problem(doc.where(("tasks",)), "tasks must be a non-empty list"))
        return None
    names = [t.get("name") for t in tasks if isinstance(t, dict)]
    parents: dict[str, list[str]] = {}
    steps, step_paths = [], []
    for i, t in enumerate(tasks):
        path = ("tasks", i)
        step_paths.append(path)
        if not isinstance(t, dict):
            problems.problems.append(Problem(doc.where(path), "a task must be a mapping"))
            continue
        _unknown(doc, problems, t, _TASK_KEYS, path)
        if "name" not in t:
            problems.problems.append(Problem(doc.where(path), "missing field 'name'"))
        for j, nxt in enumerate(t.get("on_complete") or ()):
            if nxt not in names:
                problems.problems.append(Problem(doc.where((*path, "on_complete", j)),
                                                 f"on_complete names task '{nxt}', which does not exist"))
            parents.setdefault(nxt, []).append(t.get("name"))
    starting = config.get("starting_task")
    if starting is not None and starting not in names:
        problems.problems.append(Problem(doc.where(("config", "starting_task")),
                                         f"starting_task '{starting}' is not a task"))
    for i, t in enumerate(tasks):
        if not isinstance(t, dict):
            continue
        path = ("tasks", i)
        step: dict[str, Any] = {"id": t.get("name"), "name": t.get("description", t.get("name", "")),
                                "kind": t.get("run", t.get("kind", "noop")),
                                "depends_on": tuple(parents.get(t.get("name"), ())),
                                **{k: t[k] for k in ("parameters", "input_mapping", "condition",
                                                     "idempotent") if k in t}}
        if "retries" in t:
            step["retry_policy"] = {"max_attempts": int(t["retries"]) + 1}
        if "timeout" in t:
            step["timeout"] = _duration(doc, problems, t["timeout"], (*path, "timeout"))
        steps.append(step)
    if starting is not None:
        orphans = [s["id"] for s in steps if not s["depends_on"] and s["id"] != starting]
        for orphan in orphans:
            problems.problems.append(Problem(doc.where(("tasks", names.index(orphan))),
                                             f"task '{orphan}' is not reachable from starting_task "
                                             f"'{starting}' (add it to an on_complete)"))
    value: dict[str, Any] = {"name": data.get("name"), "description": data.get("description", ""),
                             "tags": tuple(data.get("tags") or ()), "steps": steps,
                             "inputs": _inputs(doc, problems, data.get("inputs"), ("inputs",))}
    if "timeout" in config:
        value["default_timeout"] = _duration(doc, problems, config["timeout"], ("config", "timeout"))
    if "retries" in config:
        value["default_retry_policy"] = {"max_attempts": int(config["retries"]) + 1}
    if "schedule" in config:
        value["schedule"] = config["schedule"]
    if "failure_policy" in data:
        value["failure_policy"] = data["failure_policy"]
    raw = _Raw(value, step_paths)
    raw.renames = {"kind": "run", "retry_policy": "retries", "id": "name", "depends_on": "on_complete"}
    return raw


def _slug(text: str) -> str:
    out = "".join(c.lower() if c.isalnum() else "_" for c in text).strip("_")
    return out or "step"


# ============================================================================ checks


def check_template(t: WorkflowTemplate, *, capabilities: Iterable[str] | None = None
                   ) -> list[tuple[tuple, str]]:
    """Semantic checks on a model: (model path, message) for every problem found.

    Duplicate ids, unknown dependencies, cycles (the cycle is printed), error handlers, input
    mappings, conditions, kinds (against ``capabilities`` when given).
    """
    out: list[tuple[tuple, str]] = []
    ids: dict[str, int] = {}
    for i, s in enumerate(t.steps):
        if s.id in ids:
            out.append((("steps", i, "id"), f"duplicate step id '{s.id}' (also steps[{ids[s.id]}])"))
        else:
            ids[s.id] = i
    for i, s in enumerate(t.steps):
        for j, dep in enumerate(s.depends_on):
            if dep not in ids:
                out.append((("steps", i, "depends_on", j), f"depends on unknown step '{dep}'"))
            elif dep == s.id:
                out.append((("steps", i, "depends_on", j), f"step '{s.id}' depends on itself"))
    cycle = find_cycle({s.id: [d for d in s.depends_on if d in ids and d != s.id] for s in t.steps})
    if cycle:
        out.append((("steps", ids[cycle[0]], "depends_on"), "dependency cycle: " + " -> ".join(cycle)))
    for failing, handler in t.error_handlers.items():
        if failing != "*" and failing not in ids:
            out.append((("error_handlers", failing), f"error handler for unknown step '{failing}'"))
        if handler not in ids:
            out.append((("error_handlers", failing), f"error handler step '{handler}' does not exist"))
    input_names = {p.name for p in t.inputs}
    ancestors = _ancestors(t)
    caps = set(capabilities) if capabilities is not None else None
    for i, s in enumerate(t.steps):
        if s.kind not in BUILTIN_KINDS:
            if "." not in s.kind or s.kind.startswith(".") or s.kind.endswith("."):
                out.append((("steps", i, "kind"), f"kind '{s.kind}' is neither a built-in "
                            f"({', '.join(sorted(BUILTIN_KINDS))}) nor a capability 'Kind.Command'"))
            elif caps is not None and s.kind not in caps:
                out.append((("steps", i, "kind"), f"no instrument of the workcell offers '{s.kind}'"))
        if s.module_restriction.lower() not in _RESTRICTIONS:
            out.append((("steps", i, "module_restriction"), f"'{s.module_restriction}' is not a module "
                        f"restriction strategy ({', '.join(_RESTRICTIONS.values())})"))
        for j, extra in enumerate(s.reserve):
            if caps is not None and extra not in caps:
                out.append((("steps", i, "reserve", j), f"no instrument of the workcell offers '{extra}'"))
            if extra == s.kind:
                out.append((("steps", i, "reserve", j), f"'{extra}' is already the step's kind"))
        if s.kind == "delay" and not ({"seconds", "duration"} & (set(s.parameters) | set(s.input_mapping))):
            out.append((("steps", i, "parameters"), "a delay step needs seconds or duration (a parameter or an input mapping)"))
        if s.condition:
            for message in check_condition(s.condition, steps=ids, inputs=input_names if t.inputs else None):
                out.append((("steps", i, "condition"), message))
        for param, source in s.input_mapping.items():
            message = _check_mapping(source, s.id, ids, input_names if t.inputs else None, ancestors)
            if message:
                out.append((("steps", i, "input_mapping", param), message))
    return out


_RESTRICTIONS = {n.lower(): n for n in ("NoRestriction", "UnlessBusy", "UnlessError", "UnlessOffline",
                                         "FullRestriction")}


def _check_mapping(source: str, step_id: str, ids: dict[str, int], inputs: set[str] | None,
                   ancestors: dict[str, set[str]]) -> str | None:
    parts = source.split(".")
    if parts[0] == "input_data":
        if len(parts) < 2:
            return f"mapping '{source}' must name an input: input_data.NAME"
        if inputs is not None and parts[1] not in inputs:
            return f"mapping '{source}' refers to input '{parts[1]}', which is not declared"
    elif parts[0] == "step_outputs":
        if len(parts) < 3:
            return f"mapping '{source}' must be step_outputs.STEP.OUTPUT"
        if parts[1] not in ids:
            return f"mapping '{source}' refers to step '{parts[1]}', which does not exist"
        if parts[1] not in ancestors.get(step_id, set()):
            return f"mapping '{source}': step '{parts[1]}' does not run before '{step_id}' (add it to depends_on)"
    elif parts[0] != "context":
        return f"mapping '{source}' must start with input_data., step_outputs. or context."
    return None


def find_cycle(graph: dict[str, Sequence[str]]) -> list[str] | None:
    """A cycle in ``node -> dependencies`` as a list that starts and ends with the same node."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in graph.get(node, ()):
            if state.get(dep) == 1:
                return [*stack[stack.index(dep):], dep]
            if state.get(dep) is None:
                found = visit(dep)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in graph:
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def _ancestors(t: WorkflowTemplate) -> dict[str, set[str]]:
    deps = {s.id: set(s.depends_on) for s in t.steps}
    memo: dict[str, set[str]] = {}

    def walk(node: str, seen: frozenset[str]) -> set[str]:
        if node in memo:
            return memo[node]
        out: set[str] = set()
        for d in deps.get(node, ()):
            if d in seen:
                continue
            out.add(d)
            out |= walk(d, seen | {d})
        memo[node] = out
        return out

    return {s.id: walk(s.id, frozenset({s.id})) for s in t.steps}


def topological_order(t: WorkflowTemplate) -> list[str]:
    order, done = [], set()
    pending = {s.id: set(s.depends_on) for s in t.steps}
    while pending:
        ready = [sid for sid, deps in pending.items() if deps <= done]
        if not ready:
            raise TemplateError(f"template {t.name}: dependency cycle",
                                [Problem(Where(field="steps"), "dependency cycle")])
        for sid in ready:
            order.append(sid)
            done.add(sid)
            del pending[sid]
    return order


def descendants(t: WorkflowTemplate, step_id: str) -> set[str]:
    children: dict[str, list[str]] = {}
    for s in t.steps:
        for d in s.depends_on:
            children.setdefault(d, []).append(s.id)
    out, todo = set(), [step_id]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


def dump_template(t: WorkflowTemplate, path: str | Path) -> None:
    """Write ``t`` in the native dialect, as JSON or YAML by the file's suffix."""
    import yaml

    path = Path(path)
    data = t.to_definition()
    if path.suffix.lower() == ".json":
        path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    else:
        path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")


__all__ = ["BUILTIN_KINDS", "FailurePolicy", "InputParameter", "ParameterType", "RetryPolicy", "Step",
           "WorkflowTemplate", "check_template", "descendants", "detect_dialect", "dump_template",
           "find_cycle", "load_template", "parse_template", "render_path", "template_from_dict",
           "topological_order"]
