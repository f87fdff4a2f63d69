"""The workcell: which instruments exist, what they can do, and how to reach them.

A workcell file (YAML or JSON) declares the instruments of one workcell::

    name: Demo workcell
    seed: 42                       # optional; makes simulated instruments repeatable
    heartbeat_interval: 5s         # default 5 s
    stale_timeout: 30s             # default 30 s; no heartbeat for this long -> Offline
    instruments:
      - id: PlateReader1           # letters, digits, _ . - ; unique
        name: Plate reader 1       # display name (defaults to the id)
        kind: PlateReader
        driver: simulated          # simulated | sila | agent
        vendor: BMG LABTECH        # vendor, model, serial: optional
        max_concurrent: 1          # orders it runs at once (default 1)
        tags: [detection]
        options: {faults: "rate=0.02"}     # driver options (see below)
        capabilities:
          PlateReader.ReadPlate:           # "Kind.Command"
            duration: 90s                  # seconds or "250ms" / "30s" / "5m" / "1h"
            jitter: 10%                    # +-10 %, or an absolute "5s"
            outputs:                       # optional; plausible defaults otherwise
              WellValues: {type: list, count: 96, min: 0.04, max: 3.2}
              MeanAbsorbance: {of: WellValues, reduce: mean}
          PlateReader.Shake: 20s           # shorthand: just the duration
    step_types:                    # optional: template step type -> capability + parameter names
      read_plate:
        capability: PlateReader.ReadPlate
        parameters: {plate: PlateId, wavelength: Wavelength}

Driver options: ``simulated``: ``connect_time``, ``heartbeat_latency`` (durations) and
``faults`` (a :mod:`core.drivers.faults` spec); ``sila``: ``host``, ``port``, ``insecure``
(loopback only), ``root_certs`` or ``server_cert``, ``connect_timeout``, ``heartbeat_timeout``
and ``commands`` (capability -> SiLA ``Feature/Command`` with parameter, response and error
mappings, see :class:`SilaOptions` and :mod:`core.drivers.sila`); ``agent``: ``url``
(``ws://`` or ``wss://``), ``token_env``.

:func:`load_workcell` rejects a wrong file with a :class:`~core.errors.WorkcellError` listing
*every* problem, each with file, field path and line. :func:`build_drivers` turns a workcell
into driver instances.
"""

from __future__ import annotations

import difflib
import math
import random
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from core.durations import Duration, DurationError, parse_duration
from core.errors import Problem, Where, WorkcellError
from core.sourcemap import Document, load_document, parse_document, render_path

if TYPE_CHECKING:
    from core.clock import Clock
    from core.drivers.base import Driver
    from core.drivers.faults import FaultSpec
    from core.events import EventBus

__all__ = [
    "DRIVER_KINDS",
    "AgentOptions",
    "CapabilitySpec",
    "InstrumentConfig",
    "Jitter",
    "OutputSpec",
    "SilaCommandSpec",
    "SilaErrorSpec",
    "SilaOptions",
    "SimulatedOptions",
    "StepType",
    "Workcell",
    "build_drivers",
    "instrument_ids",
    "load_workcell",
    "parse_workcell",
]

DRIVER_KINDS = ("simulated", "sila", "agent")
"""Driver names a workcell file may use."""

_ID_CHARS = "letters, digits, '_', '.' and '-', starting with a letter"


def _check_id(value: str) -> str:
    if not value or not value[0].isascii() or not value[0].isalpha() or not all(
            c.isascii() and (c.isalnum() or c in "_.-") for c in value):
        raise ValueError(f"{value!r} is not a valid id ({_ID_CHARS})")
    return value


def _check_word(value: str) -> str:
    if not value or not value[0].isalpha() or not all(c.isalnum() or c == "_" for c in value):
        raise ValueError(f"{value!r} must be one word of letters, digits and '_'")
    return value


def _check_capability(value: str) -> str:
    feature, dot, command = value.partition(".")
    try:
        if not dot:
            raise ValueError
        _check_word(feature)
        _check_word(command)
    except ValueError:
        raise ValueError(f"capability {value!r} must be 'Kind.Command', "
                         f"e.g. 'PlateReader.ReadPlate'") from None
    return value


