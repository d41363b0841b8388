"""Provider webhooks on the real application, on SQLite and PostgreSQL: SMS replies that opt out
(and cancel queued SMS in the same request), delivery reports, email bounces (RFC 3464 DSNs), and
the shared secret in front of all of them."""

from __future__ import annotations

import json
import logging
from datetime import date, datetime, timezone
from urllib.parse import quote_from_bytes

import pytest
from sqlalchemy import func, select

from conftest import NOW, add_contact
from izin.campaigns.models import Campaign, Delivery
from izin.campaigns.schedule import schedule_campaign
from izin.campaigns.spec import parse_campaign
from izin.clock import parse_instant as T
from izin.consent.ledger import LedgerWriter
from izin.consent.models import ConsentEvent, ConsentState, Contact, InboundMessage, UndeliverableAddress
from izin.consent.web import webhooks

AT = T(NOW)
SECRET = {"X-Izin-Webhook-Secret": "hook-secret"}
PHONE = "+905321234567"


# --- helpers -------------------------------------------------------------------------------------

def grant(db, external_id, channel, at="2026-01-01T10:00:00+03:00"):
    with db.session() as session:
        contact = session.scalar(select(Contact).where(Contact.external_id == external_id))
        return LedgerWriter(session).record(contact, channel, "ONAY", "HS_WEB", T(at), T(at)).event.id


def inbound_rows(db):
    with db.session() as session:
        return [(m.provider, m.sender, m.text, m.keyword, m.short_number, m.action, m.consent_event_id,
                 m.provider_message_id, m.received_at)
                for m in session.scalars(select(InboundMessage).order_by(InboundMessage.id))]


def events(db):
    with db.session() as session:
        return list(session.scalars(select(ConsentEvent).order_by(ConsentEvent.id)))


def sms_state(db, recipient=PHONE):
    with db.session() as session:
        return [(s.recipient_type, s.status) for s in session.scalars(
            select(ConsentState).where(ConsentState.recipient == recipient, ConsentState.channel == "sms"))]


def count(db, model):
    with db.session() as session:
        return session.scalar(select(func.count()).select_from(model))


@pytest.fixture
def ayse(db):
    """A contact with SMS consent on PHONE."""
    add_contact(db, "ayse", email="ayse@example.com", phone=PHONE)
    grant(db, "ayse", "sms")
    return db


def post_sms(web, provider, text, *, sender=PHONE, message_id="m-1", headers=SECRET):
    """One inbound SMS the way the provider posts it."""
    if provider == "generic":
        return web.post("/webhooks/sms/inbound/generic", headers=headers,
                        json={"from": sender, "text": text, "keyword": "ORNEKTIC", "to": "4609", "id": message_id})
    # Netgsm: a form with its national number form, as its inbox API names the fields
    return web.post("/webhooks/sms/inbound/netgsm", headers=headers,
                    data={"gsmno": sender.removeprefix("+"), "message": text, "shortnumber": "4609",
                          "id": message_id})


# --- inbound SMS ---------------------------------------------------------------------------------

@pytest.mark.parametrize("provider", ["generic", "netgsm"])
@pytest.mark.parametrize("text", ["ret", "İptal ORNEKTIC", "STOP", "DUR"])
def test_an_opt_out_reply_records_a_ret_with_its_proof(web, ayse, provider, text):
    db = ayse
    onay = events(db)[-1].id
    response = post_sms(web, provider, text)
    assert response.status_code == 200
    assert response.json() == {"ok": True}
    ret = events(db)[-1]
    assert ret.id == onay + 1
    assert (ret.status, ret.channel, ret.source, ret.recipient, ret.contact_ref, ret.recipient_type) == \
        ("RET", "sms", "HS_MESAJ", PHONE, "ayse", "BIREYSEL")
    assert ret.consent_date == AT and ret.recorded_at == AT
    assert ret.iys_uploadable is True  # a RET after an ONAY goes to İYS
    keyword = "ORNEKTIC" if provider == "generic" else None
    assert json.loads(ret.proof) == {"route": "sms_reply", "provider": provider, "sender": PHONE,
                                     "short_number": "4609", "keyword": keyword, "text": text, "message_id": "m-1"}
    assert sms_state(db) == [("BIREYSEL", "RET")]
    assert inbound_rows(db) == [(provider, PHONE, text, keyword, "4609", "opt_out", ret.id, f"{provider}:m-1", AT)]


@pytest.mark.parametrize("provider", ["generic", "netgsm"])
def test_other_texts_are_stored_and_ignored_or_kept_for_review(web, ayse, provider):
    db = ayse
    before = [e.id for e in events(db)]
    for i, text in enumerate(["Merhaba", "durum nedir", "STOP etmeyin mesajı gelmesin", "Retro"]):
        assert post_sms(web, provider, text, message_id=f"x{i}").json() == {"ok": True}
    assert [e.id for e in events(db)] == before
    assert sms_state(db) == [("BIREYSEL", "ONAY")]
    # a keyword in a sentence records nothing, but a person must read it (it was 'ignored' before)
    assert [(r[2], r[5], r[6]) for r in inbound_rows(db)] == [
        ("Merhaba", "ignored", None), ("durum nedir", "ignored", None),
        ("STOP etmeyin mesajı gelmesin", "needs_review", None), ("Retro", "ignored", None)]


