"""The opt-in form with double opt-in (issue 5 item 3): the real application in-process, on SQLite
and PostgreSQL, with the confirmation messages read back from the outbox."""

from __future__ import annotations

import email
import hashlib
import json
import re
from datetime import timedelta
from email import policy

import pytest
from markupsafe import escape
from sqlalchemy import func, select

from izin.campaigns.render import promotion_in
from izin.clock import parse_instant
from izin.consent.ledger import LedgerWriter
from izin.consent.models import ConsentEvent, Contact, OptinRequest
from izin.consent.web import optin
from conftest import NOW, add_contact

T0 = parse_instant(NOW)
EMAIL = "ayse.yilmaz@example.com"
PHONE_E164 = "+905321234567"


def form_page(web, lang: str = "tr"):
    """GET /optin; return the response, its CSRF token and the consent text's hash."""
    response = web.get(f"/optin?lang={lang}")
    assert response.status_code == 200
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', response.text).group(1)
    text_hash = re.search(r'name="text_hash" value="([0-9a-f]{64})"', response.text).group(1)
    return response, csrf, text_hash


def submit(web, lang: str = "en", *, channels=("email",), user_agent: str = "FormBrowser/1", **fields):
    _, csrf, text_hash = form_page(web, lang)
    data = {"csrf": csrf, "lang": lang, "text_hash": text_hash, "first_name": "Ayşe", "last_name": "Yılmaz",
            "email": EMAIL, "phone": "0532 123 45 67", "channel": list(channels)}
    data.update(fields)
    return web.post(f"/optin?lang={lang}", data=data, headers={"user-agent": user_agent})


def outbox_files(tmp_path) -> list[str]:
    folder = tmp_path / "outbox"
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) if folder.exists() else []


def read_email(tmp_path, name: str) -> email.message.EmailMessage:
    return email.message_from_bytes((tmp_path / "outbox" / name).read_bytes(), policy=policy.default)


def confirm_link(tmp_path, name: str = "1000000001.eml") -> str:
    body = read_email(tmp_path, name).get_content()
    return re.search(r"http://127\.0\.0\.1:8000(/optin/confirm/[A-Za-z0-9_\-]+)", body).group(1)


def sms_code(tmp_path, name: str = "1000000001.sms.json") -> str:
    record = json.loads((tmp_path / "outbox" / name).read_text(encoding="utf-8"))
    return re.search(r"\b(\d{6})\b", record["text"]).group(1)


def code_path(response) -> str:
    return re.search(r'action="(/optin/code/[A-Za-z0-9_\-]+)\?lang=', response.text).group(1)


def csrf_of(response) -> str:
    return re.search(r'name="csrf" value="([0-9a-f]+)"', response.text).group(1)


def count(db, model) -> int:
    with db.session() as session:
        return session.scalar(select(func.count()).select_from(model))


def events(db) -> list[ConsentEvent]:
    with db.session() as session:
        return list(session.scalars(select(ConsentEvent).order_by(ConsentEvent.id)))


def at(web, instant) -> None:
    web.app.state.now = lambda: instant


# --- the form ------------------------------------------------------------------------------------

@pytest.mark.parametrize("lang, heading, words", [
    ("tr", "Ticari elektronik ileti onayı", ("TİCARİ ELEKTRONİK İLETİ ONAYI", "ücretsiz olarak geri alabilirim",
                                             "Onay vermek isteğe bağlıdır", "Metin sürümü: 2026-11")),
    ("en", "Consent to commercial electronic messages", ("TİCARİ ELEKTRONİK İLETİ ONAYI",
                                                         "free of charge", "Giving consent is optional",
                                                         "Text version: 2026-11")),
])
def test_form_has_unticked_boxes_the_consent_text_its_version_and_a_csrf_token(web, lang, heading, words):
    response, csrf, text_hash = form_page(web, lang)
    html = response.text
    assert f'<html lang="{lang}">' in html
    assert heading in html
    assert '<input type="checkbox" name="channel" value="email">' in html
    assert '<input type="checkbox" name="channel" value="sms">' in html
    assert "checked" not in html  # no box is ticked for the person
    for name in ("first_name", "last_name", "email", "phone"):
        assert f'name="{name}"' in html
    for word in words:
        assert word in html
    # the text names the sender, and its hash is the one the proof will carry
    text = optin.consent_text(web.app.state.settings, lang)
    assert "Örnek Ticaret A.Ş. (MERSİS No: 0123456789000015)" in text
    assert text_hash == hashlib.sha256(text.encode()).hexdigest()
    assert f'<input type="hidden" name="csrf" value="{csrf}">' in html
    assert "izin_csrf=" in response.headers["set-cookie"]
    assert response.headers["content-security-policy"] == "frame-ancestors *"


