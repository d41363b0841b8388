"""The dry run on a crafted contact set: exact deliveries and exact counts of who is left out, and why."""

from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy import select

from conftest import add_contact
from izin.campaigns.models import Campaign as CampaignRow
from izin.campaigns.models import Delivery
from izin.campaigns.plan import plan_campaign
from izin.campaigns.spec import parse_campaign
from izin.clock import parse_instant as T
from izin.config import Settings
from izin.consent.ledger import LedgerWriter
from izin.consent.models import Contact, ContactEvent

AT = T("2026-11-24T12:00:00+03:00")
SETTINGS = Settings()

BIRTHDAY = """
name: dogum-gunu
trigger: {type: birthday, send_time: "10:00"}
audience: {attribute: city, ne: Ankara}
channels: [sms, email]
content:
  sms: {text: "Iyi ki dogdun {{ contact.first_name }}"}
  email: {subject: "Iyi ki dogdun", html_inline: "<p>Merhaba</p>"}
"""


def grant(db, external_id, channel, status="ONAY", at="2026-01-01T10:00:00+03:00"):
    with db.session() as session:
        contact = session.scalar(select(Contact).where(Contact.external_id == external_id))
        return LedgerWriter(session).record(contact, channel, status, "HS_WEB", T(at), T(at)).event.id


def person(db, external_id, birthday=None, city="İstanbul", tz=None, **kwargs):
    contact_id = add_contact(db, external_id, **kwargs)
    with db.session() as session:
        contact = session.get(Contact, contact_id)
        contact.attributes = {"city": city}
        contact.timezone = tz
        if birthday:
            contact.birthday = date.fromisoformat(birthday)
            contact.birth_month, contact.birth_day = contact.birthday.month, contact.birthday.day
    return contact_id


def delivery(db, campaign, contact_id, occurrence, status="sent", when="2026-11-22T10:00:00+03:00"):
    with db.session() as session:
        row = session.scalar(select(CampaignRow).where(CampaignRow.name == campaign))
        if row is None:
            row = CampaignRow(name=campaign, started_at=T("2026-01-01T00:00:00+03:00"))
            session.add(row)
            session.flush()
        session.add(Delivery(campaign_id=row.id, contact_id=contact_id, occurrence=occurrence, channel="email",
                             recipient="x", status=status, commercial=True, due_at=T(when),
                             sent_at=T(when) if status == "sent" else None, attempts=0, created_at=T(when),
                             updated_at=T(when)))


def plan(db, text, at=AT, settings=SETTINGS):
    with db.session() as session:
        return plan_campaign(session, parse_campaign(text), settings, at)


@pytest.fixture
def crowd(db):
    ids = {}
    ids["B1"] = person(db, "B1", "1990-11-24", email="b1@example.com", phone="+905320000001")
    ids["B2"] = person(db, "B2", "1985-11-24", email="b2@example.com", phone="+905320000002")
    ids["B3"] = person(db, "B3", "1980-11-24", email="b3@example.com")
    ids["B4"] = person(db, "B4", "1981-11-24")
    ids["B5"] = person(db, "B5", "1982-11-24", city="Ankara", email="b5@example.com")
    ids["B6"] = person(db, "B6", "1983-11-24", tz="America/New_York", email="b6@example.com")
    ids["B7"] = person(db, "B7", "1984-11-25", email="b7@example.com")
    ids["B8"] = person(db, "B8", "1986-11-24", email="b8@example.com")
    ids["B9"] = person(db, "B9", "1987-11-24", email="b9@example.com")
    ids["B10"] = person(db, "B10", "1988-11-24", email="satin@firma.com.tr", recipient_type="TACIR")
    ids["B11"] = person(db, "B11", "2000-02-29", email="b11@example.com")
    ids["NB"] = person(db, "NB", None, email="nb@example.com")
    for name in ("B1", "B2", "B5", "B6", "B7", "B8", "B9", "B11", "NB"):
        grant(db, name, "email")
    grant(db, "B1", "sms")
    delivery(db, "dogum-gunu", ids["B8"], "2026")
    for n in range(3):
        delivery(db, "efsane-cuma", ids["B9"], f"occ-{n}", when=f"2026-11-2{n}T10:00:00+03:00")
    return ids


