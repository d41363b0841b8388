"""Opt-in over the web, with double opt-in: the embeddable form, the email link, the SMS code.

1. ``GET /optin`` (``?lang=tr|en``) shows the form: first name, surname, email and/or mobile
   phone, one **unticked** box per channel, the consent text (``templates/web/consent.LANG.txt``)
   with its version (``[web] consent_text_version``), the KVKK notice link and a CSRF token. The
   form, and every page of its flow, may be framed by any site (``frame-ancestors *``). SMS goes
   only to Türkiye's mobile numbers (+90, phonenumbers type MOBILE), so the form cannot be used
   to pump SMS to foreign or premium-rate numbers.
2. ``POST /optin`` validates, then for each ticked channel stores an `OptinRequest` holding
   hashes of its secrets and the names as typed (no contact yet), and sends a confirmation
   message that is **not commercial** (no promotion, no names from the form, so the form cannot
   be used to send anyone text of an attacker's choosing): an email with
   ``{base_url}/optin/confirm/{token}``, or an SMS with a 6-digit code, entered on
   ``/optin/code/{ref}``. The answer is the same whether the address is known or not, and so is
   the work done: nothing looks the address up before it is confirmed.
3. ``GET /optin/confirm/{token}`` only shows a button (mail scanners prefetch links);
   ``POST`` records the ONAY. ``POST /optin/code/{ref}`` with the right code does the same for SMS.

Nothing is recorded before the person confirms: silence is refusal. The ONAY (source ``HS_WEB``,
consent date = the confirmation instant) carries as proof the first name and surname as typed on
the form (law 6563: a consent names the person), the text version and the SHA-256 of the exact
text shown, the IP and user agent of the form and of the confirmation, and both times.

Every text taken from a request (form fields, user agent) loses NUL and the other C0 control
characters except tab and newline, and lone surrogates become U+FFFD: PostgreSQL stores neither.

Stored secrets, never the values themselves:
- email: ``token_hash = sha256(token)``, the token being 32 random bytes, URL-safe;
- SMS: ``token_hash = sha256(ref)``, ``ref`` an opaque random reference naming the code form
  (request ids are guessable, refs are not), and ``code_hash = sha256(str(request.id) + code)``.
A token is looked up by its hash (timing then reveals at most a hash prefix); codes are compared
with `hmac.compare_digest`. Email links live 48 hours; SMS codes 10 minutes and 5 wrong tries.
A token only opens its own channel's route: an SMS ref is not an email confirmation link.

Confirmation messages go through the channel adapters with ``commercial=False`` and
``delivery_id = OPTIN_DELIVERY_OFFSET + request.id``: the outbox names files by delivery id, and
campaign deliveries (ids counted from 1) never reach the offset, so the files cannot collide.

Abuse limits: every POST is rate limited per IP; at most `MAX_REQUESTS_PER_ADDRESS_HOUR`
confirmations go to one address and channel per hour, whoever asks (this stops mail bombing and
SMS pumping through the form); past it the page looks the same and no message is sent.

Contacts are found or made only when an address is confirmed, and hold that address alone: an
address someone typed but did not confirm is never attached to anyone (else a stranger's email
typed next to one's own phone would join the two, and the stranger's ONAY would land on the other
person's contact). On confirmation, the contact owning the address (``Contact.email`` /
``Contact.phone``, lowest id) is used and never modified; an address nobody owns gets a new contact
of its own, ``external_id = "web-" + sha256(address)[:16]``, with the names as typed and the form's
language (one already made under that id, its address changed since, is reused, not modified).
A form with both channels thus makes two contacts when both are confirmed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import secrets as token_source
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import phonenumbers
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from izin.channels.base import OutgoingMessage
from izin.channels.errors import ChannelError
from izin.clock import iso_istanbul
from izin.config import Settings
from izin.consent.addresses import AddressError, normalise_email, normalise_phone
from izin.consent.contacts import ContactFields, upsert
from izin.consent.ledger import LedgerWriter
from izin.consent.models import Contact, OptinRequest
from izin.consent.web.i18n import LANGUAGES, language
from izin.consent.web.pages import WEB_TEMPLATES, not_found, page
from izin.consent.web.security import clean_text, client_ip, csrf_ok, csrf_pair, set_csrf_cookie
from izin.errors import ConsentRefused

log = logging.getLogger(__name__)

#: added to an OptinRequest id to make the delivery id of its confirmation message
OPTIN_DELIVERY_OFFSET = 1_000_000_000
EMAIL_TTL = timedelta(hours=48)
SMS_TTL = timedelta(minutes=10)
MAX_CODE_ATTEMPTS = 5
#: confirmation messages to one address on one channel per hour, whoever asks
MAX_REQUESTS_PER_ADDRESS_HOUR = 3
CHANNELS = ("email", "sms")
#: the proof of every ONAY this flow records says so
ROUTE = "double-opt-in"
FRAMEABLE = "frame-ancestors *"
NOT_FRAMEABLE = "frame-ancestors 'none'"
_CODE = re.compile(r"^[0-9]{6}$")  # ASCII digits only: \d takes any script's digits
#: C0 controls but tab and newline; lone surrogates, which no database stores
#: the only country SMS confirmations go to
SMS_COUNTRY_CODE = 90
_NAME_MAX = 100

#: what the form and the code page say when something is wrong
MESSAGES: dict[str, dict[str, str]] = {
    "tr": {
        "first_name": "Adınızı yazın.",
        "last_name": "Soyadınızı yazın.",
        "name_long": "En fazla 100 karakter yazın.",
        "channels": "En az bir kutuyu işaretleyin: e-posta veya SMS.",
        "email_missing": "E-posta ile ileti almak için e-posta adresinizi yazın.",
        "email_invalid": "Bu e-posta adresi geçerli değil; örneğin ad@ornek.com yazın.",
        "phone_missing": "SMS almak için cep telefonu numaranızı yazın.",
        "phone_invalid": "Bu telefon numarası geçerli değil; örneğin 0532 123 45 67 yazın.",
        "phone_not_mobile": "SMS yalnızca cep telefonuna gönderilebilir; bir cep telefonu numarası yazın.",
        "phone_not_turkish": "SMS yalnızca Türkiye'deki (+90) cep telefonlarına gönderilir; "
                             "Türkiye'den bir cep telefonu numarası yazın, örneğin 0532 123 45 67.",
        "text_changed": "Onay metni güncellendi; lütfen güncel metni okuyup formu yeniden gönderin.",
        "code_format": "SMS ile gelen 6 haneli kodu yazın.",
        "code_wrong": "Kod yanlış. {left} deneme hakkınız kaldı.",
        "code_wrong_one": "Kod yanlış. 1 deneme hakkınız kaldı.",
    },
    "en": {
        "first_name": "Enter your first name.",
        "last_name": "Enter your surname.",
        "name_long": "Use at most 100 characters.",
        "channels": "Tick at least one box: email or SMS.",
        "email_missing": "Enter your email address to get messages by email.",
        "email_invalid": "This email address is not valid; write e.g. name@example.com.",
        "phone_missing": "Enter your mobile phone number to get SMS.",
        "phone_invalid": "This phone number is not valid; write e.g. 0532 123 45 67.",
        "phone_not_mobile": "SMS can only go to a mobile phone; enter a mobile number.",
        "phone_not_turkish": "SMS only goes to Turkish (+90) mobile phones; enter a Turkish mobile number, "
                             "e.g. 0532 123 45 67.",
        "text_changed": "The consent text has been updated; please read the current text and send the form again.",
        "code_format": "Enter the 6-digit code we sent by SMS.",
        "code_wrong": "Wrong code. {left} attempts left.",
        "code_wrong_one": "Wrong code. 1 attempt left.",
    },
}

#: the confirmation email and SMS: they ask, they do not promote (law 6563; reference §1.3)
_EMAIL_SUBJECT = {"tr": "E-posta adresinizi onaylayın", "en": "Please confirm your email address"}
_EMAIL_BODY = {
    "tr": ("Merhaba,\n\n"
           "{sender} iletilerine abone olmak için bu e-posta adresiyle bir form dolduruldu. İsteği onaylamak "
           "için aşağıdaki bağlantıyı açın ve sayfadaki \"Onaylıyorum\" düğmesine basın:\n\n"
           "{link}\n\n"
           "Bağlantı 48 saat geçerlidir. Bu isteği siz yapmadıysanız bu e-postayı dikkate almayın: onay "
           "vermediğiniz sürece size ticari elektronik ileti gönderilmez.\n\n"
           "Bu e-posta yalnızca isteğinizi doğrulamak için gönderilmiştir; ticari elektronik ileti değildir.\n"
           "{identity}\n"),
    "en": ("Hello,\n\n"
           "A form on the website of {sender} was filled in with this email address to receive its messages. "
           "To confirm the request, open the link below and press the \"I confirm\" button on the page:\n\n"
           "{link}\n\n"
           "The link is valid for 48 hours. If you did not make this request, ignore this email: unless you "
           "confirm, you will not receive commercial electronic messages from us.\n\n"
           "This email only verifies your request; it is not a commercial electronic message.\n"
           "{identity}\n"),
}
# plain GSM-7 text (no Turkish letters), so the code always fits one SMS part
_SMS_TEXT = {
    "tr": "Abonelik onay kodunuz: {code}. Kod 10 dakika gecerlidir. Bu istegi siz yapmadiysaniz dikkate almayin.",
    "en": "Your subscription confirmation code is {code}. It is valid for 10 minutes. "
          "If you did not ask for it, ignore this message.",
}


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def code_hash(request_id: int, code: str) -> str:
    return sha256_hex(f"{request_id}{code}")


def delivery_id(optin_id: int) -> int:
    """The delivery id a confirmation message is sent (and an outbox file named) under."""
    return OPTIN_DELIVERY_OFFSET + optin_id


def web_external_id(address: str) -> str:
    """The external_id of a contact the form creates for an address nobody owns."""
    return "web-" + sha256_hex(address)[:16]


def _sender_label(settings: Settings) -> str:
    sender = settings.sender
    name = sender.name or sender.email or urlsplit(settings.web.base_url).hostname or "izin"
    return f"{name} (MERSİS No: {sender.mersis})" if sender.mersis else name


def _sender_contact(settings: Settings) -> str:
    sender = settings.sender
    return " · ".join(p for p in (sender.phone, sender.email) if p) or settings.web.base_url


def consent_text(settings: Settings, lang: str) -> str:
    """The consent text exactly as the form shows it; its SHA-256 is stored as proof."""
    raw = (WEB_TEMPLATES / f"consent.{lang}.txt").read_text(encoding="utf-8")
    return raw.replace("{sender}", _sender_label(settings)).replace("{contact}", _sender_contact(settings))


@dataclass
class FormValues:
    """What the person typed, kept to show the form again."""

    first_name: str = ""
    last_name: str = ""
    email: str = ""
    phone: str = ""
    channels: list[str] = field(default_factory=list)


@dataclass
class Pending:
    """One confirmation to send; `optin_id` None when the address is over its hourly limit."""

    channel: str
    address: str
    optin_id: int | None
    secret: str
    code: str | None = None


def _text(form: FormData, name: str, limit: int = 1000) -> str:
    value = form.get(name)
    return clean_text(value).strip()[:limit] if isinstance(value, str) else ""


def _user_agent(request: Request) -> str:
    return clean_text(request.headers.get("user-agent", ""))


def _ip(request: Request) -> str:
    return clean_text(client_ip(request))


def sms_refusal(e164: str) -> str | None:
    """Why a valid number gets no SMS code (a key of MESSAGES), or None for a Turkish mobile number:
    +90, and typed MOBILE by phonenumbers (not fixed line, not 'fixed line or mobile')."""
    number = phonenumbers.parse(e164)
    if number.country_code != SMS_COUNTRY_CODE:
        return "phone_not_turkish"
    if phonenumbers.number_type(number) != phonenumbers.PhoneNumberType.MOBILE:
        return "phone_not_mobile"
    return None


def turkish_mobile(e164: str) -> bool:
    """A +90 number that phonenumbers types MOBILE."""
    return sms_refusal(e164) is None


def _secure(settings: Settings) -> bool:
    return settings.web.base_url.startswith("https://")


def _form_lang(request: Request, form: FormData) -> str:
    asked = _text(form, "lang")
    return asked if asked in LANGUAGES else language(request)


def _csrf(request: Request) -> tuple[str, str | None]:
    return csrf_pair(request, request.app.state.secrets[0])


def _check_csrf(request: Request, form: FormData) -> None:
    submitted = _text(form, "csrf")
    # compare_digest refuses non-ASCII text with a TypeError: such a token is simply wrong
    if not submitted.isascii() or not csrf_ok(request, submitted, request.app.state.secrets):
        raise HTTPException(403, "the form has expired; reload it")


def _render(request: Request, name: str, lang: str, *, status: int = 200, frameable: bool = True,
            **context: Any) -> Response:
    """A page of this flow with a CSRF token for its form."""
    token, fresh = _csrf(request)
    response = page(request, name, lang, status=status, csrf=token, **context)
    set_csrf_cookie(response, fresh, _secure(request.app.state.settings))
    response.headers["Content-Security-Policy"] = FRAMEABLE if frameable else NOT_FRAMEABLE
    return response


def _form_page(request: Request, lang: str, values: FormValues, errors: dict[str, str],
               status: int = 200) -> Response:
    settings: Settings = request.app.state.settings
    text = consent_text(settings, lang)
    return _render(request, "optin.html.j2", lang, status=status, values=values, errors=errors,
                   consent_text=text, text_version=settings.web.consent_text_version,
                   text_hash=sha256_hex(text), kvkk_notice_url=settings.web.kvkk_notice_url)


def validate(form: FormData, lang: str) -> tuple[FormValues, dict[str, str], dict[str, str], bool]:
    """(values as typed, errors by field, {channel: normalised address}, phone is mobile)."""
    messages = MESSAGES[lang]
    values = FormValues(first_name=_text(form, "first_name"), last_name=_text(form, "last_name"),
                        email=_text(form, "email"), phone=_text(form, "phone"),
                        channels=[c for c in CHANNELS if c in form.getlist("channel")])
    errors: dict[str, str] = {}
    for name in ("first_name", "last_name"):
        value = getattr(values, name)
        if not value:
            errors[name] = messages[name]
        elif len(value) > _NAME_MAX:
            errors[name] = messages["name_long"]
    if not values.channels:
        errors["channel"] = messages["channels"]
    wanted: dict[str, str] = {}
    mobile = False
    if "email" in values.channels:
        if not values.email:
            errors["email"] = messages["email_missing"]
        else:
            try:
                wanted["email"] = normalise_email(values.email)
            except AddressError:
                errors["email"] = messages["email_invalid"]
    if "sms" in values.channels:
        if not values.phone:
            errors["phone"] = messages["phone_missing"]
        else:
            try:
                phone = normalise_phone(values.phone)
            except AddressError:
                errors["phone"] = messages["phone_invalid"]
            else:
                refusal = sms_refusal(phone.e164)
                if refusal is None:
                    wanted["sms"], mobile = phone.e164, True
                else:
                    errors["phone"] = messages[refusal]
    return values, errors, wanted, mobile


def _owner(session: Session, channel: str, address: str) -> Contact | None:
    column = Contact.email if channel == "email" else Contact.phone
    return session.scalars(select(Contact).where(column == address).order_by(Contact.id).limit(1)).first()


def _contact_for(session: Session, optin: OptinRequest, now: datetime) -> Contact:
    """The contact of a just-confirmed address: its owner, else one made for this address alone.

    An existing contact is never modified; a new one carries the names as typed on the form.
    """
    owner = _owner(session, optin.channel, optin.address)
    if owner is not None:
        return owner
    external_id = web_external_id(optin.address)
    existing = session.scalars(select(Contact).where(Contact.external_id == external_id)).first()
    if existing is not None:  # made by an earlier confirmation, its address changed since: reuse, not modify
        return existing
    fields: dict[str, Any] = {"first_name": optin.first_name, "last_name": optin.last_name, "locale": optin.locale}
    if optin.channel == "email":
        fields["email"] = optin.address
    else:  # the form takes only mobile numbers for SMS
        fields["phone"], fields["phone_mobile"] = optin.address, True
    upsert(session, ContactFields(external_id=external_id, fields=fields), None, now)
    session.flush()
    return session.scalars(select(Contact).where(Contact.external_id == external_id)).one()


def _create_requests(db: Any, wanted: dict[str, str], values: FormValues, lang: str, text_version: str,
                     text_hash: str, ip: str, user_agent: str, now: datetime) -> list[Pending]:
    """One OptinRequest per address; no contact is looked up or made before the confirmation, so a
    known address and an unknown one take the same path."""
    pending: list[Pending] = []
    with db.session() as session:
        for channel, address in wanted.items():
            recent = session.scalar(select(func.count()).select_from(OptinRequest).where(
                OptinRequest.address == address, OptinRequest.channel == channel,
                OptinRequest.created_at > now - timedelta(hours=1)))
            secret = token_source.token_urlsafe(32 if channel == "email" else 24)
            if (recent or 0) >= MAX_REQUESTS_PER_ADDRESS_HOUR:
                log.warning("opt-in: %s confirmations to one address in the last hour; not sending another",
                            recent)
                pending.append(Pending(channel, address, None, secret))
                continue
            optin = OptinRequest(
                token_hash=sha256_hex(secret), channel=channel, address=address, contact_id=None,
                first_name=values.first_name or None, last_name=values.last_name or None, locale=lang,
                text_version=text_version, text_hash=text_hash, ip=ip[:64], user_agent=user_agent[:512],
                code_hash=None, attempts=0, created_at=now,
                expires_at=now + (EMAIL_TTL if channel == "email" else SMS_TTL))
            session.add(optin)
            session.flush()
            code = None
            if channel == "sms":
                code = f"{token_source.randbelow(10 ** 6):06d}"
                optin.code_hash = code_hash(optin.id, code)
            pending.append(Pending(channel, address, optin.id, secret, code))
    return pending


def _message(settings: Settings, item: Pending, lang: str) -> OutgoingMessage:
    assert item.optin_id is not None
    if item.channel == "email":
        sender = settings.sender
        identity = " · ".join(p for p in (_sender_label(settings), sender.phone, sender.email) if p)
        link = f"{settings.web.base_url.rstrip('/')}/optin/confirm/{item.secret}"
        body = _EMAIL_BODY[lang].format(sender=sender.name or _sender_label(settings), link=link,
                                        identity=identity)
        return OutgoingMessage(delivery_id=delivery_id(item.optin_id), channel="email", to=item.address,
                               commercial=False, subject=_EMAIL_SUBJECT[lang], text=body,
                               from_name=settings.sender.name)
    return OutgoingMessage(delivery_id=delivery_id(item.optin_id), channel="sms", to=item.address,
                           commercial=False, sender=settings.sender.sms_header,
                           sms_text=_SMS_TEXT[lang].format(code=item.code))


def _send(request: Request, pending: list[Pending], lang: str, now: datetime) -> bool:
    """Send every confirmation; on a failure, kill the requests not sent and return False."""
    from izin.consent.web.app import channel_adapters

    settings: Settings = request.app.state.settings
    failed: list[int] = []
    for item in pending:
        if item.optin_id is None:
            continue
        try:
            adapter = channel_adapters(request.app).get(item.channel)
            if adapter is None:
                raise ChannelError(f"no adapter for {item.channel}")
            adapter.send(_message(settings, item, lang))
        except ChannelError as exc:
            log.error("opt-in: the %s confirmation (request %s) was not sent: %s", item.channel,
                      item.optin_id, exc)
            failed.append(item.optin_id)
    if failed:
        with request.app.state.db.session() as session:
            for optin_id in failed:
                optin = session.get(OptinRequest, optin_id)
                if optin is not None:
                    optin.expires_at = now
    return not failed


# --- routes -------------------------------------------------------------------------------------

async def form(request: Request) -> Response:
    """GET /optin: the empty form, every box unticked."""
    return _form_page(request, language(request), FormValues(), {})


async def submit(request: Request) -> Response:
    """POST /optin: validate, store the requests, send the confirmations."""
    request.app.state.limiter.check(request, "optin")
    data = await request.form()
    lang = _form_lang(request, data)
    _check_csrf(request, data)
    settings: Settings = request.app.state.settings
    values, errors, wanted, _ = validate(data, lang)
    text = consent_text(settings, lang)
    text_hash = sha256_hex(text)
    if not errors and not hmac.compare_digest(_text(data, "text_hash").encode(), text_hash.encode()):
        errors["consent"] = MESSAGES[lang]["text_changed"]  # the person read another text than we would store
    if errors:
        return _form_page(request, lang, values, errors, status=400)
    now = request.app.state.now()
    pending = await run_in_threadpool(
        _create_requests, request.app.state.db, wanted, values, lang, settings.web.consent_text_version,
        text_hash, _ip(request), _user_agent(request), now)
    sent = await run_in_threadpool(_send, request, pending, lang, now)
    if not sent:
        return _render(request, "error.html.j2", lang, status=503, status_code=503)
    sms = next((p for p in pending if p.channel == "sms"), None)
    if sms is not None:
        return _render(request, "optin_code.html.j2", lang, ref=sms.secret, email_sent="email" in wanted,
                       error=None)
    return _render(request, "optin_sent.html.j2", lang)


def _load(session: Session, secret: str, channel: str, *, lock: bool = False) -> OptinRequest | None:
    query = select(OptinRequest).where(OptinRequest.token_hash == sha256_hex(secret),
                                       OptinRequest.channel == channel)
    if lock:
        query = query.with_for_update()
    return session.scalars(query).first()


def _alive(optin: OptinRequest, now: datetime) -> bool:
    return optin.expires_at > now and optin.attempts < MAX_CODE_ATTEMPTS


def _peek(db: Any, secret: str, channel: str, now: datetime) -> tuple[str, str | None]:
    """('open' | 'done' | 'gone', the request's locale) without changing anything."""
    with db.session() as session:
        optin = _load(session, secret, channel)
        if optin is None:
            return "gone", None
        if optin.confirmed_at is not None:
            return "done", optin.locale
        return ("open" if _alive(optin, now) else "gone"), optin.locale


def _record(session: Session, optin: OptinRequest, now: datetime, ip: str, user_agent: str) -> None:
    """The ONAY for a confirmed request (an address already ONAY: nothing new), in this transaction.

    The contact is found or made now, by the confirmed address alone (see the module's docstring).
    """
    contact = _contact_for(session, optin, now)
    optin.contact_id = contact.id
    proof = json.dumps({
        "route": ROUTE,
        "first_name": optin.first_name,
        "last_name": optin.last_name,
        "text_version": optin.text_version,
        "text_hash": optin.text_hash,
        "form_ip": optin.ip,
        "form_user_agent": optin.user_agent,
        "confirm_ip": ip[:64],
        "confirm_user_agent": user_agent[:512],
        "requested_at": iso_istanbul(optin.created_at),
        "confirmed_at": iso_istanbul(now),
    }, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    try:
        recorded = LedgerWriter(session).record(contact, optin.channel, "ONAY", "HS_WEB", now, now, proof=proof,
                                                recipient=optin.address)
    except ConsentRefused as exc:
        if exc.reason != "duplicate_status":
            raise
        log.info("opt-in: %s", exc.message)  # already ONAY: the confirmation changes nothing
    else:
        session.flush()  # the event row exists before the request points at it
        optin.consent_event_id = recorded.event.id
    optin.confirmed_at = now


def _retrying(work: Any, *args: Any) -> Any:
    """Run a confirmation again when a concurrent one for the same unknown address made its contact
    first (PostgreSQL: unique external_id); the second run finds that contact."""
    try:
        return work(*args)
    except IntegrityError:
        return work(*args)


def _confirm(db: Any, token: str, now: datetime, ip: str, user_agent: str) -> tuple[str, str | None]:
    return _retrying(_confirm_once, db, token, now, ip, user_agent)


def _confirm_once(db: Any, token: str, now: datetime, ip: str, user_agent: str) -> tuple[str, str | None]:
    with db.session() as session:
        optin = _load(session, token, "email", lock=True)
        if optin is None:
            return "gone", None
        if optin.confirmed_at is not None:
            return "done", optin.locale
        if not _alive(optin, now):
            return "gone", optin.locale
        _record(session, optin, now, ip, user_agent)
        return "done", optin.locale


def _check_code(db: Any, ref: str, code: str, now: datetime, ip: str,
                user_agent: str) -> tuple[str, str | None, int]:
    """(outcome, locale, attempts left): outcome 'done', 'gone', 'format' or 'wrong'."""
    return _retrying(_check_code_once, db, ref, code, now, ip, user_agent)


def _check_code_once(db: Any, ref: str, code: str, now: datetime, ip: str,
                     user_agent: str) -> tuple[str, str | None, int]:
    with db.session() as session:
        optin = _load(session, ref, "sms", lock=True)
        if optin is None:
            return "gone", None, 0
        if optin.confirmed_at is not None:
            return "done", optin.locale, 0
        if not _alive(optin, now) or optin.code_hash is None:
            return "gone", optin.locale, 0
        left = MAX_CODE_ATTEMPTS - optin.attempts
        if not _CODE.match(code):
            return "format", optin.locale, left  # a typo in the form is not a guess
        if hmac.compare_digest(code_hash(optin.id, code), optin.code_hash):
            _record(session, optin, now, ip, user_agent)
            return "done", optin.locale, left
        optin.attempts += 1
        left -= 1
        return ("wrong" if left > 0 else "gone"), optin.locale, left


def _refused(request: Request, lang: str, exc: ConsentRefused) -> Response:
    log.warning("opt-in: the ledger refused the ONAY: %s", exc.message)
    return page(request, "error.html.j2", lang, status=409, status_code=409)


async def confirm_page(request: Request) -> Response:
    """GET /optin/confirm/{token}: a button, nothing recorded (link scanners fetch GETs)."""
    token = request.path_params["token"]
    state, locale = await run_in_threadpool(_peek, request.app.state.db, token, "email", request.app.state.now())
    lang = language(request, locale)
    if state == "gone":
        return not_found(request, lang)
    return _render(request, "optin_done.html.j2", lang, frameable=False, state="confirm" if state == "open" else "done",
                   channel="email", action=f"/optin/confirm/{token}")


async def confirm(request: Request) -> Response:
    """POST /optin/confirm/{token}: record the ONAY."""
    request.app.state.limiter.check(request, "optin-confirm")
    token = request.path_params["token"]
    data = await request.form()
    _check_csrf(request, data)
    try:
        state, locale = await run_in_threadpool(_confirm, request.app.state.db, token, request.app.state.now(),
                                                _ip(request), _user_agent(request))
    except ConsentRefused as exc:
        return _refused(request, language(request), exc)
    lang = language(request, locale)
    if state == "gone":
        return not_found(request, lang)
    return _render(request, "optin_done.html.j2", lang, frameable=False, state="done", channel="email", action="")


async def code_page(request: Request) -> Response:
    """GET /optin/code/{ref}: the form for the SMS code."""
    ref = request.path_params["ref"]
    state, locale = await run_in_threadpool(_peek, request.app.state.db, ref, "sms", request.app.state.now())
    lang = language(request, locale)
    if state == "gone":
        return not_found(request, lang)
    if state == "done":
        return _render(request, "optin_done.html.j2", lang, state="done", channel="sms", action="")
    return _render(request, "optin_code.html.j2", lang, ref=ref, email_sent=False, error=None)


async def check_code(request: Request) -> Response:
    """POST /optin/code/{ref}: the right code within its time and tries records the ONAY."""
    request.app.state.limiter.check(request, "optin-code")
    ref = request.path_params["ref"]
    data = await request.form()
    _check_csrf(request, data)
    code = re.sub(r"\s", "", _text(data, "code", 64))
    try:
        state, locale, left = await run_in_threadpool(
            _check_code, request.app.state.db, ref, code, request.app.state.now(), _ip(request),
            _user_agent(request))
    except ConsentRefused as exc:
        return _refused(request, language(request), exc)
    lang = language(request, locale)
    if state == "gone":
        return not_found(request, lang)
    if state == "done":
        return _render(request, "optin_done.html.j2", lang, state="done", channel="sms", action="")
    key = "code_format" if state == "format" else "code_wrong_one" if left == 1 else "code_wrong"
    error = MESSAGES[lang][key].format(left=left)
    return _render(request, "optin_code.html.j2", lang, status=400, ref=ref, email_sent=False, error=error)


routes: list[BaseRoute] = [
    Route("/optin", form, methods=["GET"]),
    Route("/optin", submit, methods=["POST"]),
    Route("/optin/confirm/{token}", confirm_page, methods=["GET"]),
    Route("/optin/confirm/{token}", confirm, methods=["POST"]),
    Route("/optin/code/{ref}", code_page, methods=["GET"]),
    Route("/optin/code/{ref}", check_code, methods=["POST"]),
]
