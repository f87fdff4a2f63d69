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
          kind: PlateReader.ReadPlate  # a capability, delay / prompt / noop, or python + handler
          depends_on: []
          condition: "input_data['plate_id'] != ''"
          input_mapping: {plate: input_data.plate_id}
          retry_policy: {max_attempts: 3, backoff_multiplier: 2, max_backoff_seconds: 300}
          timeout_seconds: 600
          start_within: {after: incubate, max: 10m}   # time window from the end of an earlier step
          min_delay: 5m                               # not sooner than this after it ends
      deadline: 4h                     # the run should be done this long after it starts

``job_orchestrator`` (seed 002): ``steps`` with ``name``, ``task_type``, ``dependencies`` given by
index, ``max_retries``, ``timeout``, ``estimated_duration``; ``max_recovery_attempts``; windows name the earlier step by
index or id (``start_within: {after: 0, max: 10m}``); ``deadline`` at the top.

``moose`` (seed 004): ``tasks`` with ``name``, ``run`` (the step kind), ``on_complete`` chains,
``timeout: "5m"``, ``retries``, ``start_within`` / ``min_delay`` naming an earlier task;
``config: {starting_task, timeout: "1h", retries, schedule, deadline}``.

Time constraints (every dialect): ``start_within: {after: STEP, max: D, min: D}`` — the step
starts between ``min`` and ``max`` after STEP ended (STEP must run before it); ``min_delay: D``
or ``min_delay: {after: STEP, delay: D}`` sets only the minimum. ``deadline: D``: the run should
end within D of its start. Durations are seconds or ``"10m"``-style text.

:func:`load_template` rejects a bad file with every problem listed, each naming file, field path
and line; nothing is half-loaded.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.conditions import check_condition
from core.durations import format_duration, parse_duration
from core.errors import Problem, ProblemList, TemplateError, Where
from core.pysteps import PYTHON_KIND, handler_problem
from core.schedules import cron_problem
from core.sourcemap import Document, load_document, parse_document, render_path

Loc = tuple[str | int, ...]
"""A location in a parsed file: keys and list indexes from the top."""

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


class Window(_Model):
    """When a step may start, counted from the end of an earlier step (``after``): not sooner
    than ``min`` seconds, not later than ``max`` (None: no upper bound)."""

    after: str = Field(min_length=1)
    min: float = Field(0.0, ge=0)
    max: float | None = Field(None, gt=0)

    def closes(self, after_ended: float) -> float | None:
        """The latest start (epoch seconds) once ``after`` ended at ``after_ended``."""
        return None if self.max is None else after_ended + self.max

    def opens(self, after_ended: float) -> float:
        return after_ended + self.min


class Step(_Model):
    id: str = Field(min_length=1)
    name: str = ""
    kind: str = Field(min_length=1)
    """An instrument capability ``Kind.Command``, a built-in (delay, prompt, noop) or ``python``."""
    handler: str | None = None
    """For kind ``python``: the function ``module.function`` on the handler path (core.pysteps)."""
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
    start_within: Window | None = None
    """A time window from the end of an earlier step to this step's start."""

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
    deadline: float | None = Field(None, gt=0)
    """Seconds from the run's start within which it should end (a target: a late run is
    recorded as late, not stopped; ``default_timeout`` stops it)."""

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
            if s.handler is not None:
                d["handler"] = s.handler
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
            if s.execution_mode != "sequential":
                d["execution_mode"] = s.execution_mode
            if s.reserve:
                d["reserve"] = list(s.reserve)
            if s.restrict_to:
                d["restrict_to"] = list(s.restrict_to)
            if s.module_restriction != "NoRestriction":
                d["module_restriction"] = s.module_restriction
            if s.position is not None:
                d["position"] = list(s.position)
            if s.start_within is not None:
                d["start_within"] = s.start_within.model_dump(mode="json", exclude_defaults=True) | \
                    {"after": s.start_within.after}
            steps.append(d)
        definition: dict[str, Any] = {"steps": steps, "error_handlers": dict(self.error_handlers),
                                      "failure_policy": self.failure_policy.value,
                                      "max_recovery_attempts": self.max_recovery_attempts}
        if self.default_timeout is not None:
            definition["default_timeout_seconds"] = self.default_timeout
        if self.deadline is not None:
            definition["deadline"] = self.deadline
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
    if raw is None:
        problems.raise_if_any(TemplateError, f"template {doc.file} rejected")
        raise AssertionError("a dialect reader gave up without saying why")
    # Every field the readers took is checked, even when others are already wrong, and the
    # semantic checks run on what is left once the wrong fields are set aside: every problem
    # of the file is listed at once.
    template, reported = _validate(raw, doc, problems)
    if template is not None:
        for where_path, message in check_template(template, capabilities=capabilities):
            where = doc.where(raw.source_path(where_path))
            if where.field not in reported:
                problems.problems.append(Problem(where, message))
    problems.raise_if_any(TemplateError, f"template {doc.file} rejected")
    assert template is not None
    return template


