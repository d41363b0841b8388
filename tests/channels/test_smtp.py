"""The SMTP adapter against a real aiosmtpd server on loopback."""

from __future__ import annotations

import email
import socket
import ssl
import threading
from datetime import datetime
from email import policy
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import AuthResult, LoginPassword

from izin.channels.base import OutgoingMessage, Receipt
from izin.channels.errors import (ChannelAccountError, ChannelConfigError, PermanentChannelError,
                                  TransientChannelError)
from izin.channels.mime import message_id
from izin.channels.smtp import SmtpAdapter, SmtpsAdapter

# the AUTH tests run aiosmtpd without TLS on loopback, which it warns about
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")

UNSUBSCRIBE = "https://izin.ornek.com.tr/u/tok_abc123"
FROM = "kampanya@ornek.com.tr"


def message(delivery_id: int = 41, to: str = "ayse@example.com", **changes: Any) -> OutgoingMessage:
    fields: dict[str, Any] = dict(
        delivery_id=delivery_id, channel="email", to=to, commercial=True,
        subject="İyi ki doğdun Ayşe! Şimdi %20 indirim", html="<p>Merhaba Ayşe, iyi ki doğdun!</p>",
        text="Merhaba Ayşe, iyi ki doğdun!", from_name="Örnek Ticaret A.Ş.",
        list_unsubscribe_url=UNSUBSCRIBE, list_unsubscribe_mailto="ret@ornek.com.tr")
    fields.update(changes)
    return OutgoingMessage(**fields)


def adapter_for_server(server: Any, query: str = f"from={FROM}", userinfo: str = "",
                       scheme: str = "smtp") -> SmtpAdapter:
    cls = SmtpsAdapter if scheme == "smtps" else SmtpAdapter
    return cls.from_url(f"{scheme}://{userinfo}127.0.0.1:{server.port}?{query}&timeout=5")


