"""Push, pull, reconcile and status: the ledger kept in step with İYS.

Push. Every ledger event from an `HS_*` source gets a row in `iys_sync` the first time any İYS
command runs (events recorded before `[iys]` was configured included): `pending` when İYS can take
it, `local` when it cannot (a first-ever RET, a RET dated before the latest event). `push` uploads
pending events with İYS's asynchronous bulk call, at most one event per (address, channel, recipient
type) in flight so each address's events reach İYS in recording order, polls the results (İYS
answers `enqueue` first) and records `accepted` (transactionId, creationDate) or `rejected` (code).
Rows are marked `sent` before the upload and get their request id after it: a crash in between leaves
`sent` rows without a request id, which the next push settles with İYS's status query instead of
uploading twice (İYS would refuse the second copy as the same status twice).

Pull. Citizens' changes made in İYS (`source=IYS`) are appended to the ledger with their `IYS_*`
source; their transactionId goes into `iys_sync` (state `accepted`, origin `pull`), so a movement
already in the ledger is never appended again. A RET takes effect in the same transaction and
cancels queued deliveries to the address (LedgerWriter.record does both).

HTTP calls never happen inside an open database transaction: SQLite allows one writer, and the
token store writes too.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import exists, func, select, update
from sqlalchemy.orm import Session

from izin import clock
from izin.clock import ISTANBUL, iso_istanbul
from izin.consent.iys.client import (Change, Consent, IysClient, IysRejected, IysTransient, TokenState,
                                     iys_datetime)
from izin.consent.iys.holidays_tr import upload_deadline
from izin.consent.iys.models import IysCursor, IysSync, IysToken
from izin.consent.ledger import LedgerWriter
from izin.consent.models import IYS_TYPE, ConsentEvent, Contact
from izin.db import Database, upsert_insert
from izin.errors import ConsentRefused

LOCAL, PENDING, SENT, ACCEPTED, REJECTED = "local", "pending", "sent", "accepted", "rejected"
CHANNEL_OF_TYPE = {v: k for k, v in IYS_TYPE.items()}
#: İYS codes meaning "consentDate is older than 3 business days" (H174 per a public client; unconfirmed)
AGE_CODES = frozenset({"H174"})
#: codes inside a batch result that mean "try again", not "refused"
TRANSIENT_CODES = frozenset({"H124", "H103"})
#: an event whose upload deadline is nearer than this is reported loudly
DEADLINE_WARNING = timedelta(hours=24)
#: without a successful pull for this long, say so (İYS keeps 7 days of movements)
PULL_STALE = timedelta(hours=24)
PULL_WINDOW = timedelta(days=7)
#: uploads of one event before a transient in-batch failure counts as a refusal
MAX_ATTEMPTS = 5
#: asynchronous requests in flight at once
REQUESTS_PER_WAVE = 5
_ENROLL_CHUNK = 5_000
_CANCELLED = re.compile(r"^cancelled (\d+) queued deliveries")


# --- the shared token ---------------------------------------------------------------------------


class DbTokenStore:
    """The token pair and the token-request log in the database, shared by every process."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def load(self) -> TokenState:
        with self.db.session() as session:
            row = session.get(IysToken, 1)
            if row is None:
                return TokenState()
            return TokenState(row.access_token, row.refresh_token, row.expires_at, row.refresh_expires_at,
                              [clock.parse_instant(t) for t in row.requests or []], row.blocked_until)

    def save(self, state: TokenState) -> None:
        values = {"access_token": state.access_token, "refresh_token": state.refresh_token,
                  "expires_at": state.expires_at, "refresh_expires_at": state.refresh_expires_at,
                  "requests": [clock.iso_utc(t) for t in state.requests], "blocked_until": state.blocked_until}
        with self.db.session() as session:
            session.execute(upsert_insert(session)(IysToken).values(id=1, **values)
                            .on_conflict_do_update(index_elements=["id"], set_=values))


