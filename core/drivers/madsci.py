"""MADSci nodes: one :class:`MadsciDriver` per node of Argonne's MADSci framework.

A MADSci node (``madsci-node-module``) serves an instrument's actions over a REST API. The
driver speaks that API with ``httpx`` (no MADSci package is needed in the console: the node
framework pins versions of pydantic and FastAPI the console does not share). The workcell maps
each capability to a node action::

    - id: LiquidHandler2
      kind: LiquidHandler
      driver: madsci
      options:
        url: http://127.0.0.1:2000           # the node's node_url
        actions:
          LiquidHandler.Transfer:
            action: transfer                  # the node's action name
            parameters: {from: source}        # order parameter -> action argument
            results: {count: TransferCount}   # JSON result key -> output parameter
            errors: {TipClogged: true}        # MADSci error_type -> retryable
      capabilities:
        LiquidHandler.Transfer: 20s

The protocol, per order: ``POST /action/{name}`` with the arguments (typed as the node's
``/info`` declares them) creates the action, ``POST /action/{name}/{id}/start`` starts it, then
``GET /action/{id}/status`` is polled every ``poll_interval`` until the status is terminal and
``GET /action/{id}/result`` returns the JSON result, files and datapoints. Outputs are the JSON
result's keys (renamed by ``results``; a result that is not an object is ``Result``), plus
``Files`` (the result's file keys) and ``Datapoints`` (their ids) when the action made some.
MADSci actions report no fraction of progress: each status change is reported to the progress
sink as ``{"ActionStatus": "running"}`` and so on.

:meth:`MadsciDriver.connect` reads ``/info`` and refuses a mapping that does not fit the node
(unknown action or argument), naming the file and line. A failed action becomes
:class:`DriverError` with the MADSci ``error_type`` as ``code`` and ``retryable`` as ``errors``
says; a node that is not ready (busy, paused, locked, errored) refuses the action retryably
(``NodeNotReady``); FastAPI's 422 answer names the argument. The node's status maps to the
driver state: ``errored``/``stopped`` -> ERROR, ``paused``/``locked`` -> NEEDS_OPERATOR,
running actions -> BUSY. :meth:`MadsciDriver.cancel` sends the ``cancel`` admin command when the
node offers it (MADSci's cancel is node-wide: it stops whatever the node runs); otherwise the
order is abandoned as :class:`OutcomeUnknown`. :meth:`MadsciDriver.pause` and
:meth:`MadsciDriver.resume` send the admin commands of the same names. A node that stops
answering while an action runs, or forgets the action (it restarted: its action history is in
memory), ends the order as :class:`OutcomeUnknown`; the driver goes Offline and the dispatcher
reconnects it. Each HTTP round trip has a deadline (``request_timeout``); a whole action has
none. A 429 answer (MADSci's rate limiter) slows the polling down instead of failing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from core.clock import Clock, to_datetime
from core.drivers.base import (
    DriverError,
    DriverInfo,
    DriverState,
    DriverStatus,
    InstrumentUnavailable,
    OrderCancelled,
    OutcomeUnknown,
    ProgressSink,
    StatusKey,
    WorkcellEntry,
    announce_status,
    raise_interrupt,
    resolve_capability,
)
from core.errors import Problem, WorkcellError
from core.events import EventBus
from core.instruments import InstrumentConfig, MadsciActionSpec, MadsciOptions

if TYPE_CHECKING:
    from core.orders import Order
    from core.workcell import Workcell

__all__ = ["MadsciDriver"]

log = logging.getLogger(__name__)

TERMINAL = ("succeeded", "failed", "cancelled", "not_ready")
"""MADSci action statuses after which nothing more happens."""


def _key(name: str) -> str:
    return "".join(c for c in name.lower() if c.isalnum())


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


@dataclass
class _Bound:
    capability: str
    spec: MadsciActionSpec
    args: dict[str, dict[str, Any]]  # argument name -> the node's definition of it


@dataclass
class _Run:
    order_id: str
    capability: str
    task: asyncio.Task[Any] | None
    action_id: str | None = None
    status: str = "not_started"
    cancel_requested: bool = False
    interrupt: DriverError | None = None


class MadsciDriver(WorkcellEntry):
    """A MADSci REST node satisfying :class:`~core.drivers.base.Driver`.

    Args:
        config: The instrument as the workcell file declares it (``options`` are
            :class:`~core.instruments.MadsciOptions`).
        clock: Timestamps of heartbeats (network waits are real time).
        bus: If given, state changes are published as ``InstrumentStatusChanged``.
        workcell: The workcell the instrument belongs to: locates messages (file:line).
        index: The instrument's position in ``workcell.instruments``.
    """

    def __init__(self, config: InstrumentConfig, clock: Clock | None = None, *,
                 bus: EventBus | None = None, workcell: Workcell | None = None,
                 index: int | None = None) -> None:
        super().__init__(config, clock, bus, workcell, index)
        self.options = MadsciOptions.model_validate(config.options)
        self.info = DriverInfo.of(config, endpoint=f"{self.options.url} (MADSci node REST API)")
        self._http: httpx.AsyncClient | None = None
        self.node_id: str | None = None
        self.node_name = ""
        self.admin_commands: frozenset[str] = frozenset()
        self._bound: dict[str, _Bound] = {}
        self._runs: dict[str, _Run] = {}
        self._node_status: dict[str, Any] = {}
        self._lock = asyncio.Lock()
        self._connecting = False
        self._detail = "not connected"
        self._last_heartbeat: float | None = None
        self._published: StatusKey | None = None
        self._run_count = 0

    @property
    def url(self) -> str:
        return self.options.url

    # ------------------------------------------------------------------ Driver protocol

    async def connect(self) -> None:
        async with self._lock:
            if self._http is not None:
                return
            self._connecting = True
            self._announce()
            http = httpx.AsyncClient(base_url=self.url, timeout=self.options.request_timeout,
                                     trust_env=False)
            try:
                try:
                    info = (await http.get("/info")).raise_for_status().json()
                    status = (await http.get("/status")).raise_for_status().json()
                except (httpx.HTTPError, ValueError) as exc:
                    self._detail = f"cannot reach MADSci node {self.url}: {_why(exc)}"
                    raise InstrumentUnavailable(
                        f"{self.where('options', 'url')}: instrument {self.instrument_id}: "
                        f"cannot reach MADSci node {self.url}: {_why(exc)}",
                        instrument_id=self.instrument_id) from None
                try:
                    self._bound = self._bind(info)
                except WorkcellError as exc:
                    self._detail = exc.summary
                    raise
            except BaseException:
                self._connecting = False
                self._announce()
                await http.aclose()
                raise
            finally:
                self._connecting = False
            self._http = http
            self.node_id = str(info.get("node_id") or "")
            self.node_name = str(info.get("node_name") or "")
            caps = info.get("capabilities") or {}
            self.admin_commands = frozenset(caps.get("admin_commands") or ())
            module = " ".join(str(p) for p in (info.get("module_name"), info.get("module_version")) if p)
            self.info = self.info.identified(
                [("Node name", self.node_name), ("Node id", self.node_id),
                 ("Node type", info.get("node_type")), ("Module", module),
                 ("Description", info.get("node_description")),
                 ("Actions", sorted(str(a) for a in (info.get("actions") or {}))),
                 ("Admin commands", self.admin_commands or "none (orders cannot be stopped)")])
            self._node_status = status
            self._detail = ""
            self._last_heartbeat = self.clock.now()
            self._announce()

    async def disconnect(self) -> None:
        self._lose("disconnected", f"{self.instrument_id}: disconnected")

    async def status(self) -> DriverStatus:
        return DriverStatus(self.state, self._state_detail(), list(self._runs),
                            to_datetime(self._last_heartbeat) if self._last_heartbeat else None)

    async def heartbeat(self) -> float:
        http = self._require_connected()
        started = time.monotonic()
        try:
            status = (await http.get("/status")).raise_for_status().json()
        except (httpx.HTTPError, ValueError) as exc:
            detail = f"heartbeat failed ({_why(exc)})"
            self._lose(detail, f"{self.instrument_id}: {detail}")
            raise InstrumentUnavailable(f"{self.instrument_id}: MADSci node {self.url}: {detail}",
                                        instrument_id=self.instrument_id) from None
        self._node_status = status if isinstance(status, dict) else {}
        self._last_heartbeat = self.clock.now()
        self._announce()
        return time.monotonic() - started

    async def cancel(self, order_id: str) -> bool:
        run = self._runs.get(order_id)
        if run is None or run.task is None or self._http is None:
            return False
        where = f"{self.instrument_id}: {run.capability} of order {order_id}"
        if "cancel" not in self.admin_commands:
            run.interrupt = OutcomeUnknown(f"{where} was abandoned, not cancelled (the MADSci "
                                           f"node has no cancel command); it may still run on "
                                           f"the instrument or have run",
                                           instrument_id=self.instrument_id)
            run.task.cancel()
            return False
        run.cancel_requested = True
        if not await self._admin("cancel"):
            run.cancel_requested = False
            return False
        return True

    async def pause(self) -> bool:
        """Pause the node (its running action holds). False if the node cannot."""
        return "pause" in self.admin_commands and await self._admin("pause")

    async def resume(self) -> bool:
        """Resume a paused node. False if the node cannot."""
        return "resume" in self.admin_commands and await self._admin("resume")

    async def execute(self, order: Order, progress: ProgressSink) -> dict[str, Any]:
        http = self._require_connected()
        capability = resolve_capability(order, self.info.capabilities, self.instrument_id)
        bound = self._bound[capability]
        self._run_count += 1
        order_id = order.identifier or f"{self.instrument_id}-run-{self._run_count}"
        if order_id in self._runs:
            raise DriverError(f"{self.instrument_id}: order {order_id} is already running here",
                              code="AlreadyRunning", instrument_id=self.instrument_id)
        where = f"{self.instrument_id}: {capability} of order {order_id} ({bound.spec.action})"
        args = self._arguments(order, bound, where)
        run = _Run(order_id, capability, asyncio.current_task())
        self._runs[order_id] = run
        self._announce()
        try:
            return await self._run(http, run, bound, args, progress, where)
        except asyncio.CancelledError:
            raise_interrupt(run.interrupt, run.task)
        finally:
            del self._runs[order_id]
            self._announce()

    # ------------------------------------------------------------------ state

    @property
    def state(self) -> DriverState:
        if self._connecting:
            return DriverState.CONNECTING
        if self._http is None:
            return DriverState.DISCONNECTED
        s = self._node_status
        if s.get("errored") or s.get("stopped"):
            return DriverState.ERROR
        if s.get("paused") or s.get("locked"):
            return DriverState.NEEDS_OPERATOR
        return DriverState.BUSY if self._runs or s.get("running_actions") else DriverState.IDLE

    def _state_detail(self) -> str:
        if self._detail or self._http is None:
            return self._detail
        s = self._node_status
        text = str(s.get("description") or "")
        errors = s.get("errors") or []
        if (s.get("errored") or s.get("stopped")) and errors:
            last = errors[-1] if isinstance(errors[-1], dict) else {}
            text += f": {last.get('error_type') or ''} {last.get('message') or ''}".rstrip()
        return text

    def _announce(self) -> None:
        self._published = announce_status(self.bus, self._published, self.instrument_id, self.state,
                                          self._state_detail(), self._runs, self.config.enabled)

    def _require_connected(self) -> httpx.AsyncClient:
        if self._http is None:
            raise InstrumentUnavailable(f"{self.instrument_id}: not connected to MADSci node "
                                        f"{self.url}" + (f" ({self._detail})" if self._detail else ""),
                                        instrument_id=self.instrument_id)
        return self._http

    def _lose(self, detail: str, message: str) -> None:
        """The node is gone: drop the link, end running orders as OutcomeUnknown."""
        http, self._http = self._http, None
        self._detail = detail
        self._node_status = {}
        if http is not None:
            asyncio.get_running_loop().create_task(http.aclose())
        current = asyncio.current_task()
        for run in list(self._runs.values()):
            if run.interrupt is None and run.task is not None and run.task is not current:
                run.interrupt = OutcomeUnknown(
                    f"{message} during {run.capability} of order {run.order_id}; it may or may "
                    f"not have run", instrument_id=self.instrument_id)
                run.task.cancel()
        self._announce()

    async def _admin(self, command: str) -> bool:
        http = self._http
        if http is None:
            return False
        try:
            answer = (await http.post(f"/admin/{command}")).raise_for_status().json()
        except (httpx.HTTPError, ValueError) as exc:
            log.info("%s: admin command %s failed: %s", self.instrument_id, command, _why(exc))
            return False
        return bool(isinstance(answer, dict) and answer.get("success"))

    # ------------------------------------------------------------------ connecting

    def _bind(self, info: Mapping[str, Any]) -> dict[str, _Bound]:
        problems: list[Problem] = []
        bound: dict[str, _Bound] = {}
        actions = info.get("actions") or {}
        offered = ", ".join(sorted(actions)) or "none"
        for capability in sorted(self.info.capabilities):
            spec = self.options.actions.get(capability)
            if spec is None:
                spec = MadsciActionSpec(action=_snake(capability.rpartition(".")[2]))
                at: tuple[str, ...] = ("capabilities", capability)
            else:
                at = ("options", "actions", capability, "action")
            action = actions.get(spec.action)
            if not isinstance(action, dict):
                problems.append(Problem(self.where(*at),
                                        f"MADSci node {self.url} has no action {spec.action!r} "
                                        f"(actions: {offered})"))
                continue
            args = {str(k): v for k, v in (action.get("args") or {}).items()
                    if isinstance(v, dict)}
            for name, target in spec.parameters.items():
                if target not in args:
                    problems.append(Problem(
                        self.where("options", "actions", capability, "parameters", name),
                        f"action {spec.action!r} has no argument {target!r} "
                        f"(arguments: {', '.join(args) or 'none'})"))
            bound[capability] = _Bound(capability, spec, args)
        if problems:
            raise WorkcellError(f"instrument {self.instrument_id}: the workcell does not fit "
                                f"MADSci node {self.url}", problems)
        return bound

    # ------------------------------------------------------------------ one order

    def _arguments(self, order: Order, bound: _Bound, where: str) -> dict[str, Any]:
        spec = bound.spec
        by_key = {_key(a): a for a in bound.args}
        args: dict[str, Any] = {}
        for p in order.inputParameters:
            target = spec.parameters.get(p.name) or by_key.get(_key(p.name))
            if target is None or target in args:
                continue
            kind = str(bound.args[target].get("argument_type") or "")
            try:
                args[target] = _convert(kind, p.typed_value)
            except (TypeError, ValueError) as exc:
                raise DriverError(f"{where}: parameter {target!r} (from {p.name!r}) = "
                                  f"{p.typed_value!r}: {exc}", code="ValidationError",
                                  instrument_id=self.instrument_id) from None
        for name, definition in bound.args.items():
            if definition.get("required") and name not in args:
                given = [k for k, v in spec.parameters.items() if v == name]
                raise DriverError(f"{where}: parameter {name!r} is missing (give it as "
                                  f"{' or '.join(repr(n) for n in given or [name])})",
                                  code="InvalidParameter", instrument_id=self.instrument_id)
        return args

    async def _request(self, http: httpx.AsyncClient, method: str, path: str,
                       **kwargs: Any) -> Any:
        """One round trip; a 429 waits as the node asks and tries again."""
        while True:
            response = await http.request(method, path, **kwargs)
            if response.status_code != 429:
                return response
            wait = response.headers.get("retry-after")
            await asyncio.sleep(min(float(wait), 30.0) if wait and wait.isdigit() else 1.0)

    async def _run(self, http: httpx.AsyncClient, run: _Run, bound: _Bound,
                   args: dict[str, Any], progress: ProgressSink, where: str) -> dict[str, Any]:
        name = bound.spec.action
        try:
            created = await self._request(http, "POST", f"/action/{name}", json={"args": args})
        except httpx.HTTPError as exc:
            self._lose(f"connection lost ({_why(exc)})", f"{self.instrument_id}: connection lost")
            raise InstrumentUnavailable(f"{where}: MADSci node {self.url} unreachable: "
                                        f"{_why(exc)}", instrument_id=self.instrument_id) from None
        if created.status_code == 422:
            raise DriverError(f"{where}: {_unprocessable(created)}", code="ValidationError",
                              instrument_id=self.instrument_id)
        if created.is_error:
            raise DriverError(f"{where}: the node refused the action: HTTP "
                              f"{created.status_code} {created.text[:200]}",
                              code="ActionRefused", instrument_id=self.instrument_id)
        run.action_id = str(created.json()["action_id"])
        started = asyncio.create_task(
            self._request(http, "POST", f"/action/{name}/{run.action_id}/start",
                          timeout=httpx.Timeout(self.options.request_timeout, read=None)))
        try:
            status = await self._poll(http, run, progress, started)
            result = (await self._request(http, "GET", f"/action/{run.action_id}/result")
                      ).raise_for_status().json()
        except httpx.HTTPError as exc:
            detail = f"connection lost ({_why(exc)})"
            self._lose(detail, f"{self.instrument_id}: {detail}")
            raise OutcomeUnknown(f"{where}: {detail} while it ran; it may or may not have run",
                                 instrument_id=self.instrument_id) from None
        finally:
            if not started.done():
                started.cancel()
            await asyncio.gather(started, return_exceptions=True)
        return self._finished(status, result, run, bound, progress, where)

    async def _poll(self, http: httpx.AsyncClient, run: _Run, progress: ProgressSink,
                    started: asyncio.Task[Any]) -> str:
        status = ""
        while True:
            answer = await self._request(http, "GET", f"/action/{run.action_id}/status")
            now = str(answer.raise_for_status().json())
            if now != status and now != "unknown":
                progress(None, {"ActionStatus": now})
            status = run.status = now
            if status in TERMINAL:
                return status
            if status == "unknown" and started.done():
                return status  # the node does not know the action: it restarted
            await asyncio.sleep(self.options.poll_interval)

    def _finished(self, status: str, result: Any, run: _Run, bound: _Bound,
                  progress: ProgressSink, where: str) -> dict[str, Any]:
        result = result if isinstance(result, dict) else {}
        errors = [e for e in result.get("errors") or [] if isinstance(e, dict)]
        first = errors[0] if errors else {}
        kind = str(first.get("error_type") or "")
        message = str(first.get("message") or "") or status
        if status == "succeeded":
            progress(1.0, None)
            return self._outputs(result, bound)
        if status == "cancelled" and run.cancel_requested:
            raise OrderCancelled(f"{where}: cancelled (MADSci cancel)",
                                 instrument_id=self.instrument_id)
        if status == "not_ready":
            raise DriverError(f"{where}: the node is not ready: {message}", code="NodeNotReady",
                              retryable=True, instrument_id=self.instrument_id)
        if status == "unknown":
            self._lose("node restarted", f"{self.instrument_id}: the node no longer knows action "
                                         f"{run.action_id} (restarted)")
            raise OutcomeUnknown(f"{where}: the node no longer knows action {run.action_id} (it "
                                 f"restarted); it may or may not have run",
                                 instrument_id=self.instrument_id)
        code = kind or ("Cancelled" if status == "cancelled" else "ActionFailed")
        error = bound.spec.errors.get(code)
        raise DriverError(f"{where}: {code}: {message}", code=code,
                          retryable=error.retryable if error else False,
                          instrument_id=self.instrument_id)

    def _outputs(self, result: Mapping[str, Any], bound: _Bound) -> dict[str, Any]:
        names = bound.spec.results
        data = result.get("json_result")
        out: dict[str, Any]
        if isinstance(data, dict):
            out = {names.get(str(k), str(k)): v for k, v in data.items()}
        elif data is None:
            out = {}
        else:
            out = {names.get("Result", "Result"): data}
        files = result.get("files")
        if files:
            out["Files"] = sorted(files) if isinstance(files, dict) else files
        if result.get("datapoints"):
            out["Datapoints"] = result["datapoints"]
        return out

    def __repr__(self) -> str:
        return f"MadsciDriver({self.instrument_id!r}, {self.url}, state={self.state.value})"


def _why(exc: BaseException) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _unprocessable(response: httpx.Response) -> str:
    """FastAPI's 422 answer, as 'parameter 'x': why' for each argument it names."""
    try:
        detail = response.json().get("detail")
    except ValueError:
        detail = None
    if not isinstance(detail, list):
        return f"the node refused the arguments: {response.text[:200]}"
    parts = []
    for item in detail:
        loc = [str(p) for p in item.get("loc", []) if p not in ("body", "args")]
        parts.append(f"parameter {'.'.join(loc) or '?'!r}: {item.get('msg', 'invalid')}")
    return "; ".join(parts)


def _convert(kind: str, value: Any) -> Any:
    """An order value as the node's declared argument type (``int``, ``float``, ``bool``,
    ``str``, ``list``/``dict`` as JSON); other types go as they are."""
    base = kind.partition("[")[0].lower()
    if base == "int":
        number = float(value) if isinstance(value, str) else value
        if isinstance(number, bool) or not float(number).is_integer():
            raise ValueError("expected a whole number")
        return int(number)
    if base == "float":
        if isinstance(value, bool):
            raise TypeError("expected a number")
        return float(value)
    if base == "bool":
        if isinstance(value, str):
            low = value.strip().lower()
            if low not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError("expected true or false")
            return low in ("true", "1", "yes")
        return bool(value)
    if base == "str":
        return "" if value is None else str(value)
    if base in ("list", "dict") and isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            raise ValueError(f"expected a JSON {base}") from None
    return value
