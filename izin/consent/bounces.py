"""Addresses that cannot receive: a hard bounce marks an (address, channel) so it is not tried again.

A mark comes from an email DSN with a 5.x.x status posted to `/webhooks/bounce`, a provider's
delivery report saying `bounced` (or an email `undelivered` with a permanent 5.x.x code), or the
SMTP adapter's 5xx answer for a recipient (`PermanentChannelError.address_invalid`). It is not a
consent event: the ledger is untouched, and the person's consent stays what it was.

Marking is idempotent: the first mark of an (address, channel) stays with its reason and time;
marking again changes nothing. Addresses are compared in their stored form (lower-case email,
E.164 phone), the form deliveries and the ledger use.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from izin.consent.ledger import contact_address_column
from izin.consent.models import CHANNELS, Contact, UndeliverableAddress
from izin.db import one_of, upsert_insert

__all__ = ["CHUNK", "is_undeliverable", "mark", "normalise", "undeliverable_set"]

#: addresses per IN (...) query; well under SQLite's and PostgreSQL's parameter limits
CHUNK = 500
#: longest reason kept (a DSN's diagnostic can be long)
REASON_MAX = 1000


def normalise(address: str, channel: str) -> str:
    """The stored form: email lower-cased and stripped; a phone as given (E.164)."""
    if channel not in CHANNELS:
        raise ValueError(f"unknown channel {channel!r}; use one of {', '.join(CHANNELS)}")
    address = address.strip()
    return address.lower() if channel == "email" else address


def mark(session: Session, address: str, channel: str, reason: str, now: datetime) -> bool:
    """Mark an address undeliverable on a channel; True when this call marked it, False when it was."""
    key = normalise(address, channel)
    if not key:
        raise ValueError("an undeliverable mark needs an address")
    insert = upsert_insert(session)
    statement = insert(UndeliverableAddress).values(
        address=key, channel=channel, reason=(reason or "hard bounce")[:REASON_MAX], marked_at=now,
    ).on_conflict_do_nothing(index_elements=["address", "channel"]).returning(UndeliverableAddress.address)
    return session.execute(statement).first() is not None


def is_undeliverable(session: Session, address: str | None, channel: str) -> bool:
    """Whether the address was marked undeliverable on the channel (None: no address, False)."""
    if not address:
        return False
    key = normalise(address, channel)
    return session.scalar(select(UndeliverableAddress.address).where(
        UndeliverableAddress.address == key, UndeliverableAddress.channel == channel)) is not None


def undeliverable_set(session: Session, addresses: Iterable[str | None], channel: str,
                      contact_where: list[ColumnElement[bool]] | None = None) -> set[str]:
    """Which of these addresses are marked on the channel, in stored form; one query per CHUNK.

    `contact_where` (conditions over Contact selecting at least the contacts these addresses
    belong to) lets SQLite ask by joining contacts instead of listing the addresses.
    """
    keys = sorted({normalise(a, channel) for a in addresses if a})
    marked: set[str] = set()
    postgresql = session.get_bind().dialect.name == "postgresql"
    if contact_where is not None and keys and not postgresql:
        found = session.scalars(select(UndeliverableAddress.address).join(
            Contact, contact_address_column(channel) == UndeliverableAddress.address).where(
            UndeliverableAddress.channel == channel, *contact_where))
        return set(keys).intersection(found)
    # one array parameter on PostgreSQL (which would hash-join a join), IN lists of CHUNK elsewhere
    size = max(1, len(keys)) if postgresql else CHUNK
    for start in range(0, len(keys), size):
        marked.update(session.scalars(select(UndeliverableAddress.address).where(
            UndeliverableAddress.channel == channel, one_of(session, UndeliverableAddress.address,
                                                            keys[start:start + size]))))
    return marked
