"""The send gate: may a commercial message go to this contact on this channel at this instant?

Invariant 1: only when the latest consent event for (address, channel, recipient type) is ONAY.
RET or no record: never. An ONAY on one channel never authorises another. A TACIR recipient with
no record at all may be messaged (law 6563 art. 6(2)), never after a RET.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, bindparam, select
from sqlalchemy.orm import Session

from izin.consent.ledger import contact_address, contact_address_column
from izin.consent.models import ADDRESS_KIND, ConsentEvent, ConsentState, Contact
from izin.db import one_of

#: why the gate said no; the plan and delivery records use the same words
NO_CONSENT = "no_consent"
NO_ADDRESS = "no_address"
#: strict İYS mode ([iys] require_accepted): the ONAY exists but İYS has not accepted it yet
IYS_PENDING = "iys_pending"
#: what a yes rests on
ON_ONAY = "onay"
ON_TACIR_EXEMPTION = "tacir_exemption"


class Decision(NamedTuple):
    """The gate's answer, with the evidence it rests on (a tuple: planning makes millions)."""

    allowed: bool
    channel: str
    recipient: str | None
    #: NO_CONSENT, NO_ADDRESS or IYS_PENDING when not allowed
    reason: str | None = None
    #: ON_ONAY or ON_TACIR_EXEMPTION when allowed
    basis: str | None = None
    #: the consent event that allows (or, when it is a RET, forbids) the message
    event_id: int | None = None
    status: str | None = None


Latest = dict[str, tuple[str, int]]


def _as_of(session: Session, recipient: str, channel: str, recipient_type: str,
           at: datetime) -> tuple[str, int] | None:
    """The latest event of one key recorded at or before `at` (a historical question)."""
    row = session.execute(
        select(ConsentEvent.status, ConsentEvent.id)
        .where(ConsentEvent.recipient == recipient, ConsentEvent.channel == channel,
               ConsentEvent.recipient_type == recipient_type, ConsentEvent.recorded_at <= at)
        .order_by(ConsentEvent.id.desc()).limit(1)
    ).first()
    return (row.status, row.id) if row else None


def _latest(session: Session, states: list[Any], at: datetime, as_of: bool) -> Latest:
    """(status, event id) per recipient type, from the current state or, with as_of, the ledger at `at`."""
    latest: Latest = {}
    for state in states:
        if as_of and state.recorded_at > at:
            found = _as_of(session, state.recipient, state.channel, state.recipient_type, at)
            if found is not None:
                latest[state.recipient_type] = found
        else:
            latest[state.recipient_type] = (state.status, state.event_id)
    return latest


def _decide(contact: Any, channel: str, recipient: str, latest: Latest,
            accepted: set[int] | None = None) -> Decision:
    own = latest.get(contact.recipient_type)
    # a refusal binds the address whichever recipient type it was recorded under: a contact
    # re-typed from BIREYSEL to TACIR must not slip past its RET through the TACIR exemption
    if own is not None and own[0] == "RET":
        refusal: tuple[str, int] | None = own
    elif len(latest) > (own is not None):  # states under other recipient types
        refusal = next((v for v in latest.values() if v[0] == "RET"), None)
    else:
        refusal = None
    if refusal is not None:
        return Decision(False, channel, recipient, reason=NO_CONSENT, event_id=refusal[1], status="RET")
    if own is not None:
        if accepted is not None and own[1] not in accepted:
            return Decision(False, channel, recipient, reason=IYS_PENDING, event_id=own[1], status="ONAY")
        return Decision(True, channel, recipient, basis=ON_ONAY, event_id=own[1], status="ONAY")
    if contact.recipient_type == "TACIR" and not latest:
        return Decision(True, channel, recipient, basis=ON_TACIR_EXEMPTION)
    return Decision(False, channel, recipient, reason=NO_CONSENT)


def usable_address(contact: Any, channel: str) -> str | None:
    """The address a channel can reach now: SMS needs a number that can be mobile."""
    recipient = contact_address(contact, channel)
    if channel == "sms" and not contact.phone_mobile:
        return None
    return recipient


def _accepted(session: Session, latest: list[Latest], at: datetime, as_of: bool) -> set[int]:
    """The ONAY events among `latest` that İYS has accepted (by `at` when as_of)."""
    from izin.consent.iys.models import accepted_events

    onay = {v[1] for entry in latest for v in entry.values() if v[0] == "ONAY"}
    return accepted_events(session, onay, at if as_of else None) if onay else set()