def make_client(settings: Any, db: Database, **kwargs: Any) -> IysClient:
    """The client for `[iys]`, sharing its token through the database."""
    return IysClient.from_settings(settings.iys, store=DbTokenStore(db), **kwargs)


# --- enrolment ----------------------------------------------------------------------------------


def enroll(session: Session, now: datetime) -> int:
    """Give every HS_* event without a sync state one: pending, or local when İYS cannot take it."""
    watermark = session.scalar(select(func.coalesce(func.max(IysSync.event_id), 0))
                               .where(IysSync.origin == "push")) or 0
    added = 0
    while True:
        rows = session.execute(
            select(ConsentEvent.id, ConsentEvent.iys_uploadable, ConsentEvent.recipient)
            .where(ConsentEvent.id > watermark, ConsentEvent.source.like("HS\\_%", escape="\\"),
                   ~exists().where(IysSync.event_id == ConsentEvent.id))
            .order_by(ConsentEvent.id).limit(_ENROLL_CHUNK)).all()
        if not rows:
            return added
        values = []
        for event_id, uploadable, recipient in rows:
            state = PENDING if uploadable and recipient is not None else LOCAL
            reason = None if state == PENDING else (
                "purged before upload" if recipient is None else
                "İYS cannot take it (a first-ever RET, or a RET dated before the latest event); kept local")
            values.append({"event_id": event_id, "state": state, "origin": "push", "attempts": 0,
                           "error_message": reason, "created_at": now, "updated_at": now})
        session.execute(upsert_insert(session)(IysSync).values(values)
                        .on_conflict_do_nothing(index_elements=["event_id"]))
        added += len(values)
        watermark = rows[-1][0]


# --- push ---------------------------------------------------------------------------------------


@dataclass
class DeadlineWarning:
    event_id: int
    recipient: str | None
    channel: str
    status: str
    consent_date: datetime
    deadline: datetime
    overdue: bool

    def as_dict(self) -> dict[str, Any]:
        return {"event_id": self.event_id, "recipient": self.recipient, "channel": self.channel,
                "status": self.status, "consent_date": iso_istanbul(self.consent_date),
                "deadline": iso_istanbul(self.deadline), "overdue": self.overdue}

    def describe(self) -> str:
        verb = "is past" if self.overdue else "nears"
        return (f"event #{self.event_id} ({self.status} {self.channel} {self.recipient}, consent "
                f"{iso_istanbul(self.consent_date)}) {verb} its İYS upload deadline {iso_istanbul(self.deadline)}")


@dataclass
class PushResult:
    enrolled: int = 0
    submitted: int = 0
    accepted: int = 0
    rejected: int = 0
    requests: int = 0
    polls: int = 0
    transient_errors: int = 0
    #: events still pending or sent when push stopped (0 when it finished)
    unanswered: int = 0
    complete: bool = True
    error: str | None = None
    rejections: list[dict[str, Any]] = field(default_factory=list)
    deadline_warnings: list[DeadlineWarning] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"enrolled": self.enrolled, "submitted": self.submitted, "accepted": self.accepted,
                "rejected": self.rejected, "requests": self.requests, "polls": self.polls,
                "transient_errors": self.transient_errors, "unanswered": self.unanswered,
                "complete": self.complete, "error": self.error, "rejections": self.rejections,
                "deadline_warnings": [w.as_dict() for w in self.deadline_warnings]}


def _consent(event: ConsentEvent) -> Consent:
    assert event.recipient is not None
    return Consent(recipient=event.recipient, recipient_type=event.recipient_type, type=IYS_TYPE[event.channel],
                   status=event.status, source=event.source, consent_date=event.consent_date)


def _key(event: ConsentEvent) -> tuple[str | None, str, str]:
    return event.recipient, event.channel, event.recipient_type


