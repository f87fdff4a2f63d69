"""Wire models of Data Services besides :class:`core.orders.Order`: order templates and events.

Like ``Order`` they bind request keys case-insensitively and write camelCase JSON with every key
present (specs/data-services.md §2.2, §2.4). Event bodies have exactly the 23 keys of
biosero-data-models' ``EventMessage``: it builds its dataclass with ``EventMessage(**item)``, so an
extra key would break it.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, PlainSerializer, field_validator

from core.orders import (
    ParameterList,
    SchedulingStrategy,
    WireDate,
    WireModel,
    WireTimeSpan,
    enum_field,
)
from core.wire import format_datetime, parse_datetime

EVENT_TOPIC_PREFIX = "Biosero.DataModels.Events."
ORDER_CREATED_TOPIC = EVENT_TOPIC_PREFIX + "OrderCreatedEvent"
ORDER_STATUS_CHANGED_TOPIC = EVENT_TOPIC_PREFIX + "OrderStatusChangedEvent"
MODULE_STATUS_TOPIC = EVENT_TOPIC_PREFIX + "ModuleStatusUpdateEvent"

NullableWireDate = Annotated[
    datetime | None, BeforeValidator(parse_datetime),
    PlainSerializer(lambda v: format_datetime(v) if v is not None else None, return_type=str | None)]
"""A date written as null when unset (``expirationDateUtc``), not as ``0001-01-01``."""


class OrderTemplate(WireModel):
    """What a module can do: the template an order names in ``templateName``.

    ``workflow`` is an opaque string (a serialised workflow document); it is stored and returned
    byte for byte. Names are unique, compared case-insensitively.
    """

    name: str
    category: str | None = None
    description: str | None = None
    requiredCapabilities: str | None = None
    availableModuleIds: str | None = None
    icon: str | None = None
    color: str | None = None
    inputParameters: ParameterList = Field(default_factory=list)
    outputParameters: ParameterList = Field(default_factory=list)
    validationScript: str | None = None
    validationScriptLanguage: str | None = "C#"
    defaultEstimatedDuration: WireTimeSpan = timedelta(0)
    durationEstimationScript: str | None = None
    durationEstimationScriptLanguage: str | None = "C#"
    schedulingStrategy: enum_field(SchedulingStrategy) = SchedulingStrategy.ImmediateExecution  # type: ignore[valid-type]
    workflow: str | None = None
    isHidden: bool = False

    @field_validator("isHidden", mode="before")
    @classmethod
    def _none_is_false(cls, v: Any) -> Any:
        return False if v is None else v

    @field_validator("workflow", mode="before")
    @classmethod
    def _workflow_as_text(cls, v: Any) -> Any:
        return json.dumps(v) if isinstance(v, dict | list) else v


class EventMessage(WireModel):
    """One event of the Data Services event log (EventContext plus ``data``).

    ``data`` is the payload JSON-encoded into a string and is kept verbatim. ``start``/``end``
    default to the time the server received the event; ``createdDateUtc`` is always set by the
    server.
    """

    eventId: str | None = None
    topic: str | None = None
    start: WireDate = None
    end: WireDate = None
    organizationId: str | None = None
    groupId: str | None = None
    ownerId: str | None = None
    accessPolicy: str | None = None
    sharingPolicy: str | None = None
    retentionPolicy: str | None = None
    associationId: str | None = None
    activityId: str | None = None
    actorId: str | None = None
    subjects: list[str] | None = None
    tags: list[str] | None = None
    orchestratorId: str | None = None
    operatorId: str | None = None
    moduleId: str | None = None
    sourceTraceIds: list[str] | None = None
    encryptionProvider: str | None = None
    createdDateUtc: WireDate = None
    expirationDateUtc: NullableWireDate = None
    data: str | None = None

    @field_validator("data", mode="before")
    @classmethod
    def _data_as_text(cls, v: Any) -> Any:
        if v is None or isinstance(v, str):
            return v
        return json.dumps(v, separators=(",", ":"))

    def data_json(self) -> Any:
        """``data`` decoded from JSON (None if empty or not JSON)."""
        if not self.data:
            return None
        try:
            return json.loads(self.data)
        except ValueError:
            return None


MAX_JSON_DEPTH = 64
"""Deepest nesting of objects and arrays a request body may have (real bodies use 3 or 4)."""


def lone_surrogate(text: str) -> int | None:
    """Index of the first lone UTF-16 surrogate in ``text`` (not valid Unicode), or None.

    JSON allows escapes such as ``"\\ud800"`` that decode to one; such text cannot be written
    as UTF-8, so SQLite and every later reader of the order would fail on it.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return None


def _key_text(key: object) -> str:
    return str(key).encode("utf-8", "backslashreplace").decode("utf-8")


def json_text_problem(value: Any, *, max_depth: int = MAX_JSON_DEPTH) -> tuple[str, str] | None:
    """The first thing in decoded JSON that labconsole refuses to store, as ``(field, message)``.

    ``field`` is the path of the value (``notes``, ``inputParameters[0].value``; ``body`` for
    the whole document). Refused: text (values or keys) with a lone surrogate, and objects or
    arrays nested more than ``max_depth`` levels. Iterative, so no input can exhaust the stack.
    """
    stack: list[tuple[Any, str, int]] = [(value, "", 0)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, str):
            at = lone_surrogate(item)
            if at is not None:
                return path or "body", (f"contains a lone surrogate (U+{ord(item[at]):04X}) at "
                                        f"character {at}; text must be valid Unicode")
        elif isinstance(item, dict | list):
            if depth >= max_depth:
                return path or "body", f"is nested more than {max_depth} levels deep"
            if isinstance(item, dict):
                children = []
                for key, child in item.items():
                    name = f"{path}.{_key_text(key)}" if path else _key_text(key)
                    if isinstance(key, str) and lone_surrogate(key) is not None:
                        return name, "this key contains a lone surrogate; text must be valid Unicode"
                    children.append((child, name, depth + 1))
            else:
                children = [(child, f"{path}[{i}]" if path else f"[{i}]", depth + 1)
                            for i, child in enumerate(item)]
            stack.extend(reversed(children))
    return None


EVENT_KEYS: tuple[str, ...] = tuple(EventMessage.model_fields)
TEMPLATE_KEYS: tuple[str, ...] = tuple(OrderTemplate.model_fields)

__all__ = [
    "EVENT_KEYS",
    "EVENT_TOPIC_PREFIX",
    "EventMessage",
    "MAX_JSON_DEPTH",
    "MODULE_STATUS_TOPIC",
    "ORDER_CREATED_TOPIC",
    "ORDER_STATUS_CHANGED_TOPIC",
    "OrderTemplate",
    "TEMPLATE_KEYS",
    "json_text_problem",
    "lone_surrogate",
]
