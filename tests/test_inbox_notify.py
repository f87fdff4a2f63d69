"""Escalated inbox items notified beyond the window: a real HTTP receiver and a real SMTP server on
127.0.0.1 refuse the first delivery and take the retry; a delivery that keeps failing is given up,
shown on the item, and sent again on request."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from enginekit import Kit, run_kit, template
from notifykit import Mailbox, Receiver, free_port

from core.clock import SystemClock
from core.errors import ConfigError
from core.inbox import Inbox, NewItem, escalate_op, open_item_op, read_rows
from core.notify import Notifier, NotifySettings
from core.store import Store

ASK = template("AskNight", [
    {"id": "ask", "kind": "prompt", "parameters": {"message": "Refill the tip rack",
                                                   "fields": [{"name": "done", "type": "yesno"}]}}])


@pytest.fixture
def mailbox():
    box = Mailbox(refuse=1)
    controller = Controller(box, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield box, controller.port
    controller.stop()


def write_config(directory: Path, text: str) -> Path:
    path = directory / "config.ini"
    path.write_text(text)
    return path


def test_a_bad_notifications_section_is_refused_with_file_line_and_key(tmp_path):
    assert NotifySettings.from_ini(None).channels == ()
    for body, key, words in [
        ("webhook_url = ftp://x/y", "webhook_url", "not an http:// or https:// URL"),
        ("email_to = ann@example.org", "email_to", "needs smtp_host"),
        ("email_to = not-an-address\nsmtp_host = 127.0.0.1", "email_to", "not an e-mail address"),
        ("webhook_url = http://127.0.0.1/h\nattempts = 0", "attempts", "at least 1"),
        ("webhook_url = http://127.0.0.1/h\nbackoff = soon", "backoff", "soon"),
        ("email_to = a@b.org\nsmtp_host = h\nsmtp_port = 99999", "smtp_port", "not a port number"),
        ("email_to = a@b.org\nsmtp_host = h\nsmtp_security = tls13", "smtp_security", "none, starttls, ssl"),
        ("webhook_ulr = http://127.0.0.1/h", "webhook_ulr", "unknown setting"),
    ]:
        path = write_config(tmp_path, f"[STORE]\nbackup_keep = 3\n\n[NOTIFICATIONS]\n{body}\n")
        with pytest.raises(ConfigError) as exc:
            NotifySettings.from_ini(path)
        where = exc.value.problems[0].where
        assert (where.file, where.field) == (str(path), f"NOTIFICATIONS.{key}")
        assert where.line == 5 + body.split("\n").index(next(line for line in body.split("\n")
                                                              if line.startswith(key)))
        assert words in str(exc.value)
    good = NotifySettings.from_ini(write_config(tmp_path, "[notifications]\nwebhook_url = https://lims.example/h\n"
                                                "email_to = Ann <ann@example.org>, bob@example.org\n"
                                                "smtp_host = mail.example.org\nsmtp_security = starttls\n"
                                                "backoff = 1m\n"))
    assert good.channels == ("webhook", "email")
    assert (good.email_to, good.smtp_port, good.backoff, good.delay(3)) == \
        (("ann@example.org", "bob@example.org"), 587, 60.0, 240.0)
    assert good.delay(50) == 3600.0


def test_webhook_refused_once_is_shown_on_the_item_then_retried_after_the_backoff(data_dir):
    async def scenario(kit: Kit, url: str):
        settings = NotifySettings(webhook_url=url, webhook_token="s3cret", backoff=30.0, attempts=4)
        notifier = Notifier(kit.store, settings, clock=kit.clock, bus=kit.ledger.bus)
        inbox = Inbox(kit.engine, escalate_after={"prompt": 600}, notifier=notifier)
        await kit.publish(ASK)
        run_id = await kit.run("AskNight")
        await kit.clock.settle()
        assert await notifier.deliver_due() is None  # nothing escalated: nothing to send
        await kit.clock.advance(700)
        assert await inbox.escalate() == 1
        [item] = inbox.items()
        assert [(n.channel, n.state, n.attempts) for n in inbox.item(item.id).notices] == [("webhook", "pending", 0)]
        retry_at = await notifier.deliver_due()
        failed = inbox.item(item.id)
        assert retry_at == pytest.approx(kit.clock.now() + 30.0)
        assert failed.notice_failed and failed.notices[0].attempts == 1
        assert "answered HTTP 503: receiver is restarting" in failed.notices[0].describe()
        assert failed.as_dict()["notifications"][0]["state"] == "pending"
        row = kit.store.read_sync(read_rows)[0]
        assert "Webhook notification failed (1 attempt)" in row.notice and "HTTP 503" in row.notice
        assert await notifier.deliver_due() == retry_at  # not due yet: nothing sent
        await kit.clock.advance(30)
        assert await notifier.deliver_due() is None
        sent = inbox.item(item.id)
        assert (sent.notices[0].state, sent.notices[0].attempts, sent.notice_failed) == ("sent", 2, False)
        assert kit.store.read_sync(read_rows)[0].notice == ""
        assert await inbox.escalate() == 0  # escalated once: notified once
        return run_id, item.id

    with Receiver([503]) as receiver:
        run_id, item_id = run_kit(data_dir, lambda kit: scenario(kit, receiver.url))
    [body] = receiver.bodies
    assert body["event"] == "inbox.escalated" and body["count"] == 1
    assert {k: body["items"][0][k] for k in ("id", "kind", "runId", "stepId", "title")} == \
        {"id": item_id, "kind": "prompt", "runId": run_id, "stepId": "ask", "title": "Refill the tip rack"}
    assert body["items"][0]["ageSeconds"] >= 700
    assert receiver.headers[0]["Authorization"] == "Bearer s3cret"


def test_email_refused_once_by_a_real_smtp_server_is_retried(data_dir, mailbox):
    box, port = mailbox

    async def scenario(kit: Kit):
        settings = NotifySettings(email_to=("night@example.org", "ann@example.org"), email_from="lab@example.org",
                                  smtp_host="127.0.0.1", smtp_port=port, backoff=10.0, timeout=10.0)
        notifier = Notifier(kit.store, settings, clock=kit.clock, bus=kit.ledger.bus)
        inbox = Inbox(kit.engine, escalate_after={"prompt": 600}, notifier=notifier)
        await kit.publish(ASK)
        await kit.run("AskNight")
        await kit.run("AskNight")
        await kit.clock.settle()
        await kit.clock.advance(900)
        assert await inbox.escalate() == 2
        await notifier.deliver_due()
        items = inbox.items()
        first = [i.notices[0] for i in (inbox.item(i.id) for i in items)]
        await kit.clock.advance(10)
        await notifier.deliver_due()
        return first, [inbox.item(i.id).notices[0] for i in items]

    first, then = run_kit(data_dir, scenario)
    assert [(n.state, n.attempts) for n in first] == [("pending", 1)] * 2
    assert "refused: 451 4.3.0 mailbox busy" in first[0].error
    assert [(n.channel, n.state, n.attempts) for n in then] == [("email", "sent", 2)] * 2
    [message] = box.messages  # both items in one message
    assert box.envelopes == [("lab@example.org", ["night@example.org", "ann@example.org"])]
    assert message["Subject"] == "labconsole: 2 inbox items waiting too long"
    assert message.get_content().count("Refill the tip rack") == 2


def test_email_refused_for_one_recipient_is_retried_to_that_recipient_only(data_dir):
    """The server takes the message for night@ and refuses bob@ (550 at RCPT TO) twice: the
    e-mail notice is sent, bob@ gets a notice of his own showing the refusal on the item, and the
    retries after the backoff go to bob@ alone until he takes it."""
    box = Mailbox(refuse_rcpt={"bob@example.org": 2})
    controller = Controller(box, hostname="127.0.0.1", port=free_port())
    controller.start()

    async def scenario(kit: Kit):
        settings = NotifySettings(email_to=("night@example.org", "bob@example.org"), email_from="lab@example.org",
                                  smtp_host="127.0.0.1", smtp_port=controller.port, backoff=10.0, timeout=10.0)
        notifier = Notifier(kit.store, settings, clock=kit.clock, bus=kit.ledger.bus)
        inbox = Inbox(kit.engine, escalate_after={"prompt": 600}, notifier=notifier)
        await kit.publish(ASK)
        await kit.run("AskNight")
        await kit.clock.settle()
        await kit.clock.advance(900)
        assert await inbox.escalate() == 1
        [item] = inbox.items()
        await notifier.deliver_due()
        first = inbox.item(item.id)
        row = kit.store.read_sync(read_rows)[0].notice
        await kit.clock.advance(10)
        await notifier.deliver_due()  # bob@ refused again: 2 attempts, the next in 20 s
        second = inbox.item(item.id).notices
        await kit.clock.advance(20)
        await notifier.deliver_due()
        return first, row, second, inbox.item(item.id)

    try:
        first, row, second, last = run_kit(data_dir, scenario)
    finally:
        controller.stop()
    email, bob = first.notices
    assert (email.channel, email.state, email.attempts, email.error) == ("email", "sent", 1, None)
    assert (bob.recipient, bob.state, bob.attempts) == ("bob@example.org", "pending", 1)
    assert bob.error == "mail server 127.0.0.1 refused bob@example.org: 550 5.1.1 no such user here"
    assert first.notice_failed and first.as_dict()["notifications"][1]["recipient"] == "bob@example.org"
    assert row.startswith("E-mail notification to bob@example.org failed (1 attempt")
    assert [(n.channel, n.state, n.attempts) for n in second] == [
        ("email", "sent", 1), ("email:bob@example.org", "pending", 2)]
    assert [(n.state, n.attempts, n.error) for n in last.notices] == [("sent", 1, None), ("sent", 3, None)]
    assert not last.notice_failed
    # night@ got the message once; bob@ alone got the retry
    assert box.envelopes == [("lab@example.org", ["night@example.org"]), ("lab@example.org", ["bob@example.org"])]
    assert box.messages[1]["To"] == "night@example.org, bob@example.org"


def test_a_delivery_that_keeps_failing_is_given_up_visible_and_sent_again_on_request(data_dir):
    async def scenario(kit: Kit, url: str):
        notifier = Notifier(kit.store, NotifySettings(webhook_url=url, backoff=5.0, attempts=2),
                            clock=kit.clock, bus=kit.ledger.bus)
        inbox = Inbox(kit.engine, escalate_after={"prompt": 600}, notifier=notifier)
        await kit.publish(ASK)
        await kit.run("AskNight")
        await kit.clock.settle()
        await kit.clock.advance(700)
        await inbox.escalate()
        [item] = inbox.items()
        await notifier.deliver_due()
        await kit.clock.advance(5)
        assert await notifier.deliver_due() is None  # given up: nothing more is due
        gave_up = inbox.item(item.id).notices[0]
        row = kit.store.read_sync(read_rows)[0].notice
        assert await inbox.resend(item.id, who="ann", reason="receiver fixed") == 1
        assert await inbox.resend(item.id, who="ann") == 0  # nothing failed any more
        await notifier.deliver_due()
        return gave_up, row, inbox.item(item.id).notices[0], kit.store.audit_entries()

    with Receiver([500, 502]) as receiver:
        gave_up, row, resent, audit = run_kit(data_dir, lambda kit: scenario(kit, receiver.url))
    assert (gave_up.state, gave_up.attempts) == ("failed", 2)
    assert row.startswith("Webhook notification failed after 2 attempts, gave up:") and "HTTP 502" in row
    assert (resent.state, resent.attempts) == ("sent", 1) and len(receiver.bodies) == 1
    assert any(a.action == "resend notification" and a.who == "ann" and a.reason == "receiver fixed" for a in audit)


def test_notify_again_is_refused_to_a_viewer_naming_the_role_and_sends_nothing(data_dir, monkeypatch):
    """With named users on, a viewer may not send an item's notifications again: refused naming
    the user, their role and the role needed; nothing is queued or audited. An operator may."""
    from core import users

    monkeypatch.setattr(users, "SCRYPT_N", 2**12)
    monkeypatch.setattr(users, "_DUMMY_HASH", None)

    async def scenario(kit: Kit, url: str):
        users.add_user(kit.store, "vic", "viewer", "vic-password", who="root")
        users.add_user(kit.store, "bob", "operator", "bob-password", who="root")
        notifier = Notifier(kit.store, NotifySettings(webhook_url=url, attempts=1),
                            clock=kit.clock, bus=kit.ledger.bus)
        inbox = Inbox(kit.engine, escalate_after={"prompt": 600}, notifier=notifier)
        await kit.publish(ASK)
        await kit.run("AskNight")
        await kit.clock.settle()
        await kit.clock.advance(700)
        await inbox.escalate()
        [item] = inbox.items()
        await notifier.deliver_due()  # HTTP 500 on the only attempt: given up
        with pytest.raises(users.PermissionDenied) as refused:
            await inbox.resend(item.id, who="vic")
        after_refusal = (inbox.item(item.id).notices[0].state,
                         [a.action for a in kit.store.audit_entries() if a.action == "resend notification"])
        sent = await inbox.resend(item.id, who="bob")
        return str(refused.value), after_refusal, sent, kit.store.audit_entries()

    with Receiver([500, 200]) as receiver:
        message, after_refusal, sent, audit = run_kit(data_dir, lambda kit: scenario(kit, receiver.url))
    assert message == ("notify again: 'vic' is signed in as viewer; notify again needs the operator role "
                       "or above")
    assert after_refusal == ("failed", [])
    assert sent == 1
    assert [a.who for a in audit if a.action == "resend notification"] == ["bob"]


def test_nobody_listening_is_a_failed_attempt_and_answered_items_are_not_sent(data_dir):
    async def scenario(kit: Kit):
        url = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens there
        notifier = Notifier(kit.store, NotifySettings(webhook_url=url, backoff=5.0), clock=kit.clock,
                            bus=kit.ledger.bus)
        inbox = Inbox(kit.engine, escalate_after={"prompt": 600}, notifier=notifier)
        await kit.publish(ASK)
        await kit.run("AskNight")
        await kit.clock.settle()
        await kit.clock.advance(700)
        await inbox.escalate()
        [item] = inbox.items()
        await notifier.deliver_due()
        refused = inbox.item(item.id).notices[0]
        await inbox.answer(item.id, {"done": "yes"}, who="ann")
        await kit.clock.advance(5)
        await notifier.deliver_due()
        return refused, inbox.item(item.id).notices[0]

    refused, after = run_kit(data_dir, scenario)
    assert refused.state == "pending" and refused.error.startswith("cannot reach http://127.0.0.1:")
    assert (after.state, after.attempts) == ("dropped", 1)


def test_the_running_notifier_sends_on_escalation_without_blocking_the_loop(data_dir, mailbox):
    """Wall clock, the notifier's own task: the SMTP conversation runs on a worker thread while the
    loop keeps ticking."""
    box, port = mailbox
    box.refuse = 0

    async def main():
        store = Store(data_dir / "n.sqlite3").open()
        clock = SystemClock()
        settings = NotifySettings(email_to=("night@example.org",), smtp_host="127.0.0.1", smtp_port=port)
        notifier = Notifier(store, settings, clock=clock)
        from core.tasks import Supervisor

        tasks = Supervisor("test")
        notifier.start(tasks)
        item = NewItem(kind="error", title="Sealer1 jammed", instrument="Sealer1")
        await store.write(open_item_op(item, clock.now() - 3600))
        ticks = 0

        async def tick():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.001)

        ticker = asyncio.create_task(tick())
        raised = await store.write(escalate_op(clock.now(), {"error": 600}, notify=notifier.channels))
        notifier.wake()
        for _ in range(2000):
            if box.messages:
                break
            await asyncio.sleep(0.005)
        ticker.cancel()
        await tasks.close()
        store.close()
        return raised, ticks

    raised, ticks = asyncio.run(main())
    assert len(raised) == 1 and ticks > 0
    assert "Paused error waiting" in box.messages[0]["Subject"]
    assert "Sealer1 jammed" in box.messages[0]["Subject"]


def test_the_console_inbox_reads_notifications_from_config_ini(data_dir, store):
    from core.runtime import Runtime

    write_config(data_dir, "[NOTIFICATIONS]\nwebhook_url = http://127.0.0.1:9/hook\nattempts = 3\n")
    rt = Runtime.build(data_dir, store=store, workcell=None, metrics=False)
    inbox = Inbox.of(rt)
    assert inbox.notifier is not None and inbox.notifier.channels == ("webhook",)
    assert inbox.notifier.settings.attempts == 3
    write_config(data_dir, "[NOTIFICATIONS]\nwebhook_url = nowhere\n")
    rt.engine.inbox = None
    with pytest.raises(ConfigError, match="not an http"):
        Inbox.of(rt)
