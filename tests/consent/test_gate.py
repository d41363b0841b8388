"""The send gate (invariant 1): only the latest event for (address, channel, type) decides."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from conftest import add_contact
from izin.clock import parse_instant as T
from izin.consent.gate import Decision, may_send
from izin.consent.ledger import LedgerWriter
from izin.consent.models import Contact

NOW = T("2026-11-24T12:00:00+03:00")


def grant(db, external_id, channel, status, at, now=NOW, source="HS_WEB"):
    with db.session() as session:
        contact = session.scalar(select(Contact).where(Contact.external_id == external_id))
        return LedgerWriter(session).record(contact, channel, status, source, T(at), now).event.id


def decide(db, external_id, channel, at=NOW, as_of=False) -> Decision:
    with db.session() as session:
        contact = session.scalar(select(Contact).where(Contact.external_id == external_id))
        return may_send(session, contact, channel, at, as_of=as_of)


def test_onay_allows_and_names_its_event(db):
    add_contact(db, "C1", email="a@example.com", phone="+905321112233")
    event_id = grant(db, "C1", "email", "ONAY", "2026-11-01T10:00:00+03:00")
    assert decide(db, "C1", "email") == Decision(True, "email", "a@example.com", basis="onay",
                                                 event_id=event_id, status="ONAY")


def test_an_onay_on_one_channel_never_authorises_another(db):
    add_contact(db, "C1", email="a@example.com", phone="+905321112233")
    grant(db, "C1", "email", "ONAY", "2026-11-01T10:00:00+03:00")
    assert decide(db, "C1", "sms") == Decision(False, "sms", "+905321112233", reason="no_consent")
    assert decide(db, "C1", "call") == Decision(False, "call", "+905321112233", reason="no_consent")


def test_ret_after_onay_forbids_and_names_the_ret(db):
    add_contact(db, "C1", email="a@example.com")
    grant(db, "C1", "email", "ONAY", "2026-11-01T10:00:00+03:00")
    ret = grant(db, "C1", "email", "RET", "2026-11-02T10:00:00+03:00", source="HS_EPOSTA")
    assert decide(db, "C1", "email") == Decision(False, "email", "a@example.com", reason="no_consent",
                                                 event_id=ret, status="RET")


@pytest.mark.parametrize(("email", "phone", "mobile", "channel"), [
    (None, "+905321112233", True, "email"),
    ("a@example.com", None, True, "sms"),
    ("a@example.com", "+902125550000", False, "sms"),
])
def test_no_usable_address(db, email, phone, mobile, channel):
    add_contact(db, "C1", email=email, phone=phone, mobile=mobile)
    decision = decide(db, "C1", channel)
    assert (decision.allowed, decision.reason) == (False, "no_address")


def test_tacir_without_record_may_be_messaged_but_never_after_ret(db):
    add_contact(db, "T1", email="satin@firma.com.tr", recipient_type="TACIR")
    assert decide(db, "T1", "email") == Decision(True, "email", "satin@firma.com.tr", basis="tacir_exemption")
    ret = grant(db, "T1", "email", "RET", "2026-11-02T10:00:00+03:00", source="HS_EPOSTA")
    assert decide(db, "T1", "email") == Decision(False, "email", "satin@firma.com.tr", reason="no_consent",
                                                 event_id=ret, status="RET")


def test_bireysel_without_record_may_not(db):
    add_contact(db, "C1", email="a@example.com")
    assert decide(db, "C1", "email") == Decision(False, "email", "a@example.com", reason="no_consent")


def test_asking_about_an_earlier_instant_reads_the_ledger_as_it_stood(db):
    add_contact(db, "C1", email="a@example.com")
    onay = grant(db, "C1", "email", "ONAY", "2026-11-01T10:00:00+03:00", now=T("2026-11-01T10:00:00+03:00"))
    grant(db, "C1", "email", "RET", "2026-11-10T10:00:00+03:00", now=T("2026-11-10T10:00:00+03:00"),
          source="HS_EPOSTA")
    assert decide(db, "C1", "email", at=T("2026-11-05T00:00:00+03:00"), as_of=True).event_id == onay
    assert decide(db, "C1", "email", at=T("2026-11-05T00:00:00+03:00"), as_of=True).allowed is True
    assert decide(db, "C1", "email", at=T("2026-10-30T00:00:00+03:00"), as_of=True).reason == "no_consent"
    assert decide(db, "C1", "email").allowed is False
    # without as_of, an opt-out younger than the instant asked about still wins
    assert decide(db, "C1", "email", at=T("2026-11-05T00:00:00+03:00")).allowed is False


def test_a_refusal_under_either_recipient_type_blocks_the_address(db):
    """A contact re-typed from BIREYSEL to TACIR does not slip past its RET through the exemption."""
    add_contact(db, "C1", email="a@example.com")
    grant(db, "C1", "email", "ONAY", "2026-11-01T10:00:00+03:00")
    ret = grant(db, "C1", "email", "RET", "2026-11-02T10:00:00+03:00", source="HS_EPOSTA")
    with db.session() as session:
        session.scalar(select(Contact).where(Contact.external_id == "C1")).recipient_type = "TACIR"
    assert decide(db, "C1", "email") == Decision(False, "email", "a@example.com", reason="no_consent",
                                                 event_id=ret, status="RET")
    # and a TACIR address with any record at all is no longer on the exemption
    add_contact(db, "T2", email="b@firma.com.tr", recipient_type="TACIR")
    with db.session() as session:
        contact = session.scalar(select(Contact).where(Contact.external_id == "T2"))
        LedgerWriter(session).record(contact, "email", "ONAY", "HS_WEB", T("2026-11-01T10:00:00+03:00"), NOW,
                                     recipient_type="BIREYSEL")
    assert decide(db, "T2", "email").reason == "no_consent"


def test_many_agrees_with_one_by_one(db):
    from izin.consent.gate import may_send_many

    add_contact(db, "A", email="a@example.com", phone="+905321110001")
    add_contact(db, "B", email="b@example.com", phone="+902125550000", mobile=False)
    add_contact(db, "C", email="c@example.com")
    add_contact(db, "T", email="t@firma.com.tr", recipient_type="TACIR")
    add_contact(db, "N")
    grant(db, "A", "email", "ONAY", "2026-11-01T10:00:00+03:00")
    grant(db, "A", "sms", "ONAY", "2026-11-01T10:00:00+03:00")
    grant(db, "C", "email", "ONAY", "2026-11-01T10:00:00+03:00")
    grant(db, "C", "email", "RET", "2026-11-02T10:00:00+03:00", source="HS_EPOSTA")
    for channel in ("email", "sms", "call"):
        with db.session() as session:
            contacts = list(session.scalars(select(Contact).order_by(Contact.id)))
            many = may_send_many(session, contacts, channel, NOW)
            single = {c.id: may_send(session, c, channel, NOW) for c in contacts}
        assert many == single
    with db.session() as session:
        contacts = list(session.scalars(select(Contact).order_by(Contact.id)))
        email = may_send_many(session, contacts, "email", NOW)
    assert [(email[c.id].allowed, email[c.id].reason, email[c.id].basis) for c in contacts] == [
        (True, None, "onay"), (False, "no_consent", None), (False, "no_consent", None),
        (True, None, "tacir_exemption"), (False, "no_address", None)]