@pytest.mark.parametrize("headers, url", [
    ({}, "/webhooks/sms/inbound/generic"),
    ({"X-Izin-Webhook-Secret": "wrong"}, "/webhooks/sms/inbound/generic"),
    ({"X-Izin-Webhook-Secret": ""}, "/webhooks/sms/inbound/generic"),
    ({}, "/webhooks/sms/inbound/generic?secret=hook-secret-not"),
    ({"X-Izin-Webhook-Secret": "HOOK-SECRET"}, "/webhooks/sms/inbound/netgsm"),
])
def test_no_secret_no_entry(web, ayse, headers, url):
    db = ayse
    before = count(db, ConsentEvent)
    response = web.post(url, headers=headers, json={"from": PHONE, "text": "RET", "id": "m-1"})
    assert response.status_code == 403
    assert response.json() == {"ok": False, "error": "forbidden"}
    assert count(db, InboundMessage) == 0
    assert count(db, ConsentEvent) == before
    assert sms_state(db) == [("BIREYSEL", "ONAY")]


def test_the_secret_may_come_in_the_url(web, ayse):
    response = web.post("/webhooks/sms/inbound/netgsm?secret=hook-secret&gsmno=05321234567&msg=RET&msgid=q1")
    assert response.status_code == 200
    assert inbound_rows(ayse)[0][:8] == ("netgsm", PHONE, "RET", None, None, "opt_out", events(ayse)[-1].id,
                                         "netgsm:q1")


def test_no_configured_secret_refuses_everything(db, settings):
    from starlette.testclient import TestClient

    from izin.consent.web.app import create_app

    app = create_app(settings, db, now=lambda: AT)  # webhook_secret left empty
    with TestClient(app) as client:
        for secret in ("", "hook-secret"):
            response = client.post("/webhooks/bounce", headers={"X-Izin-Webhook-Secret": secret},
                                   json={"recipient": "a@example.com", "status": "5.1.1"})
            assert response.status_code == 403
    assert count(db, UndeliverableAddress) == 0


def test_failed_secrets_are_rate_limited_per_ip(web, ayse):
    # the web fixture allows 30 state changes per minute and IP
    codes = [web.post("/webhooks/bounce", headers={"X-Izin-Webhook-Secret": f"guess{i}"},
                      json={"recipient": "a@example.com", "status": "5.1.1"}).status_code for i in range(30)]
    assert codes == [403] * 30
    blocked = post_sms(web, "generic", "RET")  # the right secret too: the address is blocked for now
    assert blocked.status_code == 429
    assert blocked.headers["retry-after"] == "60"
    assert count(ayse, InboundMessage) == 0 and count(ayse, UndeliverableAddress) == 0


def test_authenticated_calls_are_not_rate_limited(web, ayse):
    for i in range(45):  # more than the 30 per minute a person's browser gets
        assert post_sms(web, "netgsm", "Merhaba", message_id=f"n{i}").status_code == 200
    assert count(ayse, InboundMessage) == 45


def test_a_duplicate_message_id_changes_nothing(web, ayse):
    db = ayse
    assert post_sms(web, "netgsm", "RET").json() == {"ok": True}
    after_first = [e.id for e in events(db)]
    again = post_sms(web, "netgsm", "RET")
    also = post_sms(web, "netgsm", "something else, same id")
    assert again.status_code == also.status_code == 200
    assert [e.id for e in events(db)] == after_first
    assert [r[7] for r in inbound_rows(db)] == ["netgsm:m-1"]
    # the same id from another provider is another message
    assert post_sms(web, "generic", "Merhaba").status_code == 200
    assert [r[7] for r in inbound_rows(db)] == ["netgsm:m-1", "generic:m-1"]


def test_an_opt_out_cancels_queued_sms_in_the_same_request(web, db, settings):
    contact_id = add_contact(db, "ayse", email="ayse@example.com", phone=PHONE)
    with db.session() as session:
        contact = session.get(Contact, contact_id)
        contact.first_name, contact.birthday = "Ayse", date(1990, 11, 24)
        contact.birth_month, contact.birth_day = 11, 24
    grant(db, "ayse", "sms")
    grant(db, "ayse", "email")
    campaign = parse_campaign("""
name: dogum-gunu
trigger: {type: birthday, send_time: "10:00"}
channels: [sms, email]
content:
  sms: {text: "Iyi ki dogdun {{ contact.first_name }}!"}
  email: {subject: "Iyi ki dogdun", html_inline: "<p>Merhaba {{ contact.first_name }}</p>"}
""")
    with db.session() as session:
        assert schedule_campaign(session, campaign, settings, AT, AT).created == 1
    with db.session() as session:
        assert [(d.channel, d.status) for d in session.scalars(select(Delivery))] == [("sms", "scheduled")]
    assert post_sms(web, "netgsm", "İptal ORNEKTIC").status_code == 200
    with db.session() as session:
        delivery = session.scalars(select(Delivery)).one()
        assert (delivery.status, delivery.reason, delivery.next_attempt_at, delivery.updated_at) == \
            ("suppressed", "consent_withdrawn", None, AT)
    assert events(db)[-1].contact_ref == "ayse"
    # email consent is untouched: an SMS reply withdraws SMS only
    with db.session() as session:
        assert session.get(ConsentState, ("ayse@example.com", "email", "BIREYSEL")).status == "ONAY"


