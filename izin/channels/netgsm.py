"""``netgsm://``: SMS through Netgsm's REST v2 API (reference section 4.4).

URL::

    netgsm://USERCODE:PASSWORD@api.netgsm.com.tr?header=ORNEKTIC&appname=izin&timeout=10

- ``USERCODE:PASSWORD`` (required; percent-encode ``/ ? # @ :``) go as HTTP Basic auth.
- The host defaults to ``api.netgsm.com.tr`` (``netgsm://USERCODE:PASSWORD@``), always HTTPS.
  ``base=http://127.0.0.1:8080`` replaces scheme, host and port: for tests against a local
  server, or a relay.
- ``header=`` is the originator (msgheader) registered at Netgsm; it wins over the message's
  ``sender`` (the configured ``[sender] sms_header``), which is used when it is absent.
- ``appname=`` and ``partnercode=`` are passed through when given; ``timeout=`` is in seconds.

One message is one ``POST /sms/rest/v2/send``::

    {"msgheader": "ORNEKTIC", "encoding": "TR", "iysfilter": "11",
     "messages": [{"msg": "...", "no": "5321234567"}]}

``encoding: "TR"`` is sent only when the text has a letter outside GSM-7 that Netgsm's Turkish
coding carries (ğ Ğ ı İ ş Ş ç); ``iysfilter`` is ``"11"`` for a commercial message to a BIREYSEL
recipient, ``"12"`` to a TACIR one, ``"0"`` for a non-commercial one, so Netgsm checks İYS itself
before it sends. ``no`` is the national number without 0 or +90: Turkish mobile numbers only.

Answers: ``{"code": "00", "jobid": "..."}`` is a Receipt with the jobid as ``provider_id``. Codes
30 (credentials or IP), 40 (originator not defined) and 51 (no İYS brand) are ChannelAccountErrors;
20 (text), 50 (İYS does not allow this recipient) and 70 (parameters) are PermanentChannelErrors;
80 and 85 (rate limits) are transient, 85 with a 60 s hint (20 jobs per number per minute). HTTP
429, 5xx and timeouts are transient. A 2xx answer without a readable code is treated as permanent:
the message may have gone, and a retry must not send it twice.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Self

from izin import clock
from izin.channels._http import (DEFAULT_TIMEOUT_S, HttpAdapterMixin, Reply, post_json, reply_json,
                                 retry_after_s, snippet)
from izin.channels.base import ChannelAdapter, ChannelKind, OutgoingMessage, Receipt, UrlParts, sms_size
from izin.channels.errors import (ChannelAccountError, ChannelError, PermanentChannelError,
                                  TransientChannelError)
from izin.channels.sms_encoding import TURKISH_SHIFT

__all__ = ["DEFAULT_HOST", "IYS_FILTER", "NetgsmAdapter", "SEND_PATH"]

DEFAULT_HOST = "api.netgsm.com.tr"
SEND_PATH = "/sms/rest/v2/send"
#: iysfilter by (commercial, recipient type); a non-commercial message is "0" for both types
IYS_FILTER = {(True, "BIREYSEL"): "11", (True, "TACIR"): "12",
              (False, "BIREYSEL"): "0", (False, "TACIR"): "0"}

_TR_MOBILE = re.compile(r"^\+90(5\d{9})$")
_OPTIONS = ("header", "appname", "partnercode", "timeout", "base")
#: Netgsm send codes → (error class, what it means); "00" is success
_CODES: dict[str, tuple[type[ChannelError], str]] = {
    "20": (PermanentChannelError, "the message text is invalid or too long"),
    "30": (ChannelAccountError, "credentials refused, no API access, or this IP is not allowed"),
    "40": (ChannelAccountError, "the message header (originator) is not defined on the account"),
    "50": (PermanentChannelError, "İYS-controlled send refused: the recipient has no İYS consent"),
    "51": (ChannelAccountError, "the account has no İYS brand code"),
    "70": (PermanentChannelError, "invalid or missing parameters"),
    "80": (TransientChannelError, "sending rate limit exceeded"),
    "85": (TransientChannelError, "more than 20 jobs to one number within a minute"),
}
#: seconds to wait after code 85 (Netgsm counts jobs per number per minute)
CODE_85_WAIT_S = 60.0


class NetgsmAdapter(HttpAdapterMixin, ChannelAdapter):
    """SMS through Netgsm REST v2, with İYS filtering for commercial messages."""

    scheme: ClassVar[str] = "netgsm"
    channel: ClassVar[ChannelKind] = "sms"
    #: parts per message; Turkish providers stop at 7 (Verimor documents 7, the renderer's default)
    max_segments: ClassVar[int | None] = 7
    supports_html: ClassVar[bool] = False

    def __init__(self, url: str, *, usercode: str, password: str, endpoint: str, header: str = "",
                 appname: str = "", partnercode: str = "", timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.url = url
        self.usercode = usercode
        self.password = password
        #: the full send URL
        self.endpoint = endpoint
        self.header = header
        self.appname = appname
        self.partnercode = partnercode
        self.timeout_s = timeout_s

    @classmethod
    def from_url(cls, url: str) -> Self:
        parts = UrlParts(url, adapter=cls.scheme, options=_OPTIONS)
        if not parts.username or not parts.password:
            raise parts.error("netgsm:// needs the API user code and password: "
                              "netgsm://USERCODE:PASSWORD@api.netgsm.com.tr?header=ORIGINATOR")
        if parts.path not in ("", "/"):
            raise parts.error("netgsm:// takes no path; options go after ?, e.g. ?header=ORIGINATOR")
        header = parts.text("header")
        if header and not re.fullmatch(r"[A-Za-z0-9 .&\-]{3,11}", header):
            raise parts.error(f"header={header!r}: an originator is 3-11 ASCII letters, digits or spaces")
        base = parts.text("base")
        if base:
            if not re.fullmatch(r"https?://[^/?#\s]+/?", base):
                raise parts.error(f"base={base!r} must be scheme and host only, e.g. http://127.0.0.1:8080")
            origin = base.rstrip("/")
        else:
            host = parts.host or DEFAULT_HOST
            origin = f"https://{host}" + (f":{parts.port}" if parts.port else "")
        return cls(url, usercode=parts.username, password=parts.password, endpoint=origin + SEND_PATH,
                   header=header, appname=parts.text("appname"), partnercode=parts.text("partnercode"),
                   timeout_s=parts.seconds("timeout", DEFAULT_TIMEOUT_S))

    def send(self, message: OutgoingMessage) -> Receipt:
        if message.channel != "sms":
            raise PermanentChannelError(f"netgsm:// sends SMS, not {message.channel}", adapter=self.scheme)
        body = self.request_body(message)
        _, segments = sms_size(message)
        response = post_json(self._http(), self.endpoint, body, adapter=self.scheme,
                             auth=(self.usercode, self.password))
        return self._receipt(response, segments)

    def request_body(self, message: OutgoingMessage) -> dict[str, Any]:
        """The JSON Netgsm gets for ``message``; PermanentChannelError when it cannot go at all."""
        match = _TR_MOBILE.match(message.to)
        if match is None:
            turkish = message.to.startswith("+90")
            reason = ("is not a Turkish mobile number (+905...)" if turkish
                      else "is not a Turkish number; this adapter sends to +905... numbers only")
            raise PermanentChannelError(f"delivery {message.delivery_id}: {message.to} {reason}",
                                        adapter=self.scheme, address_invalid=turkish)
        header = self.header or message.sender
        if not header:
            raise ChannelAccountError(f"no originator: add ?header=ORIGINATOR to {self.redacted_url()} "
                                      "or set [sender] sms_header", adapter=self.scheme)
        _, segments = sms_size(message)
        if self.max_segments is not None and segments > self.max_segments:
            raise PermanentChannelError(f"delivery {message.delivery_id}: {segments} SMS parts; "
                                        f"Netgsm takes at most {self.max_segments}", adapter=self.scheme)
        body: dict[str, Any] = {"msgheader": header}
        if any(char in TURKISH_SHIFT for char in message.sms_text):
            body["encoding"] = "TR"
        body["iysfilter"] = IYS_FILTER[(message.commercial, message.recipient_type)]
        if self.partnercode:
            body["partnercode"] = self.partnercode
        if self.appname:
            body["appname"] = self.appname
        body["messages"] = [{"msg": message.sms_text, "no": match.group(1)}]
        return body

    def _receipt(self, response: Reply, segments: int) -> Receipt:
        status = response.status_code
        where = f"Netgsm answered HTTP {status}"
        if status == 429 or status >= 500:
            raise TransientChannelError(f"{where}: {snippet(response)}", adapter=self.scheme,
                                        status_code=status, retry_after_s=retry_after_s(response))
        if status in (401, 403):
            raise ChannelAccountError(f"{where}: credentials refused or this IP is not allowed",
                                      adapter=self.scheme, status_code=status)
        data = reply_json(response)
        code = data.get("code") if isinstance(data, dict) else None
        if code is None:
            raise PermanentChannelError(f"{where} without a result code: {snippet(response)} (the message "
                                        "may have been sent; not retried so it is not sent twice)",
                                        adapter=self.scheme, status_code=status)
        code = str(code).zfill(2)
        description = data.get("description")
        if code == "00":
            jobid = data.get("jobid")
            return Receipt(provider_id=str(jobid) if jobid is not None else "", segments=segments,
                           accepted_at=clock.now(), detail=str(description) if description else None)
        kind, meaning = _CODES.get(code, (PermanentChannelError, "unknown error code"))
        text = f"Netgsm code {code}: {meaning}" + (f" ({description})" if description else "")
        if kind is TransientChannelError:
            hint = retry_after_s(response)
            if hint is None and code == "85":
                hint = CODE_85_WAIT_S
            raise TransientChannelError(text, adapter=self.scheme, status_code=status, provider_code=code,
                                        retry_after_s=hint)
        raise kind(text, adapter=self.scheme, status_code=status, provider_code=code)

