"""A worker's batch: many deliveries claimed, checked and rendered in one transaction, then sent
one by one. Judged exactly as one by one would judge them; a message never goes more than
GATE_MAX_AGE after the check that allowed it; an account refusal holds the rest of the batch."""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import datetime, timedelta

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select

from izin.campaigns.deliver import ACCOUNT_RETRY, LEASE, SIBLING_RECHECK, Sender
from izin.campaigns.models import Campaign as CampaignRow
from izin.campaigns.models import Delivery
from izin.channels.registry import open_channels
from izin.consent.ledger import LedgerWriter, withdraw_address
from support import AT, ONCE, consent, free_port, person, schedule


def _ids(db) -> list[int]:
    with db.session() as session:
        return list(session.scalars(select(Delivery.id).order_by(Delivery.id)))


def _rows(db) -> list[tuple]:
    with db.session() as session:
        return [tuple(r) for r in session.execute(
            select(Delivery.recipient, Delivery.status, Delivery.reason, Delivery.next_attempt_at, Delivery.attempts)
            .order_by(Delivery.id))]


def _capped(settings, cap: str):
    return settings.model_copy(update={"policy": settings.policy.model_copy(update={"frequency_cap": cap})})


@pytest.mark.parametrize("cap, second", [("1/7d", ("deferred", "frequency_cap")), ("2/7d", ("sent", None))])
def test_two_deliveries_to_one_contact_in_a_batch_are_capped_as_if_sent_one_after_another(db, settings, cap, second):
    """Two blasts for one contact in one batch: the first counts toward the second's cap, as it
    would had they gone in two batches. Held by its own batch, the capped one is judged again
    shortly (its sibling might not have gone); then it waits for the first to leave the window."""
    person(db, "ayse", email="ayse@example.com")
    consent(db, "ayse", "email")
    person(db, "mehmet", email="mehmet@example.com")
    consent(db, "mehmet", "email")
    roomy = _capped(settings, "5/7d")  # planning sees no cap: the batch is what decides
    schedule(db, roomy, text=ONCE)
    schedule(db, roomy, text=ONCE.replace("name: efsane-cuma", "name: kis-indirimi"))
    sender = Sender(_capped(settings, cap), db, "test-secret", now=lambda: AT)
    outcomes = sender.process_many(_ids(db))
    sender.close()
    # ids: the first blast to ayse and mehmet, then the second to both
    assert [(o.status, o.reason) for o in outcomes.values()] == [("sent", None), ("sent", None), second, second]
    if second[0] == "deferred":
        soon = AT + SIBLING_RECHECK
        assert _rows(db)[2:] == [("ayse@example.com", "deferred", "frequency_cap", soon, 0),
                                 ("mehmet@example.com", "deferred", "frequency_cap", soon, 0)]
        # judged again: the first message (sent at AT) is in the table now, and holds it 7 days
        sender = Sender(_capped(settings, cap), db, "test-secret", now=lambda: soon)
        assert [o.reason for o in sender.process_many(_ids(db)[2:]).values()] == ["frequency_cap"] * 2
        sender.close()
        assert _rows(db)[2:] == [("ayse@example.com", "deferred", "frequency_cap", AT + timedelta(days=7), 0),
                                 ("mehmet@example.com", "deferred", "frequency_cap", AT + timedelta(days=7), 0)]


class HookedOutbox:
    """The real outbox adapter; right after it sends the batch's first message, something happens
    elsewhere (`on_first_send`) and sending then falls behind by `pause_s`."""

    def __init__(self, inner, on_first_send, pause_s: float = 0.0) -> None:
        self.inner, self.on_first_send, self.pause_s = inner, on_first_send, pause_s
        self.sent: list[str] = []
        self.db = None  # when set, the lease each message is sent on is noted
        self.leases: list[datetime] = []

    def send(self, message):
        if self.db is not None:
            with self.db.session() as session:
                self.leases.append(session.get(Delivery, message.delivery_id).lease_until)
        receipt = self.inner.send(message)
        self.sent.append(message.to)
        if len(self.sent) == 1:
            self.on_first_send()
            time.sleep(self.pause_s)
        return receipt

    def __getattr__(self, name):
        return getattr(self.inner, name)