InstrumentId = Annotated[str, AfterValidator(_check_id)]
CapabilityName = Annotated[str, AfterValidator(_check_capability)]
PositiveDuration = Annotated[Duration, Field(gt=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- capabilities


@dataclass(frozen=True)
class Jitter:
    """Random spread of a duration: ``+-seconds`` or ``+-fraction`` of the duration."""

    seconds: float = 0.0
    fraction: float = 0.0

    def spread(self, duration: float) -> float:
        """Half-width of the spread around ``duration``, in seconds."""
        return self.seconds + self.fraction * duration

    def __str__(self) -> str:
        return f"{self.fraction * 100:g}%" if self.fraction else f"{self.seconds:g}s"


def parse_jitter(value: Any) -> Jitter:
    """``"10%"`` -> relative; a number or duration string -> absolute seconds."""
    if isinstance(value, Jitter):
        return value
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            fraction = float(value.strip()[:-1]) / 100
        except ValueError:
            raise ValueError(f"bad jitter {value!r}: expected a percentage like '10%'") from None
        if not 0 <= fraction <= 1 or math.isnan(fraction):
            raise ValueError(f"jitter {value!r} must be between 0% and 100%")
        return Jitter(fraction=fraction)
    try:
        return Jitter(seconds=parse_duration(value))
    except DurationError as exc:
        raise ValueError(f"bad jitter: {exc} (or a percentage like '10%')") from None


OutputType = Literal["double", "integer", "boolean", "string", "list"]


class OutputSpec(_Strict):
    """How a simulated instrument makes up one output parameter.

    Shorthand: a plain value (``Operator: sim``) is a constant. Otherwise the value comes from,
    in this order: ``value`` (a constant), ``of`` + ``reduce`` (mean/sum/min/max of a list
    output), ``from_input`` (the order's input parameter, numbers scattered by ``spread``),
    ``choices`` (one of them), or a random number between ``min`` and ``max``.
    """

    type: OutputType = "double"
    value: Any = None
    min: float | None = None
    max: float | None = None
    decimals: int = Field(3, ge=0, le=12)
    count: int | None = Field(None, ge=0, le=100_000)
    """Number of values of a ``list`` output (e.g. 96 wells)."""
    choices: list[str] | None = None
    from_input: list[str] | None = None
    """Input parameter(s) to take the value from: the first one the order has (a name or a
    list; matched ignoring case, ``_`` and spaces)."""
    spread: float = Field(0.0, ge=0, le=1)
    """Relative scatter applied to a numeric ``from_input`` value (0.01 = +-1 %)."""
    of: str | None = None
    reduce: Literal["mean", "sum", "min", "max"] | None = None
    unit: str | None = None
    description: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _constant_shorthand(cls, data: Any) -> Any:
        if isinstance(data, dict) or isinstance(data, OutputSpec):
            return data
        kind = ("boolean" if isinstance(data, bool) else "integer" if isinstance(data, int)
                else "double" if isinstance(data, float) else "string")
        return {"type": kind, "value": data}

    @field_validator("from_input", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _consistent(self) -> OutputSpec:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min:g}) is greater than max ({self.max:g})")
        if self.type == "list" and self.count is None and self.value is None:
            raise ValueError("a list output needs count (how many values)")
        if (self.of is None) != (self.reduce is None):
            raise ValueError("of and reduce go together (e.g. of: WellValues, reduce: mean)")
        return self


class CapabilitySpec(_Strict):
    """One command of an instrument: how long it takes and what it returns.

    Shorthand: a plain duration (``Sealer.Seal: 8s``).
    """

    duration: Duration
    """Nominal duration of the command (seconds; may be 0)."""
    jitter: Annotated[Jitter, PlainValidator(parse_jitter)] = Jitter()
    """Random spread around :attr:`duration` (uniform, never below 0)."""
    duration_input: list[str] | None = None
    """Input parameter(s) whose value (seconds or a duration string), when the order has it,
    replaces :attr:`duration` (e.g. ``duration`` of ``Incubator.Incubate``)."""
    progress_steps: int = Field(10, ge=1, le=1000)
    """How many progress reports a simulated run makes."""
    outputs: dict[str, OutputSpec] | None = None
    """Output parameters; None uses built-in plausible outputs for well-known commands."""
    description: str | None = None

    @field_validator("duration_input", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="before")
    @classmethod
    def _duration_shorthand(cls, data: Any) -> Any:
        if isinstance(data, dict | CapabilitySpec):
            return data
        return {"duration": data}


# --------------------------------------------------------------------------- driver options


class SimulatedOptions(_Strict):
    """``options`` of a ``driver: simulated`` instrument."""

    connect_time: Duration = 0.0
    heartbeat_latency: Duration = 0.0
    faults: str | None = None
    """A fault spec (see :mod:`core.drivers.faults`) for this instrument."""

    @field_validator("faults")
    @classmethod
    def _faults_parse(cls, value: str | None) -> str | None:
        if value is not None:
            from core.drivers.faults import FaultSpec, FaultSpecError

            try:
                FaultSpec.parse(value)
            except FaultSpecError as exc:
                raise ValueError("; ".join(f"{p.where.field}: {p.message}"
                                           for p in exc.problems)) from None
        return value


class SilaErrorSpec(_Strict):
    """How labconsole treats one SiLA defined execution error (shorthand: the ``retryable`` flag)."""

    retryable: bool = False
    """Whether the same order may succeed when run again (feeds the retry policy)."""

    @model_validator(mode="before")
    @classmethod
    def _flag_shorthand(cls, data: Any) -> Any:
        return {"retryable": data} if isinstance(data, bool) else data


def _check_sila_command(value: str) -> str:
    feature, slash, command = value.partition("/")
    try:
        if not slash:
            raise ValueError
        _check_word(feature)
        _check_word(command)
    except ValueError:
        raise ValueError(f"command {value!r} must be 'Feature/Command' (SiLA identifiers), "
                         f"e.g. 'PlateReader/ReadPlate'") from None
    return value


class SilaCommandSpec(_Strict):
    """Which SiLA command runs one capability, and how its names map."""

    command: Annotated[str, AfterValidator(_check_sila_command)]
    """``Feature/Command``: the feature and command identifiers of the server's definition."""
    parameters: dict[str, str] = Field(default_factory=dict)
    """Order parameter name -> SiLA parameter identifier. Unmapped parameters match by name
    (ignoring case, ``_`` and spaces)."""
    responses: dict[str, str] = Field(default_factory=dict)
    """SiLA response (or intermediate response) identifier -> output parameter name. Unmapped
    responses keep their SiLA identifier."""
    errors: dict[str, SilaErrorSpec] = Field(default_factory=dict)
    """SiLA defined execution error identifier -> how to treat it (unlisted: not retryable)."""


class SilaOptions(_Strict):
    """``options`` of a ``driver: sila`` instrument (a SiLA 2 server)."""

    host: str
    port: int = Field(ge=1, le=65535)
    insecure: bool = False
    """Plain-text gRPC; allowed only for a server on this machine."""
    root_certs: str | None = None
    """PEM file of the CA that signed the server's certificate (relative to the workcell file)."""
    server_cert: str | None = None
    """PEM file of the server's own (e.g. self-signed) certificate, pinned: only a server holding
    its key is accepted (relative to the workcell file)."""
    connect_timeout: PositiveDuration = 10.0
    """How long connecting (reading the server's feature definitions) may take."""
    heartbeat_timeout: PositiveDuration = 3.0
    """Deadline of one heartbeat (a read of the server's UUID); no answer by then -> Offline."""
    commands: dict[CapabilityName, SilaCommandSpec] = Field(default_factory=dict)
    """Capability -> the SiLA command that runs it; one entry per capability of the instrument."""

    @field_validator("insecure")
    @classmethod
    def _insecure_only_on_loopback(cls, value: bool, info: ValidationInfo) -> bool:
        host = info.data.get("host")
        if value and host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"insecure is allowed only for a server on this machine "
                             f"(127.0.0.1), not {host!r}; use root_certs or server_cert")
        return value

    @model_validator(mode="after")
    def _one_kind_of_security(self) -> SilaOptions:
        if self.insecure and (self.root_certs or self.server_cert):
            raise ValueError("insecure: true cannot be combined with root_certs or server_cert")
        if self.root_certs and self.server_cert:
            raise ValueError("give either root_certs (a CA) or server_cert (a pinned certificate), "
                             "not both")
        return self


