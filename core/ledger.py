"""The order ledger: the store and the event bus, kept in step for every change to an order.

Every mutating call goes store first, bus second: the change is committed, then its event is
published. Operator actions are written to the audit log with who and why in the same transaction
as the change they cause. The engine and the Data Services link write orders through it;
:class:`core.runtime.Runtime` is the one facade the window and the command line use.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any

from core.events import EventBus, OperatorAction, OrderCreated, OrderStatusChanged, OrderUpdated
from core.orders import Order, OrderStatus
from core.store import StatusChange, Store
from core.users import os_user


class Ledger:
    """Store + event bus, and the operations on orders that keep them in step."""

    def __init__(self, store: Store, bus: EventBus | None = None) -> None:
        self.store = store
        self.bus = bus or EventBus()

    async def create_order(self, order: Order, *, who: str = "labconsole", why: str | None = None,
                           numeric_priority: int = 50) -> Order:
        created, row = await self.store.insert_order(order, who=who, why=why,
                                                     numeric_priority=numeric_priority)
        self.bus.publish(OrderCreated(order_id=created.identifier or "", parent_id=created.parentIdentifier,
                                      template_name=created.templateName, status=created.status,
                                      row=row))
        return created

    async def set_status(self, order_id: str, to_status: OrderStatus, *, who: str = "labconsole",
                         why: str | None = None, expected: Iterable[OrderStatus] | None = None,
                         changes: dict[str, Any] | None = None) -> StatusChange:
        change = await self.store.set_status(order_id, to_status, who=who, why=why,
                                             expected=expected, changes=changes)
        self.publish_change(change, who, why)
        return change

    def publish_change(self, change: StatusChange, who: str, why: str | None) -> None:
        self.bus.publish(OrderStatusChanged(order_id=change.order_id, from_status=change.from_status,
                                            to_status=change.to_status, who=who, why=why,
                                            seq=change.seq, row=change.row))

    async def update_order(self, order_id: str, changes: dict[str, Any],
                           numeric_priority: int | None = None) -> Order:
        order, row = await self.store.write(self.store.update_op(order_id, changes, numeric_priority))
        self.bus.publish(OrderUpdated(order_id=order_id, fields=tuple(changes), row=row))
        return order

    async def operator_status(self, order_id: str, to_status: OrderStatus, *, action: str,
                              reason: str | None, who: str | None = None,
                              expected: Iterable[OrderStatus] | None = None) -> StatusChange:
        """An operator-requested transition: status change and audit entry in one transaction."""
        who = who or os_user()
        status_op = self.store.status_op(order_id, to_status, who=who, why=reason, expected=expected)
        audit_op = self.store.audit_op(who, action, order_id, reason)

        def both(conn: sqlite3.Connection) -> StatusChange:
            change = status_op(conn)
            audit_op(conn)
            return change

        change = await self.store.write(both)
        self.publish_change(change, who, reason)
        self.bus.publish(OperatorAction(who=who, action=action, target=order_id, reason=reason))
        return change

    def get_order(self, order_id: str) -> Order:
        return self.store.get_order(order_id)
