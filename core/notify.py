"""Notifications of escalated inbox items beyond the window: a webhook (JSON POST) and e-mail.

When an item waits longer than its kind's threshold the inbox escalates it (:mod:`core.inbox`);
with ``[NOTIFICATIONS]`` in config.ini the escalation also records one *notice* per configured
channel in the same transaction (table ``inbox_notices``), and the :class:`Notifier` sends them:

- ``webhook``: one JSON POST (``{"event": "inbox.escalated", "items": [...]}``) through httpx;
- ``email``: one message through the standard library's smtplib, on a worker thread.

A mail server that takes the message for some recipients and refuses others (smtplib's
``sendmail`` returns the refused ones) has delivered it to the first: the ``email`` notice is
sent, and each refused recipient gets a notice of its own (channel ``email:<address>``) with the
server's reply, retried with backoff to that address alone and shown on the item like any other.

Due notices are sent in batches (at most :data:`BATCH` items per POST or message). A failed
delivery is recorded on the notice (attempts, error) — the inbox shows it on the item — and
retried after ``backoff``, doubling each time (capped), until ``attempts`` were made; then it is
``failed`` and stays visible until an operator sends it again (:meth:`Notifier.resend`). A
notice whose item was answered before it went out is dropped. Notices are rows, so a restart
resumes where delivery stopped. Nothing here blocks the loop.

config.ini::

    [NOTIFICATIONS]
    webhook_url = https://lims.example.org/hooks/labconsole
    webhook_token = s3cret            ; sent as "Authorization: Bearer s3cret"
    email_to = night-shift@example.org, ann@example.org
    email_from = labconsole@example.org
    smtp_host = mail.example.org
    smtp_port = 587
    smtp_security = starttls          ; none, starttls or ssl
    smtp_user = labconsole
    smtp_password = ...
    attempts = 6                      ; deliveries tried before giving up
    backoff = 30s                     ; first wait after a failure (then doubled, at most 1h)
    timeout = 10s                     ; per delivery

This module never imports Qt.
"""

from __future__ import annotations

import asyncio
import json
import logging
import smtplib
import socket
import sqlite3
import ssl
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate, getaddresses, make_msgid
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from core.clock import Clock, SystemClock, sleep_or_wake
from core.durations import DurationError, format_duration, parse_duration
from core.errors import ConfigError, InputError
from core.inifile import line_of, read_section
from core.tasks import Supervisor

log = logging.getLogger(__name__)

CONFIG_SECTION = "NOTIFICATIONS"
CHANNELS = ("webhook", "email")
CHANNEL_LABELS = {"webhook": "Webhook", "email": "E-mail"}
NOTICE_STATES = ("pending", "sent", "failed", "dropped")
BATCH = 100
"""Items per webhook POST or e-mail message at most."""
MAX_BACKOFF = 3600.0
SECURITY = ("none", "starttls", "ssl")
_KEYS = ("webhook_url", "webhook_token", "email_to", "email_from", "smtp_host", "smtp_port", "smtp_security",
         "smtp_user", "smtp_password", "attempts", "backoff", "timeout")