def test_form_links_the_kvkk_notice_when_configured(web):
    settings = web.app.state.settings
    web.app.state.settings = settings.model_copy(update={"web": settings.web.model_copy(
        update={"kvkk_notice_url": "https://ornek.com.tr/kvkk"})})
    assert '<a href="https://ornek.com.tr/kvkk"' in web.get("/optin?lang=tr").text
    assert '<a href="https://ornek.com.tr/kvkk"' in web.get("/optin?lang=en").text


# --- CSRF, validation, rate limit --------------------------------------------------------------

@pytest.mark.parametrize("token", [None, "0" * 64, "ğ" * 10])
def test_post_without_a_valid_csrf_token_is_refused_and_stores_nothing(web, db, tmp_path, token):
    data = {"lang": "en", "first_name": "Ayşe", "last_name": "Yılmaz", "email": EMAIL, "channel": "email"}
    if token is not None:
        data["csrf"] = token
    web.get("/optin")  # the cookie alone is not enough
    response = web.post("/optin?lang=en", data=data)
    assert response.status_code == 403
    assert "This form has expired" in response.text
    assert count(db, OptinRequest) == 0 and count(db, Contact) == 0
    assert outbox_files(tmp_path) == []


@pytest.mark.parametrize("fields, errors", [
    ({"first_name": "", "last_name": " ", "channel": []},
     ["Enter your first name.", "Enter your surname.", "Tick at least one box: email or SMS."]),
    ({"first_name": "A" * 101}, ["Use at most 100 characters."]),
    ({"email": ""}, ["Enter your email address to get messages by email."]),
    ({"email": "ayse@"}, ["This email address is not valid; write e.g. name@example.com."]),
    ({"channel": ["sms"], "phone": ""}, ["Enter your mobile phone number to get SMS."]),
    ({"channel": ["sms"], "phone": "123"}, ["This phone number is not valid; write e.g. 0532 123 45 67."]),
    ({"channel": ["sms"], "phone": "0212 555 00 00"},
     ["SMS can only go to a mobile phone; enter a mobile number."]),
    ({"text_hash": "0" * 64},
     ["The consent text has been updated; please read the current text and send the form again."]),
])
def test_validation_errors_show_the_form_again_with_the_values(web, db, tmp_path, fields, errors):
    response = submit(web, "en", **fields)
    assert response.status_code == 400
    for message in errors:
        assert f'<p class="error">{message}</p>' in response.text
    shown = fields.get("first_name", "Ayşe")
    assert f'name="first_name" value="{shown}"' in response.text
    assert response.headers["content-security-policy"] == "frame-ancestors *"
    assert count(db, OptinRequest) == 0 and count(db, Contact) == 0
    assert outbox_files(tmp_path) == []


def test_validation_messages_in_turkish_keep_the_persons_own_ticks(web):
    response = submit(web, "tr", channels=("email", "sms"), first_name="", email="yok", phone="0212 555 00 00")
    assert response.status_code == 400
    for message in ("Adınızı yazın.", "Bu e-posta adresi geçerli değil; örneğin ad@ornek.com yazın.",
                    "SMS yalnızca cep telefonuna gönderilebilir; bir cep telefonu numarası yazın."):
        assert f'<p class="error">{message}</p>' in response.text
    assert 'value="email" checked' in response.text and 'value="sms" checked' in response.text
    assert 'name="email" value="yok"' in response.text


def test_posts_are_rate_limited_per_ip(web, db):
    for _ in range(30):
        assert web.post("/optin?lang=en", data={"first_name": "x"}).status_code == 403
    response = web.post("/optin?lang=en", data={"first_name": "x"})
    assert response.status_code == 429
    assert "Too many requests" in response.text


# --- email: the double opt-in --------------------------------------------------------------------

