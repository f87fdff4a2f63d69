"""``OrderScheduler``: Biosero's workflow-script API, over :class:`DataServicesClient`.

Scripts written for ``biosero.datamodels.restclients.OrderScheduler`` run with only an import
change::

    from core.dataservices import Order, OrderScheduler, Parameter, ParameterCollection, ParameterValueType

    scheduler = OrderScheduler("http://10.0.0.234:8105", True)
    try:
        workflow_order = await scheduler.initiate_workflow("Cell Culture Workflow", wait=False)
        order = Order(templateName="Cell Prep", scheduledStartTime=datetime.now(),
                      inputParameters=params, parentIdentifier=workflow_order.identifier)
        completed = await scheduler.schedule_order(order=order, wait=True)
        scheduler.complete_workflow(workflow_order)
    finally:
        await scheduler.close()

Where Biosero's scheduler misbehaves, this one is explicit: a template that does not exist raises
``OrderTemplateNotFoundError`` naming the known ones (Biosero's crashes on ``None``); waiting ends
on any final status (Biosero's polls forever) and returns the order, so the documented
``if not order.get_output_parameter_value("Success")`` check sees a failure, with the reason in
``statusDetails`` (``raise_on_failure=True`` raises
:class:`~core.dataservices.errors.OrderFailedError` instead); waiting polls quickly at first and
then every ``poll_interval`` seconds (Biosero's every 5 s). ``initiate_workflow(wait=True)``
returns once the workflow order is running, as Biosero documents it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from core.dataservices.client import DataServicesClient
from core.dataservices.errors import OrderFailedError
from core.errors import ModelError, Problem, Where
from core.orders import Order, OrderStatus

log = logging.getLogger(__name__)

FAILED_STATUSES = frozenset({OrderStatus.Error, OrderStatus.Canceled, OrderStatus.Invalid})
FINAL_STATUSES = FAILED_STATUSES | {OrderStatus.Complete, OrderStatus.Consolidated}
SCRIPT_MODULE = "OrderScheduler"
"""Who a workflow order is assigned to: the script that opened it (so no module claims it)."""


class WorkflowOrder(Order):
    """The parent order of a workflow run, as returned by :meth:`OrderScheduler.initiate_workflow`."""


class OrderScheduler:
    """Create orders in Data Services and wait for modules to execute them.

    Args:
        base_url: Data Services origin, e.g. ``http://10.0.0.234:8105``.
        debug: log every status poll (Biosero's ``demo`` flag, which showed a spinner).
        demo: Biosero's name for ``debug``, accepted so ``OrderScheduler(url, demo=True)`` runs.
        timeout: seconds one HTTP call may take, retries included.
        poll_interval: longest pause between status polls while waiting. Default 1 s.
        token: bearer token for a labconsole server bound beyond loopback.
        client: an existing client to use (not closed by :meth:`close`).
    """

    def __init__(self, base_url: str, debug: bool = False, *, demo: bool | None = None,
                 timeout: float = 10.0, poll_interval: float = 1.0, token: str | None = None,
                 client: DataServicesClient | None = None) -> None:
        self.base_url = base_url
        self.debug = debug if demo is None else demo
        self.poll_interval = poll_interval
        self._owns_client = client is None
        self.client = client or DataServicesClient(base_url, timeout, token=token)
        self._pending: set[asyncio.Task[Any]] = set()

    async def initiate_workflow(self, workflow_template_name: str, wait: bool = False, *,
                                input_parameters: list[Any] | None = None,
                                identifier: str | None = None, created_by: str | None = None,
                                notes: str | None = None) -> WorkflowOrder:
        """Create the parent ("master") order of a workflow run and mark it Running.

        Child orders name it as ``parentIdentifier``; :meth:`complete_workflow` ends it. The order
        is assigned to the script (``OrderScheduler``) first, so no module takes it for itself.
        With ``wait`` this returns once the workflow order is running (or, if something else
        ended it meanwhile, final); without, as soon as it is created.

        Raises:
            OrderTemplateNotFoundError: no template of that name (the message lists known ones).
            DataServicesError: the server cannot be reached or refused the order.
        """
        template = await self.client.find_template(workflow_template_name)
        order = Order(identifier=identifier, templateName=template.name,
                      inputParameters=input_parameters or [], createdBy=created_by,
                      notes=notes or f"Workflow initiated: {template.name}")
        order_id = await self.client.create_order(order)
        if await self.client.try_assign(order_id, SCRIPT_MODULE):
            await self.client.update_order_status(order_id, OrderStatus.Running, "Workflow started")
        log.info("workflow %s started as order %s", template.name, order_id)
        current = await self._wait(order_id, FINAL_STATUSES | {OrderStatus.Running}) if wait \
            else await self.client.get_order(order_id)
        return WorkflowOrder.model_validate(current.model_dump())

    async def schedule_order(self, order: Order | Mapping[str, Any], wait: bool = True, *,
                             raise_on_failure: bool = False) -> Order:
        """Create ``order``; with ``wait``, return it once it is final (outputs filled in):
        Complete, or Error / Canceled / Invalid with the reason in ``statusDetails`` (and a
        ``Success`` output that is false or absent, for the documented check).

        Without ``wait`` the created order is returned at once (status Created). ``order`` may
        also be a dict of the Order's fields (camelCase or PascalCase keys, as on the wire); it is
        validated into an :class:`Order` first, and a key that is not a field is refused.

        Raises:
            TypeError: ``order`` is neither an Order nor a dict.
            ModelError: a dict ``order`` has an unknown key or a value that does not validate.
            OrderTemplateNotFoundError: ``order.templateName`` is not a known template.
            OrderFailedError: with ``raise_on_failure``, the order ended in Error, Canceled or
                Invalid; carries the order (``statusDetails`` says why).
            DataServicesError: the server cannot be reached or refused the order.
        """
        order = _as_order(order)
        if not order.templateName:
            raise ValueError("order.templateName is required")
        template = await self.client.find_template(order.templateName)
        order = order.model_copy(update={"templateName": template.name})
        order_id = await self.client.create_order(order)
        log.info("order %s created (template %s)", order_id, template.name)
        if not wait:
            return await self.client.get_order(order_id)
        final = await self._wait(order_id, FINAL_STATUSES)
        if raise_on_failure and final.status in FAILED_STATUSES:
            raise OrderFailedError(final)
        if final.status in FAILED_STATUSES:
            log.warning("order %s ended %s: %s", order_id, final.status.name, final.statusDetails or "")
        return final

    def complete_workflow(self, workflow_order: Order, details: str | None = None) -> asyncio.Task[None]:
        """Mark a workflow order Complete.

        Usable as Biosero's (a plain call, as in its examples) or awaited. The update runs as a
        task at once; :meth:`close` waits for it and raises its error, if any.
        """
        if not workflow_order.identifier:
            raise ValueError("the workflow order has no identifier; was it created?")
        text = details or f"Workflow {workflow_order.templateName} completed successfully"
        task = asyncio.get_running_loop().create_task(self.client.update_order_status(
            workflow_order.identifier, OrderStatus.Complete, text))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return task

    async def close(self) -> None:
        """Finish pending :meth:`complete_workflow` updates and release the connection.

        Raises the first error of a pending update, after closing.
        """
        results = await asyncio.gather(*list(self._pending), return_exceptions=True)
        if self._owns_client:
            await self.client.close()
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _wait(self, order_id: str, until: frozenset[OrderStatus]) -> Order:
        """Poll until the order reaches one of ``until``; return it as it is then."""
        delay = min(0.05, self.poll_interval)
        last: OrderStatus | None = None
        while True:
            status = await self.client.get_order_status(order_id)
            if status is not last:
                log.info("order %s: %s", order_id, status.name)
                last = status
            elif self.debug:
                log.info("order %s: still %s", order_id, status.name)
            if status in until:
                order = await self.client.get_order(order_id)
                if order.status in until:
                    return order
            await asyncio.sleep(delay)
            delay = min(self.poll_interval, delay * 2)


def _as_order(order: Any) -> Order:
    if isinstance(order, Order):
        return order
    if isinstance(order, Mapping):
        known = {name.lower() for name in Order.model_fields}
        unknown = [k for k in order if not isinstance(k, str) or k.lower() not in known]
        if unknown:
            raise ModelError("invalid Order", [Problem(Where("schedule_order(order)", str(k)),
                                                       "not a field of Order") for k in unknown])
        return Order.from_dict(dict(order), source="schedule_order(order)")
    raise TypeError(f"schedule_order expects an Order (or a dict of its fields), "
                    f"not {type(order).__name__}")


__all__ = ["OrderScheduler", "WorkflowOrder"]