def _next_wave(session: Session, size: int) -> list[ConsentEvent]:
    """Pending events in id order, at most one per key and none whose key has an upload in flight."""
    busy = {tuple(k) for k in session.execute(
        select(ConsentEvent.recipient, ConsentEvent.channel, ConsentEvent.recipient_type)
        .join(IysSync, IysSync.event_id == ConsentEvent.id).where(IysSync.state == SENT))}
    wave: list[ConsentEvent] = []
    offset = 0
    while len(wave) < size:
        events = list(session.scalars(
            select(ConsentEvent).join(IysSync, IysSync.event_id == ConsentEvent.id)
            .where(IysSync.state == PENDING).order_by(ConsentEvent.id).offset(offset).limit(size * 2)))
        if not events:
            break
        offset += len(events)
        for event in events:
            key = _key(event)
            if key not in busy:
                wave.append(event)
            busy.add(key)  # later events of this key wait for this one's answer
            if len(wave) >= size:
                break
    return wave


def _answer(sync: IysSync, *, state: str, now: datetime, transaction_id: str | None = None,
            creation_date: datetime | None = None, code: str | None = None, message: str | None = None) -> None:
    sync.state, sync.updated_at = state, now
    if state in (ACCEPTED, REJECTED):
        sync.answered_at = now
    if state == PENDING:
        sync.request_id, sync.batch_index = None, None
    sync.transaction_id = transaction_id or sync.transaction_id
    sync.creation_date = creation_date or sync.creation_date
    sync.error_code, sync.error_message = code, message


def _rejection(event: ConsentEvent, sync: IysSync) -> dict[str, Any]:
    return {"event_id": event.id, "recipient": event.recipient, "channel": event.channel, "status": event.status,
            "source": event.source, "consent_date": iso_istanbul(event.consent_date), "code": sync.error_code,
            "message": sync.error_message, "too_old": sync.error_code in AGE_CODES}


def push(db: Database, client: IysClient, now: Callable[[], datetime] = clock.now, *, batch_size: int = 1_000,
         poll_interval: float = 2.0, max_wait: float = 900.0, retry_rounds: int = 4, retry_backoff: float = 5.0,
         sleep: Callable[[float], None] = time.sleep, extra_holidays: Iterable[date] = (),
         progress: Callable[[str], None] | None = None) -> PushResult:
    """Upload every pending event and wait for İYS's answer to each (see the module docstring)."""
    say = progress or (lambda _m: None)
    result = PushResult()
    with db.session() as session:
        result.enrolled = enroll(session, now())
    _settle_orphans(db, client, now, result)
    outstanding = _outstanding(db)
    failures = 0
    while True:
        if outstanding:
            if not _poll(db, client, now, outstanding, result, poll_interval, max_wait, sleep, say):
                result.complete = False
                result.error = f"İYS had not answered {len(outstanding)} requests after {max_wait:.0f} s"
                break
        with db.session() as session:
            wave = _next_wave(session, batch_size * REQUESTS_PER_WAVE)
            consents = [(e.id, _consent(e)) for e in wave]
        if not consents:
            break
        outstanding = []
        try:
            for start in range(0, len(consents), batch_size):
                chunk = consents[start:start + batch_size]
                request_id = _submit(db, client, now, chunk, result)
                if request_id:
                    outstanding.append(request_id)
                    say(f"sent {len(chunk)} events to İYS (request {request_id})")
            failures = 0
        except IysTransient as exc:
            result.transient_errors += 1
            failures += 1
            if failures > retry_rounds:
                result.complete, result.error = False, f"İYS kept failing: {exc}"
                break
            say(f"İYS is not answering ({exc}); trying again")
            sleep(retry_backoff * 2 ** (failures - 1))
            try:
                _settle_orphans(db, client, now, result)
            except IysTransient:
                pass  # settled on a later round, or by the next push
            outstanding = _outstanding(db)
    with db.session() as session:
        result.unanswered = session.scalar(select(func.count()).select_from(IysSync)
                                           .where(IysSync.state.in_((PENDING, SENT)))) or 0
        result.deadline_warnings = deadline_warnings(session, now(), extra_holidays)
    if result.unanswered and result.complete:
        result.complete = False
    return result