def test_email_double_opt_in_records_onay_only_on_the_confirming_post(web, db, tmp_path, cli):
    at(web, T0 - timedelta(minutes=30))
    response = submit(web, "en")
    assert response.status_code == 200
    assert "Check your inbox" in response.text
    assert response.headers["content-security-policy"] == "frame-ancestors *"
    assert outbox_files(tmp_path) == ["1000000001.eml"]

    message = read_email(tmp_path, "1000000001.eml")
    assert message["To"] == EMAIL
    assert message["Subject"] == "Please confirm your email address"
    assert message["List-Unsubscribe-Post"] is None  # not a commercial message
    body = message.get_content()
    assert promotion_in(body) is None and "Ayşe" not in body  # nothing of the form's text is echoed
    link = confirm_link(tmp_path)
    assert count(db, Contact) == 0  # no contact before the address is confirmed
    with db.session() as session:
        request = session.scalars(select(OptinRequest)).one()
        assert (request.contact_id, request.first_name, request.last_name) == (None, "Ayşe", "Yılmaz")
        # only the hash of the token is kept
        assert request.token_hash == hashlib.sha256(link.rsplit("/", 1)[1].encode()).hexdigest()
        assert link.rsplit("/", 1)[1] not in json.dumps([request.token_hash, request.code_hash])
        assert request.expires_at == T0 - timedelta(minutes=30) + timedelta(hours=48)
    external_id = "web-" + hashlib.sha256(EMAIL.encode()).hexdigest()[:16]

    at(web, T0)
    page = web.get(link, headers={"user-agent": "LinkScanner/1"})
    assert page.status_code == 200
    assert "Confirm your subscription" in page.text and "I confirm" in page.text
    assert page.headers["content-security-policy"] == "frame-ancestors 'none'"
    assert events(db) == []  # a GET records nothing

    done = web.post(f"{link}?lang=en", data={"csrf": csrf_of(page)}, headers={"user-agent": "ConfirmBrowser/2"})
    assert done.status_code == 200
    assert "your subscription is confirmed" in done.text
    [event] = events(db)
    assert (event.status, event.channel, event.source, event.recipient, event.recipient_type) == (
        "ONAY", "email", "HS_WEB", EMAIL, "BIREYSEL")
    assert event.contact_ref == external_id
    assert event.consent_date == T0 and event.recorded_at == T0
    text = optin.consent_text(web.app.state.settings, "en")
    assert json.loads(event.proof) == {
        "route": "double-opt-in",
        "first_name": "Ayşe",  # law 6563: the consent names the person, as they typed it
        "last_name": "Yılmaz",
        "text_version": "2026-11",
        "text_hash": hashlib.sha256(text.encode()).hexdigest(),
        "form_ip": "testclient",
        "form_user_agent": "FormBrowser/1",
        "confirm_ip": "testclient",
        "confirm_user_agent": "ConfirmBrowser/2",
        "requested_at": "2026-11-24T11:30:00+03:00",
        "confirmed_at": "2026-11-24T12:00:00+03:00",
    }
    with db.session() as session:
        request = session.scalars(select(OptinRequest)).one()
        assert request.confirmed_at == T0 and request.consent_event_id == event.id
        contact = session.scalars(select(Contact)).one()
        assert (contact.external_id, contact.first_name, contact.last_name, contact.email, contact.locale) == (
            external_id, "Ayşe", "Yılmaz", EMAIL, "en")

    shown = json.loads(cli("consent", "show", external_id, "--json").stdout)
    assert [(h["status"], h["channel"], h["source"]) for h in shown["history"]] == [("ONAY", "email", "HS_WEB")]
    assert shown["current"]["email"]["may_send"] is True

    # confirming again, or opening the link again, records nothing more
    again = web.post(f"{link}?lang=en", data={"csrf": csrf_of(page)})
    assert again.status_code == 200 and "your subscription is confirmed" in again.text
    assert "your subscription is confirmed" in web.get(f"{link}?lang=en").text
    assert len(events(db)) == 1


def test_confirm_post_needs_the_csrf_token(web, db, tmp_path):
    submit(web)
    link = confirm_link(tmp_path)
    web.get(link)
    assert web.post(link, data={}).status_code == 403
    assert web.post(link, data={"csrf": "f" * 64}).status_code == 403
    assert events(db) == []


