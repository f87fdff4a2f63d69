"""Operator actions on orders: which apply to which order, and how they run.

Three pieces, shared by the Jobs and the Detail panel:

- :data:`ACTIONS` — the catalogue: label, shortcut, whether it asks for a reason, and the order
  statuses it applies to for runs (parent orders) and for step orders. Menus and buttons are
  built from it, so the Jobs context menu and the Detail buttons always agree.
- :class:`TaskRunner` — runs a coroutine as an asyncio task, keeps a strong reference until it
  ends, and reports its result or error. (qasync 0.28.0's ``asyncSlot`` neither keeps its tasks
  alive nor works on plain functions; specs/performance.md §B.7.)
- :class:`OrderActions` — one operator action from request to result: ask what is needed (a
  reason, a step, a priority) in a dialog opened with ``open()`` and awaited (never ``exec()``,
  which would re-enter the event loop), call the runtime facade with *who* (the OS user) and
  *why*, and report at once ("Cancelling …") and at the end (result or error). Each dialog
  previews what the action will touch (:func:`core.impact.preview`, on a reader thread; for a
  bulk action over every order it names) while the operator decides, and with a forecast
  (:attr:`OrderActions.forecast`) how far the affected runs' ETAs move
  (:func:`core.impact.eta_moves`). Retry and Pause confirm in one keystroke (Enter; the reason
  is optional); Resume, Start now, Details and Why waiting act at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import shiboken6
from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QDialog, QWidget

from core.api import RuntimeApi
from core.errors import LabconsoleError
from core.impact import EtaMoves, eta_moves
from core.impact import preview as impact_preview
from core.orders import OrderStatus
from core.users import os_user
from panels.dialogs import (
    BulkDialog,
    MessageDialog,
    PriorityDialog,
    ReasonDialog,
    StepChoiceDialog,
    ask,
)
from panels.signature import needs_signature, request_signature

if TYPE_CHECKING:
    from core.users import User

if TYPE_CHECKING:
    from PySide6.QtCore import SignalInstance

    from core.runtime import ActionResult

log = logging.getLogger(__name__)


class Bridge(Protocol):
    """What the panels need of the console's event bridge (frames of coalesced core events)."""

    @property
    def orders_changed(self) -> SignalInstance:
        """dict order id -> latest order row, once per frame."""

    @property
    def events(self) -> SignalInstance:
        """list of core events of the frame, in order."""


S = OrderStatus
_NOT_STARTED = frozenset({S.Created, S.Validated, S.Scheduled})
_LIVE = _NOT_STARTED | {S.Running, S.Paused}


@dataclass(frozen=True)
class OrderAction:
    """One operator action as menus, shortcuts and buttons present it."""

    key: str
    label: str
    shortcut: str | None
    run_statuses: frozenset[OrderStatus]
    """Statuses of a run (parent order) for which the action is offered."""
    step_statuses: frozenset[OrderStatus]
    """Statuses of a step order for which the action is offered."""
    needs_reason: bool = False
    """Destructive: asks for a reason, which goes to the audit log."""
    bulk: bool = False
    """Offered on a multi-selection (and on "every order matching the filter")."""
    tip: str = ""

    def applies(self, status: OrderStatus, is_run: bool, skipped: bool = False) -> bool:
        """Whether the action is offered for an order; a step the engine skipped (Canceled on
        the wire) is done with: only its details."""
        if skipped and not is_run:
            return self.key in SKIPPED_ACTIONS
        return status in (self.run_statuses if is_run else self.step_statuses)


