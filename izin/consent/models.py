"""Tables of contacts, their addresses and events, and the consent ledger.

Consent belongs to an address, not to a person: the ledger is keyed by (recipient, channel,
recipient_type), as İYS keys it, and a contact whose email changes meets a fresh, empty history
for the new address while the old one keeps its own.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Date, ForeignKey, Index, Integer, SmallInteger, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from izin.db import Base, UTCDateTime

#: channels as izin names them, and as İYS does
CHANNELS = ("email", "sms", "call")
IYS_TYPE = {"email": "EPOSTA", "sms": "MESAJ", "call": "ARAMA"}
STATUSES = ("ONAY", "RET")
RECIPIENT_TYPES = ("BIREYSEL", "TACIR")
#: which contact address a channel uses
ADDRESS_KIND = {"email": "email", "sms": "phone", "call": "phone"}
#: the prev_hash of the first event
GENESIS_HASH = "0" * 64


class Contact(Base):
    __tablename__ = "contacts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    external_id: Mapped[str] = mapped_column(String(128), unique=True)
    first_name: Mapped[str | None] = mapped_column(String(100))
    last_name: Mapped[str | None] = mapped_column(String(100))
    email: Mapped[str | None] = mapped_column(String(320), index=True)
    phone: Mapped[str | None] = mapped_column(String(16), index=True)
    #: phonenumbers says the number can be a mobile one: only then may it get SMS
    phone_mobile: Mapped[bool | None] = mapped_column(Boolean)
    birthday: Mapped[date | None] = mapped_column(Date)
    # month and day apart, indexed, so a birthday tick reads only today's contacts
    birth_month: Mapped[int | None] = mapped_column(SmallInteger)
    birth_day: Mapped[int | None] = mapped_column(SmallInteger)
    locale: Mapped[str] = mapped_column(String(8), default="tr")
    #: IANA name; None means the policy time zone
    timezone: Mapped[str | None] = mapped_column(String(64))
    recipient_type: Mapped[str] = mapped_column(String(8), default="BIREYSEL")
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    #: set when retention removed this contact's targeting data after an opt-out
    targeting_purged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_contacts_birth_month_day", "birth_month", "birth_day"),)


class ContactTag(Base):
    __tablename__ = "contact_tags"

    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True)
    tag: Mapped[str] = mapped_column(String(64), primary_key=True, index=True)


class ContactAddress(Base):
    """Every email and phone a contact has had, with when it was theirs."""

    __tablename__ = "contact_addresses"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(8))  # email | phone
    address: Mapped[str] = mapped_column(String(320), index=True)
    valid_from: Mapped[datetime] = mapped_column(UTCDateTime)
    valid_to: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_contact_addresses_contact_kind", "contact_id", "kind"),)


class ContactEvent(Base):
    """A purchase or other event of a contact; follow-up campaigns trigger on these."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_id: Mapped[str] = mapped_column(String(128), unique=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    imported_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        Index("ix_events_name_occurred_at", "name", "occurred_at"),
        Index("ix_events_contact_name_occurred_at", "contact_id", "name", "occurred_at"),
    )


class PurgeRun(Base):
    """A retention purge: which events it turned into tombstones, signed so verify can tell."""

    __tablename__ = "purge_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_at: Mapped[datetime] = mapped_column(UTCDateTime)
    cutoff: Mapped[datetime] = mapped_column(UTCDateTime)
    events: Mapped[int] = mapped_column(Integer)
    contacts: Mapped[int] = mapped_column(Integer)
    #: sha256 over "id:hash\n" of every event the run purged, in id order
    digest: Mapped[str] = mapped_column(String(64))
    #: HMAC-SHA256 of the digest under the secret key, and which key
    signature: Mapped[str] = mapped_column(String(64))
    key_id: Mapped[str] = mapped_column(String(16))


