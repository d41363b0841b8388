"""Sending deliveries: claim the rows, re-check consent, cap and window, render, send, record.

Invariant 2 lives here: consent is checked again right before the adapter is called, so an opt-out
recorded after scheduling wins. A worker takes a batch of deliveries (one broker message carries
up to `actors.BATCH` ids): one transaction claims them and re-checks consent, caps, bounces and
the send window for all of them; they are rendered, then they go one after another. A message is
never handed to the adapter more than GATE_MAX_AGE after the check that allowed it: when sending
falls behind, what is left of the batch is checked again first.

The claim is one conditional UPDATE, atomic on SQLite and PostgreSQL, so two workers never both
send a delivery. The only window in which a crash can duplicate a message is the adapter call
itself: a worker killed after the provider accepted the message and before the row is marked
`sent` leaves it `sending`, and once the lease runs out another worker sends it again. Each
message is marked right after its adapter call, and its thread sends nothing more until the mark
is committed (the marks of a process's threads share commits: marks.py), so that window is one
message wide per thread.
"""

from __future__ import annotations

import time as time_module
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import bindparam, select, update

from izin import clock
from izin.campaigns import spec
from izin.campaigns.marks import GroupCommit
from izin.campaigns.models import Campaign as CampaignRow
from izin.campaigns.models import Delivery
from izin.campaigns.plan import cap_counts, cap_release, caps_for
from izin.campaigns.schedule import free_to_take
from izin.campaigns.window import in_window, next_open
from izin.channels.base import OutgoingMessage, Receipt
from izin.channels.errors import ChannelAccountError, PermanentChannelError, TransientChannelError
from izin.config import Settings
from izin.consent.bounces import mark as mark_undeliverable
from izin.consent.bounces import normalise, undeliverable_set
from izin.consent.gate import IYS_PENDING, Decision, may_send_many, usable_address
from izin.consent.models import Contact, ContactEvent
from izin.consent.tokens import unsubscribe_url
from izin.db import Database

#: how long a claim holds; renewed whenever a batch is checked again, longer than any adapter call
LEASE = timedelta(minutes=5)
#: the longest a message may wait between the consent check that allowed it and its adapter call
#: (seconds of real time, whatever the engine's clock says: IZIN_NOW may hold it still)
GATE_MAX_AGE = 1.0
#: a batch still unsent after this many seconds is given back for another worker to take
BATCH_MAX_SECONDS = 120.0
#: attempts before a delivery that keeps meeting transient errors is failed
MAX_ATTEMPTS = 6
#: first retry delay after a transient error; doubles per attempt up to RETRY_MAX
RETRY_BASE = timedelta(seconds=30)
RETRY_MAX = timedelta(hours=1)
#: how long deliveries wait when the provider refuses the account itself (credentials, originator)
ACCOUNT_RETRY = timedelta(minutes=15)
#: a delivery held only by the cap its own batch's siblings fill is judged again this much later
SIBLING_RECHECK = timedelta(minutes=5)
#: statuses that count toward a cap at the moment of sending
_SENT_OR_SENDING = ("sent", "sending")


@dataclass(frozen=True)
class Outcome:
    """What became of one attempt: sent, suppressed, deferred, failed, or skipped (not ours to send)."""

    status: str
    reason: str | None = None
    detail: str | None = None


def claim(db: Database, delivery_id: int, now: datetime) -> datetime | None:
    """Take the delivery for this worker if it is due and nobody holds it.

    Returns the lease's end, which is also this claim's token: only the holder of the current
    lease may record the outcome, so a worker whose lease ran out cannot overwrite its successor.
    """
    with db.session() as session:
        return now + LEASE if _claim(session, [delivery_id], now) else None


def _claim(session: Any, ids: list[int], now: datetime) -> list[Any]:
    """The deliveries among `ids` that were free to take, as rows returned by the claim itself
    (UPDATE ... RETURNING), in id order. Rows, not ORM objects: what the claim and the check
    change on them is written by explicit statements (_Writes), without the unit of work."""
    claimed = session.connection().execute(
        update(_DELIVERIES).where(_DELIVERIES.c.id.in_(ids), free_to_take(now))
        .values(status="sending", lease_until=now + LEASE, updated_at=now).returning(*_DELIVERIES.c)).all()
    return sorted(claimed, key=lambda delivery: delivery.id)


