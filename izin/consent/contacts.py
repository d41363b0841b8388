"""Contacts: parse a CSV row into validated fields, and upsert by external_id in batches.

A contact's email or phone that changes is closed in its address history and the new one opened:
consent stays with the old address in the ledger, and the new address starts with none.
An empty cell means the column is absent: a new contact gets the default, an existing one keeps
what it had.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.orm import Session

from izin.consent import parallel
from izin.consent.addresses import AddressError, normalise_email, normalise_phone
from izin.consent.csvio import CsvInput, ProgressFn, Row, import_csv
from izin.consent.parallel import BatchParser, rows_of, worker_count
from izin.consent.models import RECIPIENT_TYPES, Contact, ContactAddress, ContactTag
from izin.consent.report import ImportReport
from izin.db import Database, insert_rows, one_of, serialise

#: the columns with a meaning of their own; any other column becomes an attribute
KNOWN_COLUMNS = ("external_id", "first_name", "last_name", "email", "phone", "birthday", "locale",
                 "timezone", "recipient_type", "tags")
#: the contact columns a row can set, besides its attributes
COLUMNS = ("first_name", "last_name", "email", "phone", "phone_mobile", "birthday", "birth_month", "birth_day",
           "locale", "timezone", "recipient_type")
#: what an update of a contact writes
_UPDATED = (*COLUMNS, "attributes", "updated_at")
#: the columns whose change moves the contact's address history
ADDRESS_KINDS = ("email", "phone")
LOCALES = ("tr", "en")
#: rows upserted per set of statements
BATCH_ROWS = 1_000
#: rows (valid or not) per transaction: a commit waits for the disk, and on SQLite rewrites every
#: index page it touched into the log again (at a commit per batch, a quarter of an import's time)
COMMIT_ROWS = 20_000
#: and at most this long open: on SQLite the transaction holds the database's write lock, which
#: opt-outs and workers wait for (a file of bad rows is validated while it is held)
COMMIT_SECONDS = 1.0
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# a plain decimal becomes a number so segments can compare numerically; "06100" stays text
_NUMBER = re.compile(r"^-?(0|[1-9]\d{0,17})(\.\d+)?$")
_TAG = re.compile(r"^[^;]{1,64}$")
_LATEST_OFFSET = timezone(timedelta(hours=14))


class RowError(ValueError):
    """A row that cannot be imported; the message starts with the column name."""


@dataclass
class ContactFields:
    """The validated, present fields of one row."""

    external_id: str
    fields: dict[str, Any] = field(default_factory=dict)
    tags: list[str] | None = None
    attributes: dict[str, Any] = field(default_factory=dict)

    def __reduce__(self) -> tuple[Any, ...]:
        # back from a worker process by the constructor: a third of the default's unpickling cost
        return ContactFields, (self.external_id, self.fields, self.tags, self.attributes)


def attribute_value(text: str) -> Any:
    """Store plain decimals as numbers, everything else as the text given."""
    if _NUMBER.match(text):
        return float(text) if "." in text else int(text)
    return text


def parse_contact(row: Row, today: date) -> ContactFields:
    """Validate one CSV row; raise RowError naming the column."""
    external_id = row.get("external_id")
    if external_id is None:
        raise RowError("external_id: is empty; every contact needs the shop's own id")
    if len(external_id) > 128:
        raise RowError("external_id: longer than 128 characters")
    parsed = ContactFields(external_id=external_id)
    f = parsed.fields
    for column in ("first_name", "last_name"):
        value = row.get(column)
        if value is not None:
            if len(value) > 100:
                raise RowError(f"{column}: longer than 100 characters")
            f[column] = value
    if (email := row.get("email")) is not None:
        try:
            f["email"] = normalise_email(email)
        except AddressError as exc:
            raise RowError(f"email: {exc}") from None
    if (phone := row.get("phone")) is not None:
        try:
            number = normalise_phone(phone)
        except AddressError as exc:
            raise RowError(f"phone: {exc}") from None
        f["phone"], f["phone_mobile"] = number.e164, number.mobile
    if (birthday := row.get("birthday")) is not None:
        f["birthday"] = _birthday(birthday, today)
        f["birth_month"], f["birth_day"] = f["birthday"].month, f["birthday"].day
    if (locale := row.get("locale")) is not None:
        if locale.lower() not in LOCALES:
            raise RowError(f"locale: {locale!r} is not supported; use tr or en")
        f["locale"] = locale.lower()
    if (tz := row.get("timezone")) is not None:
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a folder such as "Europe"
            raise RowError(f"timezone: {tz!r} is not an IANA time zone; use e.g. Europe/Istanbul") from None
        f["timezone"] = tz
    if (rtype := row.get("recipient_type")) is not None:
        if rtype.upper() not in RECIPIENT_TYPES:
            raise RowError(f"recipient_type: {rtype!r} is not BIREYSEL or TACIR")
        f["recipient_type"] = rtype.upper()
    if (tags := row.get("tags")) is not None:
        parsed.tags = sorted({t.strip() for t in tags.split(";") if t.strip()})
        for tag in parsed.tags:
            if not _TAG.match(tag):
                raise RowError(f"tags: {tag[:20]!r}... is longer than 64 characters")
    for column, raw in row.values.items():
        if column in KNOWN_COLUMNS or not column:
            continue
        value = raw.strip()
        if value:
            parsed.attributes[column] = attribute_value(value)
    return parsed


def _birthday(text: str, today: date) -> date:
    if not _DATE.match(text):
        raise RowError(f"birthday: {text!r} is not YYYY-MM-DD")
    try:
        value = date.fromisoformat(text)
    except ValueError:
        raise RowError(f"birthday: {text} is not a real date") from None
    if value > today:
        raise RowError(f"birthday: {text} is in the future")
    if value.year < 1900:
        raise RowError(f"birthday: {text} is before 1900")
    return value


@dataclass
class Change:
    """What one row does to a contact: its outcome, the column values to write, the addresses it
    moves to (kind, old, new), and the tags that replace the current ones (None: tags untouched)."""

    outcome: str
    values: dict[str, Any]
    moves: list[tuple[str, str | None, str]]
    tags: list[str] | None


def change_for(current: Mapping[str, Any] | None, current_tags: list[str] | None, parsed: ContactFields,
               now: datetime) -> Change:
    """The effect of one row on a contact whose columns are `current` (None: no such contact yet).

    `current_tags` (sorted) is read only when the row gives tags. Pure: both the one-contact and
    the batch upsert apply what this returns, so they cannot differ in what an import means.
    """
    if current is None:
        values = {"external_id": parsed.external_id, "locale": "tr", "recipient_type": "BIREYSEL",
                  "created_at": now, "updated_at": now, "attributes": dict(parsed.attributes), **parsed.fields}
        moves: list[tuple[str, str | None, str]] = [
            (kind, None, parsed.fields[kind]) for kind in ADDRESS_KINDS if kind in parsed.fields]
        return Change("imported", values, moves, parsed.tags)
    values = {key: value for key, value in parsed.fields.items() if current[key] != value}
    moves = [(kind, current[kind], values[kind]) for kind in ADDRESS_KINDS if kind in values]
    merged = {**(current["attributes"] or {}), **parsed.attributes}
    if merged != current["attributes"]:
        values["attributes"] = merged
    tags = parsed.tags if parsed.tags is not None and parsed.tags != current_tags else None
    if not values and tags is None:
        return Change("unchanged", {}, [], None)
    values["updated_at"] = now
    return Change("updated", values, moves, tags)


def upsert(session: Session, parsed: ContactFields, existing: Contact | None, now: datetime) -> str:
    """Create or update one contact through the ORM; return 'imported', 'updated' or 'unchanged'."""
    if existing is None:
        change = change_for(None, None, parsed, now)
        contact = Contact(**change.values)
        session.add(contact)
        session.flush()
    else:
        contact = existing
        current_tags = None
        if parsed.tags is not None:
            current_tags = sorted(session.scalars(select(ContactTag.tag).where(ContactTag.contact_id == contact.id)))
        change = change_for({c: getattr(contact, c) for c in (*COLUMNS, "attributes")}, current_tags, parsed, now)
        for kind, old, _new in change.moves:
            if old is not None:  # close the old address in the history
                for entry in session.scalars(select(ContactAddress).where(
                        ContactAddress.contact_id == contact.id, ContactAddress.kind == kind,
                        ContactAddress.valid_to.is_(None))):
                    entry.valid_to = now
        for key, value in change.values.items():
            setattr(contact, key, value)
        if change.tags is not None:
            session.execute(delete(ContactTag).where(ContactTag.contact_id == contact.id))
    session.add_all(ContactAddress(contact_id=contact.id, kind=kind, address=new, valid_from=now)
                    for kind, _old, new in change.moves)
    session.add_all(ContactTag(contact_id=contact.id, tag=t) for t in change.tags or [])
    return change.outcome


def upsert_many(session: Session, batch: Sequence[ContactFields], now: datetime) -> list[str]:
    """Upsert a batch with a handful of set statements; return each row's outcome, in order.

    Rows apply in order, as `upsert` one by one would: the same external_id twice means the second
    row updates what the first made. Reads the batch's contacts and tags in two queries, then
    writes new contacts, changed contacts, closed and opened addresses, and tags with executemany.
    """
    contacts, history_table, tags_table = Contact.__table__, ContactAddress.__table__, ContactTag.__table__
    current: dict[str, dict[str, Any]] = {row["external_id"]: dict(row) for row in session.execute(
        select(contacts.c.id, contacts.c.external_id, *(contacts.c[c] for c in (*COLUMNS, "attributes")))
        .where(one_of(session, contacts.c.external_id, {p.external_id for p in batch}))).mappings()}
    tags_now: dict[str, list[str]] = {}
    wanted = {current[p.external_id]["id"]: p.external_id for p in batch
              if p.tags is not None and p.external_id in current}
    if wanted:
        for contact_id, tag in session.execute(select(tags_table.c.contact_id, tags_table.c.tag)
                                               .where(one_of(session, tags_table.c.contact_id, wanted))):
            tags_now.setdefault(wanted[contact_id], []).append(tag)
        for found in tags_now.values():
            found.sort()  # as Python sorts, whatever the database's collation
    created: dict[str, dict[str, Any]] = {}  # external_id -> the values of a contact this batch inserts
    dirty: set[str] = set()  # existing contacts this batch changes
    opened: dict[tuple[str, str], dict[str, Any]] = {}  # (external_id, kind) -> its history row opened here
    history: list[dict[str, Any]] = []
    closed: set[tuple[int, str]] = set()  # (contact id, kind) whose open history rows in the database close
    retagged: dict[str, list[str]] = {}
    outcomes: list[str] = []
    # a new contact's state holds every column: a later row for it compares with all of them, and
    # executemany compiles one INSERT from the first row's keys for the whole list
    blank = dict.fromkeys(COLUMNS)
    for parsed in batch:
        key = parsed.external_id
        state = current.get(key)
        change = change_for(state, tags_now.get(key, []), parsed, now)
        outcomes.append(change.outcome)
        if state is None:
            state = current[key] = created[key] = {**blank, **change.values}
        else:
            state.update(change.values)
            if change.outcome == "updated" and key not in created:
                dirty.add(key)
        for kind, old, new in change.moves:
            entry = opened.pop((key, kind), None)
            if entry is not None:
                entry["valid_to"] = now
            elif old is not None:
                closed.add((state["id"], kind))
            opened[(key, kind)] = entry = {"key": key, "kind": kind, "address": new, "valid_from": now,
                                           "valid_to": None}
            history.append(entry)
        if change.tags is not None:
            tags_now[key] = retagged[key] = change.tags
    ids = {key: state["id"] for key, state in current.items() if key not in created}
    if created:
        # the rows, then one query for their ids: INSERT ... RETURNING of a whole batch becomes one
        # statement with 14 parameters a row, which psycopg re-parses at great cost
        insert_rows(session, contacts, list(created.values()))
        ids.update(session.execute(select(contacts.c.external_id, contacts.c.id)
                                   .where(one_of(session, contacts.c.external_id, created))).all())
    if dirty:
        session.execute(update(contacts).where(contacts.c.id == bindparam("b_id"))
                        .values({c: bindparam(f"b_{c}") for c in _UPDATED}),
                        [{"b_id": ids[key], **{f"b_{c}": current[key][c] for c in _UPDATED}} for key in sorted(dirty)])
    if closed:
        session.execute(update(history_table).where(
            history_table.c.contact_id == bindparam("b_contact_id"), history_table.c.kind == bindparam("b_kind"),
            history_table.c.valid_to.is_(None)).values(valid_to=now),
            [{"b_contact_id": contact_id, "b_kind": kind} for contact_id, kind in sorted(closed)])
    if history:
        insert_rows(session, history_table, [
            {"contact_id": ids[e["key"]], "kind": e["kind"], "address": e["address"], "valid_from": e["valid_from"],
             "valid_to": e["valid_to"]} for e in history])
    if retagged:
        stale = [ids[key] for key in retagged if key not in created]
        if stale:
            session.execute(delete(tags_table).where(one_of(session, tags_table.c.contact_id, stale)))
        rows = [{"contact_id": ids[key], "tag": tag} for key, tags in retagged.items() for tag in tags]
        insert_rows(session, tags_table, rows)
    return outcomes


def parse_rows(rows: Sequence[Row], today: date) -> list[ContactFields | str]:
    """Each row's validated fields, or the reason it is rejected."""
    results: list[ContactFields | str] = []
    for row in rows:
        try:
            results.append(parse_contact(row, today))
        except RowError as exc:
            results.append(str(exc))
    return results