def _outstanding(db: Database) -> list[str]:
    with db.session() as session:
        return list(session.scalars(select(IysSync.request_id).where(
            IysSync.state == SENT, IysSync.request_id.is_not(None)).distinct().order_by(IysSync.request_id)))


def _submit(db: Database, client: IysClient, now: Callable[[], datetime],
            chunk: list[tuple[int, Consent]], result: PushResult) -> str | None:
    ids = [event_id for event_id, _ in chunk]
    with db.session() as session:  # marked first: a crash after the upload leaves rows to settle, not to resend
        session.execute(update(IysSync).where(IysSync.event_id.in_(ids)).values(
            state=SENT, request_id=None, batch_index=None, attempts=IysSync.attempts + 1, updated_at=now()))
    try:
        ticket = client.add_consents([consent for _, consent in chunk])
    except IysRejected as exc:  # the whole request refused (e.g. a malformed list): every element with it
        with db.session() as session:
            for sync in session.scalars(select(IysSync).where(IysSync.event_id.in_(ids))):
                _answer(sync, state=REJECTED, now=now(), code=exc.code or str(exc.status), message=str(exc))
                result.rejected += 1
                result.rejections.append(_rejection(session.get(ConsentEvent, sync.event_id), sync))
        return None
    except IysTransient as exc:
        if exc.status is not None:  # İYS answered (429, 5xx) without taking the request: upload again later
            with db.session() as session:
                session.execute(update(IysSync).where(IysSync.event_id.in_(ids)).values(state=PENDING,
                                                                                        updated_at=now()))
        # no answer at all (timeout): İYS may hold them; they stay `sent` without a request id until settled
        raise
    with db.session() as session:
        for index, event_id in enumerate(ids):
            session.execute(update(IysSync).where(IysSync.event_id == event_id).values(
                request_id=ticket.request_id, batch_index=index))
    result.submitted += len(ids)
    result.requests += 1
    return ticket.request_id


def _poll(db: Database, client: IysClient, now: Callable[[], datetime], outstanding: list[str],
          result: PushResult, poll_interval: float, max_wait: float, sleep: Callable[[float], None],
          say: Callable[[str], None]) -> bool:
    """Ask for each request's results until none is `enqueue`; False when max_wait ran out."""
    waited = 0.0
    failures = 0
    while outstanding:
        for request_id in list(outstanding):
            try:
                items = client.batch_result(request_id)
            except IysTransient as exc:
                result.transient_errors += 1
                failures += 1
                if failures > 10:
                    raise
                say(f"İYS did not answer the result query ({exc}); asking again")
                continue
            result.polls += 1
            if _apply_results(db, now(), request_id, items, result):
                outstanding.remove(request_id)
        if outstanding:
            if waited >= max_wait:
                return False
            sleep(poll_interval)
            waited += poll_interval
    return True


def _apply_results(db: Database, now: datetime, request_id: str, items: list[Any], result: PushResult) -> bool:
    """Record final answers; True when no element of the request is left in İYS's queue."""
    by_index = {item.index: item for item in items}
    with db.session() as session:
        rows = list(session.scalars(select(IysSync).where(IysSync.request_id == request_id, IysSync.state == SENT)))
        queued = any(item.status == "enqueue" for item in items)
        for sync in rows:
            item = by_index.get(sync.batch_index)
            if item is None:
                if not queued:  # left out of a finished answer: it was not processed, so upload it again
                    _answer(sync, state=PENDING, now=now, message="missing from İYS's result; sent again")
                continue
            if item.status == "enqueue":
                continue
            if item.status == "success":
                _answer(sync, state=ACCEPTED, now=now, transaction_id=item.transaction_id,
                        creation_date=item.creation_date)
                result.accepted += 1
                continue
            code = item.error.code if item.error else None
            message = item.error.message if item.error else f"İYS answered {item.status!r}"
            if code in TRANSIENT_CODES and sync.attempts < MAX_ATTEMPTS:
                _answer(sync, state=PENDING, now=now, code=code, message=message)
                continue
            _answer(sync, state=REJECTED, now=now, code=code, message=message)
            result.rejected += 1
            result.rejections.append(_rejection(session.get(ConsentEvent, sync.event_id), sync))
    return not queued


