"""Unsubscribe links, RFC 8058 one-click POSTs and the preference centre, on the real application
in-process, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import json
import re
import threading

import pytest
from sqlalchemy import func, select
from starlette.testclient import TestClient

from conftest import NOW, add_contact
from izin.clock import parse_instant
from izin.consent.audit import verify
from izin.consent.gate import may_send
from izin.consent.models import ConsentEvent, ConsentState, Contact
from izin.consent.tokens import make_token
from izin.consent.web.app import create_app
from izin.consent.web.unsubscribe import mask_address
from campaigns.support import consent, person, schedule, snapshot

SECRET = "test-secret"  # what the `web` fixture signs with
ALI = "ali@example.com"
ALI_PHONE = "+905321234567"
ONE_CLICK = {"List-Unsubscribe": "One-Click"}
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

EMAIL_ONLY = """
name: efsane-cuma
trigger: {type: once, at: "2026-11-24T11:00:00+03:00"}
channels: [email]
content:
  email: {subject: "Efsane Cuma", html_inline: "<p>Merhaba {{ contact.first_name }}</p>"}
"""
SMS_ONLY = """
name: sms-cuma
trigger: {type: once, at: "2026-11-24T11:00:00+03:00"}
channels: [sms]
content:
  sms: {text: "Merhaba {{ contact.first_name }}, Efsane Cuma basladi"}
