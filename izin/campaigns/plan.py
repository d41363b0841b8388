"""Planning: who is due at an instant, on which channel, when, and why everyone else is not.

`plan_campaign` is the dry run and the first half of scheduling: it reads, and writes nothing but
the campaign's start. The trigger and the audience compile into one SQL query; consent comes from
the current-state table in chunked look-ups; frequency caps from one grouped count.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import case, func, or_, select, tuple_
from sqlalchemy.orm import Session

from izin.campaigns import spec
from izin.campaigns.audience import birthday_filter, compile_audience
from izin.campaigns.models import Campaign as CampaignRow
from izin.campaigns.models import Delivery
from izin.campaigns.triggers import ONCE_KEY, birthday_due, follow_up_due, local_days, once_due
from izin.campaigns.window import in_window, next_open
from izin.clock import iso_utc
from izin.config import Settings
from izin.db import upsert_insert
from izin.consent.bounces import undeliverable_set
from izin.consent.gate import IYS_PENDING, NO_ADDRESS, NO_CONSENT, Decision, may_send_many
from izin.consent.models import Contact, ContactEvent

#: every reason a contact can be left out, in the order reports show them
SKIP_REASONS = ("no_consent", "no_address", "frequency_cap", "already_sent", "not_in_audience")
#: with [iys] require_accepted: an ONAY on record that İYS has not accepted yet (listed only in strict mode)
IYS_SKIP_REASON = IYS_PENDING
#: deliveries that count toward a frequency cap, by status
_CAP_STATUSES = ("scheduled", "sending", "sent")
_CHUNK = 1_000


@dataclass
class Candidate:
    """A contact the trigger makes due, before consent and caps."""

    contact: Contact
    occurrence: str
    due_at: datetime
    event_ref: str | None = None
    event_attributes: dict[str, Any] | None = None


@dataclass
class PlannedDelivery:
    contact_id: int
    external_id: str
    channel: str
    recipient: str
    occurrence: str
    due_at: datetime
    timezone: str
    #: 'scheduled', or 'deferred' when due outside the send window
    status: str
    reason: str | None
    next_attempt_at: datetime | None
    consent_event_id: int | None
    basis: str
    event_ref: str | None = None
    event_attributes: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        local = self.due_at.astimezone(ZoneInfo(self.timezone))
        document: dict[str, Any] = {
            "contact": self.external_id, "channel": self.channel, "recipient": self.recipient,
            "occurrence": self.occurrence, "send_at": iso_utc(self.due_at).replace(".000000", ""),
            "send_at_local": local.isoformat(timespec="minutes"), "timezone": self.timezone,
            "status": self.status, "basis": self.basis, "consent_event_id": self.consent_event_id,
        }
        if self.status == "deferred":
            document["reason"] = self.reason
            document["next_attempt_at"] = iso_utc(self.next_attempt_at).replace(".000000", "") \
                if self.next_attempt_at else None
        return document


@dataclass
class Plan:
    campaign: str
    at: datetime
    deliveries: list[PlannedDelivery] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)
    #: over a frequency cap: not in `deliveries`, but scheduling stores them deferred until the cap frees
    capped: list[PlannedDelivery] = field(default_factory=list)
    #: strict İYS mode: an ONAY counts only once İYS accepted it; others are skipped as iys_pending
    strict_iys: bool = False

    @property
    def reasons(self) -> tuple[str, ...]:
        """The skip reasons this plan reports: SKIP_REASONS, plus iys_pending in strict İYS mode."""
        return SKIP_REASONS + (IYS_SKIP_REASON,) if self.strict_iys or self.skipped.get(IYS_SKIP_REASON) \
            else SKIP_REASONS

    def as_dict(self) -> dict[str, Any]:
        return {"campaign": self.campaign, "at": iso_utc(self.at).replace(".000000", ""),
                "deliveries": [d.as_dict() for d in self.deliveries],
                "skipped": {reason: self.skipped.get(reason, 0) for reason in self.reasons}}


def campaign_start(session: Session, name: str, at: datetime) -> CampaignRow:
    """The campaign's row, recording its start the first time any plan, schedule or run sees it."""
    row = session.scalar(select(CampaignRow).where(CampaignRow.name == name))
    if row is None:
        # two schedulers may meet a new campaign at once: the first insert wins, both read it
        session.execute(upsert_insert(session)(CampaignRow).values(name=name, started_at=at).on_conflict_do_nothing(
            index_elements=["name"]))
        row = session.scalar(select(CampaignRow).where(CampaignRow.name == name))
    return row


