"""Planning in rounds: a base split into many small rounds plans exactly as it does in one round.

Rounds bound memory and query size at a million contacts; they must never change an answer:
caps counted across a contact's several events, addresses shared by two contacts, bounced
addresses, TACIR exemptions, refusals under either recipient type, and the audience.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from conftest import add_contact
from izin.campaigns import plan as plan_module
from izin.campaigns.models import Delivery
from izin.campaigns.plan import plan_campaign
from izin.campaigns.schedule import schedule_campaign
from izin.campaigns.spec import parse_campaign
from izin.clock import parse_instant as T
from izin.config import Settings
from izin.consent.bounces import mark
from izin.consent.ledger import LedgerWriter
from izin.consent.models import Contact, ContactEvent

AT = T("2026-11-24T12:00:00+03:00")
SETTINGS = Settings.model_validate({"policy": {"frequency_cap": "2/7d"}})

ONCE = """
name: efsane-cuma
trigger: {type: once, at: "2026-11-24T11:00:00+03:00"}
audience: {not: {tag: test}}
channels: [email, sms]
content:
  email: {subject: "Efsane Cuma", html_inline: "<p>Merhaba</p>"}
  sms: {text: "Efsane Cuma"}
"""

FOLLOW_UP = """
name: yorum
trigger: {type: after_event, event: purchase, delay: 1d, backfill: true}
channels: [sms, email]
content:
  email: {subject: "Yorum", html_inline: "<p>Merhaba</p>"}
  sms: {text: "Yorum"}
