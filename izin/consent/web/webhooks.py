"""What providers post to us: SMS replies (opt-outs), delivery reports, email bounces (DSNs).

Every route needs the shared secret `[web] webhook_secret`, in the header X-Izin-Webhook-Secret or
as ?secret= in the URL (compared in constant time); with no secret configured every call is refused.
A wrong or missing secret gets 403 and stores nothing.

Rate limits: providers post from few addresses at high rates (a campaign's delivery reports arrive
in bursts of thousands), and a provider that meets a non-2xx answer retries, so an authenticated
call is never rate limited. Failed secrets are: after `[web] rate_limit_per_minute` failures within
a minute, the client's IP gets 429 on every webhook, before its secret is even looked at, until the
minute has passed. Behind a reverse proxy, run uvicorn with --forwarded-allow-ips so the limit sees
the provider's address and not the proxy's.

Answers are JSON. 200 `{"ok": true, ...}` whenever the call was understood, including reports for
unknown messages and duplicates (a provider retries anything else); 400 for a body that cannot be
read at all; 404 for an unknown provider; 413 for a body over MAX_BODY.

``POST /webhooks/sms/inbound/{provider}`` -- an SMS someone sent to our number or short number.

- ``generic``: JSON ``{"from": "+905321234567", "text": "RET ORNEKTIC", "keyword": "ORNEKTIC",
  "to": "4609", "id": "provider-message-id"}``; only ``from`` is required.
- ``netgsm``: form fields (application/x-www-form-urlencoded or multipart), query parameters or a
  JSON object; the first field present wins, body before query. Netgsm's inbox API names its fields
  ``sender``, ``receiver``, ``message``, ``datetime`` (REST v2 /sms/rest/v2/inbox); the push
  (URL forwarding) names are not published, so the common spellings are accepted too:

  | what | fields accepted |
  |---|---|
  | sender number | ``gsmno``, ``gsm``, ``sender``, ``from``, ``no``, ``msisdn`` |
  | text | ``message``, ``msg``, ``mesaj``, ``text`` |
  | keyword | ``keyword``, ``anahtar``, ``anahtarkelime`` |
  | short number / our number | ``shortnumber``, ``receiver``, ``kisanumara``, ``to``, ``numara`` |
  | message id | ``id``, ``msgid``, ``messageid``, ``referansid``, ``mesajid`` |

  Numbers may come as ``905321234567``, ``5321234567``, ``05321234567`` or E.164. A form body that
  is not UTF-8 is read as ISO-8859-9 (Latin-5, which Netgsm's older APIs use).

Every message is stored as an InboundMessage (provider id kept as ``"<provider>:<id>"``; a second
post of the same id is answered 200 and changes nothing). When the text is an opt-out
(`izin.consent.optout_keywords.classify`; brand words: `[sender] sms_header` and `name`, the
numbers in `[sender] sms_optout` (4609 in "RET yazip 4609'a gonderin", so "RET 4609" is an
opt-out when the provider sends no short number), the provider's keyword and the short number;
the keyword is also tried before the text, for providers that take it out) a RET is recorded for
the sender's number on channel sms with source HS_MESAJ (proof: provider, sender, short number,
keyword, text, message id) through `withdraw_address`, which cancels queued SMS deliveries to that
number in the same transaction; action ``opt_out``. A reply that names a keyword but says more
("ret etmeyin", "STOP etmeyin mesajı gelmesin", "iptal etmek istemiyorum") records nothing and is
stored with action ``needs_review``, logged as a warning with its id: a person reads these and
records the RET by hand when it is one; `needs_review(session)` lists them, oldest first. Anything
else, and an opt-out from a sender that is not a phone number, is stored with action ``ignored``.

Every text taken from a request (JSON strings and keys, form and query fields, DSN fields) loses
NUL and the other C0 control characters except tab and newline (CR and CRLF become a newline),
and lone UTF-16 surrogates become U+FFFD: PostgreSQL stores neither, and a RET must not be lost
to a stray byte.

``POST /webhooks/delivery/{provider}`` -- delivery reports, for one message or many.

- ``generic``: JSON ``{"id": "<provider_id>", "status": "delivered"|"undelivered"|"failed"|"bounced"|
  "pending", "reason": "...", "permanent": true|false, "at": "ISO 8601"}`` or a list of them.
- ``netgsm``: one report as form fields, query parameters or JSON (``jobid``/``bulkid``/``id``,
  ``status``, ``deliveredDate``/``deliveredate``, ``errorCode``/``errorcode``), or the reply shape of
  Netgsm's report API ``{"jobs": [{"jobid", "status", "deliveredDate", "errorCode", ...}]}`` so a
  relay that polls /sms/rest/v2/report can forward it unchanged. Status codes (Netgsm's SmsStatus):
  0 pending; 1 delivered; 2 expired, 3 invalid or barred number, 11 rejected, 12 delivery error,
  15 blacklisted: undelivered; 4 not sent to the operator, 13 duplicate, 14 no credit: failed;
  16 iys_rejected; 17 iys_error. A status that is not one to three ASCII digits, perhaps after a
  minus sign, is unknown. Only SMS deliveries are matched.

The Delivery whose provider_id matches gets provider_status, delivered_at (the report's time, else
now) on delivered, and the provider's reason in detail; its status stays what the worker recorded.
A pending report never overwrites a final one. ``bounced`` on any channel, or an email reported
undelivered/failed permanently (``"permanent": true`` or a 5.x.x / 5xx code in the reason), marks
the recipient undeliverable (`izin.consent.bounces.mark`). Netgsm's code 3 ("invalid or barred")
covers temporary bars too, so it marks nothing. Unknown ids are counted as ignored.

``POST /webhooks/bounce`` -- email DSNs (RFC 3464): a whole ``multipart/report;
report-type=delivery-status`` message, a bare ``message/delivery-status`` body, or JSON
``{"recipient": "a@b.c", "status": "5.1.1", "diagnostic": "smtp; 550 5.1.1 user unknown"}`` (or a list).
A recipient whose Action is failed (or absent) with a 5.x.x Status is marked undeliverable for email;
4.x.x (delayed, transient) and other actions are ignored.
"""

