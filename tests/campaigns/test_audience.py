"""Audience conditions compiled to one SQL query: every operator, nesting, tags, events, birthdays.

Every test runs on SQLite and PostgreSQL (the ``db`` fixture). A table is checked as a whole,
``{condition: selected}`` against ``{condition: expected}``, so one seeded database serves many
cases and a failure shows every wrong case at once.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import ColumnElement, case, event, select, text

from izin.campaigns import audience
from izin.campaigns.audience import birthday_filter, birthday_filter_on, compile_audience
from izin.campaigns.spec import parse_campaign
from izin.consent.models import Contact, ContactEvent, ContactTag
from izin.db import Database

ALL = [f"c{n:02d}" for n in range(1, 13)]

# external_id: (columns, attributes, tags, events as (name, age; negative = in the future), birthday)
CONTACTS: dict[str, tuple[dict[str, Any], dict[str, Any], list[str], list[tuple[str, timedelta]],
                          date | None]] = {
    "c01": ({"first_name": "Ayşe", "last_name": "Yılmaz", "email": "ayse@example.com",
             "phone": "+905321112233", "timezone": "Europe/Istanbul"},
            {"city": "İstanbul", "total_spent": 1500, "zip": "34000", "note": "100% pamuk"},
            ["vip"], [("purchase", timedelta(days=5)), ("purchase", timedelta(days=200))],
            date(2000, 2, 29)),
    "c02": ({"first_name": "Mehmet", "email": "mehmet_k@example.com"},
            {"city": "Ankara", "total_spent": 499.5, "zip": "06100"},
            ["vip", "newsletter"], [("purchase", timedelta(days=40))], date(1990, 2, 28)),
    "c03": ({"first_name": "Zeynep", "locale": "en"},
            {"city": "İzmir", "total_spent": 500, "zip": 35000},
            [], [("purchase", timedelta(days=400))], date(1985, 3, 1)),
    "c04": ({}, {"city": "istanbul", "total_spent": "750"},  # a number stored as text
            [], [("signup", timedelta(days=1))], date(1999, 12, 31)),
    "c05": ({}, {}, [], [], date(1992, 2, 29)),
    "c06": ({"first_name": "Ali"},
            {"city": "Ankara", "total_spent": 0, "note": "100 pamuk", "code": "A_1"},
            ["vip"], [("purchase", timedelta(days=30))], None),  # exactly 30 days before
    "c07": ({}, {"city": "İSTANBUL", "total_spent": -20, "note": "50%", "code": "AB1"},
            [], [("purchase", timedelta(days=-1))], date(1980, 11, 24)),  # a purchase after `at`
    "c08": ({}, {"city": None, "total_spent": 2500.75, "newsletter": True}, [], [], None),
    "c09": ({"recipient_type": "TACIR"}, {"şehir": "Bursa", "zip": 6100, "newsletter": "true"},
            ["VIP"], [], None),
    "c10": ({"email": "x_y@example.com"}, {"city": "Ankara", "total_spent": 1500.0},
            ["newsletter"], [("purchase", timedelta(0))], None),  # a purchase exactly at `at`
    "c11": ({"first_name": "İsmail", "email": "xay@example.com"},
            {"city": "Ankara Merkez", "code": "A%1"}, [], [], None),
    "c12": ({}, {"total_spent": 9007199254740993, "a.b": 1}, [], [], None),  # 2**53 + 1
}


def seed(db: Database, now: datetime) -> None:
    with db.session() as session:
        for external_id, (columns, attributes, tags, events, birthday) in CONTACTS.items():
            contact = Contact(external_id=external_id, attributes=attributes, created_at=now,
                              updated_at=now, locale="tr", recipient_type="BIREYSEL",
                              birthday=birthday, birth_month=birthday and birthday.month,
                              birth_day=birthday and birthday.day)
            for name, value in columns.items():
                setattr(contact, name, value)
            session.add(contact)
            session.flush()
            session.add_all(ContactTag(contact_id=contact.id, tag=tag) for tag in tags)
            session.add_all(
                ContactEvent(event_id=f"{external_id}-{index}", contact_id=contact.id, name=name,
                             occurred_at=now - age, attributes={}, imported_at=now)
                for index, (name, age) in enumerate(events))


def condition(audience_yaml: str) -> Any:
    """The ``audience`` of a minimal campaign file, parsed like any other campaign."""
    campaign = parse_campaign(
        "name: t\ntrigger: {type: birthday}\n"
        f"audience: {audience_yaml}\n"
        "channels: [sms]\ncontent: {sms: {text: hi}}\n")
    return campaign.audience


def selected(db: Database, where: ColumnElement[bool]) -> list[str]:
    with db.session() as session:
        return sorted(session.scalars(select(Contact.external_id).where(where)))


def check(db: Database, now: datetime, cases: list[tuple[str, list[str]]]) -> None:
    seed(db, now)
    got = {yaml: selected(db, compile_audience(condition(yaml), now)) for yaml, _ in cases}
    assert got == dict(cases)


def but(*excluded: str) -> list[str]:
    return [c for c in ALL if c not in excluded]


# --- attribute operators ------------------------------------------------------------------------

EQUALITY = [
    ("{attribute: city, eq: İstanbul}", ["c01"]),
    ("{attribute: city, eq: istanbul}", ["c04"]),          # no case folding, Turkish or other
    ("{attribute: city, eq: İSTANBUL}", ["c07"]),
    ("{attribute: city, eq: ISTANBUL}", []),
    ("{attribute: city, eq: Ankara}", ["c02", "c06", "c10"]),  # not "Ankara Merkez"
    ("{attribute: total_spent, eq: 1500}", ["c01", "c10"]),   # 1500 and 1500.0 are one number
    ("{attribute: total_spent, eq: 1500.0}", ["c01", "c10"]),
    ("{attribute: total_spent, eq: \"1500\"}", ["c01"]),       # text: as JSON spells the number
    ("{attribute: total_spent, eq: 499.5}", ["c02"]),
    ("{attribute: total_spent, eq: 750}", []),                 # "750" is text, not a number
    ("{attribute: total_spent, eq: \"750\"}", ["c04"]),
    ("{attribute: total_spent, eq: 9007199254740993}", ["c12"]),  # exact beyond 2**53
    ("{attribute: total_spent, eq: 9007199254740992}", []),
    ("{attribute: zip, eq: \"06100\"}", ["c02"]),
    ("{attribute: zip, eq: 6100}", ["c09"]),                   # never the text "06100"
    ("{attribute: zip, eq: \"6100\"}", ["c09"]),
    ("{attribute: newsletter, eq: true}", ["c08", "c09"]),     # JSON true and the text "true"
    ("{attribute: newsletter, eq: false}", []),
    ("{attribute: şehir, eq: Bursa}", ["c09"]),                # a Turkish attribute name
    ("{attribute: a.b, eq: 1}", ["c12"]),                      # a dot is part of the name
    ("{attribute: missing, eq: x}", []),
    ("{attribute: city, ne: Ankara}", but("c02", "c06", "c10")),  # missing and null city match
    ("{attribute: total_spent, ne: 1500}", but("c01", "c10")),    # as do "750" and no value
    ("{attribute: zip, ne: 6100}", but("c09")),
    ("{attribute: missing, ne: x}", ALL),
    ("{attribute: city, in: [İstanbul, Ankara]}", ["c01", "c02", "c06", "c10"]),
    ("{attribute: total_spent, in: [500, 0, \"750\"]}", ["c03", "c04", "c06"]),  # mixed types
    ("{attribute: city, not_in: [İstanbul, Ankara]}", but("c01", "c02", "c06", "c10")),
    ("{attribute: total_spent, not_in: [500, 0, \"750\"]}", but("c03", "c04", "c06")),
]

ORDERING = [
    ("{attribute: total_spent, gt: 500}", ["c01", "c08", "c10", "c12"]),
    ("{attribute: total_spent, gte: 500}", ["c01", "c03", "c08", "c10", "c12"]),
    ("{attribute: total_spent, lt: 500}", ["c02", "c06", "c07"]),
    ("{attribute: total_spent, lte: 499.5}", ["c02", "c06", "c07"]),
    ("{attribute: total_spent, gt: 499.4}", ["c01", "c02", "c03", "c08", "c10", "c12"]),
    ("{attribute: total_spent, lt: 1000}", ["c02", "c03", "c06", "c07"]),  # not the text "750"
    ("{attribute: total_spent, gte: -20}", but("c04", "c05", "c09", "c11")),
    ("{attribute: missing, lt: 0}", []),
    # text orders by code point: "i" and "İ" come after "Z", whatever the database collation
    ("{attribute: city, lt: B}", ["c02", "c06", "c10", "c11"]),
    ("{attribute: city, gt: Z}", ["c01", "c03", "c04", "c07"]),
    ("{attribute: zip, gte: \"06000\"}", ["c01", "c02", "c03", "c09"]),
    ("{attribute: zip, lt: \"1\"}", ["c02"]),
]

CONTAINS_AND_EXISTS = [
    ("{attribute: note, contains: \"%\"}", ["c01", "c07"]),
    ("{attribute: note, contains: \"100%\"}", ["c01"]),        # as LIKE, it would take "100 pamuk"
    ("{attribute: code, contains: A_1}", ["c06"]),             # ... and here "AB1"
    ("{attribute: code, contains: A%1}", ["c11"]),
    ("{attribute: code, contains: _}", ["c06"]),
    ("{attribute: city, contains: stanbul}", ["c01", "c04"]),
    ("{attribute: city, contains: ist}", ["c04"]),             # case-sensitive
    ("{attribute: city, contains: İ}", ["c01", "c03", "c07"]),
    ("{attribute: total_spent, contains: 5}", ["c01", "c02", "c03", "c04", "c08", "c10", "c12"]),
    ("{attribute: total_spent, contains: \".0\"}", ["c10"]),
    ("{attribute: missing, contains: \"\"}", []),
    ("{attribute: city, exists: true}", ["c01", "c02", "c03", "c04", "c06", "c07", "c10", "c11"]),
    ("{attribute: city, exists: false}", ["c05", "c08", "c09", "c12"]),  # null counts as missing
    ("{attribute: newsletter, exists: true}", ["c08", "c09"]),
    ("{attribute: \"a\\\"b\", exists: false}", ALL),         # a name with " is never present
]


def test_equality_and_membership(db: Database, now: datetime) -> None:
    check(db, now, EQUALITY)


def test_ordering(db: Database, now: datetime) -> None:
    check(db, now, ORDERING)


def test_contains_and_exists(db: Database, now: datetime) -> None:
    check(db, now, CONTAINS_AND_EXISTS)


# --- built-in columns, tags, events, nesting ----------------------------------------------------

BUILTIN_COLUMNS = [
    ("{attribute: first_name, eq: Ayşe}", ["c01"]),
    ("{attribute: first_name, eq: ayşe}", []),
    ("{attribute: first_name, contains: İ}", ["c11"]),
    ("{attribute: first_name, gt: M}", ["c02", "c03", "c11"]),  # İsmail sorts after Zeynep
    ("{attribute: first_name, exists: false}", ["c04", "c05", "c07", "c08", "c09", "c10", "c12"]),
    ("{attribute: first_name, ne: Ali}", but("c06")),            # contacts with no name too
    ("{attribute: first_name, eq: 5}", []),                      # a column is never a number
    ("{attribute: first_name, ne: 5}", ALL),
    ("{attribute: last_name, eq: Yılmaz}", ["c01"]),
    ("{attribute: locale, eq: en}", ["c03"]),
    ("{attribute: locale, in: [tr]}", but("c03")),
    ("{attribute: recipient_type, eq: TACIR}", ["c09"]),
    ("{attribute: email, contains: x_y}", ["c10"]),             # not xay@
    ("{attribute: email, exists: true}", ["c01", "c02", "c10", "c11"]),
    ("{attribute: phone, eq: \"+905321112233\"}", ["c01"]),
    ("{attribute: timezone, exists: true}", ["c01"]),
    ("{attribute: external_id, in: [c01, c12]}", ["c01", "c12"]),
]

TAGS_AND_EVENTS = [
    ("{tag: vip}", ["c01", "c02", "c06"]),
    ("{tag: VIP}", ["c09"]),
    ("{tag: newsletter}", ["c02", "c10"]),
    ("{tag: nobody}", []),
    ("{event: purchase}", ["c01", "c02", "c03", "c06", "c10"]),   # not c07's future purchase
    ("{event: purchase, within: 30d}", ["c01", "c10"]),   # (at - 30d, at]: c06 is 30d ago
    ("{event: purchase, within: 31d}", ["c01", "c06", "c10"]),
    ("{event: purchase, within: 365d}", ["c01", "c02", "c06", "c10"]),
    ("{event: purchase, within: 1m}", ["c10"]),
    ("{event: signup, within: 1d}", []),
    ("{event: signup, within: 25h}", ["c04"]),
    ("{event: refund}", []),
]

NESTING = [
    # the contract's example: no contact is a vip big spender without a purchase this month
    ("{all: [{attribute: city, in: [İstanbul, Ankara]}, {attribute: total_spent, gte: 500},"
     " {tag: vip}, {event: purchase, within: 365d}, {not: {event: purchase, within: 30d}}]}", []),
    ("{all: [{attribute: city, in: [İstanbul, Ankara]}, {attribute: total_spent, gte: 500}]}",
     ["c01", "c10"]),
    ("{all: [{event: purchase}, {not: {event: purchase, within: 30d}}]}", ["c02", "c03", "c06"]),
    ("{any: [{tag: newsletter}, {attribute: city, eq: İzmir}]}", ["c02", "c03", "c10"]),
    ("{not: {any: [{attribute: city, eq: Ankara}, {tag: vip}]}}", but("c01", "c02", "c06", "c10")),
    ("{not: {attribute: total_spent, gt: 100}}", ["c04", "c05", "c06", "c07", "c09", "c11"]),
    ("{not: {not: {tag: vip}}}", ["c01", "c02", "c06"]),
    ("{all: [{any: [{attribute: city, eq: İstanbul}, {attribute: city, eq: İzmir}]},"
     " {not: {attribute: total_spent, lt: 1000}}]}", ["c01"]),
    ("{any: [{all: [{tag: vip}, {attribute: total_spent, lt: 500}]}, {attribute: zip, eq: 6100}]}",
     ["c02", "c06", "c09"]),
    ("{all: [{not: {attribute: city, exists: true}}, {not: {attribute: zip, ne: 6100}}]}",
     ["c09"]),
]


def test_builtin_columns(db: Database, now: datetime) -> None:
    check(db, now, BUILTIN_COLUMNS)


def test_tags_and_events(db: Database, now: datetime) -> None:
    check(db, now, TAGS_AND_EVENTS)


def test_nesting(db: Database, now: datetime) -> None:
    check(db, now, NESTING)


def test_no_audience_is_everyone_and_at_must_be_aware(db: Database, now: datetime) -> None:
    seed(db, now)
    assert selected(db, compile_audience(None, now)) == ALL
    with pytest.raises(ValueError, match="aware"):
        compile_audience(condition("{tag: vip}"), now.replace(tzinfo=None))


def test_the_audience_is_one_statement(db: Database, now: datetime) -> None:
    seed(db, now)
    where = compile_audience(condition(NESTING[0][0]), now - timedelta(days=100))
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    with db.session() as session:
        session.execute(text("select 1"))  # the transaction (and SQLite's BEGIN) is under way
        event.listen(db.engine, "before_cursor_execute", record)
        try:
            ids = sorted(session.scalars(select(Contact.external_id).where(where)))
        finally:
            event.remove(db.engine, "before_cursor_execute", record)
    # 100 days ago: c01's purchase 200 days ago counts, the one 5 days ago is in the future
    assert ids == ["c01"]
    assert len(statements) == 1


@pytest.mark.parametrize("audience_yaml", [None, NESTING[4][0], "{attribute: city, ne: Ankara}"])
def test_the_audience_also_works_as_a_column(db: Database, now: datetime,
                                             audience_yaml: str | None) -> None:
    # The planner selects everyone a trigger makes due, with a flag for audience membership.
    seed(db, now)
    where = compile_audience(audience_yaml and condition(audience_yaml), now)
    member = case((where, True), else_=False)
    with db.session() as session:
        flagged = sorted(tuple(row) for row in session.execute(select(Contact.external_id, member)))
    assert [external_id for external_id, is_member in flagged if is_member] == selected(db, where)
    assert all(is_member in (True, False) for _, is_member in flagged)


# --- birthdays ----------------------------------------------------------------------------------


def test_birthdays(db: Database, now: datetime) -> None:
    seed(db, now)
    on = {day: selected(db, birthday_filter_on(day)) for day in (
        date(2026, 2, 28), date(2028, 2, 28), date(2028, 2, 29), date(2026, 3, 1),
        date(2028, 3, 1), date(2026, 12, 31), date(2026, 11, 24), date(2026, 6, 1))}
    assert on == {
        date(2026, 2, 28): ["c01", "c02", "c05"],  # 29 Feb falls on 28 Feb in a non-leap year
        date(2028, 2, 28): ["c02"],
        date(2028, 2, 29): ["c01", "c05"],
        date(2026, 3, 1): ["c03"],                 # never on 1 March
        date(2028, 3, 1): ["c03"],
        date(2026, 12, 31): ["c04"],
        date(2026, 11, 24): ["c07"],
        date(2026, 6, 1): [],
    }
    assert selected(db, birthday_filter(2, 28, False)) == ["c02"]
    assert selected(db, birthday_filter(2, 28, True)) == ["c01", "c02", "c05"]
    assert selected(db, birthday_filter(2, 29, False)) == ["c01", "c05"]


@pytest.mark.parametrize(("month", "day", "include_feb29", "error"), [
    (2, 30, False, "day is out of range"),
    (13, 1, False, "month must be in 1..12"),
    (3, 1, True, "28 February only"),
])
def test_birthday_filter_refuses(month: int, day: int, include_feb29: bool, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        birthday_filter(month, day, include_feb29)


def test_birthday_filter_reads_the_month_day_index(db: Database) -> None:
    query = select(Contact.id).where(birthday_filter_on(date(2026, 2, 28)))
    with db.session() as session:
        sql = str(query.compile(session.bind, compile_kwargs={"literal_binds": True}))
        if db.engine.dialect.name == "sqlite":
            plan = " ".join(row[-1] for row in session.execute(text(f"EXPLAIN QUERY PLAN {sql}")))
        else:
            session.execute(text("SET LOCAL enable_seqscan = off"))  # the test table is tiny
            plan = " ".join(row[0] for row in session.execute(text(f"EXPLAIN {sql}")))
    assert "ix_contacts_birth_month_day" in plan


def test_public_names() -> None:
    assert audience.__all__ == ["BUILTIN_ATTRIBUTES", "birthday_filter", "birthday_filter_on",
                                "compile_audience"]
