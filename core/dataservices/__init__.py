"""Biosero Data Services: client, ``OrderScheduler``, config and an embedded server.

Import what Biosero scripts import, from here::

    from core.dataservices import OrderScheduler, Order, Parameter, ParameterCollection, ParameterValueType

* :mod:`core.dataservices.client`: :class:`DataServicesClient` (async, httpx) and its contract
  :class:`DataServicesApi`;
* :mod:`core.dataservices.scheduler`: :class:`OrderScheduler` (Biosero's workflow-script API);
* :mod:`core.dataservices.config`: the URL from flag, environment or ``config.ini``;
* :mod:`core.dataservices.server`: :class:`EmbeddedDataServices`, a wire-compatible server over
  the store, on its own thread;
* :mod:`core.dataservices.models`: :class:`OrderTemplate` and :class:`EventMessage`.
"""

from core.dataservices.backend import ServerChange
from core.dataservices.client import DataServicesApi, DataServicesClient, RetryPolicy
from core.dataservices.config import DataServicesSettings, check_url, resolve_url, url_from_ini
from core.dataservices.errors import (
    CreateOutcomeUnknownError,
    EventNotFoundError,
    OrderFailedError,
    OrderTemplateNotFoundError,
)
from core.dataservices.models import EventMessage, OrderTemplate
from core.dataservices.scheduler import OrderScheduler, WorkflowOrder
from core.dataservices.server import EmbeddedDataServices
from core.orders import (
    ModuleRestrictionStrategy,
    ModuleStatus,
    Order,
    OrderPriority,
    OrderStatus,
    Parameter,
    ParameterCollection,
    ParameterValueType,
    SchedulingStrategy,
)

__all__ = [
    "CreateOutcomeUnknownError",
    "DataServicesApi",
    "DataServicesClient",
    "DataServicesSettings",
    "EmbeddedDataServices",
    "EventMessage",
    "EventNotFoundError",
    "ModuleRestrictionStrategy",
    "ModuleStatus",
    "Order",
    "OrderFailedError",
    "OrderPriority",
    "OrderScheduler",
    "OrderStatus",
    "OrderTemplate",
    "OrderTemplateNotFoundError",
    "Parameter",
    "ParameterCollection",
    "ParameterValueType",
    "RetryPolicy",
    "SchedulingStrategy",
    "ServerChange",
    "WorkflowOrder",
    "check_url",
    "resolve_url",
    "url_from_ini",
]