def _hooked_sender(db, settings, on_first_send, pause_s: float, now=lambda: AT):
    adapters = open_channels(settings.channels)
    email = HookedOutbox(adapters["email"], on_first_send, pause_s)
    return Sender(settings, db, "test-secret", adapters={**adapters, "email": email}, now=now), email


def _blast(db, settings, names=("ayse", "can", "zeynep")):
    """Contacts with an email ONAY each, and the once blast to them scheduled (its report)."""
    for name in names:
        person(db, name, email=f"{name}@example.com")
        consent(db, name, "email")
    return schedule(db, settings, text=ONCE)


@pytest.mark.parametrize("gate_s, pause_s, third", [(0.5, 1.0, ("suppressed", "consent_withdrawn")),
                                                     (30.0, 0.0, ("sent", None))])
def test_an_opt_out_during_a_slow_batch_stops_the_messages_not_yet_sent(db, settings, monkeypatch, gate_s,
                                                                        pause_s, third):
    """A RET recorded while the batch is being sent: a message whose check is older than
    GATE_MAX_AGE (real time: the engine's clock stands still here, as under IZIN_NOW) is checked
    again before it goes, and the opt-out wins. Within GATE_MAX_AGE the batch's check stands."""
    import izin.campaigns.deliver as deliver

    monkeypatch.setattr(deliver, "GATE_MAX_AGE", gate_s)
    _blast(db, settings)

    def opt_out() -> None:
        with db.session() as session:
            withdraw_address(LedgerWriter(session), "zeynep@example.com", "email", "HS_WEB", AT, "one click")

    sender, email = _hooked_sender(db, settings, opt_out, pause_s)
    outcomes = sender.process_many(_ids(db))
    sender.close()
    assert [(o.status, o.reason) for o in outcomes.values()] == [("sent", None), ("sent", None), third]
    assert email.sent == ["ayse@example.com", "can@example.com"] + (["zeynep@example.com"] if third[0] == "sent" else [])
    with db.session() as session:
        rows = session.execute(select(Delivery.status, Delivery.attempts, Delivery.consent_event_id.is_(None))
                               .order_by(Delivery.id)).all()
    # attempts count provider calls; a delivery stopped at the second check rests on no consent event
    stopped = third[0] == "suppressed"
    assert [tuple(r) for r in rows] == [("sent", 1, False), ("sent", 1, False), (third[0], 0 if stopped else 1, stopped)]


def test_a_message_whose_lease_was_taken_over_is_neither_sent_nor_recorded(db, settings, monkeypatch):
    """A batch that fell behind renews its lease when it is checked again, fenced by the lease it
    holds: a delivery another worker took meanwhile (its lease replaced) is left to that worker."""
    import izin.campaigns.deliver as deliver

    # the first message goes on the first check (well within 0.5 s), the second after a 1 s pause
    monkeypatch.setattr(deliver, "GATE_MAX_AGE", 0.5)
    _blast(db, settings)
    ids = _ids(db)
    theirs = AT + LEASE + timedelta(minutes=7)

    def taken_over() -> None:
        with db.session() as session:
            session.execute(Delivery.__table__.update().where(Delivery.id == ids[2]).values(lease_until=theirs))

    later = AT + timedelta(seconds=30)  # the engine's clock from the second check on
    readings: list[datetime] = []

    def clock() -> datetime:
        readings.append(AT if not readings else later)
        return readings[-1]

    sender, email = _hooked_sender(db, settings, taken_over, 1.0, now=clock)
    email.db = db
    outcomes = sender.process_many(ids)
    sender.close()
    assert [o.status for o in outcomes.values()] == ["sent", "sent", "skipped"]
    assert email.sent == ["ayse@example.com", "can@example.com"]
    assert email.leases == [AT + LEASE, later + LEASE]  # the second went on the renewed lease
    with db.session() as session:
        rows = session.execute(select(Delivery.status, Delivery.lease_until).order_by(Delivery.id)).all()
    assert [tuple(r) for r in rows] == [("sent", None), ("sent", None), ("sending", theirs)]