_DELIVERIES = Delivery.__table__
_CONTACTS = Contact.__table__
_PROVIDER_ID_MAX = _DELIVERIES.c.provider_id.type.length
#: the outcome of one attempt, fenced by the lease: a worker whose lease ran out changes nothing
_FINISH = update(_DELIVERIES).where(_DELIVERIES.c.id == bindparam("delivery"), _DELIVERIES.c.status == "sending",
                                    _DELIVERIES.c.lease_until == bindparam("lease"))


#: attempts count calls to the provider: each outcome of one adds it, in the same statement
_CALLED = {"attempts": _DELIVERIES.c.attempts + 1}
#: the mark after a provider accepted a message, for a group of marks at once (marks.py), each
#: fenced by its lease: on PostgreSQL one statement over arrays of the rows (through executemany,
#: psycopg's per-row pipeline was most of the marks' cost), on SQLite the driver's executemany
#: (SQLAlchemy's per-row parameter handling cost more than SQLite's update)
_SENT_ARRAYS = """
    UPDATE deliveries AS d SET status = 'sent', sent_at = m.sent_at, updated_at = m.sent_at, lease_until = NULL,
        provider_id = m.provider, segments = m.parts, reason = NULL, detail = NULL, attempts = d.attempts + 1
    FROM unnest(CAST(%s AS integer[]), CAST(%s AS timestamp[]), CAST(%s AS timestamp[]),
                CAST(%s AS varchar[]), CAST(%s AS smallint[])) AS m(id, lease, sent_at, provider, parts)
    WHERE d.id = m.id AND d.status = 'sending' AND d.lease_until = m.lease"""
_SENT_ROWS = ("UPDATE deliveries SET status = 'sent', sent_at = ?, updated_at = ?, lease_until = NULL, provider_id = ?, "
              "segments = ?, reason = NULL, detail = NULL, attempts = attempts + 1 "
              "WHERE id = ? AND status = 'sending' AND lease_until = ?")


def _write_sent(connection: Any, rows: list[Mapping[str, Any]]) -> None:
    """Mark a group of deliveries sent. Each row: delivery (id), lease (the claim it holds), now
    (when it was sent, on the engine's clock), provider (its id for the message), parts (SMS)."""
    dialect = connection.dialect
    # the instants as the column stores them (naive UTC; on SQLite its text), so the lease compares equal
    stored = _DELIVERIES.c.lease_until.type.dialect_impl(dialect).bind_processor(dialect)
    if dialect.name == "postgresql":
        # each array as its text literal: psycopg's list adaptation (the element type found per
        # list, each value dumped) cost more than the statement
        connection.exec_driver_sql(_SENT_ARRAYS, tuple(_array_literal(values) for values in (
            [row["delivery"] for row in rows], [stored(row["lease"]).isoformat() for row in rows],
            [stored(row["now"]).isoformat() for row in rows], [row["provider"] for row in rows],
            [row["parts"] for row in rows])))
        return
    connection.exec_driver_sql(_SENT_ROWS, [
        (stored(row["now"]), stored(row["now"]), row["provider"], row["parts"], row["delivery"], stored(row["lease"]))
        for row in rows])


#: a claimed delivery that does not go now: why, and until when (fenced by the lease it holds)
_STOP = _FINISH.values(status=bindparam("to_status"), reason=bindparam("to_reason"), detail=bindparam("to_detail"),
                       next_attempt_at=bindparam("retry_at"), lease_until=None, updated_at=bindparam("now"),
                       consent_event_id=bindparam("to_event"), basis=bindparam("to_basis"))
#: a claimed delivery the check allowed: the address it goes to and the consent it rests on
_BIND = update(_DELIVERIES).where(_DELIVERIES.c.id == bindparam("delivery"), _DELIVERIES.c.status == "sending",
                                  _DELIVERIES.c.lease_until == bindparam("lease")).values(
    recipient=bindparam("to_recipient"), consent_event_id=bindparam("to_event"), basis=bindparam("to_basis"))