from __future__ import annotations

import email
import email.message
import email.parser
import json
import logging
import re
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from izin.clock import ISTANBUL, parse_instant
from izin.consent import bounces
from izin.consent.addresses import AddressError, normalise_email, normalise_phone
from izin.consent.ledger import LedgerWriter, cancel_queued, withdraw_address
from izin.consent.models import Contact, InboundMessage
from izin.consent.optout_keywords import NEEDS_REVIEW, NOT_OPT_OUT, OPT_OUT, classify
from izin.consent.web.security import RATE_WINDOW_S, clean_text, client_ip, webhook_ok
from izin.errors import ConfigError

__all__ = ["MAX_BODY", "NETGSM_STATUS", "Bounce", "Inbound", "Report", "apply_bounces", "apply_reports", "brand_words",
           "clean_text", "dsn_recipients", "needs_review", "opt_out_in", "phone_of", "routes", "store_inbound",
           "verdict_of"]

log = logging.getLogger("izin.web.webhooks")

#: the largest body read (a DSN may carry the returned message's headers)
MAX_BODY = 2 * 1024 * 1024
INBOUND_PROVIDERS = ("netgsm", "generic")
REPORT_PROVIDERS = ("netgsm", "generic")
#: column widths of inbound_messages
_SENDER_MAX, _KEYWORD_MAX, _SHORT_MAX, _ID_MAX, _TEXT_MAX = 32, 64, 32, 128, 4000
_DETAIL_MAX = 500

