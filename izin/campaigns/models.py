"""Tables of campaigns and their deliveries: the database is the source of truth for what is sent.

A delivery is one (campaign, contact, occurrence), enforced by a unique constraint, so no retry,
crash, duplicate tick or re-run can create a second one (invariant 7).
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import (Boolean, Date, ForeignKey, Index, Integer, SmallInteger, String, Text,
                        UniqueConstraint)
from sqlalchemy.orm import Mapped, mapped_column

from izin.db import Base, UTCDateTime

#: the delivery state machine: scheduled → sending → sent | suppressed | deferred | failed
DELIVERY_STATUSES = ("scheduled", "sending", "sent", "suppressed", "deferred", "failed")


class Campaign(Base):
    """A campaign as first seen by plan, schedule or run; its start bounds after_event follow-ups."""

    __tablename__ = "campaigns"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    #: the validated YAML last scheduled, so workers render exactly what was checked
    spec_yaml: Mapped[str | None] = mapped_column(Text)
    #: where that YAML lives: templates next to it are looked up there
    spec_path: Mapped[str | None] = mapped_column(String(1024))
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Delivery(Base):
    __tablename__ = "deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"))
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id"))
    #: with campaign and contact, identifies the delivery for ever: '2026' for a birthday, an event id
    occurrence: Mapped[str] = mapped_column(String(128))
    channel: Mapped[str] = mapped_column(String(8))
    #: the address it went (or would go) to; None once purged
    recipient: Mapped[str | None] = mapped_column(String(320))
    status: Mapped[str] = mapped_column(String(12))
    #: a short, stable code for any outcome other than sent: consent_withdrawn, send_window, template, ...
    reason: Mapped[str | None] = mapped_column(String(64))
    #: the words behind the reason: the provider's answer, the template error
    detail: Mapped[str | None] = mapped_column(Text)
    #: counts toward the frequency cap; transactional messages do not
    commercial: Mapped[bool] = mapped_column(Boolean)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    #: when a deferred delivery may be tried again
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: the consent event that allowed it (None for transactional and TACIR-exempt messages)
    consent_event_id: Mapped[int | None] = mapped_column(ForeignKey("consent_events.id"))
    #: 'onay', 'tacir_exemption' or 'transactional'
    basis: Mapped[str | None] = mapped_column(String(16))
    #: the contact event an after_event delivery follows up
    event_ref: Mapped[str | None] = mapped_column(String(128))
    coupon_code: Mapped[str | None] = mapped_column(String(32), unique=True)
    coupon_percent: Mapped[int | None] = mapped_column(SmallInteger)
    coupon_expires_on: Mapped[date | None] = mapped_column(Date)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    #: when a broker message was last sent for it; the scheduler re-enqueues rows whose message was lost
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: a worker's claim on a 'sending' delivery lapses at this instant
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    provider_id: Mapped[str | None] = mapped_column(String(128), index=True)
    #: the provider's delivery report: 'delivered', 'undelivered', 'bounced', ...
    provider_status: Mapped[str | None] = mapped_column(String(32))
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    segments: Mapped[int | None] = mapped_column(SmallInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        UniqueConstraint("campaign_id", "contact_id", "occurrence"),
        Index("ix_deliveries_status_next_attempt_at", "status", "next_attempt_at"),
        Index("ix_deliveries_contact_sent_at", "contact_id", "sent_at"),
    )


class Lock(Base):
    """A named lease held by one process (the scheduler when no Redis is configured)."""

    __tablename__ = "locks"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
