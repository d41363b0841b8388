"""Unsubscribe links, RFC 8058 one-click POSTs and the preference centre.

Routes (the token is the only authority: no login, no cookie, no contact id in the URL):

- ``GET /u/{token}``: a confirmation page in the contact's language. It changes nothing (link
  scanners and mail clients open links by themselves); its button POSTs to the same URL.
- ``POST /u/{token}``: the RFC 8058 one-click unsubscribe (``List-Unsubscribe=One-Click``, form or
  multipart, no cookies, no CSRF) and the confirmation button. It records a RET for the token's
  (address, channel), source ``HS_WEB``, and the ledger cancels queued deliveries to that address on
  that channel in the same transaction. It answers 200 with a short page, never a redirect
  (redirected POSTs turn into GETs); repeating it records nothing new and answers the same.
- ``GET /p/{token}``: the preference centre: the current status of email, SMS and call.
- ``POST /p/{token}``: turn channels off (CSRF-protected form, cookie ``SameSite=Strict``).

Decisions:

- **The preference centre only turns channels off.** Turning a channel on is an opt-in, and an
  opt-in must be explicit and confirmed (law 6563, Regulation "onayın alınması"; double opt-in):
  a link that anyone holding a forwarded message can open is not proof that the owner of the
  address consented, least of all for *another* channel (a token naming an email says nothing
  about who holds the phone). So a channel that is off shows a link to the opt-in form
  (``/optin?lang=..``), which confirms the address by a link or a one-time code before it records
  ONAY. Turning off needs no such proof: a RET can only stop messages, never start them.
- **Whose channels.** A token names an address, not a person. The preference centre shows the other
  channels only of the one contact whose *current* address the token names; an address that was a
  contact's once (and may have been recycled to someone else since), that nobody owns, or that
  several contacts share, shows only the token's own (address, channel). Addresses are masked.
  A RET is recorded for the address whoever owns it; it names the (first) contact whose current
  address it is, or no contact.
- **Nothing is revealed.** A forged, tampered, truncated or retired-key token gets the one 404 page
  (``not_found``); a valid token for an address izin has never seen records a first-ever RET (kept
  as a local suppression, İYS refuses those) and gets exactly the page a known address gets. The
  language follows the contact's locale (the issue asks for it), which only the holder of a
  genuine token, i.e. someone we wrote to, can observe.
- **Proof** of every event: JSON ``{"route", "ip", "user_agent", "token_id"}`` where ``route`` is
  ``one-click``, ``confirm-page`` or ``preferences`` and ``token_id`` is the first 16 hex digits of
  the token's SHA-256 (the token itself is not stored).
- Every state-changing request is rate limited per client IP (buckets ``unsubscribe`` and
  ``preferences``), checked before the token so that guessing costs the same as using.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import phonenumbers
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from izin.consent.gate import may_send, usable_address
from izin.consent.ledger import LedgerWriter, Recorded, withdraw_address
from izin.consent.models import ADDRESS_KIND, CHANNELS, ConsentState, Contact
from izin.consent.tokens import BadToken, read_token
from izin.consent.web.i18n import language
from izin.consent.web.pages import not_found, page
from izin.consent.web.security import client_ip, csrf_ok, csrf_pair, set_csrf_cookie

#: the İYS source of every event recorded here
SOURCE = "HS_WEB"
#: how much of a user agent the proof keeps
_MAX_USER_AGENT = 512
#: a channel is "on" (messages go), "off" (a RET is recorded) or "none" (no consent: nothing goes)
ON, OFF, NONE = "on", "off", "none"


def token_id(token: str) -> str:
    """What the proof names a token by: never the token itself, which would let a reader act."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()[:16]


def mask_address(address: str) -> str:
    """Enough of an address for its owner to recognise it: a***@example.com, +90 532 *** ** 67."""
    if "@" in address:
        local, _, domain = address.rpartition("@")
        return f"{local[:1]}***@{domain}"
    try:
        number = phonenumbers.parse(address, None)
        national = phonenumbers.national_significant_number(number)
        country = number.country_code
    except phonenumbers.NumberParseException:
        return "***"
    if len(national) < 7:
        return f"+{country} ***"
    return f"+{country} {national[:3]} *** ** {national[-2:]}"


