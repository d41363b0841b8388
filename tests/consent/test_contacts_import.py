"""Contacts CSV: every column rule, upsert by external_id, address history, counts, and the CLI."""

from __future__ import annotations

import csv
import json
import shutil
from datetime import date, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select

from izin.clock import parse_instant
from izin.consent import contacts as contacts_module
from izin.consent.contacts import RowError, attribute_value, import_contacts, parse_contact
from izin.consent.csvio import Row
from izin.consent.models import Contact, ContactAddress, ContactTag

SAMPLE = Path(__file__).resolve().parents[2] / "scripts" / "sample" / "contacts.csv"
TODAY = date(2026, 11, 24)
PHONE_HINT = "(e.g. 0532 123 45 67 or +90 532 123 45 67)"


def row(line: int = 2, **cells: str) -> Row:
    return Row(line, list(cells.values()), dict(cells))


def write(path: Path, text: str | bytes) -> str:
    if isinstance(text, str):
        path.write_text(text, encoding="utf-8")
    else:
        path.write_bytes(text)
    return str(path)


def contact(db, external_id: str) -> Contact:
    with db.session() as session:
        return session.scalars(select(Contact).where(Contact.external_id == external_id)).one()


def tags(db, external_id: str) -> list[str]:
    with db.session() as session:
        return sorted(session.scalars(select(ContactTag.tag).join(Contact, Contact.id == ContactTag.contact_id)
                                      .where(Contact.external_id == external_id)))


def addresses(db, external_id: str) -> list[tuple[str, str, object, object]]:
    with db.session() as session:
        return [(a.kind, a.address, a.valid_from, a.valid_to) for a in session.scalars(
            select(ContactAddress).join(Contact, Contact.id == ContactAddress.contact_id)
            .where(Contact.external_id == external_id).order_by(ContactAddress.id))]


def counts(report) -> tuple[int, int, int, int]:
    return report.imported, report.updated, report.unchanged, report.rejected


def rejects(path: Path | str) -> list[list[str]]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.reader(f))


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


# -- parse_contact: one rule per case --------------------------------------------------------------

@pytest.mark.parametrize(("cells", "fields"), [
    ({"external_id": " C1 "}, {}),
    ({"external_id": "C1", "first_name": " Ayşe ", "last_name": "Yılmaz"}, {"first_name": "Ayşe", "last_name": "Yılmaz"}),
    ({"external_id": "C1", "email": "Ayse.Yilmaz@Example.com"}, {"email": "ayse.yilmaz@example.com"}),
    ({"external_id": "C1", "phone": "0532 111 22 33"}, {"phone": "+905321112233", "phone_mobile": True}),
    ({"external_id": "C1", "phone": "0212 555 66 77"}, {"phone": "+902125556677", "phone_mobile": False}),
    ({"external_id": "C1", "phone": "+44 7911 123456"}, {"phone": "+447911123456", "phone_mobile": True}),
    ({"external_id": "C1", "birthday": "2000-02-29"},
     {"birthday": date(2000, 2, 29), "birth_month": 2, "birth_day": 29}),
    ({"external_id": "C1", "birthday": "2026-11-24"},
     {"birthday": date(2026, 11, 24), "birth_month": 11, "birth_day": 24}),
    ({"external_id": "C1", "birthday": "1900-01-01"}, {"birthday": date(1900, 1, 1), "birth_month": 1, "birth_day": 1}),
    ({"external_id": "C1", "locale": "EN"}, {"locale": "en"}),
    ({"external_id": "C1", "locale": "tr"}, {"locale": "tr"}),
    ({"external_id": "C1", "timezone": "Europe/London"}, {"timezone": "Europe/London"}),
    ({"external_id": "C1", "recipient_type": "tacir"}, {"recipient_type": "TACIR"}),
    ({"external_id": "C1", "recipient_type": "BIREYSEL"}, {"recipient_type": "BIREYSEL"}),
    # an empty or blank cell means the column is absent
    ({"external_id": "C1", "first_name": "", "email": "  ", "phone": "", "birthday": "", "locale": "",
      "timezone": "", "recipient_type": "", "tags": "", "city": ""}, {}),
])
def test_parse_fields(cells, fields):
    parsed = parse_contact(row(**cells), TODAY)
    assert (parsed.external_id, parsed.fields) == (cells["external_id"].strip(), fields)


