"""Sending end to end in embedded mode: only consenting contacts get messages, withdrawals win,
nothing goes twice, caps and windows defer and later release, `audit why` names the consent."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from izin.campaigns.deliver import LEASE, Sender, claim
from izin.campaigns.models import Delivery
from izin.campaigns.runner import drain_embedded
from izin.clock import parse_instant as T
from izin.consent.models import Contact
from support import AT, CAMPAIGN, consent, outbox, person, schedule, snapshot

@pytest.fixture
def crowd(db):
    person(db, "ayse", email="ayse@example.com", phone="+905320000001")
    person(db, "mehmet", email="mehmet@example.com", phone="+905320000002")
    person(db, "zeynep", email="zeynep@example.com")
    person(db, "can", phone="+905320000004")
    consent(db, "ayse", "sms")
    consent(db, "mehmet", "email")
    consent(db, "can", "sms")
    return db


def test_only_consenting_contacts_receive_and_nothing_goes_twice(crowd, settings):
    db = crowd
    # the campaign snapshot lets the worker render without the YAML file
    report = schedule(db, settings)
    assert report.created == 3 and report.plan.skipped["no_consent"] == 1
    drain_embedded(db, settings, now=lambda: AT)
    assert snapshot(db) == [("ayse", "sent", None, "sms"), ("can", "sent", None, "sms"),
                            ("mehmet", "sent", None, "email")]
    files = outbox(settings)
    assert len(files) == 3
    with db.session() as session:
        ids = {d.contact_id: d.id for d in session.scalars(select(Delivery))}
        codes = {d.id: d.coupon_code for d in session.scalars(select(Delivery))}
    sms = json.loads((Path(settings.channels["sms"].url.removeprefix("outbox://")) / f"{min(ids.values())}.sms.json")
                     .read_text(encoding="utf-8"))
    assert sms["text"] == (f"Iyi ki dogdun Ayse! Kod: {codes[min(ids.values())]}\n"
                           "Örnek Ticaret A.Ş. Mersis:0123456789000015 RET yazip 4609'a gonderin")
    # a second run, a second scheduler tick: nothing new, nothing sent again
    assert schedule(db, settings).created == 0
    assert drain_embedded(db, settings, now=lambda: AT) == []
    assert outbox(settings) == files


def test_withdrawal_after_scheduling_suppresses(crowd, settings):
    db = crowd
    schedule(db, settings)
    consent(db, "ayse", "sms", "RET", at="2026-11-24T11:00:00+03:00", now=T("2026-11-24T11:00:00+03:00"))
    drain_embedded(db, settings, now=lambda: AT)
    assert snapshot(db)[0] == ("ayse", "suppressed", "consent_withdrawn", "sms")
    assert len(outbox(settings)) == 2


def test_withdrawal_while_claimed_by_a_dead_worker_is_caught_by_the_recheck(crowd, settings):
    """The opt-out arrives while the row is 'sending' (so it is not cancelled): the re-check stops it."""
    db = crowd
    schedule(db, settings)
    with db.session() as session:
        ayse = session.scalar(select(Delivery.id).join(Contact).where(Contact.external_id == "ayse"))
    assert claim(db, ayse, AT - LEASE - timedelta(seconds=1)) is not None  # a worker took it, then died
    consent(db, "ayse", "sms", "RET", at="2026-11-24T11:59:00+03:00", now=T("2026-11-24T11:59:00+03:00"))
    assert snapshot(db)[0] == ("ayse", "sending", None, "sms")
    drain_embedded(db, settings, now=lambda: AT)  # the lease has run out: another worker takes it
    assert snapshot(db)[0] == ("ayse", "suppressed", "consent_withdrawn", "sms")
    with db.session() as session:
        # it rests on no consent: the ONAY it was planned under did not hold at sending
        assert session.execute(select(Delivery.consent_event_id, Delivery.basis)
                               .where(Delivery.id == ayse)).one() == (None, None)


def test_an_address_changed_after_scheduling_is_the_one_sent_to_and_recorded(db, settings):
    person(db, "ayse", phone="+905320000001")
    consent(db, "ayse", "sms")
    schedule(db, settings)
    with db.session() as session:
        session.execute(update(Contact).values(phone="+905320000009"))
    new = consent(db, "ayse", "sms", at="2026-11-24T11:00:00+03:00", now=T("2026-11-24T11:00:00+03:00"))
    drain_embedded(db, settings, now=lambda: AT)
    with db.session() as session:
        sent = session.scalars(select(Delivery)).one()
        assert (sent.status, sent.recipient, sent.consent_event_id) == ("sent", "+905320000009", new)
    folder = Path(settings.channels["sms"].url.removeprefix("outbox://"))
    [message] = [json.loads((folder / name).read_text(encoding="utf-8")) for name in outbox(settings)]
    assert message["to"] == "+905320000009"


def test_claim_is_atomic_between_workers(crowd, settings):
    db = crowd
    schedule(db, settings)
    with db.session() as session:
        ids = list(session.scalars(select(Delivery.id)))
    results: list[bool] = []
    barrier = threading.Barrier(4)

    def contender(delivery_id: int) -> None:
        barrier.wait()
        results.append(claim(db, delivery_id, AT) is not None)

    for delivery_id in ids:
        results.clear()
        barrier.reset()
        threads = [threading.Thread(target=contender, args=(delivery_id,)) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results) == [False, False, False, True]


def test_window_defers_and_later_releases(crowd, settings):
    db = crowd
    late = T("2026-11-24T21:30:00+03:00")
    schedule(db, settings, at=late)
    assert [s[1:3] for s in snapshot(db)] == [("deferred", "send_window")] * 3
    assert drain_embedded(db, settings, now=lambda: T("2026-11-24T23:00:00+03:00")) == []
    assert outbox(settings) == []
    drain_embedded(db, settings, now=lambda: T("2026-11-25T09:00:00+03:00"))  # opens at 09:00 sharp
    assert [s[1] for s in snapshot(db)] == ["sent"] * 3


def test_cap_rechecked_at_sending_defers_with_the_release_time(db, settings):
    person(db, "ayse", email="ayse@example.com")
    consent(db, "ayse", "email")
    capped = settings.model_copy(update={"policy": settings.policy.model_copy(update={"frequency_cap": "1/7d"})})
    once = CAMPAIGN.replace("trigger: {type: birthday, send_time: \"10:00\"}",
                            "trigger: {type: once, at: \"2026-11-24T11:00:00+03:00\"}")
    schedule(db, capped, text=once)
    schedule(db, capped, text=once.replace("name: dogum-gunu", "name: efsane-cuma"))
    assert [s[1] for s in snapshot(db)] == ["scheduled", "deferred"]  # the plan already saw the first
    drain_embedded(db, capped, now=lambda: AT)
    with db.session() as session:
        rows = session.execute(select(Delivery.status, Delivery.reason, Delivery.next_attempt_at)
                               .order_by(Delivery.id)).all()
    assert [tuple(r) for r in rows] == [("sent", None, None),
                                        ("deferred", "frequency_cap", T("2026-12-01T11:00:00+03:00"))]


def test_template_failure_fails_only_that_delivery(db, settings):
    person(db, "ayse", email="ayse@example.com")
    consent(db, "ayse", "email")
    follow = """