def test_an_opt_out_from_an_unknown_number_is_kept_as_a_suppression(web, db):
    assert post_sms(web, "generic", "RET", sender="+905559998877").json() == {"ok": True}
    ret = events(db)[-1]
    assert (ret.recipient, ret.status, ret.source, ret.contact_id, ret.contact_ref, ret.iys_uploadable) == \
        ("+905559998877", "RET", "HS_MESAJ", None, None, False)  # İYS refuses a first-ever RET
    assert sms_state(db, "+905559998877") == [("BIREYSEL", "RET")]
    assert inbound_rows(db)[0][5:7] == ("opt_out", ret.id)


def test_an_opt_out_from_a_number_already_refused_records_nothing_new(web, ayse):
    db = ayse
    assert post_sms(web, "generic", "RET", message_id="a").status_code == 200
    first = [e.id for e in events(db)]
    assert post_sms(web, "generic", "IPTAL", message_id="b").status_code == 200
    assert [e.id for e in events(db)] == first
    assert [(r[5], r[6]) for r in inbound_rows(db)] == [("opt_out", first[-1]), ("opt_out", None)]


def test_an_opt_out_from_something_that_is_not_a_number_is_stored_and_ignored(web, db):
    assert post_sms(web, "generic", "RET", sender="ORNEKTIC").json() == {"ok": True}
    assert count(db, ConsentEvent) == 0
    assert inbound_rows(db)[0][1:3] + inbound_rows(db)[0][5:7] == ("ORNEKTIC", "RET", "ignored", None)


def test_netgsm_latin5_form_and_json_bodies(web, ayse):
    db = ayse
    body = b"gsm=905321234567&msg=" + quote_from_bytes("İptal".encode("iso-8859-9")).encode() + b"&msgid=L5"
    response = web.post("/webhooks/sms/inbound/netgsm", headers={**SECRET,
                        "content-type": "application/x-www-form-urlencoded"}, content=body)
    assert response.status_code == 200
    assert inbound_rows(db)[0][2] == "İptal" and inbound_rows(db)[0][5] == "opt_out"
    # the names of Netgsm's inbox API, as JSON; the keyword routed it and was taken out of the text
    response = web.post("/webhooks/sms/inbound/netgsm", headers=SECRET,
                        json={"sender": "05321234567", "message": "ORNEKTIC", "keyword": "RET",
                              "receiver": "4609", "messageid": "J2"})
    assert response.status_code == 200
    assert inbound_rows(db)[1][:6] == ("netgsm", PHONE, "ORNEKTIC", "RET", "4609", "opt_out")


def test_netgsm_multipart_form_and_the_sender_name_as_brand_words(web, ayse):
    db = ayse
    response = web.post("/webhooks/sms/inbound/netgsm", headers=SECRET,
                        files={"gsmno": (None, "5321234567"), "mesaj": (None, "RET Örnek Ticaret"),
                               "mesajid": (None, "MP1")})
    assert response.status_code == 200
    assert inbound_rows(db)[0][:8] == ("netgsm", PHONE, "RET Örnek Ticaret", None, None, "opt_out",
                                       events(db)[-1].id, "netgsm:MP1")


def test_bad_inbound_calls(web, db):
    assert web.post("/webhooks/sms/inbound/twilio", headers=SECRET, json={"from": PHONE, "text": "RET"}) \
        .status_code == 404
    missing = web.post("/webhooks/sms/inbound/generic", headers=SECRET, json={"text": "RET"})
    assert missing.status_code == 400 and missing.json() == {"ok": False, "error": "no sender number in the message"}
    broken = web.post("/webhooks/sms/inbound/generic", headers={**SECRET, "content-type": "application/json"},
                      content=b"{not json")
    assert broken.status_code == 400
    not_object = web.post("/webhooks/sms/inbound/generic", headers=SECRET, json=["RET"])
    assert not_object.status_code == 400
    assert web.get("/webhooks/sms/inbound/generic", headers=SECRET).status_code == 405
    huge = web.post("/webhooks/sms/inbound/generic", headers={**SECRET, "content-type": "application/json"},
                    content=b"{" + b" " * (3 * 1024 * 1024) + b"}")
    assert huge.status_code == 413
    assert count(db, InboundMessage) == 0 and count(db, ConsentEvent) == 0


# --- delivery reports ----------------------------------------------------------------------------

def sent(db, external_id, channel, recipient, provider_id, **contact):
    """A delivery the worker has sent, with the provider's id."""
    contact_id = add_contact(db, external_id, **contact)
    with db.session() as session:
        campaign = session.scalar(select(Campaign).where(Campaign.name == "rapor"))
        if campaign is None:
            campaign = Campaign(name="rapor", started_at=AT)
            session.add(campaign)
            session.flush()
        delivery = Delivery(campaign_id=campaign.id, contact_id=contact_id, occurrence="2026", channel=channel,
                            recipient=recipient, status="sent", commercial=True, due_at=AT, created_at=AT,
                            updated_at=AT, sent_at=AT, provider_id=provider_id, attempts=1)
        session.add(delivery)
        session.flush()
        return delivery.id