#: Netgsm report status code → (provider_status, what it means)
NETGSM_STATUS: dict[int, tuple[str, str]] = {
    0: ("pending", "waiting to be sent"),
    1: ("delivered", "delivered"),
    2: ("undelivered", "expired before delivery"),
    3: ("undelivered", "invalid or barred number"),
    4: ("failed", "not sent to the operator"),
    11: ("undelivered", "rejected by the operator"),
    12: ("undelivered", "delivery error"),
    13: ("failed", "duplicate message"),
    14: ("failed", "insufficient credit"),
    15: ("undelivered", "number is blacklisted"),
    16: ("iys_rejected", "İYS refused: no consent on record at İYS"),
    17: ("iys_error", "İYS check failed"),
}
GENERIC_STATUSES = ("delivered", "undelivered", "failed", "bounced", "pending")
_FINAL = ("delivered", "undelivered", "failed", "bounced", "iys_rejected", "iys_error")

_NETGSM_FIELDS = {
    "sender": ("gsmno", "gsm", "sender", "from", "no", "msisdn"),
    "text": ("message", "msg", "mesaj", "text"),
    "keyword": ("keyword", "anahtar", "anahtarkelime"),
    "short_number": ("shortnumber", "receiver", "kisanumara", "to", "numara"),
    "message_id": ("id", "msgid", "messageid", "referansid", "mesajid"),
}
_NETGSM_CODE = re.compile(r"-?[0-9]{1,3}")
#: C0 controls but tab and newline; lone surrogates (JSON's "\\ud800"), which no database stores
_ENHANCED = re.compile(r"\b([245])\.\d{1,3}\.\d{1,3}\b")
_BASIC = re.compile(r"^\s*([245])\d\d\b")


# --- shared plumbing ---------------------------------------------------------------------------

def _clean_data(data: Any) -> Any:
    """Every string of decoded JSON, keys too, through `clean_text`."""
    if isinstance(data, str):
        return clean_text(data)
    if isinstance(data, list):
        return [_clean_data(item) for item in data]
    if isinstance(data, dict):
        return {clean_text(str(key)): _clean_data(value) for key, value in data.items()}
    return data


