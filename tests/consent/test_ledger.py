"""The ledger: İYS's upload rules enforced locally, the hash chain, and concurrent writers."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import select

from conftest import add_contact
from izin.clock import parse_instant
from izin.consent.ledger import LedgerWriter, canonical, event_hash
from izin.consent.models import GENESIS_HASH
from izin.consent.models import ConsentEvent, ConsentState, Contact, LedgerHead
from izin.errors import ConsentRefused

T = parse_instant


def record(db, external_id, channel, status, source="HS_WEB", at="2026-11-01T10:00:00+03:00",
           now="2026-11-24T12:00:00+03:00", **kwargs):
    with db.session() as session:
        contact = session.scalar(select(Contact).where(Contact.external_id == external_id))
        return LedgerWriter(session).record(contact, channel, status, source, T(at), T(now), **kwargs)


def refusal(db, *args, **kwargs) -> tuple[str, str]:
    with pytest.raises(ConsentRefused) as info:
        record(db, *args, **kwargs)
    return info.value.reason, info.value.message


@pytest.fixture
def ayse(db):
    add_contact(db, "C1", email="ayse@example.com", phone="+905321112233")
    return db


def events(db) -> list[ConsentEvent]:
    with db.session() as session:
        return list(session.scalars(select(ConsentEvent).order_by(ConsentEvent.id)))


def test_grant_records_event_with_every_field(ayse):
    recorded = record(ayse, "C1", "email", "ONAY", proof='{"form":"v3"}')
    assert recorded.notes == []
    [event] = events(ayse)
    assert (event.id, event.contact_ref, event.recipient, event.channel, event.status, event.source,
            event.recipient_type, event.proof, event.iys_uploadable, event.prev_hash) == (
        1, "C1", "ayse@example.com", "email", "ONAY", "HS_WEB", "BIREYSEL", '{"form":"v3"}', True, GENESIS_HASH)
    assert event.consent_date == T("2026-11-01T07:00:00+00:00")
    assert event.recorded_at == T("2026-11-24T09:00:00+00:00")
    assert event.hash == event_hash(event)
    assert canonical(event) == (
        '{"channel":"email","consent_date":"2026-11-01T07:00:00.000000Z","contact":"C1","id":1,'
        '"iys_uploadable":true,"prev_hash":"' + GENESIS_HASH + '","proof":"{\\"form\\":\\"v3\\"}",'
        '"recipient":"ayse@example.com","recipient_type":"BIREYSEL","recorded_at":"2026-11-24T09:00:00.000000Z",'
        '"source":"HS_WEB","status":"ONAY"}').encode()


def test_events_chain_each_to_the_one_before(ayse):
    record(ayse, "C1", "email", "ONAY", at="2026-11-01T10:00:00+03:00")
    record(ayse, "C1", "sms", "ONAY", at="2026-11-02T10:00:00+03:00")
    record(ayse, "C1", "email", "RET", source="HS_EPOSTA", at="2026-11-03T10:00:00+03:00")
    chain = events(ayse)
    assert [e.id for e in chain] == [1, 2, 3]
    assert [e.prev_hash for e in chain] == [GENESIS_HASH, chain[0].hash, chain[1].hash]
    with ayse.session() as session:
        head = session.get(LedgerHead, 1)
        assert (head.last_id, head.last_hash) == (3, chain[2].hash)
        state = session.get(ConsentState, ("ayse@example.com", "email", "BIREYSEL"))
        assert (state.status, state.event_id, state.ever_onay) == ("RET", 3, True)


def test_repeated_status_records_nothing_and_says_so(ayse):
    record(ayse, "C1", "email", "ONAY", at="2026-11-01T10:00:00+03:00")
    assert refusal(ayse, "C1", "email", "ONAY", at="2026-11-05T10:00:00+03:00") == (
        "duplicate_status",
        "ayse@example.com is already ONAY on email since 2026-11-01T10:00:00+03:00 (event #1); nothing recorded")
    assert len(events(ayse)) == 1


@pytest.mark.parametrize(("at", "source", "expected"), [
    ("2026-11-24T12:00:01+03:00", "HS_WEB", ("future_date", "consent date 2026-11-24T12:00:01+03:00 is in the "
                                             "future; give the moment the person actually consented")),
    ("2015-04-30T23:59:59+03:00", "HS_WEB", ("before_2015", "consent date 2015-04-30T23:59:59+03:00 is before "
                                             "2015-05-01 (law 6563); use source HS_2015 for consents given before then")),
    ("2016-01-01T00:00:00+03:00", "HS_2015", ("bad_source", "source HS_2015 requires consent date "
                                              "2015-05-01T00:00:00+03:00")),
    ("2026-11-01T10:00:00+03:00", "HS_NOPE", ("bad_source", "unknown source 'HS_NOPE'; use an İYS code such as "
                                              "HS_WEB, HS_MESAJ, HS_FIZIKSEL_ORTAM, HS_ISLAK_IMZA, HS_CAGRI_MERKEZI")),
    ("2026-11-01T10:00:00+03:00", "IYS_WEB", ("bad_source", "unknown source 'IYS_WEB' (IYS_* sources are recorded "
                                              "by `izin iys pull`); use an İYS code such as HS_WEB, HS_MESAJ, "
                                              "HS_FIZIKSEL_ORTAM, HS_ISLAK_IMZA, HS_CAGRI_MERKEZI")),
])
def test_dates_and_sources_izin_refuses(ayse, at, source, expected):
    assert refusal(ayse, "C1", "email", "ONAY", source=source, at=at) == expected
    assert events(ayse) == []


def test_consent_at_the_exact_limits_is_accepted(ayse):
    record(ayse, "C1", "email", "ONAY", source="HS_2015", at="2015-05-01T00:00:00+03:00")
    record(ayse, "C1", "sms", "ONAY", at="2026-11-24T12:00:00+03:00")
    assert [e.source for e in events(ayse)] == ["HS_2015", "HS_WEB"]


def test_first_ever_ret_is_kept_as_suppression_but_not_uploadable(ayse):
    recorded = record(ayse, "C1", "email", "RET", source="HS_CAGRI_MERKEZI")
    assert recorded.notes == ["kept as a local suppression; İYS refuses a first-ever RET, so it will not be uploaded"]
    assert (recorded.event.status, recorded.event.iys_uploadable) == ("RET", False)
    # a RET after an ONAY is an ordinary, uploadable withdrawal
    record(ayse, "C1", "sms", "ONAY", at="2026-11-01T10:00:00+03:00")
    later = record(ayse, "C1", "sms", "RET", source="HS_MESAJ", at="2026-11-02T10:00:00+03:00")
    assert (later.event.iys_uploadable, later.notes) == (True, [])


def test_an_older_onay_cannot_override_a_newer_ret(ayse):
    record(ayse, "C1", "email", "ONAY", at="2026-11-01T10:00:00+03:00")
    record(ayse, "C1", "email", "RET", source="HS_EPOSTA", at="2026-11-10T10:00:00+03:00")
    assert refusal(ayse, "C1", "email", "ONAY", at="2026-11-05T10:00:00+03:00") == (
        "out_of_order", "consent date 2026-11-05T10:00:00+03:00 is before the latest recorded event #2 "
        "(2026-11-10T10:00:00+03:00); an older ONAY cannot override a newer decision")


def test_a_late_older_ret_still_suppresses_but_is_not_uploadable(ayse):
    record(ayse, "C1", "email", "ONAY", at="2026-11-10T10:00:00+03:00")
    late = record(ayse, "C1", "email", "RET", source="HS_EPOSTA", at="2026-11-05T10:00:00+03:00")
    assert late.event.iys_uploadable is False
    assert late.notes == ["recorded as a suppression; its date is older than the latest event, so İYS will not take it"]
    with ayse.session() as session:
        assert session.get(ConsentState, ("ayse@example.com", "email", "BIREYSEL")).status == "RET"


def test_hs_karar_is_only_a_ret_after_a_record(ayse):
    assert refusal(ayse, "C1", "email", "RET", source="HS_KARAR")[0] == "bad_source"
    record(ayse, "C1", "email", "ONAY")
    assert refusal(ayse, "C1", "email", "ONAY", source="HS_KARAR")[0] == "duplicate_status"
    record(ayse, "C1", "email", "RET", source="HS_KARAR", at="2026-11-02T10:00:00+03:00")


def test_addresses_channels_and_mobiles(db):
    add_contact(db, "NOMAIL", phone="+902125550000", mobile=False)
    assert refusal(db, "NOMAIL", "email", "ONAY") == (
        "no_address", "contact NOMAIL has no email; import one before recording email consent")
    assert refusal(db, "NOMAIL", "sms", "ONAY") == (
        "not_mobile", "+902125550000 cannot be a mobile number, so it cannot get SMS; record call consent for it instead")
    record(db, "NOMAIL", "call", "ONAY", source="HS_CAGRI_MERKEZI")
    assert refusal(db, "NOMAIL", "fax", "ONAY")[0] == "bad_channel"


def test_recipient_type_defaults_to_the_contacts_and_keys_separately(db):
    add_contact(db, "T1", email="satin@firma.com.tr", recipient_type="TACIR")
    assert record(db, "T1", "email", "ONAY").event.recipient_type == "TACIR"
    # İYS holds one record per recipient type: a BIREYSEL ONAY is a separate key, not a duplicate
    assert record(db, "T1", "email", "ONAY", recipient_type="BIREYSEL").event.recipient_type == "BIREYSEL"


def test_consent_belongs_to_the_address_not_the_person(db, now):
    from izin.consent.contacts import ContactFields, upsert
    from izin.consent.gate import may_send
    from izin.consent.models import ContactAddress

    with db.session() as session:
        assert upsert(session, ContactFields("C1", {"email": "old@example.com"}), None, now) == "imported"
    record(db, "C1", "email", "ONAY")
    with db.session() as session:
        contact = session.scalar(select(Contact).where(Contact.external_id == "C1"))
        assert upsert(session, ContactFields("C1", {"email": "new@example.com"}), contact, now) == "updated"
    with db.session() as session:
        contact = session.scalar(select(Contact).where(Contact.external_id == "C1"))
        decision = may_send(session, contact, "email", now)
        assert (decision.allowed, decision.reason, decision.recipient) == (False, "no_consent", "new@example.com")
        history = session.execute(select(ContactAddress.address, ContactAddress.valid_to.is_not(None))
                                  .order_by(ContactAddress.id)).all()
        assert [tuple(r) for r in history] == [("old@example.com", True), ("new@example.com", False)]
        old = session.get(ConsentState, ("old@example.com", "email", "BIREYSEL"))
        assert (old.status, old.event_id) == ("ONAY", 1)
    # the old address keeps its evidence; a grant now is for the new address
    assert record(db, "C1", "email", "ONAY").event.recipient == "new@example.com"


def test_concurrent_writers_keep_one_chain(db, now):
    """Two threads granting at once: ids stay dense and every event links to the one before."""
    for i in range(40):
        add_contact(db, f"W{i}", email=f"w{i}@example.com", phone=f"+9053200000{i:02d}")
    errors: list[BaseException] = []

    def writer(channel: str) -> None:
        try:
            for i in range(40):
                record(db, f"W{i}", channel, "ONAY")
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(c,)) for c in ("email", "sms")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    chain = events(db)
    assert [e.id for e in chain] == list(range(1, 81))
    prev = GENESIS_HASH
    for event in chain:
        assert event.prev_hash == prev and event.hash == event_hash(event)
        prev = event.hash