@pytest.mark.parametrize(("cells", "reason"), [
    ({"external_id": "  "}, "external_id: is empty; every contact needs the shop's own id"),
    ({"external_id": "X" * 129}, "external_id: longer than 128 characters"),
    ({"external_id": "C1", "first_name": "A" * 101}, "first_name: longer than 100 characters"),
    ({"external_id": "C1", "last_name": "B" * 101}, "last_name: longer than 100 characters"),
    ({"external_id": "C1", "email": "elif.sahin@example"},
     "email: 'elif.sahin@example' is not a valid email address: The part after the @-sign is not valid. "
     "It should have a period."),
    ({"external_id": "C1", "email": "şule@example.com"},
     "email: 'şule@example.com' is not a valid email address: Internationalized characters before the @-sign "
     "are not supported: 'ş'."),
    ({"external_id": "C1", "phone": "0532 12"},
     f"phone: '0532 12' is not a valid phone number; check the digits {PHONE_HINT}"),
    ({"external_id": "C1", "phone": "yok"},
     "phone: 'yok' is not a phone number; write e.g. 0532 123 45 67 or +90 532 123 45 67"),
    ({"external_id": "C1", "birthday": "1992-13-01"}, "birthday: 1992-13-01 is not a real date"),
    ({"external_id": "C1", "birthday": "1990-02-30"}, "birthday: 1990-02-30 is not a real date"),
    ({"external_id": "C1", "birthday": "2001-02-29"}, "birthday: 2001-02-29 is not a real date"),
    ({"external_id": "C1", "birthday": "24.11.1990"}, "birthday: '24.11.1990' is not YYYY-MM-DD"),
    ({"external_id": "C1", "birthday": "1990-1-5"}, "birthday: '1990-1-5' is not YYYY-MM-DD"),
    ({"external_id": "C1", "birthday": "2026-11-25"}, "birthday: 2026-11-25 is in the future"),
    ({"external_id": "C1", "birthday": "1899-12-31"}, "birthday: 1899-12-31 is before 1900"),
    ({"external_id": "C1", "locale": "de"}, "locale: 'de' is not supported; use tr or en"),
    ({"external_id": "C1", "locale": "tr_TR"}, "locale: 'tr_TR' is not supported; use tr or en"),
    ({"external_id": "C1", "timezone": "Mars/Olympus"},
     "timezone: 'Mars/Olympus' is not an IANA time zone; use e.g. Europe/Istanbul"),
    ({"external_id": "C1", "timezone": "Europe"},  # a folder of the zone database
     "timezone: 'Europe' is not an IANA time zone; use e.g. Europe/Istanbul"),
    ({"external_id": "C1", "timezone": "../etc/passwd"},
     "timezone: '../etc/passwd' is not an IANA time zone; use e.g. Europe/Istanbul"),
    ({"external_id": "C1", "timezone": "+03:00"},
     "timezone: '+03:00' is not an IANA time zone; use e.g. Europe/Istanbul"),
    ({"external_id": "C1", "recipient_type": "KURUMSAL"}, "recipient_type: 'KURUMSAL' is not BIREYSEL or TACIR"),
    ({"external_id": "C1", "tags": "vip;" + "t" * 65}, "tags: 'tttttttttttttttttttt'... is longer than 64 characters"),
])
def test_parse_rejects_naming_the_column(cells, reason):
    with pytest.raises(RowError) as caught:
        parse_contact(row(**cells), TODAY)
    assert str(caught.value) == reason
    assert str(caught.value).startswith(next(c for c in reversed(cells)) + ": ")


def test_tags_are_split_stripped_deduplicated_and_sorted():
    parsed = parse_contact(row(external_id="C1", tags=" vip ; newsletter;;vip; b2b "), TODAY)
    assert parsed.tags == ["b2b", "newsletter", "vip"]
    assert parse_contact(row(external_id="C1", tags="t" * 64), TODAY).tags == ["t" * 64]
    assert parse_contact(row(external_id="C1"), TODAY).tags is None
    assert parse_contact(row(external_id="C1", tags=" ; "), TODAY).tags == []


