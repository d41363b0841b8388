"""Audit: stream the ledger out as NDJSON or CSV, and verify its hash chain.

Exports read the database in pages and write record by record, so memory stays flat however
long the log is. CSV cells that a spreadsheet would run as a formula are neutralised.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any

import orjson
from sqlalchemy import and_, exists, or_, select
from sqlalchemy.orm import aliased
from sqlalchemy.orm import Session

from izin.clock import iso_istanbul, iso_stored_utc, iso_utc
from izin.consent.csvio import FORMULA_START, neutralise
from izin.consent.ledger import event_hash
from izin.consent.models import (GENESIS_HASH, IYS_TYPE, ConsentEvent, ConsentState, Contact, LedgerHead,
                                 PurgeRun)
from izin.db import stored_utc

CONSENT_FIELDS = ("kind", "id", "contact", "recipient", "channel", "iys_type", "status", "source",
                  "recipient_type", "consent_date", "recorded_at", "proof", "iys_uploadable",
                  "prev_hash", "hash", "purged", "iys_status", "iys_transaction_id", "iys_creation_date")
#: rows fetched per round trip while streaming
PAGE_ROWS = 2_000


def consent_records(session: Session, since: datetime | None = None, until: datetime | None = None,
                    contact: str | None = None) -> Iterator[dict[str, Any]]:
    """Consent events in id order as export records, filtered by recorded_at and contact."""
    from izin.consent.iys.models import IysSync

    e = ConsentEvent
    # plain columns, not ORM objects: an export reads millions of rows and keeps none of them
    query = (select(e.id, e.contact_ref, e.recipient, e.channel, e.status, e.source, e.recipient_type,
                    e.consent_date, stored_utc(e.recorded_at), e.proof, e.iys_uploadable, e.prev_hash, e.hash,
                    e.purge_run_id, IysSync.state, IysSync.transaction_id, IysSync.creation_date)
             .outerjoin(IysSync, IysSync.event_id == e.id).order_by(e.id))
    if since is not None:
        query = query.where(e.recorded_at >= since)
    if until is not None:
        query = query.where(e.recorded_at < until)
    if contact is not None:
        contact_id = session.scalar(select(Contact.id).where(Contact.external_id == contact))
        query = query.where(or_(e.contact_ref == contact, e.contact_id == contact_id))
    # tuples unpacked, not rows read by name: this loop runs once per record of the whole log
    for (event_id, contact_ref, recipient, channel, status, source, recipient_type, consent_date, recorded_at,
         proof, uploadable, prev_hash, hash_, purge_run_id, iys_state, iys_transaction, iys_created) \
            in session.connection().execute(query.execution_options(yield_per=PAGE_ROWS)):
        yield {
            "kind": "consent", "id": event_id, "contact": contact_ref, "recipient": recipient,
            "channel": channel, "iys_type": IYS_TYPE[channel], "status": status,
            "source": source, "recipient_type": recipient_type,
            "consent_date": iso_istanbul(consent_date), "recorded_at": iso_stored_utc(recorded_at),
            "proof": proof, "iys_uploadable": uploadable,
            "prev_hash": prev_hash, "hash": hash_, "purged": purge_run_id is not None,
            # İYS's view: None until `izin iys` has enrolled the event
            "iys_status": iys_state, "iys_transaction_id": iys_transaction,
            "iys_creation_date": iso_istanbul(iys_created) if iys_created else None,
        }


def write_records(records: Iterator[dict[str, Any]], out: IO[str], fmt: str,
                  fields: tuple[str, ...] = CONSENT_FIELDS) -> int:
    """Write records as ndjson or csv; return how many."""
    count = 0
    if fmt == "csv":
        writer = csv.writer(out)
        writer.writerow(fields)
        position = {field: index for index, field in enumerate(fields)}
        for record in records:
            # a cell per field, empty unless the record has a value there: a delivery leaves the
            # consent columns of `--kind all` empty, and most records have several empty cells
            row = [""] * len(fields)
            for key, value in record.items():
                if value is not None and key in position:
                    # most cells are text that needs nothing: spare them the call
                    plain = type(value) is str and not value.startswith(FORMULA_START)
                    row[position[key]] = value if plain else neutralise(value)
            writer.writerow(row)
            count += 1
    else:
        # orjson writes what json.dumps(ensure_ascii=False, separators=(",", ":")) writes, ~10x faster;
        # lines go out in pages of bytes, straight to the binary stream under a text file
        binary = getattr(out, "buffer", None)
        page: list[bytes] = []
        for record in records:
            page.append(orjson.dumps(record))
            count += 1
            if len(page) == PAGE_ROWS:
                _write_page(out, binary, page)
                page = []
        _write_page(out, binary, page)
    return count


def _write_page(out: IO[str], binary: Any, lines: list[bytes]) -> None:
    if not lines:
        return
    data = b"\n".join(lines) + b"\n"
    if binary is not None:
        out.flush()  # what was written as text goes first
        binary.write(data)
    else:
        out.write(data.decode("utf-8"))


@dataclass(frozen=True)
class Verification:
    """What verify found: intact, or the first broken event and how it broke."""

    checked: int
    last_id: int
    last_hash: str
    broken_id: int | None = None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


def key_id(secret: str) -> str:
    """A short public name for a signing key, so a rotated key is recognised, not mistaken."""
    return hashlib.sha256(b"izin-key-id:" + secret.encode()).hexdigest()[:16]


def sign(secret: str, digest: str) -> str:
    return hmac.new(secret.encode(), digest.encode(), hashlib.sha256).hexdigest()


def verify(session: Session, secret: str) -> Verification:
    """Walk the whole chain; name the first event that was edited, deleted, inserted or reordered."""
    expected_id, prev_hash, checked = 1, GENESIS_HASH, 0
    tombstones: dict[int, list[str]] = {}
    # plain rows (canonical() reads them as it reads events): no ORM object per event of the log
    query = select(*ConsentEvent.__table__.columns).order_by(ConsentEvent.id).execution_options(yield_per=PAGE_ROWS)
    for event in session.connection().execute(query):
        if event.id != expected_id:
            return Verification(checked, expected_id - 1, prev_hash, expected_id,
                                f"event #{expected_id} is missing: it was deleted" if event.id > expected_id
                                else f"event #{event.id} is out of order")
        if event.prev_hash != prev_hash:
            return Verification(checked, expected_id - 1, prev_hash, event.id,
                                f"event #{event.id} does not follow event #{event.id - 1}: an event before it "
                                "was deleted, inserted or reordered")
        if event.purge_run_id is not None:
            tombstones.setdefault(event.purge_run_id, []).append(tombstone_line(event))
        elif event_hash(event) != event.hash:
            return Verification(checked, expected_id - 1, prev_hash, event.id,
                                f"event #{event.id} was changed after it was recorded: its content no longer "
                                "matches its hash")
        prev_hash, expected_id, checked = event.hash, expected_id + 1, checked + 1
    last_id = expected_id - 1
    head = session.get(LedgerHead, 1)
    if head is not None and head.last_id == last_id and head.last_hash != prev_hash:
        return Verification(checked, last_id, prev_hash, last_id,
                            f"the ledger's head records a hash that is not event #{last_id}'s: the newest event "
                            "was rewritten, or the head was changed outside izin")
    if head is None or head.last_id != last_id or head.last_hash != prev_hash:
        head_id = head.last_id if head else 0
        return Verification(checked, last_id, prev_hash, min(last_id, head_id) + 1,
                            f"the ledger ends at event #{last_id} but its head records #{head_id}: "
                            "the newest events were deleted, or events were appended outside izin")
    problem = _check_purges(session, secret, tombstones) or _check_state(session) or _check_contacts(session)
    if problem:
        return Verification(checked, last_id, prev_hash, problem[0], problem[1])
    return Verification(checked, last_id, prev_hash)


def _check_state(session: Session) -> tuple[int, str] | None:
    """The current-state table the gate reads must agree with the ledger, row for row."""
    event = aliased(ConsentEvent)
    later = aliased(ConsentEvent)
    wrong = session.execute(
        select(ConsentState.recipient, ConsentState.channel, ConsentState.status, ConsentState.event_id)
        .outerjoin(event, event.id == ConsentState.event_id)
        .where(or_(event.id.is_(None), event.status != ConsentState.status, event.channel != ConsentState.channel,
                   event.recipient_type != ConsentState.recipient_type,
                   # the dates decide İYS ordering and when retention may purge: they are the event's
                   event.consent_date != ConsentState.consent_date, event.recorded_at != ConsentState.recorded_at,
                   and_(event.recipient.is_not(None), event.recipient != ConsentState.recipient),
                   exists().where(later.recipient == ConsentState.recipient, later.channel == ConsentState.channel,
                                  later.recipient_type == ConsentState.recipient_type,
                                  later.id > ConsentState.event_id)))
        .order_by(ConsentState.event_id).limit(1)).first()
    if wrong is not None:
        return wrong.event_id, (f"the current state of {wrong.recipient} on {wrong.channel} ({wrong.status}, event "
                                f"#{wrong.event_id}) is not what the ledger says: the table the send gate reads "
                                "was changed outside izin")
    missing = session.execute(
        select(ConsentEvent.id, ConsentEvent.recipient, ConsentEvent.channel)
        .where(ConsentEvent.recipient.is_not(None), ~exists().where(
            ConsentState.recipient == ConsentEvent.recipient, ConsentState.channel == ConsentEvent.channel,
            ConsentState.recipient_type == ConsentEvent.recipient_type))
        .order_by(ConsentEvent.id).limit(1)).first()
    if missing is not None:
        return missing.id, (f"{missing.recipient} on {missing.channel} has ledger events but no current state: "
                            "the table the send gate reads was changed outside izin")
    return None


def _check_contacts(session: Session) -> tuple[int, str] | None:
    """An event's link to a contact row (not hashed) must lead to the contact it was recorded for
    (hashed as `contact`): else `consent show` and exports would file the evidence under someone else."""
    wrong = session.execute(
        select(ConsentEvent.id, ConsentEvent.contact_ref, Contact.external_id)
        .join(Contact, Contact.id == ConsentEvent.contact_id)
        .where(or_(ConsentEvent.contact_ref.is_(None), ConsentEvent.contact_ref != Contact.external_id))
        .order_by(ConsentEvent.id).limit(1)).first()
    if wrong is None:
        return None
    return wrong.id, (f"event #{wrong.id} was recorded for contact {wrong.contact_ref} but is linked to contact "
                      f"{wrong.external_id}: its contact link was changed outside izin")


def tombstone_line(event: ConsentEvent) -> str:
    """What a purge run signs for one tombstone: its id, its hash, and a digest of what it keeps
    (channel, status, source, type, dates), so the evidence left after a purge cannot be edited."""
    kept = json.dumps({"channel": event.channel, "status": event.status, "source": event.source,
                       "recipient_type": event.recipient_type, "consent_date": iso_utc(event.consent_date),
                       "recorded_at": iso_utc(event.recorded_at), "iys_uploadable": event.iys_uploadable,
                       "prev_hash": event.prev_hash}, sort_keys=True, separators=(",", ":"))
    return f"{event.id}:{event.hash}:{hashlib.sha256(kept.encode()).hexdigest()}\n"


def _legacy_digest(lines: list[str]) -> str:
    """The digest purge runs recorded before they covered what tombstones keep (ids and hashes only)."""
    return hashlib.sha256("".join(":".join(line.split(":")[:2]) + "\n" for line in lines).encode()).hexdigest()


def _check_purges(session: Session, secret: str, tombstones: dict[int, list[str]]) -> tuple[int, str] | None:
    runs = {run.id: run for run in session.scalars(select(PurgeRun))}
    for run_id, lines in tombstones.items():
        run = runs.get(run_id)
        first = int(lines[0].split(":")[0])
        if run is None:
            return first, f"event #{first} is marked purged by run {run_id}, which does not exist"
        digest = hashlib.sha256("".join(lines).encode()).hexdigest()
        if digest != run.digest and _legacy_digest(lines) == run.digest:
            digest = run.digest  # an older run: its tombstones' ids and hashes are all it can vouch for
        if digest != run.digest:
            return first, (f"the events marked purged by run {run_id} are not the ones it purged "
                           f"(first: #{first}); an event was blanked outside izin")
        if run.key_id != key_id(secret):
            return first, (f"purge run {run_id} was signed with key {run.key_id}; set IZIN_SECRET_KEY to that "
                           "key to verify it")
        if not hmac.compare_digest(sign(secret, digest), run.signature):
            return first, f"purge run {run_id} has a signature that does not match: the purge record was forged"
    return None