def test_birthday_plan_counts_everyone_left_out_by_reason(db, crowd):
    result = plan(db, BIRTHDAY)
    assert [(d.external_id, d.channel, d.basis, d.occurrence, d.status) for d in result.deliveries] == [
        ("B1", "sms", "onay", "2026", "scheduled"),
        ("B2", "email", "onay", "2026", "scheduled"),
        ("B10", "email", "tacir_exemption", "2026", "scheduled"),
    ]
    assert result.as_dict()["skipped"] == {"no_consent": 1, "no_address": 1, "frequency_cap": 1,
                                           "already_sent": 1, "not_in_audience": 1}
    b1 = result.as_dict()["deliveries"][0]
    assert b1 == {"contact": "B1", "channel": "sms", "recipient": "+905320000001", "occurrence": "2026",
                  "send_at": "2026-11-24T07:00:00Z", "send_at_local": "2026-11-24T10:00+03:00",
                  "timezone": "Europe/Istanbul", "status": "scheduled", "basis": "onay", "consent_event_id": 10}


def test_plan_writes_nothing_but_the_campaign_start(db, crowd):
    plan(db, BIRTHDAY)
    plan(db, BIRTHDAY, at=T("2026-11-24T13:00:00+03:00"))
    with db.session() as session:
        assert session.scalar(select(CampaignRow.started_at).where(CampaignRow.name == "dogum-gunu")) == T(
            "2026-01-01T00:00:00+03:00")  # made by the fixture's delivery; plan keeps it
        assert len(session.scalars(select(Delivery)).all()) == 4


def test_new_york_birthday_is_due_at_ten_new_york_time(db, crowd):
    result = plan(db, BIRTHDAY, at=T("2026-11-24T18:00:00+03:00"))
    assert ("B6", "2026-11-24T10:00-05:00") in [(d["contact"], d["send_at_local"])
                                                 for d in result.as_dict()["deliveries"]]


def test_campaign_cap_counts_the_campaigns_own_deliveries(db, crowd):
    capped = BIRTHDAY.replace("channels:", 'limits: {frequency_cap: "1/400d"}\nchannels:')
    delivery(db, "dogum-gunu", crowd["B2"], "2025", when="2025-11-24T10:00:00+03:00")
    result = plan(db, capped)
    assert [d.external_id for d in result.deliveries] == ["B1", "B10"]
    assert result.skipped["frequency_cap"] == 2


ONCE = """
name: efsane-cuma
trigger: {type: once, at: "2026-11-27T20:30:00+03:00"}
channels: [email]
content:
  email: {subject: "Efsane Cuma", html_inline: "<p>%50</p>"}
"""


def test_once_blast_outside_the_window_is_deferred_to_the_next_opening(db):
    person(db, "A", email="a@example.com")
    person(db, "L", email="l@example.co.uk", tz="Europe/London")
    grant(db, "A", "email")
    grant(db, "L", "email")
    assert plan(db, ONCE, at=T("2026-11-27T20:29:00+03:00")).deliveries == []
    result = plan(db, ONCE, at=T("2026-11-27T21:15:00+03:00")).as_dict()["deliveries"]
    assert [(d["contact"], d["status"], d.get("reason"), d.get("next_attempt_at")) for d in result] == [
        ("A", "deferred", "send_window", "2026-11-28T06:00:00Z"),   # 21:15 in Istanbul: window closed
        ("L", "scheduled", None, None),                             # 18:15 in London: open
    ]
    assert plan(db, ONCE, at=T("2026-11-28T00:00:00+03:00")).deliveries == []  # the next day: not a late blast


FOLLOW_UP = """
name: degerlendirme
trigger: {type: after_event, event: purchase, delay: 3d, send_time: "11:00"}
channels: [email]
content:
  email: {subject: "Nasildi?", html_inline: "<p>{{ event.product }}</p>"}
"""


def _purchase(db, external_id, event_id, when):
    with db.session() as session:
        contact_id = session.scalar(select(Contact.id).where(Contact.external_id == external_id))
        session.add(ContactEvent(event_id=event_id, contact_id=contact_id, name="purchase", occurred_at=T(when),
                                 attributes={"product": "Mont"}, imported_at=T(when)))


