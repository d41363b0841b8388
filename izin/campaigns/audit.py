"""Delivery records for the audit: the export stream, and "why did this address get this message"."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from izin.campaigns.models import Campaign, Delivery
from izin.clock import iso_istanbul, iso_stored_utc, iso_utc
from izin.consent.models import IYS_TYPE, ConsentEvent, Contact
from izin.db import stored_utc
from izin.errors import NotFound

DELIVERY_FIELDS = ("kind", "id", "campaign", "contact", "channel", "recipient", "occurrence", "status", "reason",
                   "consent_event_id", "basis", "scheduled_for", "sent_at", "provider_id", "coupon_code")
PAGE_ROWS = 2_000


def _iso(value: datetime | None) -> str | None:
    return iso_utc(value) if value is not None else None


def delivery_records(session: Session, since: datetime | None = None, until: datetime | None = None,
                     contact: str | None = None) -> Iterator[dict[str, Any]]:
    """Deliveries in id order as export records; the time filter applies to when each was created."""
    d = Delivery
    # plain columns, not ORM objects: an export reads millions of rows and keeps none of them
    query = (select(d.id, Campaign.name.label("campaign"), Contact.external_id, d.channel, d.recipient,
                    d.occurrence, d.status, d.reason, d.consent_event_id, d.basis, stored_utc(d.due_at),
                    stored_utc(d.sent_at),
                    d.provider_id, d.coupon_code)
             .join(Campaign, Campaign.id == d.campaign_id).join(Contact, Contact.id == d.contact_id)
             .order_by(d.id))
    if since is not None:
        query = query.where(d.created_at >= since)
    if until is not None:
        query = query.where(d.created_at < until)
    if contact is not None:
        query = query.where(Contact.external_id == contact)
    # tuples unpacked, not rows read by name: this loop runs once per record of the whole log
    for (delivery_id, campaign, external_id, channel, recipient, occurrence, status, reason, consent_event_id,
         basis, due_at, sent_at, provider_id, coupon_code) \
            in session.connection().execute(query.execution_options(yield_per=PAGE_ROWS)):
        yield {
            "kind": "delivery", "id": delivery_id, "campaign": campaign, "contact": external_id,
            "channel": channel, "recipient": recipient, "occurrence": occurrence,
            "status": status, "reason": reason, "consent_event_id": consent_event_id,
            "basis": basis, "scheduled_for": iso_stored_utc(due_at), "sent_at": iso_stored_utc(sent_at),
            "provider_id": provider_id, "coupon_code": coupon_code,
        }


def why(session: Session, delivery_id: int) -> dict[str, Any]:
    """Everything stored about one delivery and the consent it rested on, from stored data alone."""
    row = session.execute(select(Delivery, Campaign.name, Contact.external_id)
                          .join(Campaign, Campaign.id == Delivery.campaign_id)
                          .join(Contact, Contact.id == Delivery.contact_id)
                          .where(Delivery.id == delivery_id)).first()
    if row is None:
        raise NotFound(f"no delivery {delivery_id}; `izin audit export --kind delivery` lists them")
    delivery, campaign, external_id = row
    answer: dict[str, Any] = {
        "delivery": delivery.id, "campaign": campaign, "contact": external_id, "channel": delivery.channel,
        "recipient": delivery.recipient, "occurrence": delivery.occurrence, "status": delivery.status,
        "reason": delivery.reason, "detail": delivery.detail, "basis": delivery.basis,
        "scheduled_for": _iso(delivery.due_at), "sent_at": _iso(delivery.sent_at),
        "provider_id": delivery.provider_id, "consent_event": None,
    }
    if delivery.consent_event_id is not None:
        event = session.get(ConsentEvent, delivery.consent_event_id)
        answer["consent_event"] = {
            "id": event.id, "recipient": event.recipient, "channel": event.channel,
            "iys_type": IYS_TYPE[event.channel], "status": event.status, "source": event.source,
            "recipient_type": event.recipient_type, "consent_date": iso_istanbul(event.consent_date),
            "recorded_at": iso_utc(event.recorded_at), "proof": event.proof, "hash": event.hash,
            "purged": event.purge_run_id is not None,
        }
    return answer


def explain(answer: dict[str, Any]) -> list[str]:
    """The answer of `why` as sentences for a compliance officer."""
    lines = [f"delivery {answer['delivery']}: campaign {answer['campaign']}, contact {answer['contact']}, "
             f"{answer['channel']} to {answer['recipient']}, occurrence {answer['occurrence']}",
             f"status: {answer['status']}" + (f" ({answer['reason']})" if answer["reason"] else "")
             + (f", sent at {answer['sent_at']}" if answer["sent_at"] else "")]
    event = answer["consent_event"]
    if event is not None:
        lines.append(f"consent event #{event['id']}: {event['status']} {event['channel']} ({event['iys_type']}) "
                     f"{event['recipient']}, source {event['source']}, {event['recipient_type']}, consented "
                     f"{event['consent_date']}, recorded {event['recorded_at']}")
        lines.append(f"proof: {event['proof'] or '(none recorded)'}")
        lines.append(f"hash: {event['hash']}")
    elif answer["basis"] == "tacir_exemption":
        lines.append("no consent event: sent on the TACIR exemption (law 6563 art. 6(2)): a merchant recipient "
                     "with no refusal on record")
    elif answer["basis"] == "transactional":
        lines.append("no consent event: a transactional message, which needs none and carries no promotion")
    else:
        lines.append("no consent event: nothing was sent on consent")
    return lines


__all__ = ["DELIVERY_FIELDS", "delivery_records", "why", "explain"]