name: degerlendirme
trigger: {type: after_event, event: purchase, delay: 1d, backfill: true}
channels: [email]
content:
  email: {subject: "Nasildi?", html_inline: "<p>{{ event.product }}</p>"}
"""
    from izin.consent.models import ContactEvent
    with db.session() as session:
        contact_id = session.scalar(select(Contact.id))
        session.add(ContactEvent(event_id="O1", contact_id=contact_id, name="purchase",
                                 occurred_at=T("2026-11-20T10:00:00+03:00"), attributes={"sku": "X"},
                                 imported_at=AT))
    schedule(db, settings, text=follow)
    drain_embedded(db, settings, now=lambda: AT)
    with db.session() as session:
        delivery = session.scalar(select(Delivery))
    assert (delivery.status, delivery.reason) == ("failed", "template")
    assert "'event' has no attribute 'product'" in delivery.detail


def test_audit_why_names_the_exact_consent_event(crowd, settings, tmp_path, monkeypatch):
    from conftest import Cli

    db = crowd
    schedule(db, settings)
    drain_embedded(db, settings, now=lambda: AT)
    with db.session() as session:
        delivery = session.scalar(select(Delivery).join(Contact).where(Contact.external_id == "ayse"))
        from izin.consent.models import ConsentEvent
        event = session.get(ConsentEvent, delivery.consent_event_id)
    cli = Cli(db.url, tmp_path, monkeypatch)
    answer = json.loads(cli("audit", "why", str(delivery.id), "--json").stdout)
    assert answer["consent_event"] == {
        "id": event.id, "recipient": "+905320000001", "channel": "sms", "iys_type": "MESAJ", "status": "ONAY",
        "source": "HS_WEB", "recipient_type": "BIREYSEL", "consent_date": "2026-01-01T10:00:00+03:00",
        "recorded_at": "2026-01-01T07:00:00.000000Z", "proof": None, "hash": event.hash, "purged": False}
    assert (answer["status"], answer["sent_at"]) == ("sent", "2026-11-24T09:00:00.000000Z")
    text = cli("audit", "why", str(delivery.id)).stdout.splitlines()
    assert text[-1] == f"hash: {event.hash}"
    assert cli("audit", "why", "999", expect=2).stderr == (
        "izin: error: no delivery 999; `izin audit export --kind delivery` lists them\n")
    exported = [json.loads(line) for line in cli("audit", "export", "--kind", "delivery").stdout.splitlines()]
    assert [(r["contact"], r["status"], r["consent_event_id"] is not None) for r in exported] == [
        ("ayse", "sent", True), ("mehmet", "sent", True), ("can", "sent", True)]


def test_sender_records_the_consent_it_checked(crowd, settings):
    db = crowd
    schedule(db, settings)
    sender = Sender(settings, db, "test-secret", now=lambda: AT)
    with db.session() as session:
        ids = list(session.scalars(select(Delivery.id).order_by(Delivery.id)))
    assert [sender.process(i).status for i in ids] == ["sent", "sent", "sent"]
    assert [sender.process(i).status for i in ids] == ["skipped", "skipped", "skipped"]
    sender.close()


def test_moving_a_blast_does_not_send_it_twice(db, settings):
    from support import ONCE

    person(db, "ayse", email="ayse@example.com")
    consent(db, "ayse", "email")
    assert schedule(db, settings, text=ONCE).created == 1
    drain_embedded(db, settings, now=lambda: AT)
    moved = ONCE.replace("2026-11-24T11:00:00+03:00", "2026-11-24T11:30:00+03:00")
    assert schedule(db, settings, text=moved).created == 0
    assert schedule(db, settings, text=moved).plan.skipped["already_sent"] == 1


def test_promotion_reaching_a_transactional_message_through_data_fails_it(db, settings):
    person(db, "ayse", email="ayse@example.com")
    from izin.consent.models import ContactEvent
    with db.session() as session:
        contact_id = session.scalar(select(Contact.id))
        session.add(ContactEvent(event_id="O1", contact_id=contact_id, name="purchase",
                                 occurred_at=T("2026-11-20T10:00:00+03:00"),
                                 attributes={"note": "Sepette ek indirim seni bekliyor"}, imported_at=AT))
    notice = """
