"""The remote robot agent protocol: versioned JSON messages over one WebSocket.

A robot agent (``labconsole agent``) connects to the console's agent hub and they exchange text
frames, each one JSON object::

    {"v": 1, "type": "job_assign", "id": "5f0c...", "timestamp": "2026-01-01T00:00:00Z",
     "reply_to": null, "payload": {...}}

``v`` is the protocol version (:data:`PROTOCOL_VERSION`); a frame of another version is answered
with an ``error`` frame (code ``unsupported_version``) and, before registration, the connection is
closed. ``type`` names the message (the robot protocol's names); ``payload`` is checked against
the model of that type (:data:`PAYLOADS`). ``reply_to`` carries the ``id`` of the frame answered.

Agent -> console: ``register`` (first frame), ``heartbeat``, ``job_accept``, ``job_reject``,
``job_progress``, ``job_complete``, ``job_failed``, and ``job_cancel`` answering a cancel.
Console -> agent: ``robot_registered``, ``heartbeat`` (also answering the agent's), ``job_assign``,
``job_cancel``, ``error``.

:func:`decode` never raises anything but :class:`ProtocolError`, whatever the bytes: bad JSON,
wrong types, lone surrogates, nesting deeper than :data:`MAX_DEPTH`, unknown types.
"""

from __future__ import annotations

import json
import math
import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

__all__ = [
    "MAX_DEPTH",
    "MAX_FRAME_BYTES",
    "PAYLOADS",
    "PROTOCOL_VERSION",
    "Envelope",
    "ErrorPayload",
    "Heartbeat",
    "JobAccept",
    "JobAssign",
    "JobCancel",
    "JobComplete",
    "JobFailed",
    "JobProgress",
    "JobReject",
    "ProtocolError",
    "Register",
    "RobotRegistered",
    "decode",
    "encode",
]

PROTOCOL_VERSION = 1
"""The protocol version this build speaks."""
MAX_FRAME_BYTES = 1 << 20
"""Largest frame accepted (1 MiB); the WebSocket layer closes the connection on bigger ones."""
MAX_DEPTH = 32
"""Deepest nesting of objects and lists accepted in a frame."""


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


JobId = str
Name = str


class RunningJob(_Payload):
    """A job an agent is running, as it reports it on ``register`` and ``heartbeat``."""

    job_id: JobId = Field(min_length=1, max_length=200)
    capability: str = ""
    progress: float | None = None


class Register(_Payload):
    """Agent -> console, the first frame: who it is and what it can do.

    ``running`` lists the jobs still running on the agent (after a reconnect), ``finished`` the
    jobs that ended while it was disconnected (their results follow as ``job_complete`` /
    ``job_failed`` frames right after ``robot_registered``).
    """

    name: Name = Field(min_length=1, max_length=200)
    capabilities: list[str] = Field(max_length=1000)
    token: str | None = Field(None, max_length=4096)
    agent_version: str = Field("", max_length=100)
    hostname: str = Field("", max_length=255)
    pid: int | None = None
    running: list[RunningJob] = Field(default_factory=list, max_length=10_000)
    finished: list[JobId] = Field(default_factory=list, max_length=10_000)


class RobotRegistered(_Payload):
    """Console -> agent: registration accepted.

    ``cancel`` lists jobs the agent reported that the console no longer waits for (the agent
    stops them); ``heartbeat_interval`` is how often the agent should send a heartbeat.
    """

    name: Name
    heartbeat_interval: float
    cancel: list[JobId] = Field(default_factory=list)


class Heartbeat(_Payload):
    """Either way. A heartbeat without ``reply_to`` is answered with one that has it."""

    running: list[JobId] = Field(default_factory=list, max_length=10_000)


class JobAssign(_Payload):
    """Console -> agent: run one command.

    ``simulation`` is the workcell's description of the command (duration, jitter, progress
    steps, outputs); an agent without a handler of its own simulates the command with it.
    """

    job_id: JobId = Field(min_length=1, max_length=200)
    capability: str
    inputs: dict[str, Any] = Field(default_factory=dict)
    order: dict[str, Any] = Field(default_factory=dict)
    simulation: dict[str, Any] | None = None


class JobAccept(_Payload):
    """Agent -> console: the job started."""

    job_id: JobId


class JobReject(_Payload):
    """Agent -> console: the job was not started (nothing ran)."""

    job_id: JobId
    code: str = Field("Rejected", max_length=200)
    message: str = Field("", max_length=10_000)
    retryable: bool = False


class JobProgress(_Payload):
    """Agent -> console: progress 0..1 (None if unknown) and intermediate values."""

    job_id: JobId
    progress: float | None = None
    values: dict[str, Any] | None = None

    @field_validator("progress")
    @classmethod
    def _fraction(cls, value: float | None) -> float | None:
        if value is not None and not (0.0 <= value <= 1.0):
            raise ValueError(f"progress must be between 0 and 1, got {value!r}")
        return value


class JobComplete(_Payload):
    """Agent -> console: the job ended well; ``outputs`` are its output parameters."""

    job_id: JobId
    outputs: dict[str, Any] = Field(default_factory=dict)
    duration: float | None = None


class JobFailed(_Payload):
    """Agent -> console: the job ended with an error. ``code`` ``OrderCancelled`` after a cancel."""

    job_id: JobId
    code: str = Field("DriverError", max_length=200)
    message: str = Field("", max_length=10_000)
    retryable: bool = False


class JobCancel(_Payload):
    """Console -> agent: stop a job. Agent -> console (``reply_to`` set): whether it will."""

    job_id: JobId
    accepted: bool | None = None


