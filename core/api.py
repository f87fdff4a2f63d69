"""What the window, the panels and the command line may use of the core: :class:`RuntimeApi`.

:class:`core.runtime.Runtime` is the one implementation; console/ and panels/ type their runtime as
this protocol, so mypy reports any use of the core beyond it, and the check at the end of this
module makes mypy prove that ``Runtime`` still satisfies it. Attributes are read-only here: the
GUI reads the parts of the core, it never replaces them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from core.clock import Clock
    from core.dataservices.link import DataServicesLink
    from core.dispatcher import Dispatcher, InstrumentView
    from core.engine import Engine
    from core.ledger import Ledger
    from core.metrics import Metrics
    from core.orders import Order
    from core.runtime import ActionResult, BulkResult, OrderTarget, Runtime
    from core.schedules import Scheduler
    from core.store import AuditEntry, Store, Transition
    from core.templates import WorkflowTemplate
    from core.users import Signature, SignaturePolicy
    from core.workcell import Workcell


class RuntimeApi(Protocol):
    """The runtime as console/ and panels/ see it (see the module doc)."""

    # ------------------------------------------------------------------ the parts

    @property
    def store(self) -> Store: ...
    @property
    def ledger(self) -> Ledger: ...
    @property
    def engine(self) -> Engine: ...
    @property
    def clock(self) -> Clock: ...
    @property
    def workcell(self) -> Workcell | None: ...
    @property
    def dispatcher(self) -> Dispatcher | None: ...
    @property
    def metrics(self) -> Metrics | None: ...
    @property
    def link(self) -> DataServicesLink | None: ...
    @property
    def schedules(self) -> Scheduler | None: ...
    @property
    def signatures(self) -> SignaturePolicy: ...

    # ------------------------------------------------------------------ lifecycle

    async def start(self, templates_dir: Path | None = ..., *, execute: bool = True,
                    link: DataServicesLink | None = None,
                    schedules: bool = False) -> list[WorkflowTemplate]: ...
    async def close(self) -> None: ...
    def connection_status(self) -> str: ...

    # ------------------------------------------------------------------ reading

    def target(self, order_id: str) -> OrderTarget: ...
    def order(self, order_id: str) -> Order: ...
    def history(self, order_id: str) -> list[Transition]: ...
    def audit(self, order_id: str | None = None) -> list[AuditEntry]: ...
    def run_of(self, order_id: str) -> dict[str, Any] | None: ...
    def instruments(self) -> list[InstrumentView]: ...
    def why_waiting(self, order_id: str) -> list[str]: ...
    def preview(self, order_ids: Iterable[str]) -> dict[str, Any]: ...
    def templates(self) -> list[WorkflowTemplate]: ...
    def runs_using(self, name: str, version: int | None = None) -> list[dict[str, Any]]: ...

    # ------------------------------------------------------------------ operator actions

    async def start_run(self, template_name: str, inputs: dict[str, Any] | None = None, *,
                        priority: int = 50, version: int | None = None, who: str | None = None,
                        allow_duplicate: bool = False) -> str: ...
    async def cancel(self, order_id: str, *, who: str | None = None, reason: str | None = None,
                     signature: Signature | None = None) -> ActionResult: ...
    async def retry(self, order_id: str, *, who: str | None = None, reason: str | None = None,
                    signature: Signature | None = None) -> ActionResult: ...
    async def recover(self, order_id: str, from_step: str, *, who: str | None = None,
                      reason: str | None = None, signature: Signature | None = None) -> ActionResult: ...
    async def skip(self, order_id: str, outputs: dict[str, Any] | None = None, *,
                   who: str | None = None, reason: str | None = None,
                   signature: Signature | None = None) -> ActionResult: ...
    async def pause(self, order_id: str, *, who: str | None = None, reason: str | None = None,
                    signature: Signature | None = None) -> ActionResult: ...
    async def resume(self, order_id: str, *, who: str | None = None, reason: str | None = None,
                     signature: Signature | None = None) -> ActionResult: ...
    async def reprioritise(self, order_id: str, priority: int, *, who: str | None = None,
                           reason: str | None = None,
                           signature: Signature | None = None) -> ActionResult: ...
    async def start_now(self, order_id: str, *, who: str | None = None,
                        reason: str | None = None) -> ActionResult: ...
    async def bulk(self, action: str, order_ids: Sequence[str], *, who: str | None = None,
                   reason: str | None = None, progress: Callable[[int, int], None] | None = None,
                   stop: asyncio.Event | None = None, signature: Signature | None = None,
                   **options: Any) -> BulkResult: ...
    async def instrument_action(self, instrument_id: str, action: str, *, who: str | None = None,
                                reason: str | None = None,
                                signature: Signature | None = None) -> ActionResult: ...


if TYPE_CHECKING:

    def _runtime_satisfies_api(runtime: Runtime) -> RuntimeApi:
        """Type-checked only: mypy proves here that :class:`Runtime` implements the protocol."""
        return runtime