def test_follow_up_per_event_after_the_campaign_start(db):
    person(db, "A", email="a@example.com")
    grant(db, "A", "email")
    _purchase(db, "A", "ORD-OLD", "2026-11-01T10:00:00+03:00")
    first = plan(db, FOLLOW_UP, at=T("2026-11-10T12:00:00+03:00"))  # starts the campaign
    assert first.deliveries == []
    _purchase(db, "A", "ORD-1", "2026-11-20T14:30:00+03:00")
    _purchase(db, "A", "ORD-2", "2026-11-21T09:00:00+03:00")
    assert plan(db, FOLLOW_UP, at=T("2026-11-24T10:59:00+03:00")).deliveries == []
    result = plan(db, FOLLOW_UP, at=T("2026-11-24T11:00:00+03:00"))
    # 20 Nov 14:30 + 3 days passes 11:00, so it waits for the next day's; 21 Nov 09:00 + 3 days meets it
    assert [(d.occurrence, d.due_at, d.event_attributes) for d in result.deliveries] == [
        ("ORD-1", T("2026-11-24T11:00:00+03:00"), {"product": "Mont"}),
        ("ORD-2", T("2026-11-24T11:00:00+03:00"), {"product": "Mont"}),
    ]
    backfill = FOLLOW_UP.replace("send_time:", "backfill: true, send_time:")
    assert [d.occurrence for d in plan(db, backfill.replace("degerlendirme", "degerlendirme-tum"),
                                       at=T("2026-11-24T11:00:00+03:00")).deliveries] == ["ORD-OLD", "ORD-1", "ORD-2"]


def test_transactional_needs_an_address_but_no_consent(db):
    person(db, "A", email="a@example.com")
    person(db, "B")
    transactional = FOLLOW_UP.replace("name: degerlendirme", "name: kargo\npurpose: transactional")
    _purchase(db, "A", "ORD-1", "2026-11-20T14:30:00+03:00")
    _purchase(db, "B", "ORD-2", "2026-11-20T14:30:00+03:00")
    result = plan(db, transactional.replace("send_time:", "backfill: true, send_time:"),
                  at=T("2026-11-24T12:00:00+03:00"))
    assert [(d.external_id, d.basis, d.consent_event_id) for d in result.deliveries] == [("A", "transactional", None)]
    assert result.skipped["no_address"] == 1


def test_capped_contacts_are_kept_for_later_with_the_release_time(db, crowd):
    result = plan(db, BIRTHDAY)
    assert [(d.external_id, d.status, d.reason, d.next_attempt_at) for d in result.capped] == [
        # three deliveries on 20, 21 and 22 November at 10:00 fill 3/7d; the oldest leaves the window on the 27th
        ("B9", "deferred", "frequency_cap", T("2026-11-27T10:00:00+03:00")),
    ]


BLAST = """
name: indirim
trigger: {type: once, at: "2026-11-24T11:00:00+03:00"}
channels: [email]
content:
  email: {subject: "Indirim", html_inline: "<p>Merhaba</p>"}
"""


def test_capped_contacts_each_get_their_own_release_from_one_look_up_per_cap(db):
    from sqlalchemy import event

    def capped_person(name, first_day):
        contact_id = person(db, name, email=f"{name.lower()}@example.com")
        grant(db, name, "email")
        for n in range(3):  # three sent on consecutive days fill 3/7d until the first leaves the week
            delivery(db, "efsane-cuma", contact_id, f"occ-{n}", when=f"2026-11-{first_day + n}T10:00:00+03:00")

    statements: list[str] = []
    event.listen(db.engine, "before_cursor_execute", lambda *args: statements.append(args[2]))

    def planned():
        statements.clear()
        result = plan(db, BLAST)
        return [(d.external_id, d.next_attempt_at) for d in result.capped], len(statements)

    capped_person("P1", 18)
    capped_person("P2", 21)
    planned()  # the first plan also records the campaign's start
    one, queries = planned()
    assert one == [("P1", T("2026-11-25T10:00:00+03:00")), ("P2", T("2026-11-28T10:00:00+03:00"))]
    for name, day in (("P3", 19), ("P4", 20), ("P5", 18)):
        capped_person(name, day)
    more, more_queries = planned()
    assert more == one + [("P3", T("2026-11-26T10:00:00+03:00")), ("P4", T("2026-11-27T10:00:00+03:00")),
                          ("P5", T("2026-11-25T10:00:00+03:00"))]
    assert more_queries == queries