def delivery_row(db, delivery_id):
    with db.session() as session:
        d = session.get(Delivery, delivery_id)
        return d.status, d.provider_status, d.delivered_at, d.detail


def marks(db):
    with db.session() as session:
        return [tuple(r) for r in session.execute(select(
            UndeliverableAddress.address, UndeliverableAddress.channel, UndeliverableAddress.reason)
            .order_by(UndeliverableAddress.address))]


def test_generic_delivery_reports(web, db):
    sms = sent(db, "ayse", "sms", PHONE, "p-sms", phone=PHONE)
    mail = sent(db, "mehmet", "email", "mehmet@example.com", "p-mail", email="mehmet@example.com")
    soft = sent(db, "zeynep", "email", "zeynep@example.com", "p-soft", email="zeynep@example.com")
    response = web.post("/webhooks/delivery/generic", headers=SECRET, json=[
        {"id": "p-sms", "status": "delivered", "at": "2026-11-24T12:00:05+03:00"},
        {"id": "p-mail", "status": "undelivered", "reason": "smtp; 550 5.1.1 user unknown"},
        {"id": "p-soft", "status": "undelivered", "reason": "4.2.2 mailbox full"},
        {"id": "nobody", "status": "delivered"},
        {"id": "p-sms", "status": "exploded"},
    ])
    assert response.status_code == 200
    assert response.json() == {"ok": True, "updated": 3, "ignored": 2}
    assert delivery_row(db, sms) == ("sent", "delivered", datetime(2026, 11, 24, 9, 0, 5, tzinfo=timezone.utc), None)
    assert delivery_row(db, mail) == ("sent", "undelivered", None,
                                      "delivery report: smtp; 550 5.1.1 user unknown")
    assert delivery_row(db, soft) == ("sent", "undelivered", None, "delivery report: 4.2.2 mailbox full")
    assert marks(db) == [("mehmet@example.com", "email",
                          "generic delivery report: undelivered (smtp; 550 5.1.1 user unknown)")]
    # a late 'pending' never hides the final word; 'delivered' without a time is now
    web.post("/webhooks/delivery/generic", headers=SECRET, json={"id": "p-sms", "status": "pending"})
    assert delivery_row(db, sms)[1] == "delivered"


def test_bounced_marks_any_channel_and_permanent_marks_email(web, db):
    sms = sent(db, "ayse", "sms", PHONE, "b-sms", phone=PHONE)
    sms_failed = sent(db, "can", "sms", "+905320000004", "f-sms", phone="+905320000004")
    mail = sent(db, "mehmet", "email", "mehmet@example.com", "p-mail", email="mehmet@example.com")
    for report in ({"id": "b-sms", "status": "bounced"},
                   {"id": "f-sms", "status": "failed", "permanent": True},  # an SMS failure is not a bounce
                   {"id": "p-mail", "status": "failed", "permanent": True, "reason": "mailbox disabled"}):
        assert web.post("/webhooks/delivery/generic", headers=SECRET, json=report).json()["updated"] == 1
    assert delivery_row(db, sms)[1] == "bounced" and delivery_row(db, sms_failed)[1] == "failed"
    assert delivery_row(db, mail)[1:] == ("failed", None, "delivery report: mailbox disabled")
    assert marks(db) == [("+905321234567", "sms", "generic delivery report: bounced"),
                         ("mehmet@example.com", "email", "generic delivery report: failed (mailbox disabled)")]


def test_netgsm_delivery_reports(web, db):
    first = sent(db, "ayse", "sms", PHONE, "1700000001", phone=PHONE)
    second = sent(db, "can", "sms", "+905320000004", "1700000002", phone="+905320000004")
    mail = sent(db, "mehmet", "email", "mehmet@example.com", "1700000003", email="mehmet@example.com")
    # one report as a form, Türkiye time
    response = web.post("/webhooks/delivery/netgsm", headers=SECRET,
                        data={"jobid": "1700000001", "status": "1", "deliveredDate": "24.11.2026 12:05:00"})
    assert response.json() == {"ok": True, "updated": 1, "ignored": 0}
    assert delivery_row(db, first) == ("sent", "delivered", datetime(2026, 11, 24, 9, 5, tzinfo=timezone.utc), None)
    # the reply shape of Netgsm's report API, forwarded by a relay; email deliveries are not Netgsm's
    response = web.post("/webhooks/delivery/netgsm", headers=SECRET, json={"code": "00", "jobs": [
        {"jobid": "1700000002", "number": "5320000004", "status": 3, "errorCode": 101},
        {"jobid": "1700000003", "status": 1},
        {"jobid": "1700000009", "status": 99},
    ]})
    assert response.json() == {"ok": True, "updated": 1, "ignored": 2}
    assert delivery_row(db, second) == ("sent", "undelivered", None,
                                        "delivery report: netgsm status 3: invalid or barred number (error code 101)")
    assert delivery_row(db, mail)[1] is None
    assert marks(db) == []  # an invalid or barred number may be barred only for now
    web.post("/webhooks/delivery/netgsm?jobid=1700000001&status=16", headers=SECRET)
    assert delivery_row(db, first)[1] == "iys_rejected"


