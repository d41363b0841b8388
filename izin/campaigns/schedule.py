"""Scheduling: turn a plan into delivery rows, once.

Rows are inserted with ON CONFLICT (campaign, contact, occurrence) DO NOTHING, so a re-run, two
schedulers at once or a retried tick never make a second delivery. Each row gets its coupon
code here, so every later render of that delivery shows the same code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import Column, ColumnElement, MetaData, Table, and_, func, or_, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from izin.campaigns import spec
from izin.campaigns.coupons import new_code
from izin.campaigns.models import Delivery
from izin.campaigns.plan import Plan, PlannedDelivery, campaign_start, plan_campaign
from izin.config import Settings
from izin.db import insert_rows, refresh_statistics

#: rows inserted per executemany (and per savepoint, so a coupon clash redraws this many codes)
_BATCH = 5_000
#: fresh coupon codes tried for a batch before giving up (a clash of 40-bit codes is rare)
_COUPON_TRIES = 5
#: deliveries created at once after which the planner's statistics of the table are refreshed
ANALYZE_AFTER = 1_000


@dataclass
class ScheduleReport:
    plan: Plan
    created: int = 0
    deferred: int = 0
    #: ids of the rows this call created, in plan order
    ids: list[int] = field(default_factory=list)


def _row(campaign: spec.Campaign, campaign_id: int, planned: PlannedDelivery, now: datetime) -> dict[str, object]:
    row: dict[str, object] = {
        "campaign_id": campaign_id, "contact_id": planned.contact_id, "occurrence": planned.occurrence,
        "channel": planned.channel, "recipient": planned.recipient, "status": planned.status,
        "reason": planned.reason, "commercial": campaign.purpose == "commercial", "due_at": planned.due_at,
        "next_attempt_at": planned.next_attempt_at, "consent_event_id": planned.consent_event_id,
        "basis": planned.basis, "event_ref": planned.event_ref, "attempts": 0, "created_at": now,
        "updated_at": now, "coupon_code": None, "coupon_percent": None, "coupon_expires_on": None,
    }
    if campaign.coupon is not None:
        row["coupon_code"] = new_code(campaign.coupon.prefix)
        row["coupon_percent"] = campaign.coupon.percent
        local_due = planned.due_at.astimezone(ZoneInfo(planned.timezone)).date()
        row["coupon_expires_on"] = local_due + timedelta(days=campaign.coupon.valid_days)
    return row


def schedule_campaign(session: Session, campaign: spec.Campaign, settings: Settings, at: datetime,
                      now: datetime) -> ScheduleReport:
    """Create the due deliveries of one campaign; rows that exist already are left alone.

    The plan streams round by round and each round is inserted as it comes, in executemany
    batches, so a whole-base blast holds one round in memory.
    """
    row = campaign_start(session, campaign.name, at)
    if campaign.source_text is not None and campaign.source_text != row.spec_yaml:
        row.spec_yaml = campaign.source_text
        row.updated_at = now
    if campaign.source_path is not None:
        row.spec_path = str(Path(campaign.source_path).resolve())
    report = ScheduleReport(plan=Plan(campaign.name, at))
    write = _writer(session)

    def insert(deliveries: list[PlannedDelivery], capped: list[PlannedDelivery]) -> None:
        planned = deliveries + capped
        for start in range(0, len(planned), _BATCH):
            chunk = planned[start:start + _BATCH]
            for attempt in range(_COUPON_TRIES):
                rows = [_row(campaign, row.id, p, now) for p in chunk]
                try:
                    with session.begin_nested():
                        created = write(rows)
                    break
                except IntegrityError:
                    # a coupon code clashed with one already stored: draw the batch's codes again
                    if attempt == _COUPON_TRIES - 1 or campaign.coupon is None:
                        raise
            report.ids.extend(i for i, _ in created)
            report.created += len(created)
            report.deferred += sum(1 for _, status in created if status == "deferred")

    report.plan = plan_campaign(session, campaign, settings, at, on_round=insert)
    if report.created >= ANALYZE_AFTER:
        # workers query the new rows at once (claims, cap counts)
        refresh_statistics(session, "deliveries")
    return report


#: the columns scheduling writes (all but the id and what only sending sets)
_COLUMNS = ("campaign_id", "contact_id", "occurrence", "channel", "recipient", "status", "reason", "commercial",
            "due_at", "next_attempt_at", "consent_event_id", "basis", "event_ref", "attempts", "created_at",
            "updated_at", "coupon_code", "coupon_percent", "coupon_expires_on")
#: what makes a delivery the same delivery: a second row for it is never inserted
_NATURAL_KEY = ("campaign_id", "contact_id", "occurrence")


def _writer(session: Session) -> Callable[[list[dict[str, object]]], list[Any]]:
    """A function inserting delivery rows, skipping the (campaign, contact, occurrence) that exist,
    and returning (id, status) of the rows it created, in the order given.

    SQLite: the driver's executemany, then the rows with ids above the largest before it (the
    transaction holds the database's write lock, and SQLite numbers new rows from the largest id
    up). PostgreSQL: COPY into a temporary table, then one INSERT ... SELECT ... ON CONFLICT DO
    NOTHING RETURNING (psycopg re-parses a many-VALUES INSERT for every statement: about 4,000
    rows a second against 50,000 this way).
    """
    table = Delivery.__table__
    if session.get_bind().dialect.name != "postgresql":
        largest = select(func.coalesce(func.max(table.c.id), 0))

        def write_sqlite(rows: list[dict[str, object]]) -> list[Any]:
            connection = session.connection()  # plain rows: no ORM work per delivery
            before = connection.execute(largest).scalar_one()
            insert_rows(session, table, rows, skip_conflicts=_NATURAL_KEY)
            return connection.execute(select(table.c.id, table.c.status).where(table.c.id > before)
                                      .order_by(table.c.id)).all()

        return write_sqlite
    staging = Table("izin_new_deliveries", MetaData(),
                    *(Column(c, table.c[c].type) for c in _COLUMNS), prefixes=["TEMPORARY"],
                    postgresql_on_commit="DELETE ROWS")
    staging.create(session.connection(), checkfirst=True)
    columns = ", ".join(_COLUMNS)
    move = text(f"INSERT INTO deliveries ({columns}) SELECT {columns} FROM izin_new_deliveries "
                f"ON CONFLICT ({', '.join(_NATURAL_KEY)}) DO NOTHING RETURNING id, status")

    def write(rows: list[dict[str, object]]) -> list[Any]:
        insert_rows(session, staging, rows)
        created = session.execute(move).all()
        # TRUNCATE, not DELETE: the next INSERT ... SELECT would scan every row deleted before it
        session.execute(text("TRUNCATE izin_new_deliveries"))
        return created

    return write


def free_to_take(now: datetime) -> ColumnElement[bool]:
    """Deliveries a worker may take now: scheduled and due, deferred whose time has come, or
    'sending' whose worker's lease ran out (the scheduler's look-up and the worker's claim)."""
    return or_(and_(Delivery.status == "scheduled", Delivery.due_at <= now),
               and_(Delivery.status == "deferred", Delivery.next_attempt_at <= now),
               and_(Delivery.status == "sending", Delivery.lease_until < now))


def due_ids(session: Session, now: datetime, limit: int | None = None,
            enqueued_before: datetime | None = None) -> list[int]:
    """The ids of deliveries free to take now, in id order. With `enqueued_before`, only rows not
    enqueued since."""
    query = select(Delivery.id).where(free_to_take(now)).order_by(Delivery.id)
    if enqueued_before is not None:
        query = query.where(or_(Delivery.enqueued_at.is_(None), Delivery.enqueued_at < enqueued_before))
    if limit is not None:
        query = query.limit(limit)
    return list(session.scalars(query))