KIND_LABELS = {"prompt": "Prompt", "error": "Paused error", "approval": "Approval", "lock": "Hands in cell",
               "proposal": "Playbook proposal"}


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class NotifySettings:
    """Where escalated items go (see the module docstring); no channel: no notifications."""

    webhook_url: str | None = None
    webhook_token: str | None = None
    email_to: tuple[str, ...] = ()
    email_from: str = "labconsole@localhost"
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_security: str = "none"
    smtp_user: str | None = None
    smtp_password: str | None = field(default=None, repr=False)
    attempts: int = 6
    backoff: float = 30.0
    timeout: float = 10.0
    source: str = "default"

    @property
    def channels(self) -> tuple[str, ...]:
        return tuple(c for c, on in (("webhook", self.webhook_url), ("email", self.email_to)) if on)

    def delay(self, attempts: int) -> float:
        """Seconds to wait after the ``attempts``-th failed delivery."""
        return float(min(MAX_BACKOFF, self.backoff * 2.0 ** max(0, attempts - 1)))

    @classmethod
    def from_ini(cls, path: Path | None) -> NotifySettings:
        """``[NOTIFICATIONS]`` of a config.ini (absent: no notifications). Every bad entry is
        refused naming the file, line and key."""
        found = read_section(path, CONFIG_SECTION)
        if found is None:
            return cls()
        section, text = found

        def bad(key: str, message: str) -> InputError:
            return ConfigError.at(message, file=path, field=f"{CONFIG_SECTION}.{key}",
                                  line=line_of(text, CONFIG_SECTION, key))

        unknown = [k for k in section if k not in _KEYS]
        if unknown:
            raise bad(unknown[0], f"unknown setting '{unknown[0]}' (known: {', '.join(_KEYS)})")
        value = {k: section.get(k, fallback="").strip() for k in _KEYS}
        out: dict[str, Any] = {"source": str(path)}
        if value["webhook_url"]:
            parts = urlsplit(value["webhook_url"])
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise bad("webhook_url", f"{value['webhook_url']!r} is not an http:// or https:// URL")
            out["webhook_url"] = value["webhook_url"]
        if value["webhook_token"]:
            if not value["webhook_url"]:
                raise bad("webhook_token", "a webhook token without webhook_url")
            out["webhook_token"] = value["webhook_token"]
        if value["email_to"]:
            addresses = [a for _, a in getaddresses([value["email_to"]])]
            wrong = next((a for a in addresses if not _is_address(a)), None)
            if wrong is not None or not addresses:
                raise bad("email_to", f"{wrong or value['email_to']!r} is not an e-mail address")
            out["email_to"] = tuple(addresses)
            if not value["smtp_host"]:
                raise bad("email_to", "e-mail needs smtp_host (the mail server to send through)")
        if value["email_from"]:
            if not _is_address(value["email_from"]):
                raise bad("email_from", f"{value['email_from']!r} is not an e-mail address")
            out["email_from"] = value["email_from"]
        if value["smtp_host"]:
            out["smtp_host"] = value["smtp_host"]
        if value["smtp_security"]:
            if value["smtp_security"].lower() not in SECURITY:
                raise bad("smtp_security", f"{value['smtp_security']!r} is not one of {', '.join(SECURITY)}")
            out["smtp_security"] = value["smtp_security"].lower()
        if value["smtp_port"]:
            if not value["smtp_port"].isdigit() or not 0 < int(value["smtp_port"]) < 65536:
                raise bad("smtp_port", f"{value['smtp_port']!r} is not a port number (1-65535)")
            out["smtp_port"] = int(value["smtp_port"])
        elif out.get("smtp_security") == "ssl":
            out["smtp_port"] = 465
        elif out.get("smtp_security") == "starttls":
            out["smtp_port"] = 587
        if value["smtp_user"]:
            out["smtp_user"] = value["smtp_user"]
            out["smtp_password"] = value["smtp_password"]
        elif value["smtp_password"]:
            raise bad("smtp_password", "a password without smtp_user")
        if value["attempts"]:
            if not value["attempts"].isdigit() or int(value["attempts"]) < 1:
                raise bad("attempts", f"{value['attempts']!r} is not a whole number of at least 1")
            out["attempts"] = int(value["attempts"])
        for key in ("backoff", "timeout"):
            if value[key]:
                try:
                    seconds = parse_duration(value[key])
                except DurationError as exc:
                    raise bad(key, str(exc)) from None
                if seconds <= 0:
                    raise bad(key, f"{value[key]!r} must be more than 0")
                out[key] = seconds
        return cls(**out)


def _is_address(text: str) -> bool:
    try:
        address = Address(addr_spec=text)
    except (ValueError, IndexError):
        return False
    return bool(address.username and address.domain)


# --------------------------------------------------------------------------- records


RECIPIENT_PREFIX = "email:"
"""Channel of a notice owed to one e-mail recipient the server refused: ``email:<address>``."""


def recipient_of(channel: str) -> str | None:
    """The address of a recipient's own notice (None for a channel's notice)."""
    return channel[len(RECIPIENT_PREFIX):] if channel.startswith(RECIPIENT_PREFIX) else None


