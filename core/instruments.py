"""Instrument configuration: what one instrument of a workcell is, does and returns.

The models of an ``instruments:`` entry of a workcell file (see :mod:`core.workcell`):
:class:`InstrumentConfig`, its :class:`CapabilitySpec` commands with their :class:`OutputSpec`
outputs, and the options of each driver. Drivers read these models from here; :mod:`core.workcell`
loads them from files and builds drivers from them, so a driver never imports the loader that
imports it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationInfo,
    field_validator,
    model_validator,
)

from core.durations import Duration, DurationError, parse_duration

DRIVER_KINDS = ("simulated", "sila", "agent", "pylabrobot", "madsci")
"""Driver names a workcell file may use."""

_ID_CHARS = "letters, digits, '_', '.' and '-', starting with a letter"


def _check_id(value: str) -> str:
    if not value or not value[0].isascii() or not value[0].isalpha() or not all(
            c.isascii() and (c.isalnum() or c in "_.-") for c in value):
        raise ValueError(f"{value!r} is not a valid id ({_ID_CHARS})")
    return value


def check_word(value: str) -> str:
    if not value or not value[0].isalpha() or not all(c.isalnum() or c == "_" for c in value):
        raise ValueError(f"{value!r} must be one word of letters, digits and '_'")
    return value


def _check_capability(value: str) -> str:
    feature, dot, command = value.partition(".")
    try:
        if not dot:
            raise ValueError
        check_word(feature)
        check_word(command)
    except ValueError:
        raise ValueError(f"capability {value!r} must be 'Kind.Command', "
                         f"e.g. 'PlateReader.ReadPlate'") from None
    return value


InstrumentId = Annotated[str, AfterValidator(_check_id)]
CapabilityName = Annotated[str, AfterValidator(_check_capability)]
PositiveDuration = Annotated[Duration, Field(gt=0)]


class ConfigModel(BaseModel):
    """Frozen, and refuses unknown keys."""

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


class OutputSpec(ConfigModel):
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
        if isinstance(data, (dict, OutputSpec)):
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


class CapabilitySpec(ConfigModel):
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


class SimulatedOptions(ConfigModel):
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


class SilaErrorSpec(ConfigModel):
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
        check_word(feature)
        check_word(command)
    except ValueError:
        raise ValueError(f"command {value!r} must be 'Feature/Command' (SiLA identifiers), "
                         f"e.g. 'PlateReader/ReadPlate'") from None
    return value


class SilaCommandSpec(ConfigModel):
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


class SilaOptions(ConfigModel):
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
    simulate: bool = False
    """Demo: the console serves this instrument itself with labconsole's simulated SiLA 2 server
    (``labconsole sila-sim`` in a child process, on this machine only)."""

    @field_validator("simulate")
    @classmethod
    def _simulate_only_on_loopback(cls, value: bool, info: ValidationInfo) -> bool:
        host = info.data.get("host")
        if value and host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"simulate is allowed only for a server on this machine (127.0.0.1), "
                             f"not {host!r}")
        return value

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


class AgentOptions(ConfigModel):
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


class ErrorSpec(ConfigModel):
    """How labconsole treats one instrument error (shorthand: the ``retryable`` flag)."""

    retryable: bool = False
    """Whether the same order may succeed when run again (feeds the retry policy)."""

    @model_validator(mode="before")
    @classmethod
    def _flag_shorthand(cls, data: Any) -> Any:
        return {"retryable": data} if isinstance(data, bool) else data


PlrOperation = Literal["aspirate", "dispense", "transfer", "read_absorbance",
                       "read_fluorescence", "read_luminescence"]
"""What a PyLabRobot capability does (see :mod:`core.drivers.pylabrobot`)."""


class PlrCommandSpec(ConfigModel):
    """Which PyLabRobot operation runs one capability, and how its names map."""

    operation: PlrOperation
    parameters: dict[str, str] = Field(default_factory=dict)
    """Order parameter name -> the operation's argument (``plate``, ``wells``, ``volume`` ...).
    Unmapped parameters match by name (ignoring case, ``_`` and spaces)."""
    errors: dict[str, ErrorSpec] = Field(default_factory=dict)
    """PyLabRobot exception class name (``TooLittleLiquidError``) -> how to treat it
    (unlisted: not retryable)."""


class PyLabRobotOptions(ConfigModel):
    """``options`` of a ``driver: pylabrobot`` instrument (a PyLabRobot machine)."""

    machine: Literal["liquid_handler", "plate_reader"] = "liquid_handler"
    backend: str = "chatterbox"
    """``chatterbox`` (PyLabRobot's device-free backend) or ``module:Class`` of a PyLabRobot
    backend (``pylabrobot.liquid_handling.backends.hamilton.STAR_backend:STARBackend``)."""
    backend_options: dict[str, Any] = Field(default_factory=dict)
    """Keyword arguments of the backend's constructor."""
    deck: str | None = None
    """Deck layout: a PyLabRobot deck JSON file (``deck.save(...)``), relative to the workcell
    file. Required for a liquid handler."""
    state: str | None = None
    """Optional PyLabRobot state JSON file (``deck.save_state_to_file(...)``): tips and liquids
    at start. Without it every tip rack starts full and every well empty."""
    volume_tracking: bool = True
    """Track liquid volumes (an aspirate beyond what a well holds then fails)."""
    plate: str | None = None
    """Plate reader: the PyLabRobot plate definition it reads (``Cor_96_wellplate_360ul_Fb``)."""
    commands: dict[CapabilityName, PlrCommandSpec] = Field(default_factory=dict)
    """Capability -> operation. A capability left out runs the operation named like its
    command (``LiquidHandler.Aspirate`` -> ``aspirate``, ``PlateReader.ReadAbsorbance`` ->
    ``read_absorbance``)."""

    @field_validator("backend")
    @classmethod
    def _backend_path(cls, value: str) -> str:
        if value != "chatterbox":
            module, colon, name = value.partition(":")
            if not colon or not module or not name.isidentifier():
                raise ValueError(f"backend must be 'chatterbox' or 'module:Class', got {value!r}")
        return value

    @model_validator(mode="after")
    def _machine_needs(self) -> PyLabRobotOptions:
        if self.machine == "liquid_handler" and not self.deck:
            raise ValueError("a liquid handler needs deck (a PyLabRobot deck JSON file)")
        if self.machine == "plate_reader" and not self.plate:
            raise ValueError("a plate reader needs plate (a PyLabRobot plate definition, "
                             "e.g. Cor_96_wellplate_360ul_Fb)")
        return self


def _check_madsci_url(value: str) -> str:
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"url {value!r}: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or port is None:
        raise ValueError(f"url must be http://HOST:PORT or https://HOST:PORT, got {value!r}")
    return value.rstrip("/")


class MadsciActionSpec(ConfigModel):
    """Which MADSci node action runs one capability, and how its names map."""

    action: Annotated[str, AfterValidator(check_word)]
    """The node's action name (``transfer``)."""
    parameters: dict[str, str] = Field(default_factory=dict)
    """Order parameter name -> action argument. Unmapped parameters match by name (ignoring
    case, ``_`` and spaces)."""
    results: dict[str, str] = Field(default_factory=dict)
    """Key of the action's JSON result -> output parameter name. Unmapped keys keep their name."""
    errors: dict[str, ErrorSpec] = Field(default_factory=dict)
    """MADSci ``error_type`` -> how to treat it (unlisted: not retryable)."""


class MadsciOptions(ConfigModel):
    """``options`` of a ``driver: madsci`` instrument (a MADSci REST node)."""

    insecure: bool = False
    """Plain http to a node on another machine (MADSci nodes have no authentication)."""
    url: Annotated[str, AfterValidator(_check_madsci_url)]
    """The node's REST address, ``http://HOST:PORT``."""
    request_timeout: PositiveDuration = 5.0
    """Deadline of one HTTP round trip (never of a whole action)."""
    poll_interval: PositiveDuration = 1.0
    """Seconds between two looks at a running action's status. MADSci nodes limit each client
    on another machine to 100 requests a minute by default: polling faster than about once a
    second runs into that limit (the driver then waits as the node's 429 answer asks, so a
    finished action is seen late)."""
    actions: dict[CapabilityName, MadsciActionSpec] = Field(default_factory=dict)
    """Capability -> node action. A capability left out runs the action named like its command
    in snake case (``LiquidHandler.Transfer`` -> ``transfer``)."""

    @field_validator("url")
    @classmethod
    def _plain_http_on_loopback(cls, value: str, info: ValidationInfo) -> str:
        from urllib.parse import urlsplit

        parts = urlsplit(value)
        if (parts.scheme == "http" and parts.hostname not in ("127.0.0.1", "localhost", "::1")
                and not info.data.get("insecure")):
            raise ValueError(f"plain http to {parts.hostname!r} crosses the network unencrypted "
                             f"and unauthenticated: use https, or set insecure: true")
        return value


DRIVER_OPTIONS: dict[str, type[BaseModel]] = {"simulated": SimulatedOptions, "sila": SilaOptions,
                                        "agent": AgentOptions, "pylabrobot": PyLabRobotOptions,
                                        "madsci": MadsciOptions}


# --------------------------------------------------------------------------- instruments


class InstrumentConfig(ConfigModel):
    """One instrument of the workcell (a Data Services *module*)."""

    id: InstrumentId
    """Unique id; what orders' ``assignedTo`` and ``restrictToModuleIds`` name."""
    name: str = ""
    """Display name; the id if empty."""
    kind: Annotated[str, AfterValidator(check_word)]
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
