"""Sending one delivery: claim the row, re-check consent, cap and window, render, send, record.

Invariant 2 lives here: consent is checked again right before the adapter is called, so an opt-out
recorded after scheduling wins. The claim is one conditional UPDATE, atomic on SQLite and
PostgreSQL, so two workers never both send a delivery. The only window in which a crash can
duplicate a message is the adapter call itself: a worker killed after the provider accepted the
message and before the row is marked `sent` leaves it `sending`, and once the lease runs out
another worker sends it again.
"""

from __future__ import annotations

import time as time_module
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import and_, or_, select, update
from sqlalchemy.exc import OperationalError

from izin import clock
from izin.campaigns import spec
from izin.campaigns.models import Campaign as CampaignRow
from izin.campaigns.models import Delivery
from izin.campaigns.plan import cap_count, cap_release, caps_for
from izin.campaigns.window import in_window, next_open
from izin.channels.base import OutgoingMessage, Receipt
from izin.channels.errors import ChannelAccountError, PermanentChannelError, TransientChannelError
from izin.config import Settings
from izin.consent.bounces import is_undeliverable
from izin.consent.bounces import mark as mark_undeliverable
from izin.consent.gate import IYS_PENDING, may_send, usable_address
from izin.consent.models import Contact, ContactEvent
from izin.consent.tokens import unsubscribe_url
from izin.db import Database
from izin.errors import ServiceUnavailable

#: how long a claim holds; longer than any adapter call may take
LEASE = timedelta(minutes=5)
#: attempts before a delivery that keeps meeting transient errors is failed
MAX_ATTEMPTS = 6
#: first retry delay after a transient error; doubles per attempt up to RETRY_MAX
RETRY_BASE = timedelta(seconds=30)
RETRY_MAX = timedelta(hours=1)
#: how long deliveries wait when the provider refuses the account itself (credentials, originator)
ACCOUNT_RETRY = timedelta(minutes=15)
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
        return None if _claim(session, delivery_id, now) is None else now + LEASE


def _claim(session: Any, delivery_id: int, now: datetime) -> Delivery | None:
    """The claimed delivery, loaded by the claim itself (UPDATE ... RETURNING), or None."""
    return session.scalars(update(Delivery).where(
        Delivery.id == delivery_id,
        or_(and_(Delivery.status == "scheduled", Delivery.due_at <= now),
            and_(Delivery.status == "deferred", Delivery.next_attempt_at <= now),
            and_(Delivery.status == "sending", Delivery.lease_until < now)),
    ).values(status="sending", lease_until=now + LEASE, updated_at=now).returning(Delivery),
        execution_options={"synchronize_session": False}).one_or_none()


def _finish(db: Database, delivery_id: int, lease: datetime, now: datetime, **values: Any) -> None:
    with db.session() as session:
        session.execute(update(Delivery).where(Delivery.id == delivery_id, Delivery.status == "sending",
                                               Delivery.lease_until == lease)
                        .values(lease_until=None, updated_at=now, **values))


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