class AgentOptions(_Strict):
    """``options`` of a ``driver: agent`` instrument (a remote robot agent, see
    :mod:`core.drivers.agent`)."""

    url: str
    """Where the console's agent hub listens and the agent connects: ``ws://HOST:PORT``.
    Agents with the same url share one hub. A host other than 127.0.0.1 / localhost / ::1
    needs ``token_env``."""
    token_env: str | None = None
    """Environment variable holding the agent's token (never the token itself)."""
    connect_timeout: PositiveDuration = 5.0
    """How long connecting (and a job due while the agent is away) waits for the agent."""
    reconnect_grace: Duration = 10.0
    """How long a running job waits for its agent to reconnect after the link dropped."""

    @field_validator("url")
    @classmethod
    def _websocket(cls, value: str) -> str:
        if not value.startswith(("ws://", "wss://")):
            raise ValueError(f"url must start with ws:// or wss://, got {value!r}")
        if value.startswith("wss://"):
            raise ValueError(f"the agent hub serves ws:// only (put a TLS proxy in front of it "
                             f"for wss://), got {value!r}")
        from urllib.parse import urlsplit

        try:
            parts = urlsplit(value)
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"url {value!r}: {exc}") from None
        if port is None or not parts.hostname or parts.path not in ("", "/"):
            raise ValueError(f"url must be ws://HOST:PORT, got {value!r}")
        return value

    @model_validator(mode="after")
    def _token_off_loopback(self) -> AgentOptions:
        from urllib.parse import urlsplit

        host = urlsplit(self.url).hostname
        if host not in ("127.0.0.1", "localhost", "::1") and not self.token_env:
            raise ValueError(f"an agent hub on {host!r} is reachable from other machines: set "
                             f"token_env (or use ws://127.0.0.1:PORT)")
        return self


