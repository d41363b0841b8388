"""Helpers shared by the campaign tests: the instant they run at, small campaigns, and shortcuts
that put contacts, consents and deliveries in place through the library itself."""

from __future__ import annotations

import socket
from datetime import date
from pathlib import Path

from sqlalchemy import select

from conftest import add_contact
from izin.campaigns.models import Delivery
from izin.campaigns.schedule import schedule_campaign
from izin.campaigns.spec import parse_campaign
from izin.clock import parse_instant as T
from izin.consent.ledger import LedgerWriter
from izin.consent.models import Contact

AT = T("2026-11-24T12:00:00+03:00")

CAMPAIGN = """
name: dogum-gunu
trigger: {type: birthday, send_time: "10:00"}
channels: [sms, email]
coupon: {prefix: IYIKI, percent: 20, valid_days: 14}
content:
  sms: {text: "Iyi ki dogdun {{ contact.first_name }}! Kod: {{ coupon.code }}"}
  email: {subject: "Iyi ki dogdun", html_inline: "<p>Merhaba {{ contact.first_name }}, kod: {{ coupon.code }}</p>"}
"""


def person(db, external_id, birthday="1990-11-24", **kwargs):
    contact_id = add_contact(db, external_id, **kwargs)
    with db.session() as session:
        contact = session.get(Contact, contact_id)
        contact.first_name = external_id.title()
        contact.birthday = date.fromisoformat(birthday)
        contact.birth_month, contact.birth_day = contact.birthday.month, contact.birthday.day
    return contact_id


def consent(db, external_id, channel, status="ONAY", at="2026-01-01T10:00:00+03:00", now=None):
    with db.session() as session:
        contact = session.scalar(select(Contact).where(Contact.external_id == external_id))
        source = "HS_WEB" if status == "ONAY" else "HS_MESAJ"
        return LedgerWriter(session).record(contact, channel, status, source, T(at), now or T(at)).event.id


def schedule(db, settings, at=AT, text=CAMPAIGN):
    with db.session() as session:
        return schedule_campaign(session, parse_campaign(text), settings, at, at)


def snapshot(db):
    """(contact, status, reason, channel) of every delivery, by contact."""
    with db.session() as session:
        rows = session.execute(select(Contact.external_id, Delivery.status, Delivery.reason, Delivery.channel)
                               .join(Contact, Contact.id == Delivery.contact_id).order_by(Contact.external_id))
        return [tuple(r) for r in rows]


def outbox(settings) -> list[str]:
    folder = Path(settings.channels["sms"].url.removeprefix("outbox://"))
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


ONCE = """
name: efsane-cuma
trigger: {type: once, at: "2026-11-24T11:00:00+03:00"}
channels: [email]
content:
  email: {subject: "Efsane Cuma", html_inline: "<p>Merhaba {{ contact.first_name }}</p>"}
"""


def free_port() -> int:
    """A TCP port free on loopback right now (aiosmtpd's Controller needs one up front)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