def recheck(session: Any, settings: Settings, delivery: Delivery, contact: Contact, campaign: spec.Campaign,
            now: datetime) -> str | Stop:
    """The gate right before the adapter is called (invariant 2): consent, frequency cap, bounces
    and the send window, judged at `now`. Returns the address to send to, or why not.

    A commercial delivery that passes is bound to the consent event that allowed it.
    """
    if delivery.commercial:
        iys = settings.iys
        decision = may_send(session, contact, delivery.channel, now,
                            require_iys_accepted=iys is not None and iys.require_accepted)
        if decision.reason == IYS_PENDING:
            # an ONAY İYS has not accepted yet may be accepted soon: wait, do not drop
            return Stop("deferred", IYS_PENDING, now + ACCOUNT_RETRY)
        if not decision.allowed:
            withdrawn = decision.status == "RET"
            return Stop("suppressed", "consent_withdrawn" if withdrawn else decision.reason or "no_consent")
        delivery.consent_event_id, delivery.basis = decision.event_id, decision.basis
        recipient = decision.recipient
        caps = caps_for(campaign, settings, delivery.campaign_id)
        over = [cap for cap in caps if cap_count(session, contact.id, now - cap[1], now, cap[2],
                                                 _SENT_OR_SENDING, delivery.id) >= cap[0]]
        if over:
            return Stop("deferred", "frequency_cap", cap_release(session, contact.id, over, now, _SENT_OR_SENDING))
    else:
        recipient = usable_address(contact, delivery.channel)
        if recipient is None:
            return Stop("suppressed", "no_address")
    if is_undeliverable(session, recipient, delivery.channel):
        return Stop("suppressed", "undeliverable")
    tz = ZoneInfo(contact.timezone or settings.policy.timezone)
    start, end = settings.policy.window_local
    if not in_window(now, tz, start, end):
        return Stop("deferred", "send_window", next_open(now, tz, start, end))
    assert recipient is not None
    return recipient


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
        if self._limiters:
            # wait for the channel's rate before claiming, so the lease is not spent queueing
            with self.db.session() as session:
                channel = session.scalar(select(Delivery.channel).where(Delivery.id == delivery_id))
            if channel is not None:
                self._throttle(channel)
        now = self.now()
        prepared = self._prepare(delivery_id, now)
        if isinstance(prepared, Outcome):
            return prepared
        lease, message = prepared
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
            _finish(self.db, delivery_id, lease, now, status="failed", reason="permanent", detail=str(exc))
            return Outcome("failed", "permanent", str(exc))
        self._record_sent(delivery_id, lease, receipt)
        return Outcome("sent")

    def _record_sent(self, delivery_id: int, lease: datetime, receipt: Receipt) -> None:
        # the message is out: try hard to say so, or a lapsed lease would send it again
        for attempt in range(5):
            try:
                # sent_at is on the engine's clock, the one consent and windows were judged by
                now = self.now()
                _finish(self.db, delivery_id, lease, now, status="sent", sent_at=now,
                        provider_id=receipt.provider_id, segments=receipt.segments, reason=None, detail=None)
                return
            except (OperationalError, ServiceUnavailable):
                # Database.session reports a database that is down (restarting) as ServiceUnavailable
                if attempt == 4:
                    raise
                time_module.sleep(0.5 * 2 ** attempt)

    def _transient(self, delivery_id: int, lease: datetime, reason: str, detail: str,
                   retry_after_s: float | None) -> Outcome:
        """Defer with exponential backoff (or the provider's hint); fail after MAX_ATTEMPTS."""
        now = self.now()
        with self.db.session() as session:
            attempts = session.scalar(select(Delivery.attempts).where(Delivery.id == delivery_id)) or 1
        if attempts >= MAX_ATTEMPTS:
            _finish(self.db, delivery_id, lease, now, status="failed", reason=reason,
                    detail=f"{detail} (gave up after {attempts} attempts)")
            return Outcome("failed", reason, detail)
        delay = min(RETRY_BASE * 2 ** (attempts - 1), RETRY_MAX)
        if retry_after_s:
            delay = max(delay, timedelta(seconds=retry_after_s))
        _finish(self.db, delivery_id, lease, now, status="deferred", reason=reason, detail=detail,
                next_attempt_at=now + delay)
        return Outcome("deferred", reason, detail)

    def _prepare(self, delivery_id: int, now: datetime) -> tuple[datetime, OutgoingMessage] | Outcome:
        """Claim, re-check consent, cap and window, and render, in one transaction; record any
        outcome that stops the send. Returns the lease and the message to send.

        The transaction's commit need not wait for the disk (PostgreSQL): if the database loses
        it in a crash, the delivery is as it was before the claim and is simply taken again; a
        stopping outcome (suppressed, deferred) is decided again from durable evidence.
        """
        from izin.campaigns.render import RenderError, build_context, promotion_in, render

        with self.db.session(durable=False) as session:
            delivery = _claim(session, delivery_id, now)
            if delivery is None:
                return Outcome("skipped")
            lease = delivery.lease_until
            # one round trip for both rows (a join on two primary keys)
            contact, row = session.execute(select(Contact, CampaignRow).join(
                CampaignRow, CampaignRow.id == delivery.campaign_id).where(Contact.id == delivery.contact_id)).one()
            campaign = self._campaign(row)

            def stop(status: str, reason: str, detail: str | None = None, retry_at: datetime | None = None) -> Outcome:
                delivery.status, delivery.reason, delivery.detail = status, reason, detail
                delivery.next_attempt_at, delivery.lease_until, delivery.updated_at = retry_at, None, now
                return Outcome(status, reason, detail)

            checked = recheck(session, self.settings, delivery, contact, campaign, now)
            if isinstance(checked, Stop):
                return stop(checked.status, checked.reason, retry_at=checked.retry_at)
            recipient = checked
            delivery.recipient = recipient
            # attempts count calls to the provider, not deferrals by window or cap
            delivery.attempts += 1
            event = None
            if delivery.event_ref is not None:
                found = session.scalar(select(ContactEvent).where(ContactEvent.event_id == delivery.event_ref))
                event = dict(found.attributes or {}) if found else {}
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
                return stop("failed", "template", str(exc))
            if not delivery.commercial:
                # validation saw a sample; the real text (attributes, event data) is checked too
                promotion = promotion_in(rendered.text or "") or promotion_in(rendered.subject or "")
                if promotion:
                    return stop("failed", "promotion", f"a transactional message may not carry promotions: "
                                                       f"'{promotion}'")
            return lease, OutgoingMessage(
                delivery_id=delivery.id, channel=delivery.channel, to=recipient, commercial=delivery.commercial,
                recipient_type=contact.recipient_type, subject=rendered.subject, html=rendered.html,
                text=rendered.text, from_name=self.settings.sender.name or None,
                list_unsubscribe_url=url if delivery.commercial and delivery.channel == "email" else None,
                sender=self.settings.sender.sms_header or None,
                sms_text=rendered.text if delivery.channel == "sms" else None,
                encoding=rendered.encoding, segments=rendered.segments)