class _Writes:
    """What one claim transaction decides about its deliveries, written in one statement per kind."""

    def __init__(self) -> None:
        self.stops: list[dict[str, Any]] = []
        self.binds: list[dict[str, Any]] = []

    def stop(self, delivery: Any, now: datetime, status: str, reason: str, detail: str | None = None,
             retry_at: datetime | None = None, unbind: bool = False) -> Outcome:
        """Record why a claimed delivery does not go now; `unbind`: what the first check bound it
        to did not hold, so it rests on nothing now."""
        self.stops.append({"delivery": delivery.id, "lease": delivery.lease_until, "to_status": status,
                           "to_reason": reason, "to_detail": detail, "retry_at": retry_at, "now": now,
                           "to_event": None if unbind else delivery.consent_event_id,
                           "to_basis": None if unbind else delivery.basis})
        return Outcome(status, reason, detail)

    def bind(self, delivery: Any, lease: datetime, recipient: str, event_id: int | None, basis: str | None) -> None:
        self.binds.append({"delivery": delivery.id, "lease": lease, "to_recipient": recipient,
                           "to_event": event_id, "to_basis": basis})

    def write(self, session: Any) -> None:
        """Both statements, each required to change every row it names: the transaction holds
        the rows it claimed, so a row the lease fence missed is a fault, and the batch must not
        go on without its record (raising rolls the claim back)."""
        connection = session.connection()
        for statement, rows in ((_STOP, self.stops), (_BIND, self.binds)):
            if rows and connection.execute(statement, rows).rowcount != len(rows):
                raise RuntimeError(f"deliveries {sorted(row['delivery'] for row in rows)}: their outcome "
                                   "does not match the lease this transaction holds; nothing of the batch is kept")


def _array_literal(values: list[Any]) -> str:
    """A PostgreSQL array literal of the values, each quoted (NULL for None)."""
    return "{" + ",".join("NULL" if value is None else '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
                          for value in values) + "}"


def _finish(db: Database, delivery_id: int, lease: datetime, now: datetime, **values: Any) -> None:
    with db.session() as session:
        session.execute(_FINISH.values(lease_until=None, updated_at=now, **values),
                        {"delivery": delivery_id, "lease": lease})


def rate_limiter(settings: Settings, channel: str) -> Any:
    """dramatiq's window rate limiter for a channel: on Redis when the broker is, else in-process."""
    from dramatiq.rate_limits import WindowRateLimiter
    from dramatiq.rate_limits.backends import RedisBackend, StubBackend

    rate = settings.channels[channel].rate or 1.0
    backend = RedisBackend(url=settings.broker.url) if settings.broker.url else StubBackend()
    # whole messages per whole seconds: 0.5/s is 1 message per 2 s
    limit, window_s = (int(rate), 1) if rate >= 1 else (1, round(1 / rate))
    return WindowRateLimiter(backend, f"izin-rate-{channel}", limit=limit, window=window_s)


@dataclass(frozen=True)
class Stop:
    """Why the re-check at the moment of sending stops a delivery, and until when."""

    status: str
    reason: str
    retry_at: datetime | None = None


@dataclass(frozen=True)
class Allowed:
    """The re-check's yes: the address to send to and the consent event it rests on."""

    recipient: str
    consent_event_id: int | None = None
    basis: str | None = None