#: the current state of one address on one channel; built once, since workers ask it for every message
_STATES_OF_ADDRESS = select(ConsentState.recipient, ConsentState.channel, ConsentState.recipient_type,
                            ConsentState.status, ConsentState.event_id, ConsentState.recorded_at).where(
    ConsentState.recipient == bindparam("recipient"), ConsentState.channel == bindparam("channel"))


def may_send(session: Session, contact: Contact, channel: str, at: datetime, *, as_of: bool = False,
             require_iys_accepted: bool = False) -> Decision:
    """Answer for one contact, channel and instant, with the consent event it rests on.

    By default the answer rests on everything recorded so far, even after `at`: an opt-out is never
    ignored because it is younger than the instant asked about. `as_of=True` asks the historical
    question instead: what did the ledger say at `at`? `require_iys_accepted` (strict İYS mode)
    allows an ONAY only once İYS has accepted it.
    """
    recipient = usable_address(contact, channel)
    if recipient is None:
        return Decision(False, channel, contact_address(contact, channel), reason=NO_ADDRESS)
    states = session.execute(_STATES_OF_ADDRESS, {"recipient": recipient, "channel": channel}).all()
    latest = _latest(session, states, at, as_of)
    accepted = _accepted(session, [latest], at, as_of) if require_iys_accepted else None
    return _decide(contact, channel, recipient, latest, accepted)


#: addresses looked up per query when deciding for many contacts
_CHUNK = 1_000


def may_send_many(session: Session, contacts: list[Any], channel: str, at: datetime, *,
                  as_of: bool = False, require_iys_accepted: bool = False,
                  contact_where: list[ColumnElement[bool]] | None = None) -> dict[int, Decision]:
    """The same answers as may_send for many contacts (Contact objects or rows with the same
    columns), reading the current state in chunked queries.

    `contact_where` (conditions over Contact that select at least these contacts, such as an id
    range) lets SQLite read the states by joining contacts instead of listing every address.
    """
    decisions: dict[int, Decision] = {}
    wanted: dict[str, list[Any]] = {}
    # usable_address inlined: planning asks this for every contact of the base
    kind, needs_mobile = ADDRESS_KIND[channel], channel == "sms"
    for contact in contacts:
        recipient = getattr(contact, kind)
        if recipient is None or (needs_mobile and not contact.phone_mobile):
            decisions[contact.id] = Decision(False, channel, recipient, reason=NO_ADDRESS)
        else:
            wanted.setdefault(recipient, []).append(contact)
    # recorded_at (a timestamp to parse per row) only for the historical question that reads it
    columns = (ConsentState.recipient, ConsentState.channel, ConsentState.recipient_type, ConsentState.status,
               ConsentState.event_id) + ((ConsentState.recorded_at,) if as_of else ())
    postgresql = session.get_bind().dialect.name == "postgresql"
    if contact_where is not None and not postgresql:
        # an address two contacts share comes twice; _latest keys by recipient type, so that is harmless
        queries = [select(*columns).join(Contact, contact_address_column(channel) == ConsentState.recipient)
                   .where(ConsentState.channel == channel, *contact_where)]
    else:
        # PostgreSQL would hash-join the whole state table for a range of contacts; one array
        # parameter of addresses reads the primary key instead (elsewhere: IN lists of _CHUNK)
        recipients = list(wanted)
        size = max(1, len(recipients)) if postgresql else _CHUNK
        queries = [select(*columns).where(ConsentState.channel == channel,
                                          one_of(session, ConsentState.recipient, recipients[start:start + size]))
                   for start in range(0, len(recipients), size)]
    connection = session.connection()  # plain rows: no ORM work per state
    latests: dict[str, Latest] = {}
    for query in queries:
        if as_of:
            states: dict[str, list[Any]] = {}
            for state in connection.execute(query).all():
                if state.recipient in wanted:
                    states.setdefault(state.recipient, []).append(state)
            latests.update({recipient: _latest(session, found, at, as_of) for recipient, found in states.items()})
        else:
            # the current state as it is, read as tuples: what _latest makes of it, without a row object each
            for recipient, _, recipient_type, status, event_id in connection.execute(query):
                if recipient in wanted:
                    latests.setdefault(recipient, {})[recipient_type] = (status, event_id)
    latests = {recipient: latests.get(recipient, {}) for recipient in wanted}
    accepted = _accepted(session, list(latests.values()), at, as_of) if require_iys_accepted else None
    for recipient, group in wanted.items():
        for contact in group:
            decisions[contact.id] = _decide(contact, channel, recipient, latests[recipient], accepted)
    return decisions