def test_other_columns_become_typed_attributes():
    parsed = parse_contact(row(external_id="C1", email="", city=" İstanbul ", total_spent="1250.50", visits="12",
                               postcode="06100", debt="-3", ratio="0.25", big="1e3", comma="1,5", plus="+5",
                               empty=""), TODAY)
    assert parsed.attributes == {"city": "İstanbul", "total_spent": 1250.5, "visits": 12, "postcode": "06100",
                                 "debt": -3, "ratio": 0.25, "big": "1e3", "comma": "1,5", "plus": "+5"}
    assert type(parsed.attributes["visits"]) is int


@pytest.mark.parametrize(("text", "value"), [
    ("0", 0), ("-0", 0), ("42", 42), ("320", 320), ("1250.50", 1250.5), ("0.5", 0.5), ("-12.75", -12.75),
    ("999999999999999999", 999999999999999999),
    ("06100", "06100"), ("00", "00"), ("1.", "1."), (".5", ".5"), ("1_000", "1_000"), ("1 000", "1 000"),
    ("٣", "٣"), ("NaN", "NaN"), ("inf", "inf"), ("1234567890123456789", "1234567890123456789"),
    ("İzmir", "İzmir"),
])
def test_attribute_value(text, value):
    assert attribute_value(text) == value
    assert type(attribute_value(text)) is type(value)


def test_unnamed_columns_are_ignored():
    assert parse_contact(Row(2, ["C1", "x"], {"external_id": "C1", "": "x"}), TODAY).attributes == {}


# -- import_contacts on the database ---------------------------------------------------------------

def test_sample_file(db, now, in_tmp):
    path = shutil.copy(SAMPLE, in_tmp / "contacts.csv")
    report = import_contacts(db, path, now)
    assert counts(report) == (5, 0, 0, 3)
    assert report.rejects_file == Path("contacts.rejects.csv")
    assert report.reasons == {"email": 1, "phone": 1, "timezone": 1}
    assert rejects(in_tmp / "contacts.rejects.csv") == [
        ["external_id", "first_name", "last_name", "email", "phone", "birthday", "locale", "timezone",
         "recipient_type", "tags", "city", "total_spent", "line", "reason"],
        ["C006", "Elif", "Şahin", "elif.sahin@example", "0555 444 55 66", "1995-07-07", "tr", "", "", "", "Bursa",
         "410", "7", "email: 'elif.sahin@example' is not a valid email address: The part after the @-sign is not "
                     "valid. It should have a period."],
        ["C007", "Can", "Öztürk", "can.ozturk@example.com", "0532 12", "1992-13-01", "tr", "", "", "", "Antalya",
         "60", "8", f"phone: '0532 12' is not a valid phone number; check the digits {PHONE_HINT}"],
        ["C008", "Deniz", "Arslan", "deniz@example.com", "0505 777 88 99", "1988-03-03", "tr", "Mars/Olympus", "",
         "", "Eskişehir", "220", "9", "timezone: 'Mars/Olympus' is not an IANA time zone; use e.g. Europe/Istanbul"],
    ]
    c1 = contact(db, "C001")
    assert (c1.first_name, c1.last_name, c1.email, c1.phone, c1.phone_mobile, c1.birthday, c1.birth_month,
            c1.birth_day, c1.locale, c1.timezone, c1.recipient_type, c1.attributes) == (
        "Ayşe", "Yılmaz", "ayse.yilmaz@example.com", "+905321112233", True, date(1990, 11, 24), 11, 24, "tr", None,
        "BIREYSEL", {"city": "İstanbul", "total_spent": 1250.5})
    assert (c1.created_at, c1.updated_at, c1.targeting_purged_at) == (now, now, None)
    assert tags(db, "C001") == ["newsletter", "vip"]
    assert addresses(db, "C001") == [("email", "ayse.yilmaz@example.com", now, None),
                                     ("phone", "+905321112233", now, None)]
    c2 = contact(db, "C002")
    assert (c2.phone, c2.attributes) == ("+905332223344", {"city": "Ankara", "total_spent": 320})
    c3 = contact(db, "C003")
    assert (c3.phone, c3.birthday, c3.birth_month, c3.birth_day) == ("+905443334455", date(2000, 11, 24), 11, 24)
    c4 = contact(db, "C004")
    assert (c4.email, c4.phone, c4.phone_mobile, c4.locale, c4.timezone) == (
        "john.smith@example.co.uk", "+447911123456", True, "en", "Europe/London")
    c5 = contact(db, "C005")
    assert (c5.phone, c5.phone_mobile, c5.birthday, c5.birth_month, c5.recipient_type, c5.attributes) == (
        "+902125556677", False, None, None, "TACIR", {"city": "İstanbul", "total_spent": 15000})
    assert tags(db, "C005") == ["b2b"]
    with db.session() as session:
        assert sorted(session.scalars(select(Contact.external_id))) == ["C001", "C002", "C003", "C004", "C005"]


