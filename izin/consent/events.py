"""Contact events (purchases and others) from CSV, deduplicated by event_id.

Without an event_id column the id is derived from the row itself, so importing the same file
twice still records each event once. A time written without an offset is read in the policy
time zone, as shop exports usually are.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from sqlalchemy import select

from izin.consent.contacts import RowError, attribute_value
from izin.consent.csvio import CsvInput, ProgressFn, Row, import_csv
from izin.consent.models import Contact, ContactEvent
from izin.consent.report import ImportReport
from izin.db import Database, insert_rows, one_of

REQUIRED = ("external_id", "event", "occurred_at")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
BATCH_ROWS = 1_000
#: older times are typing mistakes (and year 1 would not even convert to UTC)
EARLIEST = datetime(1900, 1, 1, tzinfo=timezone.utc)


def parse_event(row: Row, now: datetime, tz: ZoneInfo) -> dict[str, object]:
    """Validate one events row; raise RowError naming the column."""
    external_id = row.get("external_id")
    if external_id is None:
        raise RowError("external_id: is empty; name the contact the event belongs to")
    name = (row.get("event") or "").lower()
    if not name:
        raise RowError("event: is empty; name the event, e.g. purchase")
    if not _NAME.match(name):
        raise RowError(f"event: {row.get('event')!r} is not an event name; use lower-case letters, digits, "
                       "'_', '-' or '.', e.g. purchase")
    text = row.get("occurred_at")
    if text is None:
        raise RowError("occurred_at: is empty; give an ISO 8601 time, e.g. 2026-11-20T14:30:00+03:00")
    try:
        occurred = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise RowError(f"occurred_at: {text!r} is not ISO 8601; write e.g. 2026-11-20T14:30:00+03:00") from None
    if occurred.tzinfo is None:
        occurred = occurred.replace(tzinfo=tz)
    if occurred > now:
        raise RowError(f"occurred_at: {text} is in the future")
    if occurred < EARLIEST:
        raise RowError(f"occurred_at: {text} is before 1900")
    attributes = {c: attribute_value(v.strip()) for c, v in row.values.items()
                  if c not in (*REQUIRED, "event_id") and c and v.strip()}
    event_id = row.get("event_id")
    if event_id is None:
        # the instant in UTC: 14:30+03:00 and 11:30Z are the same event
        instant = occurred.astimezone(timezone.utc).isoformat()
        digest = hashlib.sha256(json.dumps([external_id, name, instant, attributes],
                                           sort_keys=True, default=str).encode()).hexdigest()
        event_id = "auto-" + digest[:32]
    elif len(event_id) > 128:
        raise RowError("event_id: longer than 128 characters")
    return {"event_id": event_id, "external_id": external_id, "name": name, "occurred_at": occurred,
            "attributes": attributes}


def import_events(db: Database, path: str, now: datetime, tz: ZoneInfo, rejects: str | None = None,
                  progress: ProgressFn | None = None) -> ImportReport:
    """Record every new event of a CSV; already-known event_ids count as unchanged."""
    seen: set[str] = set()

    def handle(source: CsvInput, rows: list[Row], report: ImportReport) -> None:
        parsed: list[tuple[Row, dict[str, object]]] = []
        for row in rows:
            try:
                parsed.append((row, parse_event(row, now, tz)))
            except RowError as exc:
                source.reject(row, str(exc))
        with db.session() as session:
            contacts = {external_id: contact_id for external_id, contact_id in session.execute(
                select(Contact.external_id, Contact.id).where(
                    one_of(session, Contact.external_id, {str(p["external_id"]) for _, p in parsed})))}
            known = set(session.scalars(select(ContactEvent.event_id).where(
                one_of(session, ContactEvent.event_id, {str(p["event_id"]) for _, p in parsed}))))
            new: list[dict[str, object]] = []
            for row, event in parsed:
                contact_id = contacts.get(str(event["external_id"]))
                if contact_id is None:
                    source.reject(row, f"external_id: no contact {event['external_id']!r}; "
                                       "import the contact first")
                    continue
                if event["event_id"] in known or event["event_id"] in seen:
                    report.unchanged += 1
                    continue
                seen.add(str(event["event_id"]))
                new.append({"event_id": event["event_id"], "contact_id": contact_id, "name": event["name"],
                            "occurred_at": event["occurred_at"], "attributes": event["attributes"],
                            "imported_at": now})
            insert_rows(session, ContactEvent.__table__, new)
            report.imported += len(new)

    return import_csv(path, REQUIRED, rejects, progress, handle, BATCH_ROWS)