def parsed(content: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(content, policy=policy.default)  # type: ignore[return-value]


def test_sends_the_full_message(smtp_server: Any, fixed_now: datetime) -> None:
    with adapter_for_server(smtp_server) as adapter:
        receipt = adapter.send(message())

    expected_id = message_id(message(), FROM)
    assert receipt == Receipt(provider_id=expected_id, segments=None, accepted_at=fixed_now,
                              detail="250 2.0.0 queued as 42")
    [received] = smtp_server.handler.messages
    assert (received.mail_from, received.rcpt_tos) == (FROM, ["ayse@example.com"])
    assert received.content.isascii()
    mail = parsed(received.content)
    assert mail["From"].addresses[0].display_name == "Örnek Ticaret A.Ş."
    assert mail["From"].addresses[0].addr_spec == FROM
    assert str(mail["To"]) == "ayse@example.com"
    assert b"Subject: =?utf-8?" in received.content  # RFC 2047 on the wire
    assert str(mail["Subject"]) == "İyi ki doğdun Ayşe! Şimdi %20 indirim"
    assert str(mail["Message-ID"]) == expected_id
    assert str(mail["Date"]) == "Tue, 24 Nov 2026 10:00:00 +0300"
    assert str(mail["List-Unsubscribe"]) == f"<{UNSUBSCRIBE}>, <mailto:ret@ornek.com.tr>"
    assert str(mail["List-Unsubscribe-Post"]) == "List-Unsubscribe=One-Click"
    assert mail.get_content_type() == "multipart/alternative"
    assert [(part.get_content_type(), part.get_content()) for part in mail.iter_parts()] == [
        ("text/plain", "Merhaba Ayşe, iyi ki doğdun!\r\n"),
        ("text/html", "<p>Merhaba Ayşe, iyi ki doğdun!</p>\r\n"),
    ]


def test_from_falls_back_to_the_message_then_the_user(smtp_server_factory: Any) -> None:
    server = smtp_server_factory()
    with adapter_for_server(server, query="starttls=0") as adapter:
        adapter.send(message(from_addr="destek@ornek.com.tr"))
        with pytest.raises(ChannelAccountError, match=r"no From address: add \?from=ADDRESS"):
            adapter.send(message(delivery_id=42))
    assert [m.mail_from for m in server.handler.messages] == ["destek@ornek.com.tr"]
    assert SmtpAdapter.from_url("smtp://kampanya%40ornek.com.tr:pw@h").from_addr == FROM
    assert SmtpAdapter.from_url("smtp://kampanya@ornek.com.tr:pw@h").from_addr == FROM


def test_many_sends_share_one_connection(smtp_server: Any) -> None:
    with adapter_for_server(smtp_server) as adapter:
        for delivery_id in range(1, 6):
            adapter.send(message(delivery_id, to=f"kisi{delivery_id}@example.com"))
        assert adapter.connections_opened == 1
    assert smtp_server.connections == 1
    assert [m.rcpt_tos for m in smtp_server.handler.messages] == [[f"kisi{i}@example.com"] for i in range(1, 6)]


def test_lines_that_start_with_a_period_arrive_as_written(smtp_server: Any) -> None:
    # DATA ends at a line of one ".", so a line that starts with one is sent doubled (RFC 5321 4.5.2)
    text = ".\n.. iki nokta\nson satır\n."
    with adapter_for_server(smtp_server) as adapter:
        adapter.send(message(text=text, html="<p>.</p>"))
    [received] = smtp_server.handler.messages
    [plain, _] = parsed(received.content).iter_parts()
    assert plain.get_content() == ".\r\n.. iki nokta\r\nson satır\r\n.\r\n"


@pytest.mark.parametrize("to", ['"ayse yilmaz"@example.com', "o'brien@example.com", "ayse+kampanya@example.com.tr"])
def test_addresses_reach_the_envelope_as_written(smtp_server: Any, to: str) -> None:
    with adapter_for_server(smtp_server) as adapter:
        adapter.send(message(to=to))
    [received] = smtp_server.handler.messages
    assert (received.mail_from, received.rcpt_tos) == (FROM, [to])


def test_each_thread_keeps_its_own_connection(smtp_server: Any) -> None:
    errors: list[BaseException] = []
    with adapter_for_server(smtp_server) as adapter:
        def work(first: int) -> None:
            try:
                for delivery_id in range(first, first + 3):
                    adapter.send(message(delivery_id))
            except BaseException as exc:  # surfaced below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(n * 10,)) for n in (1, 2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []
    assert len(smtp_server.handler.messages) == 6
    assert smtp_server.connections == 2


def test_reconnects_after_the_server_drops_the_connection(smtp_server: Any) -> None:
    with adapter_for_server(smtp_server) as adapter:
        adapter.send(message(1))
        smtp_server.drop_connections()
        adapter.send(message(2))
        adapter.send(message(3))
        assert adapter.connections_opened == 2
    assert smtp_server.connections == 2
    assert len(smtp_server.handler.messages) == 3


def test_a_421_to_mail_on_an_idle_connection_reconnects(smtp_server: Any) -> None:
    with adapter_for_server(smtp_server) as adapter:
        adapter.send(message(1))
        smtp_server.handler.mail_replies.append("421 4.4.2 Idle timeout, closing")
        adapter.send(message(2))
    assert smtp_server.connections == 2
    assert len(smtp_server.handler.messages) == 2


def test_a_421_on_a_fresh_connection_is_transient(smtp_server: Any) -> None:
    smtp_server.handler.mail_replies.append("421 4.3.2 Service shutting down")
    with adapter_for_server(smtp_server) as adapter, pytest.raises(TransientChannelError) as caught:
        adapter.send(message())
    assert (caught.value.status_code, caught.value.provider_code) == (421, "4.3.2")


def test_close_quits_and_the_next_send_reconnects(smtp_server: Any) -> None:
    adapter = adapter_for_server(smtp_server)
    adapter.send(message(1))
    adapter.close()
    adapter.send(message(2))
    adapter.close()
    assert smtp_server.connections == 2
    assert len(smtp_server.handler.messages) == 2


@pytest.mark.parametrize(("reply", "kind", "status", "code", "address_invalid"), [
    ("550 5.1.1 <yok@example.com>: Recipient address rejected: User unknown", PermanentChannelError,
     550, "5.1.1", True),
    ("553 5.1.3 Bad recipient address syntax", PermanentChannelError, 553, "5.1.3", True),
    ("550 5.7.1 Message rejected as spam", PermanentChannelError, 550, "5.7.1", False),
    ("552 5.2.2 Mailbox full", PermanentChannelError, 552, "5.2.2", False),
    ("550 Requested action not taken", PermanentChannelError, 550, None, False),
    ("451 4.3.0 Temporary lookup failure", TransientChannelError, 451, "4.3.0", None),
    ("452 4.2.2 Over quota, try later", TransientChannelError, 452, "4.2.2", None),
])
def test_recipient_refusals_are_typed(smtp_server: Any, reply: str, kind: type, status: int,
                                      code: str | None, address_invalid: bool | None) -> None:
    smtp_server.handler.refuse["yok@example.com"] = reply
    with adapter_for_server(smtp_server) as adapter:
        with pytest.raises(kind) as caught:
            adapter.send(message(to="yok@example.com"))
        error = caught.value
        assert type(error) is kind
        assert (error.adapter, error.status_code, error.provider_code) == ("smtp", status, code)
        assert reply in str(error)
        if address_invalid is not None:
            assert error.address_invalid is address_invalid
        # the refusal is reset (RSET) and the same connection carries the next message
        adapter.send(message(2))
    assert smtp_server.connections == 1
    assert [m.rcpt_tos for m in smtp_server.handler.messages] == [["ayse@example.com"]]


def test_a_refused_sender_is_an_account_error(smtp_server: Any) -> None:
    smtp_server.handler.mail_replies.append("553 5.7.1 Sender address rejected: not owned by user")
    with adapter_for_server(smtp_server) as adapter, pytest.raises(ChannelAccountError) as caught:
        adapter.send(message())
    assert (caught.value.status_code, caught.value.provider_code) == (553, "5.7.1")
    assert isinstance(caught.value, PermanentChannelError) and caught.value.address_invalid is False


def test_a_bad_recipient_address_never_reaches_the_server(smtp_server: Any) -> None:
    with adapter_for_server(smtp_server) as adapter, pytest.raises(PermanentChannelError) as caught:
        adapter.send(message(to="ayse at example"))
    assert caught.value.address_invalid is True
    assert smtp_server.connections == 0


# --- authentication ----------------------------------------------------------------------------


def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and auth_data == (b"kampanya", b"p@ss:w/rd")
    # handled=False: aiosmtpd then answers 535 itself (handled=True would leave the reply to us)
    return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)