class _Failures:
    """Failed webhook secrets per client IP in a sliding window; in memory, per process."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, ip: str, now_s: float) -> deque[float]:
        hits = self._hits.setdefault(ip, deque())
        while hits and hits[0] <= now_s - RATE_WINDOW_S:
            hits.popleft()
        return hits

    def blocked(self, ip: str, now_s: float | None = None) -> bool:
        now_s = time.monotonic() if now_s is None else now_s
        with self._lock:
            return len(self._recent(ip, now_s)) >= self.limit

    def add(self, ip: str, now_s: float | None = None) -> None:
        now_s = time.monotonic() if now_s is None else now_s
        with self._lock:
            self._recent(ip, now_s).append(now_s)
            if len(self._hits) > 100_000:  # a flood from many addresses must not grow memory for ever
                self._hits = {k: v for k, v in self._hits.items() if v and v[-1] > now_s - RATE_WINDOW_S}


_failures_lock = threading.Lock()


def _failures(request: Request) -> _Failures:
    state = request.app.state
    with _failures_lock:
        failures = getattr(state, "webhook_failures", None)
        if failures is None:
            failures = state.webhook_failures = _Failures(state.settings.web.rate_limit_per_minute)
    return failures


def _answer(payload: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    response = JSONResponse(payload, status_code=status, headers=headers)
    response.headers["Cache-Control"] = "no-store"
    return response


class _Refused(Exception):
    def __init__(self, status: int, error: str) -> None:
        super().__init__(error)
        self.status = status
        self.error = error


def _guard(request: Request) -> Response | None:
    """429 for an IP with too many failed secrets, 403 for a wrong or missing one, else None."""
    failures = _failures(request)
    ip = client_ip(request)
    if failures.blocked(ip):
        return _answer({"ok": False, "error": "too many failed attempts; wait a minute"}, 429,
                       {"Retry-After": str(int(RATE_WINDOW_S))})
    if not webhook_ok(request, request.app.state.settings.web.webhook_secret):
        failures.add(ip)
        return _answer({"ok": False, "error": "forbidden"}, 403)
    return None


async def _body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_BODY:
        raise _Refused(413, "body too large")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise _Refused(413, "body too large")
        chunks.append(chunk)
    return b"".join(chunks)


def _media_type(request: Request) -> tuple[str, str | None]:
    """(media type, charset) of the request body."""
    value = request.headers.get("content-type", "")
    parts = [p.strip() for p in value.split(";")]
    charset = None
    for part in parts[1:]:
        name, _, arg = part.partition("=")
        if name.strip().lower() == "charset":
            charset = arg.strip().strip('"') or None
    return parts[0].lower(), charset


def _json(body: bytes) -> Any:
    try:
        return _clean_data(json.loads(body.decode("utf-8-sig")))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _Refused(400, "the body is not valid UTF-8 JSON") from None


def _form(body: bytes, charset: str | None) -> dict[str, str]:
    """An urlencoded body; UTF-8 unless it says otherwise, Latin-5 when UTF-8 does not decode."""
    encodings = ([charset] if charset else []) + ["utf-8", "iso-8859-9"]
    for encoding in encodings:
        try:
            text = body.decode(encoding)
            pairs = parse_qsl(text, keep_blank_values=True, encoding=encoding, errors="strict")
        except (UnicodeDecodeError, LookupError):
            continue
        return _first_values(pairs)
    return _first_values(parse_qsl(body.decode("latin-1"), keep_blank_values=True, errors="replace"))


def _first_values(pairs: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for name, value in pairs:
        fields.setdefault(clean_text(name).lower(), clean_text(value) if isinstance(value, str) else value)
    return fields


async def _fields(request: Request, body: bytes) -> dict[str, Any]:
    """Body fields (JSON object, urlencoded or multipart form) over query parameters, names lower-cased."""
    media, charset = _media_type(request)
    fields: dict[str, Any] = {}
    if body.strip():
        if media == "application/json" or (not media and body.lstrip()[:1] in (b"{", b"[")):
            data = _json(body)
            if isinstance(data, dict):
                fields = {str(k).lower(): v for k, v in data.items()}
            else:
                raise _Refused(400, "expected a JSON object")
        elif media == "multipart/form-data":
            async def replay() -> dict[str, Any]:
                return {"type": "http.request", "body": body, "more_body": False}

            form = await Request(request.scope, receive=replay).form()
            fields = _first_values((k, v) for k, v in form.multi_items() if isinstance(v, str))
        else:
            fields = _form(body, charset)
    query = _first_values((k, v) for k, v in request.query_params.multi_items() if k.lower() != "secret")
    return {**query, **fields}


def _pick(fields: Mapping[str, Any], names: Iterable[str]) -> str | None:
    for name in names:
        value = fields.get(name)
        if value is not None and str(value).strip() != "":
            return str(value).strip()
    return None


def _handler(work: Any) -> Any:
    """An endpoint: guard, then the work; _Refused becomes its JSON answer."""
    async def endpoint(request: Request) -> Response:
        refused = _guard(request)
        if refused is not None:
            return refused
        try:
            return await work(request)
        except _Refused as exc:
            return _answer({"ok": False, "error": exc.error}, exc.status)
    endpoint.__name__ = work.__name__
    endpoint.__doc__ = work.__doc__
    return endpoint


# --- inbound SMS -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Inbound:
    """One SMS a provider forwarded, as we read it."""

    provider: str
    sender: str
    text: str
    keyword: str | None = None
    short_number: str | None = None
    message_id: str | None = None


def phone_of(raw: str) -> str | None:
    """The sender as E.164, from the forms providers use (905321234567, 5321234567, +90...), or None."""
    compact = re.sub(r"[\s\-().]", "", raw)
    if re.fullmatch(r"90\d{10}", compact):
        compact = "+" + compact
    elif re.fullmatch(r"0090\d{10}", compact):
        compact = "+" + compact[2:]
    try:
        return normalise_phone(compact).e164
    except AddressError:
        return None


def _inbound_generic(fields: Mapping[str, Any]) -> Inbound:
    return Inbound(provider="generic", sender=_pick(fields, ("from",)) or "", text=_pick(fields, ("text",)) or "",
                   keyword=_pick(fields, ("keyword",)), short_number=_pick(fields, ("to",)),
                   message_id=_pick(fields, ("id",)))


def _inbound_netgsm(fields: Mapping[str, Any]) -> Inbound:
    values = {key: _pick(fields, names) for key, names in _NETGSM_FIELDS.items()}
    return Inbound(provider="netgsm", sender=values["sender"] or "", text=values["text"] or "",
                   keyword=values["keyword"], short_number=values["short_number"],
                   message_id=values["message_id"])


def verdict_of(message: Inbound, brand_words: tuple[str, ...] = ()) -> str:
    """OPT_OUT, NEEDS_REVIEW or NOT_OPT_OUT; our brand words, its keyword and short number may stand by it."""
    brands = tuple(w for w in (*brand_words, message.keyword, message.short_number) if w)
    verdict = classify(message.text, brands)
    if verdict != OPT_OUT and message.keyword:
        # some providers take the keyword out of the text ("RET" routed by keyword, text "ORNEKTIC")
        with_keyword = classify(f"{message.keyword} {message.text}", brands)
        if with_keyword == OPT_OUT or verdict == NOT_OPT_OUT:
            verdict = with_keyword
    return verdict


def opt_out_in(message: Inbound, brand_words: tuple[str, ...] = ()) -> bool:
    """Whether the message is an opt-out; our brand words, its keyword and short number may stand by it."""
    return verdict_of(message, brand_words) == OPT_OUT


def brand_words(settings: Any) -> tuple[str, ...]:
    """Words a reply may carry next to the keyword: the SMS originator, the sender's name and the
    numbers of the opt-out instruction (4609 in "RET yazip 4609'a gonderin")."""
    numbers = re.findall(r"[0-9]{3,}", settings.sender.sms_optout or "")
    return tuple(w for w in (settings.sender.sms_header, settings.sender.name, *numbers) if w)


def needs_review(session: Session) -> list[InboundMessage]:
    """The stored replies that name an opt-out keyword but are not clearly an opt-out, oldest first."""
    return list(session.scalars(select(InboundMessage).where(InboundMessage.action == NEEDS_REVIEW)
                                .order_by(InboundMessage.received_at, InboundMessage.id)))


def store_inbound(db: Any, message: Inbound, brands: tuple[str, ...], now: datetime) -> str:
    """Store one inbound SMS and act on it in one transaction; return its action or 'duplicate'."""
    key = f"{message.provider}:{message.message_id}"[:_ID_MAX] if message.message_id else None
    phone = phone_of(message.sender)
    verdict = verdict_of(message, brands)
    opt_out = verdict == OPT_OUT
    try:
        with db.session() as session:
            if key is not None and session.scalar(
                    select(InboundMessage.id).where(InboundMessage.provider_message_id == key)) is not None:
                return "duplicate"
            row = InboundMessage(provider=message.provider, sender=(phone or message.sender)[:_SENDER_MAX],
                                 text=message.text[:_TEXT_MAX],
                                 keyword=message.keyword[:_KEYWORD_MAX] if message.keyword else None,
                                 short_number=message.short_number[:_SHORT_MAX] if message.short_number else None,
                                 received_at=now, action="ignored", provider_message_id=key)
            if verdict == NEEDS_REVIEW:
                row.action = NEEDS_REVIEW
            elif opt_out and phone is not None:
                contact = session.scalar(select(Contact).where(Contact.phone == phone).order_by(Contact.id).limit(1))
                proof = json.dumps({"route": "sms_reply", "provider": message.provider, "sender": phone,
                                    "short_number": message.short_number, "keyword": message.keyword,
                                    "text": message.text[:_TEXT_MAX], "message_id": message.message_id},
                                   sort_keys=True, ensure_ascii=False)
                recorded = withdraw_address(LedgerWriter(session), phone, "sms", "HS_MESAJ", now, proof, contact)
                # a number refused already records nothing; anything still queued to it goes all the same
                cancel_queued(session, phone, "sms", now)
                row.action = "opt_out"
                row.consent_event_id = recorded[0].event.id if recorded else None
            elif opt_out:
                log.warning("opt-out from %r ignored: not a phone number", message.sender)
            session.add(row)
            session.flush()
            row_id, action = row.id, row.action
    except IntegrityError:
        # the same message posted twice at once: the other request stored it (and acted on it)
        if key is None:
            raise
        with db.session() as session:
            if session.scalar(select(InboundMessage.id).where(InboundMessage.provider_message_id == key)) is None:
                raise
        return "duplicate"
    if action == NEEDS_REVIEW:
        log.warning("inbound %s SMS %d names an opt-out keyword but is not clearly an opt-out: stored as %s, "
                    "nothing recorded; a person must read it", message.provider, row_id, NEEDS_REVIEW)
    return action


async def _inbound_sms(request: Request) -> Response:
    provider = request.path_params["provider"]
    if provider not in INBOUND_PROVIDERS:
        raise _Refused(404, f"unknown provider; use one of {', '.join(INBOUND_PROVIDERS)}")
    fields = await _fields(request, await _body(request))
    message = _inbound_netgsm(fields) if provider == "netgsm" else _inbound_generic(fields)
    if not message.sender:
        raise _Refused(400, "no sender number in the message")
    state = request.app.state
    action = await run_in_threadpool(store_inbound, state.db, message, brand_words(state.settings), state.now())
    log.info("inbound %s SMS: %s", provider, action)
    return _answer({"ok": True})


# --- delivery reports --------------------------------------------------------------------------

@dataclass(frozen=True)
class Report:
    """One delivery report: which message, what became of it."""

    provider_id: str
    status: str
    reason: str | None = None
    at: datetime | None = None
    #: the provider says the address itself is bad (a hard bounce)
    permanent: bool = False


def _hard_code(text: str | None) -> bool:
    """A permanent SMTP failure code (5.x.x or 5xx) in a reason."""
    if not text:
        return False
    enhanced = _ENHANCED.search(text)
    if enhanced:
        return enhanced.group(1) == "5"
    basic = _BASIC.match(text)
    return bool(basic) and basic.group(1) == "5"


def _instant(value: Any) -> datetime | None:
    """An ISO 8601 instant, or Netgsm's local forms (Türkiye time); None when absent or unreadable."""
    if value is None or str(value).strip() == "":
        return None
    text = str(value).strip()
    try:
        return parse_instant(text)
    except ConfigError:
        pass  # not ISO 8601 with an offset: try the local forms
    for form in ("%d.%m.%Y %H:%M:%S", "%d.%m.%Y %H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S",
                 "%d%m%Y%H%M%S", "%d%m%Y%H%M"):
        try:
            return datetime.strptime(text, form).replace(tzinfo=ISTANBUL)
        except ValueError:
            continue
    return None


