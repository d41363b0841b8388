"""Consent CSV and the ledger's batch path: every refusal, the same chain as one by one, opt-outs
cancelling queued deliveries, concurrent imports, and record() mixed with record_many()."""

from __future__ import annotations

import csv
import shutil
import threading
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from conftest import add_contact
from izin.clock import parse_instant as T
from izin.consent import consent_import as consent_import_module
from izin.consent.audit import verify
from izin.consent.consent_import import import_consents
from izin.consent.contacts import import_contacts
from izin.consent.ledger import Appended, LedgerWriter, Request
from izin.consent.models import GENESIS_HASH, ConsentEvent, ConsentState, Contact, LedgerHead
from izin.errors import ConsentRefused
from campaigns.support import consent, person, schedule, snapshot

SAMPLES = Path(__file__).resolve().parents[2] / "scripts" / "sample"
IST = ZoneInfo("Europe/Istanbul")
NOW = T("2026-11-24T12:00:00+03:00")
GIVEN = ["external_id", "channel", "status", "source", "consent_date", "proof"]


def rejects(path) -> list[list[str]]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.reader(f))


def write(path: Path, lines: list[str]) -> str:
    path.write_text("\n".join(["external_id,channel,status,source,consent_date,recipient_type,proof", *lines]) + "\n",
                    encoding="utf-8")
    return str(path)


def chain(db) -> list[tuple]:
    """Every column of every event, in id order."""
    with db.session() as session:
        return [tuple(r) for r in session.execute(select(ConsentEvent.__table__).order_by(ConsentEvent.id))]


def states(db) -> list[tuple]:
    with db.session() as session:
        return sorted(tuple(r) for r in session.execute(select(ConsentState.__table__)))


def intact(db) -> tuple[bool, int, str | None]:
    with db.session() as session:
        result = verify(session, "test-secret")
        return result.ok, result.checked, result.problem


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_sample_file(db, in_tmp):
    import_contacts(db, shutil.copy(SAMPLES / "contacts.csv", in_tmp / "contacts.csv"), NOW)
    report = import_consents(db, shutil.copy(SAMPLES / "consents.csv", in_tmp / "consents.csv"), NOW, IST)
    assert (report.imported, report.rejected, report.reasons) == (7, 4, {"status": 1, "consent_date": 2,
                                                                         "external_id": 1})
    assert rejects(in_tmp / "consents.rejects.csv") == [
        [*GIVEN, "line", "reason"],
        ["C001", "email", "ONAY", "HS_WEB", "2026-04-01T10:00:00+03:00", "duplicate-should-be-rejected", "9",
         "status: ayse.yilmaz@example.com is already ONAY on email since 2026-03-01T10:15:00+03:00 (event #1); "
         "nothing recorded"],
        ["C003", "email", "ONAY", "HS_WEB", "2031-01-01T10:00:00+03:00", "future-date", "10",
         "consent_date: consent date 2031-01-01T10:00:00+03:00 is in the future; give the moment the person "
         "actually consented"],
        ["C004", "sms", "ONAY", "HS_WEB", "2014-12-31T10:00:00+03:00", "too-early", "11",
         "consent_date: consent date 2014-12-31T09:00:00+02:00 is before 2015-05-01 (law 6563); use source "
         "HS_2015 for consents given before then"],  # Türkiye kept +02:00 in winter until 2016
        ["C009", "email", "ONAY", "HS_WEB", "2026-01-01T10:00:00+03:00", "unknown-contact", "12",
         "external_id: no contact 'C009'; import the contact first"],
    ]
    events = chain(db)
    assert [(e[0], e[2], e[3], e[4], e[5], e[11]) for e in events] == [
        (1, "C001", "ayse.yilmaz@example.com", "email", "ONAY", True),
        (2, "C001", "+905321112233", "sms", "ONAY", True),
        (3, "C002", "mehmet.demir@example.com", "email", "ONAY", True),
        (4, "C002", "mehmet.demir@example.com", "email", "RET", True),
        (5, "C003", "+905443334455", "sms", "ONAY", True),
        (6, "C004", "john.smith@example.co.uk", "email", "ONAY", True),
        (7, "C005", "ahmet@celik-ticaret.com.tr", "email", "RET", False),  # a first-ever RET: kept locally
    ]
    assert [e[12] for e in events] == [GENESIS_HASH] + [e[13] for e in events[:-1]]
    assert [(s[0], s[1], s[2], s[3], s[4], s[7]) for s in states(db)] == [
        ("+905321112233", "sms", "BIREYSEL", "ONAY", 2, True),
        ("+905443334455", "sms", "BIREYSEL", "ONAY", 5, True),
        ("ahmet@celik-ticaret.com.tr", "email", "TACIR", "RET", 7, False),
        ("ayse.yilmaz@example.com", "email", "BIREYSEL", "ONAY", 1, True),
        ("john.smith@example.co.uk", "email", "BIREYSEL", "ONAY", 6, True),
        ("mehmet.demir@example.com", "email", "BIREYSEL", "RET", 4, True),
    ]
    assert intact(db) == (True, 7, None)
    # the same file again records nothing: repeated statuses, and C002's old ONAY is now out of order
    again = import_consents(db, str(in_tmp / "consents.csv"), NOW, IST)
    assert (again.imported, again.rejected, again.reasons) == (0, 11, {"status": 7, "consent_date": 3,
                                                                       "external_id": 1})