def _proof(request: Request, token: str, route: str) -> str:
    return json.dumps({"route": route, "ip": client_ip(request),
                       "user_agent": request.headers.get("user-agent", "")[:_MAX_USER_AGENT],
                       "token_id": token_id(token)},
                      ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def _named(request: Request) -> tuple[str, str, str] | None:
    """(token, address, channel) of the URL's token, or None when it does not verify."""
    token = request.path_params["token"]
    try:
        address, channel = read_token(request.app.state.secrets, token)
    except BadToken:
        return None
    return token, address, channel


async def _form(request: Request) -> FormData:
    """The posted form, or an empty one when the body is no form (the token is the authority)."""
    try:
        return await request.form(max_files=0, max_fields=20)
    except Exception:  # a malformed body must not stop an opt-out
        return FormData()


def _owners(session: Session, address: str, channel: str) -> list[Contact]:
    """Up to two contacts whose current address for the channel's kind is `address`."""
    column = Contact.email if ADDRESS_KIND[channel] == "email" else Contact.phone
    return list(session.scalars(select(Contact).where(column == address).order_by(Contact.id).limit(2)))


def _locale(session: Session, address: str, channel: str) -> str | None:
    """The locale of the contact the address belongs to now, if any: pages speak their language."""
    owners = _owners(session, address, channel)
    return owners[0].locale if owners else None


def _status(session: Session, contact: Contact | None, address: str, channel: str, now: datetime) -> str:
    """ON, OFF or NONE for one (address, channel): the send gate's answer where it applies."""
    if contact is not None and usable_address(contact, channel) == address:
        decision = may_send(session, contact, channel, now)
        if decision.allowed:
            return ON
        return OFF if decision.status == "RET" else NONE
    statuses = set(session.scalars(select(ConsentState.status).where(
        ConsentState.recipient == address, ConsentState.channel == channel)))
    return OFF if "RET" in statuses else ON if "ONAY" in statuses else NONE


@dataclass(frozen=True)
class Row:
    """One channel of the preference centre."""

    channel: str
    address: str
    masked: str
    status: str


@dataclass(frozen=True)
class View:
    """What a page about one token shows."""

    locale: str | None
    rows: list[Row]


def _view(session: Session, address: str, channel: str, now: datetime) -> View:
    owners = _owners(session, address, channel)
    owner = owners[0] if len(owners) == 1 else None
    addresses = {channel: address}
    if owner is not None:
        for other in CHANNELS:
            if other != channel:
                found = usable_address(owner, other)
                if found is not None:
                    addresses[other] = found
    rows = [Row(ch, addresses[ch], mask_address(addresses[ch]), _status(session, owner, addresses[ch], ch, now))
            for ch in CHANNELS if ch in addresses]
    return View(locale=owners[0].locale if owners else None, rows=rows)


def _withdraw(session: Session, changes: list[tuple[str, str]], now: datetime, proof: str) -> list[Recorded]:
    """RET for each (address, channel), in one transaction; what is refused already records nothing."""
    writer = LedgerWriter(session)
    recorded: list[Recorded] = []
    for address, channel in changes:
        owners = _owners(session, address, channel)
        recorded += withdraw_address(writer, address, channel, SOURCE, now, proof, owners[0] if owners else None)
    return recorded


def _in_db(request: Request, work: Any, *args: Any) -> Any:
    """Run `work(session, *args)` in one transaction, in a worker thread (database calls block)."""
    def run() -> Any:
        with request.app.state.db.session() as session:
            return work(session, *args)

    return run_in_threadpool(run)


def _context(request: Request, token: str, address: str, channel: str, lang: str) -> dict[str, Any]:
    return {"token": token, "channel": channel, "masked": mask_address(address),
            "action": f"{request.url.path}?lang={lang}", "preferences_url": f"/p/{token}?lang={lang}",
            "optin_url": f"/optin?lang={lang}"}


async def unsubscribe(request: Request) -> Response:
    """GET: the confirmation page. POST: the opt-out itself (one-click or the page's button)."""
    posting = request.method == "POST"
    named = _named(request)
    if named is None:
        if posting:
            # only guesses are limited: a genuine opt-out is never refused (mailbox providers send
            # RFC 8058 POSTs for many people from a few addresses, and the law wants every one)
            request.app.state.limiter.check(request, "unsubscribe-forged")
        return not_found(request)
    token, address, channel = named
    now = request.app.state.now()
    if not posting:
        lang = language(request, await _in_db(request, _locale, address, channel))
        return page(request, "unsubscribe.html.j2", lang, **_context(request, token, address, channel, lang))
    form = await _form(request)
    route = "confirm-page" if form.get("via") == "confirm-page" else "one-click"
    proof = _proof(request, token, route)
    # a token repeated in a flood changes nothing after its first POST: answer without the database
    repeat = not request.app.state.limiter.allow(f"unsubscribe-token:{token_id(token)}")

    def opt_out(session: Session) -> str | None:
        if not repeat:
            _withdraw(session, [(address, channel)], now, proof)
        return _locale(session, address, channel)

    locale = await _in_db(request, opt_out)
    lang = language(request, locale)
    return page(request, "unsubscribed.html.j2", lang, **_context(request, token, address, channel, lang))


def _secure_cookie(request: Request) -> bool:
    return str(request.app.state.settings.web.base_url).startswith("https://") or request.url.scheme == "https"


async def preferences(request: Request) -> Response:
    """GET: the status of every channel. POST: turn the ticked channels off."""
    posting = request.method == "POST"
    if posting:
        request.app.state.limiter.check(request, "preferences")
    named = _named(request)
    if named is None:
        return not_found(request)
    token, address, channel = named
    now = request.app.state.now()
    secrets = request.app.state.secrets
    changed: list[str] | None = None
    if posting:
        form = await _form(request)
        csrf = form.get("csrf")
        if not csrf_ok(request, csrf if isinstance(csrf, str) else None, secrets):
            lang = language(request, await _in_db(request, _locale, address, channel))
            return page(request, "error.html.j2", lang, status=403, status_code=403)
        wanted = {value for value in form.getlist("off") if isinstance(value, str)}
        proof = _proof(request, token, "preferences")

        def turn_off(session: Session) -> list[str]:
            rows = _view(session, address, channel, now).rows
            targets = [(row.address, row.channel) for row in rows if row.channel in wanted]
            recorded = _withdraw(session, targets, now, proof)
            return [ch for ch in CHANNELS if any(r.event.channel == ch for r in recorded)]

        changed = await _in_db(request, turn_off)
    view = await _in_db(request, _view, address, channel, now)
    lang = language(request, view.locale)
    form_token, nonce = csrf_pair(request, secrets[0])
    response = page(request, "preferences.html.j2", lang, rows=view.rows, csrf=form_token, changed=changed,
                    **_context(request, token, address, channel, lang))
    set_csrf_cookie(response, nonce, _secure_cookie(request))
    return response


routes: list[BaseRoute] = [
    Route("/u/{token}", unsubscribe, methods=["GET", "POST"], name="unsubscribe"),
    Route("/p/{token}", preferences, methods=["GET", "POST"], name="preferences"),
]