ALL = frozenset(OrderStatus)
SKIPPED_ACTIONS = frozenset({"details"})
"""What a skipped step order offers (retry or recover it through its run instead)."""
ACTIONS: dict[str, OrderAction] = {a.key: a for a in (
    OrderAction("details", "Details", "Return", ALL, ALL, tip="Show the order in the Detail panel"),
    OrderAction("why_waiting", "Why waiting?", "Ctrl+Shift+W", _LIVE | {S.Error}, _LIVE | {S.Error},
                tip="What the dispatcher and the engine are waiting for"),
    OrderAction("pause", "Pause", "Ctrl+P", _NOT_STARTED | {S.Running}, frozenset(),
                tip="No new step starts; running steps finish"),
    OrderAction("resume", "Resume", "Ctrl+Shift+P", frozenset({S.Paused}), frozenset()),
    OrderAction("start_now", "Start now", "Ctrl+Return", frozenset(), frozenset({S.Scheduled}),
                tip="Dispatch a queued step as soon as an instrument fits, ignoring its time slot"),
    OrderAction("cancel", "Cancel…", "Delete", _LIVE, _LIVE, needs_reason=True, bulk=True,
                tip="Stop running steps on their instruments and cancel the rest"),
    OrderAction("retry", "Retry", "Ctrl+R", frozenset({S.Error, S.Canceled, S.Paused}),
                frozenset({S.Error, S.Canceled}), bulk=True,
                tip="Run failed or canceled steps again with fresh attempts"),
    OrderAction("recover", "Recover from step…", "Ctrl+Shift+R",
                frozenset({S.Error, S.Canceled, S.Paused, S.Complete}),
                frozenset({S.Error, S.Canceled, S.Complete}), needs_reason=True,
                tip="Run a step and everything after it again, keeping earlier outputs"),
    OrderAction("skip", "Skip step…", "Ctrl+Shift+K", frozenset({S.Error, S.Paused, S.Running, S.Scheduled}),
                _NOT_STARTED | {S.Error, S.Running}, needs_reason=True,
                tip="Mark a step done with given outputs; the steps after it go on"),
    OrderAction("reprioritise", "Reprioritise…", "Ctrl+Shift+U", _LIVE, _NOT_STARTED, bulk=True,
                tip="New numeric priority (0-100) for a run and its queued steps"),
)}
"""Every order action, in menu order."""

BULK_LABELS = {"cancel": "Cancel", "retry": "Retry", "reprioritise": "Reprioritise"}
ASKS = frozenset({"cancel", "reprioritise", "recover", "skip", "retry", "pause"})
"""Actions that ask the operator something (a reason, a step, a priority) before acting."""
ROLE_ACTIONS = {"cancel": "cancel", "retry": "retry", "recover": "recover", "skip": "skip", "pause": "pause",
                "resume": "resume", "reprioritise": "reprioritise", "start_now": "start now"}
"""The action of :data:`core.users.PERMISSIONS` each order action is (details and why-waiting only read)."""
MARKS = {"busy": "↻", "ok": "✓", "error": "✕"}
"""The status line's mark per feedback level (glyphs the bundled DejaVu fonts have)."""


def available(status: OrderStatus, is_run: bool, skipped: bool = False) -> list[OrderAction]:
    """The actions offered for one order, in menu order."""
    return [a for a in ACTIONS.values() if a.applies(status, is_run, skipped)]


class TaskRunner(QObject):
    """Runs coroutines as tasks, keeps them alive, reports how each ended.

    ``finished`` carries (label, error message or None, result). Cancelled tasks (at shutdown)
    report nothing.
    """

    finished = Signal(str, object, object)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._tasks: dict[asyncio.Task[Any], str] = {}

    @property
    def busy(self) -> bool:
        return bool(self._tasks)

    def run(self, coro: Coroutine[Any, Any, Any], label: str) -> asyncio.Task[Any]:
        """Start ``coro`` now on the running loop and keep a reference until it ends."""
        task = asyncio.get_running_loop().create_task(coro, name=label)
        self._tasks[task] = label
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        label = self._tasks.pop(task, "")
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None and not isinstance(exc, LabconsoleError):
            log.error("%s failed", label, exc_info=exc)
        if not shiboken6.isValid(self):  # its window was deleted meanwhile: nobody to tell
            return
        if exc is None:
            self.finished.emit(label, None, task.result())
        else:
            self.finished.emit(label, describe_error(exc), None)

    def cancel_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        self._tasks.clear()