def test_an_expired_or_unknown_link_is_a_404_that_records_nothing(web, db, tmp_path):
    submit(web)
    link = confirm_link(tmp_path)
    page = web.get(link)
    at(web, T0 + timedelta(hours=48))
    assert web.get(link).status_code == 404
    response = web.post(link, data={"csrf": csrf_of(page)})
    assert response.status_code == 404
    assert "Page not found" in response.text or "Sayfa bulunamadı" in response.text
    for bad in ("/optin/confirm/nope", link[:-1] + ("A" if link[-1] != "A" else "B")):
        assert web.get(bad).status_code == 404
        assert web.post(bad, data={"csrf": csrf_of(page)}).status_code == 404
    assert events(db) == []


def test_confirming_an_address_that_is_already_onay_shows_done_and_records_nothing(web, db, tmp_path):
    contact_id = add_contact(db, "shop-1", email=EMAIL)
    with db.session() as session:
        LedgerWriter(session).record(session.get(Contact, contact_id), "email", "ONAY", "HS_FIZIKSEL_ORTAM",
                                     T0 - timedelta(days=3), T0)
    submit(web)
    link = confirm_link(tmp_path)
    done = web.post(f"{link}?lang=en", data={"csrf": csrf_of(web.get(link))})
    assert done.status_code == 200 and "your subscription is confirmed" in done.text
    assert [e.source for e in events(db)] == ["HS_FIZIKSEL_ORTAM"]
    with db.session() as session:
        request = session.scalars(select(OptinRequest)).one()
        assert request.confirmed_at == T0 and request.consent_event_id is None
        assert request.contact_id == contact_id


def test_an_sms_ref_does_not_open_the_email_confirmation(web, db, tmp_path):
    response = submit(web, channels=("sms",))
    ref = code_path(response).rsplit("/", 1)[1]
    assert web.get(f"/optin/confirm/{ref}").status_code == 404
    assert web.post(f"/optin/confirm/{ref}", data={"csrf": csrf_of(response)}).status_code == 404
    assert events(db) == []


# --- SMS: the one-time code ------------------------------------------------------------------------

def test_sms_code_confirms_after_a_wrong_try(web, db, tmp_path):
    response = submit(web, "tr", channels=("sms",), user_agent="Phone/1")
    assert response.status_code == 200
    assert "SMS ile gelen kodu yazın" in response.text
    assert response.headers["content-security-policy"] == "frame-ancestors *"
    assert outbox_files(tmp_path) == ["1000000001.sms.json"]
    record = json.loads((tmp_path / "outbox" / "1000000001.sms.json").read_text(encoding="utf-8"))
    assert (record["to"], record["sender"], record["segments"]) == (PHONE_E164, "ORNEKTIC", 1)
    assert promotion_in(record["text"]) is None
    code = sms_code(tmp_path)
    path = code_path(response)
    csrf = csrf_of(response)
    with db.session() as session:
        request = session.scalars(select(OptinRequest)).one()
        assert request.code_hash == hashlib.sha256(f"{request.id}{code}".encode()).hexdigest()
        assert request.token_hash == hashlib.sha256(path.rsplit("/", 1)[1].encode()).hexdigest()
        assert request.expires_at == T0 + timedelta(minutes=10)

    wrong = "000000" if code != "000000" else "111111"
    response = web.post(path, data={"csrf": csrf, "code": wrong})
    assert response.status_code == 400
    assert "Kod yanlış. 4 deneme hakkınız kaldı." in response.text
    assert events(db) == []
    assert "SMS ile gelen kodu yazın" in web.get(path).text  # the form can be reloaded

    at(web, T0 + timedelta(minutes=9))
    done = web.post(path, data={"csrf": csrf, "code": code[:3] + " " + code[3:]},
                    headers={"user-agent": "Phone/2"})
    assert done.status_code == 200
    assert "aboneliğiniz onaylandı" in done.text and "RET" in done.text
    [event] = events(db)
    assert (event.status, event.channel, event.source, event.recipient) == ("ONAY", "sms", "HS_WEB", PHONE_E164)
    assert event.consent_date == T0 + timedelta(minutes=9)
    proof = json.loads(event.proof)
    assert proof["route"] == "double-opt-in" and proof["text_version"] == "2026-11"
    assert (proof["form_user_agent"], proof["confirm_user_agent"]) == ("Phone/1", "Phone/2")
    assert (proof["requested_at"], proof["confirmed_at"]) == ("2026-11-24T12:00:00+03:00",
                                                              "2026-11-24T12:09:00+03:00")
    assert proof["text_hash"] == hashlib.sha256(optin.consent_text(web.app.state.settings, "tr").encode()).hexdigest()
    with db.session() as session:
        contact = session.scalars(select(Contact)).one()
        assert contact.external_id == "web-" + hashlib.sha256(PHONE_E164.encode()).hexdigest()[:16]
        assert (contact.phone, contact.phone_mobile, contact.email) == (PHONE_E164, True, None)

    # the same code again, or the form again: done, nothing new
    assert "aboneliğiniz onaylandı" in web.post(path, data={"csrf": csrf, "code": code}).text
    assert "aboneliğiniz onaylandı" in web.get(path).text
    assert len(events(db)) == 1


