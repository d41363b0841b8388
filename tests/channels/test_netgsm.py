"""The Netgsm adapter against a real HTTP server on loopback that checks every request."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

import pytest

from izin.channels.base import OutgoingMessage, Receipt
from izin.channels.errors import (ChannelAccountError, ChannelConfigError, PermanentChannelError,
                                  TransientChannelError)
from izin.channels.netgsm import NetgsmAdapter

TEXT = "Ayşe, iyi ki doğdun! IYIKI-ABCD2345 ile %20 indirim.\nRET yazip 4609'a gonderin"
BASIC = "Basic " + base64.b64encode(b"8503020000:s3cr#t/pw").decode()


def sms(delivery_id: int = 42, **changes: Any) -> OutgoingMessage:
    fields: dict[str, Any] = dict(delivery_id=delivery_id, channel="sms", to="+905321234567", commercial=True,
                                  recipient_type="BIREYSEL", sender="ORNEKTIC", sms_text=TEXT,
                                  encoding="gsm7-tr", segments=1)
    fields.update(changes)
    return OutgoingMessage(**fields)


@pytest.fixture
def netgsm(http_server: Any) -> Any:
    adapter = NetgsmAdapter.from_url(
        f"netgsm://8503020000:s3cr%23t%2Fpw@api.netgsm.com.tr?base={http_server.origin}&timeout=2")
    yield adapter
    adapter.close()


def test_sends_one_message_and_returns_the_jobid(netgsm: NetgsmAdapter, http_server: Any,
                                                 fixed_now: datetime) -> None:
    http_server.reply(200, {"code": "00", "jobid": "17377215342605050417149344", "description": "queued"})
    receipt = netgsm.send(sms())

    assert receipt == Receipt(provider_id="17377215342605050417149344", segments=1, accepted_at=fixed_now,
                              detail="queued")
    [request] = http_server.requests
    assert (request.method, request.path) == ("POST", "/sms/rest/v2/send")
    assert request.headers["authorization"] == BASIC
    assert request.headers["content-type"] == "application/json"
    assert request.json() == {
        "msgheader": "ORNEKTIC",
        "encoding": "TR",
        "iysfilter": "11",
        "messages": [{"msg": TEXT, "no": "5321234567"}],
    }


@pytest.mark.parametrize(("commercial", "recipient_type", "iysfilter"), [
    (True, "BIREYSEL", "11"),
    (True, "TACIR", "12"),
    (False, "BIREYSEL", "0"),
    (False, "TACIR", "0"),
])
def test_iys_filter(netgsm: NetgsmAdapter, http_server: Any, commercial: bool, recipient_type: str,
                    iysfilter: str) -> None:
    http_server.reply(200, {"code": "00", "jobid": "1"})
    netgsm.send(sms(commercial=commercial, recipient_type=recipient_type))
    assert http_server.requests[0].json()["iysfilter"] == iysfilter


@pytest.mark.parametrize(("text", "turkish"), [
    ("Kampanya basladi", False),
    ("Özel gün, Ümit! Çok güzel", False),  # Ö Ü Ç ü are in GSM-7 itself
    ("Kampanya başladı", True),
    ("İndirim 🎉 ç", True),                 # UCS-2 with Turkish letters still says TR
    ("Indirim 🎉", False),
])
def test_encoding_tr_only_when_turkish_letters_need_it(netgsm: NetgsmAdapter, http_server: Any,
                                                         text: str, turkish: bool) -> None:
    http_server.reply(200, {"code": "00", "jobid": "1"})
    netgsm.send(sms(sms_text=text, encoding=None, segments=None))
    body = http_server.requests[0].json()
    assert ("encoding" in body, body.get("encoding")) == (turkish, "TR" if turkish else None)


def test_url_header_wins_over_the_message_sender(http_server: Any) -> None:
    adapter = NetgsmAdapter.from_url(f"netgsm://u:p@?header=ORNEK&appname=izin&partnercode=77"
                                     f"&base={http_server.origin}")
    http_server.reply(200, {"code": "00", "jobid": "9"})
    adapter.send(sms(sms_text="Merhaba", commercial=False))
    assert http_server.requests[0].json() == {
        "msgheader": "ORNEK", "iysfilter": "0", "partnercode": "77", "appname": "izin",
        "messages": [{"msg": "Merhaba", "no": "5321234567"}],
    }
    adapter.close()


def test_no_originator_anywhere_is_an_account_error(netgsm: NetgsmAdapter, http_server: Any) -> None:
    with pytest.raises(ChannelAccountError, match=r"no originator: add \?header=ORIGINATOR"):
        netgsm.send(sms(sender=""))
    assert http_server.requests == []


@pytest.mark.parametrize(("to", "address_invalid", "why"), [
    ("+902125550000", True, "is not a Turkish mobile number"),
    ("+4915112345678", False, "is not a Turkish number"),
])
def test_numbers_netgsm_cannot_take_are_refused_before_sending(netgsm: NetgsmAdapter, http_server: Any,
                                                               to: str, address_invalid: bool, why: str) -> None:
    with pytest.raises(PermanentChannelError, match=why) as caught:
        netgsm.send(sms(to=to))
    assert caught.value.address_invalid is address_invalid
    assert http_server.requests == []


def test_more_parts_than_netgsm_takes(netgsm: NetgsmAdapter, http_server: Any) -> None:
    with pytest.raises(PermanentChannelError, match="8 SMS parts; Netgsm takes at most 7"):
        netgsm.send(sms(segments=8))
    assert http_server.requests == []


@pytest.mark.parametrize(("status", "code", "kind", "retry_after_s"), [
    (200, "20", PermanentChannelError, None),
    (200, "30", ChannelAccountError, None),
    (200, "40", ChannelAccountError, None),
    (200, "50", PermanentChannelError, None),
    (200, "51", ChannelAccountError, None),
    (406, "70", PermanentChannelError, None),
    (200, "80", TransientChannelError, None),
    (200, "85", TransientChannelError, 60.0),
    (200, "99", PermanentChannelError, None),
    (200, 30, ChannelAccountError, None),  # a number instead of a string
])
def test_result_codes(netgsm: NetgsmAdapter, http_server: Any, status: int, code: Any, kind: type,
                      retry_after_s: float | None) -> None:
    http_server.reply(status, {"code": code, "description": "açıklama"})
    with pytest.raises(kind) as caught:
        netgsm.send(sms())
    error = caught.value
    assert type(error) is kind
    assert (error.adapter, error.status_code, error.provider_code) == ("netgsm", status, str(code))
    assert str(error).startswith(f"Netgsm code {code}: ") and str(error).endswith("(açıklama)")
    if kind is TransientChannelError:
        assert error.retry_after_s == retry_after_s
    else:
        assert error.address_invalid is False  # İYS refusals (50) do not make the number invalid


@pytest.mark.parametrize(("status", "headers", "kind", "retry_after_s"), [
    (429, {"Retry-After": "7"}, TransientChannelError, 7.0),
    (429, {}, TransientChannelError, None),
    (503, {"Retry-After": "120"}, TransientChannelError, 120.0),
    (500, {}, TransientChannelError, None),
    (401, {}, ChannelAccountError, None),
    (403, {}, ChannelAccountError, None),
])
def test_http_statuses(netgsm: NetgsmAdapter, http_server: Any, status: int, headers: dict[str, str],
                       kind: type, retry_after_s: float | None) -> None:
    http_server.reply(status, {"error": "x"}, headers=headers)
    with pytest.raises(kind) as caught:
        netgsm.send(sms())
    assert type(caught.value) is kind
    assert caught.value.status_code == status
    if kind is TransientChannelError:
        assert caught.value.retry_after_s == retry_after_s


def test_an_answer_without_a_code_is_not_retried(netgsm: NetgsmAdapter, http_server: Any) -> None:
    http_server.reply(200, b"<html>maintenance</html>")
    with pytest.raises(PermanentChannelError, match="without a result code: <html>maintenance</html>"):
        netgsm.send(sms())


def test_sends_reuse_one_connection(netgsm: NetgsmAdapter, http_server: Any) -> None:
    http_server.default.body = {"code": "00", "jobid": "1"}
    for delivery_id in range(3):
        netgsm.send(sms(delivery_id))
    assert len(http_server.requests) == 3
    assert http_server.connections == 1


def test_a_slow_answer_times_out_as_transient(http_server: Any) -> None:
    adapter = NetgsmAdapter.from_url(f"netgsm://u:p@?header=ORNEK&base={http_server.origin}&timeout=0.2")
    http_server.reply(200, {"code": "00", "jobid": "1"}, delay_s=0.6)
    with pytest.raises(TransientChannelError, match="timed out .*may have accepted") as caught:
        adapter.send(sms())
    assert caught.value.status_code is None
    adapter.close()


def test_connection_refused_is_transient_and_not_sent(closed_port: int) -> None:
    adapter = NetgsmAdapter.from_url(f"netgsm://u:p@?base=http://127.0.0.1:{closed_port}")
    with pytest.raises(TransientChannelError, match=r"cannot reach http://127.0.0.1:\d+: .*\(not sent\)"):
        adapter.send(sms())


# --- configuration -----------------------------------------------------------------------------


def test_url_shapes() -> None:
    default = NetgsmAdapter.from_url("netgsm://8503020000:pw@?header=ORNEKTIC")
    assert default.endpoint == "https://api.netgsm.com.tr/sms/rest/v2/send"
    assert (default.usercode, default.password, default.header, default.timeout_s) == (
        "8503020000", "pw", "ORNEKTIC", 10.0)
    assert default.redacted_url() == "netgsm://8503020000:***@?header=ORNEKTIC"
    assert NetgsmAdapter.from_url("netgsm://u:p@api.netgsm.com.tr").endpoint == \
        "https://api.netgsm.com.tr/sms/rest/v2/send"
    assert NetgsmAdapter.from_url("netgsm://u:p@x?base=http://127.0.0.1:8080/").endpoint == \
        "http://127.0.0.1:8080/sms/rest/v2/send"
    assert (NetgsmAdapter.scheme, NetgsmAdapter.channel, NetgsmAdapter.max_segments,
            NetgsmAdapter.supports_html) == ("netgsm", "sms", 7, False)


@pytest.mark.parametrize(("url", "error"), [
    ("netgsm://api.netgsm.com.tr", "needs the API user code and password"),
    ("netgsm://user@api.netgsm.com.tr", "needs the API user code and password"),
    ("netgsm://u:p@h/sms", "takes no path"),
    ("netgsm://u:p@?header=ÖRNEK", "an originator is 3-11 ASCII"),
    ("netgsm://u:p@?header=AB", "an originator is 3-11 ASCII"),
    ("netgsm://u:p@?base=ftp://x", "base='ftp://x' must be scheme and host only"),
    ("netgsm://u:p@?base=http://x/path", "must be scheme and host only"),
    ("netgsm://u:p@?brand=1", "unknown option 'brand'"),
])
def test_bad_urls(url: str, error: str) -> None:
    with pytest.raises(ChannelConfigError, match=error):
        NetgsmAdapter.from_url(url)
