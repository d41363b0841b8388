"""Retention (invariant 9): only evidence whose consent ended > N years ago goes, and verify still passes."""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import select, update

from conftest import add_contact
from izin.clock import parse_instant as T
from izin.consent.audit import consent_records, verify
from izin.consent.gate import may_send
from izin.consent.ledger import LedgerWriter
from izin.consent.models import ConsentEvent, ConsentState, Contact, ContactEvent, ContactTag
from izin.consent.retention import purge, years_before

SECRET = "test-secret"
NOW = T("2026-11-24T12:00:00+03:00")


def grant(db, external_id, channel, status, at, source="HS_WEB"):
    with db.session() as session:
        contact = session.scalar(select(Contact).where(Contact.external_id == external_id))
        return LedgerWriter(session).record(contact, channel, status, source, T(at), T(at)).event.id


def run(db, now=NOW, secret=SECRET):
    with db.session() as session:
        return purge(session, now, 3, secret)


def test_years_before_handles_leap_days():
    assert years_before(datetime(2028, 2, 29, 12, tzinfo=timezone.utc), 3) == datetime(2025, 2, 28, 12,
                                                                                         tzinfo=timezone.utc)
    assert years_before(datetime(2026, 11, 24, tzinfo=timezone.utc), 3) == datetime(2023, 11, 24, tzinfo=timezone.utc)


def _population(db):
    add_contact(db, "OLD", email="old@example.com")          # consent ended 2023-01: purge
    add_contact(db, "RECENT", email="recent@example.com")    # consent ended 2024-01: keep
    add_contact(db, "ACTIVE", email="active@example.com")    # ONAY since 2019: keep
    add_contact(db, "TACIR", email="b2b@firma.com.tr", recipient_type="TACIR")  # refused in 2022
    grant(db, "ACTIVE", "email", "ONAY", "2019-06-01T10:00:00+03:00")       # 1
    grant(db, "OLD", "email", "ONAY", "2020-01-01T10:00:00+03:00")          # 2
    grant(db, "TACIR", "email", "RET", "2022-03-01T10:00:00+03:00", "HS_EPOSTA")  # 3
    grant(db, "OLD", "email", "RET", "2023-01-01T10:00:00+03:00", "HS_EPOSTA")  # 4
    grant(db, "RECENT", "email", "ONAY", "2023-06-01T10:00:00+03:00")       # 5
    grant(db, "RECENT", "email", "RET", "2024-01-01T10:00:00+03:00", "HS_EPOSTA")  # 6


def test_purge_tombstones_only_evidence_older_than_retention_and_verify_passes(db):
    _population(db)
    report = run(db)
    assert (report.events, report.run_id, report.cutoff) == (3, 1, T("2023-11-24T12:00:00+03:00"))
    with db.session() as session:
        rows = {e.id: (e.recipient, e.contact_ref, e.purge_run_id) for e in session.scalars(select(ConsentEvent))}
        assert rows == {1: ("active@example.com", "ACTIVE", None), 2: (None, None, 1), 3: (None, None, 1),
                        4: (None, None, 1), 5: ("recent@example.com", "RECENT", None),
                        6: ("recent@example.com", "RECENT", None)}
        assert verify(session, SECRET).ok
        assert [r["purged"] for r in consent_records(session)] == [False, True, True, True, False, False]
        # the refusal survives as a bare suppression: the TACIR address is never messaged again
        tacir = session.scalar(select(Contact).where(Contact.external_id == "TACIR"))
        assert may_send(session, tacir, "email", NOW).allowed is False
        assert session.get(ConsentState, ("b2b@firma.com.tr", "email", "TACIR")).status == "RET"
    assert run(db).events == 0  # a second run finds nothing new


def test_tombstone_made_outside_a_purge_is_named(db):
    _population(db)
    run(db)
    with db.session() as session:
        session.execute(update(ConsentEvent).where(ConsentEvent.id == 5).values(
            recipient=None, contact_ref=None, purge_run_id=1))
        result = verify(session, SECRET)
    assert (result.broken_id, result.problem) == (
        2, "the events marked purged by run 1 are not the ones it purged (first: #2); an event was blanked outside izin")


def test_purge_signed_with_another_key_is_reported(db):
    _population(db)
    run(db, secret="old-key")
    with db.session() as session:
        result = verify(session, SECRET)
    assert result.broken_id == 2
    assert result.problem.startswith("purge run 1 was signed with key ")
    assert result.problem.endswith("; set IZIN_SECRET_KEY to that key to verify it")


