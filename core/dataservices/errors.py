"""Errors of the Data Services part, placed in the tree of :mod:`core.errors`::

    LabconsoleError
    ├── NotFoundError
    │   ├── OrderNotFoundError               (core.errors)
    │   ├── OrderTemplateNotFoundError       a template name Data Services does not know
    │   └── EventNotFoundError               an event id Data Services does not know
    ├── DataServicesError                    (core.errors) URL + cause
    │   └── CreateOutcomeUnknownError        a create whose answer was lost; never resent blindly
    ├── OrderFailedError                     an order awaited by OrderScheduler ended badly
    └── StateError                           (core.errors)
        └── StoredOrderUnreadableError       an order stored (by an older version) unreadably
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.errors import DataServicesError, LabconsoleError, NotFoundError, StateError

if TYPE_CHECKING:
    from core.orders import Order


class OrderTemplateNotFoundError(NotFoundError):
    """No order template of this name. ``available`` lists some known names, if fetched."""

    def __init__(self, name: str, available: list[str] | None = None) -> None:
        self.name = name
        self.available = available
        known = ""
        if available is not None:
            shown = ", ".join(repr(n) for n in available[:10])
            more = f" and {len(available) - 10} more" if len(available) > 10 else ""
            known = f"; known templates: {shown or 'none'}{more}"
        super().__init__(f"OrderTemplateNotFound: order template '{name}' was not found{known}")


class EventNotFoundError(NotFoundError):
    def __init__(self, event_id: str) -> None:
        self.event_id = event_id
        super().__init__(f"Event with EventId '{event_id}' was not found")


class CreateOutcomeUnknownError(DataServicesError):
    """A create was sent but its answer was lost, and the server does not honour idempotency keys.

    Resending could create a second order, so the client does not. ``idempotency_key`` identifies
    the attempt; the caller (an operator, or an outbox) must look the order up before retrying.
    """

    def __init__(self, url: str, cause: str, idempotency_key: str) -> None:
        self.idempotency_key = idempotency_key
        super().__init__(url, f"{cause}; the order may or may not have been created "
                              f"(idempotency key {idempotency_key}); not resent to avoid a duplicate")


class OrderFailedError(LabconsoleError):
    """An awaited order ended in Error, Canceled or Invalid. Carries the order as last read."""

    def __init__(self, order: Order) -> None:
        self.order = order
        self.status = order.status
        self.status_details = order.statusDetails
        errors = f"; validation errors: {'; '.join(order.validationErrors)}" \
            if order.validationErrors else ""
        super().__init__(f"order {order.identifier} ({order.templateName}) ended {order.status.name}: "
                         f"{order.statusDetails or 'no details given'}{errors}")


class StoredOrderUnreadableError(StateError):
    """An order whose stored data cannot be read back (e.g. text with a lone surrogate, written
    before such input was refused). It cannot be changed through Data Services; ``reason`` says
    which field is wrong."""

    def __init__(self, order_id: str, reason: str) -> None:
        self.order_id = order_id
        self.reason = reason
        super().__init__(f"OrderUnreadable: order '{order_id}' is stored with data that cannot be "
                         f"read back ({reason}); it cannot be changed through Data Services")