_PLACEHOLDER = "\x00invalid"


def _validate(raw: _Raw, doc: Document, problems: ProblemList
              ) -> tuple[WorkflowTemplate | None, set[str | None]]:
    """Validate ``raw.value``; report each error once; set the wrong fields aside and try again
    (a few rounds) so a model for the semantic checks exists whenever one can.

    Returns the model (or None) and the fields (as rendered) already reported."""
    value = {**raw.value, "steps": [dict(st) for st in raw.value.get("steps", ())]}
    reported: set[str | None] = set()
    first = True
    for _ in range(4):
        try:
            return WorkflowTemplate.model_validate(value), reported
        except ValidationError as exc:
            errors = exc.errors()
        for err in errors:
            loc = tuple(err["loc"])
            if first:
                where = doc.where(raw.source_path(loc))
                problems.problems.append(Problem(where, _pydantic_message(err)))
                reported.add(where.field)
            _set_aside(value, loc)
        first = False
    return None, reported


def _set_aside(value: dict[str, Any], loc: Loc) -> None:
    """Remove the field at ``loc`` (a required one gets a placeholder that checks ignore)."""
    if not loc:
        return
    if loc[0] == "steps" and len(loc) > 2 and isinstance(loc[1], int) and loc[1] < len(value["steps"]):
        step = value["steps"][loc[1]]
        if loc[2] in ("id", "kind"):
            step[loc[2]] = f"{_PLACEHOLDER}{loc[1]}" if loc[2] == "id" else "noop"
        else:
            step.pop(loc[2], None)
    elif loc[0] == "name":
        value["name"] = _PLACEHOLDER
    elif loc[0] != "steps":
        value.pop(str(loc[0]), None)


def _pydantic_message(err: Mapping[str, Any]) -> str:
    if err["type"] == "extra_forbidden":
        return "unknown key"
    if err["type"] == "missing":
        return "missing field"
    return str(err["msg"])


class _Raw:
    """The model-shaped dict built from a file, and how model paths map back to file paths."""

    def __init__(self, value: dict[str, Any], step_paths: Sequence[Loc], base: Loc = ()) -> None:
        self.value = value
        self.step_paths = step_paths
        self.base = base
        self.renames: dict[str, str] = {}
        self.top: dict[str, Loc] = {}
        """Model field -> its path in the file, where the dialect puts it elsewhere."""
        self.paths: dict[Loc, Loc] = {}
        """Model path -> file path, for single fields a file spells differently (``min_delay``)."""

    def source_path(self, loc: Loc) -> Loc:
        for n in range(len(loc), 2, -1):
            if loc[:n] in self.paths:
                return (*self.paths[loc[:n]], *loc[n:])
        if loc and loc[0] == "steps" and len(loc) > 1 and isinstance(loc[1], int) \
                and loc[1] < len(self.step_paths):
            rest = loc[2:]
            if rest and isinstance(rest[0], str):  # a step key the dialect names otherwise (not keys inside it)
                rest = (self.renames.get(rest[0], rest[0]), *rest[1:])
            return self.step_paths[loc[1]] + rest
        if loc and isinstance(loc[0], str) and loc[0] in self.top:
            return (*self.top[loc[0]], *loc[1:])
        if loc and isinstance(loc[0], str) and loc[0] in (
                "error_handlers", "default_timeout", "failure_policy", "max_recovery_attempts",
                "default_retry_policy"):
            key = {"default_timeout": "default_timeout_seconds"}.get(loc[0], loc[0])
            return (*self.base, key, *loc[1:])
        return loc


_STEP_KEYS_001 = {"id", "name", "kind", "handler", "parameters", "input_mapping", "depends_on",
                  "condition", "retry_policy", "timeout_seconds", "timeout", "idempotent",
                  "estimated_duration", "execution_mode", "position", "description", "reserve",
                  "restrict_to", "module_restriction", "start_within", "min_delay"}
_RETRY_KEYS = {"max_attempts", "initial_interval", "initial_interval_seconds", "backoff_multiplier",
               "max_backoff_seconds", "max_backoff", "jitter", "non_retryable", "retry_on_timeout"}
_TOP_KEYS_001 = {"name", "version", "description", "tags", "inputs", "definition", "steps",
                 "error_handlers", "default_timeout_seconds", "failure_policy", "max_recovery_attempts",
                 "default_retry_policy", "schedule", "dialect", "deadline"}