def test_reimport_is_unchanged(db, now, in_tmp):
    path = shutil.copy(SAMPLE, in_tmp / "contacts.csv")
    import_contacts(db, path, now)
    later = now + timedelta(days=1)
    assert counts(import_contacts(db, path, later)) == (0, 0, 5, 3)
    c1 = contact(db, "C001")
    assert (c1.created_at, c1.updated_at) == (now, now)
    assert len(addresses(db, "C001")) == 2


def test_new_contact_gets_defaults(db, now, in_tmp):
    path = write(in_tmp / "c.csv", "external_id,first_name,email,phone,birthday,locale,timezone,recipient_type,tags,city\n"
                                   "C1,,,,,,,,,\n")
    assert counts(import_contacts(db, path, now)) == (1, 0, 0, 0)
    c = contact(db, "C1")
    assert (c.first_name, c.email, c.phone, c.phone_mobile, c.birthday, c.locale, c.timezone, c.recipient_type,
            c.attributes) == (None, None, None, None, None, "tr", None, "BIREYSEL", {})
    assert tags(db, "C1") == []
    assert addresses(db, "C1") == []


def test_empty_cells_leave_existing_values_unchanged(db, now, in_tmp):
    first = write(in_tmp / "a.csv", "external_id,first_name,email,phone,birthday,locale,timezone,recipient_type,tags,city\n"
                                    "C1,Ayşe,ayse@example.com,0532 111 22 33,1990-11-24,en,Europe/Berlin,TACIR,vip,Bursa\n")
    import_contacts(db, first, now)
    blank = write(in_tmp / "b.csv", "external_id,first_name,email,phone,birthday,locale,timezone,recipient_type,tags,city\n"
                                    "C1, , ,,,,,,,\n")
    assert counts(import_contacts(db, blank, now + timedelta(hours=1))) == (0, 0, 1, 0)
    c = contact(db, "C1")
    assert (c.first_name, c.email, c.phone, c.birthday, c.locale, c.timezone, c.recipient_type, c.attributes,
            c.updated_at) == ("Ayşe", "ayse@example.com", "+905321112233", date(1990, 11, 24), "en",
                              "Europe/Berlin", "TACIR", {"city": "Bursa"}, now)
    assert tags(db, "C1") == ["vip"]
    # and a file without those columns at all does the same
    only_id = write(in_tmp / "c.csv", "external_id\nC1\n")
    assert counts(import_contacts(db, only_id, now + timedelta(hours=2))) == (0, 0, 1, 0)


def test_changed_values_update_and_count_once(db, now, in_tmp):
    import_contacts(db, write(in_tmp / "a.csv", "external_id,first_name,locale,city,total_spent\nC1,Ayse,tr,Bursa,10\n"),
                    now)
    later = now + timedelta(days=2)
    report = import_contacts(db, write(in_tmp / "b.csv",
                                       "external_id,first_name,locale,segment,total_spent\nC1,Ayşe,en,gold,10.5\n"), later)
    assert counts(report) == (0, 1, 0, 0)
    c = contact(db, "C1")
    assert (c.first_name, c.locale, c.attributes, c.created_at, c.updated_at) == (
        "Ayşe", "en", {"city": "Bursa", "segment": "gold", "total_spent": 10.5}, now, later)


