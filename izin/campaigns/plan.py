"""Planning: who is due at an instant, on which channel, when, and why everyone else is not.

`plan_campaign` is the dry run and the first half of scheduling: it reads, and writes nothing but
the campaign's start. The trigger and the audience compile into one SQL query, read in rounds of
_CHUNK contacts (a whole-base blast by contact-id ranges, so memory holds one round); per round,
consent comes from the current-state table, caps from one grouped count and existing deliveries
from one look-up, each a single query.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, case, func, or_, select
from sqlalchemy.orm import Session

from izin.campaigns import spec
from izin.campaigns.audience import birthday_filter, compile_audience
from izin.campaigns.models import Campaign as CampaignRow
from izin.campaigns.models import Delivery
from izin.campaigns.triggers import ONCE_KEY, birthday_due, follow_up_due, local_days, once_due
from izin.campaigns.window import in_window, next_open
from izin.clock import iso_utc
from izin.config import Settings
from izin.db import one_of, upsert_insert
from izin.consent.bounces import undeliverable_set
from izin.consent.gate import IYS_PENDING, NO_ADDRESS, NO_CONSENT, Decision, may_send_many
from izin.consent.models import Contact, ContactEvent

#: every reason a contact can be left out, in the order reports show them
SKIP_REASONS = ("no_consent", "no_address", "frequency_cap", "already_sent", "not_in_audience")
#: with [iys] require_accepted: an ONAY on record that İYS has not accepted yet (listed only in strict mode)
IYS_SKIP_REASON = IYS_PENDING
#: deliveries that count toward a frequency cap, by status
_CAP_STATUSES = ("scheduled", "sending", "sent")
#: contacts planned per round; each round costs a handful of queries whatever its size
_CHUNK = 5_000
#: what planning reads of a contact: no attributes (templates are rendered by the worker)
_CONTACT_COLUMNS = (Contact.id, Contact.external_id, Contact.email, Contact.phone, Contact.phone_mobile,
                    Contact.timezone, Contact.recipient_type)
#: when a delivery counts toward a cap: when it was sent, else when it is due
_MOMENT = func.coalesce(Delivery.sent_at, Delivery.due_at)
#: receives each round's deliveries and capped deliveries when scheduling streams a plan
RoundSink = Callable[[list["PlannedDelivery"], list["PlannedDelivery"]], None]


@dataclass(slots=True)
class Candidate:
    """A contact the trigger makes due, before consent and caps (`contact` is a row of _CONTACT_COLUMNS)."""

    contact: Any
    occurrence: str
    due_at: datetime
    event_ref: str | None = None
    event_attributes: dict[str, Any] | None = None


@dataclass(slots=True)
class _Round:
    """The candidates of a set of contacts, planned together in a handful of queries.

    Every candidate of a contact is in the same round, so caps counted per round are complete.
    `id_range` (lower bound exclusive, upper inclusive) says the round is every audience member in
    that contact-id range: look-ups by contact then read the range instead of listing thousands of
    ids (and on SQLite, look-ups by address join contacts on it).
    """

    candidates: list[Candidate]
    id_range: tuple[int, int] | None = None

    def where(self, column: Any) -> list[ColumnElement[bool]]:
        """Conditions that restrict a contact-id column to this round's contacts."""
        if self.id_range is not None:
            return [column > self.id_range[0], column <= self.id_range[1]]
        return [column.in_(sorted({c.contact.id for c in self.candidates}))]


@dataclass(slots=True)
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
    #: deliveries planned, also when they were streamed to a RoundSink rather than kept
    planned: int = 0

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


def _tz(contact: Any, policy_tz: str) -> ZoneInfo:
    return ZoneInfo(contact.timezone or policy_tz)