# -- record_many against record, one request of each kind ------------------------------------------

A, OLD = "a@example.com", "old@example.com"
#: (external_id, channel, status, source, consent date, keyword arguments) and what record() answers
REQUESTS = [
    (("A", "email", "ONAY", "HS_WEB", "2026-11-01T10:00:00+03:00", {}), 1),
    (("A", "email", "ONAY", "HS_WEB", "2026-11-02T10:00:00+03:00", {}), "duplicate_status"),
    (("A", "fax", "ONAY", "HS_WEB", "2026-11-01T10:00:00+03:00", {}), "bad_channel"),
    (("A", "email", "MAYBE", "HS_WEB", "2026-11-01T10:00:00+03:00", {}), "bad_status"),
    (("A", "email", "ONAY", "HS_NOPE", "2026-11-01T10:00:00+03:00", {}), "bad_source"),
    (("A", "email", "ONAY", "IYS_WEB", "2026-11-01T10:00:00+03:00", {}), "bad_source"),
    (("A", "email", "ONAY", "HS_WEB", "2026-11-01T10:00:00+03:00", {"recipient_type": "KURUMSAL"}),
     "bad_recipient_type"),
    (("N", "email", "ONAY", "HS_WEB", "2026-11-01T10:00:00+03:00", {}), "no_address"),
    (("F", "sms", "ONAY", "HS_WEB", "2026-11-01T10:00:00+03:00", {}), "not_mobile"),
    (("A", "sms", "ONAY", "HS_WEB", "2026-11-24T12:00:01+03:00", {}), "future_date"),
    (("A", "sms", "ONAY", "HS_WEB", "2015-04-30T23:59:59+03:00", {}), "before_2015"),
    (("A", "sms", "ONAY", "HS_2015", "2016-01-01T00:00:00+03:00", {}), "bad_source"),
    (("A", "call", "RET", "HS_KARAR", "2026-11-01T10:00:00+03:00", {}), "bad_source"),
    (("A", "email", "RET", "HS_EPOSTA", "2026-11-10T10:00:00+03:00", {}), 2),
    (("A", "email", "ONAY", "HS_WEB", "2026-11-05T10:00:00+03:00", {}), "out_of_order"),
    (("A", "sms", "RET", "HS_MESAJ", "2026-11-03T10:00:00+03:00", {}), 3),  # first-ever RET
    (("A", "sms", "ONAY", "HS_WEB", "2026-11-04T10:00:00+03:00", {}), 4),
    (("A", "sms", "RET", "HS_MESAJ", "2026-11-01T10:00:00+03:00", {}), 5),  # older than the ONAY: a suppression
    (("T", "email", "ONAY", "HS_WEB", "2026-11-01T10:00:00+03:00", {}), 6),  # the contact's TACIR
    (("T", "email", "ONAY", "HS_WEB", "2026-11-01T10:00:00+03:00", {"recipient_type": "BIREYSEL"}), 7),
    (("F", "call", "ONAY", "HS_CAGRI_MERKEZI", "2026-11-01T10:00:00+03:00", {"proof": "call-1"}), 8),
    (("F", "call", "RET", "HS_KARAR", "2026-11-06T10:00:00+03:00", {}), 9),
    (("A", "call", "ONAY", "IYS_WEB", "2026-11-01T10:00:00+03:00", {"allow_iys_source": True}), 10),
    (("A", "email", "RET", "HS_WEB", "2026-11-07T10:00:00+03:00", {"recipient": OLD}), 11),
    (("A", "email", "RET", "HS_WEB", "2026-11-08T10:00:00+03:00", {"recipient": OLD}), "duplicate_status"),
]
NOTES = {3: ["kept as a local suppression; İYS refuses a first-ever RET, so it will not be uploaded"],
         5: ["recorded as a suppression; its date is older than the latest event, so İYS will not take it"],
         11: ["kept as a local suppression; İYS refuses a first-ever RET, so it will not be uploaded"]}