def test_attribute_type_change_is_an_update(db, now, in_tmp):
    import_contacts(db, write(in_tmp / "a.csv", "external_id,postcode\nC1,6100\n"), now)
    assert contact(db, "C1").attributes == {"postcode": 6100}
    assert counts(import_contacts(db, write(in_tmp / "b.csv", "external_id,postcode\nC1,06100\n"), now)) == (0, 1, 0, 0)
    assert contact(db, "C1").attributes == {"postcode": "06100"}


def test_tags_are_replaced_when_the_column_is_given(db, now, in_tmp):
    import_contacts(db, write(in_tmp / "a.csv", "external_id,tags\nC1,vip;newsletter\nC2,vip\n"), now)
    report = import_contacts(db, write(in_tmp / "b.csv", "external_id,tags\nC1,gold\nC2,vip\n"), now)
    assert counts(report) == (0, 1, 1, 0)
    assert (tags(db, "C1"), tags(db, "C2")) == (["gold"], ["vip"])
    # the same set in another order and spacing is no change
    assert counts(import_contacts(db, write(in_tmp / "c.csv", "external_id,tags\nC1, gold ;gold\n"), now)) == (
        0, 0, 1, 0)


def test_address_change_closes_the_old_row_and_opens_a_new_one(db, now, in_tmp):
    import_contacts(db, write(in_tmp / "a.csv", "external_id,email,phone\nC1,old@example.com,0532 111 22 33\n"), now)
    later = now + timedelta(days=30)
    report = import_contacts(db, write(in_tmp / "b.csv", "external_id,email,phone\nC1,New@Example.com,05321112233\n"),
                             later)
    assert counts(report) == (0, 1, 0, 0)
    assert addresses(db, "C1") == [("email", "old@example.com", now, later),
                                   ("phone", "+905321112233", now, None),
                                   ("email", "new@example.com", later, None)]
    c = contact(db, "C1")
    assert (c.email, c.updated_at) == ("new@example.com", later)
    # the same address again, in another form, changes nothing
    again = now + timedelta(days=31)
    assert counts(import_contacts(db, write(in_tmp / "c.csv", "external_id,email,phone\nC1,NEW@example.com,+90 532 111 2233\n"),
                                  again)) == (0, 0, 1, 0)
    assert len(addresses(db, "C1")) == 3


def test_phone_change_updates_the_mobile_flag(db, now, in_tmp):
    import_contacts(db, write(in_tmp / "a.csv", "external_id,phone\nC1,0532 111 22 33\n"), now)
    later = now + timedelta(days=1)
    import_contacts(db, write(in_tmp / "b.csv", "external_id,phone\nC1,0212 555 66 77\n"), later)
    c = contact(db, "C1")
    assert (c.phone, c.phone_mobile) == ("+902125556677", False)
    assert addresses(db, "C1") == [("phone", "+905321112233", now, later), ("phone", "+902125556677", later, None)]


def test_first_address_for_an_existing_contact_opens_a_row(db, now, in_tmp):
    import_contacts(db, write(in_tmp / "a.csv", "external_id,first_name\nC1,Ayşe\n"), now)
    later = now + timedelta(days=1)
    import_contacts(db, write(in_tmp / "b.csv", "external_id,email\nC1,ayse@example.com\n"), later)
    assert addresses(db, "C1") == [("email", "ayse@example.com", later, None)]


def test_same_contact_twice_in_one_file(db, now, in_tmp):
    path = write(in_tmp / "a.csv", "external_id,email,tags\nC1,a@example.com,x\nC1,b@example.com,y\n")
    assert counts(import_contacts(db, path, now)) == (1, 1, 0, 0)
    assert contact(db, "C1").email == "b@example.com"
    assert tags(db, "C1") == ["y"]
    assert addresses(db, "C1") == [("email", "a@example.com", now, now), ("email", "b@example.com", now, None)]


