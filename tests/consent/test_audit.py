"""Audit export and verify: every way of tampering with the chain is named."""

from __future__ import annotations

import csv
import io
import json

import pytest
from sqlalchemy import delete, select, text, update

from conftest import add_contact
from izin.clock import parse_instant as T
from izin.consent.audit import consent_records, verify, write_records
from izin.consent.ledger import LedgerWriter, event_hash
from izin.consent.models import ConsentEvent, ConsentState, Contact

SECRET = "test-secret"
NOW = T("2026-11-24T12:00:00+03:00")


def grant(db, external_id, channel, status, at, source="HS_WEB", proof=None, now=NOW):
    with db.session() as session:
        contact = session.scalar(select(Contact).where(Contact.external_id == external_id))
        return LedgerWriter(session).record(contact, channel, status, source, T(at), now, proof=proof).event


@pytest.fixture
def ledger(db):
    """Five events; #1 and #2 are superseded, so nothing else points at them."""
    add_contact(db, "C1", email="ayse@example.com", phone="+905321112233")
    add_contact(db, "C2", email="=cmd@example.com", phone="+905339998877")
    grant(db, "C1", "email", "ONAY", "2026-11-01T10:00:00+03:00", proof="=HYPERLINK(\"http://x\")",
          now=T("2026-11-01T10:00:05+03:00"))
    grant(db, "C1", "sms", "ONAY", "2026-11-02T10:00:00+03:00", now=T("2026-11-02T10:00:05+03:00"))
    grant(db, "C1", "email", "RET", "2026-11-03T10:00:00+03:00", source="HS_EPOSTA",
          now=T("2026-11-03T10:00:05+03:00"))
    grant(db, "C2", "email", "ONAY", "2026-11-04T10:00:00+03:00", now=T("2026-11-04T10:00:05+03:00"))
    grant(db, "C1", "sms", "RET", "2026-11-05T10:00:00+03:00", source="HS_MESAJ",
          now=T("2026-11-05T10:00:05+03:00"))
    return db


def check(db):
    with db.session() as session:
        result = verify(session, SECRET)
    return result.broken_id, result.problem


def test_intact_chain_verifies(ledger):
    with ledger.session() as session:
        result = verify(session, SECRET)
        head = session.get(ConsentEvent, 5).hash
    assert (result.ok, result.checked, result.last_id, result.last_hash) == (True, 5, 5, head)


def test_empty_ledger_verifies(db):
    assert check(db) == (None, None)


def test_edited_event_is_named(ledger):
    with ledger.session() as session:
        session.execute(update(ConsentEvent).where(ConsentEvent.id == 2).values(proof="forged"))
    assert check(ledger) == (2, "event #2 was changed after it was recorded: its content no longer matches its hash")


def test_edit_with_recomputed_hash_breaks_the_next_link(ledger):
    with ledger.session() as session:
        event = session.get(ConsentEvent, 2)
        event.status = "RET"
        event.hash = event_hash(event)
    assert check(ledger) == (3, "event #3 does not follow event #2: an event before it was deleted, inserted "
                                "or reordered")


def test_deleted_event_is_named(ledger):
    with ledger.session() as session:
        session.execute(delete(ConsentEvent).where(ConsentEvent.id == 2))
    assert check(ledger) == (2, "event #2 is missing: it was deleted")


def test_deleted_newest_event_is_caught_by_the_head(ledger):
    with ledger.session() as session:
        session.execute(update(ConsentState).where(ConsentState.event_id == 5).values(event_id=2))
        session.execute(delete(ConsentEvent).where(ConsentEvent.id == 5))
    assert check(ledger) == (5, "the ledger ends at event #4 but its head records #5: the newest events were "
                                "deleted, or events were appended outside izin")


def test_reordered_events_are_named(ledger):
    with ledger.session() as session:
        session.execute(update(ConsentEvent).where(ConsentEvent.id == 1).values(id=100))
        session.execute(update(ConsentEvent).where(ConsentEvent.id == 2).values(id=1))
        session.execute(update(ConsentEvent).where(ConsentEvent.id == 100).values(id=2))
    assert check(ledger) == (1, "event #1 does not follow event #0: an event before it was deleted, inserted "
                                "or reordered")