@pytest.fixture
def people(db):
    add_contact(db, "A", email=A, phone="+905321112233")
    add_contact(db, "F", phone="+902125556677", mobile=False)
    add_contact(db, "N")
    add_contact(db, "T", email="satin@firma.com.tr", recipient_type="TACIR")
    return db


def one_by_one(session) -> list[tuple]:
    writer, answers = LedgerWriter(session), []
    for (external_id, channel, status, source, at, kwargs), _expected in REQUESTS:
        contact = session.scalar(select(Contact).where(Contact.external_id == external_id))
        try:
            recorded = writer.record(contact, channel, status, source, T(at), NOW, **kwargs)
        except ConsentRefused as exc:
            answers.append((exc.reason, exc.message))
        else:
            answers.append((recorded.event.id, recorded.event.hash, recorded.notes))
    return answers


def in_batch(session) -> list[tuple]:
    contacts = {c.external_id: c for c in session.scalars(select(Contact))}
    requests = [Request(contacts[external_id], channel, status, source, T(at), **kwargs)
                for (external_id, channel, status, source, at, kwargs), _expected in REQUESTS]
    return [(r.id, r.hash, r.notes) if isinstance(r, Appended) else (r.reason, r.message)
            for r in LedgerWriter(session).record_many(requests, NOW)]


def test_record_many_answers_and_writes_exactly_what_record_does(people):
    with people.session() as session:
        answers = one_by_one(session)
    expected_chain, expected_states = chain(people), states(people)
    with people.session() as session:  # start again from an empty ledger
        session.execute(ConsentState.__table__.delete())
        session.execute(ConsentEvent.__table__.delete())
        head = session.get(LedgerHead, 1)
        head.last_id, head.last_hash = 0, GENESIS_HASH
    with people.session() as session:
        batch = in_batch(session)
    assert batch == answers
    assert [a[0] for a in batch] == [expected for _request, expected in REQUESTS]
    assert {a[0]: a[2] for a in batch if isinstance(a[0], int) and a[2]} == NOTES
    assert chain(people) == expected_chain
    assert states(people) == expected_states
    assert [(e[0], e[3], e[4], e[5], e[7], e[10], e[11]) for e in expected_chain] == [
        (1, A, "email", "ONAY", "BIREYSEL", None, True),
        (2, A, "email", "RET", "BIREYSEL", None, True),
        (3, "+905321112233", "sms", "RET", "BIREYSEL", None, False),
        (4, "+905321112233", "sms", "ONAY", "BIREYSEL", None, True),
        (5, "+905321112233", "sms", "RET", "BIREYSEL", None, False),
        (6, "satin@firma.com.tr", "email", "ONAY", "TACIR", None, True),
        (7, "satin@firma.com.tr", "email", "ONAY", "BIREYSEL", None, True),
        (8, "+902125556677", "call", "ONAY", "BIREYSEL", "call-1", True),
        (9, "+902125556677", "call", "RET", "BIREYSEL", None, True),
        (10, "+905321112233", "call", "ONAY", "BIREYSEL", None, True),
        (11, OLD, "email", "RET", "BIREYSEL", None, False),
    ]
    assert intact(people) == (True, 11, None)