def parse_batch(columns: list[str], cells: list[tuple[int, list[str]]], today: date) -> list[ContactFields | str]:
    """parse_rows in a worker process (see izin.consent.parallel)."""
    return parse_rows(rows_of(columns, cells), today)


def import_contacts(db: Database, path: str, now: datetime, rejects: str | None = None,
                    progress: ProgressFn | None = None) -> ImportReport:
    """Upsert every valid row of a contacts CSV; write the others to the rejects file.

    A large file is validated in worker processes ahead of the writing (izin.consent.parallel).
    """
    # a birthday is in the future only when it is after today everywhere (UTC+14 is the latest
    # date on earth): someone born today in Türkiye is not refused in the hours before UTC midnight
    today = now.astimezone(_LATEST_OFFSET).date()

    transaction = _Transaction(db)

    def apply(source: CsvInput, rows: list[Row], results: list[ContactFields | str], report: ImportReport) -> None:
        parsed: list[ContactFields] = []
        for row, result in zip(rows, results):
            if isinstance(result, str):
                source.reject(row, result)
            else:
                parsed.append(result)
        if parsed:
            for outcome in upsert_many(transaction.session(), parsed, now):
                setattr(report, outcome, getattr(report, outcome) + 1)
        transaction.handled(len(rows))

    try:
        size = os.path.getsize(path)
    except OSError:
        size = 0  # CsvInput says what is wrong with the path
    workers = worker_count()
    if size < parallel.PARALLEL_MIN_BYTES or workers == 0:
        with transaction:
            return import_csv(path, ("external_id",), rejects, progress,
                              lambda source, rows, report: apply(source, rows, parse_rows(rows, today), report),
                              BATCH_ROWS, lambda source, report: transaction.commit())
    parser = BatchParser(parse_batch, (today,), workers)

    def handle(source: CsvInput, rows: list[Row], report: ImportReport) -> None:
        for done, results in parser.submit(source.columns, rows):
            apply(source, done, results, report)

    def finish(source: CsvInput, report: ImportReport) -> None:
        for done, results in parser.drain():
            apply(source, done, results, report)
        transaction.commit()

    try:
        with transaction:
            return import_csv(path, ("external_id",), rejects, progress, handle, BATCH_ROWS, finish)
    finally:
        parser.close()


