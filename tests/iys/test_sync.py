"""Push, pull, reconcile and the strict gate against the fake İYS, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta

import pytest
from sqlalchemy import select, update

from conftest import add_contact
from izin.campaigns.models import Campaign as CampaignRow
from izin.campaigns.models import Delivery
from izin.campaigns.plan import plan_campaign
from izin.campaigns.spec import parse_campaign
from izin.config import Settings
from izin.consent.gate import IYS_PENDING, may_send
from izin.consent.iys.client import IysRejected
from izin.consent.iys.models import IysCursor, IysSync
from izin.consent.iys.sync import DbTokenStore, enroll, iys_states, pull, push, reconcile, status
from izin.consent.ledger import LedgerWriter
from izin.consent.models import ConsentEvent, Contact
from server import (BRAND_CODE, IYS_CODE, NOW, PASSWORD, TR, USERNAME, client_for,  # noqa: F401
                    fake_iys)


def now() -> datetime:
    return NOW


def person(db, external_id, *, email=None, phone=None, birthday=None):
    contact_id = add_contact(db, external_id, email=email, phone=phone)
    if birthday:
        with db.session() as session:
            contact = session.get(Contact, contact_id)
            contact.first_name = external_id
            contact.birthday = date.fromisoformat(birthday)
            contact.birth_month, contact.birth_day = contact.birthday.month, contact.birthday.day
    return contact_id


def record(db, external_id, channel, status="ONAY", at=NOW - timedelta(hours=5), source="HS_WEB") -> int:
    with db.session() as session:
        contact = session.scalar(select(Contact).where(Contact.external_id == external_id))
        return LedgerWriter(session).record(contact, channel, status, source, at, max(at, NOW - timedelta(hours=1))
                                            ).event.id


def states(db) -> dict[int, tuple]:
    with db.session() as session:
        return {s.event_id: (s.state, s.error_code) for s in session.scalars(select(IysSync))}


def run_push(db, fake, **kwargs):
    kwargs.setdefault("poll_interval", 0)
    kwargs.setdefault("retry_backoff", 0)
    with client_for(fake, store=kwargs.pop("store", None)) as client:
        return push(db, client, now, **kwargs)


def test_whole_backlog_round_trip_in_order_per_address(db, fake_iys):
    person(db, "A", email="a@ornek.com.tr", phone="+905321110001")
    person(db, "B", email="b@ornek.com.tr")
    person(db, "D", email="d@ornek.com.tr")
    e1 = record(db, "A", "email", "ONAY", NOW - timedelta(hours=5))
    e2 = record(db, "A", "email", "RET", NOW - timedelta(hours=4))
    e3 = record(db, "B", "email", "ONAY", NOW - timedelta(hours=3))
    e4 = record(db, "A", "sms", "ONAY", NOW - timedelta(hours=3))
    e5 = record(db, "D", "email", "RET", NOW - timedelta(hours=2))  # first-ever RET: stays local

    result = run_push(db, fake_iys, batch_size=2)

    assert (result.enrolled, result.submitted, result.accepted, result.rejected, result.requests) == (5, 4, 4, 0, 3)
    assert result.polls == 6  # every request answered `enqueue` once, then its results
    assert result.complete and result.unanswered == 0 and result.rejections == []
    assert states(db) == {e1: ("accepted", None), e2: ("accepted", None), e3: ("accepted", None),
                          e4: ("accepted", None), e5: ("local", None)}
    # the RET reached İYS after its ONAY had been answered: a different request, later
    assert [(m.recipient, m.type, m.status) for m in fake_iys.movements] == [
        ("a@ornek.com.tr", "EPOSTA", "ONAY"), ("b@ornek.com.tr", "EPOSTA", "ONAY"),
        ("+905321110001", "MESAJ", "ONAY"), ("a@ornek.com.tr", "EPOSTA", "RET")]
    assert [len(c.body) for c in fake_iys.api_calls("/consents/request")] == [2, 1, 1]
    assert fake_iys.api_calls("/consents/request")[0].body[0] == {
        "consentDate": "2026-11-24 07:00:00", "source": "HS_WEB", "recipient": "a@ornek.com.tr",
        "recipientType": "BIREYSEL", "status": "ONAY", "type": "EPOSTA"}
    with db.session() as session:
        shown = iys_states(session, [e1, e2, e5])
    assert shown == {
        e1: {"iys_status": "accepted", "iys_transaction_id": fake_iys.movements[0].transaction_id,
             "iys_creation_date": "2026-11-24T12:00:00+03:00", "iys_error": None},
        e2: {"iys_status": "accepted", "iys_transaction_id": fake_iys.movements[3].transaction_id,
             "iys_creation_date": "2026-11-24T12:00:00+03:00", "iys_error": None},
        e5: {"iys_status": "local", "iys_transaction_id": None, "iys_creation_date": None, "iys_error": None}}
    again = run_push(db, fake_iys)
    assert (again.enrolled, again.submitted, again.requests) == (0, 0, 0)
    assert len(fake_iys.token_calls) == 1  # one token (in memory per client) for the whole first push


def test_partial_failures_and_age_are_marked_and_deadlines_reported(db, fake_iys):
    person(db, "E", email="e@ornek.com.tr")
    person(db, "F", email="ali@örnek.com")
    person(db, "G", email="g@ornek.com.tr")
    old = record(db, "E", "email", at=datetime(2026, 11, 18, 23, 0, tzinfo=TR))  # 4 business days back
    bad = record(db, "F", "email", at=NOW - timedelta(hours=2))
    near = record(db, "G", "email", at=datetime(2026, 11, 19, 13, 0, tzinfo=TR))  # deadline today 13:00

    before = status(db, NOW)
    assert before["counts"] == {"local": 0, "pending": 3, "sent": 0, "accepted": 0, "rejected": 0}
    assert [(w["event_id"], w["deadline"], w["overdue"]) for w in before["deadline_warnings"]] == [
        (old, "2026-11-23T23:00:00+03:00", True), (near, "2026-11-24T13:00:00+03:00", False)]
    assert before["oldest_pending"]["event_id"] == old

    result = run_push(db, fake_iys)

    assert (result.accepted, result.rejected, result.complete) == (1, 2, True)
    assert states(db) == {old: ("rejected", "H174"), bad: ("rejected", "H114"), near: ("accepted", None)}
    assert [(r["event_id"], r["code"], r["too_old"]) for r in result.rejections] == [
        (old, "H174", True), (bad, "H114", False)]
    after = status(db, NOW)
    assert after["counts"] == {"local": 0, "pending": 0, "sent": 0, "accepted": 1, "rejected": 2}
    assert after["rejected_too_old"] == 1 and after["oldest_pending"] is None
    assert after["deadline_warnings"] == []


def test_token_expiring_in_the_middle_of_a_batch(db, fake_iys):
    for n in range(3):
        person(db, f"T{n}", email=f"t{n}@ornek.com.tr")
        record(db, f"T{n}", "email")
    fake_iys.enqueue_polls = 3
    fake_iys.expire_after = 2  # the upload and the first result query pass; the second meets a dead token

    result = run_push(db, fake_iys, store=DbTokenStore(db))

    assert (result.accepted, result.complete) == (3, True)
    assert [c.body["grant_type"] for c in fake_iys.token_calls] == ["password", "refresh_token"]
    polls = [c.authorization for c in fake_iys.calls if c.method == "GET"]
    # three `enqueue` answers and the results; the second query met the dead token (401) and was asked again
    assert len(polls) == 5 and polls[0] == polls[1] != polls[2] == polls[3] == polls[4]
    # the token lives in the database: a second process reuses it instead of asking again
    with client_for(fake_iys, store=DbTokenStore(db)) as client:
        client.changes("IYS")
    assert len(fake_iys.token_calls) == 2


def test_transient_failures_are_retried_without_duplicates(db, fake_iys):
    for n in range(2):
        person(db, f"R{n}", email=f"r{n}@ornek.com.tr")
        record(db, f"R{n}", "email")
    fake_iys.fail(429, "H124")
    fake_iys.fail(503, "H103", times=4)  # outlasts the client's 3 retries: push retries the round

    result = run_push(db, fake_iys)

    assert (result.accepted, result.transient_errors, result.complete) == (2, 1, True)
    assert len(fake_iys.movements) == 2
    with db.session() as session:
        assert [s.attempts for s in session.scalars(select(IysSync).order_by(IysSync.event_id))] == [2, 2]


def test_interrupted_upload_is_settled_by_status_query_not_sent_twice(db, fake_iys):
    person(db, "O", email="o@ornek.com.tr")
    person(db, "P", email="p@ornek.com.tr")
    held = record(db, "O", "email")
    lost = record(db, "P", "email")
    with db.session() as session:
        enroll(session, NOW)
        session.execute(update(IysSync).values(state="sent"))  # marked, then the process died
    with client_for(fake_iys) as client:  # İYS got O's, not P's
        from izin.consent.iys.client import Consent
        ack = client.add_consent(Consent("o@ornek.com.tr", "BIREYSEL", "EPOSTA", "ONAY", "HS_WEB",
                                         NOW - timedelta(hours=5)))

    result = run_push(db, fake_iys)

    assert states(db) == {held: ("accepted", None), lost: ("accepted", None)}
    assert len(fake_iys.movements) == 2 and result.submitted == 1
    with db.session() as session:
        assert session.get(IysSync, held).transaction_id == ack.transaction_id


def _queued_delivery(db, contact_id, recipient):
    with db.session() as session:
        campaign = CampaignRow(name="efsane-cuma", started_at=NOW)
        session.add(campaign)
        session.flush()
        delivery = Delivery(campaign_id=campaign.id, contact_id=contact_id, occurrence="once", channel="email",
                            recipient=recipient, status="scheduled", commercial=True, due_at=NOW + timedelta(hours=2),
                            attempts=0, created_at=NOW, updated_at=NOW)
        session.add(delivery)
        session.flush()
        return delivery.id


def test_ret_pulled_from_iys_suppresses_queued_delivery_at_once(db, fake_iys):
    contact_id = person(db, "Q", email="q@ornek.com.tr")
    onay = record(db, "Q", "email", at=NOW - timedelta(days=3))
    delivery_id = _queued_delivery(db, contact_id, "q@ornek.com.tr")
    ret = fake_iys.citizen("q@ornek.com.tr", "EPOSTA", "RET", NOW - timedelta(hours=2), source="IYS_MOBIL")
    fake_iys.citizen("new@ornek.com.tr", "EPOSTA", "ONAY", NOW - timedelta(hours=3), source="IYS_WEB")

    with client_for(fake_iys) as client:
        result = pull(db, client, now, limit=1)

    assert (result.pages, result.received, result.appended, result.withdrawals, result.cancelled_deliveries) == (
        3, 2, 2, 1, 1)
    with db.session() as session:
        delivery = session.get(Delivery, delivery_id)
        assert (delivery.status, delivery.reason) == ("suppressed", "consent_withdrawn")
        events = list(session.scalars(select(ConsentEvent).where(ConsentEvent.id > onay).order_by(ConsentEvent.id)))
        assert [(e.recipient, e.status, e.source, e.contact_ref) for e in events] == [
            ("new@ornek.com.tr", "ONAY", "IYS_WEB", None), ("q@ornek.com.tr", "RET", "IYS_MOBIL", "Q")]
        assert json.loads(events[1].proof)["iys"]["transactionId"] == ret.transaction_id
        assert events[1].consent_date == NOW - timedelta(hours=2)
        sync = session.get(IysSync, events[1].id)
        assert (sync.state, sync.origin, sync.transaction_id) == ("accepted", "pull", ret.transaction_id)
        contact = session.get(Contact, contact_id)
        assert may_send(session, contact, "email", NOW).allowed is False
        cursor = session.get(IysCursor, "IYS")
        assert cursor.after == result.after and cursor.last_success_at == NOW and cursor.pulled_total == 2

    with client_for(fake_iys) as client:
        assert pull(db, client, now).received == 0  # the cursor moved past both
        with db.session() as session:
            session.get(IysCursor, "IYS").after = None  # replay the whole window
        replay = pull(db, client, now)
    assert (replay.received, replay.duplicates, replay.appended) == (2, 2, 0)


BIRTHDAY = """
name: dogum-gunu
trigger: {type: birthday, send_time: "10:00"}
channels: [email]
content:
  email: {subject: "Iyi ki dogdun", html_inline: "<p>Merhaba</p>"}