def test_five_wrong_codes_kill_the_request(web, db, tmp_path):
    response = submit(web, "en", channels=("sms",))
    code, path, csrf = sms_code(tmp_path), code_path(response), csrf_of(response)
    wrong = "000000" if code != "000000" else "111111"
    # a malformed code is a typo, not a guess: it costs no attempt
    malformed = web.post(path, data={"csrf": csrf, "code": "12a"})
    assert malformed.status_code == 400 and "Enter the 6-digit code we sent by SMS." in malformed.text
    for left in (4, 3, 2):
        assert f"Wrong code. {left} attempts left." in web.post(path, data={"csrf": csrf, "code": wrong}).text
    assert "Wrong code. 1 attempt left." in web.post(path, data={"csrf": csrf, "code": wrong}).text
    assert web.post(path, data={"csrf": csrf, "code": wrong}).status_code == 404
    assert web.post(path, data={"csrf": csrf, "code": code}).status_code == 404
    assert web.get(path).status_code == 404
    assert events(db) == []
    with db.session() as session:
        assert session.scalars(select(OptinRequest)).one().attempts == 5


def test_an_sms_code_expires_after_ten_minutes(web, db, tmp_path):
    response = submit(web, "en", channels=("sms",))
    code, path, csrf = sms_code(tmp_path), code_path(response), csrf_of(response)
    at(web, T0 + timedelta(minutes=10))
    assert web.post(path, data={"csrf": csrf, "code": code}).status_code == 404
    assert web.post("/optin/code/unknown-ref", data={"csrf": csrf, "code": code}).status_code == 404
    assert web.post(path, data={"code": code}).status_code == 403
    assert events(db) == []


def test_both_channels_make_two_requests_and_a_contact_per_confirmed_address(web, db, tmp_path):
    response = submit(web, "en", channels=("email", "sms"))
    assert "also sent a confirmation link to your email address" in response.text
    assert "Enter the code from the SMS" in response.text
    assert outbox_files(tmp_path) == ["1000000001.eml", "1000000002.sms.json"]
    assert count(db, Contact) == 0
    with db.session() as session:
        requests = session.scalars(select(OptinRequest).order_by(OptinRequest.id)).all()
        assert [(r.channel, r.address, r.contact_id, r.first_name, r.last_name) for r in requests] == [
            ("email", EMAIL, None, "Ayşe", "Yılmaz"), ("sms", PHONE_E164, None, "Ayşe", "Yılmaz")]
    web.post(code_path(response), data={"csrf": csrf_of(response), "code": sms_code(tmp_path, "1000000002.sms.json")})
    with db.session() as session:  # the SMS confirmation makes a contact for the phone alone
        [phone_contact] = session.scalars(select(Contact)).all()
        assert (phone_contact.external_id, phone_contact.email, phone_contact.phone, phone_contact.phone_mobile,
                phone_contact.first_name, phone_contact.last_name, phone_contact.locale) == (
            "web-" + hashlib.sha256(PHONE_E164.encode()).hexdigest()[:16], None, PHONE_E164, True,
            "Ayşe", "Yılmaz", "en")
    link = confirm_link(tmp_path)
    web.post(link, data={"csrf": csrf_of(web.get(link))})
    with db.session() as session:
        email_contact = session.scalars(select(Contact).where(Contact.id != phone_contact.id)).one()
        assert (email_contact.external_id, email_contact.email, email_contact.phone) == (
            "web-" + hashlib.sha256(EMAIL.encode()).hexdigest()[:16], EMAIL, None)
        requests = session.scalars(select(OptinRequest).order_by(OptinRequest.id)).all()
        assert [r.contact_id for r in requests] == [email_contact.id, phone_contact.id]
    assert sorted((e.channel, e.recipient, e.contact_id) for e in events(db)) == [
        ("email", EMAIL, email_contact.id), ("sms", PHONE_E164, phone_contact.id)]