def test_delivery_reports_need_the_secret(web, db):
    sms = sent(db, "ayse", "sms", PHONE, "p-sms", phone=PHONE)
    response = web.post("/webhooks/delivery/generic", json={"id": "p-sms", "status": "delivered"})
    assert response.status_code == 403
    assert delivery_row(db, sms) == ("sent", None, None, None)
    assert web.post("/webhooks/delivery/mailgun", headers=SECRET, json={}).status_code == 404
    assert web.post("/webhooks/delivery/generic", headers=SECRET, content=b"").status_code == 400


# --- email bounces -------------------------------------------------------------------------------

#: a complete DSN as an MTA sends it (RFC 3464 section 10 style): one hard failure, one delay
DSN = (
    "From: Mail Delivery System <MAILER-DAEMON@mx.ornek.com.tr>\r\n"
    "To: kampanya@ornek.com.tr\r\n"
    "Subject: Undelivered Mail Returned to Sender\r\n"
    "MIME-Version: 1.0\r\n"
    'Content-Type: multipart/report; report-type=delivery-status; boundary="RAA14128.773615765/mx.ornek.com.tr"\r\n'
    "\r\n"
    "--RAA14128.773615765/mx.ornek.com.tr\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "\r\n"
    "This is the mail system at host mx.ornek.com.tr. Your message could not be delivered.\r\n"
    "\r\n"
    "--RAA14128.773615765/mx.ornek.com.tr\r\n"
    "Content-Type: message/delivery-status\r\n"
    "\r\n"
    "Reporting-MTA: dns; mx.ornek.com.tr\r\n"
    "X-Postfix-Queue-ID: 4F1A2B3C\r\n"
    "Arrival-Date: Tue, 24 Nov 2026 11:58:01 +0300 (+03)\r\n"
    "\r\n"
    "Final-Recipient: rfc822; Ayse.Yilmaz@Example.com\r\n"
    "Original-Recipient: rfc822;Ayse.Yilmaz@Example.com\r\n"
    "Action: failed\r\n"
    "Status: 5.1.1\r\n"
    "Remote-MTA: dns; mx1.example.com\r\n"
    "Diagnostic-Code: smtp; 550 5.1.1 <Ayse.Yilmaz@Example.com>: Recipient address\r\n"
    "    rejected: User unknown in virtual mailbox table\r\n"
    "\r\n"
    "Final-Recipient: rfc822; mehmet@example.com\r\n"
    "Action: delayed\r\n"
    "Status: 4.4.1\r\n"
    "Diagnostic-Code: X-Postfix; connect to mx.example.com: Connection timed out\r\n"
    "\r\n"
    "--RAA14128.773615765/mx.ornek.com.tr\r\n"
    "Content-Type: text/rfc822-headers\r\n"
    "\r\n"
    "From: =?utf-8?q?=C3=96rnek_Ticaret?= <kampanya@ornek.com.tr>\r\n"
    "To: Ayse.Yilmaz@Example.com\r\n"
    "Subject: Iyi ki dogdun\r\n"
    "\r\n"
    "--RAA14128.773615765/mx.ornek.com.tr--\r\n"
).encode()

AYSE_REASON = ("DSN 5.1.1: smtp; 550 5.1.1 <Ayse.Yilmaz@Example.com>: Recipient address rejected: "
               "User unknown in virtual mailbox table")


def test_a_real_dsn_marks_the_hard_failure_only(web, db):
    response = web.post("/webhooks/bounce", headers={**SECRET, "content-type": "message/rfc822"}, content=DSN)
    assert response.status_code == 200
    assert response.json() == {"ok": True, "marked": 1, "ignored": 1}
    assert marks(db) == [("ayse.yilmaz@example.com", "email", AYSE_REASON)]
    # posting it again is harmless
    assert web.post("/webhooks/bounce", headers=SECRET, content=DSN).json() == {"ok": True, "marked": 1, "ignored": 1}
    assert marks(db) == [("ayse.yilmaz@example.com", "email", AYSE_REASON)]


def test_the_dsn_parts_as_the_http_body(web, db):
    head, _, parts = DSN.partition(b"\r\n\r\n")
    content_type = [line.split(b": ", 1)[1] for line in head.split(b"\r\n") if line.startswith(b"Content-Type")][0]
    response = web.post("/webhooks/bounce", headers={**SECRET, "content-type": content_type.decode()}, content=parts)
    assert response.json() == {"ok": True, "marked": 1, "ignored": 1}
    assert marks(db) == [("ayse.yilmaz@example.com", "email", AYSE_REASON)]