"""


def _plan(db, strict: bool | None):
    data = {} if strict is None else {"iys": {"base_url": fake_url, "username": USERNAME, "password": PASSWORD,
                                              "iys_code": IYS_CODE, "brand_code": BRAND_CODE,
                                              "require_accepted": strict}}
    with db.session() as session:
        return plan_campaign(session, parse_campaign(BIRTHDAY), Settings.model_validate(data), NOW).as_dict()


fake_url = "http://127.0.0.1:9"


def test_strict_mode_sends_only_onay_accepted_by_iys(db, fake_iys):
    person(db, "S1", email="s1@ornek.com.tr", birthday="1990-11-24")
    person(db, "S2", email="s2@ornek.com.tr", birthday="1991-11-24")
    first = record(db, "S1", "email")
    fake_iys.citizen("s2@ornek.com.tr", "EPOSTA", "ONAY", NOW - timedelta(hours=3))
    with client_for(fake_iys) as client:
        pull(db, client, now)

    strict = _plan(db, True)
    assert [d["contact"] for d in strict["deliveries"]] == ["S2"]  # an ONAY pulled from İYS is in İYS
    assert strict["skipped"] == {"no_consent": 0, "no_address": 0, "frequency_cap": 0, "already_sent": 0,
                                 "not_in_audience": 0, "iys_pending": 1}
    with db.session() as session:
        contact = session.scalar(select(Contact).where(Contact.external_id == "S1"))
        decision = may_send(session, contact, "email", NOW, require_iys_accepted=True)
        assert (decision.allowed, decision.reason, decision.event_id) == (False, IYS_PENDING, first)
        assert may_send(session, contact, "email", NOW).allowed is True
    lenient = _plan(db, False)
    assert [d["contact"] for d in lenient["deliveries"]] == ["S1", "S2"]
    assert "iys_pending" not in lenient["skipped"] and "iys_pending" not in _plan(db, None)["skipped"]

    run_push(db, fake_iys)

    after = _plan(db, True)
    assert [(d["contact"], d["consent_event_id"]) for d in after["deliveries"]] == [("S1", first), ("S2", first + 1)]
    assert after["skipped"]["iys_pending"] == 0


def test_reconcile_appends_missing_links_lost_answers_and_lists_what_iys_lacks(db, fake_iys):
    person(db, "L", email="l@ornek.com.tr")
    lost = record(db, "L", "email", at=NOW - timedelta(hours=6))
    with db.session() as session:
        enroll(session, NOW)
    with client_for(fake_iys) as client:  # uploaded, but the answer never reached the ledger
        from izin.consent.iys.client import Consent
        ack = client.add_consent(Consent("l@ornek.com.tr", "BIREYSEL", "EPOSTA", "ONAY", "HS_WEB",
                                         NOW - timedelta(hours=6)))
    # within the last hour: pull cannot see it yet, the daily file can
    late = fake_iys.citizen("+905329998877", "MESAJ", "RET", NOW - timedelta(minutes=20), source="IYS_3338",
                            consent_date=NOW - timedelta(minutes=20))
    fake_iys.citizen("x@ornek.com.tr", "EPOSTA", "ONAY", NOW - timedelta(days=1))  # another day's file
    person(db, "M", email="m@ornek.com.tr")
    phantom = record(db, "M", "email", at=NOW - timedelta(hours=3))
    with db.session() as session:
        enroll(session, NOW)
        row = session.get(IysSync, phantom)
        row.state, row.transaction_id, row.creation_date = "accepted", "not-in-iys", NOW - timedelta(hours=1)

    with client_for(fake_iys) as client:
        result = reconcile(db, client, date(2026, 11, 24), now)
        again = reconcile(db, client, date(2026, 11, 24), now)
        with pytest.raises(IysRejected) as caught:
            reconcile(db, client, date(2026, 11, 1), now)

    assert (result.rows, result.matched, result.linked, result.appended) == (2, 0, 1, 1)
    assert result.missing_in_iys == [{"event_id": phantom, "transaction_id": "not-in-iys",
                                      "recipient": "m@ornek.com.tr", "channel": "email", "status": "ONAY"}]
    assert (again.matched, again.linked, again.appended) == (2, 0, 0)
    assert caught.value.codes == ["H501"]
    with db.session() as session:
        assert session.get(IysSync, lost).transaction_id == ack.transaction_id
        appended = session.scalar(select(IysSync).where(IysSync.transaction_id == late.transaction_id))
        event = session.get(ConsentEvent, appended.event_id)
        assert (event.recipient, event.channel, event.status, event.source, appended.origin) == (
            "+905329998877", "sms", "RET", "IYS_3338", "reconcile")