_OPTIONS: dict[str, type[BaseModel]] = {"simulated": SimulatedOptions, "sila": SilaOptions,
                                        "agent": AgentOptions}


# --------------------------------------------------------------------------- instruments


class InstrumentConfig(_Strict):
    """One instrument of the workcell (a Data Services *module*)."""

    id: InstrumentId
    """Unique id; what orders' ``assignedTo`` and ``restrictToModuleIds`` name."""
    name: str = ""
    """Display name; the id if empty."""
    kind: Annotated[str, AfterValidator(_check_word)]
    driver: str
    vendor: str = ""
    model: str = ""
    serial: str = ""
    description: str | None = None
    capabilities: Annotated[dict[CapabilityName, CapabilitySpec], Field(min_length=1)]
    max_concurrent: int = Field(1, ge=1, le=10_000)
    tags: list[str] = Field(default_factory=list)
    options: dict[str, Any] = Field(default_factory=dict)
    """Driver options, checked against the driver's options model when loading."""
    enabled: bool = True
    """False: defined, but the dispatcher sends it nothing until an operator enables it."""

    @field_validator("driver")
    @classmethod
    def _known_driver(cls, value: str) -> str:
        if value not in DRIVER_KINDS:
            raise ValueError(f"unknown driver {value!r} (drivers: {', '.join(DRIVER_KINDS)})")
        return value

    @property
    def display_name(self) -> str:
        return self.name or self.id

    @property
    def simulated_options(self) -> SimulatedOptions:
        """:attr:`options` as :class:`SimulatedOptions` (checked when the file was loaded)."""
        return SimulatedOptions.model_validate(self.options)


class StepType(_Strict):
    """How a template step type maps onto an instrument command."""

    capability: CapabilityName
    parameters: dict[str, str] = Field(default_factory=dict)
    """Step parameter name -> the command's input parameter name."""
    description: str | None = None