class ErrorPayload(_Payload):
    """Either way: what was wrong with a frame (``reply_to`` names it when it could be read)."""

    code: str
    message: str


PAYLOADS: dict[str, type[_Payload]] = {
    "register": Register,
    "robot_registered": RobotRegistered,
    "heartbeat": Heartbeat,
    "job_assign": JobAssign,
    "job_accept": JobAccept,
    "job_reject": JobReject,
    "job_progress": JobProgress,
    "job_complete": JobComplete,
    "job_failed": JobFailed,
    "job_cancel": JobCancel,
    "error": ErrorPayload,
}
"""Message type -> payload model."""

MessageType = Literal["register", "robot_registered", "heartbeat", "job_assign", "job_accept",
                      "job_reject", "job_progress", "job_complete", "job_failed", "job_cancel",
                      "error"]


class Envelope(BaseModel):
    """One frame: version, type, id, time, the frame it answers, and the checked payload."""

    model_config = ConfigDict(extra="forbid", strict=True)

    v: int
    type: MessageType
    id: str = Field(min_length=1, max_length=100)
    timestamp: str = Field("", max_length=64)
    reply_to: str | None = Field(None, max_length=100)
    payload: dict[str, Any] = Field(default_factory=dict)


class ProtocolError(Exception):
    """A frame that cannot be used: ``code`` says why, ``message`` says where, for a person.

    ``reply_to`` is the frame's id when it could be read.
    """

    def __init__(self, code: str, message: str, reply_to: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reply_to = reply_to


def _too_deep(value: Any) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            items: Any = item.values()
        elif isinstance(item, list):
            items = item
        else:
            continue
        if depth > MAX_DEPTH:
            return True
        stack.extend((child, depth + 1) for child in items if isinstance(child, dict | list))
    return False


def _has_surrogate(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _field_errors(exc: ValidationError, prefix: str) -> str:
    parts = []
    for err in exc.errors(include_url=False)[:5]:
        loc = ".".join(str(p) for p in (prefix, *err["loc"]) if p != "")
        parts.append(f"{loc}: {err['msg']}")
    more = len(exc.errors()) - 5
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def decode(frame: str | bytes) -> tuple[Envelope, BaseModel]:
    """Parse and check one frame; return its envelope and its payload model.

    Raises:
        ProtocolError: ``bad_json``, ``bad_message`` (a field is missing or of the wrong type;
            the message names it), ``unsupported_version`` or ``unknown_type``.
    """
    if isinstance(frame, bytes):
        try:
            frame = frame.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError("bad_json", f"frame is not UTF-8 text (byte {exc.start})") from None
    try:
        data = json.loads(frame, parse_constant=_reject_constant)
    except RecursionError:
        raise ProtocolError("bad_message", f"frame is nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:  # JSONDecodeError is a ValueError
        where = f" (line {exc.lineno}, column {exc.colno})" if isinstance(exc, json.JSONDecodeError) else ""
        msg = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        raise ProtocolError("bad_json", f"frame is not JSON: {msg}{where}") from None
    if not isinstance(data, dict):
        raise ProtocolError("bad_message", f"frame must be a JSON object, got {type(data).__name__}")
    reply_to = data.get("id") if isinstance(data.get("id"), str) and len(data["id"]) <= 100 else None
    if _too_deep(data):
        raise ProtocolError("bad_message", f"frame is nested deeper than {MAX_DEPTH} levels", reply_to)
    if "\\u" in frame and _has_surrogate(data):
        raise ProtocolError("bad_message", "frame contains a lone UTF-16 surrogate (\\ud800-\\udfff) "
                            "in a string", reply_to if reply_to and not _has_surrogate(reply_to) else None)
    version = data.get("v")
    if version != PROTOCOL_VERSION or isinstance(version, bool):
        got = "no version ('v' is missing)" if version is None else f"version {version!r}"
        raise ProtocolError("unsupported_version",
                            f"agent protocol version {PROTOCOL_VERSION} is spoken here; the frame "
                            f"has {got}. Run an agent of the same labconsole release.", reply_to)
    kind = data.get("type")
    if isinstance(kind, str) and kind not in PAYLOADS:
        raise ProtocolError("unknown_type", f"unknown message type {kind[:100]!r} (known: "
                            f"{', '.join(PAYLOADS)})", reply_to)
    try:
        envelope = Envelope.model_validate(data)
    except ValidationError as exc:
        raise ProtocolError("bad_message", _field_errors(exc, ""), reply_to) from None
    try:
        payload = PAYLOADS[envelope.type].model_validate(envelope.payload)
    except ValidationError as exc:
        raise ProtocolError("bad_message", f"{envelope.type}: " + _field_errors(exc, "payload"),
                            reply_to) from None
    return envelope, payload


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def encode(kind: str, payload: BaseModel | dict[str, Any] | None = None, *,
           reply_to: str | None = None, msg_id: str | None = None) -> tuple[str, str]:
    """One frame of type ``kind``; returns ``(frame text, frame id)``.

    Non-finite floats (NaN, infinity) become null, so every frame is standard JSON.
    """
    body = payload.model_dump(mode="json") if isinstance(payload, BaseModel) else payload or {}
    msg_id = msg_id or uuid.uuid4().hex
    frame = {"v": PROTOCOL_VERSION, "type": kind, "id": msg_id,
             "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
             "reply_to": reply_to, "payload": body}
    try:
        text = json.dumps(frame, allow_nan=False)
    except ValueError:
        text = json.dumps(_finite(frame))
    return text, msg_id