def test_a_bare_delivery_status_body(web, db):
    body = ("Reporting-MTA: dns; mx.ornek.com.tr\n\n"
            "Final-Recipient: rfc822;can@example.com\nAction: failed\nStatus: 5.2.1 (mailbox disabled)\n\n"
            "Original-Recipient: rfc822; deniz@example.com\nAction: failed\nStatus: 4.2.2\n").encode()
    response = web.post("/webhooks/bounce", headers={**SECRET, "content-type": "message/delivery-status"},
                        content=body)
    assert response.json() == {"ok": True, "marked": 1, "ignored": 1}
    assert marks(db) == [("can@example.com", "email", "DSN 5.2.1")]


def test_json_bounces(web, db):
    hard = web.post("/webhooks/bounce", headers=SECRET,
                    json={"recipient": "Mehmet@Example.com", "status": "5.1.1",
                          "diagnostic": "smtp; 550 5.1.1 no such user"})
    assert hard.json() == {"ok": True, "marked": 1, "ignored": 0}
    soft = web.post("/webhooks/bounce", headers=SECRET,
                    json=[{"recipient": "zeynep@example.com", "status": "4.2.2", "diagnostic": "mailbox full"},
                          {"recipient": "not an address", "status": "5.1.1"}])
    assert soft.json() == {"ok": True, "marked": 0, "ignored": 2}
    assert marks(db) == [("mehmet@example.com", "email", "DSN 5.1.1: smtp; 550 5.1.1 no such user")]


def test_bounces_need_the_secret_and_a_readable_body(web, db):
    assert web.post("/webhooks/bounce", content=DSN).status_code == 403
    assert web.post("/webhooks/bounce", headers={"X-Izin-Webhook-Secret": "nope"},
                    json={"recipient": "a@example.com", "status": "5.1.1"}).status_code == 403
    assert web.post("/webhooks/bounce", headers=SECRET, content=b"hello").status_code == 400
    assert web.post("/webhooks/bounce", headers=SECRET, content=b"").status_code == 400
    assert web.post("/webhooks/bounce", headers=SECRET, json={"status": "5.1.1"}).status_code == 400
    assert marks(db) == []


# --- opt-outs as people really write them ----------------------------------------------------------

def post_bare(web, provider, text, *, sender=PHONE, message_id="r-1"):
    """An inbound SMS with no keyword and no short number, as some providers post it."""
    if provider == "generic":
        return web.post("/webhooks/sms/inbound/generic", headers=SECRET,
                        json={"from": sender, "text": text, "id": message_id})
    return web.post("/webhooks/sms/inbound/netgsm", headers=SECRET,
                    data={"gsmno": sender.removeprefix("+"), "message": text, "id": message_id})


def test_brand_words_are_the_header_the_name_and_the_opt_out_number(settings):
    assert webhooks.brand_words(settings) == ("ORNEKTIC", "Örnek Ticaret A.Ş.", "4609")
    other = settings.model_copy(update={"sender": settings.sender.model_copy(
        update={"sms_optout": "RET yazip 3838'e gonderin (ucretsiz)", "name": ""})})
    assert webhooks.brand_words(other) == ("ORNEKTIC", "3838")
    none = settings.model_copy(update={"sender": settings.sender.model_copy(update={"sms_optout": ""})})
    assert webhooks.brand_words(none) == ("ORNEKTIC", "Örnek Ticaret A.Ş.")


@pytest.mark.parametrize("provider", ["generic", "netgsm"])
@pytest.mark.parametrize("text", ["RET 4609", "RET4609", "RETORNEKTIC", "4609 IPTAL", "IPTAL ET", "SMS IPTAL",
                                  "RET lütfen", "iptal etmek istiyorum", "İPTAL ETMEK İSTİYORUM", "Mesaj iptal"])
def test_real_opt_outs_without_a_short_number_record_a_ret(web, ayse, provider, text):
    db = ayse
    response = post_bare(web, provider, text)
    assert response.status_code == 200 and response.json() == {"ok": True}
    ret = events(db)[-1]
    assert (ret.status, ret.channel, ret.source, ret.recipient, ret.contact_ref) == (
        "RET", "sms", "HS_MESAJ", PHONE, "ayse")
    assert json.loads(ret.proof) == {"route": "sms_reply", "provider": provider, "sender": PHONE,
                                     "short_number": None, "keyword": None, "text": text, "message_id": "r-1"}
    assert sms_state(db) == [("BIREYSEL", "RET")]
    assert inbound_rows(db) == [(provider, PHONE, text, None, None, "opt_out", ret.id, f"{provider}:r-1", AT)]


REVIEW = ["ret etmeyin", "STOP etmeyin mesajı gelmesin", "RET yazip 4609'a gonderin", "iptal etmek istemiyorum",
          "lütfen iptal etmeyin", "Dur bir dakika"]