class Workcell(_Strict):
    """A whole workcell file. Build with :func:`load_workcell` or :func:`parse_workcell`."""

    version: Literal[1] = 1
    name: str = "workcell"
    description: str | None = None
    seed: int | None = None
    """Seed for simulated instruments; None draws a fresh one each run."""
    heartbeat_interval: PositiveDuration = 5.0
    stale_timeout: PositiveDuration = 30.0
    instruments: Annotated[list[InstrumentConfig], Field(min_length=1)]
    step_types: dict[str, StepType] = Field(default_factory=dict)

    _document: Document | None = PrivateAttr(default=None)

    @property
    def source(self) -> str | None:
        """The file it was loaded from, if any."""
        return self._document.file if self._document else None

    def where(self, path: Sequence[str | int]) -> Where:
        """File, field path and line of ``path`` in the source file (as far as known)."""
        if self._document is None:
            return Where(None, render_path(path) or None, None)
        return self._document.where(path)

    def instrument(self, instrument_id: str) -> InstrumentConfig:
        """The instrument with this id; ``KeyError`` names the known ids."""
        for inst in self.instruments:
            if inst.id == instrument_id:
                return inst
        raise KeyError(f"no instrument {instrument_id!r} in workcell {self.name!r} "
                       f"(instruments: {', '.join(i.id for i in self.instruments)})")

    def instruments_for(self, capability: str) -> list[InstrumentConfig]:
        """Instruments offering ``capability``, in file order."""
        return [i for i in self.instruments if capability in i.capabilities]

    @property
    def capabilities(self) -> frozenset[str]:
        """Every capability some instrument offers."""
        return frozenset(c for i in self.instruments for c in i.capabilities)


# --------------------------------------------------------------------------- loading


def load_workcell(path: str | Path) -> Workcell:
    """Load and check a workcell file (``.yaml``/``.yml`` or ``.json``).

    Raises:
        WorkcellError: the file cannot be read or parsed, or is wrong; every problem is
            listed with file, field path and line.
    """
    return _build(load_document(path, WorkcellError))


def parse_workcell(text: str, file: str = "<workcell>.yaml") -> Workcell:
    """Like :func:`load_workcell`, from text; ``file`` names it in errors (and picks JSON by
    a ``.json`` suffix)."""
    return _build(parse_document(text, file, WorkcellError))


def _build(doc: Document) -> Workcell:
    problems: list[Problem] = []
    data = doc.data
    if not isinstance(data, dict):
        got = "an empty file" if data is None else f"a {type(data).__name__}"
        raise WorkcellError(f"{doc.file} is not a workcell",
                            [Problem(doc.where(()), f"expected a mapping with 'instruments', got {got}")])
    workcell: Workcell | None = None
    try:
        workcell = Workcell.model_validate(data)
    except ValidationError as exc:
        problems += _problems(exc, doc, (), Workcell)
    problems += _cross_checks(data, doc)
    if problems:
        problems.sort(key=lambda p: (p.where.line or 0, p.where.field or ""))
        raise WorkcellError(f"workcell {doc.file} is not valid", problems)
    assert workcell is not None
    workcell._document = doc
    return workcell


def _cross_checks(data: dict[str, Any], doc: Document) -> list[Problem]:
    """Checks across fields, on the raw data so they run even when other fields are wrong."""
    problems: list[Problem] = []
    instruments = data.get("instruments")
    instruments = instruments if isinstance(instruments, list) else []
    seen: dict[str, int] = {}
    offered: set[str] = set()
    for i, inst in enumerate(instruments):
        if not isinstance(inst, dict):
            continue
        ident = inst.get("id")
        if isinstance(ident, str):
            if ident in seen:
                problems.append(Problem(doc.where(("instruments", i, "id")),
                                        f"duplicate instrument id {ident!r} (first used in "
                                        f"instruments[{seen[ident]}], line "
                                        f"{doc.line(('instruments', seen[ident], 'id'))})"))
            else:
                seen[ident] = i
        caps = inst.get("capabilities")
        if isinstance(caps, dict):
            offered.update(c for c in caps if isinstance(c, str))
            for cap, spec in caps.items():
                problems += _output_refs(spec, doc, ("instruments", i, "capabilities", cap))
        driver, options = inst.get("driver"), inst.get("options", {})
        if isinstance(driver, str) and driver in _OPTIONS and isinstance(options, dict):
            try:
                _OPTIONS[driver].model_validate(options)
            except ValidationError as exc:
                problems += _problems(exc, doc, ("instruments", i, "options"), _OPTIONS[driver])
            if driver == "sila":
                problems += _sila_checks(inst, options, doc, ("instruments", i))
    step_types = data.get("step_types")
    if isinstance(step_types, dict):
        for name, step in step_types.items():
            cap = step.get("capability") if isinstance(step, dict) else None
            if isinstance(cap, str) and offered and cap not in offered:
                hint = difflib.get_close_matches(cap, sorted(offered), n=1)
                problems.append(Problem(
                    doc.where(("step_types", name, "capability")),
                    f"no instrument offers {cap!r}"
                    + (f" (did you mean {hint[0]!r}?)" if hint else "")))
    try:
        beat = parse_duration(data.get("heartbeat_interval", 5.0))
        stale = parse_duration(data.get("stale_timeout", 30.0))
    except DurationError:
        pass  # reported by the model
    else:
        if 0 < stale <= beat:
            problems.append(Problem(doc.where(("stale_timeout",)),
                                    f"stale_timeout ({stale:g} s) must be longer than "
                                    f"heartbeat_interval ({beat:g} s)"))
    return problems