def _tz(contact: Contact, policy_tz: str) -> ZoneInfo:
    return ZoneInfo(contact.timezone or policy_tz)


def _candidates(session: Session, campaign: spec.Campaign, started_at: datetime, settings: Settings,
                at: datetime) -> tuple[list[Candidate], int]:
    """Contacts the trigger makes due and in the audience, and how many due ones the audience left out."""
    audience = compile_audience(campaign.audience, at)
    in_audience = case((audience, True), else_=False).label("in_audience")
    policy_tz = settings.policy.timezone
    trigger = campaign.trigger
    found: list[Candidate] = []
    left_out = 0
    if isinstance(trigger, spec.BirthdayTrigger):
        days = local_days(at)
        query = select(Contact, in_audience).where(
            or_(*(birthday_filter(month, day, include_feb29=False) for month, day in sorted(days))))
        for contact, member in session.execute(query):
            due = birthday_due(contact.birthday, _tz(contact, policy_tz), trigger.send_time, at)
            if due is None:
                continue
            if not member:
                left_out += 1
                continue
            found.append(Candidate(contact, due[0], due[1]))
    elif isinstance(trigger, spec.OnceTrigger):
        if once_due(trigger.at, ZoneInfo(policy_tz), at):
            for contact, member in session.execute(select(Contact, in_audience).execution_options(yield_per=_CHUNK)):
                if member:
                    found.append(Candidate(contact, ONCE_KEY, trigger.at))
                else:
                    left_out += 1
    else:
        assert isinstance(trigger, spec.AfterEventTrigger)
        query = (select(Contact, ContactEvent, in_audience).join(ContactEvent, ContactEvent.contact_id == Contact.id)
                 .where(ContactEvent.name == trigger.event, ContactEvent.occurred_at <= at - trigger.delay))
        if not trigger.backfill:
            query = query.where(ContactEvent.occurred_at >= started_at)
        for contact, event, member in session.execute(query.order_by(ContactEvent.occurred_at, ContactEvent.id)):
            due = follow_up_due(event.occurred_at, trigger.delay, trigger.send_time, _tz(contact, policy_tz))
            if due > at:
                continue
            if not member:
                left_out += 1
                continue
            found.append(Candidate(contact, event.event_id, due, event.event_id, dict(event.attributes or {})))
    return found, left_out


def _existing(session: Session, campaign_id: int, candidates: list[Candidate]) -> set[tuple[int, str]]:
    keys = [(c.contact.id, c.occurrence) for c in candidates]
    existing: set[tuple[int, str]] = set()
    for start in range(0, len(keys), _CHUNK):
        chunk = keys[start:start + _CHUNK]
        existing.update(session.execute(select(Delivery.contact_id, Delivery.occurrence).where(
            Delivery.campaign_id == campaign_id,
            tuple_(Delivery.contact_id, Delivery.occurrence).in_(chunk))))
    return existing


def cap_counts(session: Session, contact_ids: list[int], since: datetime, at: datetime,
               campaign_id: int | None = None, statuses: tuple[str, ...] = _CAP_STATUSES,
               exclude_id: int | None = None) -> Counter[int]:
    """Commercial deliveries per contact that count toward a cap in (since, at]."""
    counts: Counter[int] = Counter()
    moment = func.coalesce(Delivery.sent_at, Delivery.due_at)
    for start in range(0, len(contact_ids), _CHUNK):
        query = (select(Delivery.contact_id, func.count()).where(
            Delivery.contact_id.in_(contact_ids[start:start + _CHUNK]), Delivery.commercial.is_(True),
            Delivery.status.in_(statuses), moment > since, moment <= at).group_by(Delivery.contact_id))
        if exclude_id is not None:
            query = query.where(Delivery.id != exclude_id)
        if campaign_id is not None:
            query = query.where(Delivery.campaign_id == campaign_id)
        counts.update({contact_id: n for contact_id, n in session.execute(query)})
    return counts