class _Transaction:
    """The import's open transaction: committed every COMMIT_ROWS rows read or COMMIT_SECONDS
    open, and at the end (before the rejects file is written); rolled back if the import stops
    with an error."""

    def __init__(self, db: Database) -> None:
        self._db, self._open, self._rows, self._opened_at = db, None, 0, 0.0

    def session(self) -> Session:
        if self._open is None:
            self._open = self._db.session()
            session = self._open.__enter__()
            # two imports of the same file at once: the second must see the first's new contacts
            # (and update them), not insert them again and die on the unique key
            serialise(session, "izin:contacts-import")
            self._session, self._opened_at = session, time.monotonic()
        return self._session

    def handled(self, rows: int) -> None:
        """`rows` more rows of the file were read (written or rejected)."""
        if self._open is None:
            return  # rows rejected with no transaction open hold no lock
        self._rows += rows
        if self._rows >= COMMIT_ROWS or time.monotonic() - self._opened_at >= COMMIT_SECONDS:
            self.commit()

    def commit(self) -> None:
        if self._open is not None:
            opened, self._open, self._rows = self._open, None, 0
            opened.__exit__(None, None, None)

    def __enter__(self) -> _Transaction:
        return self

    def __exit__(self, kind: Any, error: Any, trace: Any) -> None:
        if self._open is not None:
            opened, self._open = self._open, None
            opened.__exit__(kind, error, trace)
