"""The generic JSON webhook adapter against a real HTTP server on loopback."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Any

import pytest

from izin.channels.base import OutgoingMessage, Receipt
from izin.channels.errors import (ChannelAccountError, ChannelConfigError, PermanentChannelError,
                                  TransientChannelError)
from izin.channels.webhook import WebhookAdapter, WebhooksAdapter

TEXT = "Ayşe, iyi ki doğdun! %20 indirim.\nRET yazip 4609'a gonderin"


def sms(delivery_id: int = 42, **changes: Any) -> OutgoingMessage:
    fields: dict[str, Any] = dict(delivery_id=delivery_id, channel="sms", to="+905321234567", commercial=True,
                                  recipient_type="TACIR", sender="ORNEKTIC", sms_text=TEXT,
                                  encoding="gsm7-tr", segments=1)
    fields.update(changes)
    return OutgoingMessage(**fields)


@pytest.fixture
def webhook(http_server: Any) -> Any:
    adapter = WebhookAdapter.from_url(f"webhook://127.0.0.1:{http_server.port}/v1/sms?token=t0k%2Ben&timeout=2")
    yield adapter
    adapter.close()


def test_posts_the_json_body_with_the_bearer_token(webhook: WebhookAdapter, http_server: Any,
                                                   fixed_now: datetime) -> None:
    http_server.reply(202, {"id": "msg_8f2c", "status": "queued"})
    receipt = webhook.send(sms())

    assert receipt == Receipt(provider_id="msg_8f2c", segments=1, accepted_at=fixed_now, detail=None)
    [request] = http_server.requests
    assert (request.method, request.path) == ("POST", "/v1/sms")
    assert request.headers["authorization"] == "Bearer t0k+en"
    assert request.headers["content-type"] == "application/json"
    assert request.json() == {
        "to": "+905321234567",
        "from": "ORNEKTIC",
        "text": TEXT,
        "encoding": "gsm7-tr",
        "segments": 1,
        "commercial": True,
        "recipient_type": "TACIR",
        "delivery_id": 42,
    }


def test_encoding_and_segments_are_computed_and_from_can_be_fixed(http_server: Any) -> None:
    adapter = WebhookAdapter.from_url(f"webhook://127.0.0.1:{http_server.port}/?from=IZIN")
    http_server.reply(200, {"id": 991})
    receipt = adapter.send(sms(sms_text="Merhaba 🎉" * 10, encoding=None, segments=None, commercial=False))
    body = http_server.requests[0].json()
    assert (body["from"], body["encoding"], body["segments"], body["commercial"]) == ("IZIN", "ucs2", 2, False)
    assert (receipt.provider_id, receipt.segments) == ("991", 2)
    assert "authorization" not in http_server.requests[0].headers  # no token, no header
    adapter.close()


def test_accepted_without_an_id(webhook: WebhookAdapter, http_server: Any) -> None:
    http_server.reply(200, b"OK")
    receipt = webhook.send(sms())
    assert (receipt.provider_id, receipt.detail) == ("", "OK")


@pytest.mark.parametrize(("status", "body", "headers", "kind", "retry_after_s", "address_invalid"), [
    (429, {"error": "slow down"}, {"Retry-After": "12"}, TransientChannelError, 12.0, None),
    (429, {}, {}, TransientChannelError, None, None),
    (408, {}, {}, TransientChannelError, None, None),
    (500, {"error": "boom"}, {}, TransientChannelError, None, None),
    (503, {}, {"Retry-After": "30"}, TransientChannelError, 30.0, None),
    (400, {"error": "no such number", "address_invalid": True}, {}, PermanentChannelError, None, True),
    (422, {"error": "text too long"}, {}, PermanentChannelError, None, False),
    (404, b"not found", {}, PermanentChannelError, None, False),
    (401, {"error": "bad token"}, {}, ChannelAccountError, None, False),
    (403, {}, {}, ChannelAccountError, None, False),
    (302, b"", {"Location": "https://elsewhere.example/"}, ChannelAccountError, None, False),
])
def test_statuses(webhook: WebhookAdapter, http_server: Any, status: int, body: Any, headers: dict[str, str],
                  kind: type, retry_after_s: float | None, address_invalid: bool | None) -> None:
    http_server.reply(status, body, headers=headers)
    with pytest.raises(kind) as caught:
        webhook.send(sms())
    error = caught.value
    assert type(error) is kind
    assert (error.adapter, error.status_code) == ("webhook", status)
    assert f"answered HTTP {status}" in str(error)
    if kind is TransientChannelError:
        assert error.retry_after_s == retry_after_s
    else:
        assert error.address_invalid is address_invalid
    assert len(http_server.requests) == 1  # never followed a redirect, never retried by itself


def test_retry_after_as_an_http_date(webhook: WebhookAdapter, http_server: Any) -> None:
    when = datetime.now(timezone.utc) + timedelta(seconds=90)
    http_server.reply(429, {}, headers={"Retry-After": format_datetime(when, usegmt=True)})
    with pytest.raises(TransientChannelError) as caught:
        webhook.send(sms())
    assert caught.value.retry_after_s is not None and 85 <= caught.value.retry_after_s <= 90


def test_more_parts_than_allowed(http_server: Any) -> None:
    adapter = WebhookAdapter.from_url(f"webhook://127.0.0.1:{http_server.port}/?max_segments=2")
    assert adapter.max_segments == 2
    with pytest.raises(PermanentChannelError, match="3 SMS parts; .* takes at most 2"):
        adapter.send(sms(segments=3))
    assert http_server.requests == []


def test_email_is_refused(webhook: WebhookAdapter) -> None:
    message = OutgoingMessage(delivery_id=1, channel="email", to="a@b.co", commercial=False, text="x")
    with pytest.raises(PermanentChannelError, match="webhook:// sends SMS, not email"):
        webhook.send(message)


def test_timeout_and_refused_connections_are_transient(http_server: Any, closed_port: int) -> None:
    slow = WebhookAdapter.from_url(f"webhook://127.0.0.1:{http_server.port}/?timeout=0.2")
    http_server.reply(200, {"id": "late"}, delay_s=0.6)
    with pytest.raises(TransientChannelError, match="may have accepted"):
        slow.send(sms())
    slow.close()
    refused = WebhookAdapter.from_url(f"webhook://127.0.0.1:{closed_port}/")
    with pytest.raises(TransientChannelError, match="not sent"):
        refused.send(sms())


def test_sends_reuse_a_connection_until_the_server_closes_it(webhook: WebhookAdapter, http_server: Any) -> None:
    http_server.default.body = {"id": "ok"}
    webhook.send(sms(1))
    webhook.send(sms(2))
    assert http_server.connections == 1
    http_server.reply(200, {"id": "last"}, headers={"Connection": "close"})
    webhook.send(sms(3))
    assert webhook.send(sms(4)).provider_id == "ok"  # on a new connection, not the one closed
    assert (http_server.connections, len(http_server.requests)) == (2, 4)


def test_an_endpoint_without_a_port_is_reached_on_the_schemes_port() -> None:
    from izin.channels._http import HttpClient

    client = HttpClient(2.0)
    made = {(scheme, host): client._new_connection(scheme, host, None) for scheme, host in
            [("http", "::1"), ("https", "::1"), ("https", "sms.example.com")]}
    assert {key: (c.host, c.port) for key, c in made.items()} == {
        ("http", "::1"): ("::1", 80), ("https", "::1"): ("::1", 443), ("https", "sms.example.com"): ("sms.example.com", 443)}


def test_a_connection_the_server_dropped_while_idle_is_not_used_again(webhook: WebhookAdapter,
                                                                      http_server: Any) -> None:
    http_server.server.RequestHandlerClass.timeout = 0.1  # the server closes a connection idle that long
    webhook.send(sms(1))
    time.sleep(0.4)
    assert webhook.send(sms(2)).provider_id == ""
    # the second message went once, on a new connection: none was lost on the dropped one
    assert [r.json()["delivery_id"] for r in http_server.requests] == [1, 2]
    assert http_server.connections == 2


# --- configuration -----------------------------------------------------------------------------


def test_url_shapes() -> None:
    https = WebhooksAdapter.from_url("webhooks://sms.example.com/v1/messages?token=abc&from=ORNEK")
    assert (https.endpoint, https.token, https.originator, https.timeout_s, https.max_segments) == (
        "https://sms.example.com/v1/messages", "abc", "ORNEK", 10.0, 7)
    assert https.redacted_url() == "webhooks://sms.example.com/v1/messages?token=***&from=ORNEK"
    assert WebhookAdapter.from_url("webhook://relay:8080").endpoint == "http://relay:8080/"
    assert WebhookAdapter.from_url("webhook://[::1]:8080/x").endpoint == "http://[::1]:8080/x"
    assert (WebhooksAdapter.scheme, WebhooksAdapter.channel, WebhooksAdapter.supports_html) == (
        "webhooks", "sms", False)


@pytest.mark.parametrize(("url", "error"), [
    ("webhooks:///path", "needs a host"),
    ("webhooks://user:pw@host/", r"takes its secret as \?token="),
    ("webhooks://host/?max_segments=0", "max_segments='0' must be a whole number of at least 1"),
    ("webhooks://host/?api_key=1", "unknown option 'api_key'"),
    ("webhooks://host/?token=abc%0D%0AX-Injected:%201", "token= must be printable ASCII"),
    ("webhooks://host/?token=%C5%9Fifre", "token= must be printable ASCII"),
])
def test_bad_urls(url: str, error: str) -> None:
    with pytest.raises(ChannelConfigError, match=error):
        WebhooksAdapter.from_url(url)