@pytest.fixture
def auth_server(smtp_server_factory: Any) -> Any:
    # AUTH over plain loopback: aiosmtpd requires TLS for AUTH unless told otherwise
    return smtp_server_factory(authenticator=authenticator, auth_required=True, auth_require_tls=False)


def test_logs_in_with_the_url_credentials(auth_server: Any) -> None:
    # reserved characters in the password are percent-encoded in the URL
    with adapter_for_server(auth_server, userinfo="kampanya:p%40ss%3Aw%2Frd@") as adapter:
        adapter.send(message(1))
        adapter.send(message(2))
    assert [m.login for m in auth_server.handler.messages] == [b"kampanya", b"kampanya"]
    assert auth_server.connections == 1


def test_wrong_password_is_an_account_error_without_the_password(auth_server: Any) -> None:
    with adapter_for_server(auth_server, userinfo="kampanya:yanlis-sifre@") as adapter:
        assert adapter.redacted_url().startswith("smtp://kampanya:***@127.0.0.1:")
        with pytest.raises(ChannelAccountError) as caught:
            adapter.send(message())
    assert caught.value.status_code == 535
    assert "AUTH" in str(caught.value) and "yanlis-sifre" not in str(caught.value)
    assert auth_server.handler.messages == []


def test_missing_credentials_where_the_server_wants_them(auth_server: Any) -> None:
    with adapter_for_server(auth_server) as adapter, pytest.raises(ChannelAccountError) as caught:
        adapter.send(message())
    assert caught.value.status_code == 530


def test_credentials_for_a_server_without_auth(smtp_server: Any) -> None:
    with adapter_for_server(smtp_server, userinfo="kampanya:pw@") as adapter, \
            pytest.raises(ChannelAccountError, match="does not offer AUTH"):
        adapter.send(message())


# --- TLS ---------------------------------------------------------------------------------------


def test_starttls_then_send(smtp_server_factory: Any, server_tls_context: ssl.SSLContext,
                            tls_cert: tuple[Path, Path]) -> None:
    server = smtp_server_factory(tls_context=server_tls_context, require_starttls=True)
    with adapter_for_server(server, query=f"from={FROM}&starttls=1&cafile={tls_cert[0]}") as adapter:
        adapter.send(message(1))
        adapter.send(message(2))
    assert len(server.handler.messages) == 2
    assert server.connections == 1
    assert all(session.session.ssl is not None for session in server.sessions)