def test_batches_rejects_and_duplicates_across_batches(db, now, in_tmp, monkeypatch):
    monkeypatch.setattr(contacts_module, "BATCH_ROWS", 2)
    path = write(in_tmp / "a.csv", "external_id,email,city\n"
                                   "C1,a@example.com,Bursa\n"     # 2
                                   "C2,bad,Bursa\n"               # 3
                                   "C3,c@example.com\n"           # 4: 2 cells
                                   "C4,d@example.com,Van\n"       # 5
                                   "\n"                           # 6
                                   "C1,a@example.com,İzmir\n"     # 7
                                   ",e@example.com,Van\n")        # 8
    progress: list[int] = []
    report = import_contacts(db, path, now, rejects="r.csv", progress=progress.append)
    assert counts(report) == (2, 1, 0, 3)
    assert report.rejects_file == Path("r.csv")
    assert [(r[0], r[-2], r[-1].split(":")[0]) for r in rejects(in_tmp / "r.csv")[1:]] == [
        ("C2", "3", "email"), ("C3", "4", "row"), ("", "8", "external_id")]
    assert contact(db, "C1").attributes == {"city": "İzmir"}
    assert progress[-1] == Path(path).stat().st_size
    assert len(progress) == 3


def test_one_transaction_holds_several_batches_and_an_error_rolls_back_only_the_open_one(db, now, in_tmp,
                                                                                       monkeypatch):
    monkeypatch.setattr(contacts_module, "BATCH_ROWS", 1)
    monkeypatch.setattr(contacts_module, "COMMIT_ROWS", 3)
    path = write(in_tmp / "a.csv", "external_id\n" + "".join(f"C{i}\n" for i in range(1, 8)))
    seen: list[list[str]] = []
    # a plain reader: izin's SQLite sessions open with BEGIN IMMEDIATE and would wait for the import
    reader = create_engine(db.engine.url)

    def progress(_position: int) -> None:
        with reader.connect() as connection:  # what another connection sees while the import runs
            seen.append(sorted(connection.scalars(select(Contact.external_id))))
        if len(seen) == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        import_contacts(db, path, now, progress=progress)
    reader.dispose()
    assert seen == [[], [], ["C1", "C2", "C3"], ["C1", "C2", "C3"], ["C1", "C2", "C3"]]
    with db.session() as session:
        assert sorted(session.scalars(select(Contact.external_id))) == ["C1", "C2", "C3"]
    report = import_contacts(db, path, now)
    assert counts(report) == (4, 0, 3, 0)


@pytest.mark.parametrize("commit_rows, commit_seconds, committed_after", [(3, 3600.0, 3), (1000, 0.0, 1)])
def test_rejected_rows_count_toward_the_commit_so_bad_rows_never_hold_the_lock_for_long(
        db, now, in_tmp, monkeypatch, commit_rows, commit_seconds, committed_after):
    monkeypatch.setattr(contacts_module, "BATCH_ROWS", 1)
    monkeypatch.setattr(contacts_module, "COMMIT_ROWS", commit_rows)
    monkeypatch.setattr(contacts_module, "COMMIT_SECONDS", commit_seconds)
    path = write(in_tmp / "a.csv", "external_id,email\nC1,c1@example.com\n" + "C9,bad\n" * 5)
    seen: list[list[str]] = []
    reader = create_engine(db.engine.url)

    def progress(_position: int) -> None:
        with reader.connect() as connection:
            seen.append(sorted(connection.scalars(select(Contact.external_id))))

    report = import_contacts(db, path, now, progress=progress)
    reader.dispose()
    assert counts(report) == (1, 0, 0, 5)
    # one valid row, then rejects only: the transaction it opened ends after `committed_after` rows read
    assert seen == [[]] * (committed_after - 1) + [["C1"]] * (7 - committed_after)


def test_birthday_today_in_turkiye_before_utc_midnight(db, in_tmp):
    # 01:00 in İstanbul on 24 November is still 23 November in UTC
    early = parse_instant("2026-11-24T01:00:00+03:00")
    path = write(in_tmp / "a.csv", "external_id,birthday\nC1,2026-11-24\nC2,2026-11-25\n")
    report = import_contacts(db, path, early)
    assert counts(report) == (1, 0, 0, 1)
    assert rejects("a.rejects.csv")[1] == ["C2", "2026-11-25", "3", "birthday: 2026-11-25 is in the future"]