def _settle_orphans(db: Database, client: IysClient, now: Callable[[], datetime], result: PushResult) -> None:
    """`sent` rows without a request id (a crash right after an upload): ask İYS what it holds."""
    with db.session() as session:
        orphans = [(s.event_id, _consent(e)) for s, e in session.execute(
            select(IysSync, ConsentEvent).join(ConsentEvent, ConsentEvent.id == IysSync.event_id)
            .where(IysSync.state == SENT, IysSync.request_id.is_(None)).order_by(IysSync.event_id))]
    for event_id, consent in orphans:
        try:
            held = client.consent_status(consent.recipient, consent.recipient_type, consent.type)
        except IysRejected:
            held = None  # İYS holds nothing for the key
        same = (held is not None and held.status == consent.status and held.consent_date is not None
                and iys_datetime(held.consent_date) == iys_datetime(consent.consent_date))
        with db.session() as session:
            sync = session.get(IysSync, event_id)
            if same:
                _answer(sync, state=ACCEPTED, now=now(), transaction_id=held.transaction_id,
                        creation_date=held.creation_date)
                result.accepted += 1
            else:
                _answer(sync, state=PENDING, now=now())


def deadline_warnings(session: Session, now: datetime, extra_holidays: Iterable[date] = (),
                      within: timedelta = DEADLINE_WARNING) -> list[DeadlineWarning]:
    """Events İYS has not accepted yet whose 3-business-day upload deadline is near or past."""
    extra = tuple(extra_holidays)
    warnings = []
    # a deadline is at least 3 days after the consent date: older events are the only candidates
    horizon = now + within - timedelta(days=3)
    query = (select(ConsentEvent).join(IysSync, IysSync.event_id == ConsentEvent.id)
             .where(IysSync.state.in_((PENDING, SENT)), ConsentEvent.consent_date <= horizon,
                    ConsentEvent.source != "HS_2015").order_by(ConsentEvent.id))
    for event in session.scalars(query):
        deadline = upload_deadline(event.consent_date, extra)
        if deadline - now <= within:
            warnings.append(DeadlineWarning(event.id, event.recipient, event.channel, event.status,
                                            event.consent_date, deadline, overdue=now >= deadline))
    return warnings


# --- pull ---------------------------------------------------------------------------------------


@dataclass
class PullResult:
    source: str
    pages: int = 0
    received: int = 0
    appended: int = 0
    duplicates: int = 0
    withdrawals: int = 0
    cancelled_deliveries: int = 0
    skipped: list[dict[str, Any]] = field(default_factory=list)
    after: str | None = None
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "pages": self.pages, "received": self.received, "appended": self.appended,
                "duplicates": self.duplicates, "withdrawals": self.withdrawals,
                "cancelled_deliveries": self.cancelled_deliveries, "skipped": self.skipped, "after": self.after,
                "warnings": self.warnings}


def _contact_for(session: Session, recipient: str, channel: str) -> Contact | None:
    column = Contact.email if channel == "email" else Contact.phone
    return session.scalars(select(Contact).where(column == recipient).order_by(Contact.id).limit(1)).first()