def _reports_generic(data: Any) -> tuple[list[Report], int]:
    items = data if isinstance(data, list) else [data]
    reports, unreadable = [], 0
    for item in items:
        if not isinstance(item, dict):
            unreadable += 1
            continue
        provider_id = str(item.get("id") or "").strip()
        status = str(item.get("status") or "").strip().lower()
        if not provider_id or status not in GENERIC_STATUSES:
            unreadable += 1
            continue
        reason = str(item["reason"]).strip() if item.get("reason") not in (None, "") else None
        reports.append(Report(provider_id=provider_id, status=status, reason=reason, at=_instant(item.get("at")),
                              permanent=item.get("permanent") is True))
    return reports, unreadable


def _reports_netgsm(fields: Mapping[str, Any]) -> tuple[list[Report], int]:
    jobs = fields.get("jobs")
    items = jobs if isinstance(jobs, list) else [fields]
    reports, unreadable = [], 0
    for item in items:
        if not isinstance(item, dict):
            unreadable += 1
            continue
        item = {str(k).lower(): v for k, v in item.items()}
        provider_id = _pick(item, ("jobid", "bulkid", "id", "msgid"))
        code = _pick(item, ("status", "durum"))
        known = NETGSM_STATUS.get(int(code)) if code is not None and _NETGSM_CODE.fullmatch(code) else None
        if not provider_id or known is None:
            unreadable += 1
            continue
        status, meaning = known
        error = _pick(item, ("errorcode", "error"))
        reason = f"netgsm status {int(code)}: {meaning}" + (f" (error code {error})" if error and error != "0" else "")
        reports.append(Report(provider_id=provider_id, status=status,
                              reason=None if status == "delivered" else reason,
                              at=_instant(_pick(item, ("delivereddate", "deliveredate", "date")))))
    return reports, unreadable


