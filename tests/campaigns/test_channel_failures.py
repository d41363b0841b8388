"""Channel faults through the whole pipeline, against a real SMTP server: transient replies defer
with backoff and later succeed, permanent ones fail without retrying; rate limits hold."""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import timedelta

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select

from izin.campaigns.deliver import MAX_ATTEMPTS, RETRY_BASE
from izin.campaigns.models import Delivery
from izin.campaigns.runner import drain_embedded
from support import AT, ONCE, consent, free_port, person, schedule


class ScriptedSink:
    """Answers RCPT for each address from a script (e.g. ['451 4.3.0 try later', '250 OK'])."""

    def __init__(self) -> None:
        self.script: dict[str, list[str]] = {}
        self.received: Counter[str] = Counter()
        self.lock = threading.Lock()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        with self.lock:
            replies = self.script.get(address)
            reply = replies.pop(0) if replies else "250 OK"
        if reply.startswith("250"):
            envelope.rcpt_tos.append(address)
        return reply

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        with self.lock:
            for rcpt in envelope.rcpt_tos:
                self.received[rcpt] += 1
        return "250 OK"


@pytest.fixture
def sink():
    handler = ScriptedSink()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield handler, controller.port
    controller.stop()


def smtp_settings(settings, port, rate=None):
    channels = {**settings.channels,
                "email": settings.channels["email"].model_copy(update={
                    "url": f"smtp://127.0.0.1:{port}?from=kampanya@ornek.com.tr&timeout=5", "rate": rate})}
    return settings.model_copy(update={"channels": channels})


def rows(db):
    with db.session() as session:
        return [tuple(r) for r in session.execute(
            select(Delivery.recipient, Delivery.status, Delivery.reason, Delivery.attempts, Delivery.next_attempt_at)
            .order_by(Delivery.id))]


def test_transient_defers_with_backoff_then_sends_and_permanent_fails(db, settings, sink):
    handler, port = sink
    for name in ("gecici", "kalici", "normal"):
        person(db, name, email=f"{name}@example.com")
        consent(db, name, "email")
    handler.script = {"gecici@example.com": ["451 4.3.0 mailbox busy, try later"],
                      "kalici@example.com": ["550 5.1.1 no such user"]}
    config = smtp_settings(settings, port)
    schedule(db, config, text=ONCE)
    drain_embedded(db, config, now=lambda: AT)
    assert rows(db) == [
        ("gecici@example.com", "deferred", "transient", 1, AT + RETRY_BASE),
        ("kalici@example.com", "failed", "permanent", 1, None),
        ("normal@example.com", "sent", None, 1, None),
    ]
    with db.session() as session:
        detail = session.scalar(select(Delivery.detail).where(Delivery.recipient == "kalici@example.com"))
    assert "550" in detail and "5.1.1" in detail
    # before the backoff has passed nothing is due; after it the retry goes through
    assert drain_embedded(db, config, now=lambda: AT + RETRY_BASE - timedelta(seconds=1)) == []
    drain_embedded(db, config, now=lambda: AT + RETRY_BASE)
    assert [r[1:4] for r in rows(db)] == [("sent", None, 2), ("failed", "permanent", 1), ("sent", None, 1)]
    assert handler.received == Counter({"gecici@example.com": 1, "normal@example.com": 1})


def test_a_delivery_that_keeps_failing_transiently_gives_up(db, settings, sink):
    handler, port = sink
    person(db, "gecici", email="gecici@example.com")
    consent(db, "gecici", "email")
    handler.script = {"gecici@example.com": ["451 4.3.0 try later"] * MAX_ATTEMPTS}
    config = smtp_settings(settings, port)
    schedule(db, config, text=ONCE)
    now = AT
    for _ in range(MAX_ATTEMPTS):
        drain_embedded(db, config, now=lambda: now)
        now += timedelta(hours=1)
    [(recipient, status, reason, attempts, _)] = rows(db)
    assert (status, reason, attempts) == ("failed", "transient", MAX_ATTEMPTS)
    assert handler.received == Counter()


def test_rate_limit_is_shared_through_redis(db, settings, sink, redis_url):
    handler, port = sink
    for i in range(6):
        person(db, f"u{i}", email=f"u{i}@example.com")
        consent(db, f"u{i}", "email")
    config = smtp_settings(settings, port, rate=2)
    config = config.model_copy(update={"broker": config.broker.model_copy(update={"url": redis_url})})
    schedule(db, config, text=ONCE)
    from izin.campaigns.deliver import Sender

    sender = Sender(config, db, "test-secret", now=lambda: AT)
    with db.session() as session:
        ids = list(session.scalars(select(Delivery.id).order_by(Delivery.id)))
    started = time.monotonic()
    assert [sender.process(i).status for i in ids] == ["sent"] * 6
    elapsed = time.monotonic() - started
    sender.close()
    # 2 per one-second window: 6 messages need three windows, so they cannot all go within one second
    assert elapsed > 1.0, f"6 messages at 2/s went out in {elapsed:.2f}s"
    import redis
    assert any(key.startswith(b"izin-rate-email") for key in redis.Redis.from_url(redis_url).keys("*"))


def test_a_hard_bounce_marks_the_address_and_it_is_not_tried_again(db, settings, sink):
    from izin.consent.bounces import is_undeliverable

    handler, port = sink
    person(db, "kalici", email="kalici@example.com")
    consent(db, "kalici", "email")
    handler.script = {"kalici@example.com": ["550 5.1.1 no such user"]}
    config = smtp_settings(settings, port)
    schedule(db, config, text=ONCE)
    drain_embedded(db, config, now=lambda: AT)
    with db.session() as session:
        assert is_undeliverable(session, "kalici@example.com", "email") is True
    again = schedule(db, config, text=ONCE.replace("name: efsane-cuma", "name: kis-indirimi"))
    assert again.created == 0 and again.plan.skipped["no_address"] == 1