def recheck(session: Any, settings: Settings, deliveries: list[Any], contacts: dict[int, Any],
            campaigns: dict[int, spec.Campaign], now: datetime) -> dict[int, Allowed | Stop]:
    """The gate right before the adapter is called (invariant 2): consent, frequency cap, bounces
    and the send window of claimed deliveries, judged at `now`, per delivery id.

    One query per channel answers consent for all of them, one per cap counts what each contact
    was sent. Deliveries are judged in id order, and a delivery allowed here counts toward the cap
    of the next one to the same contact, as if they had been sent one after another.
    """
    strict = settings.iys is not None and settings.iys.require_accepted
    decisions: dict[tuple[int, str], Decision] = {}
    for channel in sorted({d.channel for d in deliveries if d.commercial}):
        wanted = list({d.contact_id: contacts[d.contact_id] for d in deliveries
                       if d.commercial and d.channel == channel}.values())
        for contact_id, decision in may_send_many(session, wanted, channel, now,
                                                  require_iys_accepted=strict).items():
            decisions[(contact_id, channel)] = decision
    of_campaign = {cid: caps_for(campaign, settings, cid) for cid, campaign in campaigns.items()}
    caps = {d.id: of_campaign[d.campaign_id] for d in deliveries if d.commercial}
    # what each contact was sent (or is being sent by other workers), this batch left out
    counted: dict[tuple[timedelta, int | None], Counter[int]] = {}
    batch_ids = [d.id for d in deliveries]
    contact_ids = sorted({d.contact_id for d in deliveries if d.id in caps})
    for _, period, campaign_id in {cap for found in caps.values() for cap in found}:
        counted[(period, campaign_id)] = cap_counts(session, contact_ids, now - period, now, campaign_id,
                                                    _SENT_OR_SENDING, exclude_ids=batch_ids)
    recipients = {d.id: (decisions[(d.contact_id, d.channel)].recipient if d.commercial
                         else usable_address(contacts[d.contact_id], d.channel)) for d in deliveries}
    bounced = {channel: undeliverable_set(session, [recipients[d.id] for d in deliveries if d.channel == channel],
                                          channel) for channel in {d.channel for d in deliveries}}
    start, end = settings.policy.window_local
    granted: Counter[tuple[timedelta, int | None, int]] = Counter()
    verdicts: dict[int, Allowed | Stop] = {}
    for delivery in deliveries:
        contact = contacts[delivery.contact_id]
        recipient = recipients[delivery.id]
        allowed = Allowed(recipient) if recipient else None
        if delivery.commercial:
            decision = decisions[(delivery.contact_id, delivery.channel)]
            if decision.reason == IYS_PENDING:
                # an ONAY İYS has not accepted yet may be accepted soon: wait, do not drop
                verdicts[delivery.id] = Stop("deferred", IYS_PENDING, now + ACCOUNT_RETRY)
                continue
            if not decision.allowed:
                withdrawn = decision.status == "RET"
                verdicts[delivery.id] = Stop("suppressed", "consent_withdrawn" if withdrawn
                                             else decision.reason or "no_consent")
                continue
            allowed = Allowed(decision.recipient or "", decision.event_id, decision.basis)
            over = [(count, period, campaign_id) for count, period, campaign_id in caps[delivery.id]
                    if counted[(period, campaign_id)][contact.id] + granted[(period, campaign_id, contact.id)] >= count]
            if over:
                if any(counted[(period, campaign_id)][contact.id] >= count for count, period, campaign_id in over):
                    release = cap_release(session, contact.id, over, now, _SENT_OR_SENDING, exclude_ids=batch_ids)
                else:
                    # full only with siblings of this batch, which may yet fail to go: judge again
                    # once they have, rather than wait out a period for messages never sent
                    release = now + SIBLING_RECHECK
                verdicts[delivery.id] = Stop("deferred", "frequency_cap", release)
                continue
        elif allowed is None:
            verdicts[delivery.id] = Stop("suppressed", "no_address")
            continue
        if normalise(allowed.recipient, delivery.channel) in bounced[delivery.channel]:
            verdicts[delivery.id] = Stop("suppressed", "undeliverable")
            continue
        tz = ZoneInfo(contact.timezone or settings.policy.timezone)
        if not in_window(now, tz, start, end):
            verdicts[delivery.id] = Stop("deferred", "send_window", next_open(now, tz, start, end))
            continue
        for _, period, campaign_id in caps.get(delivery.id, ()):
            granted[(period, campaign_id, contact.id)] += 1
        verdicts[delivery.id] = allowed
    return verdicts


@dataclass(frozen=True)
class _Ready:
    """A claimed, checked and rendered delivery waiting for its adapter call."""

    lease: datetime
    message: OutgoingMessage