_DEF_KEYS = {"steps", "error_handlers", "default_timeout_seconds", "failure_policy",
             "max_recovery_attempts", "default_retry_policy", "inputs", "deadline"}
_WINDOW_HINT = "{after: STEP, max: DURATION, min: DURATION}"


def _unknown(doc: Document, problems: ProblemList, mapping: dict[str, Any], allowed: set[str], path: Loc) -> None:
    for key in mapping:
        if key not in allowed:
            problems.problems.append(Problem(doc.where((*path, key)),
                                             f"unknown key '{key}' (expected one of: {', '.join(sorted(allowed))})"))


def _int(doc: Document, problems: ProblemList, value: Any, path: Loc, *, low: int = 0,
         high: int | None = None, what: str = "a whole number") -> int | None:
    """``value`` as an int within [low, high], or None with a problem at ``path``."""
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and value.strip().lstrip("+-").isdigit() and len(value) < 20:
        number = int(value.strip())
    if number is None:
        problems.problems.append(Problem(doc.where(path), f"must be {what}, got {value!r}"))
        return None
    if number < low or (high is not None and number > high):
        limits = f"{low}..{high}" if high is not None else f"at least {low}"
        problems.problems.append(Problem(doc.where(path), f"must be {limits}, got {number}"))
        return None
    return number


def _retries(doc: Document, problems: ProblemList, value: Any, path: Loc) -> dict[str, Any] | None:
    """``retries: N`` (seed 004) / ``max_retries: N`` (seed 002) as a retry policy; null is unset."""
    if value is None:
        return None
    count = _int(doc, problems, value, path, high=99, what="a number of retries (0..99)")
    return None if count is None else {"max_attempts": count + 1}


def _strings(doc: Document, problems: ProblemList, value: Any, path: Loc, what: str, *,
             split_commas: bool = False) -> tuple[str, ...]:
    """A list of strings; one string is a one-item list (or comma separated, if asked).

    Anything else is a problem at ``path`` (or at the item), and is left out."""
    if value is None:
        return ()
    if isinstance(value, str):
        if split_commas:
            return tuple(x.strip() for x in value.split(",") if x.strip())
        return (value,)
    if not isinstance(value, list | tuple):
        problems.problems.append(Problem(doc.where(path), f"must be a list of {what} (or one), "
                                         f"got {type(value).__name__} {value!r}"))
        return ()
    out = []
    for j, item in enumerate(value):
        if isinstance(item, str):
            out.append(item)
        else:
            problems.problems.append(Problem(doc.where((*path, j)), f"must be {what[:-1] if what.endswith('s') else what}"
                                             f" (text), got {type(item).__name__} {item!r}"))
    return tuple(out)


def _duration(doc: Document, problems: ProblemList, value: Any, path: Loc) -> float | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except (ValueError, TypeError) as exc:
        problems.problems.append(Problem(doc.where(path), f"unparsable duration: {exc}"))
        return None


def _retry(doc: Document, problems: ProblemList, value: Any, path: Loc) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        problems.problems.append(Problem(doc.where(path), "retry_policy must be a mapping"))
        return None
    _unknown(doc, problems, value, _RETRY_KEYS, path)
    out = {k: v for k, v in value.items() if k in ("max_attempts", "backoff_multiplier", "jitter",
                                                   "retry_on_timeout")}
    if "non_retryable" in value:
        out["non_retryable"] = _strings(doc, problems, value["non_retryable"], (*path, "non_retryable"),
                                        "error codes")
    for key, target in (("initial_interval", "initial_interval"), ("initial_interval_seconds", "initial_interval"),
                        ("max_backoff_seconds", "max_backoff"), ("max_backoff", "max_backoff")):
        if key in value:
            seconds = _duration(doc, problems, value[key], (*path, key))
            if seconds is not None:
                out[target] = seconds
    return out


def _window(doc: Document, problems: ProblemList, s: Mapping[str, Any], path: Loc, deps: Sequence[str],
            after_of: Callable[[Any, Loc], str | None], raw_paths: dict[str, Loc]
            ) -> dict[str, Any] | None:
    """A step's ``start_within`` and ``min_delay`` (the file mapping ``s`` at ``path``) as one
    window, or None. A wrong part is reported and the window left out (nothing half-read).

    ``after_of(value, path)`` names the step ``after`` refers to (None: reported as wrong);
    ``deps``: the step's dependencies (``min_delay: 5m`` alone counts from the only one);
    ``raw_paths`` gets the file path of each window field spelled as ``min_delay``."""
    within, delay = s.get("start_within"), s.get("min_delay")
    if within is None and delay is None:
        return None
    before = len(problems.problems)
    out: dict[str, Any] = {}
    if within is not None:
        wpath = (*path, "start_within")
        if not isinstance(within, dict):
            problems.problems.append(Problem(doc.where(wpath), f"start_within must be a mapping {_WINDOW_HINT}, "
                                             f"got {within!r}"))
        else:
            _unknown(doc, problems, within, {"after", "max", "min"}, wpath)
            if "after" not in within:
                problems.problems.append(Problem(doc.where(wpath), "missing field 'after' (the step the window "
                                                 "counts from)"))
            else:
                out["after"] = after_of(within["after"], (*wpath, "after"))
            if "max" not in within and "min" not in within:
                problems.problems.append(Problem(doc.where(wpath), "start_within needs max (and may have min)"))
            for key in ("min", "max"):
                if key in within:
                    out[key] = _duration(doc, problems, within[key], (*wpath, key))
    if delay is not None:
        dpath = (*path, "min_delay")
        if "min" in out:
            problems.problems.append(Problem(doc.where(dpath), "min_delay and start_within.min both set the "
                                             "minimum: keep one"))
        elif isinstance(delay, dict):
            _unknown(doc, problems, delay, {"after", "delay"}, dpath)
            if "after" in delay:
                after = after_of(delay["after"], (*dpath, "after"))
                if "after" in out and after is not None and out["after"] != after:
                    problems.problems.append(Problem(doc.where((*dpath, "after")), f"min_delay counts from "
                                                     f"'{after}' but start_within from '{out['after']}': a step "
                                                     "has one window"))
                elif "after" not in out:
                    out["after"] = after
                    raw_paths["after"] = (*dpath, "after")
            if "delay" not in delay:
                problems.problems.append(Problem(doc.where(dpath), "missing field 'delay' (min_delay: "
                                                 "{after: STEP, delay: DURATION})"))
            else:
                out["min"] = _duration(doc, problems, delay["delay"], (*dpath, "delay"))
                raw_paths["min"] = (*dpath, "delay")
        else:
            out["min"] = _duration(doc, problems, delay, dpath)
            raw_paths["min"] = dpath
        if "after" not in out and len(problems.problems) == before:
            if len(deps) == 1:
                out["after"] = deps[0]
            else:
                problems.problems.append(Problem(doc.where(dpath), "min_delay needs the step it counts from: "
                                                 "min_delay: {after: STEP, delay: DURATION}"
                                                 + (" (this step depends on several)" if deps else "")))
    if len(problems.problems) != before or any(v is None for v in out.values()):
        return None
    return out


def _after_name(doc: Document, problems: ProblemList) -> Callable[[Any, Loc], str | None]:
    def after_of(value: Any, path: Loc) -> str | None:
        if isinstance(value, str) and value:
            return value
        problems.problems.append(Problem(doc.where(path), f"after must name a step, got {value!r}"))
        return None

    return after_of


def _window_into(raw: _Raw, steps: Sequence[dict[str, Any]], windows: Sequence[tuple[int, dict[str, Loc]]]) -> None:
    """Record where each step's window fields came from (``raw.paths``)."""
    for k, paths in windows:
        if "start_within" in steps[k]:
            for key, file_path in paths.items():
                raw.paths[("steps", k, "start_within", key)] = file_path


def _inputs(doc: Document, problems: ProblemList, value: Any, path: Loc) -> list[Any]:
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
    base: Loc
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
    steps: list[dict[str, Any]] = []
    step_paths: list[Loc] = []
    windows: list[tuple[int, dict[str, Loc]]] = []
    for i, s in enumerate(steps_in):
        path = (*base, "steps", i)
        if not isinstance(s, dict):
            problems.problems.append(Problem(doc.where(path), "a step must be a mapping"))
            continue
        step_paths.append(path)
        _unknown(doc, problems, s, _STEP_KEYS_001, path)
        step: dict[str, Any] = {k: s[k] for k in ("id", "name", "parameters", "input_mapping",
                                                  "condition", "idempotent", "execution_mode",
                                                  "position") if k in s}
        for key in ("reserve", "restrict_to"):
            if key in s:
                step[key] = _strings(doc, problems, s[key], (*path, key),
                                     "capabilities" if key == "reserve" else "instrument ids",
                                     split_commas=True)
        if "module_restriction" in s:
            step["module_restriction"] = s["module_restriction"]
        if "handler" in s:  # seed 001: a Python handler path; the kind defaults to python
            step["handler"] = s["handler"]
            step["kind"] = s.get("kind", PYTHON_KIND)
        elif "kind" in s:
            step["kind"] = s["kind"]
        else:
            problems.problems.append(Problem(doc.where(path), "missing field 'kind'"))
        if "id" not in s:
            problems.problems.append(Problem(doc.where(path), "missing field 'id'"))
        if "depends_on" in s:  # one id is a list of one
            step["depends_on"] = _strings(doc, problems, s["depends_on"], (*path, "depends_on"), "step ids")
        for key in ("timeout_seconds", "timeout"):
            if key in s:
                step["timeout"] = _duration(doc, problems, s[key], (*path, key))
        if "estimated_duration" in s:
            step["estimated_duration"] = _duration(doc, problems, s["estimated_duration"],
                                                   (*path, "estimated_duration"))
        if "retry_policy" in s:
            step["retry_policy"] = _retry(doc, problems, s["retry_policy"], (*path, "retry_policy"))
        wpaths: dict[str, Loc] = {}
        window = _window(doc, problems, s, path, step.get("depends_on", ()), _after_name(doc, problems), wpaths)
        if window is not None:
            step["start_within"] = window
            windows.append((len(steps), wpaths))
        steps.append(step)
    value: dict[str, Any] = {
        "name": data.get("name"), "description": data.get("description", ""),
        "tags": _strings(doc, problems, data.get("tags"), ("tags",), "tags"), "steps": steps,
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
    if definition.get("default_retry_policy") is not None:
        policy = _retry(doc, problems, definition["default_retry_policy"], (*base, "default_retry_policy"))
        if policy is not None:
            value["default_retry_policy"] = policy
    deadline_path = (*base, "deadline") if "deadline" in definition else ("deadline",)
    if "deadline" in definition or (base and "deadline" in data):
        value["deadline"] = _duration(doc, problems, definition.get("deadline", data.get("deadline")), deadline_path)
    raw = _Raw(value, step_paths, base)
    raw.renames = {"timeout": "timeout_seconds"}
    raw.top = {"deadline": deadline_path}
    _window_into(raw, steps, windows)
    return raw


_STEP_KEYS_002 = {"name", "task_type", "handler", "dependencies", "max_retries", "timeout",
                  "estimated_duration", "parameters", "idempotent", "condition", "id", "start_within",
                  "min_delay"}


def _from_job_orchestrator(doc: Document, problems: ProblemList) -> _Raw | None:
    data = doc.data
    _unknown(doc, problems, data, {"name", "description", "tags", "steps", "max_recovery_attempts",
                                   "inputs", "failure_policy", "dialect", "deadline"}, ())
    if "name" not in data:
        problems.problems.append(Problem(doc.where(("name",)), "missing field 'name'"))
    steps_in = data["steps"]
    ids: list[str] = []
    for i, s in enumerate(steps_in):
        given = s.get("id") if isinstance(s, dict) else None
        ids.append(given if isinstance(given, str) and given else
                   _slug(str(s.get("name", f"step{i}"))) if isinstance(s, dict) else f"step{i}")
    seen: dict[str, int] = {}
    for i, sid in enumerate(ids):  # make generated ids unique
        if sid in seen and not (isinstance(steps_in[i], dict) and "id" in steps_in[i]):
            ids[i] = f"{sid}_{i}"
        seen[ids[i]] = i
    steps: list[dict[str, Any]] = []
    step_paths: list[Loc] = []
    windows: list[tuple[int, dict[str, Loc]]] = []

    def after_of(value: Any, where: Loc) -> str | None:  # an index, as dependencies are, or a step id
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(ids):
            return ids[value]
        if isinstance(value, str) and value:
            return value
        problems.problems.append(Problem(doc.where(where), f"after {value!r} is neither the index of a step "
                                         f"(0..{len(ids) - 1}) nor a step id"))
        return None

    for i, s in enumerate(steps_in):
        path = ("steps", i)
        if not isinstance(s, dict):
            problems.problems.append(Problem(doc.where(path), "a step must be a mapping"))
            continue
        step_paths.append(path)
        _unknown(doc, problems, s, _STEP_KEYS_002, path)
        if "name" not in s:
            problems.problems.append(Problem(doc.where(path), "missing field 'name'"))
        kind = PYTHON_KIND if "handler" in s else s.get("task_type")
        if kind is None:
            problems.problems.append(Problem(doc.where(path), "missing field 'task_type'"))
        deps = []
        given_deps = s.get("dependencies")
        if given_deps is not None and not isinstance(given_deps, list):
            given_deps = [given_deps]  # one index is a list of one
        for j, dep in enumerate(given_deps or ()):
            if not isinstance(dep, int) or isinstance(dep, bool) or not 0 <= dep < len(steps_in):
                problems.problems.append(Problem(doc.where((*path, "dependencies", j)),
                                                 f"dependency {dep!r} is not the index of a step "
                                                 f"(0..{len(steps_in) - 1})"))
            else:
                deps.append(ids[dep])
        step: dict[str, Any] = {"id": s["id"] if "id" in s else ids[i], "name": s.get("name", ""),
                                "kind": kind, "depends_on": tuple(deps),
                                **{k: s[k] for k in ("parameters", "idempotent", "condition", "handler")
                                   if k in s}}
        if "max_retries" in s:
            step["retry_policy"] = _retries(doc, problems, s["max_retries"], (*path, "max_retries"))
        if "timeout" in s:
            step["timeout"] = _duration(doc, problems, s["timeout"], (*path, "timeout"))
        if "estimated_duration" in s:
            step["estimated_duration"] = _duration(doc, problems, s["estimated_duration"],
                                                   (*path, "estimated_duration"))
        wpaths: dict[str, Loc] = {}
        window = _window(doc, problems, s, path, deps, after_of, wpaths)
        if window is not None:
            step["start_within"] = window
            windows.append((len(steps), wpaths))
        steps.append(step)
    value = {"name": data.get("name"), "description": data.get("description", ""),
             "tags": _strings(doc, problems, data.get("tags"), ("tags",), "tags"), "steps": steps,
             "inputs": _inputs(doc, problems, data.get("inputs"), ("inputs",)),
             **{k: data[k] for k in ("max_recovery_attempts", "failure_policy") if k in data}}
    if "deadline" in data:
        value["deadline"] = _duration(doc, problems, data["deadline"], ("deadline",))
    raw = _Raw(value, step_paths)
    raw.renames = {"kind": "task_type", "retry_policy": "max_retries", "depends_on": "dependencies"}
    raw.top = {"deadline": ("deadline",)}
    _window_into(raw, steps, windows)
    return raw


_TASK_KEYS = {"name", "run", "kind", "on_complete", "timeout", "retries", "parameters",
              "input_mapping", "condition", "idempotent", "description", "handler", "start_within", "min_delay"}


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
    _unknown(doc, problems, config, {"starting_task", "timeout", "retries", "schedule", "deadline"}, ("config",))
    tasks = data["tasks"]
    if not isinstance(tasks, list) or not tasks:
        problems.problems.append(Problem(doc.where(("tasks",)), "tasks must be a non-empty list"))
        return None
    names = [t.get("name") for t in tasks if isinstance(t, dict)]
    parents: dict[str, list[str]] = {}
    steps: list[dict[str, Any]] = []
    step_paths: list[Loc] = []
    windows: list[tuple[int, dict[str, Loc]]] = []
    for i, t in enumerate(tasks):
        path = ("tasks", i)
        if not isinstance(t, dict):
            problems.problems.append(Problem(doc.where(path), "a task must be a mapping"))
            continue
        _unknown(doc, problems, t, _TASK_KEYS, path)
        if "name" not in t:
            problems.problems.append(Problem(doc.where(path), "missing field 'name'"))
        on_complete = _strings(doc, problems, t.get("on_complete"), (*path, "on_complete"), "task names")
        for j, nxt in enumerate(on_complete):
            if nxt not in names:
                problems.problems.append(Problem(doc.where((*path, "on_complete", j)),
                                                 f"on_complete names task '{nxt}', which does not exist"))
            if isinstance(t.get("name"), str):
                parents.setdefault(nxt, []).append(t["name"])
    starting = config.get("starting_task")
    if starting is not None and not isinstance(starting, str):
        problems.problems.append(Problem(doc.where(("config", "starting_task")),
                                         f"starting_task must be a task name, got {starting!r}"))
        starting = None
    if starting is not None and starting not in names:
        problems.problems.append(Problem(doc.where(("config", "starting_task")),
                                         f"starting_task '{starting}' is not a task"))
    for i, t in enumerate(tasks):
        if not isinstance(t, dict):
            continue
        path = ("tasks", i)
        step_paths.append(path)
        name = t.get("name")
        step: dict[str, Any] = {"id": name, "name": t.get("description", name if isinstance(name, str) else ""),
                                "kind": PYTHON_KIND if "handler" in t else t.get("run", t.get("kind", "noop")),
                                "depends_on": tuple(parents.get(name, ())) if isinstance(name, str) else (),
                                **{k: t[k] for k in ("parameters", "input_mapping", "condition",
                                                     "idempotent", "handler") if k in t}}
        if "retries" in t:
            step["retry_policy"] = _retries(doc, problems, t["retries"], (*path, "retries"))
        if "timeout" in t:
            step["timeout"] = _duration(doc, problems, t["timeout"], (*path, "timeout"))
        wpaths: dict[str, Loc] = {}
        window = _window(doc, problems, t, path, step["depends_on"], _after_name(doc, problems), wpaths)
        if window is not None:
            step["start_within"] = window
            windows.append((len(steps), wpaths))
        steps.append(step)
    if starting is not None:
        for step, task_path in zip(steps, step_paths, strict=True):
            if not step["depends_on"] and step["id"] != starting:
                problems.problems.append(Problem(doc.where(task_path),
                                                 f"task '{step['id']}' is not reachable from starting_task "
                                                 f"'{starting}' (add it to an on_complete)"))
    value: dict[str, Any] = {"name": data.get("name"), "description": data.get("description", ""),
                             "tags": _strings(doc, problems, data.get("tags"), ("tags",), "tags"), "steps": steps,
                             "inputs": _inputs(doc, problems, data.get("inputs"), ("inputs",))}
    if "timeout" in config:
        value["default_timeout"] = _duration(doc, problems, config["timeout"], ("config", "timeout"))
    if config.get("retries") is not None:
        policy = _retries(doc, problems, config["retries"], ("config", "retries"))
        if policy is not None:
            value["default_retry_policy"] = policy
    if "schedule" in config:
        value["schedule"] = config["schedule"]
    if "deadline" in config:
        value["deadline"] = _duration(doc, problems, config["deadline"], ("config", "deadline"))
    if "failure_policy" in data:
        value["failure_policy"] = data["failure_policy"]
    raw = _Raw(value, step_paths)
    raw.renames = {"kind": "run", "retry_policy": "retries", "id": "name", "depends_on": "on_complete"}
    raw.top = {"default_timeout": ("config", "timeout"), "default_retry_policy": ("config", "retries"),
               "schedule": ("config", "schedule"), "deadline": ("config", "deadline")}
    _window_into(raw, steps, windows)
    return raw


def _slug(text: str) -> str:
    out = "".join(c.lower() if c.isalnum() else "_" for c in text).strip("_")
    return out or "step"


# ============================================================================ checks


def check_template(t: WorkflowTemplate, *, capabilities: Iterable[str] | None = None
                   ) -> list[tuple[Loc, str]]:
    """Semantic checks on a model: (model path, message) for every problem found.

    Duplicate ids, unknown dependencies, cycles (the cycle is printed), error handlers, input
    mappings, conditions, kinds (against ``capabilities`` when given), and what a ``prompt``
    step declares: its answer fields (types, ranges, choices, each field's default), its timeout
    and default answer (against its fields), priority and answerers (:func:`core.inbox.prompt_problems`).
    """
    from core.inbox import prompt_problems

    out: list[tuple[Loc, str]] = []
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
    if t.schedule is not None:
        reason = cron_problem(t.schedule)
        if reason:
            out.append((("schedule",), reason))
    input_names = {p.name for p in t.inputs}
    ancestors = _ancestors(t)
    caps = set(capabilities) if capabilities is not None else None
    for i, s in enumerate(t.steps):
        if s.kind == PYTHON_KIND or s.handler is not None:
            if s.kind != PYTHON_KIND:
                out.append((("steps", i, "handler"), f"a handler is for kind '{PYTHON_KIND}' steps, "
                            f"not '{s.kind}'"))
            elif s.handler is None:
                out.append((("steps", i, "handler"), "a python step needs a handler 'module.function'"))
            elif (problem := handler_problem(s.handler)) is not None:
                out.append((("steps", i, "handler"), problem))
        elif s.kind not in BUILTIN_KINDS:
            if "." not in s.kind or s.kind.startswith(".") or s.kind.endswith("."):
                out.append((("steps", i, "kind"), f"kind '{s.kind}' is neither a built-in "
                            f"({', '.join(sorted(BUILTIN_KINDS))}), '{PYTHON_KIND}' nor a capability 'Kind.Command'"))
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
        if s.kind == "prompt":
            out += [(("steps", i, *path), message) for path, message in prompt_problems(s.parameters)]
        if s.kind == "delay" and not ({"seconds", "duration"} & (set(s.parameters) | set(s.input_mapping))):
            out.append((("steps", i, "parameters"), "a delay step needs seconds or duration (a parameter or an input mapping)"))
        if s.condition:
            for message in check_condition(s.condition, steps=ids, inputs=input_names if t.inputs else None):
                out.append((("steps", i, "condition"), message))
        for param, source in s.input_mapping.items():
            mapping_problem = _check_mapping(source, s.id, ids, input_names if t.inputs else None,
                                             ancestors)
            if mapping_problem:
                out.append((("steps", i, "input_mapping", param), mapping_problem))
        if s.start_within is not None:
            out.extend(_check_window(s, i, ids, ancestors))
    if t.deadline is not None and not cycle:
        out.extend(_check_deadline(t))
    return out


def _check_window(s: Step, i: int, ids: dict[str, int], ancestors: dict[str, set[str]]) -> list[tuple[Loc, str]]:
    w = s.start_within
    assert w is not None
    out: list[tuple[Loc, str]] = []
    at: Loc = ("steps", i, "start_within")
    if w.after not in ids:
        close = difflib.get_close_matches(w.after, list(ids), n=1)
        out.append(((*at, "after"), f"the window counts from unknown step '{w.after}'"
                    + (f" (did you mean '{close[0]}'?)" if close else "")))
    elif w.after == s.id:
        out.append(((*at, "after"), f"step '{s.id}' cannot wait for its own end"))
    elif w.after not in ancestors.get(s.id, set()):
        out.append(((*at, "after"), f"step '{w.after}' does not run before '{s.id}' (add it to depends_on, "
                    "directly or through other steps)"))
    if w.max is not None and w.max < w.min:
        out.append(((*at, "max"), f"max {format_duration(w.max)} is less than the minimum delay "
                    f"{format_duration(w.min)}: the window can never hold"))
    return out


def _check_deadline(t: WorkflowTemplate) -> list[tuple[Loc, str]]:
    """A deadline shorter than the least time the run can take: the minimum delays and the
    declared durations along its longest chain of steps."""
    assert t.deadline is not None
    least: dict[str, float] = {}
    via: dict[str, str | None] = {}
    by_id = {s.id: s for s in t.steps}
    for sid in topological_order(t):
        s = by_id[sid]
        start, prev = 0.0, None
        for dep in s.depends_on:
            if dep in least and least[dep] > start:
                start, prev = least[dep], dep
        w = s.start_within
        if w is not None and w.after in least and least[w.after] + w.min > start:
            start, prev = least[w.after] + w.min, w.after
        least[sid] = start + (s.estimated_duration or 0.0)
        via[sid] = prev
    if not least:
        return []
    end = max(least, key=lambda k: least[k])
    if least[end] <= t.deadline:
        return []
    chain = [end]
    while (prev := via[chain[-1]]) is not None:
        chain.append(prev)
    return [(("deadline",), f"deadline {format_duration(t.deadline)} cannot hold: {' -> '.join(reversed(chain))} "
             f"takes at least {format_duration(least[end])} (minimum delays and estimated durations)")]


_RESTRICTIONS = {n.lower(): n for n in ("NoRestriction", "UnlessBusy", "UnlessError", "UnlessOffline",
                                         "FullRestriction")}


MAPPING_ROOTS = ("input_data", "step_outputs", "context")
"""What an input mapping may refer to; any other value is a literal (seed 001's "static_value")."""


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
    elif parts[0] == "context":
        if len(parts) < 2:
            return f"mapping '{source}' must name a context value: context.NAME"
    elif len(parts) > 1 and (close := difflib.get_close_matches(parts[0], MAPPING_ROOTS, n=1, cutoff=0.75)):
        return (f"mapping '{source}': did you mean {close[0]}.{'.'.join(parts[1:])}? (a value that does "
                "not start with input_data., step_outputs. or context. is passed as it is)")
    return None  # anything else is a literal value, passed as it is


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
    order: list[str] = []
    done: set[str] = set()
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
    return reachable(children, step_id)


def reachable(children: Mapping[str, Sequence[str]], step_id: str) -> set[str]:
    """Every step below ``step_id`` in a graph given as step -> the steps that depend on it."""
    out, todo = set(), [step_id]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


_YAML_BREAKS = frozenset("\x85\u2028\u2029")
"""Characters YAML reads as line breaks: a plain or single-quoted scalar holding one would not
read back the same, so such strings are written double-quoted (where they are escaped)."""


def dump_template(t: WorkflowTemplate, path: str | Path) -> None:
    """Write ``t`` in the native dialect, as JSON or YAML by the file's suffix."""
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
        style = '"' if _YAML_BREAKS.intersection(value) or not value.isprintable() else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Dumper.add_representer(str, text)
    path = Path(path)
    data = t.to_definition()
    if path.suffix.lower() == ".json":
        path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    else:
        path.write_text(yaml.dump(data, Dumper=Dumper, sort_keys=False, allow_unicode=True),
                        encoding="utf-8")


__all__ = ["BUILTIN_KINDS", "FailurePolicy", "InputParameter", "ParameterType", "RetryPolicy", "Step",
           "Window", "WorkflowTemplate", "check_template", "descendants", "detect_dialect", "dump_template",
           "find_cycle", "load_template", "parse_template", "render_path", "template_from_dict",
           "topological_order"]
