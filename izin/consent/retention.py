"""Retention (invariant 9): destroy evidence only once its consent ended long enough ago, and drop
the targeting data of contacts who opted out.

Purged events become tombstones: id, hashes, channel, status, source and dates stay, the recipient,
contact and proof go. The chain stays verifiable because verify checks a tombstone's links and the
signed digest of its purge run (ids, hashes and what each tombstone keeps) instead of its content. The consent-state row of a purged address
stays as a bare suppression, so a TACIR address that refused is never messaged again.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, exists, func, or_, select, update
from sqlalchemy.orm import Session

from izin.consent.audit import key_id, sign, tombstone_line
from izin.consent.models import (ConsentEvent, ConsentState, Contact, ContactEvent, ContactTag, OptinRequest,
                                 PurgeRun)


@dataclass(frozen=True)
class PurgeReport:
    cutoff: datetime
    events: int
    contacts: int
    run_id: int | None
    #: opt-in requests never confirmed, and the contacts made only for them, removed
    abandoned_optins: int = 0


def years_before(instant: datetime, years: int) -> datetime:
    """The same calendar moment `years` earlier (29 February becomes 28 February)."""
    try:
        return instant.replace(year=instant.year - years)
    except ValueError:
        return instant.replace(year=instant.year - years, day=28)


def purge(session: Session, now: datetime, years: int, secret: str) -> PurgeReport:
    """Tombstone the evidence of consents that ended before the cutoff; clear opted-out targeting data."""
    from izin.campaigns.models import Delivery  # send logs age with the consent they rested on

    cutoff = years_before(now, years)
    # a consent ended when the refusal was given and recorded, and no later than the last message
    # sent to the address on that channel: a late-entered, back-dated RET does not age evidence
    recent_send = exists().where(Delivery.recipient == ConsentState.recipient,
                                 Delivery.channel == ConsentState.channel, Delivery.sent_at >= cutoff)
    ended = session.execute(select(ConsentState).where(
        ConsentState.status == "RET", ConsentState.consent_date < cutoff, ConsentState.recorded_at < cutoff,
        ~recent_send)).scalars().all()
    ids: list[int] = []
    for state in ended:
        ids.extend(session.scalars(select(ConsentEvent.id).where(
            ConsentEvent.recipient == state.recipient, ConsentEvent.channel == state.channel,
            ConsentEvent.recipient_type == state.recipient_type, ConsentEvent.id <= state.event_id,
            ConsentEvent.purge_run_id.is_(None))))
        # the send log of that address goes with its evidence: counts stay, the address and code go
        session.execute(update(Delivery).where(
            Delivery.recipient == state.recipient, Delivery.channel == state.channel,
            func.coalesce(Delivery.sent_at, Delivery.created_at) < cutoff).values(
            recipient=None, coupon_code=None, detail=None))
    contacts = _clear_targeting(session, now)
    abandoned = _drop_abandoned_optins(session, now)
    if not ids:
        return PurgeReport(cutoff, 0, contacts, None, abandoned)
    ids.sort()
    lines: list[str] = []
    for start in range(0, len(ids), 1_000):
        lines.extend(tombstone_line(e) for e in session.scalars(select(ConsentEvent).where(
            ConsentEvent.id.in_(ids[start:start + 1_000])).order_by(ConsentEvent.id)))
    digest = hashlib.sha256("".join(lines).encode()).hexdigest()
    run = PurgeRun(run_at=now, cutoff=cutoff, events=len(ids), contacts=contacts, digest=digest,
                   signature=sign(secret, digest), key_id=key_id(secret))
    session.add(run)
    session.flush()
    for start in range(0, len(ids), 1_000):
        session.execute(update(ConsentEvent).where(ConsentEvent.id.in_(ids[start:start + 1_000])).values(
            recipient=None, contact_id=None, contact_ref=None, proof=None, purge_run_id=run.id))
    return PurgeReport(cutoff, len(ids), contacts, run.id, abandoned)


#: how long an unconfirmed opt-in request is kept after it expired (long enough to answer a query)
ABANDONED_OPTIN_GRACE = timedelta(days=30)


def _drop_abandoned_optins(session: Session, now: datetime) -> int:
    """Delete opt-in requests never confirmed, and contacts the form made that have nothing else:
    a name and an address someone typed without confirming are no purpose's data (KVKK art. 4)."""
    from izin.campaigns.models import Delivery

    stale = list(session.scalars(select(OptinRequest.id).where(
        OptinRequest.confirmed_at.is_(None), OptinRequest.expires_at < now - ABANDONED_OPTIN_GRACE)))
    if not stale:
        return 0
    owners = set(session.scalars(select(OptinRequest.contact_id).where(
        OptinRequest.id.in_(stale), OptinRequest.contact_id.is_not(None))))
    session.execute(delete(OptinRequest).where(OptinRequest.id.in_(stale)))
    for contact_id in owners:
        contact = session.get(Contact, contact_id)
        keep = (contact is None or not contact.external_id.startswith("web-")
                or session.scalar(select(ConsentEvent.id).where(ConsentEvent.contact_id == contact_id).limit(1))
                or session.scalar(select(Delivery.id).where(Delivery.contact_id == contact_id).limit(1))
                or session.scalar(select(OptinRequest.id).where(OptinRequest.contact_id == contact_id).limit(1)))
        if not keep:
            session.delete(contact)
    return len(stale)


def _clear_targeting(session: Session, now: datetime) -> int:
    """Remove attributes, tags, birthday and events of contacts whose every current address is RET."""
    address = ConsentState.recipient
    refused = exists().where(ConsentState.status == "RET",
                             address.in_([Contact.email, Contact.phone]))
    consenting = exists().where(ConsentState.status == "ONAY",
                                address.in_([Contact.email, Contact.phone]))
    # a contact cleared before and given new data since is cleared again
    ids = list(session.scalars(select(Contact.id).where(
        refused, ~consenting,
        or_(Contact.targeting_purged_at.is_(None), Contact.updated_at > Contact.targeting_purged_at))))
    for start in range(0, len(ids), 1_000):
        chunk = ids[start:start + 1_000]
        session.execute(update(Contact).where(Contact.id.in_(chunk)).values(
            attributes={}, birthday=None, birth_month=None, birth_day=None, targeting_purged_at=now))
        session.execute(delete(ContactTag).where(ContactTag.contact_id.in_(chunk)))
        session.execute(delete(ContactEvent).where(ContactEvent.contact_id.in_(chunk)))
    return len(ids)