def test_record_and_record_many_in_one_writer_see_each_other(people):
    with people.session() as session:
        writer = LedgerWriter(session)
        contact = session.scalar(select(Contact).where(Contact.external_id == "A"))
        writer.record(contact, "email", "ONAY", "HS_WEB", T("2026-11-01T10:00:00+03:00"), NOW)
        first, second = writer.record_many([
            Request(contact, "email", "ONAY", "HS_WEB", T("2026-11-02T10:00:00+03:00")),
            Request(contact, "email", "RET", "HS_EPOSTA", T("2026-11-03T10:00:00+03:00"))], NOW)
        assert (first.reason, second.id) == ("duplicate_status", 2)
        # record() after the batch reads the state the batch wrote, not a stale copy
        with pytest.raises(ConsentRefused) as refused:
            writer.record(contact, "email", "RET", "HS_EPOSTA", T("2026-11-04T10:00:00+03:00"), NOW)
        assert refused.value.reason == "duplicate_status"
        assert writer.record(contact, "email", "ONAY", "HS_WEB", T("2026-11-05T10:00:00+03:00"), NOW).event.id == 3
        assert writer.record_many([], NOW) == []
    with people.session() as session:
        state = session.get(ConsentState, (A, "email", "BIREYSEL"))
        assert (state.status, state.event_id, state.ever_onay) == ("ONAY", 3, True)
    assert intact(people) == (True, 3, None)


def test_an_imported_ret_cancels_queued_deliveries(db, settings, in_tmp):
    person(db, "ALI", email="ali@example.com", phone="+905321112233")
    person(db, "VELI", email="veli@example.com")
    for external_id, channel in (("ALI", "sms"), ("ALI", "email"), ("VELI", "email")):
        consent(db, external_id, channel)
    schedule(db, settings)
    assert snapshot(db) == [("ALI", "scheduled", None, "sms"), ("VELI", "scheduled", None, "email")]
    path = write(in_tmp / "k.csv", ["ALI,sms,RET,HS_MESAJ,2026-11-20T10:00:00+03:00,,sms-reply",
                                    "VELI,email,RET,HS_EPOSTA,2026-11-20T10:00:00+03:00,,link",
                                    "VELI,email,ONAY,HS_WEB,2026-11-21T10:00:00+03:00,,form"])
    report = import_consents(db, path, NOW, IST)
    assert (report.imported, report.rejected) == (3, 0)
    # a later ONAY in the same file does not bring back what the RET cancelled
    assert snapshot(db) == [("ALI", "suppressed", "consent_withdrawn", "sms"),
                            ("VELI", "suppressed", "consent_withdrawn", "email")]
    assert intact(db) == (True, 6, None)


def test_concurrent_imports_keep_one_chain(db, in_tmp, monkeypatch):
    monkeypatch.setattr(consent_import_module, "BATCH_ROWS", 7)  # many small transactions that interleave
    for i in range(60):
        add_contact(db, f"W{i}", email=f"w{i}@example.com", phone=f"+9053200000{i:02d}")
    files = {channel: write(in_tmp / f"{channel}.csv", [f"W{i},{channel},ONAY,HS_WEB,2026-11-01T10:00:00+03:00,,"
                                                        for i in range(60)]) for channel in ("email", "sms")}
    reports, errors = {}, []

    def run(channel: str) -> None:
        try:
            reports[channel] = import_consents(db, files[channel], NOW, IST)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(c,)) for c in files]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert {c: (r.imported, r.rejected) for c, r in reports.items()} == {"email": (60, 0), "sms": (60, 0)}
    events = chain(db)
    assert [e[0] for e in events] == list(range(1, 121))
    assert [e[12] for e in events] == [GENESIS_HASH] + [e[13] for e in events[:-1]]
    assert intact(db) == (True, 120, None)
