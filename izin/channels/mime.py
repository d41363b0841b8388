"""The one email shape izin sends, shared by the outbox and SMTP so both write the same bytes.

``build_email`` makes a complete RFC 5322 message: From (trade name and address), To, Subject,
Date (Türkiye time), Message-ID, List-Unsubscribe (``<https://...>`` and an optional
``<mailto:...>``), ``List-Unsubscribe-Post: List-Unsubscribe=One-Click`` for commercial mail
(RFC 8058), then the caller's extra headers, and a multipart/alternative body: text/plain first,
text/html second (the last part is the preferred one).

Bodies are UTF-8 in quoted-printable and non-ASCII headers are RFC 2047 encoded, so the message is
7-bit clean: any SMTP server takes it, with or without 8BITMIME.

The bytes are written directly rather than through ``email.message.EmailMessage``, whose header
parsing and refolding cost more than sending the message (about 2 ms a message here, the largest
single cost of a send); the shape is the same and ``email`` parses it back exactly (tests/channels).

The Message-ID is derived from the delivery and its content, not random: a retry of the same
delivery (after a timeout that hid an acceptance) carries the same Message-ID, which lets mail
systems that de-duplicate on it drop the copy.
"""

from __future__ import annotations

import hashlib
import quopri
import re
from dataclasses import dataclass
from datetime import datetime
from email.errors import HeaderParseError
from email.headerregistry import Address
from email.utils import format_datetime, formataddr
from functools import lru_cache

from izin import clock
from izin.channels.base import OutgoingMessage

__all__ = ["BadAddress", "Email", "LIST_UNSUBSCRIBE_POST", "build_email", "is_bad_recipient", "is_dot_atom",
           "message_id"]

#: The one value RFC 8058 allows for List-Unsubscribe-Post.
LIST_UNSUBSCRIBE_POST = "List-Unsubscribe=One-Click"
#: headers that describe the MIME structure: the builder owns them, extras may not replace them
_STRUCTURAL = frozenset({"content-type", "content-transfer-encoding", "mime-version"})
#: fold List-Unsubscribe between its targets past this many characters (RFC 5322 "SHOULD" 78)
_FOLD_AT = 78
_CRLF = "\r\n"


class BadAddress(ValueError):
    """From or To is not an email address; ``header`` says which."""

    def __init__(self, header: str, message: str) -> None:
        self.header = header
        super().__init__(message)


@dataclass(frozen=True)
class Email:
    """A complete message: its Message-ID and its bytes as sent (CRLF line ends)."""

    message_id: str
    data: bytes


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


def build_email(message: OutgoingMessage, from_addr: str, *, utf8: bool = False) -> Email:
    """The complete email for ``message`` sent from ``from_addr``; ``utf8`` (SMTPUTF8) writes
    non-ASCII headers as UTF-8 instead of RFC 2047 words.

    Raises BadAddress when ``message.to`` or ``from_addr`` is not an address (the caller decides
    whose fault that is) and ValueError when an extra header would replace the MIME structure or
    carries a line break.
    """
    if message.channel != "email":
        raise ValueError(f"delivery {message.delivery_id} is an {message.channel} message, not an email")
    identity = message_id(message, from_addr)
    headers: dict[str, tuple[str, str]] = {}

    def put(name: str, value: str) -> None:
        headers[name.lower()] = (name, value)

    put("From", _from_header(from_addr, message.from_name))
    put("To", _check_address(message.to, "To"))
    put("Subject", message.subject)
    put("Date", _date(clock.now().replace(microsecond=0)))
    put("Message-ID", identity)
    if message.list_unsubscribe_url:
        targets = [f"<{message.list_unsubscribe_url}>"]
        if message.list_unsubscribe_mailto:
            mailto = message.list_unsubscribe_mailto
            targets.append(f"<{mailto if mailto.startswith('mailto:') else 'mailto:' + mailto}>")
        put("List-Unsubscribe", _fold_list(targets))
        if message.commercial:
            put("List-Unsubscribe-Post", LIST_UNSUBSCRIBE_POST)
    for name, value in message.headers.items():
        if name.lower() in _STRUCTURAL:
            raise ValueError(f"header {name!r} is set by the MIME builder and cannot be replaced")
        headers.pop(name.lower(), None)
        put(name, value)
    lines = [_header(name, value, utf8) for name, value in headers.values()]
    lines.append("MIME-Version: 1.0")
    if message.text and message.html:
        # the boundary cannot occur in a quoted-printable body, where every "=" is written "=3D"
        boundary = f"==============={identity[6:-1].split('@')[0].replace('.', '')}=="
        lines.append(f'Content-Type: multipart/alternative; boundary="{boundary}"')
        body = (f"{_CRLF}--{boundary}{_CRLF}{_part('plain', message.text)}{_CRLF}--{boundary}{_CRLF}"
                f"{_part('html', message.html)}{_CRLF}--{boundary}--{_CRLF}")
        return Email(identity, (_CRLF.join(lines) + _CRLF + body).encode("utf-8"))
    lines.append(_part("plain" if message.text else "html", message.text or message.html))
    return Email(identity, _CRLF.join(lines).encode("utf-8"))