def _rounds(session: Session, campaign: spec.Campaign, started_at: datetime, settings: Settings, at: datetime,
            skipped: Counter[str]) -> Iterator[_Round]:
    """The candidates the trigger makes due and the audience keeps, round by round; counts in
    `skipped["not_in_audience"]` the due ones the audience left out."""
    audience = compile_audience(campaign.audience, at)
    in_audience = case((audience, True), else_=False).label("in_audience")
    policy_tz = settings.policy.timezone
    trigger = campaign.trigger
    if isinstance(trigger, spec.OnceTrigger):
        if not once_due(trigger.at, ZoneInfo(policy_tz), at):
            return
        # the whole base, by id ranges: memory holds one round, however large the base
        last = 0
        while True:
            rows = session.connection().execute(select(*_CONTACT_COLUMNS, in_audience).where(Contact.id > last)
                                                .order_by(Contact.id).limit(_CHUNK)).all()
            if not rows:
                return
            members = [Candidate(row, ONCE_KEY, trigger.at) for row in rows if row.in_audience]
            skipped["not_in_audience"] += len(rows) - len(members)
            yield _Round(members, (last, rows[-1].id))
            last = rows[-1].id
    found: list[Candidate] = []
    if isinstance(trigger, spec.BirthdayTrigger):
        for row in session.execute(birthday_query(in_audience, at)):
            due = birthday_due(row.birthday, _tz(row, policy_tz), trigger.send_time, at)
            if due is None:
                continue
            if not row.in_audience:
                skipped["not_in_audience"] += 1
                continue
            found.append(Candidate(row, due[0], due[1]))
    else:
        assert isinstance(trigger, spec.AfterEventTrigger)
        query = (select(*_CONTACT_COLUMNS, in_audience, ContactEvent.event_id, ContactEvent.occurred_at,
                        ContactEvent.attributes.label("event_attributes"))
                 .join(ContactEvent, ContactEvent.contact_id == Contact.id)
                 .where(ContactEvent.name == trigger.event, ContactEvent.occurred_at <= at - trigger.delay))
        if not trigger.backfill:
            query = query.where(ContactEvent.occurred_at >= started_at)
        for row in session.execute(query.order_by(ContactEvent.occurred_at, ContactEvent.id)):
            due = follow_up_due(row.occurred_at, trigger.delay, trigger.send_time, _tz(row, policy_tz))
            if due > at:
                continue
            if not row.in_audience:
                skipped["not_in_audience"] += 1
                continue
            found.append(Candidate(row, row.event_id, due, row.event_id, dict(row.event_attributes or {})))
    # a contact's candidates stay together (caps count across them), in trigger order within a round
    position: dict[int, int] = {}
    for candidate in found:
        position.setdefault(candidate.contact.id, len(position))
    rounds: dict[int, list[Candidate]] = {}
    for candidate in found:
        rounds.setdefault(position[candidate.contact.id] // _CHUNK, []).append(candidate)
    for index in sorted(rounds):
        yield _Round(rounds[index])


def birthday_query(in_audience: Any, at: datetime) -> Any:
    """The contacts born on a day that is `at`'s date somewhere: read through the (month, day) index."""
    return select(*_CONTACT_COLUMNS, Contact.birthday, in_audience).where(
        or_(*(birthday_filter(month, day, include_feb29=False) for month, day in sorted(local_days(at)))))


def _existing(session: Session, campaign_id: int, round_: _Round) -> set[tuple[int, str]]:
    """(contact, occurrence) pairs of the round that the campaign has a delivery for already."""
    return {(contact_id, occurrence) for contact_id, occurrence in session.connection().execute(
        select(Delivery.contact_id, Delivery.occurrence).where(
            Delivery.campaign_id == campaign_id, *round_.where(Delivery.contact_id)))}


def _counted(since: datetime, at: datetime, statuses: tuple[str, ...], campaign_id: int | None,
             exclude_ids: Collection[int]) -> list[ColumnElement[bool]]:
    """The deliveries that count toward a cap in (since, at]: commercial, in `statuses`, of the
    campaign (None: of any), less `exclude_ids`."""
    # the contacts drive these queries, never the status index: its statistics go stale within a
    # send run (rows move from scheduled to sent), and both databases then walk every sent row
    # (a worker's count took 20 ms instead of 0.3); an expression is not indexable
    conditions = [Delivery.commercial.is_(True), (Delivery.status + "").in_(statuses), _MOMENT > since,
                  _MOMENT <= at]
    if campaign_id is not None:
        conditions.append(Delivery.campaign_id == campaign_id)
    if exclude_ids:
        conditions.append(Delivery.id.not_in(list(exclude_ids)))
    return conditions


def cap_counts(session: Session, contact_ids: list[int], since: datetime, at: datetime,
               campaign_id: int | None = None, statuses: tuple[str, ...] = _CAP_STATUSES,
               round_: _Round | None = None, exclude_ids: Collection[int] = ()) -> Counter[int]:
    """Commercial deliveries per contact that count toward a cap in (since, at]; with `round_`,
    for the round's contacts (`contact_ids` is then not read); `exclude_ids` are not counted."""
    counts: Counter[int] = Counter()
    selections = [round_.where(Delivery.contact_id)] if round_ is not None else [
        [Delivery.contact_id.in_(contact_ids[start:start + _CHUNK])] for start in range(0, len(contact_ids), _CHUNK)]
    for selection in selections:
        query = (select(Delivery.contact_id, func.count())
                 .where(*selection, *_counted(since, at, statuses, campaign_id, exclude_ids))
                 .group_by(Delivery.contact_id))
        counts.update({contact_id: n for contact_id, n in session.execute(query)})
    return counts


def plan_campaign(session: Session, campaign: spec.Campaign, settings: Settings, at: datetime,
                  on_round: RoundSink | None = None) -> Plan:
    """Everything `campaign run --at` would create now, and counts of who is left out and why.

    With `on_round`, each round's deliveries go to it instead of into the plan (scheduling inserts
    them as they come, so memory holds one round whatever the size of the base).
    """
    row = campaign_start(session, campaign.name, at)
    strict = settings.iys is not None and settings.iys.require_accepted
    plan = Plan(campaign.name, at, strict_iys=strict)
    plan.skipped["not_in_audience"] = 0
    commercial = campaign.purpose == "commercial"
    caps = caps_for(campaign, settings, row.id) if commercial else []
    windows: dict[tuple[datetime, str], datetime | None] = {}
    for round_ in _rounds(session, campaign, row.started_at, settings, at, plan.skipped):
        deliveries, capped = _plan_round(session, plan, campaign, settings, at, row.id, round_, caps, strict, windows)
        plan.planned += len(deliveries)
        if on_round is not None:
            on_round(deliveries, capped)
        else:
            plan.deliveries.extend(deliveries)
            plan.capped.extend(capped)
    return plan


def _plan_round(session: Session, plan: Plan, campaign: spec.Campaign, settings: Settings, at: datetime,
                campaign_id: int, round_: _Round, caps: list[tuple[int, timedelta, int | None]], strict: bool,
                windows: dict[tuple[datetime, str], datetime | None]
                ) -> tuple[list[PlannedDelivery], list[PlannedDelivery]]:
    existing = _existing(session, campaign_id, round_)
    fresh = [c for c in round_.candidates if (c.contact.id, c.occurrence) not in existing]
    plan.skipped["already_sent"] += len(round_.candidates) - len(fresh)
    commercial = campaign.purpose == "commercial"
    # channels in preference order: a later channel is asked only about those the earlier ones refused
    remaining = list({c.contact.id: c.contact for c in fresh}.values())
    decisions: dict[str, dict[int, Decision]] = {}
    for index, channel in enumerate(campaign.channels):
        # the first channel asks about every contact of the round, which reading its id range
        # serves; a later one only about the few left, looked up by address
        decisions[channel] = _decisions(session, remaining, channel, at, commercial, strict,
                                        round_.where(Contact.id) if round_.id_range and index == 0 else None)
        remaining = [c for c in remaining if not decisions[channel][c.id].allowed]
    counts = [cap_counts(session, [], at - period, at, cap_campaign, round_=round_)
              for _count, period, cap_campaign in caps]
    start, end = settings.policy.window_local
    deliveries: list[PlannedDelivery] = []
    capped: list[PlannedDelivery] = []
    held: list[list[int]] = []  # for each capped delivery, the indexes of the caps that hold it
    for candidate in fresh:
        contact = candidate.contact
        chosen = next((d for ch in campaign.channels if (d := decisions[ch].get(contact.id)) and d.allowed), None)
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
        over = [index for index, (cap, counted) in enumerate(zip(caps, counts)) if counted[contact.id] >= cap[0]]
        if over:
            plan.skipped["frequency_cap"] += 1
            planned.status, planned.reason = "deferred", "frequency_cap"
            capped.append(planned)
            held.append(over)
            continue
        for counted in counts:
            counted[contact.id] += 1  # later occurrences in this same plan count too
        # the window's answer depends only on the instant and the zone: most of a round shares both
        key = (max(due, at), tz.key)
        if key not in windows:
            windows[key] = None if in_window(key[0], tz, start, end) else next_open(key[0], tz, start, end)
        if windows[key] is not None:
            planned.status, planned.reason = "deferred", "send_window"
            planned.next_attempt_at = windows[key]
        deliveries.append(planned)
    # when each capped delivery may go: per cap, one look-up for every contact it holds
    releases = [cap_releases(session, {p.contact_id for p, over in zip(capped, held) if index in over}, cap, at)
                for index, cap in enumerate(caps)]
    for planned, over in zip(capped, held):
        planned.next_attempt_at = max([at] + [releases[index].get(planned.contact_id, at) for index in over])
    return deliveries, capped


def cap_release(session: Session, contact_id: int, caps: list[tuple[int, timedelta, int | None]], at: datetime,
                statuses: tuple[str, ...] = _CAP_STATUSES, exclude_ids: Collection[int] = ()) -> datetime:
    """The first instant at which every cap in `caps` has room for one more message (`exclude_ids`
    left out of the count)."""
    return max([at] + [cap_releases(session, [contact_id], cap, at, statuses, exclude_ids).get(contact_id, at)
                       for cap in caps])


def cap_releases(session: Session, contact_ids: Collection[int], cap: tuple[int, timedelta, int | None],
                 at: datetime, statuses: tuple[str, ...] = _CAP_STATUSES,
                 exclude_ids: Collection[int] = ()) -> dict[int, datetime]:
    """For each of the contacts that `cap` holds at `at`, the first instant it has room for one more
    message: the count-th latest counted message's moment plus the period. One query per _CHUNK
    contacts (a blast to a base that the cap holds asked once per contact: 800,000 queries)."""
    count, period, campaign_id = cap
    ids = sorted(contact_ids)
    releases: dict[int, datetime] = {}
    for start in range(0, len(ids), _CHUNK):
        query = (select(Delivery.contact_id, _MOMENT)
                 .where(one_of(session, Delivery.contact_id, ids[start:start + _CHUNK]),
                        *_counted(at - period, at, statuses, campaign_id, exclude_ids))
                 .order_by(Delivery.contact_id, _MOMENT.desc()))
        seen: Counter[int] = Counter()
        for contact_id, counted_at in session.execute(query):
            seen[contact_id] += 1
            if seen[contact_id] == count:
                releases[contact_id] = counted_at + period
    return releases


def _decisions(session: Session, contacts: list[Any], channel: str, at: datetime,
               commercial: bool, strict_iys: bool, contact_where: list[ColumnElement[bool]] | None
               ) -> dict[int, Decision]:
    decisions = may_send_many(session, contacts, channel, at, require_iys_accepted=strict_iys and commercial,
                              contact_where=contact_where)
    if not commercial:
        # transactional: no consent needed, only an address that can take the channel
        decisions = {cid: d if d.reason == NO_ADDRESS else Decision(True, channel, d.recipient, basis="transactional")
                     for cid, d in decisions.items()}
    # an address that bounced for good is no address at all
    bounced = undeliverable_set(session, [d.recipient for d in decisions.values() if d.allowed and d.recipient],
                                channel, contact_where=contact_where)
    return {cid: Decision(False, channel, d.recipient, reason=NO_ADDRESS) if d.recipient in bounced and d.allowed
            else d for cid, d in decisions.items()}


def caps_for(campaign: spec.Campaign, settings: Settings, campaign_id: int) -> list[tuple[int, timedelta, int | None]]:
    """(count, period, campaign id, or None for the global cap across all commercial campaigns)."""
    global_cap = spec.parse_cap(settings.policy.frequency_cap)
    caps: list[tuple[int, timedelta, int | None]] = [(global_cap.count, global_cap.period, None)]
    if campaign.limits and campaign.limits.frequency_cap:
        caps.append((campaign.limits.frequency_cap.count, campaign.limits.frequency_cap.period, campaign_id))
    return caps