def test_a_strangers_email_next_to_ones_own_phone_never_joins_them(web, db, tmp_path):
    """The reviewer's attack: the victim's email, the attacker's phone and a made-up name; the
    attacker confirms the SMS code, the victim later confirms the email."""
    response = submit(web, "tr", channels=("email", "sms"), email="kurban@example.com", phone="0532 123 45 67",
                      first_name="Sahte", last_name="Kişi")
    assert response.status_code == 200
    done = web.post(code_path(response), data={"csrf": csrf_of(response),
                                               "code": sms_code(tmp_path, "1000000002.sms.json")})
    assert "aboneliğiniz onaylandı" in done.text
    with db.session() as session:
        [attacker] = session.scalars(select(Contact)).all()
        assert (attacker.email, attacker.phone) == (None, PHONE_E164)  # the unconfirmed email is not on it
    link = confirm_link(tmp_path)
    web.post(link, data={"csrf": csrf_of(web.get(link))})
    with db.session() as session:
        victim = session.scalars(select(Contact).where(Contact.email == "kurban@example.com")).one()
        assert victim.id != attacker.id and victim.phone is None
        assert session.get(Contact, attacker.id).email is None
    email_onay = [e for e in events(db) if e.channel == "email"]
    assert [(e.recipient, e.contact_id, e.contact_ref) for e in email_onay] == [
        ("kurban@example.com", victim.id, "web-" + hashlib.sha256(b"kurban@example.com").hexdigest()[:16])]
    assert json.loads(email_onay[0].proof)["first_name"] == "Sahte"  # what was typed, kept as proof


def test_a_confirmation_for_an_address_someone_owns_uses_that_contact_and_changes_no_name(web, db, tmp_path):
    owner_id = add_contact(db, "shop-9", email=EMAIL)
    with db.session() as session:
        session.get(Contact, owner_id).first_name = "Ayşe Gül"
    submit(web, "en", channels=("email", "sms"), first_name="Başka", last_name="Biri")
    link = confirm_link(tmp_path)
    web.post(link, data={"csrf": csrf_of(web.get(link))})
    with db.session() as session:
        owner = session.get(Contact, owner_id)
        assert (owner.first_name, owner.last_name, owner.email, owner.phone) == ("Ayşe Gül", None, EMAIL, None)
        assert session.scalars(select(OptinRequest).where(OptinRequest.channel == "email")).one().contact_id == owner_id
    assert count(db, Contact) == 1  # the unconfirmed phone made nothing
    [event] = events(db)
    assert (event.contact_id, event.contact_ref, json.loads(event.proof)["last_name"]) == (owner_id, "shop-9", "Biri")


def test_a_concurrent_confirmation_that_made_the_contact_first_is_retried(web, db, tmp_path, monkeypatch):
    """PostgreSQL: two requests for one unknown address confirmed at once both try to insert its
    web- contact; the loser of the unique external_id gets an IntegrityError and tries again."""
    from sqlalchemy.exc import IntegrityError

    submit(web, "en")
    link = confirm_link(tmp_path)
    page = web.get(link)
    real = optin._confirm_once
    calls = []

    def racing(*args):
        calls.append(args[1])
        if len(calls) == 1:  # the other confirmation commits its contact first
            add_contact(db, optin.web_external_id(EMAIL), email=EMAIL)
            raise IntegrityError("insert into contacts", {}, Exception("duplicate key"))
        return real(*args)

    monkeypatch.setattr(optin, "_confirm_once", racing)
    done = web.post(link, data={"csrf": csrf_of(page)})
    assert done.status_code == 200 and "your subscription is confirmed" in done.text
    assert len(calls) == 2
    with db.session() as session:
        contact = session.scalars(select(Contact)).one()
    assert [(e.recipient, e.contact_id) for e in events(db)] == [(EMAIL, contact.id)]