class Notice(NamedTuple):
    """One item's notification on one channel (or to one refused e-mail recipient), as the
    inbox shows it."""

    item_id: int
    channel: str
    state: str
    attempts: int
    due: float
    error: str | None
    sent_at: float | None

    @property
    def recipient(self) -> str | None:
        return recipient_of(self.channel)

    @property
    def failing(self) -> bool:
        """A delivery failed and the notice is not sent (still retrying, or given up)."""
        return self.error is not None and self.state in ("pending", "failed")

    def describe(self, now: float | None = None) -> str:
        """One line for people: ``"Webhook notification sent"``, ``"E-mail notification failed
        after 6 attempts, gave up: ..."``."""
        recipient = self.recipient
        label = f"E-mail notification to {recipient}" if recipient is not None else \
            f"{CHANNEL_LABELS.get(self.channel, self.channel)} notification"
        tries = f"{self.attempts} attempt{'s' if self.attempts != 1 else ''}"
        if self.state == "sent":
            return f"{label} sent" + (f" after {tries}" if self.attempts > 1 else "")
        if self.state == "dropped":
            return f"{label} not sent (answered first)"
        if self.state == "failed":
            return f"{label} failed after {tries}, gave up: {self.error}"
        if self.error is None:
            return f"{label} being sent"
        wait = "" if now is None else f", next try in {format_duration(max(0.0, self.due - now))}"
        return f"{label} failed ({tries}{wait}): {self.error}"

    def as_dict(self) -> dict[str, Any]:
        recipient = self.recipient
        return {"channel": "email" if recipient is not None else self.channel, "recipient": recipient,
                "state": self.state, "attempts": self.attempts, "due": self.due, "error": self.error,
                "sentAt": self.sent_at}


NOTICE_COLUMNS = "item_id, channel, state, attempts, due, error, sent_at"


def notices_of(conn: sqlite3.Connection, item_id: int) -> list[Notice]:
    return [Notice(*r) for r in conn.execute(
        f"SELECT {NOTICE_COLUMNS} FROM inbox_notices WHERE item_id=? ORDER BY channel", (item_id,))]


def failing_notices(conn: sqlite3.Connection) -> dict[int, list[Notice]]:
    """item id -> its notices whose delivery failed (retrying or given up)."""
    out: dict[int, list[Notice]] = {}
    for r in conn.execute(f"SELECT {NOTICE_COLUMNS} FROM inbox_notices WHERE error IS NOT NULL "
                          "AND state IN ('pending', 'failed') ORDER BY item_id, channel"):
        out.setdefault(r[0], []).append(Notice(*r))
    return out


def schedule_op(conn: sqlite3.Connection, item_ids: Iterable[int], channels: Sequence[str], now: float) -> int:
    """Notices for ``item_ids`` on each channel, due now (inside the escalation's transaction)."""
    rows = [(i, c, now) for i in item_ids for c in channels]
    conn.executemany("INSERT OR IGNORE INTO inbox_notices (item_id, channel, due) VALUES (?,?,?)", rows)
    return len(rows)


class Due(NamedTuple):
    """A notice due now with what its message says about the item."""

    item_id: int
    channel: str
    attempts: int
    open: bool
    kind: str
    priority: int
    created: float
    title: str
    run_id: str | None
    step_id: str | None
    order_id: str | None
    instrument: str | None

    def as_dict(self, now: float) -> dict[str, Any]:
        return {"id": self.item_id, "kind": self.kind, "priority": self.priority, "title": self.title,
                "runId": self.run_id, "stepId": self.step_id, "orderId": self.order_id,
                "instrument": self.instrument, "created": self.created, "ageSeconds": round(now - self.created, 1)}


def read_due(conn: sqlite3.Connection, channel: str, now: float, limit: int = BATCH) -> list[Due]:
    return [Due(r[0], r[1], r[2], r[3] == "open", *r[4:]) for r in conn.execute(
        "SELECT n.item_id, n.channel, n.attempts, i.state, i.kind, i.priority, i.created, i.title, i.run_id, "
        "i.step_id, i.order_id, i.instrument FROM inbox_notices n JOIN inbox i ON i.id = n.item_id "
        "WHERE n.state='pending' AND n.channel=? AND n.due <= ? ORDER BY i.priority DESC, i.created, i.id LIMIT ?",
        (channel, now, limit))]