def plan_campaign(session: Session, campaign: spec.Campaign, settings: Settings, at: datetime) -> Plan:
    """Everything `campaign run --at` would create now, and counts of who is left out and why."""
    row = campaign_start(session, campaign.name, at)
    strict = settings.iys is not None and settings.iys.require_accepted
    plan = Plan(campaign.name, at, strict_iys=strict)
    candidates, plan.skipped["not_in_audience"] = _candidates(session, campaign, row.started_at, settings, at)
    existing = _existing(session, row.id, candidates)
    fresh = [c for c in candidates if (c.contact.id, c.occurrence) not in existing]
    plan.skipped["already_sent"] = len(candidates) - len(fresh)
    commercial = campaign.purpose == "commercial"
    contacts = list({c.contact.id: c.contact for c in fresh}.values())
    decisions = {channel: _decisions(session, contacts, channel, at, commercial, strict)
                 for channel in campaign.channels}
    caps = caps_for(campaign, settings, row.id) if commercial else []
    counts = [cap_counts(session, [c.id for c in contacts], at - period, at, campaign_id)
              for _count, period, campaign_id in caps]
    start, end = settings.policy.window_local
    for candidate in fresh:
        contact = candidate.contact
        chosen = next((decisions[ch][contact.id] for ch in campaign.channels if decisions[ch][contact.id].allowed), None)
        if chosen is None:
            reasons = {decisions[ch][contact.id].reason for ch in campaign.channels}
            plan.skipped[NO_ADDRESS if reasons == {NO_ADDRESS} else IYS_PENDING if IYS_PENDING in reasons
                         else NO_CONSENT] += 1
            continue
        tz = _tz(contact, settings.policy.timezone)
        due = candidate.due_at
        planned = PlannedDelivery(
            contact_id=contact.id, external_id=contact.external_id, channel=chosen.channel,
            recipient=chosen.recipient or "", occurrence=candidate.occurrence, due_at=due,
            timezone=tz.key, status="scheduled", reason=None, next_attempt_at=None,
            consent_event_id=chosen.event_id, basis=chosen.basis or "transactional",
            event_ref=candidate.event_ref, event_attributes=candidate.event_attributes)
        over = [cap for cap, counted in zip(caps, counts) if counted[contact.id] >= cap[0]]
        if over:
            plan.skipped["frequency_cap"] += 1
            planned.status, planned.reason = "deferred", "frequency_cap"
            planned.next_attempt_at = cap_release(session, contact.id, over, at)
            plan.capped.append(planned)
            continue
        for counted in counts:
            counted[contact.id] += 1  # later occurrences in this same plan count too
        if not in_window(max(due, at), tz, start, end):
            planned.status, planned.reason = "deferred", "send_window"
            planned.next_attempt_at = next_open(max(due, at), tz, start, end)
        plan.deliveries.append(planned)
    return plan


def cap_release(session: Session, contact_id: int, caps: list[tuple[int, timedelta, int | None]], at: datetime,
                statuses: tuple[str, ...] = _CAP_STATUSES) -> datetime:
    """The first instant at which every cap in `caps` has room for one more message."""
    release = at
    moment = func.coalesce(Delivery.sent_at, Delivery.due_at)
    for count, period, campaign_id in caps:
        query = (select(moment).where(Delivery.contact_id == contact_id, Delivery.commercial.is_(True),
                                      Delivery.status.in_(statuses), moment > at - period, moment <= at)
                 .order_by(moment.desc()).limit(count))
        if campaign_id is not None:
            query = query.where(Delivery.campaign_id == campaign_id)
        moments = list(session.scalars(query))
        if len(moments) >= count:
            release = max(release, moments[count - 1] + period)
    return release


def _decisions(session: Session, contacts: list[Contact], channel: str, at: datetime,
               commercial: bool, strict_iys: bool = False) -> dict[int, Decision]:
    decisions = may_send_many(session, contacts, channel, at, require_iys_accepted=strict_iys and commercial)
    if not commercial:
        # transactional: no consent needed, only an address that can take the channel
        decisions = {cid: d if d.reason == NO_ADDRESS else Decision(True, channel, d.recipient, basis="transactional")
                     for cid, d in decisions.items()}
    # an address that bounced for good is no address at all
    bounced = undeliverable_set(session, [d.recipient for d in decisions.values() if d.allowed and d.recipient],
                                channel)
    return {cid: Decision(False, channel, d.recipient, reason=NO_ADDRESS) if d.recipient in bounced and d.allowed
            else d for cid, d in decisions.items()}


def caps_for(campaign: spec.Campaign, settings: Settings, campaign_id: int) -> list[tuple[int, timedelta, int | None]]:
    """(count, period, campaign id, or None for the global cap across all commercial campaigns)."""
    global_cap = spec.parse_cap(settings.policy.frequency_cap)
    caps: list[tuple[int, timedelta, int | None]] = [(global_cap.count, global_cap.period, None)]
    if campaign.limits and campaign.limits.frequency_cap:
        caps.append((campaign.limits.frequency_cap.count, campaign.limits.frequency_cap.period, campaign_id))
    return caps