def test_a_campaign_that_cannot_be_read_fails_its_deliveries_and_the_batch_goes_on(db, settings):
    person(db, "ayse", email="ayse@example.com")
    consent(db, "ayse", "email")
    schedule(db, settings, text=ONCE)
    schedule(db, settings, text=ONCE.replace("name: efsane-cuma", "name: kis-indirimi"))
    with db.session() as session:
        session.execute(CampaignRow.__table__.update().where(CampaignRow.name == "efsane-cuma").values(spec_yaml=""))
    sender = Sender(settings, db, "test-secret", now=lambda: AT)
    outcomes = sender.process_many(_ids(db))
    sender.close()
    assert [(o.status, o.reason) for o in outcomes.values()] == [("failed", "campaign"), ("sent", None)]
    assert "efsane-cuma has no stored spec" in list(outcomes.values())[0].detail


class RefusingSink:
    """An SMTP server that refuses the sender (5xx to MAIL FROM): the account, not the message."""

    def __init__(self) -> None:
        self.mail_from = 0
        self.lock = threading.Lock()

    async def handle_MAIL(self, server, session, envelope, address, mail_options):  # noqa: N802
        with self.lock:
            self.mail_from += 1
        return "550 5.7.1 sender not allowed"


def test_an_account_refusal_holds_the_rest_of_the_batch_without_trying_it(db, settings):
    sink = RefusingSink()
    controller = Controller(sink, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        _blast(db, settings)
        channels = {**settings.channels, "email": settings.channels["email"].model_copy(update={
            "url": f"smtp://127.0.0.1:{controller.port}?from=kampanya@ornek.com.tr&timeout=5"})}
        sender = Sender(settings.model_copy(update={"channels": channels}), db, "test-secret", now=lambda: AT)
        outcomes = sender.process_many(_ids(db))
        sender.close()
    finally:
        controller.stop()
    assert Counter((o.status, o.reason) for o in outcomes.values()) == Counter({("deferred", "channel_account"): 3})
    assert sink.mail_from == 1  # one refusal was enough to know
    assert [r[1:] for r in _rows(db)] == [("deferred", "channel_account", AT + ACCOUNT_RETRY, 1),
                                          ("deferred", "channel_account", AT + ACCOUNT_RETRY, 0),
                                          ("deferred", "channel_account", AT + ACCOUNT_RETRY, 0)]


def test_ids_not_free_to_take_are_skipped_and_the_rest_sent(db, settings):
    _blast(db, settings, ("ayse", "can"))
    first, second = _ids(db)
    sender = Sender(settings, db, "test-secret", now=lambda: AT)
    assert sender.process(first).status == "sent"
    outcomes = sender.process_many([second, first, 999_999, second])
    sender.close()
    assert {i: o.status for i, o in outcomes.items()} == {first: "skipped", second: "sent", 999_999: "skipped"}


def test_a_large_schedule_refreshes_the_planner_statistics_workers_rely_on(db, settings, monkeypatch):
    """Workers count caps per batch of contacts the moment a blast is scheduled: the planner must
    know the table grew (SQLite without statistics walks the status index instead)."""
    from sqlalchemy import text

    import izin.campaigns.schedule as schedule_module

    monkeypatch.setattr(schedule_module, "ANALYZE_AFTER", 3)
    assert _blast(db, settings).created == 3
    with db.session() as session:
        if db.engine.dialect.name == "sqlite":
            stat = session.scalar(text("SELECT stat FROM sqlite_stat1 WHERE tbl = 'deliveries' "
                                       "AND idx = 'ix_deliveries_contact_sent_at'"))
            assert stat == "3 1 1"  # rows, then rows per contact and per (contact, sent_at)
        else:
            assert session.scalar(text("SELECT reltuples FROM pg_class WHERE oid = to_regclass('deliveries')")) == 3
