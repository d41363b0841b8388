"""The append-only, hash-chained consent ledger, with İYS's upload rules enforced locally.

Every event gets the next id and the SHA-256 of its canonical encoding, which includes the hash of
the event before it: editing, deleting or reordering any event breaks the chain at that point.
Writers lock the single `ledger_head` row (SELECT ... FOR UPDATE on PostgreSQL; on SQLite every
transaction starts with BEGIN IMMEDIATE), so concurrent grants and imports append in one line.
The current-state table is updated in the same transaction; the events remain the evidence.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from izin.clock import ISTANBUL, iso_istanbul, iso_utc
from izin.consent.models import (ADDRESS_KIND, CHANNELS, RECIPIENT_TYPES, STATUSES,
                                 ConsentEvent, ConsentState, Contact, LedgerHead)
from izin.db import insert_rows, one_of
from izin.errors import ConsentRefused

#: İYS consent sources a service provider may upload (HS_*); IYS_* come only from `iys pull`
HS_SOURCES = ("HS_FIZIKSEL_ORTAM", "HS_ISLAK_IMZA", "HS_WEB", "HS_CAGRI_MERKEZI", "HS_SOSYAL_MEDYA",
              "HS_EPOSTA", "HS_MESAJ", "HS_MOBIL", "HS_EORTAM", "HS_ETKINLIK", "HS_ATM", "HS_2015",
              "HS_KARAR")
#: law 6563 is in force from this instant: İYS refuses earlier consent dates (H155)
EARLIEST_CONSENT = datetime(2015, 5, 1, tzinfo=ISTANBUL)


def canonical(event: ConsentEvent | Appended) -> bytes:
    """The exact bytes an event's hash covers: sorted-key compact JSON, UTF-8."""
    document = {
        "id": event.id,
        "contact": event.contact_ref,
        "recipient": event.recipient,
        "channel": event.channel,
        "status": event.status,
        "source": event.source,
        "recipient_type": event.recipient_type,
        "consent_date": iso_utc(event.consent_date),
        "recorded_at": iso_utc(event.recorded_at),
        "proof": event.proof,
        "iys_uploadable": event.iys_uploadable,
        "prev_hash": event.prev_hash,
    }
    # byte for byte what json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False) writes
    # (tests/consent/test_ledger_canonical.py holds them equal), several times faster
    return orjson.dumps(document, option=orjson.OPT_SORT_KEYS)


def event_hash(event: ConsentEvent | Appended) -> str:
    return hashlib.sha256(canonical(event)).hexdigest()


def contact_address(contact: Contact, channel: str) -> str | None:
    """The address a channel reaches this contact on now, or None."""
    return contact.email if ADDRESS_KIND[channel] == "email" else contact.phone


def contact_address_column(channel: str) -> Any:
    """The Contact column holding the address a channel reaches (for joins on addresses)."""
    return Contact.email if ADDRESS_KIND[channel] == "email" else Contact.phone


#: consent_state's columns, in the order _State takes them
_STATE_COLUMNS = ("recipient", "channel", "recipient_type", "status", "event_id", "consent_date", "recorded_at",
                  "ever_onay")


def _event_values(head: LedgerHead | _Position, contact: Contact | None, recipient: str, channel: str, status: str,
                  source: str, recipient_type: str, consent_date: datetime, now: datetime, proof: str | None,
                  uploadable: bool) -> dict[str, Any]:
    """The columns of the next event after `head`, all but its hash."""
    return {"id": head.last_id + 1, "contact_id": contact.id if contact else None,
            "contact_ref": contact.external_id if contact else None, "recipient": recipient, "channel": channel,
            "status": status, "source": source, "recipient_type": recipient_type, "consent_date": consent_date,
            "recorded_at": now, "proof": proof or None, "iys_uploadable": uploadable, "prev_hash": head.last_hash}


def _advance(state: ConsentState | _State, event: ConsentEvent | Appended) -> None:
    """The current state of an address once `event` is its latest."""
    state.status, state.event_id = event.status, event.id
    state.consent_date, state.recorded_at = event.consent_date, event.recorded_at
    state.ever_onay = bool(state.ever_onay) or event.status == "ONAY"


@dataclass
class _Position:
    """The end of the chain: the last event's id and hash (what LedgerHead holds)."""

    last_id: int
    last_hash: str