def _sila_checks(inst: dict[str, Any], options: dict[str, Any], doc: Document,
                 path: tuple[str | int, ...]) -> list[Problem]:
    """A SiLA instrument maps every capability to a command, and its certificate files exist."""
    problems: list[Problem] = []
    caps = inst.get("capabilities")
    caps = [c for c in caps if isinstance(c, str)] if isinstance(caps, dict) else []
    commands = options.get("commands")
    commands = commands if isinstance(commands, dict) else {}
    for cap in caps:
        if cap not in commands:
            problems.append(Problem(doc.where((*path, "capabilities", cap)),
                                    f"capability {cap!r} has no SiLA command: add "
                                    f"options.commands.{cap}.command ('Feature/Command')"))
    for cap in commands:
        if caps and cap not in caps:
            problems.append(Problem(doc.where((*path, "options", "commands", cap)),
                                    f"{cap!r} is not a capability of this instrument "
                                    f"(capabilities: {', '.join(caps)})"))
    base = Path(doc.file).parent if doc.file and not doc.file.startswith("<") else Path.cwd()
    for key in ("root_certs", "server_cert"):
        name = options.get(key)
        if isinstance(name, str) and not (base / name).is_file():
            problems.append(Problem(doc.where((*path, "options", key)),
                                    f"{key}: no such file {str(base / name)!r}"))
    return problems


def _output_refs(spec: Any, doc: Document, path: tuple[str | int, ...]) -> list[Problem]:
    outputs = spec.get("outputs") if isinstance(spec, dict) else None
    if not isinstance(outputs, dict):
        return []
    problems = []
    for name, out in outputs.items():
        target = out.get("of") if isinstance(out, dict) else None
        if not isinstance(target, str):
            continue
        ref = outputs.get(target)
        if not (isinstance(ref, dict) and ref.get("type") == "list"):
            problems.append(Problem(doc.where((*path, "outputs", name, "of")),
                                    f"of: {target!r} must name a list output of the same command"))
    return problems


def _problems(exc: ValidationError, doc: Document, prefix: tuple[str | int, ...],
              model: type[BaseModel]) -> list[Problem]:
    out = []
    for err in exc.errors(include_url=False):
        loc = tuple(p for p in err["loc"] if p != "[key]")
        path = (*prefix, *loc)
        kind, msg = err["type"], err["msg"]
        if kind == "extra_forbidden":
            key = str(loc[-1]) if loc else "?"
            allowed = _allowed_keys(model, loc[:-1])
            hint = difflib.get_close_matches(key, allowed, n=1)
            msg = f"unknown key {key!r}" + (f" (did you mean {hint[0]!r}?)" if hint
                                            else f" (allowed: {', '.join(allowed)})" if allowed
                                            else "")
        elif kind == "missing":
            msg = f"missing required key {str(loc[-1])!r}" if loc else "missing"
        elif kind == "too_short":
            msg = "must not be empty" if err.get("ctx", {}).get("min_length") == 1 else msg
        elif kind in ("value_error", "assertion_error"):
            msg = msg.split(", ", 1)[1] if ", " in msg else msg
        elif "input" in err and not isinstance(err["input"], dict | list):
            msg = f"{msg}, got {err['input']!r}"
        out.append(Problem(doc.where(path), msg))
    return out


