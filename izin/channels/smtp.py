"""``smtp://`` and ``smtps://``: email through an SMTP server with smtplib, one reused connection.

URL::

    smtp://USER:PASSWORD@HOST:PORT?starttls=1&from=kampanya@ornek.com.tr&timeout=10
    smtps://USER:PASSWORD@HOST:465?from=kampanya@ornek.com.tr

- ``smtp://`` speaks plain SMTP (port 25 by default); ``starttls=1`` upgrades with STARTTLS before
  authenticating (submission, usually port 587). ``smtps://`` is TLS from the first byte (port 465
  by default). Certificates are verified against the system's CAs, or ``cafile=PATH``.
- ``USER:PASSWORD`` (both or neither; percent-encode ``/ ? # @ :`` in them) turns on AUTH.
- ``from=`` is the envelope sender and the From address; without it the message's own
  ``from_addr`` is used, then USER when it is an address.
- ``timeout=`` seconds for connecting and for each reply (default 30).

Each worker thread keeps one connection open and sends message after message over it; a server
that dropped an idle connection is noticed at the MAIL command, where nothing has been delivered
yet, and the adapter reconnects once and carries on. The message is the one `izin.channels.mime`
builds (the outbox writes the same). The receipt's ``provider_id`` is its Message-ID.

Replies: 4xx is a TransientChannelError; 5xx a PermanentChannelError, with ``address_invalid`` for
a 5.1.x recipient status (5.1.1 no such mailbox, 5.1.2 bad domain, ...); a 5xx to MAIL FROM or
AUTH is a ChannelAccountError (the account or its From address is refused, for every message).
Connection refused, timeouts and drops are transient.
"""

from __future__ import annotations

import re
import smtplib
import ssl
import threading
from email.headerregistry import Address
from typing import ClassVar, Self

from izin import clock
from izin.channels.base import ChannelAdapter, ChannelKind, OutgoingMessage, Receipt, UrlParts
from izin.channels.errors import (ChannelAccountError, ChannelError, PermanentChannelError,
                                  TransientChannelError)
from izin.channels.mime import build_email, is_bad_recipient, is_dot_atom

__all__ = ["DEFAULT_TIMEOUT_S", "SmtpAdapter", "SmtpsAdapter"]

#: seconds to wait for the connection and for each server reply
DEFAULT_TIMEOUT_S = 30.0

_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?!\S)")
_OPTIONS = ("starttls", "from", "timeout", "cafile")