def _proof(change: Change, origin: str) -> str:
    document = {"iys": {"origin": origin, "transactionId": change.transaction_id, "source": change.source,
                        "creationDate": iys_datetime(change.creation_date) if change.creation_date else None,
                        "consentDate": iys_datetime(change.consent_date) if change.consent_date else None}}
    return json.dumps(document, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def apply_change(session: Session, writer: LedgerWriter, change: Change, now: datetime,
                 origin: str = "pull") -> tuple[str, str | None, int]:
    """Append one İYS movement to the ledger: ('appended' | 'duplicate' | 'skipped', why, deliveries cancelled)."""
    if change.transaction_id and session.scalar(
            select(IysSync.event_id).where(IysSync.transaction_id == change.transaction_id)) is not None:
        return "duplicate", None, 0
    channel = CHANNEL_OF_TYPE.get(change.type)
    if channel is None:
        return "skipped", f"unknown type {change.type!r}", 0
    if not (change.source.startswith("IYS_") or change.source.startswith("HS_")):
        return "skipped", f"unknown source {change.source!r}", 0
    recipient = change.recipient.strip().lower() if channel == "email" else change.recipient.strip()
    consent_date = min(change.consent_date or change.creation_date or now, now)
    contact = _contact_for(session, recipient, channel)
    try:
        recorded = writer.record(contact, channel, change.status, change.source, consent_date, now,
                                 change.recipient_type or None, _proof(change, origin), allow_iys_source=True,
                                 recipient=recipient)
    except ConsentRefused as exc:
        return "skipped", exc.reason, 0
    session.flush()  # the event row first: iys_sync refers to it
    session.add(IysSync(event_id=recorded.event.id, state=ACCEPTED, origin=origin,
                        transaction_id=change.transaction_id, creation_date=change.creation_date, attempts=0,
                        created_at=now, updated_at=now, answered_at=now))
    # LedgerWriter.record cancelled the queued deliveries itself and said how many in a note
    cancelled = sum(int(m[1]) for m in (_CANCELLED.match(n) for n in recorded.notes) if m)
    return "appended", None, cancelled


def _cursor(session: Session, source: str) -> IysCursor:
    session.execute(upsert_insert(session)(IysCursor).values(source=source, pulled_total=0)
                    .on_conflict_do_nothing(index_elements=["source"]))
    cursor = session.get(IysCursor, source)
    assert cursor is not None
    return cursor


def pull(db: Database, client: IysClient, now: Callable[[], datetime] = clock.now, *, source: str = "IYS",
         limit: int = 999, max_pages: int = 10_000) -> PullResult:
    """Read every new movement of `source` page by page; each page and its cursor commit together."""
    result = PullResult(source)
    with db.session() as session:
        cursor = _cursor(session, source)
        after, last_success = cursor.after, cursor.last_success_at
        cursor.last_attempt_at = now()
    if last_success is not None and now() - last_success > PULL_WINDOW:
        result.warnings.append(f"the last successful {source} pull was {iso_istanbul(last_success)}, more than 7 "
                               "days ago: İYS no longer serves the movements in between; run `izin iys reconcile "
                               "--date D` for each of the last 7 days and check older ones in the İYS portal")
    try:
        while result.pages < max_pages:
            page = client.changes(source, after, limit)
            result.pages += 1
            with db.session() as session:
                writer = LedgerWriter(session)
                for change in page.changes:
                    result.received += 1
                    outcome, why, cancelled = apply_change(session, writer, change, now(), "pull")
                    if outcome == "appended":
                        result.appended += 1
                        if change.status == "RET":
                            result.withdrawals += 1
                        result.cancelled_deliveries += cancelled
                    elif outcome == "duplicate":
                        result.duplicates += 1
                    else:
                        result.skipped.append({"transaction_id": change.transaction_id, "recipient": change.recipient,
                                               "type": change.type, "status": change.status, "reason": why})
                cursor = _cursor(session, source)
                cursor.after = page.after
                cursor.pulled_total += len(page.changes)
            moved = page.after != after
            after = page.after
            if not page.changes or len(page.changes) < limit or not moved:
                break
    except Exception as exc:
        with db.session() as session:
            _cursor(session, source).last_error = str(exc)
        raise
    with db.session() as session:
        cursor = _cursor(session, source)
        cursor.last_success_at, cursor.last_error = now(), None
    result.after = after
    return result


def pull_warning(session: Session, now: datetime, source: str = "IYS") -> str | None:
    """A warning when no pull of `source` has succeeded for 24 hours (None when all is well)."""
    cursor = session.get(IysCursor, source)
    if cursor is None or cursor.last_success_at is None:
        return (f"no İYS pull ({source}) has ever succeeded: citizens' opt-outs in İYS are not reaching izin; "
                "run `izin iys pull` at least hourly")
    if now - cursor.last_success_at > PULL_STALE:
        return (f"no İYS pull ({source}) has succeeded since {iso_istanbul(cursor.last_success_at)}: citizens' "
                "opt-outs in İYS are not reaching izin; run `izin iys pull` at least hourly")
    return None


# --- reconcile ----------------------------------------------------------------------------------


@dataclass
class ReconcileResult:
    date: str
    rows: int = 0
    matched: int = 0
    linked: int = 0
    appended: int = 0
    skipped: list[dict[str, Any]] = field(default_factory=list)
    missing_in_iys: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"date": self.date, "rows": self.rows, "matched": self.matched, "linked": self.linked,
                "appended": self.appended, "skipped": self.skipped, "missing_in_iys": self.missing_in_iys}