@dataclass
class _State:
    """A consent_state row as plain values, for the batch path."""

    recipient: str
    channel: str
    recipient_type: str
    status: str | None = None
    event_id: int | None = None
    consent_date: datetime | None = None
    recorded_at: datetime | None = None
    ever_onay: bool = False


@dataclass(frozen=True)
class Request:
    """One event to append with `LedgerWriter.record_many`: the arguments `record` takes."""

    contact: Contact | None
    channel: str
    status: str
    source: str
    consent_date: datetime
    recipient_type: str | None = None
    proof: str | None = None
    recipient: str | None = None
    allow_iys_source: bool = False


@dataclass
class Appended:
    """An event `record_many` appended: its columns as plain values (canonical() reads them as it
    reads a ConsentEvent), and what the user should know about it."""

    id: int
    contact_id: int | None
    contact_ref: str | None
    recipient: str
    channel: str
    status: str
    source: str
    recipient_type: str
    consent_date: datetime
    recorded_at: datetime
    proof: str | None
    iys_uploadable: bool
    prev_hash: str
    hash: str = ""
    notes: list[str] = field(default_factory=list)


@dataclass
class Recorded:
    """What happened to one request: the new event, or why nothing new was needed."""

    event: ConsentEvent
    #: things the user should know although the event was recorded
    notes: list[str] = field(default_factory=list)


