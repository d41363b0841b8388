"""The send gate: may a commercial message go to this contact on this channel at this instant?

Invariant 1: only when the latest consent event for (address, channel, recipient type) is ONAY.
RET or no record: never. An ONAY on one channel never authorises another. A TACIR recipient with
no record at all may be messaged (law 6563 art. 6(2)), never after a RET.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from izin.consent.ledger import contact_address
from izin.consent.models import ConsentEvent, ConsentState, Contact

#: why the gate said no; the plan and delivery records use the same words
NO_CONSENT = "no_consent"
NO_ADDRESS = "no_address"
#: what a yes rests on
ON_ONAY = "onay"
ON_TACIR_EXEMPTION = "tacir_exemption"


@dataclass(frozen=True)
class Decision:
    """The gate's answer, with the evidence it rests on."""

    allowed: bool
    channel: str
    recipient: str | None
    #: NO_CONSENT or NO_ADDRESS when not allowed
    reason: str | None = None
    #: ON_ONAY or ON_TACIR_EXEMPTION when allowed
    basis: str | None = None
    #: the consent event that allows (or, when it is a RET, forbids) the message
    event_id: int | None = None
    status: str | None = None


def _latest_as_of(session: Session, recipient: str, channel: str, recipient_type: str,
                  at: datetime) -> tuple[str, int] | None:
    state = session.get(ConsentState, (recipient, channel, recipient_type))
    if state is None:
        return None
    if state.recorded_at <= at:
        return state.status, state.event_id
    # asked about a moment before the latest change: read the ledger as it stood then
    row = session.execute(
        select(ConsentEvent.status, ConsentEvent.id)
        .where(ConsentEvent.recipient == recipient, ConsentEvent.channel == channel,
               ConsentEvent.recipient_type == recipient_type, ConsentEvent.recorded_at <= at)
        .order_by(ConsentEvent.id.desc()).limit(1)
    ).first()
    return (row.status, row.id) if row else None


def _decide(contact: Contact, channel: str, recipient: str | None,
            latest: tuple[str, int] | None) -> Decision:
    if latest is None:
        if contact.recipient_type == "TACIR":
            return Decision(True, channel, recipient, basis=ON_TACIR_EXEMPTION)
        return Decision(False, channel, recipient, reason=NO_CONSENT)
    status, event_id = latest
    if status == "ONAY":
        return Decision(True, channel, recipient, basis=ON_ONAY, event_id=event_id, status=status)
    return Decision(False, channel, recipient, reason=NO_CONSENT, event_id=event_id, status=status)


def _usable_address(contact: Contact, channel: str) -> str | None:
    recipient = contact_address(contact, channel)
    if channel == "sms" and not contact.phone_mobile:
        return None
    return recipient


def may_send(session: Session, contact: Contact, channel: str, at: datetime) -> Decision:
    """Answer for one contact, channel and instant, with the consent event it rests on."""
    recipient = _usable_address(contact, channel)
    if recipient is None:
        return Decision(False, channel, contact_address(contact, channel), reason=NO_ADDRESS)
    return _decide(contact, channel, recipient, _latest_as_of(session, recipient, channel, contact.recipient_type, at))


#: addresses looked up per query when deciding for many contacts
_CHUNK = 1_000


def may_send_many(session: Session, contacts: list[Contact], channel: str, at: datetime) -> dict[int, Decision]:
    """The same answers as may_send for many contacts, reading current state in chunked queries."""
    decisions: dict[int, Decision] = {}
    wanted: dict[tuple[str, str], list[Contact]] = {}
    for contact in contacts:
        recipient = _usable_address(contact, channel)
        if recipient is None:
            decisions[contact.id] = Decision(False, channel, contact_address(contact, channel), reason=NO_ADDRESS)
        else:
            wanted.setdefault((recipient, contact.recipient_type), []).append(contact)
    keys = list(wanted)
    states: dict[tuple[str, str], ConsentState] = {}
    for start in range(0, len(keys), _CHUNK):
        recipients = {r for r, _ in keys[start:start + _CHUNK]}
        for state in session.scalars(select(ConsentState).where(
                ConsentState.channel == channel, ConsentState.recipient.in_(recipients))):
            states[(state.recipient, state.recipient_type)] = state
    for (recipient, recipient_type), group in wanted.items():
        state = states.get((recipient, recipient_type))
        if state is not None and state.recorded_at > at:
            latest = _latest_as_of(session, recipient, channel, recipient_type, at)
        else:
            latest = (state.status, state.event_id) if state is not None else None
        for contact in group:
            decisions[contact.id] = _decide(contact, channel, recipient, latest)
    return decisions