def _link(session: Session, change: Change, now: datetime) -> bool:
    """An HS movement of ours whose answer we never got: attach its transactionId to our event."""
    channel = CHANNEL_OF_TYPE.get(change.type)
    if channel is None or change.consent_date is None:
        return False
    recipient = change.recipient.strip().lower() if channel == "email" else change.recipient.strip()
    wanted = iys_datetime(change.consent_date)
    for sync, event in session.execute(
            select(IysSync, ConsentEvent).join(ConsentEvent, ConsentEvent.id == IysSync.event_id)
            .where(IysSync.state.in_((PENDING, SENT, REJECTED)), IysSync.transaction_id.is_(None),
                   ConsentEvent.recipient == recipient, ConsentEvent.channel == channel,
                   ConsentEvent.recipient_type == change.recipient_type, ConsentEvent.status == change.status,
                   ConsentEvent.source == change.source).order_by(ConsentEvent.id)):
        if iys_datetime(event.consent_date) == wanted:
            _answer(sync, state=ACCEPTED, now=now, transaction_id=change.transaction_id,
                    creation_date=change.creation_date)
            return True
    return False


def reconcile(db: Database, client: IysClient, day: date, now: Callable[[], datetime] = clock.now) -> ReconcileResult:
    """Compare one day's İYS movement file with the ledger; append what is missing here, link our
    movements whose answer was lost, and list what İYS lacks."""
    rows = client.change_file(day)
    result = ReconcileResult(day.isoformat(), rows=len(rows))
    seen = {r.transaction_id for r in rows if r.transaction_id}
    with db.session() as session:
        writer = LedgerWriter(session)
        for change in rows:
            if change.transaction_id and session.scalar(
                    select(IysSync.event_id).where(IysSync.transaction_id == change.transaction_id)) is not None:
                result.matched += 1
                continue
            if change.source.startswith("HS_") and _link(session, change, now()):
                result.linked += 1
                continue
            outcome, why, _ = apply_change(session, writer, change, now(), "reconcile")
            if outcome == "appended":
                result.appended += 1
            elif outcome == "duplicate":
                result.matched += 1
            else:
                result.skipped.append({"transaction_id": change.transaction_id, "recipient": change.recipient,
                                       "type": change.type, "status": change.status, "reason": why})
        start = datetime.combine(day, datetime.min.time(), tzinfo=ISTANBUL)
        for sync, event in session.execute(
                select(IysSync, ConsentEvent).join(ConsentEvent, ConsentEvent.id == IysSync.event_id)
                .where(IysSync.state == ACCEPTED, IysSync.creation_date >= start,
                       IysSync.creation_date < start + timedelta(days=1)).order_by(IysSync.event_id)):
            if sync.transaction_id not in seen:
                result.missing_in_iys.append({"event_id": event.id, "transaction_id": sync.transaction_id,
                                              "recipient": event.recipient, "channel": event.channel,
                                              "status": event.status})
    return result


