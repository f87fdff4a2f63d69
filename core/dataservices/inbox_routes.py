"""Inbox routes of the embedded Data Services server: a LIMS or a phone page lists and answers
what waits for a person.

``GET /api/v3.0/inbox?state=open&kind=prompt`` lists items (newest escalations first),
``GET /api/v3.0/inbox/{id}`` is one item, ``POST /api/v3.0/inbox/{id}/answer`` with
``{"answeredBy": "ann", "values": {...}, "reason": "..."}`` answers it: a bad value is a 400
naming the field, an item answered before is a 409 naming who answered first. The server's token
(when it is exposed beyond this computer) guards these routes like every other.

Handlers run on the server's thread; answers run on the console's loop (the inbox's), where the
engine decides.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from starlette.responses import Response

from core.dataservices.server import Call, Route, problem
from core.errors import InputError, NotFoundError
from core.inbox import KINDS, STATES, Inbox

ANSWER_TIMEOUT = 30.0


def _bad(message: str, field: str) -> InputError:
    return InputError.at(message, field=field)


def inbox_routes(get_inbox: Callable[[], Inbox | None]) -> list[Route]:
    """The routes, bound to whichever inbox ``get_inbox`` returns when a request comes."""

    def inbox_or_503(c: Call) -> Inbox | Response:
        inbox = get_inbox()
        if inbox is None:
            return problem(503, "InboxUnavailable", "this console has no inbox open", c.request.url.path)
        return inbox

    def item_id(c: Call) -> int:
        raw = c.params["id"]
        if not raw.isdigit():
            raise _bad(f"id: an item number is required, not {raw!r}", "id")
        return int(raw)

    async def listing(c: Call) -> Response:
        inbox = inbox_or_503(c)
        if isinstance(inbox, Response):
            return inbox
        state, kind = c.query.get("state") or "open", c.query.get("kind")
        if state not in (*STATES, "all"):
            raise _bad(f"state: one of {', '.join(STATES)} or all, not {state!r}", "state")
        if kind is not None and kind not in KINDS:
            raise _bad(f"kind: one of {', '.join(KINDS)}, not {kind!r}", "kind")
        limit = c.query.int("limit") or 1000
        items = inbox.items(None if state == "all" else state, kind, limit=min(limit, 10_000))
        return Response(json.dumps([i.as_dict() for i in items], default=str), 200, media_type="application/json")

    async def one(c: Call) -> Response:
        inbox = inbox_or_503(c)
        if isinstance(inbox, Response):
            return inbox
        try:
            item = inbox.item(item_id(c))
        except NotFoundError as exc:
            return problem(404, "InboxItemNotFound", str(exc), c.request.url.path)
        return Response(json.dumps(item.as_dict(), default=str), 200, media_type="application/json")

    async def answer(c: Call) -> Response:
        inbox = inbox_or_503(c)
        if isinstance(inbox, Response):
            return inbox
        number = item_id(c)
        body: dict[str, Any] = c.object()
        who = body.get("answeredBy")
        if not isinstance(who, str) or not who.strip():
            raise _bad("answeredBy: the name of the person answering is required", "answeredBy")
        values = body.get("values", {})
        if not isinstance(values, dict):
            raise _bad("values: an object of field values is required", "values")
        reason = body.get("reason")
        if reason is not None and not isinstance(reason, str):
            raise _bad("reason: text is required", "reason")
        try:
            item = await asyncio.wait_for(inbox.answer_threadsafe(number, values, who=who.strip(), reason=reason),
                                          ANSWER_TIMEOUT)
        except NotFoundError as exc:
            return problem(404, "InboxItemNotFound", str(exc), c.request.url.path)
        return Response(json.dumps(item.as_dict(), default=str), 200, media_type="application/json")

    return [
        Route("GET", "v3.0", "inbox", listing, "Inbox items (open by default), most urgent first",
              ("state", "kind", "limit")),
        Route("GET", "v3.0", "inbox/{id}", one, "One inbox item"),
        Route("POST", "v3.0", "inbox/{id}/answer", answer,
              "Answer an inbox item: {answeredBy, values, reason}", body="object"),
    ]
