"""Tables of the İYS sync: one state per ledger event, the pull cursors, the shared token.

The ledger stays append-only and hash-chained; what İYS did with an event is mutable bookkeeping
and lives beside it, keyed by the event's id.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from izin.db import Base, UTCDateTime

#: the life of an event taken outside İYS: pending -> sent -> accepted | rejected; `local` is never uploaded
SYNC_STATES = ("local", "pending", "sent", "accepted", "rejected")
#: where a row came from: our upload, a pull, or the daily reconciliation
ORIGINS = ("push", "pull", "reconcile")


class IysSync(Base):
    """What İYS knows of one consent event."""

    __tablename__ = "iys_sync"

    event_id: Mapped[int] = mapped_column(ForeignKey("consent_events.id"), primary_key=True, autoincrement=False)
    state: Mapped[str] = mapped_column(String(10))
    origin: Mapped[str] = mapped_column(String(10))
    #: the asynchronous request that carries it, and its index there
    request_id: Mapped[str | None] = mapped_column(String(128))
    batch_index: Mapped[int | None] = mapped_column(Integer)
    #: İYS's id of the movement and when İYS wrote it
    transaction_id: Mapped[str | None] = mapped_column(String(128), unique=True)
    creation_date: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: why İYS refused it (e.g. H174 too old, H175 first-ever RET), or why it stays local
    error_code: Mapped[str | None] = mapped_column(String(32))
    error_message: Mapped[str | None] = mapped_column(Text)
    #: uploads tried (a transient failure sends it again)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    #: when İYS's final answer (accepted or rejected) arrived
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        Index("ix_iys_sync_state_event_id", "state", "event_id"),
        Index("ix_iys_sync_request_id", "request_id"),
    )


class IysCursor(Base):
    """The `after` cursor of one pull source (IYS or HS) and how the last pulls went."""

    __tablename__ = "iys_cursors"

    source: Mapped[str] = mapped_column(String(8), primary_key=True)
    after: Mapped[str | None] = mapped_column(Text)
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    #: movements read from İYS through this cursor, ever
    pulled_total: Mapped[int] = mapped_column(Integer, default=0)


class IysToken(Base):
    """One row: İYS's current token pair and the recent token requests, shared by every process so
    the hourly token limit holds across cron runs and workers."""

    __tablename__ = "iys_token"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    access_token: Mapped[str | None] = mapped_column(Text)
    refresh_token: Mapped[str | None] = mapped_column(Text)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    refresh_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: ISO instants (UTC) of the token requests of the last hour
    requests: Mapped[list[Any]] = mapped_column(JSON, default=list)
    blocked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)


def accepted_events(session: Session, event_ids: Iterable[int], at: datetime | None = None) -> set[int]:
    """Which of these consent events İYS has accepted (by `at`, when given): the strict gate's question."""
    ids = list(event_ids)
    accepted: set[int] = set()
    for start in range(0, len(ids), 1_000):
        query = select(IysSync.event_id).where(IysSync.event_id.in_(ids[start:start + 1_000]),
                                               IysSync.state == "accepted")
        if at is not None:
            query = query.where(IysSync.answered_at.is_not(None), IysSync.answered_at <= at)
        accepted.update(session.scalars(query))
    return accepted