class ConsentEvent(Base):
    """One entry of the append-only, hash-chained ledger. Ids are dense and in recording order."""

    __tablename__ = "consent_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id", ondelete="SET NULL"))
    #: the contact's external_id when recorded; None once purged
    contact_ref: Mapped[str | None] = mapped_column(String(128))
    #: lower-case email or E.164 phone; None once purged
    recipient: Mapped[str | None] = mapped_column(String(320))
    channel: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(4))
    source: Mapped[str] = mapped_column(String(32))
    recipient_type: Mapped[str] = mapped_column(String(8))
    #: when the person consented or refused (shown in Europe/Istanbul, stored in UTC)
    consent_date: Mapped[datetime] = mapped_column(UTCDateTime)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime)
    proof: Mapped[str | None] = mapped_column(Text)
    #: False for what İYS would refuse, e.g. a RET from someone who never consented
    iys_uploadable: Mapped[bool] = mapped_column(Boolean)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)
    purge_run_id: Mapped[int | None] = mapped_column(ForeignKey("purge_runs.id"))

    __table_args__ = (
        Index("ix_consent_events_key", "recipient", "channel", "recipient_type", "id"),
        Index("ix_consent_events_contact_id", "contact_id"),
        Index("ix_consent_events_recorded_at", "recorded_at"),
    )


class ConsentState(Base):
    """The latest event per (recipient, channel, recipient_type), kept in the same transaction.

    A cache for speed: the events stay the evidence, and verify can rebuild it.
    """

    __tablename__ = "consent_state"

    recipient: Mapped[str] = mapped_column(String(320), primary_key=True)
    channel: Mapped[str] = mapped_column(String(8), primary_key=True)
    recipient_type: Mapped[str] = mapped_column(String(8), primary_key=True)
    status: Mapped[str] = mapped_column(String(4))
    event_id: Mapped[int] = mapped_column(ForeignKey("consent_events.id"))
    consent_date: Mapped[datetime] = mapped_column(UTCDateTime)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime)
    #: whether any ONAY was ever recorded for this key (İYS refuses a first-ever RET)
    ever_onay: Mapped[bool] = mapped_column(Boolean)


class LedgerHead(Base):
    """One row: the last id and hash of the chain. Writers lock it, so the chain stays a line."""

    __tablename__ = "ledger_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    last_id: Mapped[int] = mapped_column(Integer)
    last_hash: Mapped[str] = mapped_column(String(64))


class OptinRequest(Base):
    """A double opt-in waiting for the person to confirm: a link by email, a code by SMS.

    Only hashes of the link token and the code are stored, so the table cannot be used to confirm.
    """

    __tablename__ = "optin_requests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    channel: Mapped[str] = mapped_column(String(8))
    #: lower-case email or E.164 phone
    address: Mapped[str] = mapped_column(String(320))
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id", ondelete="SET NULL"))
    first_name: Mapped[str | None] = mapped_column(String(100))
    last_name: Mapped[str | None] = mapped_column(String(100))
    locale: Mapped[str] = mapped_column(String(8))
    text_version: Mapped[str] = mapped_column(String(32))
    text_hash: Mapped[str] = mapped_column(String(64))
    ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(512))
    #: sha256 of the one-time SMS code; None for email
    code_hash: Mapped[str | None] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    consent_event_id: Mapped[int | None] = mapped_column(ForeignKey("consent_events.id"))

    __table_args__ = (Index("ix_optin_requests_address_channel", "address", "channel"),)


class InboundMessage(Base):
    """An SMS a provider forwarded to us: kept whatever it says, acted on when it is an opt-out."""

    __tablename__ = "inbound_messages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    provider: Mapped[str] = mapped_column(String(32))
    #: E.164, or the raw text when it did not parse
    sender: Mapped[str] = mapped_column(String(32))
    text: Mapped[str] = mapped_column(Text)
    keyword: Mapped[str | None] = mapped_column(String(64))
    short_number: Mapped[str | None] = mapped_column(String(32))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    #: 'opt_out', 'needs_review' (names an opt-out word but is not clear-cut) or 'ignored'
    action: Mapped[str] = mapped_column(String(16))
    consent_event_id: Mapped[int | None] = mapped_column(ForeignKey("consent_events.id"))
    #: the provider's own id of the message, to ignore a webhook delivered twice
    provider_message_id: Mapped[str | None] = mapped_column(String(128), unique=True)


class UndeliverableAddress(Base):
    """An address a provider said does not exist (a hard bounce): it is not tried again."""

    __tablename__ = "undeliverable_addresses"

    address: Mapped[str] = mapped_column(String(320), primary_key=True)
    channel: Mapped[str] = mapped_column(String(8), primary_key=True)
    reason: Mapped[str] = mapped_column(Text)
    marked_at: Mapped[datetime] = mapped_column(UTCDateTime)
