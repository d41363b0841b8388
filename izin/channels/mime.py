"""The one email shape izin sends, shared by the outbox and SMTP so both write the same bytes.

``build_email`` makes a complete RFC 5322 message: From (trade name and address), To, Subject,
Date (Türkiye time), Message-ID, List-Unsubscribe (``<https://...>`` and an optional
``<mailto:...>``), ``List-Unsubscribe-Post: List-Unsubscribe=One-Click`` for commercial mail
(RFC 8058), then the caller's extra headers, and a multipart/alternative body: text/plain first,
text/html second (the last part is the preferred one).

Bodies are UTF-8 in quoted-printable and non-ASCII headers are RFC 2047 encoded, so the message is
7-bit clean: any SMTP server takes it, with or without 8BITMIME.

The Message-ID is derived from the delivery and its content, not random: a retry of the same
delivery (after a timeout that hid an acceptance) carries the same Message-ID, which lets mail
systems that de-duplicate on it drop the copy.
"""

from __future__ import annotations

import hashlib
from email import policy
from email.errors import HeaderParseError
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime

from izin import clock
from izin.channels.base import OutgoingMessage

__all__ = ["BadAddress", "LIST_UNSUBSCRIBE_POST", "build_email", "is_bad_recipient", "message_id",
           "to_bytes"]

#: The one value RFC 8058 allows for List-Unsubscribe-Post.
LIST_UNSUBSCRIBE_POST = "List-Unsubscribe=One-Click"
#: headers that describe the MIME structure: the builder owns them, extras may not replace them
_STRUCTURAL = frozenset({"content-type", "content-transfer-encoding", "mime-version"})
# ASCII header values are stored raw and written as given: the default policy would refold a
# long List-Unsubscribe URL into RFC 2047 encoded words, which no mail client reads as a URL.
_BUILD = policy.default.clone(refold_source="none")
_WIRE = policy.SMTP.clone(refold_source="none")
_WIRE_UTF8 = policy.SMTPUTF8.clone(refold_source="none")
#: fold List-Unsubscribe between its targets past this many characters (RFC 5322 "SHOULD" 78)
_FOLD_AT = 78


class BadAddress(ValueError):
    """From or To is not an email address; ``header`` says which."""

    def __init__(self, header: str, message: str) -> None:
        self.header = header
        super().__init__(message)


def is_bad_recipient(error: Exception) -> bool:
    """Whether ``error`` from `build_email` means the recipient's address is not an address."""
    return isinstance(error, BadAddress) and error.header == "To"


def message_id(message: OutgoingMessage, from_addr: str) -> str:
    """``<izin.DELIVERY.DIGEST@DOMAIN>``: the same for the same delivery and content."""
    digest = hashlib.sha256("\0".join((
        str(message.delivery_id), message.to, from_addr, message.subject, message.text, message.html,
    )).encode("utf-8")).hexdigest()[:20]
    domain = from_addr.rpartition("@")[2]
    if not domain or not domain.isascii():
        domain = "localhost"
    return f"<izin.{message.delivery_id}.{digest}@{domain}>"


def build_email(message: OutgoingMessage, from_addr: str) -> EmailMessage:
    """The complete email for ``message`` sent from ``from_addr``.

    Raises BadAddress when ``message.to`` or ``from_addr`` is not an address (the caller decides
    whose fault that is) and ValueError when an extra header would replace the MIME structure.
    """
    if message.channel != "email":
        raise ValueError(f"delivery {message.delivery_id} is an {message.channel} message, not an email")
    email = EmailMessage(policy=_BUILD)
    email["From"] = _address(from_addr, message.from_name, "From")
    email["To"] = _address(message.to, "", "To")
    email["Subject"] = message.subject
    email["Date"] = format_datetime(clock.now().astimezone(clock.ISTANBUL))
    email["Message-ID"] = message_id(message, from_addr)
    if message.list_unsubscribe_url:
        targets = [f"<{message.list_unsubscribe_url}>"]
        if message.list_unsubscribe_mailto:
            mailto = message.list_unsubscribe_mailto
            targets.append(f"<{mailto if mailto.startswith('mailto:') else 'mailto:' + mailto}>")
        _set(email, "List-Unsubscribe", _fold_list(targets))
        if message.commercial:
            _set(email, "List-Unsubscribe-Post", LIST_UNSUBSCRIBE_POST)
    for name, value in message.headers.items():
        if name.lower() in _STRUCTURAL:
            raise ValueError(f"header {name!r} is set by the MIME builder and cannot be replaced")
        del email[name]
        _set(email, name, value)
    if message.text:
        email.set_content(message.text, subtype="plain", charset="utf-8", cte="quoted-printable")
        if message.html:
            email.add_alternative(message.html, subtype="html", charset="utf-8", cte="quoted-printable")
            for part in email.iter_parts():
                # add_alternative builds the part as a whole message, with its own MIME-Version
                del part["MIME-Version"]
    else:
        email.set_content(message.html, subtype="html", charset="utf-8", cte="quoted-printable")
    return email


def to_bytes(email: EmailMessage, *, utf8: bool = False) -> bytes:
    """The message as sent on the wire: CRLF line ends; ``utf8`` for SMTPUTF8 addresses."""
    return email.as_bytes(policy=_WIRE_UTF8 if utf8 else _WIRE)


def _set(email: EmailMessage, name: str, value: str) -> None:
    """Add a header: ASCII values verbatim (URLs stay URLs), others RFC 2047 encoded."""
    if "\r" in value or "\n" in value.replace("\n ", ""):
        raise ValueError(f"header {name!r} may not contain a line break")
    if value.isascii():
        email.set_raw(name, value)
    else:
        email[name] = value


def _fold_list(targets: list[str]) -> str:
    """``<a>, <b>`` on one line, or one target a line when that would pass `_FOLD_AT`."""
    line = ", ".join(targets)
    if len("List-Unsubscribe: ") + len(line) <= _FOLD_AT:
        return line
    return ",\n ".join(targets)


def _address(addr_spec: str, display_name: str, header: str) -> Address:
    try:
        address = Address(display_name=display_name, addr_spec=addr_spec)
    except (HeaderParseError, ValueError, IndexError) as exc:
        raise BadAddress(header, f"{header} {addr_spec!r} is not an email address ({exc})") from None
    if not address.username or not address.domain:
        raise BadAddress(header, f"{header} {addr_spec!r} is not an email address (it needs local@domain)")
    return address