@pytest.mark.parametrize("provider", ["generic", "netgsm"])
def test_a_keyword_in_a_sentence_is_kept_for_review_and_records_nothing(web, ayse, provider, caplog):
    db = ayse
    before = [e.id for e in events(db)]
    with caplog.at_level(logging.WARNING, logger="izin.web.webhooks"):
        for i, text in enumerate(["Retro", *REVIEW, "durum nedir"]):
            assert post_bare(web, provider, text, message_id=f"v{i}").json() == {"ok": True}
    assert [e.id for e in events(db)] == before
    assert sms_state(db) == [("BIREYSEL", "ONAY")]
    rows = inbound_rows(db)
    assert [(r[2], r[5], r[6]) for r in rows] == [
        ("Retro", "ignored", None), *((text, "needs_review", None) for text in REVIEW),
        ("durum nedir", "ignored", None)]
    with db.session() as session:
        listed = webhooks.needs_review(session)
        assert [(m.text, m.action, m.provider_message_id) for m in listed] == [
            (text, "needs_review", f"{provider}:v{i}") for i, text in enumerate(REVIEW, start=1)]
        ids = [m.id for m in listed]
    warnings = [r.getMessage() for r in caplog.records
                if r.name == "izin.web.webhooks" and r.levelno == logging.WARNING]
    assert warnings == [f"inbound {provider} SMS {i} names an opt-out keyword but is not clearly an opt-out: "
                        "stored as needs_review, nothing recorded; a person must read it" for i in ids]


def test_needs_review_lists_the_oldest_first(web, db):
    web.app.state.now = lambda: T("2026-11-24T13:00:00+03:00")
    assert post_sms(web, "generic", "ret etmeyin", message_id="late").status_code == 200
    web.app.state.now = lambda: AT
    assert post_sms(web, "generic", "RET", message_id="ret").status_code == 200
    assert post_sms(web, "generic", "STOP etmeyin", message_id="early").status_code == 200
    with db.session() as session:
        assert [(m.provider_message_id, m.received_at) for m in webhooks.needs_review(session)] == [
            ("generic:early", AT), ("generic:late", T("2026-11-24T13:00:00+03:00"))]


def test_the_keyword_field_counts_before_the_text(web, ayse):
    db = ayse
    # the provider routed on RET and passed the rest: a sentence after the keyword is for a person
    response = web.post("/webhooks/sms/inbound/netgsm", headers=SECRET,
                        json={"sender": "05321234567", "message": "etmeyin", "keyword": "RET", "messageid": "K1"})
    assert response.status_code == 200
    response = web.post("/webhooks/sms/inbound/netgsm", headers=SECRET,
                        json={"sender": "05321234567", "message": "lütfen", "keyword": "IPTAL", "messageid": "K2"})
    assert response.status_code == 200
    assert [(r[2], r[3], r[5]) for r in inbound_rows(db)] == [("etmeyin", "RET", "needs_review"),
                                                             ("lütfen", "IPTAL", "opt_out")]


# --- NUL and other control characters ------------------------------------------------------------

def test_clean_text():
    assert webhooks.clean_text("a\x00b\x01c\x08d\x0be\x0cf\x1bg\x1fh") == "abcdefgh"
    assert webhooks.clean_text("tab\there\nnew\r\nline\rend") == "tab\there\nnew\nline\nend"
    assert webhooks.clean_text("lone \ud800 surrogate \U0001F600") == "lone \ufffd surrogate \U0001F600"


def test_control_characters_in_a_json_sms_are_dropped_and_the_ret_kept(web, ayse):
    db = ayse
    body = json.dumps({"from": "+90532\u00001234567", "text": "RET\u0000", "keyword": "ORNEK\u0001TIC",
                       "to": "46\u000009", "id": "n\u00001"}).encode()
    response = web.post("/webhooks/sms/inbound/generic", headers={**SECRET, "content-type": "application/json"},
                        content=body)
    assert response.status_code == 200 and response.json() == {"ok": True}
    ret = events(db)[-1]
    assert ret.status == "RET"
    assert json.loads(ret.proof) == {"route": "sms_reply", "provider": "generic", "sender": PHONE,
                                     "short_number": "4609", "keyword": "ORNEKTIC", "text": "RET", "message_id": "n1"}
    assert inbound_rows(db) == [("generic", PHONE, "RET", "ORNEKTIC", "4609", "opt_out", ret.id, "generic:n1", AT)]


def test_control_characters_in_netgsm_forms_and_queries_are_dropped(web, ayse):
    db = ayse
    form = web.post("/webhooks/sms/inbound/netgsm", headers={**SECRET,
                    "content-type": "application/x-www-form-urlencoded"},
                    content=b"gsmno=905321234567%00&message=%00IPTAL%1B%0D%0AET%0D%0A&id=z%001")
    assert form.status_code == 200
    query = web.post("/webhooks/sms/inbound/netgsm?secret=hook-secret&gsmno=05321234567%00&msg=RET%00ORNEKTIC"
                     "&msgid=q%002")
    assert query.status_code == 200
    multipart = web.post("/webhooks/sms/inbound/netgsm", headers=SECRET,
                         files={"gsmno": (None, "5321234567\x00"), "mesaj": (None, "Merhaba\x00\x07"),
                                "mesajid": (None, "M\x003")})
    assert multipart.status_code == 200
    [ret] = [e for e in events(db) if e.status == "RET"]
    assert [r[:3] + r[5:8] for r in inbound_rows(db)] == [
        ("netgsm", PHONE, "IPTAL\nET", "opt_out", ret.id, "netgsm:z1"),
        ("netgsm", PHONE, "RETORNEKTIC", "opt_out", None, "netgsm:q2"),  # already refused: nothing new
        ("netgsm", PHONE, "Merhaba", "ignored", None, "netgsm:M3")]