class Sender:
    """Sends deliveries for one process: settings, database, adapters and parsed campaigns."""

    def __init__(self, settings: Settings, db: Database, secret: str,
                 adapters: dict[str, Any] | None = None, now: Callable[[], datetime] = clock.now) -> None:
        self.settings = settings
        self.db = db
        self.secret = secret
        self.now = now
        if adapters is None:
            from izin.channels.registry import open_channels

            # built up front: a wrong URL is a configuration error before any delivery is claimed
            adapters = open_channels(settings.channels)
        self._adapters: dict[str, Any] = dict(adapters)
        self._limiters = {channel: rate_limiter(settings, channel) for channel in settings.channels
                          if settings.channels[channel].rate}
        self._campaigns: dict[tuple[int, datetime | None], spec.Campaign] = {}
        # the threads' sends are marked by one writer, in groups (see marks.py)
        self._marks = GroupCommit(db, _write_sent, one_statement=True)

    def adapter(self, channel: str) -> Any:
        return self._adapters[channel]

    def _throttle(self, channel: str) -> None:
        """Wait for the channel's rate limit (shared across workers when the broker is Redis)."""
        limiter = self._limiters.get(channel)
        while limiter is not None:
            with limiter.acquire(raise_on_failure=False) as acquired:
                if acquired:
                    return
            time_module.sleep(0.02)

    def close(self) -> None:
        for adapter in {id(a): a for a in self._adapters.values()}.values():
            adapter.close()
        self._marks.close()

    def _campaign(self, row: CampaignRow) -> spec.Campaign:
        key = (row.id, row.updated_at)
        if key not in self._campaigns:
            if not row.spec_yaml:
                raise ValueError(f"campaign {row.name} has no stored spec; schedule it again")
            campaign = spec.parse_campaign(row.spec_yaml, file=row.spec_path or row.name)
            campaign._source_path = Path(row.spec_path) if row.spec_path else None
            self._campaigns[key] = campaign
        return self._campaigns[key]

    def process(self, delivery_id: int) -> Outcome:
        """One attempt at one delivery. Never raises for an outcome; raises only when the database fails."""
        return self.process_many([delivery_id])[delivery_id]

    def process_many(self, delivery_ids: Iterable[int]) -> dict[int, Outcome]:
        """One attempt at each delivery, per id; `skipped` for those not free to take (not due,
        held by another worker, finished). Raises only when the database fails."""
        ids = sorted(set(delivery_ids))
        if self._limiters:
            outcomes = self._one_by_one(ids)
        else:
            started = time_module.monotonic()
            outcomes, ready = self._prepare(ids, self.now())
            outcomes.update(self._send_ready(ready, started))
        return {i: outcomes.get(i, Outcome("skipped")) for i in ids}

    def _one_by_one(self, ids: list[int]) -> dict[int, Outcome]:
        """A rate-limited channel: wait for the rate before each claim, so no lease is spent queueing."""
        outcomes: dict[int, Outcome] = {}
        with self.db.session() as session:
            channels = dict(session.execute(select(Delivery.id, Delivery.channel).where(Delivery.id.in_(ids))).all())
        for delivery_id in ids:
            if delivery_id in channels:
                self._throttle(channels[delivery_id])
            started = time_module.monotonic()
            found, ready = self._prepare([delivery_id], self.now())
            outcomes.update(found)
            outcomes.update(self._send_ready(ready, started))
        return outcomes

    def _send_ready(self, ready: list[_Ready], checked: float) -> dict[int, Outcome]:
        """Send checked messages in order. `checked` is the monotonic instant before the check
        that allowed them; none goes more than GATE_MAX_AGE after its check."""
        outcomes: dict[int, Outcome] = {}
        started = checked
        while ready:
            if time_module.monotonic() - started > BATCH_MAX_SECONDS:
                # a slow provider: leave the rest to another worker rather than hold them
                outcomes.update(self._give_back(ready, "deferred", "batch_time", None, self.now()))
                break
            if time_module.monotonic() - checked > GATE_MAX_AGE:
                # sending fell behind the check: judge what is left again before it goes
                checked = time_module.monotonic()
                stopped, ready = self._recheck_ready(ready, self.now())
                outcomes.update(stopped)
                if ready and time_module.monotonic() - checked > GATE_MAX_AGE:
                    # the check itself took too long to vouch for anything: nothing goes on it
                    outcomes.update(self._give_back(ready, "deferred", "recheck_slow", None, self.now()))
                    break
                continue
            item = ready.pop(0)
            outcome = self._send(item)
            outcomes[item.message.delivery_id] = outcome
            if outcome.reason == "channel_account":
                # the provider refuses the account: the rest on that channel would fail alike
                held = [r for r in ready if r.message.channel == item.message.channel]
                ready = [r for r in ready if r.message.channel != item.message.channel]
                outcomes.update(self._give_back(held, "deferred", "channel_account", outcome.detail,
                                                self.now() + ACCOUNT_RETRY))
        return outcomes

    def _send(self, item: _Ready) -> Outcome:
        lease, message = item.lease, item.message
        delivery_id = message.delivery_id
        try:
            receipt = self.adapter(message.channel).send(message)  # the duplicate window: see the docstring
        except TransientChannelError as exc:
            return self._transient(delivery_id, lease, "transient", str(exc), exc.retry_after_s)
        except ChannelAccountError as exc:
            # the account or its set-up is refused: every message would fail alike, so hold them
            # (deferred, retried slowly) rather than fail greetings that a fixed password would send
            return self._transient(delivery_id, lease, "channel_account", str(exc), ACCOUNT_RETRY.total_seconds())
        except PermanentChannelError as exc:
            now = self.now()
            with self.db.session() as session:
                if exc.address_invalid:  # a hard bounce: never try this address again
                    mark_undeliverable(session, message.to, message.channel,
                                       f"{exc.adapter} {exc.provider_code or exc.status_code}: {exc.message}", now)
            _finish(self.db, delivery_id, lease, now, status="failed", reason="permanent", detail=str(exc), **_CALLED)
            return Outcome("failed", "permanent", str(exc))
        self._record_sent(delivery_id, lease, receipt)
        return Outcome("sent")

    def _record_sent(self, delivery_id: int, lease: datetime, receipt: Receipt) -> None:
        """Mark the message sent, committed (durably) before this thread sends the next."""
        # sent_at is on the engine's clock, the one consent and windows were judged by. A provider
        # id longer than the column would fail the mark after every send, and the message would go
        # again each time its lease ran out: its start is kept (a delivery report naming the whole
        # id then finds nothing, the lesser harm)
        self._marks.record({"delivery": delivery_id, "lease": lease, "now": self.now(),
                            "provider": receipt.provider_id[:_PROVIDER_ID_MAX], "parts": receipt.segments})

    def _transient(self, delivery_id: int, lease: datetime, reason: str, detail: str,
                   retry_after_s: float | None) -> Outcome:
        """Defer with exponential backoff (or the provider's hint); fail after MAX_ATTEMPTS."""
        now = self.now()
        with self.db.session() as session:
            attempts = (session.scalar(select(Delivery.attempts).where(Delivery.id == delivery_id)) or 0) + 1
        if attempts >= MAX_ATTEMPTS:
            _finish(self.db, delivery_id, lease, now, status="failed", reason=reason,
                    detail=f"{detail} (gave up after {attempts} attempts)", **_CALLED)
            return Outcome("failed", reason, detail)
        delay = min(RETRY_BASE * 2 ** (attempts - 1), RETRY_MAX)
        if retry_after_s:
            delay = max(delay, timedelta(seconds=retry_after_s))
        _finish(self.db, delivery_id, lease, now, status="deferred", reason=reason, detail=detail,
                next_attempt_at=now + delay, **_CALLED)
        return Outcome("deferred", reason, detail)

    def _give_back(self, items: list[_Ready], status: str, reason: str | None, detail: str | None,
                   retry_at: datetime) -> dict[int, Outcome]:
        """Release claims on messages never handed to the adapter."""
        if items:
            with self.db.session() as session:
                session.execute(_FINISH.values(status=status, reason=reason, detail=detail, next_attempt_at=retry_at,
                                               lease_until=None, updated_at=self.now()),
                                [{"delivery": item.message.delivery_id, "lease": item.lease} for item in items])
        return {item.message.delivery_id: Outcome(status, reason, detail) for item in items}

    def _load(self, session: Any, deliveries: list[Any], now: datetime, writes: _Writes
              ) -> tuple[list[Any], dict[int, Any], dict[int, spec.Campaign], dict[int, Outcome]]:
        """The deliveries' contacts and parsed campaigns, by id, in two queries. A campaign that
        cannot be read fails its own deliveries (recorded, returned by id), not the whole batch."""
        # rows, not ORM objects: they are only read, and loading objects was a third of this
        contacts = {c.id: c for c in session.connection().execute(
            select(_CONTACTS).where(_CONTACTS.c.id.in_({d.contact_id for d in deliveries})))}
        campaigns: dict[int, spec.Campaign] = {}
        broken: dict[int, str] = {}
        for row in session.scalars(select(CampaignRow).where(CampaignRow.id.in_({d.campaign_id for d in deliveries}))):
            try:
                campaigns[row.id] = self._campaign(row)
            except Exception as exc:  # an unreadable stored spec is that campaign's fault, not the batch's
                broken[row.id] = f"the stored campaign cannot be read: {exc}"
        failed = {d.id: writes.stop(d, now, "failed", "campaign", broken[d.campaign_id])
                  for d in deliveries if d.campaign_id in broken}
        return [d for d in deliveries if d.id not in failed], contacts, campaigns, failed

    def _recheck_ready(self, ready: list[_Ready], now: datetime) -> tuple[dict[int, Outcome], list[_Ready]]:
        """Judge claimed, rendered messages again at `now`, in one transaction that first renews
        their lease (fenced by the one they hold, so a message whose lease was lost is dropped,
        neither sent nor recorded): those still allowed to the same address stay ready, with the
        new lease; the others are stopped as the first check would have stopped them."""
        outcomes: dict[int, Outcome] = {}
        by_id = {item.message.delivery_id: item for item in ready}
        lease = now + LEASE
        writes = _Writes()
        with self.db.session(durable=False) as session:
            connection = session.connection()
            held: list[Any] = []
            for old in sorted({item.lease for item in ready}):
                held += connection.execute(update(_DELIVERIES).where(
                    _DELIVERIES.c.id.in_([i for i, item in by_id.items() if item.lease == old]),
                    _DELIVERIES.c.status == "sending", _DELIVERIES.c.lease_until == old)
                    .values(lease_until=lease, updated_at=now).returning(*_DELIVERIES.c)).all()
            deliveries, contacts, campaigns, failed = self._load(session, sorted(held, key=lambda d: d.id), now, writes)
            outcomes.update(failed)
            verdicts = recheck(session, self.settings, deliveries, contacts, campaigns, now)
            still: list[_Ready] = []
            for delivery in deliveries:
                verdict, item = verdicts[delivery.id], by_id[delivery.id]
                if isinstance(verdict, Stop) or verdict.recipient != item.message.to:
                    stop = verdict if isinstance(verdict, Stop) else Stop("deferred", "recheck", now)
                    detail = None if isinstance(verdict, Stop) else "the address changed before sending"
                    outcomes[delivery.id] = writes.stop(delivery, now, stop.status, stop.reason, detail, stop.retry_at,
                                                        unbind=True)
                else:
                    writes.bind(delivery, lease, verdict.recipient, verdict.consent_event_id, verdict.basis)
                    still.append(_Ready(lease, item.message))
            writes.write(session)
        return outcomes, still

    def _prepare(self, ids: list[int], now: datetime) -> tuple[dict[int, Outcome], list[_Ready]]:
        """Claim, re-check consent, cap and window in one transaction, recording every outcome that
        stops a send; then render. Returns those outcomes and the messages to send, in id order.

        The transaction's commit need not wait for the disk (PostgreSQL): if the database loses
        it in a crash, the deliveries are as they were before the claim and are simply taken
        again; a stopping outcome (suppressed, deferred) is decided again from durable evidence.
        Rendering comes after the commit: on SQLite the transaction holds the one write lock, and
        every other thread's claim and `sent` mark would wait for a whole batch's templates.
        """
        outcomes: dict[int, Outcome] = {}
        allowed: list[tuple[Any, Any, spec.Campaign, dict[str, Any] | None, str]] = []
        writes = _Writes()
        with self.db.session(durable=False) as session:
            deliveries = _claim(session, ids, now)
            if not deliveries:
                return outcomes, []
            deliveries, contacts, campaigns, outcomes = self._load(session, deliveries, now, writes)
            verdicts = recheck(session, self.settings, deliveries, contacts, campaigns, now)
            refs = {d.event_ref for d in deliveries if d.event_ref is not None and isinstance(verdicts[d.id], Allowed)}
            events = dict(session.connection().execute(select(ContactEvent.event_id, ContactEvent.attributes)
                                                       .where(ContactEvent.event_id.in_(refs))).all()) if refs else {}
            for delivery in deliveries:
                verdict = verdicts[delivery.id]
                if isinstance(verdict, Stop):
                    # a suppressed delivery rests on no consent: the one planned for it did not hold
                    outcomes[delivery.id] = writes.stop(delivery, now, verdict.status, verdict.reason,
                                                        retry_at=verdict.retry_at,
                                                        unbind=verdict.status == "suppressed")
                    continue
                # a transactional message keeps what scheduling recorded: it rests on no consent
                proof = (verdict.consent_event_id, verdict.basis) if delivery.commercial \
                    else (delivery.consent_event_id, delivery.basis)
                writes.bind(delivery, delivery.lease_until, verdict.recipient, *proof)
                event = None if delivery.event_ref is None else dict(events.get(delivery.event_ref) or {})
                allowed.append((delivery, contacts[delivery.contact_id], campaigns[delivery.campaign_id], event,
                                verdict.recipient))
            writes.write(session)
        ready: list[_Ready] = []
        unrenderable: dict[int, tuple[datetime, str, str]] = {}
        for delivery, contact, campaign, event, recipient in allowed:
            try:
                ready.append(_Ready(delivery.lease_until, self._message(delivery, contact, campaign, event, recipient)))
            except _Unrenderable as exc:
                unrenderable[delivery.id] = (delivery.lease_until, exc.reason, exc.detail)
        if unrenderable:
            with self.db.session() as session:
                session.execute(_FINISH.values(status="failed", reason=bindparam("reason"), detail=bindparam("detail"),
                                               next_attempt_at=None, lease_until=None, updated_at=now),
                                [{"delivery": i, "lease": lease, "reason": reason, "detail": detail}
                                 for i, (lease, reason, detail) in unrenderable.items()])
            outcomes.update({i: Outcome("failed", reason, detail) for i, (_, reason, detail) in unrenderable.items()})
        return outcomes, ready

    def _message(self, delivery: Any, contact: Any, campaign: spec.Campaign, event: dict[str, Any] | None,
                 recipient: str) -> OutgoingMessage:
        """The delivery rendered for its contact, or _Unrenderable saying why it cannot go."""
        from izin.campaigns.render import RenderError, build_context, promotion_in, render

        coupon = None
        if delivery.coupon_code:
            coupon = {"code": delivery.coupon_code, "percent": delivery.coupon_percent,
                      "expires_on": delivery.coupon_expires_on}
        url = unsubscribe_url(self.settings.web.base_url, self.secret, recipient, delivery.channel)
        fields = {"first_name": contact.first_name, "last_name": contact.last_name,
                  "external_id": contact.external_id, "email": contact.email, "phone": contact.phone,
                  "locale": contact.locale}
        context = build_context(fields, contact.attributes, coupon, event, campaign, self.settings, url)
        adapter = self.adapter(delivery.channel)
        try:
            rendered = render(campaign, delivery.channel, context, self.settings, contact.locale,
                              max_segments=getattr(adapter, "max_segments", 7) or 7)
        except RenderError as exc:
            raise _Unrenderable("template", str(exc)) from None
        except Exception as exc:  # whatever else rendering raises fails this delivery, not the batch
            raise _Unrenderable("template", f"{type(exc).__name__}: {exc}") from None
        if not delivery.commercial:
            # validation saw a sample; the real text (attributes, event data) is checked too
            promotion = promotion_in(rendered.text or "") or promotion_in(rendered.subject or "")
            if promotion:
                raise _Unrenderable("promotion", f"a transactional message may not carry promotions: '{promotion}'")
        return OutgoingMessage(
            delivery_id=delivery.id, channel=delivery.channel, to=recipient, commercial=delivery.commercial,
            recipient_type=contact.recipient_type, subject=rendered.subject, html=rendered.html,
            text=rendered.text, from_name=self.settings.sender.name or None,
            list_unsubscribe_url=url if delivery.commercial and delivery.channel == "email" else None,
            sender=self.settings.sender.sms_header or None,
            sms_text=rendered.text if delivery.channel == "sms" else None,
            encoding=rendered.encoding, segments=rendered.segments)


class _Unrenderable(Exception):
    """A delivery whose message cannot be made: it fails with this reason and detail."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail
