"""Consent history from CSV, appended to the ledger in file order, a batch per transaction."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select

from izin import clock
from izin.consent.csvio import CsvInput, ProgressFn, Row, import_csv
from izin.consent.ledger import LedgerWriter, Request
from izin.consent.models import Contact
from izin.consent.report import ImportReport
from izin.db import Database, one_of
from izin.errors import ConsentRefused

REQUIRED = ("external_id", "channel", "status", "source", "consent_date")
BATCH_ROWS = 1_000
#: what the ledger reads of a contact
_CONTACT_COLUMNS = (Contact.id, Contact.external_id, Contact.email, Contact.phone, Contact.phone_mobile,
                    Contact.recipient_type)
#: which column a refusal reason belongs to, for the rejects file
_REASON_COLUMN = {"duplicate_status": "status", "future_date": "consent_date", "before_2015": "consent_date",
                  "out_of_order": "consent_date", "no_address": "channel", "not_mobile": "channel",
                  "bad_source": "source", "bad_channel": "channel", "bad_status": "status",
                  "bad_recipient_type": "recipient_type"}


def _consent_date(text: str | None, tz: ZoneInfo) -> datetime:
    if text is None:
        raise ValueError("consent_date: is empty; give when the person consented, e.g. 2026-11-20T14:30:00+03:00")
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"consent_date: {text!r} is not ISO 8601; write e.g. 2026-11-20T14:30:00+03:00") from None
    value = value if value.tzinfo else value.replace(tzinfo=tz)
    if clock.out_of_range(value):
        raise ValueError(f"consent_date: {text!r} is out of range; {clock.RANGE_HINT}")
    return value


def import_consents(db: Database, path: str, now: datetime, tz: ZoneInfo, rejects: str | None = None,
                    progress: ProgressFn | None = None) -> ImportReport:
    """Append every acceptable row to the ledger; refused rows go to the rejects file."""
    def handle(source: CsvInput, rows: list[Row], report: ImportReport) -> None:
        with db.session() as session:
            # plain rows carry all the ledger reads of a contact (id, external_id, addresses, type)
            contacts = {c.external_id: c for c in session.execute(select(*_CONTACT_COLUMNS).where(
                one_of(session, Contact.external_id, {r.get("external_id") for r in rows})))}
            requests: list[Request] = []
            asked: list[Row] = []
            for row in rows:
                request = _request(contacts, row, tz)
                if isinstance(request, str):
                    source.reject(row, request)
                else:
                    requests.append(request)
                    asked.append(row)
            for row, outcome in zip(asked, LedgerWriter(session).record_many(requests, now)):
                if isinstance(outcome, ConsentRefused):
                    source.reject(row, f"{_REASON_COLUMN[outcome.reason]}: {outcome.message}")
                else:
                    report.imported += 1

    return import_csv(path, REQUIRED, rejects, progress, handle, BATCH_ROWS)


def _request(contacts: dict[str, Any], row: Row, tz: ZoneInfo) -> Request | str:
    """The ledger request a row makes, or why it cannot make one."""
    contact = contacts.get(row.get("external_id") or "")
    if contact is None:
        return f"external_id: no contact {row.get('external_id')!r}; import the contact first"
    try:
        consent_date = _consent_date(row.get("consent_date"), tz)
    except ValueError as exc:
        return str(exc)
    rtype = row.get("recipient_type")
    return Request(contact, (row.get("channel") or "").lower(), (row.get("status") or "").upper(),
                   (row.get("source") or "").upper(), consent_date,
                   recipient_type=rtype.upper() if rtype else None, proof=row.get("proof"))