def apply_reports(db: Any, provider: str, reports: list[Report], now: datetime) -> tuple[int, int]:
    """Update the deliveries these reports are about, in one transaction; return (updated, ignored)."""
    from izin.campaigns.models import Delivery

    updated = ignored = 0
    with db.session() as session:
        for report in reports:
            query = select(Delivery).where(Delivery.provider_id == report.provider_id)
            if provider == "netgsm":
                query = query.where(Delivery.channel == "sms")
            rows = list(session.scalars(query))
            if not rows:
                ignored += 1
                continue
            for delivery in rows:
                if report.status == "pending" and delivery.provider_status not in (None, "pending"):
                    continue  # a late 'pending' never hides what the provider said in the end
                delivery.provider_status = report.status
                delivery.updated_at = now
                if report.status == "delivered":
                    delivery.delivered_at = report.at or now
                elif report.reason:
                    delivery.detail = f"delivery report: {report.reason}"[:_DETAIL_MAX]
                hard = report.status == "bounced" or (
                    delivery.channel == "email" and report.status in ("undelivered", "failed")
                    and (report.permanent or _hard_code(report.reason)))
                if hard and delivery.recipient:
                    bounces.mark(session, delivery.recipient, delivery.channel,
                                 f"{provider} delivery report: {report.status}"
                                 + (f" ({report.reason})" if report.reason else ""), now)
            updated += 1
    return updated, ignored