def _allowed_keys(model: type[BaseModel], loc: Sequence[str | int]) -> list[str]:
    """Field names of the model found at ``loc`` under ``model`` (for 'did you mean')."""
    current: Any = model
    for part in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            info = current.model_fields.get(str(part))
            if info is None:
                return []
            current = info.annotation
        elif typing.get_origin(current) in (list, dict):
            current = typing.get_args(current)[-1]
        else:
            return []
    current = _unwrap(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _unwrap(annotation: Any) -> Any:
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return annotation
            annotation = args[0]
        else:
            return annotation


# --------------------------------------------------------------------------- drivers


def build_drivers(workcell: Workcell, clock: Clock, bus: EventBus | None = None, *,
                  faults: FaultSpec | str | None = None,
                  seed: int | None = None) -> dict[str, Driver]:
    """One driver per instrument, keyed by instrument id, in file order. Not yet connected.

    Args:
        workcell: The loaded workcell.
        clock: Every simulated wait goes through it.
        bus: If given, drivers announce their state changes as ``InstrumentStatusChanged``.
        faults: Fault injection for simulated instruments (a :class:`FaultSpec` or its text),
            on top of each instrument's own ``options.faults``.
        seed: Overrides the spec's ``seed=`` and the workcell's ``seed``. With none of the
            three, one fresh seed is drawn for all instruments (see each driver's ``seed``).

    Raises:
        WorkcellError: an instrument uses a driver this build does not provide, or the
            environment variable named by an agent's ``token_env`` is not set.
        FaultSpecError: ``faults`` does not parse or names an unknown instrument.
    """
    from core.drivers.faults import FaultSpec
    from core.drivers.simulated import SimulatedDriver

    spec = FaultSpec.parse(faults, source="--faults") if isinstance(faults, str) else faults
    if spec is not None:
        spec.check_instruments([i.id for i in workcell.instruments], source="--faults")
    unavailable = _agent_problems(workcell)
    if unavailable:
        raise WorkcellError(f"cannot start workcell {workcell.name!r}", unavailable)
    if seed is None:
        seed = spec.seed if spec is not None and spec.seed is not None else workcell.seed
    if seed is None:  # one fresh seed for the whole workcell, so one number repeats the run
        seed = random.randrange(2**32)
    drivers: dict[str, Driver] = {}
    hubs: dict[str, Any] = {}
    for n, inst in enumerate(workcell.instruments):
        if inst.driver == "sila":
            from core.drivers.sila import SilaDriver

            drivers[inst.id] = SilaDriver(inst, clock, bus=bus, workcell=workcell, index=n)
        elif inst.driver == "agent":
            drivers[inst.id] = _agent_driver(inst, workcell, hubs, clock, bus)
        else:
            drivers[inst.id] = SimulatedDriver(inst, clock, seed=seed, faults=spec, bus=bus)
    return drivers


def _agent_problems(workcell: Workcell) -> list[Problem]:
    """Agent instruments whose token variable is not set."""
    import os

    problems = []
    for n, inst in enumerate(workcell.instruments):
        if inst.driver == "agent":
            var = AgentOptions.model_validate(inst.options).token_env
            if var and not os.environ.get(var):
                problems.append(Problem(workcell.where(("instruments", n, "options", "token_env")),
                                        f"instrument {inst.id!r}: environment variable {var} "
                                        f"(the agent's token) is not set"))
    return problems


def _agent_driver(inst: InstrumentConfig, workcell: Workcell, hubs: dict[str, Any],
                  clock: Clock, bus: EventBus | None) -> Driver:
    import os

    from core.drivers.agent import AgentDriver, AgentHub

    options = AgentOptions.model_validate(inst.options)
    hub = hubs.get(options.url)
    if hub is None:
        hub = hubs[options.url] = AgentHub(options.url, heartbeat_interval=workcell.heartbeat_interval)
    token = os.environ[options.token_env] if options.token_env else None
    return AgentDriver(inst, hub, token=token, clock=clock, bus=bus,
                       connect_timeout=options.connect_timeout,
                       reconnect_grace=options.reconnect_grace)


def instrument_ids(workcell: Workcell) -> Mapping[str, InstrumentConfig]:
    """Instrument id -> config, in file order."""
    return {i.id: i for i in workcell.instruments}
