"""Events CSV: validation, dedupe by event_id (given or derived), time zones, unknown contacts, CLI."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from izin.clock import parse_instant
from izin.consent import events as events_module
from izin.consent.contacts import RowError, import_contacts
from izin.consent.csvio import Row
from izin.consent.events import import_events, parse_event
from izin.consent.models import Contact, ContactEvent

SAMPLES = Path(__file__).resolve().parents[2] / "scripts" / "sample"
IST = ZoneInfo("Europe/Istanbul")
NOW = parse_instant("2026-11-24T12:00:00+03:00")
UTC = timezone.utc


def row(line: int = 2, **cells: str) -> Row:
    return Row(line, list(cells.values()), dict(cells))


def derived(external_id: str, name: str, instant_utc: str, attributes: dict) -> str:
    text = json.dumps([external_id, name, instant_utc, attributes], sort_keys=True, default=str)
    return "auto-" + hashlib.sha256(text.encode()).hexdigest()[:32]


def write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def rejects(path) -> list[list[str]]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.reader(f))


def stored(db) -> list[tuple]:
    with db.session() as session:
        return [(e.event_id, ext, e.name, e.occurred_at, e.attributes, e.imported_at) for e, ext in session.execute(
            select(ContactEvent, Contact.external_id).join(Contact, Contact.id == ContactEvent.contact_id)
            .order_by(ContactEvent.id))]


def counts(report) -> tuple[int, int, int, int]:
    return report.imported, report.updated, report.unchanged, report.rejected


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def shop(db, now, in_tmp):
    """The sample contacts C001-C005 (C009 does not exist)."""
    import_contacts(db, shutil.copy(SAMPLES / "contacts.csv", in_tmp / "contacts.csv"), now)
    return db


# -- parse_event ----------------------------------------------------------------------------------

def test_parse_with_event_id():
    parsed = parse_event(row(external_id=" C001 ", event=" Purchase ", occurred_at="2026-11-18T14:30:00+03:00",
                             event_id="ORD-1001", order_total="899.90", product="Kışlık mont", note=""), NOW, IST)
    assert parsed == {"event_id": "ORD-1001", "external_id": "C001", "name": "purchase",
                      "occurred_at": datetime(2026, 11, 18, 11, 30, tzinfo=UTC),
                      "attributes": {"order_total": 899.9, "product": "Kışlık mont"}}


@pytest.mark.parametrize(("text", "policy", "utc"), [
    ("2026-11-20T14:30:00+03:00", IST, datetime(2026, 11, 20, 11, 30, tzinfo=UTC)),
    ("2026-11-20T11:30:00Z", IST, datetime(2026, 11, 20, 11, 30, tzinfo=UTC)),
    ("2026-11-20T11:30:00+00:00", IST, datetime(2026, 11, 20, 11, 30, tzinfo=UTC)),
    # no offset: read in the policy time zone
    ("2026-11-20T14:30:00", IST, datetime(2026, 11, 20, 11, 30, tzinfo=UTC)),
    ("2026-11-20 14:30", IST, datetime(2026, 11, 20, 11, 30, tzinfo=UTC)),
    ("2026-11-20", IST, datetime(2026, 11, 19, 21, 0, tzinfo=UTC)),
    ("2026-11-20T14:30:00", ZoneInfo("Europe/London"), datetime(2026, 11, 20, 14, 30, tzinfo=UTC)),
    ("2026-07-20T14:30:00", ZoneInfo("Europe/London"), datetime(2026, 7, 20, 13, 30, tzinfo=UTC)),
    ("2026-11-20T14:30:00.250", IST, datetime(2026, 11, 20, 11, 30, 0, 250000, tzinfo=UTC)),
    # exactly now is not the future
    ("2026-11-24T12:00:00+03:00", IST, datetime(2026, 11, 24, 9, 0, tzinfo=UTC)),
    ("1900-01-01T00:00:00Z", IST, datetime(1900, 1, 1, tzinfo=UTC)),
])
def test_parse_times(text, policy, utc):
    occurred = parse_event(row(external_id="C1", event="purchase", occurred_at=text), NOW, policy)["occurred_at"]
    assert occurred == utc


@pytest.mark.parametrize(("cells", "reason"), [
    ({"external_id": "", "event": "purchase", "occurred_at": "2026-11-20T14:30:00+03:00"},
     "external_id: is empty; name the contact the event belongs to"),
    ({"external_id": "C1", "event": " ", "occurred_at": "2026-11-20T14:30:00+03:00"},
     "event: is empty; name the event, e.g. purchase"),
    ({"external_id": "C1", "event": "satın alma", "occurred_at": "2026-11-20T14:30:00+03:00"},
     "event: 'satın alma' is not an event name; use lower-case letters, digits, '_', '-' or '.', e.g. purchase"),
    ({"external_id": "C1", "event": "_purchase", "occurred_at": "2026-11-20T14:30:00+03:00"},
     "event: '_purchase' is not an event name; use lower-case letters, digits, '_', '-' or '.', e.g. purchase"),
    ({"external_id": "C1", "event": "p" * 65, "occurred_at": "2026-11-20T14:30:00+03:00"},
     f"event: {'p' * 65!r} is not an event name; use lower-case letters, digits, '_', '-' or '.', e.g. purchase"),
    ({"external_id": "C1", "event": "purchase", "occurred_at": ""},
     "occurred_at: is empty; give an ISO 8601 time, e.g. 2026-11-20T14:30:00+03:00"),
    ({"external_id": "C1", "event": "purchase", "occurred_at": "20.11.2026 14:30"},
     "occurred_at: '20.11.2026 14:30' is not ISO 8601; write e.g. 2026-11-20T14:30:00+03:00"),
    ({"external_id": "C1", "event": "purchase", "occurred_at": "2026-02-30T10:00:00+03:00"},
     "occurred_at: '2026-02-30T10:00:00+03:00' is not ISO 8601; write e.g. 2026-11-20T14:30:00+03:00"),
    ({"external_id": "C1", "event": "purchase", "occurred_at": "2026-11-24T12:00:01+03:00"},
     "occurred_at: 2026-11-24T12:00:01+03:00 is in the future"),
    ({"external_id": "C1", "event": "purchase", "occurred_at": "2026-11-24T12:00:01"},
     "occurred_at: 2026-11-24T12:00:01 is in the future"),
    ({"external_id": "C1", "event": "purchase", "occurred_at": "9999-12-31T23:59:59+14:00"},
     "occurred_at: 9999-12-31T23:59:59+14:00 is in the future"),
    ({"external_id": "C1", "event": "purchase", "occurred_at": "0001-01-01T00:00:00"},
     "occurred_at: 0001-01-01T00:00:00 is before 1900"),
    ({"external_id": "C1", "event": "purchase", "occurred_at": "1899-12-31T23:59:59Z"},
     "occurred_at: 1899-12-31T23:59:59Z is before 1900"),
    ({"external_id": "C1", "event": "purchase", "occurred_at": "2026-11-20T14:30:00+03:00", "event_id": "E" * 129},
     "event_id: longer than 128 characters"),
])
def test_parse_rejects_naming_the_column(cells, reason):
    with pytest.raises(RowError) as caught:
        parse_event(row(**cells), NOW, IST)
    assert str(caught.value) == reason


def test_derived_id_is_stable_and_ignores_how_the_instant_is_written():
    cells = {"external_id": "C1", "event": "purchase", "order_total": "899.90"}
    a = parse_event(row(**cells, occurred_at="2026-11-20T14:30:00+03:00"), NOW, IST)["event_id"]
    b = parse_event(row(**cells, occurred_at="2026-11-20T11:30:00Z"), NOW, IST)["event_id"]
    c = parse_event(row(**cells, occurred_at="2026-11-20T14:30:00", event_id=" "), NOW, IST)["event_id"]
    assert a == b == c == derived("C1", "purchase", "2026-11-20T11:30:00+00:00", {"order_total": 899.9})


def test_derived_id_changes_with_contact_name_time_and_attributes():
    base = {"external_id": "C1", "event": "purchase", "occurred_at": "2026-11-20T14:30:00+03:00", "total": "5"}
    ids = {parse_event(row(**{**base, **change}), NOW, IST)["event_id"] for change in (
        {}, {"external_id": "C2"}, {"event": "refund"}, {"occurred_at": "2026-11-20T14:31:00+03:00"}, {"total": "6"})}
    assert len(ids) == 5


# -- import_events --------------------------------------------------------------------------------

def test_sample_file(shop, now, in_tmp):
    path = shutil.copy(SAMPLES / "events.csv", in_tmp / "events.csv")
    report = import_events(shop, path, now, IST)
    assert counts(report) == (4, 0, 0, 1)
    assert (report.rejects_file, report.reasons) == (Path("events.rejects.csv"), {"external_id": 1})
    assert rejects(in_tmp / "events.rejects.csv") == [
        ["external_id", "event", "occurred_at", "event_id", "order_total", "product", "line", "reason"],
        ["C009", "purchase", "2026-11-21T21:00:00+03:00", "ORD-1005", "10.00", "Kalem", "6",
         "external_id: no contact 'C009'; import the contact first"],
    ]
    assert stored(shop) == [
        ("ORD-1001", "C001", "purchase", datetime(2026, 11, 18, 11, 30, tzinfo=UTC),
         {"order_total": 899.9, "product": "Kışlık mont"}, now),
        ("ORD-1002", "C002", "purchase", datetime(2026, 11, 20, 6, 10, tzinfo=UTC),
         {"order_total": 149, "product": "Termos"}, now),
        ("ORD-1003", "C003", "purchase", datetime(2026, 10, 2, 16, 45, tzinfo=UTC),
         {"order_total": 320, "product": "Sırt çantası"}, now),
        ("ORD-1004", "C004", "purchase", datetime(2026, 11, 21, 18, 0, tzinfo=UTC),
         {"order_total": 59.9, "product": "Defter"}, now),
    ]
    # a re-import records nothing new
    assert counts(import_events(shop, path, now + timedelta(hours=1), IST)) == (0, 0, 4, 1)
    assert len(stored(shop)) == 4


def test_without_event_id_column_a_reimport_is_idempotent(shop, now, in_tmp):
    path = write(in_tmp / "e.csv", "external_id,event,occurred_at,total\n"
                                   "C001,purchase,2026-11-20T14:30:00,100\n"
                                   "C001,purchase,2026-11-21T14:30:00+03:00,100\n"
                                   "C002,visit,2026-11-21T10:00:00Z,\n")
    assert counts(import_events(shop, path, now, IST)) == (3, 0, 0, 0)
    assert counts(import_events(shop, path, now, IST)) == (0, 0, 3, 0)
    assert stored(shop) == [
        (derived("C001", "purchase", "2026-11-20T11:30:00+00:00", {"total": 100}), "C001", "purchase",
         datetime(2026, 11, 20, 11, 30, tzinfo=UTC), {"total": 100}, now),
        (derived("C001", "purchase", "2026-11-21T11:30:00+00:00", {"total": 100}), "C001", "purchase",
         datetime(2026, 11, 21, 11, 30, tzinfo=UTC), {"total": 100}, now),
        (derived("C002", "visit", "2026-11-21T10:00:00+00:00", {}), "C002", "visit",
         datetime(2026, 11, 21, 10, 0, tzinfo=UTC), {}, now),
    ]
    # the same events exported with another offset are still the same events
    other = write(in_tmp / "f.csv", "external_id,event,occurred_at,total\nC001,purchase,2026-11-20T11:30:00Z,100\n")
    assert counts(import_events(shop, other, now, IST)) == (0, 0, 1, 0)


def test_duplicate_event_ids_in_one_file_and_across_batches(shop, now, in_tmp, monkeypatch):
    monkeypatch.setattr(events_module, "BATCH_ROWS", 2)
    path = write(in_tmp / "e.csv", "external_id,event,occurred_at,event_id\n"
                                   "C001,purchase,2026-11-20T10:00:00+03:00,E1\n"
                                   "C001,purchase,2026-11-20T10:00:00+03:00,E1\n"
                                   "C002,purchase,2026-11-20T11:00:00+03:00,E2\n"
                                   "C003,purchase,2026-11-20T12:00:00+03:00,E1\n"
                                   "C009,purchase,2026-11-20T12:00:00+03:00,E3\n")
    progress: list[int] = []
    report = import_events(shop, path, now, IST, rejects="bad.csv", progress=progress.append)
    assert counts(report) == (2, 0, 2, 1)
    assert [(e[0], e[1]) for e in stored(shop)] == [("E1", "C001"), ("E2", "C002")]
    assert rejects(in_tmp / "bad.csv")[1:] == [
        ["C009", "purchase", "2026-11-20T12:00:00+03:00", "E3", "6",
         "external_id: no contact 'C009'; import the contact first"]]
    assert progress[-1] == Path(path).stat().st_size


def test_rejects_are_in_file_order(shop, now, in_tmp):
    path = write(in_tmp / "e.csv", "external_id,event,occurred_at\n"
                                   "C404,purchase,2026-11-20T10:00:00+03:00\n"
                                   "C001,purchase,2027-01-01T10:00:00+03:00\n"
                                   "C001,purchase\n"
                                   "C001,purchase,2026-11-20T10:00:00+03:00\n")
    report = import_events(shop, path, now, IST)
    assert counts(report) == (1, 0, 0, 3)
    assert report.reasons == {"external_id": 1, "occurred_at": 1, "row": 1}
    assert [(r[-2], r[-1]) for r in rejects(in_tmp / "e.rejects.csv")[1:]] == [
        ("2", "external_id: no contact 'C404'; import the contact first"),
        ("3", "occurred_at: 2027-01-01T10:00:00+03:00 is in the future"),
        ("4", "row: has 2 cells but the header has 3"),
    ]


def test_naive_times_follow_the_policy_time_zone(shop, now, in_tmp):
    path = write(in_tmp / "e.csv", "external_id,event,occurred_at,event_id\nC001,visit,2026-11-20T14:30:00,V1\n")
    import_events(shop, path, now, ZoneInfo("Asia/Tokyo"))
    assert stored(shop)[0][3] == datetime(2026, 11, 20, 5, 30, tzinfo=UTC)


# -- the CLI ---------------------------------------------------------------------------------------

def test_cli_sample(cli):
    shutil.copy(SAMPLES / "contacts.csv", cli.cwd / "contacts.csv")
    shutil.copy(SAMPLES / "events.csv", cli.cwd / "events.csv")
    cli("contacts", "import", "contacts.csv")
    result = cli("events", "import", "events.csv")
    assert result.stdout == "events.csv: 4 imported, 0 updated, 0 unchanged, 1 rejected (see events.rejects.csv)\n"
    again = cli("events", "import", "events.csv", "--json")
    assert json.loads(again.stdout) == {"file": "events.csv", "imported": 0, "updated": 0, "unchanged": 4,
                                        "rejected": 1, "rejects_file": "events.rejects.csv"}


def test_cli_reads_naive_times_in_the_configured_time_zone(cli, db):
    write(cli.cwd / "izin.toml", '[policy]\ntimezone = "Europe/London"\n')
    write(cli.cwd / "c.csv", "external_id\nC1\n")
    write(cli.cwd / "e.csv", "external_id,event,occurred_at\nC1,purchase,2026-11-20T14:30:00\n")
    cli("contacts", "import", "c.csv")
    cli("events", "import", "e.csv")
    assert stored(db)[0][3] == datetime(2026, 11, 20, 14, 30, tzinfo=UTC)


@pytest.mark.parametrize(("content", "message"), [
    (None, "ev.csv: no such file; check the path"),
    ("external_id,event\nC1,purchase\n",
     "ev.csv:1: missing required column 'occurred_at'; the header has: external_id, event"),
    ("external_id,event,occurred_at\nC1,alışveriş,2026-11-20T10:00:00\n".encode("cp1254"),
     "ev.csv:2: is not UTF-8 (byte 0xfd); save the file as UTF-8 (Excel: CSV UTF-8) and import again"),
])
def test_cli_bad_file_exits_2(cli, content, message):
    if isinstance(content, str):
        write(cli.cwd / "ev.csv", content)
    elif content is not None:
        (cli.cwd / "ev.csv").write_bytes(content)
    result = cli("events", "import", "ev.csv", expect=2)
    assert (result.stdout, result.stderr) == ("", f"izin: error: {message}\n")