async def _delivery_report(request: Request) -> Response:
    provider = request.path_params["provider"]
    if provider not in REPORT_PROVIDERS:
        raise _Refused(404, f"unknown provider; use one of {', '.join(REPORT_PROVIDERS)}")
    body = await _body(request)
    if provider == "generic":
        if not body.strip():
            raise _Refused(400, "expected a JSON report")
        reports, unreadable = _reports_generic(_json(body))
    else:
        media, _ = _media_type(request)
        if media == "application/json" or body.lstrip()[:1] in (b"{", b"["):
            data = _json(body)
            if isinstance(data, list):
                data = {"jobs": data}
            if not isinstance(data, dict):
                raise _Refused(400, "expected a JSON object")
            fields = {str(k).lower(): v for k, v in data.items()}
        else:
            fields = await _fields(request, body)
        reports, unreadable = _reports_netgsm(fields)
    if unreadable:
        log.warning("%s delivery report: %d entries without an id or a known status ignored", provider, unreadable)
    state = request.app.state
    updated, ignored = await run_in_threadpool(apply_reports, state.db, provider, reports, state.now())
    return _answer({"ok": True, "updated": updated, "ignored": ignored + unreadable})


# --- email bounces (DSN) -----------------------------------------------------------------------

@dataclass(frozen=True)
class Bounce:
    """One recipient of a DSN: who, the RFC 3463 status, the action, the server's words."""

    recipient: str
    status: str
    action: str | None = None
    diagnostic: str | None = None

    @property
    def permanent(self) -> bool:
        return self.status.startswith("5.") and self.action in (None, "", "failed")


def _address_part(value: str) -> str:
    """'rfc822; a@b.c' → 'a@b.c' (the address type is optional in practice)."""
    _, sep, address = value.partition(";")
    return (address if sep else value).strip().strip("<>").strip()


def _blocks(text: str) -> list[email.message.Message]:
    """A bare message/delivery-status body: header blocks separated by blank lines."""
    parser = email.parser.HeaderParser()
    chunks = re.split(r"\r?\n[ \t]*\r?\n", text.strip())
    return [parser.parsestr(chunk.strip() + "\n") for chunk in chunks if chunk.strip()]


