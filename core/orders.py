"""The order model, wire-compatible with Biosero Data Services.

Python names are the seed's camelCase names (``templateName``, ``parentIdentifier`` ...), the same
as on the wire, so code written for ``biosero.datamodels.ordering.Order`` runs with only an import
change::

    order = Order(templateName="Cell Prep", scheduledStartTime=datetime.now(),
                  inputParameters=[{"name": "Plate Count", "value": "4"}],
                  parentIdentifier=workflow_id)

Reading is tolerant (camelCase or PascalCase keys, enum names or integers, naive or offset dates,
``0001-01-01`` as unset); writing (:meth:`Order.to_wire`) is what the server writes: camelCase,
every key present, enums by name, dates with ``+00:00``, TimeSpans as ``hh:mm:ss``.
"""

from __future__ import annotations

import difflib
import json
from datetime import datetime, timedelta
from typing import Annotated, Any, ClassVar, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    field_validator,
    model_validator,
)

from core.errors import ModelError, Problem, Where
from core.wire import (
    WireEnum,
    camel_keys,
    format_datetime,
    format_timespan,
    parse_datetime,
    parse_timespan,
)

# --------------------------------------------------------------------------- enums


class OrderStatus(WireEnum):
    """Order status. Values are the server integers; ``bdm_int`` gives the seed's 1..11."""

    Created = 0
    Invalid = 1
    Validated = 2
    Scheduled = 3
    Running = 4
    Paused = 5
    Error = 6
    Complete = 7
    Canceled = 8
    Consolidated = 9
    Unknown = 10

    @classmethod
    def _bdm_offset(cls) -> int:
        return 1

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({OrderStatus.Invalid, OrderStatus.Complete,
                               OrderStatus.Canceled, OrderStatus.Consolidated})
"""Statuses an order never leaves by itself. ``Error`` is not terminal: an operator may retry."""


class SchedulingStrategy(WireEnum):
    ImmediateExecution = 0
    FirstAvailableSlot = 1

    @classmethod
    def _bdm_offset(cls) -> int:
        return 1


class OrderPriority(WireEnum):
    """Biosero priority. Elevated is served before Standard."""

    Elevated = -1
    Standard = 0
    Unknown = 1


class ModuleRestrictionStrategy(WireEnum):
    NoRestriction = 0
    UnlessBusy = 1
    UnlessError = 2
    UnlessOffline = 3
    FullRestriction = 4

    @classmethod
    def _bdm_offset(cls) -> int:
        return 1


class ModuleStatus(WireEnum):
    """Instrument (module) status vocabulary of Data Services."""

    Ready = 0
    Busy = 1
    Error = 2
    Offline = 3


class ParameterValueType(WireEnum):
    """Parameter value type. Members in the seed's upper case; wire names are the server's."""

    STRING = 0
    BOOLEAN = 1
    DOUBLE = 2
    INTEGER = 3
    OTHER = 4
    FLOAT = 2  # the seed's name for Double (an alias of DOUBLE)

    @property
    def wire(self) -> str:
        return _VALUE_TYPE_WIRE[self]

    @classmethod
    def parse(cls, value: Any, *, field: str = "") -> ParameterValueType:
        if isinstance(value, str) and value.strip().lower() in ("unknown", "float", "double"):
            return cls.OTHER if value.strip().lower() == "unknown" else cls.DOUBLE
        return super().parse(value, field=field)  # type: ignore[return-value]


_VALUE_TYPE_WIRE = {ParameterValueType.STRING: "String", ParameterValueType.BOOLEAN: "Boolean",
                    ParameterValueType.DOUBLE: "Double", ParameterValueType.INTEGER: "Integer",
                    ParameterValueType.OTHER: "Other"}


def enum_field(cls: type[WireEnum]) -> Any:
    return Annotated[cls, BeforeValidator(lambda v: cls.parse(v)),
                     PlainSerializer(lambda e: e.wire, return_type=str)]


WireDate = Annotated[datetime | None, BeforeValidator(parse_datetime),
                     PlainSerializer(format_datetime, return_type=str)]
WireTimeSpan = Annotated[timedelta | None, BeforeValidator(parse_timespan),
                         PlainSerializer(format_timespan, return_type=str)]