def next_due(conn: sqlite3.Connection, channels: Sequence[str]) -> float | None:
    marks = ",".join("?" * len(channels))
    recipients = " OR channel LIKE 'email:%'" if "email" in channels else ""
    row = conn.execute(f"SELECT MIN(due) FROM inbox_notices WHERE state='pending' AND (channel IN ({marks})"
                       f"{recipients})", tuple(channels)).fetchone()
    return float(row[0]) if row and row[0] is not None else None


def due_recipients(conn: sqlite3.Connection, now: float) -> list[str]:
    """The channels (``email:<address>``) of refused recipients with a notice due now."""
    return [r[0] for r in conn.execute(
        "SELECT DISTINCT channel FROM inbox_notices WHERE state='pending' AND channel LIKE 'email:%' AND due <= ? "
        "ORDER BY channel", (now,))]


class DeliveryError(Exception):
    """A receiver refused the notification (HTTP status, SMTP reply)."""


# --------------------------------------------------------------------------- the sender


class Notifier:
    """Sends due notices (see the module docstring) on ``clock``; ``bus`` hears what changed."""

    def __init__(self, store: Any, settings: NotifySettings, *, clock: Clock | None = None, bus: Any = None,
                 batch: int = BATCH) -> None:
        self.store = store
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        self.bus = bus
        self.batch = batch
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.sent = 0
        """Messages (POSTs, e-mails) delivered since start."""

    @classmethod
    def from_config(cls, store: Any, config: Path | None, **options: Any) -> Notifier | None:
        """The notifier ``[NOTIFICATIONS]`` of ``config`` asks for, or None without channels."""
        settings = NotifySettings.from_ini(config)
        return cls(store, settings, **options) if settings.channels else None

    @property
    def channels(self) -> tuple[str, ...]:
        return self.settings.channels

    # ------------------------------------------------------------------ running

    def start(self, tasks: Supervisor) -> None:
        if self._task is None or self._task.done():
            self._task = tasks.spawn(self.run(), "inbox-notifications")

    def wake(self) -> None:
        """New notices were recorded: look at them now."""
        self._wake.set()

    async def run(self) -> None:
        """Deliver due notices, then sleep until the next one is due (or new ones arrive)."""
        while True:
            try:
                due = await self.deliver_due()
            except Exception:  # noqa: BLE001 - a store problem is logged; the next round tries again
                log.exception("inbox notifications failed")
                due = self.clock.now() + self.settings.backoff
            wait = None if due is None else max(0.0, due - self.clock.now())
            await sleep_or_wake(self.clock, wait, self._wake)

    async def deliver_due(self) -> float | None:
        """Send every notice due now (batched per channel); returns when the next one is due."""
        channels = self.channels
        while True:
            now = self.clock.now()
            worked = False
            targets = list(channels)
            if "email" in channels:
                targets += await self.store.read(lambda c, t=now: due_recipients(c, t))
            for channel in targets:
                due = await self.store.read(lambda c, ch=channel, t=now: read_due(c, ch, t, self.batch))
                if not due:
                    continue
                worked = True
                live = [d for d in due if d.open]
                refused: dict[str, str] = {}
                if not live:
                    error = None
                elif channel == "email" or recipient_of(channel) is not None:
                    error, refused = await self.send_mail(live, now, recipient_of(channel))
                else:
                    error = await self.send(channel, live, now)
                await self.store.write(self._outcome_op(due, error, self.clock.now(), refused))
                if self.bus is not None:
                    from core.inbox import InboxChanged

                    self.bus.publish(InboxChanged(state="notified"))
            if not worked:
                found: float | None = await self.store.read(lambda c: next_due(c, channels))
                return found

    def _outcome_op(self, due: Sequence[Due], error: str | None, now: float,
                    refused: Mapping[str, str] | None = None) -> Any:
        """Record how a delivery went: sent, failed (retried after the backoff, or given up), or
        dropped; ``refused``: recipients the mail server refused while taking the message for the
        others, each owed a notice of its own (one failed attempt, due after the backoff)."""
        settings = self.settings

        def op(conn: sqlite3.Connection) -> None:
            for d in due:
                if not d.open:
                    conn.execute("UPDATE inbox_notices SET state='dropped' WHERE item_id=? AND channel=?",
                                 (d.item_id, d.channel))
                elif error is None:
                    conn.execute("UPDATE inbox_notices SET state='sent', attempts=attempts+1, error=NULL, sent_at=? "
                                 "WHERE item_id=? AND channel=?", (now, d.item_id, d.channel))
                    for address, reply in (refused or {}).items():
                        conn.execute(
                            "INSERT INTO inbox_notices (item_id, channel, state, attempts, due, error) "
                            "VALUES (?, ?, 'pending', 1, ?, ?) ON CONFLICT (item_id, channel) DO UPDATE SET "
                            "state='pending', attempts=attempts+1, due=excluded.due, error=excluded.error",
                            (d.item_id, RECIPIENT_PREFIX + address, now + settings.delay(1),
                             f"mail server {settings.smtp_host} refused {address}: {reply}"))
                else:
                    attempts = d.attempts + 1
                    state = "failed" if attempts >= settings.attempts else "pending"
                    conn.execute("UPDATE inbox_notices SET state=?, attempts=?, error=?, due=? "
                                 "WHERE item_id=? AND channel=?",
                                 (state, attempts, error, now + settings.delay(attempts), d.item_id, d.channel))

        return op

    async def resend(self, item_id: int, *, who: str, reason: str | None = None) -> int:
        """Send an item's failed notices again (attempts start over); audited. Returns how many."""
        now = self.clock.now()
        audit = self.store.audit_op(who, "resend notification", f"inbox/{item_id}", reason, {"item": item_id})

        def op(conn: sqlite3.Connection) -> int:
            count = conn.execute("UPDATE inbox_notices SET state='pending', attempts=0, due=? WHERE item_id=? "
                                 "AND state='failed'", (now, item_id)).rowcount
            if count:
                audit(conn)
            return int(count)

        count = int(await self.store.write(op))
        if count:
            self.wake()
        return count

    # ------------------------------------------------------------------ channels

    async def send(self, channel: str, items: Sequence[Due], now: float) -> str | None:
        """Deliver one message about ``items``; None when delivered (to every recipient), else
        what went wrong."""
        if channel == "email":
            error, refused = await self.send_mail(items, now)
            return error if error is not None or not refused else \
                f"mail server {self.settings.smtp_host} refused {_refusals(refused)}"
        try:
            if channel == "webhook":
                await self._post(items, now)
            else:
                return f"unknown channel {channel!r}"
        except DeliveryError as exc:
            return str(exc)
        self.sent += 1
        return None

    async def send_mail(self, items: Sequence[Due], now: float, recipient: str | None = None) -> tuple[
            str | None, dict[str, str]]:
        """Mail ``items`` to every configured recipient (or to ``recipient`` alone): (what went
        wrong or None, the recipients the server refused while taking it for the others, each
        with its reply)."""
        try:
            message = self.message(items, now)
            refused = await asyncio.to_thread(self._mail, message, [recipient] if recipient else None)
        except (smtplib.SMTPException, OSError) as exc:
            return self._mail_error(exc), {}
        self.sent += 1
        return None, {address: _reply(reply) for address, reply in refused.items()}

    def _mail_error(self, exc: BaseException) -> str:
        s = self.settings
        if isinstance(exc, smtplib.SMTPResponseException):
            text = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else exc.smtp_error
            return f"mail server {s.smtp_host} refused: {exc.smtp_code} {text}"
        if isinstance(exc, smtplib.SMTPRecipientsRefused):
            return f"mail server {s.smtp_host} refused every recipient: {_refusals(exc.recipients)}"
        return f"cannot send mail through {s.smtp_host}:{s.smtp_port}: {exc or type(exc).__name__}"

    def payload(self, items: Sequence[Due], now: float) -> dict[str, Any]:
        return {"event": "inbox.escalated", "source": "labconsole", "host": socket.gethostname(),
                "sent": formatdate(now, usegmt=True), "count": len(items),
                "items": [d.as_dict(now) for d in items]}

    async def _post(self, items: Sequence[Due], now: float) -> None:
        s = self.settings
        assert s.webhook_url is not None
        headers = {"User-Agent": "labconsole"}
        if s.webhook_token:
            headers["Authorization"] = f"Bearer {s.webhook_token}"
        # Imported here, not with the module: the window only pays for httpx (about 20 MB with the
        # command-line modules its package imports) once a webhook is sent.
        import httpx

        try:
            async with httpx.AsyncClient(timeout=s.timeout, follow_redirects=False) as http:
                response = await http.post(s.webhook_url, content=json.dumps(self.payload(items, now)),
                                           headers={**headers, "Content-Type": "application/json"})
        except httpx.TimeoutException:
            raise DeliveryError(f"no answer from {s.webhook_url} within {format_duration(s.timeout)}") from None
        except httpx.HTTPError as exc:
            raise DeliveryError(f"cannot reach {s.webhook_url}: {exc or type(exc).__name__}") from None
        if not 200 <= response.status_code < 300:
            body = " ".join(response.text.split())[:200]
            raise DeliveryError(f"{s.webhook_url} answered HTTP {response.status_code}" + (f": {body}" if body else ""))

    def message(self, items: Sequence[Due], now: float) -> EmailMessage:
        s = self.settings
        message = EmailMessage()
        if len(items) == 1:
            d = items[0]
            subject = f"labconsole: {KIND_LABELS.get(d.kind, d.kind)} waiting " \
                      f"{format_duration(max(0.0, now - d.created))}: {d.title}"
        else:
            subject = f"labconsole: {len(items)} inbox items waiting too long"
        message["Subject"] = " ".join(subject.split())[:180]
        message["From"] = s.email_from
        message["To"] = ", ".join(s.email_to)
        message["Date"] = formatdate(now, localtime=True)
        host = socket.gethostname() or "localhost"
        message["Message-ID"] = make_msgid("labconsole", domain=host)
        lines = [f"{len(items)} item(s) in the labconsole inbox on {host} have waited longer than their "
                 "threshold:", ""]
        for d in items:
            lines.append(f"- [{KIND_LABELS.get(d.kind, d.kind)}, priority {d.priority}, waiting "
                         f"{format_duration(max(0.0, now - d.created))}] {d.title}")
            concerns = ", ".join(p for p in (d.run_id and f"run {d.run_id}", d.step_id and f"step {d.step_id}",
                                             d.instrument and f"instrument {d.instrument}") if p)
            if concerns:
                lines.append(f"  {concerns} (inbox item {d.item_id})")
        lines += ["", "Answer them in the console's Inbox, or through the Data Services endpoint "
                  "/api/v3.0/inbox."]
        message.set_content("\n".join(lines))
        return message

    def _mail(self, message: EmailMessage, to: Sequence[str] | None = None) -> dict[str, Any]:
        """Send ``message`` (on a worker thread: smtplib blocks) to its To addresses, or to ``to``;
        returns the recipients refused while others took it (all refused raises)."""
        s = self.settings
        assert s.smtp_host is not None
        local = socket.gethostname() or "localhost"
        smtp: smtplib.SMTP
        if s.smtp_security == "ssl":
            smtp = smtplib.SMTP_SSL(s.smtp_host, s.smtp_port, local_hostname=local, timeout=s.timeout,
                                    context=ssl.create_default_context())
        else:
            smtp = smtplib.SMTP(s.smtp_host, s.smtp_port, local_hostname=local, timeout=s.timeout)
        with smtp:
            if s.smtp_security == "starttls":
                smtp.starttls(context=ssl.create_default_context())
            if s.smtp_user:
                smtp.login(s.smtp_user, s.smtp_password or "")
            refused: dict[str, Any] = smtp.send_message(message, to_addrs=list(to) if to else None)
        return refused


def _reply(reply: Any) -> str:
    """An SMTP reply as text: ``(550, b"5.1.1 no such user")`` -> ``"550 5.1.1 no such user"``."""
    code, text = (reply if isinstance(reply, tuple) else (None, reply))
    text = text.decode(errors="replace") if isinstance(text, bytes) else str(text)
    return f"{code} {text}" if code else text


def _refusals(recipients: Mapping[str, Any]) -> str:
    return ", ".join(f"{address} ({_reply(reply)})" for address, reply in recipients.items())