def test_no_rejects_no_file(db, now, in_tmp):
    report = import_contacts(db, write(in_tmp / "a.csv", "external_id\nC1\n"), now)
    assert (counts(report), report.rejects_file, report.reasons) == ((1, 0, 0, 0), None, {})
    assert not (in_tmp / "a.rejects.csv").exists()


# -- the CLI ---------------------------------------------------------------------------------------

def test_cli_partial_success_prints_counts_and_exits_0(cli):
    shutil.copy(SAMPLE, cli.cwd / "contacts.csv")
    result = cli("contacts", "import", "contacts.csv")
    assert result.stdout == ("contacts.csv: 5 imported, 0 updated, 0 unchanged, 3 rejected "
                             "(see contacts.rejects.csv)\n")
    assert [r[-2] for r in rejects(cli.cwd / "contacts.rejects.csv")[1:]] == ["7", "8", "9"]
    again = cli("contacts", "import", "contacts.csv")
    assert again.stdout == ("contacts.csv: 0 imported, 0 updated, 5 unchanged, 3 rejected "
                            "(see contacts.rejects.csv)\n")


def test_cli_json_is_exactly_one_document(cli):
    shutil.copy(SAMPLE, cli.cwd / "contacts.csv")
    result = cli("contacts", "import", "contacts.csv", "--rejects", "bad.csv", "--json")
    assert json.loads(result.stdout) == {"file": "contacts.csv", "imported": 5, "updated": 0, "unchanged": 0,
                                         "rejected": 3, "rejects_file": "bad.csv"}
    assert (cli.cwd / "bad.csv").is_file()
    assert not (cli.cwd / "contacts.rejects.csv").exists()


def test_cli_all_good_json(cli):
    write(cli.cwd / "ok.csv", "external_id,email\nC1,a@example.com\n")
    result = cli("contacts", "import", "ok.csv", "--json")
    assert json.loads(result.stdout) == {"file": "ok.csv", "imported": 1, "updated": 0, "unchanged": 0,
                                         "rejected": 0, "rejects_file": None}


@pytest.mark.parametrize(("name", "content", "message"), [
    ("missing.csv", None, "missing.csv: no such file; check the path"),
    ("latin.csv", "external_id,first_name\nC1,Ayşe\n".encode("cp1254"),
     "latin.csv:2: is not UTF-8 (byte 0xfe); save the file as UTF-8 (Excel: CSV UTF-8) and import again"),
    ("noid.csv", "id,email\nC1,a@example.com\n",
     "noid.csv:1: missing required column 'external_id'; the header has: id, email"),
    ("twice.csv", "external_id,email,email\n", "twice.csv:1: column 'email' appears twice in the header; keep one"),
    ("empty.csv", "", "empty.csv:1: is empty; the first line must name the columns, e.g. external_id,email,phone"),
])
def test_cli_bad_file_exits_2_with_one_line(cli, db, name, content, message):
    if content is not None:
        write(cli.cwd / name, content)
    result = cli("contacts", "import", name, expect=2)
    assert result.stderr == f"izin: error: {message}\n"
    assert result.stdout == ""
    with db.session() as session:
        assert session.scalars(select(Contact)).all() == []


def test_cli_rejects_into_a_missing_folder_exits_2_before_importing(cli, db):
    write(cli.cwd / "c.csv", "external_id,email\nC1,bad\nC2,b@example.com\n")
    result = cli("contacts", "import", "c.csv", "--rejects", "nowhere/r.csv", expect=2)
    assert result.stderr == ("izin: error: nowhere/r.csv: --rejects: folder 'nowhere' does not exist; "
                             "create it or choose another rejects file\n")
    with db.session() as session:
        assert session.scalars(select(Contact)).all() == []


def test_cli_timezone_folder_is_a_rejected_row_not_a_crash(cli):
    write(cli.cwd / "c.csv", "external_id,timezone\nC1,Europe\nC2,Asia/Tokyo\n")
    result = cli("contacts", "import", "c.csv")
    assert result.stdout == "c.csv: 1 imported, 0 updated, 0 unchanged, 1 rejected (see c.rejects.csv)\n"
    assert rejects(cli.cwd / "c.rejects.csv")[1] == [
        "C1", "Europe", "2", "timezone: 'Europe' is not an IANA time zone; use e.g. Europe/Istanbul"]