def _part(subtype: str, text: str) -> str:
    """A text part's headers, blank line and quoted-printable body (UTF-8, CRLF, ending in a line end)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.endswith("\n"):
        text += "\n"
    body = quopri.encodestring(text.encode("utf-8")).decode("ascii").replace("\n", _CRLF)
    return (f'Content-Type: text/{subtype}; charset="utf-8"{_CRLF}Content-Transfer-Encoding: quoted-printable'
            f"{_CRLF}{_CRLF}{body}")


def _header(name: str, value: str, utf8: bool) -> str:
    """One header: ASCII values verbatim (URLs stay URLs), others RFC 2047 encoded unless utf8."""
    if "\r" in value or "\n" in value.replace("\n ", ""):
        raise ValueError(f"header {name!r} may not contain a line break")
    if value.isascii() or utf8:
        return f"{name}: {value}".replace("\n ", _CRLF + " ")
    words = _encoded_words(" ".join(value.split("\n ")), len(name) + 2)
    return f"{name}:{'' if words.startswith(_CRLF) else ' '}{words}"


#: RFC 2047 "Q" words: what may stand for itself in a word of an unstructured header (5 (3))
_Q_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!*+-/")
#: an encoded word and the line that holds it (the header's name on the first)
_WORD_MAX, _LINE_MAX = 75, 76
_WORD_OPEN, _WORD_CLOSE = "=?utf-8?q?", "?="
#: what an encoded word holds between its delimiters
_WORD_ROOM = _WORD_MAX - len(_WORD_OPEN) - len(_WORD_CLOSE)
#: the longest one character can encode to (four UTF-8 bytes, "=XX" each)
_LONGEST_Q = 12


@lru_cache(maxsize=1024)
def _q(char: str) -> str:
    if char in _Q_SAFE:
        return char
    if char == " ":
        return "_"
    return "".join(f"={byte:02X}" for byte in char.encode("utf-8"))


def _encoded_words(value: str, taken: int) -> str:
    """``value`` as UTF-8 Q-encoded words, folded so that no line passes 76 characters (the first
    has ``taken`` of them already) and no character is split between words (RFC 2047 5, 6.3).

    email.header.Header did this at about a twentieth of a worker's CPU per message."""
    words: list[str] = []
    room = min(_WORD_ROOM, _LINE_MAX - taken - len(_WORD_OPEN) - len(_WORD_CLOSE))
    fold_first = room < _LONGEST_Q
    if fold_first:  # a name too long to leave room beside it: the first word goes on the next line
        room = _WORD_ROOM
    word: list[str] = []
    used = 0
    for char in value:
        encoded = _q(char)
        if used + len(encoded) > room and word:
            words.append(_WORD_OPEN + "".join(word) + _WORD_CLOSE)
            word, used = [], 0
            room = _WORD_ROOM  # a folded line: " " and the word
        word.append(encoded)
        used += len(encoded)
    words.append(_WORD_OPEN + "".join(word) + _WORD_CLOSE)
    return (_CRLF + " " if fold_first else "") + (_CRLF + " ").join(words)


@lru_cache(maxsize=4)
def _date(now: datetime) -> str:
    # whole seconds: thousands of messages a second share one formatting
    return format_datetime(now.astimezone(clock.ISTANBUL))


@lru_cache(maxsize=64)
def _from_header(from_addr: str, from_name: str) -> str:
    # one sender for thousands of messages: checked and formatted once
    _check_address(from_addr, "From")
    return formataddr((from_name, from_addr), charset="utf-8") if from_name else from_addr


def _fold_list(targets: list[str]) -> str:
    """``<a>, <b>`` on one line, or one target a line when that would pass `_FOLD_AT`."""
    line = ", ".join(targets)
    if len("List-Unsubscribe: ") + len(line) <= _FOLD_AT:
        return line
    return ",\n ".join(targets)


#: a dot-atom local part and domain (RFC 5322 3.2.3, 3.4.1), as every address izin stores from an
#: import looks: certainly an address, spared the full header parser (7% of a worker's CPU)
_DOT_ATOM_ADDRESS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
                               r"@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")


def is_dot_atom(addr_spec: str) -> bool:
    """Whether the address is a plain local@domain of dot-atoms (no quoting, no comments)."""
    return _DOT_ATOM_ADDRESS.fullmatch(addr_spec) is not None


def _check_address(addr_spec: str, header: str) -> str:
    if is_dot_atom(addr_spec):
        return addr_spec
    try:
        address = Address(addr_spec=addr_spec)
    except (HeaderParseError, ValueError, IndexError) as exc:
        raise BadAddress(header, f"{header} {addr_spec!r} is not an email address ({exc})") from None
    if not address.username or not address.domain:
        raise BadAddress(header, f"{header} {addr_spec!r} is not an email address (it needs local@domain)")
    return addr_spec