class SmtpAdapter(ChannelAdapter):
    """Email over SMTP, STARTTLS on request."""

    scheme: ClassVar[str] = "smtp"
    channel: ClassVar[ChannelKind] = "email"
    supports_html: ClassVar[bool] = True
    #: TLS from the first byte (smtps://) rather than plain or STARTTLS
    implicit_tls: ClassVar[bool] = False
    default_port: ClassVar[int] = 25

    def __init__(self, url: str, *, host: str, port: int, username: str = "", password: str = "",
                 from_addr: str = "", starttls: bool = False, timeout_s: float = DEFAULT_TIMEOUT_S,
                 tls_context: ssl.SSLContext | None = None) -> None:
        self.url = url
        self.host = host
        self.port = port
        self.username = username
        self.password = password
        self.from_addr = from_addr
        self.starttls = starttls
        self.timeout_s = timeout_s
        self.tls_context = tls_context
        #: connections opened since the adapter was made (reconnects included)
        self.connections_opened = 0
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: set[smtplib.SMTP] = set()

    @classmethod
    def from_url(cls, url: str) -> Self:
        parts = UrlParts(url, adapter=cls.scheme, options=_OPTIONS)
        if not parts.host:
            raise parts.error(f"{cls.scheme}:// needs a host: {cls.scheme}://USER:PASSWORD@HOST:PORT")
        if parts.path not in ("", "/"):
            raise parts.error(f"{cls.scheme}:// takes no path; options go after ?, e.g. ?from=ADDRESS")
        if bool(parts.username) != bool(parts.password):
            missing = "password" if parts.username else "user name"
            raise parts.error(f"the {missing} is missing: write {cls.scheme}://USER:PASSWORD@HOST, "
                              "or neither for a server without AUTH")
        starttls = parts.flag("starttls")
        if starttls and cls.implicit_tls:
            raise parts.error("smtps:// is TLS from the start; drop starttls=1, or use smtp://...?starttls=1")
        from_addr = parts.text("from")
        if from_addr:
            _check_address(from_addr, parts)
        elif "@" in parts.username:
            from_addr = parts.username
        context = None
        if starttls or cls.implicit_tls:
            cafile = parts.text("cafile") or None
            try:
                context = ssl.create_default_context(cafile=cafile)
            except (OSError, ssl.SSLError) as exc:
                raise parts.error(f"cafile={cafile!r} cannot be used: {exc}") from None
        elif "cafile" in parts.options:
            raise parts.error("cafile= only matters with TLS: add starttls=1 or use smtps://")
        return cls(url, host=parts.host, port=parts.port or cls.default_port, username=parts.username,
                   password=parts.password, from_addr=from_addr, starttls=starttls,
                   timeout_s=parts.seconds("timeout", DEFAULT_TIMEOUT_S), tls_context=context)

    # --- sending --------------------------------------------------------------------------------

    def send(self, message: OutgoingMessage) -> Receipt:
        if message.channel != "email":
            raise PermanentChannelError(f"{self.scheme}:// sends email, not {message.channel}",
                                        adapter=self.scheme)
        from_addr = self.from_addr or message.from_addr
        if not from_addr:
            raise ChannelAccountError(f"no From address: add ?from=ADDRESS to {self.redacted_url()}",
                                      adapter=self.scheme)
        utf8 = not (from_addr.isascii() and message.to.isascii())
        try:
            email = build_email(message, from_addr, utf8=utf8)
        except ValueError as exc:
            raise PermanentChannelError(f"delivery {message.delivery_id}: {exc}", adapter=self.scheme,
                                        address_invalid=is_bad_recipient(exc)) from None
        code, reply = self._transaction(from_addr, message.to, email.data, utf8)
        return Receipt(provider_id=email.message_id, accepted_at=clock.now(),
                       detail=f"{code} {reply}")

    def _transaction(self, from_addr: str, to: str, data: bytes, utf8: bool) -> tuple[int, str]:
        """MAIL, RCPT, DATA on this thread's connection; the final reply, or a typed error."""
        for _ in range(2):
            connection, fresh = self._connection()
            options: list[str] = []
            if utf8:
                if not connection.has_extn("smtputf8"):
                    raise PermanentChannelError(
                        f"{self.host} does not take internationalised addresses (no SMTPUTF8): {to}",
                        adapter=self.scheme)
                options = ["SMTPUTF8", "BODY=8BITMIME"]
            try:
                code, reply = _command(connection, "MAIL FROM", from_addr, options)
            except (smtplib.SMTPServerDisconnected, OSError) as exc:
                self._discard(connection)
                if fresh:
                    raise self._lost(exc, "MAIL") from None
                continue  # the server dropped the idle connection; nothing was sent: reconnect
            if code == 421 and not fresh:
                self._discard(connection)
                continue  # "closing": an idle connection the server timed out
            break
        if code != 250:
            raise self._refused(connection, code, reply, "MAIL")
        try:
            code, reply = _command(connection, "RCPT TO", to, [])
            if code not in (250, 251):
                raise self._refused(connection, code, reply, "RCPT")
            code, reply = _data(connection, data)
        except smtplib.SMTPDataError as exc:  # no 354 to DATA
            raise self._refused(connection, exc.smtp_code, exc.smtp_error, "DATA") from None
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            self._discard(connection)
            raise self._lost(exc, "the transaction") from None
        if code != 250:
            raise self._refused(connection, code, reply, "DATA")
        return code, _text(reply)

    def _refused(self, connection: smtplib.SMTP, code: int, reply: bytes | str, stage: str) -> ChannelError:
        """The error for a non-success reply to ``stage``; the connection is reset for the next one."""
        text = _text(reply)
        if code == 421 or not self._reset(connection):
            self._discard(connection)
        enhanced = _ENHANCED.match(text)
        provider_code = enhanced.group(0) if enhanced else None
        message = f"{self.host}:{self.port} answered {stage} with {code} {text}"
        if 400 <= code < 500:
            return TransientChannelError(message, adapter=self.scheme, status_code=code,
                                         provider_code=provider_code)
        if code >= 500 and stage == "MAIL":
            return ChannelAccountError(message, adapter=self.scheme, status_code=code,
                                       provider_code=provider_code)
        if code >= 500:
            # 5.1.x is an addressing status; 5.1.7 and 5.1.8 are about the sender, not the recipient
            bad_mailbox = (stage == "RCPT" and enhanced is not None and enhanced.group(2) == "1"
                           and enhanced.group(3) not in ("7", "8"))
            return PermanentChannelError(message, adapter=self.scheme, status_code=code,
                                         provider_code=provider_code, address_invalid=bad_mailbox)
        return TransientChannelError(f"{message} (unexpected reply)", adapter=self.scheme,
                                     status_code=code, provider_code=provider_code)

    def _lost(self, exc: BaseException, stage: str) -> TransientChannelError:
        return TransientChannelError(f"{self.host}:{self.port} dropped the connection during {stage}: "
                                     f"{exc or type(exc).__name__}", adapter=self.scheme)

    # --- connections ----------------------------------------------------------------------------

    def _connection(self) -> tuple[smtplib.SMTP, bool]:
        """This thread's open connection, and whether it was opened just now."""
        connection: smtplib.SMTP | None = getattr(self._local, "connection", None)
        if connection is not None and connection.sock is not None:
            return connection, False
        connection = self._connect()
        self._local.connection = connection
        with self._lock:
            self._open.add(connection)
            self.connections_opened += 1
        return connection, True

    def _connect(self) -> smtplib.SMTP:
        where = f"{self.host}:{self.port}"
        stage = "connect"
        try:
            if self.implicit_tls:
                connection: smtplib.SMTP = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout_s,
                                                             context=self.tls_context)
            else:
                connection = smtplib.SMTP(self.host, self.port, timeout=self.timeout_s)
            try:
                stage = "EHLO"
                connection.ehlo_or_helo_if_needed()
                if self.starttls:
                    stage = "STARTTLS"
                    connection.starttls(context=self.tls_context)
                    connection.ehlo_or_helo_if_needed()
                if self.username:
                    stage = "AUTH"
                    connection.login(self.username, self.password)
            except BaseException:
                connection.close()
                raise
        except smtplib.SMTPNotSupportedError as exc:
            what = "STARTTLS" if stage == "STARTTLS" else "AUTH"
            fix = ("drop starttls=1 or use smtps://" if what == "STARTTLS"
                   else "drop USER:PASSWORD from the URL")
            raise ChannelAccountError(f"{where} does not offer {what} ({exc}); {fix}",
                                      adapter=self.scheme) from None
        except smtplib.SMTPResponseException as exc:
            text = _text(exc.smtp_error)
            message = f"{where} answered {stage} with {exc.smtp_code} {text}"
            if 400 <= exc.smtp_code < 500:
                raise TransientChannelError(message, adapter=self.scheme, status_code=exc.smtp_code) from None
            raise ChannelAccountError(message, adapter=self.scheme, status_code=exc.smtp_code) from None
        except ssl.SSLCertVerificationError as exc:
            raise ChannelAccountError(f"{where}: TLS certificate not trusted ({exc.verify_message}); "
                                      "fix the server's certificate or give cafile=PATH",
                                      adapter=self.scheme) from None
        except smtplib.SMTPServerDisconnected as exc:
            raise TransientChannelError(f"{where} closed the connection during {stage}: {exc}",
                                        adapter=self.scheme) from None
        except smtplib.SMTPException as exc:  # e.g. "No suitable authentication method found."
            raise ChannelAccountError(f"{where}: {stage} failed: {exc}", adapter=self.scheme) from None
        except OSError as exc:  # refused, unreachable, DNS, timeout, TLS handshake
            reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc) or
                                                                       type(exc).__name__)
            raise TransientChannelError(f"cannot reach {where} ({stage}): {reason}",
                                        adapter=self.scheme) from None
        return connection

    def _reset(self, connection: smtplib.SMTP) -> bool:
        """RSET after a refusal, so the connection can carry the next message; False if it broke."""
        try:
            return connection.rset()[0] == 250
        except (smtplib.SMTPException, OSError):
            return False

    def _discard(self, connection: smtplib.SMTP) -> None:
        if getattr(self._local, "connection", None) is connection:
            self._local.connection = None
        with self._lock:
            self._open.discard(connection)
        try:
            connection.close()
        except OSError:
            pass

    def close(self) -> None:
        """QUIT every open connection (all threads); the next send reconnects."""
        with self._lock:
            connections = list(self._open)
            self._open.clear()
            self._local = threading.local()
        for connection in connections:
            try:
                connection.quit()
            except (smtplib.SMTPException, OSError):
                connection.close()