# --- nothing to learn about addresses; nothing to abuse ------------------------------------------

def test_known_and_unknown_addresses_get_the_same_page(web, db, tmp_path):
    known_id = add_contact(db, "shop-7", email="known@example.com", phone="+905559876543")
    pages = []
    for address, phone in (("known@example.com", "0555 987 65 43"), ("stranger@example.com", "0555 111 22 33")):
        response = submit(web, "en", channels=("email", "sms"), email=address, phone=phone)
        assert response.status_code == 200
        pages.append((response.headers.get("content-security-policy"),
                      re.sub(r"/optin/code/[A-Za-z0-9_\-]+", "/optin/code/REF", response.text)))
    assert pages[0] == pages[1]
    with db.session() as session:
        # nothing is looked up or made before a confirmation: no contact for the stranger yet
        assert {r.address: r.contact_id for r in session.scalars(select(OptinRequest))} == {
            "known@example.com": None, "+905559876543": None, "stranger@example.com": None, "+905551112233": None}
        assert [c.id for c in session.scalars(select(Contact))] == [known_id]
    assert len(outbox_files(tmp_path)) == 4
    # confirmed, the known address's ONAY goes to its contact, which is not changed
    link = confirm_link(tmp_path, "1000000001.eml")
    web.post(link, data={"csrf": csrf_of(web.get(link))})
    with db.session() as session:
        known = session.get(Contact, known_id)
        assert (known.first_name, known.last_name, known.email) == (None, None, "known@example.com")
    assert [(e.recipient, e.contact_id) for e in events(db)] == [("known@example.com", known_id)]


def test_known_and_unknown_addresses_take_the_same_path_until_confirmation(web, db, tmp_path, monkeypatch):
    add_contact(db, "shop-7", email="known@example.com")
    looked_up = []
    real_owner = optin._owner
    monkeypatch.setattr(optin, "_owner", lambda *args: looked_up.append(args[1:]) or real_owner(*args))
    for address in ("known@example.com", "stranger@example.com"):
        assert submit(web, "en", email=address).status_code == 200
    assert looked_up == []  # the form never asks who owns an address
    link = confirm_link(tmp_path, "1000000002.eml")
    web.post(link, data={"csrf": csrf_of(web.get(link))})
    assert looked_up == [("email", "stranger@example.com")]


def test_at_most_three_confirmations_per_address_and_hour(web, db, tmp_path):
    bodies = [submit(web, "en").text for _ in range(4)]
    assert len(set(bodies)) == 1
    assert outbox_files(tmp_path) == ["1000000001.eml", "1000000002.eml", "1000000003.eml"]
    assert count(db, OptinRequest) == 3
    at(web, T0 + timedelta(hours=1, seconds=1))
    submit(web, "en")
    assert count(db, OptinRequest) == 4


@pytest.mark.parametrize("lang", ["tr", "en"])
def test_confirmation_messages_carry_no_promotion(lang):
    for text in (optin._EMAIL_SUBJECT[lang], optin._EMAIL_BODY[lang], optin._SMS_TEXT[lang]):
        assert promotion_in(text) is None, text


# --- SMS only to Türkiye's mobile numbers ----------------------------------------------------------

NOT_TURKISH = {"en": "SMS only goes to Turkish (+90) mobile phones; enter a Turkish mobile number, "
                     "e.g. 0532 123 45 67.",
               "tr": "SMS yalnızca Türkiye'deki (+90) cep telefonlarına gönderilir; Türkiye'den bir cep telefonu "
                     "numarası yazın, örneğin 0532 123 45 67."}
NOT_MOBILE = {"en": "SMS can only go to a mobile phone; enter a mobile number.",
              "tr": "SMS yalnızca cep telefonuna gönderilebilir; bir cep telefonu numarası yazın."}