"""


def token(recipient: str = ALI, channel: str = "email", secret: str = SECRET) -> str:
    return make_token(secret, recipient, channel)


def token_id(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:16]


def events(db) -> list[ConsentEvent]:
    with db.session() as session:
        return list(session.scalars(select(ConsentEvent).order_by(ConsentEvent.id)))


def event_count(db) -> int:
    with db.session() as session:
        return session.scalar(select(func.count()).select_from(ConsentEvent))


def states(db, recipient: str, channel: str) -> list[tuple[str, str]]:
    with db.session() as session:
        return [(s.recipient_type, s.status) for s in session.scalars(select(ConsentState).where(
            ConsentState.recipient == recipient, ConsentState.channel == channel))]


def set_locale(db, external_id: str, locale: str) -> None:
    with db.session() as session:
        session.scalar(select(Contact).where(Contact.external_id == external_id)).locale = locale


def ali(db, *, phone: bool = False) -> int:
    """Ali, with email consent (and SMS consent when he has a phone)."""
    contact_id = person(db, "ali", email=ALI, phone=ALI_PHONE if phone else None)
    consent(db, "ali", "email")
    if phone:
        consent(db, "ali", "sms")
    return contact_id


def ledger_intact(db) -> bool:
    with db.session() as session:
        return verify(session, SECRET).ok


def not_found_page(web) -> str:
    return web.get("/no/such/page").text


def csrf_of(response) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]{64})"', response.text)
    assert found, response.text
    return found.group(1)


# --- one-click -------------------------------------------------------------------------------------


def test_one_click_post_records_ret_with_proof_and_suppresses_the_queued_delivery(web, db, settings):
    ali(db)
    report = schedule(db, settings, text=EMAIL_ONLY)
    assert report.created == 1 and report.plan.planned == 1
    assert snapshot(db) == [("ali", "scheduled", None, "email")]
    link = token()
    before = event_count(db)

    response = web.post(f"/u/{link}", data=ONE_CLICK, follow_redirects=False,
                        headers={"user-agent": "ExampleMail/1.0 (one-click)"})

    assert response.status_code == 200
    assert response.history == []
    assert "location" not in response.headers
    assert "set-cookie" not in response.headers
    assert "http-equiv" not in response.text.lower()  # no meta refresh either
    assert "<h1>Abonelikten çıktınız</h1>" in response.text
    assert "<strong>a***@example.com</strong> adresine artık e-posta yoluyla" in response.text
    assert ALI not in response.text
    assert event_count(db) == before + 1
    event = events(db)[-1]
    assert (event.contact_ref, event.recipient, event.channel, event.status, event.source,
            event.recipient_type, event.iys_uploadable) == ("ali", ALI, "email", "RET", "HS_WEB", "BIREYSEL", True)
    assert event.consent_date == parse_instant(NOW) and event.recorded_at == parse_instant(NOW)
    assert json.loads(event.proof) == {"route": "one-click", "ip": "testclient",
                                       "user_agent": "ExampleMail/1.0 (one-click)", "token_id": token_id(link)}
    assert link not in event.proof
    assert states(db, ALI, "email") == [("BIREYSEL", "RET")]
    assert snapshot(db) == [("ali", "suppressed", "consent_withdrawn", "email")]
    with db.session() as session:
        contact = session.scalar(select(Contact).where(Contact.external_id == "ali"))
        decision = may_send(session, contact, "email", parse_instant(NOW))
    assert (decision.allowed, decision.status, decision.event_id) == (False, "RET", event.id)
    assert ledger_intact(db)


def test_one_click_accepts_multipart(web, db):
    ali(db)
    link = token()
    response = web.post(f"/u/{link}", files={"List-Unsubscribe": (None, "One-Click")}, follow_redirects=False)
    assert response.status_code == 200
    assert "<h1>Abonelikten çıktınız</h1>" in response.text
    assert states(db, ALI, "email") == [("BIREYSEL", "RET")]
    assert json.loads(events(db)[-1].proof)["route"] == "one-click"


def test_repeating_the_post_is_harmless(web, db):
    ali(db)
    link = token()
    first = web.post(f"/u/{link}", data=ONE_CLICK)
    count = event_count(db)
    second = web.post(f"/u/{link}", data=ONE_CLICK)
    third = web.post(f"/u/{link}", data={"List-Unsubscribe": "One-Click", "via": "confirm-page"})
    assert [first.status_code, second.status_code, third.status_code] == [200, 200, 200]
    assert first.text == second.text == third.text
    assert event_count(db) == count
    with db.session() as session:
        rets = session.scalar(select(func.count()).select_from(ConsentEvent).where(
            ConsentEvent.recipient == ALI, ConsentEvent.status == "RET"))
    assert rets == 1
    assert ledger_intact(db)


def test_get_shows_a_confirmation_and_changes_nothing(web, db, settings):
    ali(db)
    schedule(db, settings, text=EMAIL_ONLY)
    link = token()
    before = events(db)

    response = web.get(f"/u/{link}")
    head = web.head(f"/u/{link}")

    assert response.status_code == 200 and head.status_code == 200
    assert '<html lang="tr">' in response.text
    assert "<h1>Abonelikten çık</h1>" in response.text
    assert "<strong>a***@example.com</strong> adresine e-posta yoluyla" in response.text
    assert f'<form method="post" action="/u/{link}?lang=tr">' in response.text
    assert '<input type="hidden" name="List-Unsubscribe" value="One-Click">' in response.text
    assert '<input type="hidden" name="via" value="confirm-page">' in response.text
    assert '<button type="submit">Abonelikten çık</button>' in response.text
    assert f'<a href="/p/{link}?lang=tr">' in response.text
    assert ALI not in response.text
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert [e.id for e in events(db)] == [e.id for e in before]
    assert snapshot(db) == [("ali", "scheduled", None, "email")]


def test_the_confirmation_button_unsubscribes(web, db):
    ali(db)
    link = token()
    response = web.post(f"/u/{link}?lang=tr", data={"List-Unsubscribe": "One-Click", "via": "confirm-page"},
                        headers={"user-agent": "Browser/2"}, follow_redirects=False)
    assert response.status_code == 200
    assert "<h1>Abonelikten çıktınız</h1>" in response.text
    assert json.loads(events(db)[-1].proof) == {"route": "confirm-page", "ip": "testclient",
                                                "user_agent": "Browser/2", "token_id": token_id(link)}
    assert states(db, ALI, "email") == [("BIREYSEL", "RET")]


def test_an_sms_token_unsubscribes_the_number_from_sms_only(web, db, settings):
    ali(db, phone=True)
    schedule(db, settings, text=SMS_ONLY)
    assert snapshot(db) == [("ali", "scheduled", None, "sms")]
    response = web.post(f"/u/{token(ALI_PHONE, 'sms')}", data=ONE_CLICK)
    assert response.status_code == 200
    assert "<strong>+90 532 *** ** 67</strong> adresine artık SMS yoluyla" in response.text
    assert states(db, ALI_PHONE, "sms") == [("BIREYSEL", "RET")]
    assert states(db, ALI, "email") == [("BIREYSEL", "ONAY")]
    assert snapshot(db) == [("ali", "suppressed", "consent_withdrawn", "sms")]


# --- bad tokens --------------------------------------------------------------------------------------


def _tampered(value: str) -> str:
    middle = len(value) // 2
    swapped = ALPHABET[(ALPHABET.index(value[middle]) + 1) % len(ALPHABET)]
    return value[:middle] + swapped + value[middle + 1:]


@pytest.mark.parametrize("kind", ["forged", "tampered", "truncated", "one-char-short", "extended",
                                  "other-key", "garbage"])
def test_bad_tokens_get_the_one_not_found_page_and_change_nothing(web, db, kind):
    ali(db)
    good = token()
    bad = {
        "forged": "A" * len(good),
        "tampered": _tampered(good),
        "truncated": good[:20],
        "one-char-short": good[:-1],
        "extended": good + "A",
        "other-key": token(secret="someone-elses-secret"),
        "garbage": "not.a~token",
    }[kind]
    reference = not_found_page(web)
    before = events(db)
    answers = [web.get(f"/u/{bad}"), web.post(f"/u/{bad}", data=ONE_CLICK, follow_redirects=False),
               web.get(f"/p/{bad}"), web.post(f"/p/{bad}", data={"off": "email"}, follow_redirects=False)]
    assert [a.status_code for a in answers] == [404, 404, 404, 404]
    assert [a.text for a in answers] == [reference] * 4
    assert all("set-cookie" not in a.headers and "location" not in a.headers for a in answers)
    assert "<h1>Sayfa bulunamadı</h1>" in reference
    assert [e.id for e in events(db)] == [e.id for e in before]
    assert states(db, ALI, "email") == [("BIREYSEL", "ONAY")]


def test_a_rotated_key_still_verifies_links_already_sent(db, settings):
    ali(db)
    config = settings.model_copy(update={"web": settings.web.model_copy(update={
        "secret_key": "new-secret", "old_secret_keys": [SECRET]})})
    app = create_app(config, db, now=lambda: parse_instant(NOW))
    with TestClient(app, base_url="http://127.0.0.1:8000") as client:
        old_link, new_link = token(), token(secret="new-secret")
        retired = token(secret="retired-long-ago")
        assert client.get(f"/u/{old_link}").status_code == 200
        assert client.get(f"/u/{new_link}").status_code == 200
        assert client.get(f"/u/{retired}").status_code == 404
        assert client.post(f"/u/{retired}", data=ONE_CLICK).status_code == 404
        assert states(db, ALI, "email") == [("BIREYSEL", "ONAY")]
        response = client.post(f"/u/{old_link}", data=ONE_CLICK)
        assert response.status_code == 200
    assert states(db, ALI, "email") == [("BIREYSEL", "RET")]
    assert json.loads(events(db)[-1].proof)["token_id"] == token_id(old_link)


def test_an_unknown_address_gets_the_same_answer_and_a_local_suppression(web, db):
    ali(db)
    known, unknown = token(ALI), token("ayse@example.com")  # both show as a***@example.com

    def same(text: str, link: str) -> str:
        return text.replace(link, "TOKEN")

    assert same(web.get(f"/u/{known}").text, known) == same(web.get(f"/u/{unknown}").text, unknown)
    answer_known = web.post(f"/u/{known}", data=ONE_CLICK)
    answer_unknown = web.post(f"/u/{unknown}", data=ONE_CLICK)
    assert answer_known.status_code == answer_unknown.status_code == 200
    assert same(answer_known.text, known) == same(answer_unknown.text, unknown)
    assert answer_known.headers.keys() == answer_unknown.headers.keys()
    assert web.post(f"/u/{unknown}", data=ONE_CLICK).text == answer_unknown.text
    first_ever = events(db)[-1]
    assert (first_ever.contact_ref, first_ever.recipient, first_ever.channel, first_ever.status,
            first_ever.source, first_ever.recipient_type, first_ever.iys_uploadable) == (
        None, "ayse@example.com", "email", "RET", "HS_WEB", "BIREYSEL", False)
    assert states(db, "ayse@example.com", "email") == [("BIREYSEL", "RET")]
    assert ledger_intact(db)


def test_state_changes_are_rate_limited_per_ip(web, db):
    ali(db)
    web.app.state.limiter.limit = 3
    link = token()
    forged = "A" * len(link)
    assert [web.post(f"/u/{forged}", data=ONE_CLICK).status_code for _ in range(4)] == [404, 404, 404, 429]
    limited = web.post(f"/u/{forged}", data=ONE_CLICK)
    assert limited.status_code == 429
    assert "<h1>Çok fazla istek</h1>" in limited.text
    # a genuine opt-out from the same address is never refused, however many came before
    before = event_count(db)
    assert web.post(f"/u/{link}", data=ONE_CLICK).status_code == 200
    assert event_count(db) == before + 1
    assert states(db, ALI, "email") == [("BIREYSEL", "RET")]
    # the same link in a flood: answered, nothing recorded again
    assert [web.post(f"/u/{link}", data=ONE_CLICK).status_code for _ in range(5)] == [200] * 5
    assert event_count(db) == before + 1
    assert web.get(f"/u/{link}").status_code == 200  # reading changes nothing and is not limited
    # the preference centre has its own bucket, limited the same way
    page = web.get(f"/p/{link}")
    form = {"csrf": csrf_of(page), "off": "email"}
    assert [web.post(f"/p/{link}", data=form).status_code for _ in range(4)] == [200, 200, 200, 429]
    english = web.post(f"/u/{forged}", data=ONE_CLICK, headers={"accept-language": "en"})
    assert english.status_code == 429 and "<h1>Too many requests</h1>" in english.text


# --- languages -----------------------------------------------------------------------------------------


def test_pages_follow_the_browser_when_the_address_is_unknown(web, db):
    link = token("stranger@example.org")
    english = {"accept-language": "en-GB,en;q=0.9"}
    confirm = web.get(f"/u/{link}", headers=english)
    assert '<html lang="en">' in confirm.text
    assert "<h1>Unsubscribe</h1>" in confirm.text
    assert "commercial messages by email at <strong>s***@example.org</strong>" in confirm.text
    assert f'<form method="post" action="/u/{link}?lang=en">' in confirm.text
    assert '<button type="submit">Unsubscribe</button>' in confirm.text
    done = web.post(f"/u/{link}", data=ONE_CLICK, headers=english)
    assert "<h1>You have been unsubscribed</h1>" in done.text
    assert "<h1>Abonelikten çık</h1>" in web.get(f"/u/{link}").text  # Turkish by default


def test_pages_follow_the_contacts_locale(web, db):
    ali(db)
    set_locale(db, "ali", "en")
    link = token()
    turkish_browser = {"accept-language": "tr-TR,tr;q=0.9"}
    confirm = web.get(f"/u/{link}", headers=turkish_browser)
    assert '<html lang="en">' in confirm.text and "<h1>Unsubscribe</h1>" in confirm.text
    assert "<h1>Abonelikten çık</h1>" in web.get(f"/u/{link}?lang=tr").text  # ?lang= wins
    preferences = web.get(f"/p/{link}", headers=turkish_browser)
    assert "<h1>Your message preferences</h1>" in preferences.text
    done = web.post(f"/u/{link}", data=ONE_CLICK, headers=turkish_browser)
    assert "<h1>You have been unsubscribed</h1>" in done.text
    assert "We will send no more commercial messages by email to <strong>a***@example.com</strong>." in done.text


# --- preference centre ------------------------------------------------------------------------------


def test_preference_centre_shows_every_channel_of_the_contact(web, db):
    ali(db, phone=True)
    link = token()
    response = web.get(f"/p/{link}")
    assert response.status_code == 200
    assert "<h1>İleti tercihleriniz</h1>" in response.text
    rows = re.findall(r'<li data-channel="(\w+)" data-status="(\w+)"><strong>([^<]+)</strong> \(([^)]+)\): ([^\n]+)',
                      response.text)
    assert rows == [
        ("email", "on", "E-posta", "a***@example.com", "Açık: ticari ileti alıyorsunuz"),
        ("sms", "on", "SMS", "+90 532 *** ** 67", "Açık: ticari ileti alıyorsunuz"),
        ("call", "none", "Telefon araması", "+90 532 *** ** 67", "Kapalı: onayınız yok"),
    ]
    assert '<input type="checkbox" name="off" value="email">' in response.text
    assert '<input type="checkbox" name="off" value="sms">' in response.text
    assert 'value="call"' not in response.text  # turning on goes through the opt-in form
    assert '<a href="/optin?lang=tr">Onay formundan izin verin</a>' in response.text
    assert ALI not in response.text and ALI_PHONE not in response.text
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("izin_csrf=") and "HttpOnly" in cookie and "samesite=strict" in cookie.lower()
    # a token naming the phone shows the same contact
    by_phone = web.get(f"/p/{token(ALI_PHONE, 'sms')}")
    assert re.findall(r'<li data-channel="(\w+)" data-status="(\w+)">', by_phone.text) == [
        ("email", "on"), ("sms", "on"), ("call", "none")]


def test_preference_centre_of_an_unowned_or_shared_address_shows_only_that_address(web, db):
    response = web.get(f"/p/{token('nobody@example.com')}", headers={"accept-language": "en"})
    assert re.findall(r'<li data-channel="(\w+)" data-status="(\w+)">', response.text) == [("email", "none")]
    assert "Off: no consent on record" in response.text
    add_contact(db, "twin-1", email="twin@example.com", phone="+905321111111")
    add_contact(db, "twin-2", email="twin@example.com", phone="+905322222222")
    shared = web.get(f"/p/{token('twin@example.com')}")
    assert re.findall(r'<li data-channel="(\w+)" data-status="(\w+)">', shared.text) == [("email", "none")]


def test_preference_centre_turns_sms_off_with_proof(web, db, settings):
    ali(db, phone=True)
    schedule(db, settings, text=SMS_ONLY)
    link = token()
    form = web.get(f"/p/{link}")
    before = event_count(db)

    response = web.post(f"/p/{link}", data={"csrf": csrf_of(form), "off": "sms"},
                        headers={"user-agent": "Browser/3"}, follow_redirects=False)

    assert response.status_code == 200
    assert "location" not in response.headers
    assert '<p class="notice">Kaydedildi. Kapatılan: SMS.</p>' in response.text
    assert re.findall(r'<li data-channel="(\w+)" data-status="(\w+)">', response.text) == [
        ("email", "on"), ("sms", "off"), ("call", "none")]
    assert event_count(db) == before + 1
    event = events(db)[-1]
    assert (event.contact_ref, event.recipient, event.channel, event.status, event.source) == (
        "ali", ALI_PHONE, "sms", "RET", "HS_WEB")
    assert json.loads(event.proof) == {"route": "preferences", "ip": "testclient", "user_agent": "Browser/3",
                                       "token_id": token_id(link)}
    assert states(db, ALI_PHONE, "sms") == [("BIREYSEL", "RET")]
    assert states(db, ALI, "email") == [("BIREYSEL", "ONAY")]
    assert snapshot(db) == [("ali", "suppressed", "consent_withdrawn", "sms")]
    # sending it again changes nothing
    again = web.post(f"/p/{link}", data={"csrf": csrf_of(response), "off": "sms"})
    assert again.status_code == 200
    assert '<p class="notice">Hiçbir değişiklik yapılmadı.</p>' in again.text
    assert event_count(db) == before + 1
    assert ledger_intact(db)


def test_preference_centre_never_turns_anything_on_nor_reaches_unshown_addresses(web, db):
    ali(db, phone=True)
    stranger = token("nobody@example.com")
    form = web.get(f"/p/{stranger}")
    before = events(db)
    response = web.post(f"/p/{stranger}", data={"csrf": csrf_of(form), "off": ["sms", "call", "fax"],
                                                "on": "email", "email": "on"})
    assert response.status_code == 200
    assert '<p class="notice">Hiçbir değişiklik yapılmadı.</p>' in response.text
    assert [e.id for e in events(db)] == [e.id for e in before]
    assert states(db, ALI_PHONE, "sms") == [("BIREYSEL", "ONAY")]


@pytest.mark.parametrize("case", ["missing", "wrong", "no-cookie", "other-key"])
def test_preference_changes_need_a_valid_csrf_token(web, db, case):
    ali(db, phone=True)
    link = token()
    form = web.get(f"/p/{link}")
    data = {"off": "sms"}
    if case == "wrong":
        data["csrf"] = "0" * 64
    elif case in ("no-cookie", "other-key"):
        data["csrf"] = csrf_of(form)
    if case == "no-cookie":
        web.cookies.clear()
    if case == "other-key":
        web.cookies.set("izin_csrf", "f" * 32)  # the cookie does not match the form's token
    before = events(db)
    response = web.post(f"/p/{link}", data=data, follow_redirects=False)
    assert response.status_code == 403
    assert "<h1>Bu formun süresi doldu</h1>" in response.text
    assert [e.id for e in events(db)] == [e.id for e in before]
    assert states(db, ALI_PHONE, "sms") == [("BIREYSEL", "ONAY")]


def test_masking():
    assert mask_address("ali@example.com") == "a***@example.com"
    assert mask_address("a@b.co") == "a***@b.co"
    assert mask_address("+905321234567") == "+90 532 *** ** 67"
    assert mask_address("+4915123456789") == "+49 151 *** ** 89"
    assert mask_address("garbage") == "***"


def test_simultaneous_identical_opt_outs_record_one_ret(db, now):
    """A mail provider retrying while the first POST is still running: one RET per address."""
    from izin.consent.web.unsubscribe import _withdraw

    addresses = [f"p{i}@example.com" for i in range(15)]
    for i, address in enumerate(addresses):
        person(db, f"p{i}", email=address)
        consent(db, f"p{i}", "email")
    start, errors = threading.Barrier(3), []

    def opt_out_all() -> None:
        try:
            start.wait()
            for address in addresses:
                with db.session() as session:
                    _withdraw(session, [(address, "email")], now, '{"route":"one-click"}')
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=opt_out_all) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with db.session() as session:
        rets = session.execute(select(ConsentEvent.recipient, func.count()).where(ConsentEvent.status == "RET")
                               .group_by(ConsentEvent.recipient)).all()
    assert sorted(rets) == sorted((address, 1) for address in addresses)
    assert ledger_intact(db)