class SmtpsAdapter(SmtpAdapter):
    """Email over SMTP in TLS from the first byte (port 465)."""

    scheme: ClassVar[str] = "smtps"
    implicit_tls: ClassVar[bool] = True
    default_port: ClassVar[int] = 465


def _command(connection: smtplib.SMTP, verb: str, address: str, options: list[str]) -> tuple[int, bytes]:
    """MAIL FROM or RCPT TO. A plain address is written as it is: smtplib's own mail() and rcpt()
    parse every address again (quoteaddr), about 4% of a worker's CPU, to the same <address>."""
    if options or not is_dot_atom(address):
        return connection.mail(address, options) if verb == "MAIL FROM" else connection.rcpt(address)
    connection.putcmd(f"{verb}:<{address}>")
    return connection.getreply()


def _data(connection: smtplib.SMTP, data: bytes) -> tuple[int, bytes]:
    """DATA with the message as mime built it: its lines already end in CRLF, so only the lines
    that start with "." are doubled (RFC 5321 4.5.2), without smtplib's regular expression."""
    connection.putcmd("data")
    code, reply = connection.getreply()
    if code != 354:
        raise smtplib.SMTPDataError(code, reply)
    stuffed = data.replace(b"\r\n.", b"\r\n..")
    if stuffed.startswith(b"."):
        stuffed = b"." + stuffed
    if not stuffed.endswith(b"\r\n"):
        stuffed += b"\r\n"
    connection.send(stuffed + b".\r\n")
    return connection.getreply()


def _text(reply: bytes | str) -> str:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
    return " ".join(text.split())


def _check_address(address: str, parts: UrlParts) -> None:
    try:
        parsed = Address(addr_spec=address)
    except Exception:  # the header parser raises several kinds
        parsed = None
    if parsed is None or not parsed.username or not parsed.domain:
        raise parts.error(f"from={address!r} is not an email address")