def test_appended_event_outside_izin_is_caught(ledger):
    with ledger.session() as session:
        last = session.get(ConsentEvent, 5)
        forged = ConsentEvent(id=6, contact_id=None, contact_ref="C2", recipient="x@example.com", channel="email",
                              status="ONAY", source="HS_WEB", recipient_type="BIREYSEL",
                              consent_date=NOW, recorded_at=NOW, proof=None, iys_uploadable=True,
                              prev_hash=last.hash)
        forged.hash = event_hash(forged)
        session.add(forged)
    assert check(ledger) == (6, "the ledger ends at event #6 but its head records #5: the newest events were "
                                "deleted, or events were appended outside izin")


def test_ndjson_export_has_the_contract_fields(ledger):
    with ledger.session() as session:
        out = io.StringIO()
        assert write_records(consent_records(session), out, "ndjson") == 5
        first_hash = session.get(ConsentEvent, 1).hash
    first = json.loads(out.getvalue().splitlines()[0])
    assert first == {
        "kind": "consent", "id": 1, "contact": "C1", "recipient": "ayse@example.com", "channel": "email",
        "iys_type": "EPOSTA", "status": "ONAY", "source": "HS_WEB", "recipient_type": "BIREYSEL",
        "consent_date": "2026-11-01T10:00:00+03:00", "recorded_at": "2026-11-01T07:00:05.000000Z",
        "proof": '=HYPERLINK("http://x")', "iys_uploadable": True,
        "prev_hash": "0" * 64, "hash": first_hash, "purged": False,
        "iys_status": None, "iys_transaction_id": None, "iys_creation_date": None,
    }


def test_csv_export_neutralises_formulas(ledger):
    with ledger.session() as session:
        out = io.StringIO()
        write_records(consent_records(session), out, "csv")
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [r["id"] for r in rows] == ["1", "2", "3", "4", "5"]
    assert rows[0]["proof"] == "'=HYPERLINK(\"http://x\")"
    assert rows[1]["recipient"] == "'+905321112233"
    assert rows[3]["recipient"] == "'=cmd@example.com"
    assert rows[0]["iys_uploadable"] == "true"


def test_export_filters_by_time_and_contact(ledger):
    with ledger.session() as session:
        ids = lambda **kw: [r["id"] for r in consent_records(session, **kw)]  # noqa: E731
        assert ids(since=T("2026-11-02T00:00:00+03:00"), until=T("2026-11-04T00:00:00+03:00")) == [2, 3]
        assert ids(since=T("2026-11-04T10:00:05+03:00")) == [4, 5]
        assert ids(contact="C2") == [4]
        assert ids(contact="C1", until=T("2026-11-03T00:00:00+03:00")) == [1, 2]
        assert ids(contact="NOPE") == []


def test_cli_verify_and_export(ledger, tmp_path, monkeypatch):
    from conftest import Cli

    cli = Cli(ledger.url, tmp_path, monkeypatch)
    ok = cli("audit", "verify")
    assert ok.stdout.startswith("ok: 5 consent events, chain intact; head #5 ")
    result = cli("audit", "export", "--format", "ndjson", "--contact", "C2")
    assert [json.loads(line)["id"] for line in result.stdout.splitlines()] == [4]
    assert result.stderr == "exported 1 consent records\n"
    cli("audit", "export", "--format", "csv", "-o", "audit.csv")
    assert (tmp_path / "audit.csv").read_text(encoding="utf-8").count("\n") == 6
    with ledger.session() as session:
        session.execute(text("update consent_events set source = 'HS_ATM' where id = 3"))
    broken = cli("audit", "verify", expect=1)
    assert broken.stdout == ("BROKEN at event #3: event #3 was changed after it was recorded: its content no longer "
                             "matches its hash\n")
    as_json = json.loads(cli("audit", "verify", "--json", expect=1).stdout)
    assert (as_json["ok"], as_json["broken_id"], as_json["checked"]) == (False, 3, 2)


def test_forged_current_state_is_named(ledger):
    """The gate reads consent_state: turning a RET back into ONAY there must not verify clean."""
    with ledger.session() as session:
        session.execute(update(ConsentState).where(ConsentState.recipient == "ayse@example.com",
                                                   ConsentState.channel == "email").values(status="ONAY", event_id=1))
    assert check(ledger) == (1, "the current state of ayse@example.com on email (ONAY, event #1) is not what the "
                                "ledger says: the table the send gate reads was changed outside izin")


def test_deleted_current_state_is_named(ledger):
    with ledger.session() as session:
        session.execute(delete(ConsentState).where(ConsentState.recipient == "ayse@example.com",
                                                   ConsentState.channel == "email"))
    assert check(ledger) == (1, "ayse@example.com on email has ledger events but no current state: the table the "
                                "send gate reads was changed outside izin")