def describe_error(exc: BaseException) -> str:
    """An operator-facing message: the core's own message, or the exception type and text."""
    if isinstance(exc, LabconsoleError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


@dataclass
class Feedback:
    """One line of the status area: ``busy`` (just started), ``ok`` or ``error``."""

    level: str
    message: str


class OrderActions(QObject):
    """Runs operator actions on orders against the runtime facade.

    ``host`` is the widget dialogs are opened over. ``feedback`` is emitted synchronously when an
    action starts (so the operator sees it within a frame) and again when it ends.
    :attr:`dialog` is the dialog currently waiting for the operator (tests fill and accept it).
    """

    feedback = Signal(object)
    """:class:`Feedback`."""
    dialog_opened = Signal(object)
    """The dialog an action just opened (a QDialog)."""
    done = Signal(str, object)
    """(action key, list of ActionResult or one ActionResult) after a successful action."""

    def __init__(self, runtime: RuntimeApi, host: QWidget, *, who: Callable[[], str] = os_user) -> None:
        super().__init__(host)
        self.runtime = runtime
        self.host = host
        self.who = who
        self.user: Callable[[], User | None] = lambda: None
        """The signed-in user (None: single-user mode): what their role allows is offered."""
        self.runner = TaskRunner(self)
        self.runner.finished.connect(self._on_finished)
        self.dialog: QDialog | None = None
        self.forecast: Any = None
        """The console's :class:`core.forecast.Forecast` (None: previews show instrument time,
        not moved ETAs)."""
        self._notes: list[QDialog] = []
        self.history: list[Feedback] = []

    # ------------------------------------------------------------------ entry points

    def refusal(self, key: str) -> str | None:
        """Why the signed-in user may not do action ``key`` (None: allowed, or single-user mode);
        the core refuses the same, this only says it before a dialog opens."""
        from core.users import refusal

        user, action = self.user(), ROLE_ACTIONS.get(key)
        return refusal(user, action) if user is not None and action is not None else None

    def request(self, key: str, order_id: str) -> asyncio.Task[Any] | None:
        """Start action ``key`` on one order; returns its task (None for a refusal)."""
        if self.dialog is not None:
            self._say("error", "Finish the open dialog first")
            return None
        action = ACTIONS.get(key)
        if action is None:
            self._say("error", f"unknown action '{key}'")
            return None
        if (refused := self.refusal(key)) is not None:
            self._say("error", refused)
            return None
        order_id = self.resolve(order_id)
        label = f"{action.label.rstrip('…')} {order_id}"
        flows: dict[str, Callable[[], Coroutine[Any, Any, Any]]] = {
            "cancel": lambda: self._cancel(order_id),
            "retry": lambda: self._confirm("retry", order_id),
            "pause": lambda: self._confirm("pause", order_id),
            "resume": lambda: self._simple("resume", order_id),
            "start_now": lambda: self._simple("start_now", order_id),
            "reprioritise": lambda: self._reprioritise(order_id),
            "recover": lambda: self._recover(order_id),
            "skip": lambda: self._skip(order_id),
            "why_waiting": lambda: self._why_waiting(order_id),
        }
        flow = flows.get(key)
        if flow is None:
            return None
        if key in ASKS:  # nothing is done before the operator answers the dialog
            self._say("busy", f"{label}: answer the dialog to go on")
        else:
            self._say("busy", f"{_progressive(key)} {order_id}…")
        return self.runner.run(self._guard(key, flow()), label)

    def request_bulk(self, key: str, order_ids: Sequence[str]) -> asyncio.Task[Any] | None:
        """Start bulk action ``key`` (cancel, retry, reprioritise) on many orders."""
        if self.dialog is not None:
            self._say("error", "Finish the open dialog first")
            return None
        if key not in BULK_LABELS or not order_ids:
            return None
        if (refused := self.refusal(key)) is not None:
            self._say("error", refused)
            return None
        ids = list(order_ids)
        self._say("busy", f"Preparing {BULK_LABELS[key].lower()} of {len(ids):,} orders…")
        return self.runner.run(self._guard(key, self._bulk(key, ids)), f"bulk {key}")

    def resolve(self, order_id: str) -> str:
        """The order an action on ``order_id`` acts on: itself, or for an order claimed from
        Data Services the run the console made for it."""
        if self.runtime.target(order_id).run_id is not None:
            return order_id
        return self.runtime.store.runs_for_orders([order_id]).get(order_id, order_id)

    def resolve_many(self, order_ids: Sequence[str]) -> list[str]:
        """:meth:`resolve` for many orders (one indexed query per 500), without repeats."""
        runs = self.runtime.store.runs_for_orders(order_ids)
        return list(dict.fromkeys(runs.get(oid, oid) for oid in order_ids))

    def shutdown(self) -> None:
        """Cancel running actions and close an open dialog (the panel is closing)."""
        self.runner.cancel_all()
        if self.dialog is not None:
            self.dialog.reject()
        for note in self._notes:
            if shiboken6.isValid(note):  # closed notes delete themselves
                note.close()
        self._notes = []

    # ------------------------------------------------------------------ flows

    @staticmethod
    async def _guard(key: str, flow: Coroutine[Any, Any, Any]) -> tuple[str, Any]:
        """Tag the flow's result with its action, for :meth:`_on_finished`."""
        return key, await flow

    async def _ask(self, dialog: QDialog, key: str, order_id: str) -> bool:
        """Open ``dialog`` and wait for the operator; once accepted, say the action goes on."""
        self.dialog = dialog
        self.dialog_opened.emit(dialog)
        try:
            accepted = await ask(dialog)
        finally:
            self.dialog = None
            dialog.deleteLater()  # its values were read into attributes on accept
        if accepted:
            self._say("busy", f"{_progressive(key)} {order_id}…")
        return accepted

    async def _signature(self, key: str, order_id: str | None) -> tuple[bool, Any]:
        """(go on, signature): the electronic signature ``key`` needs when ``[SIGNATURES] require``
        lists it (the password again, in a dialog); (False, None) if the operator backs out."""
        if not needs_signature(self.runtime, key):
            return True, None
        signature = await request_signature(lambda d: self._ask(d, key, order_id or "orders"), self.runtime,
                                             key, order_id, user=self.who(), parent=self.host)
        return signature is not None, signature

    async def _simple(self, method: str, order_id: str) -> ActionResult | None:
        rt = self.runtime
        if method == "start_now":  # not an action a signature is asked for
            return await rt.start_now(order_id, who=self.who())
        go, signature = await self._signature(method, order_id)
        if not go:
            return None
        return await rt.resume(order_id, who=self.who(), signature=signature)

    def _etas(self, action: str, order_ids: Sequence[str], **kwargs: Any) -> Callable[
            [], Coroutine[Any, Any, EtaMoves | None]] | None:
        """The moved-ETA preview of an action, when the window keeps a forecast."""
        if self.forecast is None:
            return None
        forecast = self.forecast
        return lambda: eta_moves(forecast, action, order_ids, **kwargs)

    async def _confirm(self, key: str, order_id: str) -> Any:
        """Retry or Pause: a confirmation with the preview; Enter confirms (the reason is optional)."""
        texts = {
            "retry": (f"Retry <b>{order_id}</b>? Failed and canceled steps run again with fresh attempts; "
                      "the steps after them follow.", "Retry"),
            "pause": (f"Pause <b>{order_id}</b>? No new step starts; running steps finish. Resume "
                      "goes on from there.", "Pause"),
        }
        message, ok_text = texts[key]
        dialog = ReasonDialog(f"{ok_text} {order_id}", message, who=self.who(), ok_text=ok_text,
                              reason_required=False, parent=self.host)
        dialog.preview(lambda: impact_preview(self.runtime.store, key, [order_id]), self._etas(key, [order_id]))
        if not await self._ask(dialog, key, order_id):
            return None
        go, signature = await self._signature(key, order_id)
        if not go:
            return None
        act = self.runtime.retry if key == "retry" else self.runtime.pause
        return await act(order_id, who=self.who(), reason=dialog.reason or None, signature=signature)

    async def _cancel(self, order_id: str) -> Any:
        dialog = ReasonDialog(f"Cancel {order_id}",
                              f"Cancel <b>{order_id}</b>? Running steps are stopped on their "
                              "instruments; the rest is canceled. This cannot be undone.",
                              who=self.who(), ok_text="Cancel order", parent=self.host)
        dialog.preview(lambda: impact_preview(self.runtime.store, "cancel", [order_id]),
                       self._etas("cancel", [order_id]))
        if not await self._ask(dialog, "cancel", order_id):
            return None
        go, signature = await self._signature("cancel", order_id)  # [SIGNATURES] require: password again
        if not go:
            return None
        return await self.runtime.cancel(order_id, who=self.who(), reason=dialog.reason, signature=signature)

    async def _reprioritise(self, order_id: str) -> Any:
        row = self.runtime.store.order_rows("id = ?", (order_id,), limit=1)
        current = row[0][6] if row else 50
        dialog = PriorityDialog(f"Reprioritise {order_id}", current, who=self.who(), parent=self.host)

        def reprioritise_preview() -> None:
            dialog.preview(lambda: impact_preview(self.runtime.store, "reprioritise", [order_id]),
                           self._etas("reprioritise", [order_id], priority=dialog.spin.value()))

        if self.forecast is not None:  # the ETAs follow the priority chosen
            dialog.spin.valueChanged.connect(reprioritise_preview)
        reprioritise_preview()
        if not await self._ask(dialog, "reprioritise", order_id):
            return None
        go, signature = await self._signature("reprioritise", order_id)
        if not go:
            return None
        return await self.runtime.reprioritise(order_id, dialog.priority, who=self.who(),
                                               reason=dialog.reason or None, signature=signature)

    def _steps(self, order_id: str) -> tuple[dict[str, Any], str | None]:
        run = self.runtime.run_of(order_id)
        if run is None:
            raise LabconsoleError(f"{order_id} is not a labconsole run or step")
        target = self.runtime.target(order_id)
        return run, target.step_id

    async def _recover(self, order_id: str) -> Any:
        run, step_id = self._steps(order_id)
        steps = [(s["id"], f"{s['id']} · {s['name']}", s["status"]) for s in run["steps"]]
        default = step_id or next((s["id"] for s in run["steps"]
                                   if s["status"] in ("failed", "unknown", "cancelled")), None)
        dialog = StepChoiceDialog(
            f"Recover {run['id']}",
            f"Run <b>{run['id']}</b> ({run['template_name']} v{run['template_version']}): run the "
            "chosen step and every step after it again. Outputs of earlier steps are kept.",
            steps, default=default, who=self.who(), ok_text="Recover", parent=self.host)
        run_id = str(run["id"])

        def recover_preview() -> None:
            step = dialog.combo.currentData()
            if step is not None:
                dialog.preview(lambda: impact_preview(self.runtime.store, "recover", [run_id], from_step=step),
                               self._etas("recover", [run_id], from_step=step))

        dialog.combo.currentIndexChanged.connect(recover_preview)
        recover_preview()
        if not await self._ask(dialog, "recover", order_id):
            return None
        go, signature = await self._signature("recover", order_id)
        if not go:
            return None
        return await self.runtime.recover(order_id, dialog.step_id, who=self.who(), reason=dialog.reason,
                                          signature=signature)

    async def _skip(self, order_id: str) -> Any:
        run, step_id = self._steps(order_id)
        choices = [(s["id"], f"{s['id']} · {s['name']}", s["status"]) for s in run["steps"]
                   if s["status"] not in ("completed", "skipped")]
        if step_id is not None:
            choices = [c for c in choices if c[0] == step_id]
        if not choices:
            raise LabconsoleError(f"{order_id}: no step left to skip")
        default = next((c[0] for c in choices if c[2] in ("failed", "unknown")), choices[0][0])
        dialog = StepChoiceDialog(
            f"Skip a step of {run['id']}",
            "Mark the step as done without running it. Give the outputs the steps after it "
            "need, one <tt>name = value</tt> per line.",
            choices, default=default, who=self.who(), ok_text="Skip step", outputs=True,
            parent=self.host)
        orders = {s["id"]: s["order_id"] for s in run["steps"]}

        def skip_preview() -> None:
            step = dialog.combo.currentData()
            if step in orders:
                dialog.preview(lambda: impact_preview(self.runtime.store, "skip", [orders[step]]),
                               self._etas("skip", [orders[step]]))

        dialog.combo.currentIndexChanged.connect(skip_preview)
        skip_preview()
        if not await self._ask(dialog, "skip", order_id):
            return None
        order = next(s["order_id"] for s in run["steps"] if s["id"] == dialog.step_id)
        go, signature = await self._signature("skip", order)
        if not go:
            return None
        return await self.runtime.skip(order, dialog.outputs, who=self.who(), reason=dialog.reason,
                                       signature=signature)

    async def _why_waiting(self, order_id: str) -> Any:
        reasons = self.runtime.why_waiting(order_id)
        dialog = MessageDialog(f"Why is {order_id} waiting?", reasons, parent=self.host)
        self._notes = [d for d in self._notes if shiboken6.isValid(d) and d.isVisible()] + [dialog]
        self.dialog_opened.emit(dialog)
        dialog.open()  # informative only: nothing waits for it
        return f"{order_id}: " + "; ".join(reasons)

    def _prepare_bulk(self, ids: list[str]) -> tuple[list[str], dict[str, Any]]:
        resolved = self.resolve_many(ids)
        return resolved, self.runtime.preview(resolved)

    async def _bulk(self, key: str, ids: list[str]) -> Any:
        store = self.runtime.store
        ids, preview = await store.read(lambda _c: self._prepare_bulk(ids))
        dialog = BulkDialog(key, preview, who=self.who(), parent=self.host)
        dialog.impact.show()  # every order, on a reader thread: the dialog answers meanwhile
        spin = dialog.priority_spin

        def bulk_preview() -> None:
            dialog.impact.compute(lambda: impact_preview(store, key, ids),
                                  self._etas(key, ids, **({"priority": spin.value()} if spin is not None else {})))

        if spin is not None and self.forecast is not None:  # the ETAs follow the priority chosen
            spin.valueChanged.connect(bulk_preview)
        bulk_preview()
        self.dialog = dialog
        self.dialog_opened.emit(dialog)
        self._say("busy", f"{BULK_LABELS[key]} {len(ids):,} orders: answer the dialog to go on")
        try:
            if not await dialog.confirmed():
                dialog.deleteLater()
                return None
            kwargs: dict[str, Any] = {}
            if key == "reprioritise":
                kwargs["priority"] = dialog.priority
            if needs_signature(self.runtime, key):  # one signature for the whole bulk action
                async def ask_signature(d: QDialog) -> bool:
                    self.dialog = d
                    self.dialog_opened.emit(d)
                    try:
                        return await ask(d)
                    finally:
                        self.dialog = dialog
                        d.deleteLater()

                kwargs["signature"] = await request_signature(ask_signature, self.runtime, key, None,
                                                              user=self.who(), parent=self.host)
                if kwargs["signature"] is None:
                    dialog.reject()
                    return None
            verb = BULK_LABELS[key]
            self._say("busy", f"{verb}: 0 of {len(ids):,} orders…")

            def progress(n: int, total: int) -> None:
                dialog.show_progress(n, total)
                stopping = " (stopping after this chunk)" if dialog.stop_event.is_set() else ""
                self._progress(f"{verb}: {n:,} of {total:,} orders…{stopping}")

            results = await self.runtime.bulk(key, ids, who=self.who(), reason=dialog.reason or None,
                                              progress=progress, stop=dialog.stop_event, **kwargs)
            dialog.show_results(results, getattr(results, "left", ()))
            return results
        except BaseException:
            dialog.reject()
            raise
        finally:
            self.dialog = None

    # ------------------------------------------------------------------ reporting

    def _on_finished(self, label: str, error: str | None, result: Any) -> None:
        if error is not None:
            self._say("error", f"{label}: {error}")
            return
        key, value = result
        if value is None:
            self._say("ok", f"{label}: dialog closed, nothing done")
            return
        if isinstance(value, str):
            self._say("ok", value)
        elif isinstance(value, list):
            done = sum(r.ok for r in value)
            left = len(getattr(value, "left", ()))
            self._say("ok" if done == len(value) and not left else "error",
                      f"{BULK_LABELS.get(key, key)}: {done:,} done, {len(value) - done:,} refused"
                      + (f", {left:,} left (stopped)" if left else ""))
        else:
            self._say("ok", f"{value.order_id}: {value.message}")
        self.done.emit(key, value)

    def _progress(self, message: str) -> None:
        """A busy line that replaces the previous one (live progress; not kept in the history)."""
        self.feedback.emit(Feedback("busy", message))

    def _say(self, level: str, message: str) -> None:
        item = Feedback(level, message)
        self.history.append(item)
        del self.history[:-200]
        self.feedback.emit(item)


def _progressive(key: str) -> str:
    return {"cancel": "Canceling", "retry": "Retrying", "pause": "Pausing", "resume": "Resuming",
            "start_now": "Starting", "reprioritise": "Reprioritising", "recover": "Recovering",
            "skip": "Skipping a step of", "why_waiting": "Asking why"}.get(key, key)