"""


def _record(session, contact, channel, status, rtype=None):
    LedgerWriter(session).record(contact, channel, status, "HS_WEB", T("2026-01-01T10:00:00+03:00"),
                                 T("2026-01-01T10:00:00+03:00"), recipient_type=rtype)


@pytest.fixture
def base(db):
    """Thirty contacts with every kind of answer, ids interleaved so each round mixes them."""
    kinds = ["email", "sms", "both", "none", "ret", "tacir", "shared", "bounced", "tagged", "retyped"]
    for i in range(30):
        kind = kinds[i % len(kinds)]
        email = "shared@example.com" if kind == "shared" else f"c{i}@example.com"
        add_contact(db, f"c{i:02d}", email=email, phone=f"+90532{i:07d}",
                    recipient_type="TACIR" if kind in ("tacir", "retyped") else "BIREYSEL")
    with db.session() as session:
        contacts = {c.external_id: c for c in session.scalars(select(Contact))}
        for i in range(30):
            kind, contact = kinds[i % len(kinds)], contacts[f"c{i:02d}"]
            if kind in ("email", "both", "bounced"):
                _record(session, contact, "email", "ONAY")
            if kind in ("sms", "both"):
                _record(session, contact, "sms", "ONAY")
            if kind == "ret":
                _record(session, contact, "email", "ONAY")
                _record(session, contact, "email", "RET")
            if kind == "shared" and i < 10:
                _record(session, contact, "email", "ONAY")
            if kind == "tagged":
                _record(session, contact, "email", "ONAY")
                session.execute(__import__("izin.consent.models", fromlist=["ContactTag"]).ContactTag.__table__
                                .insert().values(contact_id=contact.id, tag="test"))
            if kind == "retyped":  # a RET under BIREYSEL binds the address of a contact now TACIR
                _record(session, contact, "sms", "ONAY", rtype="BIREYSEL")
                _record(session, contact, "sms", "RET", rtype="BIREYSEL")
            if kind == "bounced":
                mark(session, contact.email, "email", "550 5.1.1 no such user", AT)
            # three purchases each: the cap of 2 per 7 days leaves the third deferred
            for n in range(3):
                session.add(ContactEvent(event_id=f"o{i}-{n}", contact_id=contact.id, name="purchase",
                                         occurred_at=T(f"2026-11-2{n}T10:00:00+03:00"), attributes={"n": n},
                                         imported_at=AT))
    return db


def _plan(db, text, chunk, monkeypatch):
    monkeypatch.setattr(plan_module, "_CHUNK", chunk)
    with db.session() as session:
        result = plan_campaign(session, parse_campaign(text), SETTINGS, AT)
        session.rollback()
    # rounds keep trigger order within a contact; across contacts the order may differ
    key = lambda d: (d["contact"], d["occurrence"])  # noqa: E731
    return (sorted((d.as_dict() for d in result.deliveries), key=key),
            sorted((d.as_dict() for d in result.capped), key=key), dict(result.skipped))


@pytest.mark.parametrize("text", [ONCE, FOLLOW_UP], ids=["once", "after_event"])
def test_many_small_rounds_plan_exactly_as_one_round(base, text, monkeypatch):
    whole = _plan(base, text, 5_000, monkeypatch)
    for chunk in (1, 2, 7):
        assert _plan(base, text, chunk, monkeypatch) == whole


def test_once_blast_counts_every_answer(base, monkeypatch):
    deliveries, capped, skipped = _plan(base, ONCE, 4, monkeypatch)
    by_contact = {d["contact"]: (d["channel"], d["basis"]) for d in deliveries}
    # ONAY by email (email, both, and the address c06 shares with c16 and c26), by SMS (sms only);
    # TACIR with no record on email: c05.. and the retyped c09.., whose SMS RET still binds
    assert by_contact == {**{f"c{i:02d}": ("email", "onay") for i in (0, 2, 6, 10, 12, 16, 20, 22, 26)},
                          **{f"c{i:02d}": ("sms", "onay") for i in (1, 11, 21)},
                          **{f"c{i:02d}": ("email", "tacir_exemption") for i in (5, 15, 25, 9, 19, 29)}}
    assert capped == []
    # none (c03..), RET (c04..), bounced with no SMS consent (c07..); tagged (c08..) are not in the audience
    assert skipped == {"not_in_audience": 3, "already_sent": 0, "no_consent": 9}


def test_after_event_caps_count_a_contacts_events_across_rounds(base, monkeypatch):
    deliveries, capped, skipped = _plan(base, FOLLOW_UP, 1, monkeypatch)
    per_contact: dict[str, list[str]] = {}
    for d in deliveries:
        per_contact.setdefault(d["contact"], []).append(d["occurrence"])
    assert per_contact["c00"] == ["o0-0", "o0-1"]
    assert [(d["contact"], d["occurrence"], d["reason"]) for d in capped if d["contact"] == "c00"] == \
        [("c00", "o0-2", "frequency_cap")]
    assert len(capped) == len(per_contact) and skipped["frequency_cap"] == len(per_contact)


def test_schedule_in_rounds_creates_every_delivery_once(base, monkeypatch):
    monkeypatch.setattr(plan_module, "_CHUNK", 3)
    with base.session() as session:
        first = schedule_campaign(session, parse_campaign(ONCE), SETTINGS, AT, AT)
    with base.session() as session:
        again = schedule_campaign(session, parse_campaign(ONCE), SETTINGS, AT, AT)
        rows = session.scalar(select(__import__("sqlalchemy").func.count()).select_from(Delivery))
    assert (first.created, first.plan.planned, again.created, again.plan.skipped["already_sent"], rows) == \
        (18, 18, 0, 18, 18)
    assert sorted(first.ids) == list(range(1, 19))


COUPON = ONCE.replace("name: efsane-cuma", "name: kuponlu").replace(
    "channels: [email, sms]", "channels: [email, sms]\ncoupon: {prefix: EFSANE, percent: 20, valid_days: 7}")


def test_a_coupon_code_clash_redraws_the_batch_and_creates_every_delivery_once(base, monkeypatch):
    """A 40-bit code can clash with one stored already: the batch is rolled back to its savepoint
    and inserted again with fresh codes (COPY and INSERT ... SELECT on PostgreSQL)."""
    from izin.campaigns import schedule as schedule_module

    with base.session() as session:
        first = schedule_campaign(session, parse_campaign(COUPON), SETTINGS, AT, AT)
        taken = session.scalar(select(Delivery.coupon_code).where(Delivery.id == first.ids[0]))
    codes = iter([taken] + [f"EFSANE-{n:08d}".replace("0", "A").replace("1", "B") for n in range(100)])
    monkeypatch.setattr(schedule_module, "new_code", lambda prefix: next(codes))
    with base.session() as session:
        again = schedule_campaign(session, parse_campaign(COUPON.replace("name: kuponlu", "name: kuponlu-2")),
                                  SETTINGS, AT, AT)
    with base.session() as session:
        stored = list(session.scalars(select(Delivery.coupon_code).where(Delivery.id.in_(again.ids))))
    assert again.created == first.created == 18
    assert taken not in stored and len(set(stored)) == 18  # the whole batch drew again