def _lenient(model: type[BaseModel]) -> dict[str, str]:
    return {name.lower(): name for name in model.model_fields}


class WireModel(BaseModel):
    """Base of wire models: case-insensitive keys in, camelCase with every key out.

    Two ways in, two policies: the constructor is strict, like the seed's dataclass, so a typo
    (``Order(parentIdentifer=...)``) raises ``TypeError`` instead of being dropped; reading a
    payload (:meth:`from_dict`, ``model_validate``, ``model_validate_json``) is tolerant and
    ignores keys it does not know, as a server's newer fields must not break a client.
    """

    model_config = ConfigDict(validate_assignment=True, extra="ignore",
                              populate_by_name=True, use_enum_values=False)
    _known: ClassVar[dict[str, str]]

    def __init__(self, /, **data: Any) -> None:
        unknown = [k for k in data if not isinstance(k, str) or k.lower() not in self._known]
        if unknown:
            key = unknown[0]
            hint = difflib.get_close_matches(str(key), list(self._known.values()), n=1)
            raise TypeError(f"{type(self).__name__}.__init__() got an unexpected keyword argument "
                            f"{key!r}" + (f" (did you mean {hint[0]!r}?)" if hint else ""))
        super().__init__(**data)

    # Validation (model_validate and nested models) builds instances without this __init__, as
    # for BaseModel's own; only a call of the class checks its keywords. (RootModel does the same.)
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        cls._known = _lenient(cls)

    @model_validator(mode="before")
    @classmethod
    def _bind_case_insensitively(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return camel_keys(data, cls._known)
        return data

    def to_wire(self) -> dict[str, Any]:
        """The JSON-ready dict Data Services would send: every key, camelCase, enums by name."""
        return self.model_dump(mode="json")

    def to_json(self) -> str:
        return json.dumps(self.to_wire(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str | None = None) -> Self:
        """Build from a dict with camelCase or PascalCase keys; errors name the field."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ModelError(f"invalid {cls.__name__}",
                             [Problem(Where(source, ".".join(str(p) for p in e["loc"]) or None),
                                      e["msg"]) for e in exc.errors()]) from None


# --------------------------------------------------------------------------- parameters


def _to_wire_string(value: Any) -> Any:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


_UNSET: Any = object()


class Parameter(WireModel):
    """One named value. ``value`` is always a string on the wire."""

    name: str
    value: str | None = ""
    valueType: enum_field(ParameterValueType) = ParameterValueType.STRING  # type: ignore[valid-type]
    unit: str | None = None
    defaultValue: str | None = None
    valueOptions: list[str] = Field(default_factory=list)
    validationRules: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    identity: Any = None
    description: str | None = None

    def __init__(self, name: str | None = None, value: Any = _UNSET, valueType: Any = _UNSET,
                 **data: Any) -> None:
        for key, given in (("name", name), ("value", value), ("valueType", valueType)):
            if given is not _UNSET and given is not None or (key == "value" and given is None):
                data[key] = given
        super().__init__(**data)

    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    @field_validator("value", "defaultValue", mode="before")
    @classmethod
    def _stringify(cls, v: Any) -> Any:
        return _to_wire_string(v)

    @field_validator("valueOptions", "validationRules", "tags", mode="before")
    @classmethod
    def _none_is_empty(cls, v: Any) -> Any:
        if v is None:
            return []
        if isinstance(v, list):
            return [x if isinstance(x, str) else json.dumps(x) for x in v]
        return v

    @property
    def typed_value(self) -> Any:
        """The value as a Python object of its ``valueType`` (str if it does not parse)."""
        raw = self.value
        if raw is None:
            return None
        try:
            if self.valueType is ParameterValueType.BOOLEAN:
                low = raw.strip().lower()
                if low in ("true", "1", "yes"):
                    return True
                if low in ("false", "0", "no", ""):
                    return False
                return raw
            if self.valueType is ParameterValueType.INTEGER:
                return int(raw)
            if self.valueType is ParameterValueType.DOUBLE:
                return float(raw)
        except ValueError:
            return raw
        return raw


class ParameterCollection(list[Parameter]):
    """A list of :class:`Parameter` (the seed's ``ParameterCollection(parameters)``)."""

    def __init__(self, parameters: list[Parameter | dict[str, Any]] | None = None) -> None:
        super().__init__(p if isinstance(p, Parameter) else Parameter.model_validate(p)
                         for p in (parameters or []))

    def get(self, name: str) -> Parameter | None:
        for p in self:
            if p.name == name:
                return p
        return None

    def to_wire(self) -> list[dict[str, Any]]:
        return [p.to_wire() for p in self]


def _parameters(v: Any) -> Any:
    if v is None:
        return []
    if isinstance(v, dict):  # {"Result": "done", "Ok": "True"} (BDM SetOutputParameters)
        return [{"name": k, "value": val} for k, val in v.items()]
    if isinstance(v, (list, tuple)):
        return list(v)
    # a ValueError is reported with the field's name (a TypeError would escape validation)
    raise ValueError(f"a list of parameters or an object of name: value, not {type(v).__name__}")


ParameterList = Annotated[list[Parameter], BeforeValidator(_parameters)]


# --------------------------------------------------------------------------- order


class Order(WireModel):
    """An order: one task for a module, or a workflow run (a parent order).

    Every field of the seed's ``Order`` dataclass, plus ``templateVersion`` and
    ``templateLastModifiedDateUtc`` which biosero-data-models also carries.
    """

    # core identification
    identifier: str | None = None
    parentIdentifier: str | None = None
    sourceIdentifier: str | None = None
    templateName: str | None = None
    # scheduling and execution
    scheduledStartTime: WireDate = None
    actualStartTime: WireDate = None
    actualEndTime: WireDate = None
    estimatedDuration: WireTimeSpan = None
    schedulingStrategy: enum_field(SchedulingStrategy) = SchedulingStrategy.ImmediateExecution  # type: ignore[valid-type]
    runAfterIdentifier: str | None = None
    # status and state
    status: enum_field(OrderStatus) = OrderStatus.Created  # type: ignore[valid-type]
    statusDetails: str | None = None
    state: str | None = None
    validationErrors: list[str] = Field(default_factory=list)
    # module assignment
    assignedTo: str | None = None
    restrictToModuleIds: str | None = None
    moduleRestrictionStrategy: enum_field(ModuleRestrictionStrategy) = ModuleRestrictionStrategy.NoRestriction  # type: ignore[valid-type]
    # parameters and data
    inputParameters: ParameterList = Field(default_factory=list)
    outputParameters: ParameterList = Field(default_factory=list)
    log: str | None = None
    # metadata
    creationTime: WireDate = None
    createdBy: str | None = None
    notes: str | None = None
    priority: enum_field(OrderPriority) = OrderPriority.Standard  # type: ignore[valid-type]
    templateVersion: str | None = None
    templateLastModifiedDateUtc: WireDate = None

    @field_validator("validationErrors", mode="before")
    @classmethod
    def _none_list(cls, v: Any) -> Any:
        return [] if v is None else v

    def to_wire(self) -> dict[str, Any]:
        data = super().to_wire()
        # BDM's fields that the server does not send are written as null, never as a fake date.
        if self.templateLastModifiedDateUtc is None:
            data["templateLastModifiedDateUtc"] = None
        return data

    # -- the seed's accessors

    def get_input_parameter_value(self, key: str) -> Any | None:
        """Value of the input parameter ``key`` (typed by its valueType), or None."""
        return _lookup(self.inputParameters, key)

    def get_output_parameter_value(self, key: str) -> Any | None:
        """Value of the output parameter ``key`` (typed by its valueType), or None."""
        return _lookup(self.outputParameters, key)

    @property
    def restricted_modules(self) -> list[str]:
        """``restrictToModuleIds`` split on commas, blanks dropped."""
        return [m.strip() for m in (self.restrictToModuleIds or "").split(",") if m.strip()]


def _lookup(params: list[Parameter], key: str) -> Any | None:
    for p in params:
        if p.name == key:
            return p.typed_value
    return None


__all__ = [
    "ModuleRestrictionStrategy",
    "ModuleStatus",
    "Order",
    "OrderPriority",
    "OrderStatus",
    "Parameter",
    "ParameterCollection",
    "ParameterValueType",
    "SchedulingStrategy",
    "TERMINAL_STATUSES",
]