name: kargo
purpose: transactional
trigger: {type: after_event, event: purchase, delay: 1d, backfill: true}
channels: [email]
content:
  email: {subject: "Siparisiniz yolda", html_inline: "<p>Siparisiniz yolda. {{ event.note }}</p>"}
"""
    schedule(db, settings, text=notice)
    drain_embedded(db, settings, now=lambda: AT)
    with db.session() as session:
        delivery = session.scalar(select(Delivery))
    assert (delivery.status, delivery.reason, delivery.detail) == (
        "failed", "promotion", "a transactional message may not carry promotions: 'indirim'")
    assert outbox(settings) == []


def test_a_worker_whose_lease_ran_out_cannot_record_over_its_successor(crowd, settings):
    from izin.campaigns.deliver import _finish

    db = crowd
    schedule(db, settings)
    with db.session() as session:
        first = session.scalar(select(Delivery.id).order_by(Delivery.id))
    slow = claim(db, first, AT)
    successor = claim(db, first, AT + LEASE + timedelta(seconds=1))
    assert slow is not None and successor is not None and slow != successor
    _finish(db, first, slow, AT + LEASE, status="failed", reason="permanent")  # the slow one, too late
    with db.session() as session:
        assert session.get(Delivery, first).status == "sending"
    _finish(db, first, successor, AT + LEASE, status="sent", sent_at=AT + LEASE)
    with db.session() as session:
        assert session.get(Delivery, first).status == "sent"


def test_strict_iys_mode_holds_an_onay_iys_has_not_accepted(crowd, settings):
    """A delivery scheduled before strict mode was switched on waits; it is not sent, nor dropped."""
    db = crowd
    schedule(db, settings)
    strict = settings.model_copy(update={"iys": settings.model_validate({"iys": {
        "base_url": "http://127.0.0.1:9", "username": "u", "password": "p", "iys_code": "1", "brand_code": "2",
        "require_accepted": True}}).iys})
    drain_embedded(db, strict, now=lambda: AT)
    assert [s[1:3] for s in snapshot(db)] == [("deferred", "iys_pending")] * 3
    assert outbox(settings) == []


def test_an_outcome_the_lease_fence_misses_rolls_the_whole_claim_back(crowd, settings):
    from izin.campaigns.deliver import _claim, _Writes

    db = crowd
    schedule(db, settings)
    before = snapshot(db)
    with db.session() as session:
        ids = list(session.scalars(select(Delivery.id)))
    with pytest.raises(RuntimeError, match="does not match the lease"), db.session() as session:
        first, *others = _claim(session, ids, AT)
        writes = _Writes()
        for delivery in others:
            writes.bind(delivery, delivery.lease_until, delivery.recipient, delivery.consent_event_id, delivery.basis)
        # a lease this transaction does not hold: its record would be lost, so nothing is kept
        writes.bind(first, first.lease_until + timedelta(microseconds=1), first.recipient, None, None)
        writes.write(session)
    assert snapshot(db) == before  # still scheduled: another claim takes them