def test_targeting_data_of_opted_out_contacts_is_removed(db, now):
    _population(db)
    add_contact(db, "MIXED", email="mixed@example.com", phone="+905321112233")
    grant(db, "MIXED", "email", "ONAY", "2026-01-01T10:00:00+03:00")
    grant(db, "MIXED", "sms", "ONAY", "2026-01-01T10:00:00+03:00")
    grant(db, "MIXED", "email", "RET", "2026-02-01T10:00:00+03:00", "HS_EPOSTA")
    with db.session() as session:
        for contact in session.scalars(select(Contact)):
            contact.attributes = {"city": "İzmir"}
            session.add(ContactTag(contact_id=contact.id, tag="vip"))
            session.add(ContactEvent(event_id=f"E-{contact.external_id}", contact_id=contact.id, name="purchase",
                                     occurred_at=now, attributes={}, imported_at=now))
    report = run(db)
    assert report.contacts == 3  # OLD, RECENT and TACIR refused everywhere; ACTIVE and MIXED still consent
    with db.session() as session:
        kept = {c.external_id: (c.attributes, c.targeting_purged_at is not None) for c in session.scalars(select(Contact))}
        assert kept == {"OLD": ({}, True), "RECENT": ({}, True), "TACIR": ({}, True),
                        "ACTIVE": ({"city": "İzmir"}, False), "MIXED": ({"city": "İzmir"}, False)}
        owners = {cid for cid in session.scalars(select(ContactTag.contact_id))}
        event_owners = {cid for cid in session.scalars(select(ContactEvent.contact_id))}
        ids = {c.external_id: c.id for c in session.scalars(select(Contact))}
        assert owners == event_owners == {ids["ACTIVE"], ids["MIXED"]}


def test_cli_purge_and_minimum_retention(db, tmp_path, monkeypatch):
    from conftest import Cli

    _population(db)
    cli = Cli(db.url, tmp_path, monkeypatch)
    refused = cli("consent", "purge", "--older-than", "1y", expect=2)
    assert refused.stderr == ("izin: error: --older-than: consent evidence must be kept at least 3 years after the "
                              "consent ends (law 6563); use 3y or more\n")
    done = cli("consent", "purge")
    assert done.stdout == ("purged 3 consent events that ended before 2023-11-24T12:00:00+03:00; cleared targeting "
                           "data of 3 opted-out contacts\n")
    assert cli("audit", "verify").stdout.startswith("ok: 6 consent events, chain intact")


def test_a_late_backdated_refusal_does_not_age_recent_evidence(db):
    """ONAY in 2020, a message sent in 2025, a paper RET dated 2021 entered today: nothing may go."""
    from izin.campaigns.models import Campaign, Delivery

    add_contact(db, "C1", email="c1@example.com")
    grant(db, "C1", "email", "ONAY", "2020-01-01T10:00:00+03:00")
    with db.session() as session:
        session.add(Campaign(id=1, name="efsane-cuma", started_at=T("2025-06-01T10:00:00+03:00")))
        session.flush()
        session.add(Delivery(campaign_id=1, contact_id=session.scalar(select(Contact.id)), occurrence="once",
                             channel="email", recipient="c1@example.com", status="sent", commercial=True,
                             due_at=T("2025-06-01T10:00:00+03:00"), sent_at=T("2025-06-01T10:00:00+03:00"),
                             consent_event_id=1, attempts=1, created_at=T("2025-06-01T10:00:00+03:00"),
                             updated_at=T("2025-06-01T10:00:00+03:00")))
    with db.session() as session:
        contact = session.scalar(select(Contact))
        LedgerWriter(session).record(contact, "email", "RET", "HS_ISLAK_IMZA", T("2021-03-01T10:00:00+03:00"), NOW)
    assert run(db).events == 0
    # three years after the last send and the recording, it may go, and the send log with it
    later = T("2029-11-25T12:00:00+03:00")
    report = run(db, now=later)
    assert report.events == 2
    with db.session() as session:
        assert session.scalar(select(Delivery.recipient)) is None
        assert verify(session, SECRET).ok


def test_abandoned_opt_ins_and_their_contacts_go(db):
    from datetime import timedelta

    from izin.consent.models import OptinRequest

    def request(contact_id, address, expires, confirmed=None):
        with db.session() as session:
            session.add(OptinRequest(token_hash=address.ljust(64, "0")[:64], channel="email", address=address,
                                     contact_id=contact_id, locale="tr", text_version="2026-11", text_hash="0" * 64,
                                     created_at=expires - timedelta(hours=48), expires_at=expires,
                                     confirmed_at=confirmed, attempts=0))

    stale = add_contact(db, "web-aaaa", email="typo@example.com")
    fresh = add_contact(db, "web-bbbb", email="recent@example.com")
    shop = add_contact(db, "C1", email="c1@example.com")
    request(stale, "typo@example.com", NOW - timedelta(days=31))
    request(fresh, "recent@example.com", NOW - timedelta(days=29))
    request(shop, "c1@example.com", NOW - timedelta(days=60))
    report = run(db)
    assert report.abandoned_optins == 2
    with db.session() as session:
        assert sorted(session.scalars(select(Contact.external_id))) == ["C1", "web-bbbb"]
        assert sorted(session.scalars(select(OptinRequest.address))) == ["recent@example.com"]
