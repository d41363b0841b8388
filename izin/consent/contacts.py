"""Contacts: parse a CSV row into validated fields, and upsert by external_id in batches.

A contact's email or phone that changes is closed in its address history and the new one opened:
consent stays with the old address in the ledger, and the new address starts with none.
An empty cell means the column is absent: a new contact gets the default, an existing one keeps
what it had.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from izin.consent.addresses import AddressError, normalise_email, normalise_phone
from izin.consent.csvio import CsvInput, ProgressFn, Row, import_csv
from izin.consent.models import RECIPIENT_TYPES, Contact, ContactAddress, ContactTag
from izin.consent.report import ImportReport
from izin.db import Database, serialise

#: the columns with a meaning of their own; any other column becomes an attribute
KNOWN_COLUMNS = ("external_id", "first_name", "last_name", "email", "phone", "birthday", "locale",
                 "timezone", "recipient_type", "tags")
LOCALES = ("tr", "en")
#: rows upserted per transaction
BATCH_ROWS = 1_000
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


def _move_address(session: Session, contact: Contact, kind: str, new: str | None, now: datetime) -> None:
    """Close the old address in the history and open the new one."""
    old = getattr(contact, kind)
    if old == new:
        return
    if old is not None:
        for entry in session.scalars(select(ContactAddress).where(
                ContactAddress.contact_id == contact.id, ContactAddress.kind == kind,
                ContactAddress.valid_to.is_(None))):
            entry.valid_to = now
    if new is not None:
        session.add(ContactAddress(contact_id=contact.id, kind=kind, address=new, valid_from=now))


def new_contact(parsed: ContactFields, now: datetime) -> Contact:
    """A contact from validated fields, not yet in any session."""
    contact = Contact(external_id=parsed.external_id, locale="tr", recipient_type="BIREYSEL",
                      created_at=now, updated_at=now, attributes=dict(parsed.attributes))
    for key, value in parsed.fields.items():
        setattr(contact, key, value)
    return contact


def add_history(session: Session, contact: Contact, parsed: ContactFields, now: datetime) -> None:
    """The address history and tags of a contact just inserted (it has its id)."""
    for kind in ("email", "phone"):
        if getattr(contact, kind):
            session.add(ContactAddress(contact_id=contact.id, kind=kind, address=getattr(contact, kind),
                                       valid_from=now))
    for tag in parsed.tags or []:
        session.add(ContactTag(contact_id=contact.id, tag=tag))


def upsert(session: Session, parsed: ContactFields, existing: Contact | None, now: datetime) -> str:
    """Create or update one contact; return 'imported', 'updated' or 'unchanged'."""
    if existing is None:
        contact = new_contact(parsed, now)
        session.add(contact)
        session.flush()
        add_history(session, contact, parsed, now)
        return "imported"
    contact = existing
    changed = False
    for kind in ("email", "phone"):
        if kind in parsed.fields and parsed.fields[kind] != getattr(contact, kind):
            _move_address(session, contact, kind, parsed.fields[kind], now)
    for key, value in parsed.fields.items():
        if getattr(contact, key) != value:
            setattr(contact, key, value)
            changed = True
    merged = {**(contact.attributes or {}), **parsed.attributes}
    if merged != contact.attributes:
        contact.attributes = merged
        changed = True
    if parsed.tags is not None:
        current = sorted(session.scalars(select(ContactTag.tag).where(ContactTag.contact_id == contact.id)))
        if current != parsed.tags:
            session.execute(delete(ContactTag).where(ContactTag.contact_id == contact.id))
            session.add_all(ContactTag(contact_id=contact.id, tag=t) for t in parsed.tags)
            changed = True
    if changed:
        contact.updated_at = now
        return "updated"
    return "unchanged"


def import_contacts(db: Database, path: str, now: datetime, rejects: str | None = None,
                    progress: ProgressFn | None = None) -> ImportReport:
    """Upsert every valid row of a contacts CSV; write the others to the rejects file."""
    # a birthday is in the future only when it is after today everywhere (UTC+14 is the latest
    # date on earth): someone born today in Türkiye is not refused in the hours before UTC midnight
    today = now.astimezone(_LATEST_OFFSET).date()

    def handle(source: CsvInput, rows: list[Row], report: ImportReport) -> None:
        parsed: list[ContactFields] = []
        for row in rows:
            try:
                parsed.append(parse_contact(row, today))
            except RowError as exc:
                source.reject(row, str(exc))
        with db.session() as session:
            # two imports of the same file at once: the second must see the first's new contacts
            # (and update them), not insert them again and die on the unique key
            serialise(session, "izin:contacts-import")
            known = {c.external_id: c for c in session.scalars(
                select(Contact).where(Contact.external_id.in_({p.external_id for p in parsed})))}
            # new contacts are inserted together in one flush, then get their history
            created: dict[str, tuple[Contact, ContactFields]] = {}

            def settle() -> None:
                session.flush()
                for contact, first in created.values():
                    add_history(session, contact, first, now)
                created.clear()

            for fields in parsed:
                existing = known.get(fields.external_id)
                if existing is None:
                    contact = new_contact(fields, now)
                    session.add(contact)
                    known[fields.external_id] = contact
                    created[fields.external_id] = (contact, fields)
                    report.imported += 1
                    continue
                if fields.external_id in created:
                    settle()  # the same id twice in one batch: the second row updates the first
                outcome = upsert(session, fields, existing, now)
                setattr(report, outcome, getattr(report, outcome) + 1)
            settle()

    return import_csv(path, ("external_id",), rejects, progress, handle, BATCH_ROWS)