# --- status -------------------------------------------------------------------------------------


def status(db: Database, now: datetime, extra_holidays: Iterable[date] = ()) -> dict[str, Any]:
    """Counts by sync state, the oldest pending event, rejections, last pulls and warnings."""
    with db.session() as session:
        enroll(session, now)
        counts = {s: 0 for s in (LOCAL, PENDING, SENT, ACCEPTED, REJECTED)}
        for state, n in session.execute(select(IysSync.state, func.count()).group_by(IysSync.state)):
            counts[state] = n
        oldest = session.execute(
            select(ConsentEvent).join(IysSync, IysSync.event_id == ConsentEvent.id)
            .where(IysSync.state.in_((PENDING, SENT))).order_by(ConsentEvent.id).limit(1)).scalar()
        rejections = [_rejection(e, s) for s, e in session.execute(
            select(IysSync, ConsentEvent).join(ConsentEvent, ConsentEvent.id == IysSync.event_id)
            .where(IysSync.state == REJECTED).order_by(IysSync.event_id))]
        pulls = {c.source: {"last_success_at": iso_istanbul(c.last_success_at) if c.last_success_at else None,
                            "last_attempt_at": iso_istanbul(c.last_attempt_at) if c.last_attempt_at else None,
                            "last_error": c.last_error, "after": c.after, "pulled_total": c.pulled_total}
                 for c in session.scalars(select(IysCursor).order_by(IysCursor.source))}
        warnings_ = deadline_warnings(session, now, extra_holidays)
        stale = pull_warning(session, now)
    document: dict[str, Any] = {
        "counts": counts,
        "oldest_pending": None if oldest is None else {
            "event_id": oldest.id, "recipient": oldest.recipient, "channel": oldest.channel, "status": oldest.status,
            "consent_date": iso_istanbul(oldest.consent_date), "recorded_at": iso_istanbul(oldest.recorded_at),
            "deadline": iso_istanbul(upload_deadline(oldest.consent_date, tuple(extra_holidays)))},
        "last_pull": pulls.get("IYS", {}).get("last_success_at"),
        "pulls": pulls,
        "rejected": rejections,
        "rejected_too_old": sum(1 for r in rejections if r["too_old"]),
        "deadline_warnings": [w.as_dict() for w in warnings_],
        "warnings": [stale] if stale else [],
    }
    return document


def iys_states(session: Session, event_ids: Iterable[int]) -> dict[int, dict[str, Any]]:
    """İYS's view of some events, for `consent show` and the audit export: state, transactionId,
    creationDate, error code. Events without a row are absent (not an HS_* event, or not yet enrolled)."""
    ids = list(event_ids)
    found: dict[int, dict[str, Any]] = {}
    for start in range(0, len(ids), 1_000):
        for sync in session.scalars(select(IysSync).where(IysSync.event_id.in_(ids[start:start + 1_000]))):
            found[sync.event_id] = {
                "iys_status": sync.state, "iys_transaction_id": sync.transaction_id,
                "iys_creation_date": iso_istanbul(sync.creation_date) if sync.creation_date else None,
                "iys_error": sync.error_code}
    return found


# --- jobs (for a dramatiq actor or the scheduler) -------------------------------------------------


def push_job(settings: Any, db: Database, now: Callable[[], datetime] = clock.now, **kwargs: Any) -> PushResult:
    """One `izin iys push` run with the settings' client; for a worker actor."""
    with make_client(settings, db) as client:
        return push(db, client, now, **kwargs)


def pull_job(settings: Any, db: Database, now: Callable[[], datetime] = clock.now,
             sources: tuple[str, ...] = ("IYS",)) -> list[PullResult]:
    """One `izin iys pull` run per source; schedule it at least hourly (İYS serves only 7 days)."""
    with make_client(settings, db) as client:
        return [pull(db, client, now, source=source) for source in sources]