def _status_blocks(body: bytes, media: str) -> list[email.message.Message]:
    if media == "message/delivery-status":
        return _blocks(body.decode("utf-8", errors="replace"))
    message = email.message_from_bytes(body)
    found: list[email.message.Message] = []
    for part in message.walk():
        if part.get_content_type() == "message/delivery-status":
            payload = part.get_payload()
            if isinstance(payload, list):
                found.extend(p for p in payload if isinstance(p, email.message.Message))
            elif isinstance(payload, str):
                found.extend(_blocks(payload))
    if not found:
        # no MIME structure: perhaps the delivery-status fields themselves
        found = _blocks(body.decode("utf-8", errors="replace"))
    return found


def dsn_recipients(body: bytes, media: str = "") -> list[Bounce]:
    """The per-recipient entries of an RFC 3464 DSN (whole report or bare delivery-status body)."""
    bounces_found: list[Bounce] = []
    for block in _status_blocks(body, media):
        recipient = clean_text(str(block.get("Final-Recipient") or block.get("Original-Recipient") or ""))
        status = clean_text(str(block.get("Status") or "")).strip()
        if not recipient.strip() or not status:
            continue
        match = re.match(r"\d\.\d{1,3}\.\d{1,3}", status)
        diagnostic = clean_text(str(block.get("Diagnostic-Code") or ""))
        bounces_found.append(Bounce(recipient=_address_part(recipient),
                                    status=match.group(0) if match else status,
                                    action=clean_text(str(block.get("Action") or "")).strip().lower() or None,
                                    diagnostic=" ".join(diagnostic.split()) or None))
    return bounces_found


def _bounces_json(data: Any) -> list[Bounce]:
    items = data if isinstance(data, list) else [data]
    found = []
    for item in items:
        if not isinstance(item, dict):
            continue
        recipient = str(item.get("recipient") or item.get("email") or "").strip()
        status = str(item.get("status") or "").strip()
        if recipient and status:
            diagnostic = item.get("diagnostic")
            action = item.get("action")
            found.append(Bounce(recipient=recipient, status=status,
                                action=str(action).strip().lower() if action else None,
                                diagnostic=str(diagnostic) if diagnostic else None))
    return found


def apply_bounces(db: Any, found: list[Bounce], now: datetime) -> tuple[int, int]:
    """Mark the permanent failures undeliverable for email; return (marked, ignored)."""
    marked = ignored = 0
    with db.session() as session:
        for bounce in found:
            if not bounce.permanent:
                ignored += 1
                continue
            try:
                address = normalise_email(bounce.recipient)
            except AddressError:
                log.warning("bounce for %r ignored: not an email address", bounce.recipient)
                ignored += 1
                continue
            reason = f"DSN {bounce.status}" + (f": {bounce.diagnostic}" if bounce.diagnostic else "")
            bounces.mark(session, address, "email", reason, now)
            marked += 1
    return marked, ignored


async def _bounce(request: Request) -> Response:
    body = await _body(request)
    if not body.strip():
        raise _Refused(400, "empty body; post a DSN or JSON {\"recipient\", \"status\", \"diagnostic\"}")
    media, _ = _media_type(request)
    if media == "application/json" or (media in ("", "text/plain") and body.lstrip()[:1] in (b"{", b"[")):
        found = _bounces_json(_json(body))
    else:
        if media.startswith("multipart/"):
            # the MIME parts came as the HTTP body: their boundary is in the request's Content-Type
            body = b"Content-Type: " + request.headers["content-type"].encode("latin-1") + b"\r\n\r\n" + body
        found = dsn_recipients(body, media)
    if not found:
        raise _Refused(400, "no recipient with a status found; post an RFC 3464 report or JSON")
    state = request.app.state
    marked, ignored = await run_in_threadpool(apply_bounces, state.db, found, state.now())
    return _answer({"ok": True, "marked": marked, "ignored": ignored})


routes: list[BaseRoute] = [
    Route("/webhooks/sms/inbound/{provider}", _handler(_inbound_sms), methods=["POST"]),
    Route("/webhooks/delivery/{provider}", _handler(_delivery_report), methods=["POST"]),
    Route("/webhooks/bounce", _handler(_bounce), methods=["POST"]),
]