class LedgerWriter:
    """Appends events within one transaction, holding the head lock until it commits."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._head: LedgerHead | None = None
        self._states: dict[tuple[str, str, str], ConsentState | _State | None] = {}
        #: addresses whose every state is in _states (record_many read them): no need to ask again
        self._loaded: set[str] = set()

    def lock(self) -> LedgerHead:
        """Hold the ledger's head for the rest of the transaction (every append takes it too)."""
        if self._head is None:
            self._head = self.session.execute(
                select(LedgerHead).where(LedgerHead.id == 1).with_for_update()
            ).scalar_one()
        return self._head

    def state(self, recipient: str, channel: str, recipient_type: str) -> ConsentState | _State | None:
        key = (recipient, channel, recipient_type)
        if key not in self._states:
            self._states[key] = None if recipient in self._loaded else self.session.get(ConsentState, key)
        return self._states[key]

    def check(self, contact: Contact | None, channel: str, status: str, source: str, consent_date: datetime,
              now: datetime, recipient_type: str | None = None, *, allow_iys_source: bool = False,
              recipient: str | None = None) -> tuple[str, str, list[str], bool]:
        """Apply İYS's rules without writing; return (recipient, recipient_type, notes, uploadable).

        `recipient` names the address itself (an unsubscribe link names the address the message
        went to, which may no longer be the contact's); without it the contact's current address
        for the channel is used.
        """
        if channel not in CHANNELS:
            raise ConsentRefused("bad_channel", f"unknown channel {channel!r}; use one of {', '.join(CHANNELS)}")
        if status not in STATUSES:
            raise ConsentRefused("bad_status", f"unknown status {status!r}; use ONAY or RET")
        if source not in HS_SOURCES and not (allow_iys_source and source.startswith("IYS_")):
            hint = " (IYS_* sources are recorded by `izin iys pull`)" if source.startswith("IYS_") else ""
            raise ConsentRefused("bad_source", f"unknown source {source!r}{hint}; use an İYS code such as "
                                 "HS_WEB, HS_MESAJ, HS_FIZIKSEL_ORTAM, HS_ISLAK_IMZA, HS_CAGRI_MERKEZI")
        recipient_type = recipient_type or (contact.recipient_type if contact else "BIREYSEL")
        if recipient_type not in RECIPIENT_TYPES:
            raise ConsentRefused("bad_recipient_type", f"unknown recipient type {recipient_type!r}; use BIREYSEL or TACIR")
        if recipient is None:
            assert contact is not None, "a consent names a contact or an address"
            recipient = contact_address(contact, channel)
            if recipient is None:
                kind = ADDRESS_KIND[channel]
                raise ConsentRefused("no_address", f"contact {contact.external_id} has no {kind}; "
                                     f"import one before recording {channel} consent")
        if channel == "sms" and status == "ONAY" and contact is not None and recipient == contact.phone \
                and not contact.phone_mobile:
            raise ConsentRefused("not_mobile", f"{recipient} cannot be a mobile number, so it cannot get SMS; "
                                 "record call consent for it instead")
        if consent_date > now:
            raise ConsentRefused("future_date", f"consent date {iso_istanbul(consent_date)} is in the future; "
                                 "give the moment the person actually consented")
        if consent_date < EARLIEST_CONSENT:
            raise ConsentRefused("before_2015", f"consent date {iso_istanbul(consent_date)} is before "
                                 "2015-05-01 (law 6563); use source HS_2015 for consents given before then")
        if source == "HS_2015" and consent_date != EARLIEST_CONSENT:
            raise ConsentRefused("bad_source", "source HS_2015 requires consent date 2015-05-01T00:00:00+03:00")
        state = self.state(recipient, channel, recipient_type)
        if state is not None and state.status == status:
            raise ConsentRefused("duplicate_status", f"{recipient} is already {status} on {channel} since "
                                 f"{iso_istanbul(state.consent_date)} (event #{state.event_id}); nothing recorded")
        if source == "HS_KARAR" and (status != "RET" or state is None):
            raise ConsentRefused("bad_source", "source HS_KARAR records only a RET decided by the provider, "
                                 "and never as the first record of an address")
        notes: list[str] = []
        uploadable = True
        if state is not None and consent_date < state.consent_date:
            if status == "ONAY":
                raise ConsentRefused("out_of_order", f"consent date {iso_istanbul(consent_date)} is before the "
                                     f"latest recorded event #{state.event_id} ({iso_istanbul(state.consent_date)}); "
                                     "an older ONAY cannot override a newer decision")
            # an opt-out always takes effect here, but İYS only takes dates after the one it holds
            uploadable = False
            notes.append("recorded as a suppression; its date is older than the latest event, so İYS will not take it")
        if status == "RET" and (state is None or not state.ever_onay):
            uploadable = False
            notes.append("kept as a local suppression; İYS refuses a first-ever RET, so it will not be uploaded")
        return recipient, recipient_type, notes, uploadable

    def record(self, contact: Contact | None, channel: str, status: str, source: str, consent_date: datetime,
               now: datetime, recipient_type: str | None = None, proof: str | None = None, *,
               allow_iys_source: bool = False, recipient: str | None = None) -> Recorded:
        """Check the rules, then append one event and update the current state."""
        # lock first: the rules read the current state, which a writer that held the lock while we
        # read could change (two imports of one file would both find no record and both append)
        head = self.lock()
        recipient, recipient_type, notes, uploadable = self.check(
            contact, channel, status, source, consent_date, now, recipient_type,
            allow_iys_source=allow_iys_source, recipient=recipient)
        event = ConsentEvent(**_event_values(head, contact, recipient, channel, status, source, recipient_type,
                                             consent_date, now, proof, uploadable))
        event.hash = event_hash(event)
        self.session.add(event)
        head.last_id, head.last_hash = event.id, event.hash
        state = self.state(recipient, channel, recipient_type)
        if state is None:
            state = ConsentState(recipient=recipient, channel=channel, recipient_type=recipient_type,
                                 ever_onay=False)
            self.session.add(state)
            self._states[(recipient, channel, recipient_type)] = state
        _advance(state, event)
        if status == "RET":
            cancelled = cancel_queued(self.session, recipient, channel, now)
            if cancelled:
                notes.append(f"cancelled {cancelled} queued deliveries to {recipient} on {channel}")
        return Recorded(event=event, notes=notes)

    def record_many(self, requests: Sequence[Request], now: datetime) -> list[Appended | ConsentRefused]:
        """Append a batch in order, each request under exactly the rules of `record`; return, per
        request, the event appended or why it was refused.

        The head is locked first, the current states of every address in the batch are read in one
        query, and the events, the new and changed states, and the cancelling of queued deliveries
        (once per channel for every address that got a RET) are written with a few set statements.
        The events' ids, links and hashes are those `record` one by one would have given them.
        """
        session = self.session
        session.flush()  # what record() added earlier in this transaction is visible to the reads below
        head = self.lock()
        recipients = {address for r in requests if (address := r.recipient or (
            contact_address(r.contact, r.channel) if r.contact is not None and r.channel in CHANNELS else None))}
        known: dict[tuple[str, str, str], _State] = {}
        state_table = ConsentState.__table__
        if recipients:
            for row in session.execute(select(*(state_table.c[c] for c in _STATE_COLUMNS))
                                       .where(one_of(session, state_table.c.recipient, recipients))):
                known[(row.recipient, row.channel, row.recipient_type)] = _State(*row)
        self._states, self._loaded = dict(known), recipients  # what check() reads; both reset below
        created: dict[tuple[str, str, str], _State] = {}
        changed: dict[tuple[str, str, str], _State] = {}
        withdrawn: dict[str, set[str]] = {}  # channel -> addresses that got a RET
        rows: list[dict[str, Any]] = []  # the events' columns, to insert
        results: list[Appended | ConsentRefused] = []
        # the chain's end as plain values while the batch grows it; the locked head row takes it after
        position = _Position(head.last_id, head.last_hash)
        try:
            for r in requests:
                try:
                    recipient, recipient_type, notes, uploadable = self.check(
                        r.contact, r.channel, r.status, r.source, r.consent_date, now, r.recipient_type,
                        allow_iys_source=r.allow_iys_source, recipient=r.recipient)
                except ConsentRefused as refused:
                    results.append(refused)
                    continue
                values = _event_values(position, r.contact, recipient, r.channel, r.status, r.source,
                                       recipient_type, r.consent_date, now, r.proof, uploadable)
                event = Appended(**values, notes=notes)
                event.hash = values["hash"] = event_hash(event)
                position.last_id, position.last_hash = event.id, event.hash
                rows.append(values)
                results.append(event)
                key = (recipient, r.channel, recipient_type)
                state = self._states.get(key)
                if state is None:
                    state = self._states[key] = created[key] = _State(recipient, r.channel, recipient_type)
                elif key not in created:
                    changed[key] = state
                _advance(state, event)
                if r.status == "RET":
                    withdrawn.setdefault(r.channel, set()).add(recipient)
        finally:
            self._states, self._loaded = {}, set()
            for obj in list(session.identity_map.values()):
                if isinstance(obj, ConsentState):  # the rows below change under any loaded copy
                    session.expire(obj)
        head.last_id, head.last_hash = position.last_id, position.last_hash
        insert_rows(session, ConsentEvent.__table__, rows)
        insert_rows(session, state_table, [vars(s) for s in created.values()])
        if changed:
            key_columns = ("recipient", "channel", "recipient_type")
            session.execute(
                update(state_table)
                .where(*(state_table.c[c] == bindparam(f"k_{c}") for c in key_columns))
                .values({c: bindparam(f"v_{c}") for c in _STATE_COLUMNS if c not in key_columns}),
                [{**{f"k_{c}": getattr(s, c) for c in key_columns},
                  **{f"v_{c}": getattr(s, c) for c in _STATE_COLUMNS if c not in key_columns}}
                 for s in changed.values()])
        for channel, addresses in sorted(withdrawn.items()):
            cancel_queued(session, sorted(addresses), channel, now)
        return results