def test_starttls_with_an_untrusted_certificate(smtp_server_factory: Any,
                                                server_tls_context: ssl.SSLContext) -> None:
    server = smtp_server_factory(tls_context=server_tls_context, require_starttls=True)
    with adapter_for_server(server, query=f"from={FROM}&starttls=1") as adapter, \
            pytest.raises(ChannelAccountError, match="certificate not trusted"):
        adapter.send(message())
    assert server.handler.messages == []


def test_starttls_asked_of_a_server_without_it(smtp_server: Any) -> None:
    with adapter_for_server(smtp_server, query=f"from={FROM}&starttls=1") as adapter, \
            pytest.raises(ChannelAccountError, match="does not offer STARTTLS"):
        adapter.send(message())


def test_smtps_is_tls_from_the_first_byte(smtp_server_factory: Any, server_tls_context: ssl.SSLContext,
                                          tls_cert: tuple[Path, Path]) -> None:
    server = smtp_server_factory(ssl_context=server_tls_context)
    with adapter_for_server(server, query=f"from={FROM}&cafile={tls_cert[0]}", scheme="smtps") as adapter:
        receipt = adapter.send(message())
    assert receipt.provider_id == message_id(message(), FROM)
    assert len(server.handler.messages) == 1


# --- the network failing -----------------------------------------------------------------------


def test_connection_refused_is_transient(closed_port: int) -> None:
    adapter = SmtpAdapter.from_url(f"smtp://127.0.0.1:{closed_port}?from={FROM}&timeout=2")
    with pytest.raises(TransientChannelError, match=f"cannot reach 127.0.0.1:{closed_port} \\(connect\\)"):
        adapter.send(message())


def test_a_server_that_never_greets_times_out() -> None:
    with socket.socket() as listener:  # accepts (the kernel's backlog) but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        adapter = SmtpAdapter.from_url(f"smtp://127.0.0.1:{port}?from={FROM}&timeout=0.3")
        with pytest.raises(TransientChannelError, match="timed out"):
            adapter.send(message())


# --- configuration -----------------------------------------------------------------------------


def test_url_options() -> None:
    adapter = SmtpAdapter.from_url("smtp://u%40x.com:p%2Fw@mail.ornek.com.tr:587?starttls=1&from=a@b.co&timeout=7.5")
    assert (adapter.host, adapter.port, adapter.username, adapter.password, adapter.from_addr,
            adapter.starttls, adapter.timeout_s) == ("mail.ornek.com.tr", 587, "u@x.com", "p/w", "a@b.co", True, 7.5)
    assert adapter.tls_context is not None
    assert adapter.redacted_url() == "smtp://u%40x.com:***@mail.ornek.com.tr:587?starttls=1&from=a@b.co&timeout=7.5"
    assert (SmtpAdapter.from_url("smtp://h").port, SmtpsAdapter.from_url("smtps://h").port) == (25, 465)
    assert SmtpAdapter.from_url("smtp://h").tls_context is None
    assert (SmtpAdapter.scheme, SmtpAdapter.channel, SmtpAdapter.supports_html) == ("smtp", "email", True)


@pytest.mark.parametrize(("url", "error"), [
    ("smtp://", "needs a host"),
    ("smtp://user@h", "the password is missing"),
    ("smtp://:pw@h", "the user name is missing"),
    ("smtp://h/path", "takes no path"),
    ("smtp://h?starttls=maybe", "starttls='maybe' must be 1 or 0"),
    ("smtp://h?from=not-an-address", "from='not-an-address' is not an email address"),
    ("smtp://h?timeout=0", "timeout='0' must be a positive number"),
    ("smtp://h?tls=1", "unknown option 'tls'"),
    ("smtp://h?cafile=/x.pem", "cafile= only matters with TLS"),
    ("smtp://h?starttls=1&cafile=/does/not/exist.pem", "cafile='/does/not/exist.pem' cannot be used"),
    ("smtps://h?starttls=1", "smtps:// is TLS from the start"),
])
def test_bad_urls(url: str, error: str) -> None:
    with pytest.raises(ChannelConfigError, match=error) as caught:
        SmtpAdapter.from_url(url) if url.startswith("smtp:") else SmtpsAdapter.from_url(url)
    assert caught.value.exit_code == 2
