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
        driver: simulated          # simulated | sila | agent | pylabrobot | madsci
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
(``ws://`` or ``wss://``), ``token_env``; ``pylabrobot``: ``machine``, ``backend``, ``deck``
(a PyLabRobot deck JSON file), ``state``, ``plate`` and ``commands`` (see
:class:`PyLabRobotOptions` and :mod:`core.drivers.pylabrobot`); ``madsci``: ``url`` of the node,
``request_timeout``, ``poll_interval`` and ``actions`` (see :class:`MadsciOptions` and
:mod:`core.drivers.madsci`).

:func:`load_workcell` rejects a wrong file with a :class:`~core.errors.WorkcellError` listing
*every* problem, each with file, field path and line. :func:`build_drivers` turns a workcell
into driver instances.
"""

from __future__ import annotations

import difflib
import random
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, Field, PrivateAttr, ValidationError

from core.drivers.faults import FaultSpec
from core.drivers.simulated import SimulatedDriver
from core.durations import DurationError, parse_duration
from core.errors import Problem, Where, WorkcellError
from core.instruments import (
    DRIVER_KINDS,
    DRIVER_OPTIONS,
    AgentOptions,
    CapabilityName,
    CapabilitySpec,
    ConfigModel,
    ErrorSpec,
    InstrumentConfig,
    Jitter,
    MadsciActionSpec,
    MadsciOptions,
    OutputSpec,
    PlrCommandSpec,
    PositiveDuration,
    PyLabRobotOptions,
    SilaCommandSpec,
    SilaErrorSpec,
    SilaOptions,
    SimulatedOptions,
    parse_jitter,
)
from core.sourcemap import Document, load_document, parse_document, render_path

if TYPE_CHECKING:
    from core.clock import Clock
    from core.drivers.base import Driver
    from core.events import EventBus

__all__ = [
    "DRIVER_KINDS",
    "AgentOptions",
    "CapabilitySpec",
    "ErrorSpec",
    "InstrumentConfig",
    "Jitter",
    "MadsciActionSpec",
    "MadsciOptions",
    "OutputSpec",
    "PlrCommandSpec",
    "PyLabRobotOptions",
    "SilaCommandSpec",
    "SilaErrorSpec",
    "SilaOptions",
    "SimulatedOptions",
    "StepType",
    "Workcell",
    "build_drivers",
    "instrument_ids",
    "parse_jitter",
    "load_workcell",
    "parse_workcell",
]

class StepType(ConfigModel):
    """How a template step type maps onto an instrument command."""

    capability: CapabilityName
    parameters: dict[str, str] = Field(default_factory=dict)
    """Step parameter name -> the command's input parameter name."""
    description: str | None = None


class Workcell(ConfigModel):
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

    def read_from(self, doc: Document) -> Workcell:
        """This workcell, remembering the document it was read from (for file:line locations)."""
        self._document = doc
        return self

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
    return workcell.read_from(doc)


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
        if isinstance(driver, str) and driver in DRIVER_OPTIONS and isinstance(options, dict):
            try:
                DRIVER_OPTIONS[driver].model_validate(options)
            except ValidationError as exc:
                problems += _problems(exc, doc, ("instruments", i, "options"), DRIVER_OPTIONS[driver])
            if driver == "sila":
                problems += _sila_checks(inst, options, doc, ("instruments", i))
            elif driver in ("pylabrobot", "madsci"):
                problems += _mapping_checks(inst, options, doc, ("instruments", i), driver)
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


def _mapping_checks(inst: dict[str, Any], options: dict[str, Any], doc: Document,
                    path: tuple[str | int, ...], driver: str) -> list[Problem]:
    """Command mappings name capabilities of the instrument; the deck and state files exist."""
    problems: list[Problem] = []
    caps = inst.get("capabilities")
    caps = [c for c in caps if isinstance(c, str)] if isinstance(caps, dict) else []
    key = "commands" if driver == "pylabrobot" else "actions"
    mapped = options.get(key)
    for cap in mapped if isinstance(mapped, dict) else {}:
        if caps and cap not in caps:
            problems.append(Problem(doc.where((*path, "options", key, cap)),
                                    f"{cap!r} is not a capability of this instrument "
                                    f"(capabilities: {', '.join(caps)})"))
    base = Path(doc.file).parent if doc.file and not doc.file.startswith("<") else Path.cwd()
    for name_key in ("deck", "state") if driver == "pylabrobot" else ():
        name = options.get(name_key)
        if isinstance(name, str) and not (base / name).is_file():
            problems.append(Problem(doc.where((*path, "options", name_key)),
                                    f"{name_key}: no such file {str(base / name)!r}"))
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
        WorkcellError: an instrument uses a driver whose optional package is not installed
            (``pylabrobot``), or the environment variable named by an agent's ``token_env`` is
            not set.
        FaultSpecError: ``faults`` does not parse or names an unknown instrument.
    """
    spec = FaultSpec.parse(faults, source="--faults") if isinstance(faults, str) else faults
    if spec is not None:
        spec.check_instruments([i.id for i in workcell.instruments], source="--faults")
    unavailable = _agent_problems(workcell) + _missing_packages(workcell)
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
        elif inst.driver == "pylabrobot":
            from core.drivers.pylabrobot import PyLabRobotDriver

            drivers[inst.id] = PyLabRobotDriver(inst, clock, bus=bus, workcell=workcell, index=n)
        elif inst.driver == "madsci":
            from core.drivers.madsci import MadsciDriver

            drivers[inst.id] = MadsciDriver(inst, clock, bus=bus, workcell=workcell, index=n)
        else:
            drivers[inst.id] = SimulatedDriver(inst, clock, seed=seed, faults=spec, bus=bus)
    return drivers


def _missing_packages(workcell: Workcell) -> list[Problem]:
    """Instruments whose driver needs an optional package that is not installed."""
    import importlib.util

    if importlib.util.find_spec("pylabrobot") is not None:
        return []
    return [Problem(workcell.where(("instruments", n, "driver")),
                    f"instrument {inst.id!r}: driver: pylabrobot needs PyLabRobot, which is not "
                    f"installed: pip install 'labconsole[plr]'")
            for n, inst in enumerate(workcell.instruments) if inst.driver == "pylabrobot"]


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
