"""``webhooks://`` and ``webhook://``: SMS through any provider (or relay) that takes one JSON POST.

URL::

    webhooks://sms.example.com/v1/messages?token=SECRET&from=ORNEKTIC&timeout=10&max_segments=7
    webhook://127.0.0.1:8080/send?token=SECRET        (plain HTTP: a local relay, tests)

``webhooks://`` posts over HTTPS, ``webhook://`` over plain HTTP, to the host, port and path given.
``token=`` is sent as ``Authorization: Bearer TOKEN`` (no header without it); ``from=`` replaces
the message's originator; ``max_segments=`` is the provider's part limit (default 7).

Each message is one POST with exactly these keys::

    {"to": "+905321234567", "from": "ORNEKTIC", "text": "...", "encoding": "gsm7-tr",
     "segments": 1, "commercial": true, "recipient_type": "BIREYSEL", "delivery_id": 42}

Answers: any 2xx is accepted, ``{"id": ...}`` in the body becomes the receipt's ``provider_id``
("" when there is none). 429 is transient and honours Retry-After, as do 408 and every 5xx;
401/403 and redirects are ChannelAccountErrors; any other 4xx is permanent, and a JSON body with
``"address_invalid": true`` marks the recipient's number as unusable.
"""

from __future__ import annotations

from typing import Any, ClassVar, Self

from izin import clock
from izin.channels._http import (DEFAULT_TIMEOUT_S, HttpAdapterMixin, Reply, post_json, reply_json,
                                 retry_after_s, snippet)
from izin.channels.base import ChannelAdapter, ChannelKind, OutgoingMessage, Receipt, UrlParts, sms_size
from izin.channels.errors import ChannelAccountError, PermanentChannelError, TransientChannelError

__all__ = ["DEFAULT_MAX_SEGMENTS", "WebhookAdapter", "WebhooksAdapter"]

#: parts per message unless the URL says otherwise (the renderer's default, Verimor's limit)
DEFAULT_MAX_SEGMENTS = 7
_OPTIONS = ("token", "from", "timeout", "max_segments")


class WebhookAdapter(HttpAdapterMixin, ChannelAdapter):
    """SMS as one JSON POST to a URL, over plain HTTP."""

    scheme: ClassVar[str] = "webhook"
    channel: ClassVar[ChannelKind] = "sms"
    max_segments: ClassVar[int | None] = DEFAULT_MAX_SEGMENTS
    supports_html: ClassVar[bool] = False
    #: the HTTP scheme the POST goes over
    http_scheme: ClassVar[str] = "http"

    def __init__(self, url: str, *, endpoint: str, token: str = "", originator: str = "",
                 timeout_s: float = DEFAULT_TIMEOUT_S, max_segments: int | None = DEFAULT_MAX_SEGMENTS) -> None:
        self.url = url
        #: where the POST goes
        self.endpoint = endpoint
        self.token = token
        self.originator = originator
        self.timeout_s = timeout_s
        self.max_segments = max_segments  # type: ignore[misc]  # the URL may lower or raise the class default

    @classmethod
    def from_url(cls, url: str) -> Self:
        parts = UrlParts(url, adapter=cls.scheme, options=_OPTIONS)
        if not parts.host:
            raise parts.error(f"{cls.scheme}:// needs a host: {cls.scheme}://HOST/PATH?token=SECRET")
        if parts.username or parts.password:
            raise parts.error(f"{cls.scheme}:// takes its secret as ?token=..., not as USER:PASSWORD@")
        host = f"[{parts.host}]" if ":" in parts.host else parts.host
        port = f":{parts.port}" if parts.port else ""
        endpoint = f"{cls.http_scheme}://{host}{port}{parts.path or '/'}"
        token = parts.text("token")
        if not all(" " < char <= "~" for char in token):
            # it goes into a header as it is: a line break would start another one
            raise parts.error("token= must be printable ASCII without spaces: it is sent in the Authorization "
                              "header; give the token exactly as the provider issued it")
        return cls(url, endpoint=endpoint, token=token, originator=parts.text("from"),
                   timeout_s=parts.seconds("timeout", DEFAULT_TIMEOUT_S),
                   max_segments=parts.integer("max_segments", DEFAULT_MAX_SEGMENTS))

    def send(self, message: OutgoingMessage) -> Receipt:
        if message.channel != "sms":
            raise PermanentChannelError(f"{self.scheme}:// sends SMS, not {message.channel}",
                                        adapter=self.scheme)
        body = self.request_body(message)
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        response = post_json(self._http(), self.endpoint, body, adapter=self.scheme, headers=headers)
        return self._receipt(response, body["segments"])

    def request_body(self, message: OutgoingMessage) -> dict[str, Any]:
        """The JSON the provider gets for ``message``."""
        encoding, segments = sms_size(message)
        if self.max_segments is not None and segments > self.max_segments:
            raise PermanentChannelError(f"delivery {message.delivery_id}: {segments} SMS parts; "
                                        f"{self.redacted_url()} takes at most {self.max_segments}",
                                        adapter=self.scheme)
        return {
            "to": message.to,
            "from": self.originator or message.sender,
            "text": message.sms_text,
            "encoding": encoding,
            "segments": segments,
            "commercial": message.commercial,
            "recipient_type": message.recipient_type,
            "delivery_id": message.delivery_id,
        }

    def _receipt(self, response: Reply, segments: int) -> Receipt:
        status = response.status_code
        where = f"{self.endpoint} answered HTTP {status}"
        data = reply_json(response)
        if 200 <= status < 300:
            provider_id = data.get("id") if isinstance(data, dict) else None
            return Receipt(provider_id="" if provider_id is None else str(provider_id), segments=segments,
                           accepted_at=clock.now(), detail=None if provider_id is not None else snippet(response))
        if status in (408, 429) or status >= 500:
            raise TransientChannelError(f"{where}: {snippet(response)}", adapter=self.scheme,
                                        status_code=status, retry_after_s=retry_after_s(response))
        if status in (401, 403) or 300 <= status < 400:
            raise ChannelAccountError(f"{where}: {snippet(response)}; check the URL and token",
                                      adapter=self.scheme, status_code=status)
        address_invalid = isinstance(data, dict) and data.get("address_invalid") is True
        raise PermanentChannelError(f"{where}: {snippet(response)}", adapter=self.scheme,
                                    status_code=status, address_invalid=address_invalid)



class WebhooksAdapter(WebhookAdapter):
    """SMS as one JSON POST to a URL, over HTTPS."""

    scheme: ClassVar[str] = "webhooks"
    http_scheme: ClassVar[str] = "https"