@pytest.mark.parametrize("lang", ["en", "tr"])
@pytest.mark.parametrize("phone, messages", [
    ("+44 7911 123456", NOT_TURKISH),     # a British mobile: SMS pumping abroad
    ("+49 151 23456789", NOT_TURKISH),    # a German mobile
    ("+1 650 253 0000", NOT_TURKISH),     # phonenumbers: fixed line or mobile
    ("+994 50 123 45 67", NOT_TURKISH),   # an Azerbaijani mobile
    ("0850 222 00 00", NOT_MOBILE),       # Türkiye, but not a mobile (VoIP)
    ("0888 123 45 67", NOT_MOBILE),       # Türkiye, premium rate
    ("+90 212 555 00 00", NOT_MOBILE),    # Türkiye, fixed line
])
def test_sms_goes_only_to_turkish_mobile_numbers(web, db, tmp_path, lang, phone, messages):
    response = submit(web, lang, channels=("sms",), phone=phone)
    assert response.status_code == 400
    assert f'<p class="error">{escape(messages[lang])}</p>' in response.text
    assert count(db, OptinRequest) == 0 and count(db, Contact) == 0
    assert outbox_files(tmp_path) == []


@pytest.mark.parametrize("phone", ["0532 123 45 67", "+90 532 123 45 67", "0090 532 123 45 67", "5321234567"])
def test_turkish_mobile_numbers_in_any_form_get_the_code(web, db, tmp_path, phone):
    assert submit(web, "en", channels=("sms",), phone=phone).status_code == 200
    assert outbox_files(tmp_path) == ["1000000001.sms.json"]
    with db.session() as session:
        assert session.scalars(select(OptinRequest)).one().address == PHONE_E164


def test_turkish_mobile():
    assert optin.turkish_mobile("+905321234567") is True
    assert optin.turkish_mobile("+447911123456") is False
    assert optin.turkish_mobile("+902125550000") is False
    assert optin.turkish_mobile("+16502530000") is False
    assert [optin.sms_refusal(n) for n in ("+905321234567", "+447911123456", "+902125550000", "+908502220000")] == [
        None, "phone_not_turkish", "phone_not_mobile", "phone_not_mobile"]


# --- control characters from the request -----------------------------------------------------------

def test_clean_text():
    assert optin.clean_text("a\x00b\x01c\x08d\x0be\x0cf\x1bg\x1fh") == "abcdefgh"
    assert optin.clean_text("tab\there\nnew\r\nline\rend") == "tab\there\nnew\nline\nend"
    assert optin.clean_text("lone \ud800 surrogate") == "lone \ufffd surrogate"
    assert optin.clean_text("Ayşe Yılmaz \x7f") == "Ayşe Yılmaz \x7f"  # DEL is not C0


def test_nul_and_control_characters_in_the_form_are_dropped(web, db, tmp_path):
    response = submit(web, "en", channels=("email", "sms"), first_name="Ay\x00şe\x01", last_name="\x1bYıl\x00maz",
                      email="ayse.yilmaz@example.com\x00", phone="0532\x00 123 45 67",
                      user_agent="Form\x01Browser/1")
    assert response.status_code == 200
    with db.session() as session:
        requests = session.scalars(select(OptinRequest).order_by(OptinRequest.id)).all()
        assert [(r.channel, r.address, r.first_name, r.last_name, r.user_agent) for r in requests] == [
            ("email", EMAIL, "Ayşe", "Yılmaz", "FormBrowser/1"), ("sms", PHONE_E164, "Ayşe", "Yılmaz", "FormBrowser/1")]
    code = sms_code(tmp_path, "1000000002.sms.json")
    done = web.post(code_path(response), data={"csrf": csrf_of(response), "code": code[:2] + "\x00" + code[2:]})
    assert done.status_code == 200 and "your subscription is confirmed" in done.text
    [event] = events(db)
    proof = json.loads(event.proof)
    assert (event.recipient, proof["first_name"], proof["last_name"]) == (PHONE_E164, "Ayşe", "Yılmaz")


def test_a_name_of_control_characters_only_is_missing(web, db):
    response = submit(web, "en", first_name="\x00\x01", last_name="\x00")
    assert response.status_code == 400
    assert '<p class="error">Enter your first name.</p>' in response.text
    assert '<p class="error">Enter your surname.</p>' in response.text
    assert count(db, OptinRequest) == 0