def test_a_lone_surrogate_in_json_is_replaced(web, ayse):
    response = web.post("/webhooks/sms/inbound/generic", headers={**SECRET, "content-type": "application/json"},
                        content=b'{"from": "+905321234567", "text": "RET \\ud800", "id": "s1"}')
    assert response.status_code == 200
    assert inbound_rows(ayse)[0][2] == "RET \ufffd" and inbound_rows(ayse)[0][5] == "opt_out"


def test_control_characters_in_reports_and_bounces_are_dropped(web, db):
    sms = sent(db, "ayse", "sms", PHONE, "p-sms", phone=PHONE)
    netgsm = sent(db, "can", "sms", "+905320000004", "1700000002", phone="+905320000004")
    response = web.post("/webhooks/delivery/generic", headers={**SECRET, "content-type": "application/json"},
                        content=json.dumps({"id": "p-sms\u0000", "status": "undelivered\u0000",
                                            "reason": "no\u0000 route"}).encode())
    assert response.json() == {"ok": True, "updated": 1, "ignored": 0}
    assert delivery_row(db, sms) == ("sent", "undelivered", None, "delivery report: no route")
    response = web.post("/webhooks/delivery/netgsm", headers={**SECRET,
                        "content-type": "application/x-www-form-urlencoded"},
                        content=b"jobid=1700000002%00&status=3%00&errorCode=1%0001")
    assert response.json() == {"ok": True, "updated": 1, "ignored": 0}
    assert delivery_row(db, netgsm)[3] == \
        "delivery report: netgsm status 3: invalid or barred number (error code 101)"
    response = web.post("/webhooks/bounce", headers={**SECRET, "content-type": "application/json"},
                        content=json.dumps({"recipient": "mehmet@example.com\u0000", "status": "5.1.1\u0000",
                                            "diagnostic": "smtp; 550\u0000 no such user"}).encode())
    assert response.json() == {"ok": True, "marked": 1, "ignored": 0}
    dsn = DSN.replace(b"User unknown", b"User\x00 unknown").replace(b"Action: failed", b"Action: fail\x01ed")
    response = web.post("/webhooks/bounce", headers={**SECRET, "content-type": "message/rfc822"}, content=dsn)
    assert response.json() == {"ok": True, "marked": 1, "ignored": 1}
    assert marks(db) == [("ayse.yilmaz@example.com", "email", AYSE_REASON),
                         ("mehmet@example.com", "email", "DSN 5.1.1: smtp; 550 no such user")]


# --- Netgsm status codes that are not codes --------------------------------------------------------

@pytest.mark.parametrize("code", ["--1", "²", "9" * 5000, "١", "1.0", "+1", "0x1", "1e2", "-1", "99", "1000",
                                  "1 1", ""])
def test_a_netgsm_status_that_is_not_a_known_code_is_ignored(web, db, code):
    first = sent(db, "ayse", "sms", PHONE, "1700000001", phone=PHONE)
    response = web.post("/webhooks/delivery/netgsm", headers=SECRET, data={"jobid": "1700000001", "status": code})
    assert response.status_code == 200
    assert response.json() == {"ok": True, "updated": 0, "ignored": 1}
    response = web.post("/webhooks/delivery/netgsm", headers=SECRET, json={"jobs": [{"jobid": "1700000001",
                                                                                    "status": code}]})
    assert response.json() == {"ok": True, "updated": 0, "ignored": 1}
    assert delivery_row(db, first) == ("sent", None, None, None)


def test_a_netgsm_status_with_leading_zeros_or_as_a_number_is_read(web, db):
    first = sent(db, "ayse", "sms", PHONE, "1700000001", phone=PHONE)
    second = sent(db, "can", "sms", "+905320000004", "1700000002", phone="+905320000004")
    response = web.post("/webhooks/delivery/netgsm", headers=SECRET, json={"jobs": [
        {"jobid": "1700000001", "status": "012"}, {"jobid": "1700000002", "status": 13}]})
    assert response.json() == {"ok": True, "updated": 2, "ignored": 0}
    assert delivery_row(db, first) == ("sent", "undelivered", None,
                                       "delivery report: netgsm status 12: delivery error")
    assert delivery_row(db, second) == ("sent", "failed", None,
                                        "delivery report: netgsm status 13: duplicate message")


def test_replies_needing_review_are_listed_by_the_cli(web, db, tmp_path, monkeypatch):
    from conftest import Cli

    response = web.post("/webhooks/sms/inbound/generic", json={"from": "+905321112233", "text": "ret etmeyin",
                                                                 "id": "r1"},
                        headers={"X-Izin-Webhook-Secret": "hook-secret"})
    assert response.status_code == 200
    cli = Cli(db.url, tmp_path, monkeypatch)
    listed = cli("consent", "replies").stdout
    assert listed.endswith("+905321112233 (generic): ret etmeyin\n")
    assert json.loads(cli("consent", "replies", "--json").stdout)[0]["text"] == "ret etmeyin"