def withdraw_address(writer: LedgerWriter, recipient: str, channel: str, source: str, now: datetime,
                     proof: str | None, contact: Contact | None = None) -> list[Recorded]:
    """An opt-out for an address by any route (link, SMS reply, İYS): a RET under every recipient
    type that is not refused already, or one first-ever RET when the address has no record.
    Returns what was recorded; an address already refused records nothing."""
    # take the ledger's lock before reading the state: two identical opt-outs arriving together
    # must see each other, not both find ONAY and both record a RET
    writer.lock()
    states = [s for s in writer.session.scalars(select(ConsentState).where(
        ConsentState.recipient == recipient, ConsentState.channel == channel))]
    types = [s.recipient_type for s in states if s.status != "RET"]
    if not states:
        types = [contact.recipient_type if contact else "BIREYSEL"]
    return [writer.record(contact, channel, "RET", source, now, now, recipient_type=t, proof=proof,
                          recipient=recipient) for t in types]


def cancel_queued(session: Session, recipient: str | Sequence[str], channel: str, now: datetime) -> int:
    """Invariant 6: an opt-out suppresses queued commercial deliveries in the same transaction.

    `recipient` is one address or several (a batch of opt-outs on one channel, in one statement).
    """
    # deliveries belong to campaigns/, but an opt-out that could forget them would break the law
    from izin.campaigns.models import Delivery

    addressed = (Delivery.recipient == recipient if isinstance(recipient, str)
                 else one_of(session, Delivery.recipient, recipient))
    result = session.execute(
        update(Delivery)
        .where(addressed, Delivery.channel == channel, Delivery.commercial.is_(True),
               Delivery.status.in_(("scheduled", "deferred")))
        .values(status="suppressed", reason="consent_withdrawn", updated_at=now, next_attempt_at=None))
    return result.rowcount or 0
