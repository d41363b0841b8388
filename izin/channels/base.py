"""The channel protocol: one message in (`OutgoingMessage`), a `Receipt` out, or a typed error.

An adapter is one small class configured by one URL (``smtp://user:pass@host:587?starttls=1``).
Capabilities are class attributes, so the engine can check a campaign against the channel before
anything is queued: ``channel`` (``"email"``, ``"sms"`` or ``"any"`` for the outbox, which takes
both), ``max_segments`` (the most SMS parts the provider takes; None: no limit) and
``supports_html``. ``send()`` either returns a `Receipt` or raises one of the errors drawn in
`izin.channels.errors`; it never returns a bare False.

Third-party adapters subclass `ChannelAdapter` and register under the ``izin.channels`` entry-point
group with their URL scheme as the name (see `izin.channels.registry`).

Adapters are shared by the threads of one worker process: ``send()`` must be thread-safe.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import ClassVar, Literal, Self
from urllib.parse import SplitResult, parse_qsl, unquote, urlsplit

from izin import clock
from izin.channels.errors import ChannelConfigError
from izin.channels.sms_encoding import encode_info

__all__ = [
    "ChannelAdapter",
    "ChannelKind",
    "MessageChannel",
    "OPERATOR_RESERVE",
    "OutgoingMessage",
    "Receipt",
    "RecipientType",
    "SECRET_OPTIONS",
    "UrlParts",
    "redact_url",
    "sms_size",
]

MessageChannel = Literal["email", "sms"]
#: what an adapter can carry: one channel, or ``"any"`` (the outbox writes both)
ChannelKind = Literal["email", "sms", "any"]
RecipientType = Literal["BIREYSEL", "TACIR"]

#: SMS units per part kept free for the operator code (B0xx) the operator appends; the same
#: default the renderer uses (reference section 4.1).
OPERATOR_RESERVE = 5
#: query options whose values are secrets: shown as *** by `redact_url`
SECRET_OPTIONS = frozenset({"token", "password", "pass", "secret", "key", "apikey", "api_key",
                            "access_token"})

_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
#: text fields where None is taken as "" (the other channel's fields are often None)
_TEXT_FIELDS = ("subject", "html", "text", "from_name", "from_addr", "sender", "sms_text")
_ENCODINGS = ("gsm7", "gsm7-tr", "ucs2")


@dataclass(frozen=True)
class OutgoingMessage:
    """One rendered message for one recipient, ready for an adapter.

    Email uses ``subject``, ``html``, ``text``, ``from_name``, ``from_addr`` and the
    List-Unsubscribe values; SMS uses ``sender``, ``sms_text``, ``encoding`` and ``segments``
    (``encoding``/``segments`` are computed from the text when left None). None in a text field
    is taken as "". Checked on creation:
    an impossible message is a programming error (ValueError), not a channel failure.
    """

    #: the delivery row's id; names the outbox file and identifies the send at the provider
    delivery_id: int
    channel: MessageChannel
    #: an email address, or an E.164 phone number with its + for SMS
    to: str
    #: a commercial electronic message under law 6563 (needs consent, opt-out, İYS filter)
    commercial: bool
    recipient_type: RecipientType = "BIREYSEL"
    # --- email
    subject: str = ""
    html: str = ""
    text: str = ""
    #: the sender's trade name, the display name of From
    from_name: str = ""
    #: the From address; an adapter with its own (SMTP's ``from=``) uses that instead
    from_addr: str = ""
    #: the RFC 8058 one-click URL (https, or http behind a TLS proxy), without angle brackets
    list_unsubscribe_url: str | None = None
    #: an address (``mailto:`` optional) listed in List-Unsubscribe after the URL
    list_unsubscribe_mailto: str | None = None
    # --- SMS
    #: the originator (başlık), 3-11 ASCII characters
    sender: str = ""
    sms_text: str = ""
    #: ``gsm7``, ``gsm7-tr`` or ``ucs2``; None: computed from ``sms_text``
    encoding: str | None = None
    #: parts the operator bills; None: computed from ``sms_text`` with `OPERATOR_RESERVE`
    segments: int | None = None
    #: extra email headers; they replace built headers of the same name (not MIME structure)
    headers: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in _TEXT_FIELDS:
            if getattr(self, name) is None:  # callers pass a renderer's None for "not this channel"
                object.__setattr__(self, name, "")
        if self.channel not in ("email", "sms"):
            raise ValueError(f"channel must be 'email' or 'sms', not {self.channel!r}")
        if self.recipient_type not in ("BIREYSEL", "TACIR"):
            raise ValueError(f"recipient_type must be BIREYSEL or TACIR, not {self.recipient_type!r}")
        if not self.to:
            raise ValueError("a message needs a recipient ('to')")
        if self.channel == "email":
            if not (self.text or self.html):
                raise ValueError("an email needs a text or an html body")
            url = self.list_unsubscribe_url
            if url is not None and not url.startswith(("https://", "http://")):
                raise ValueError(f"list_unsubscribe_url must be an https:// (or http://) URL, not {url!r}")
            if self.commercial and not url:
                # law 6563 art. 6 and RFC 8058: no commercial email without a one-click opt-out
                raise ValueError("a commercial email needs list_unsubscribe_url")
        else:
            if not _E164.match(self.to):
                raise ValueError(f"an SMS recipient must be E.164 with its +, not {self.to!r}")
            if not self.sms_text:
                raise ValueError("an SMS needs sms_text")
            if self.encoding is not None and self.encoding not in _ENCODINGS:
                raise ValueError(f"encoding must be one of {', '.join(_ENCODINGS)}, not {self.encoding!r}")
            if self.segments is not None and self.segments < 1:
                raise ValueError(f"segments must be at least 1, not {self.segments}")


@dataclass(frozen=True)
class Receipt:
    """The provider accepted the message."""

    #: the provider's id for it: SMTP Message-ID, Netgsm jobid, the outbox file's path, ...
    provider_id: str
    #: SMS parts billed (None for email)
    segments: int | None = None
    accepted_at: datetime = field(default_factory=clock.now)
    #: anything else worth keeping from the provider's answer
    detail: str | None = None


def sms_size(message: OutgoingMessage) -> tuple[str, int]:
    """The message's SMS encoding and part count, computed from the text where not given."""
    if message.encoding is not None and message.segments is not None:
        return message.encoding, message.segments
    info = encode_info(message.sms_text, reserve=OPERATOR_RESERVE)
    return message.encoding or info.encoding, message.segments or info.segments


class ChannelAdapter(ABC):
    """Sends messages on one channel through one provider, configured by one URL."""

    #: the URL scheme this class is registered under
    scheme: ClassVar[str]
    #: ``"email"``, ``"sms"`` or ``"any"``
    channel: ClassVar[ChannelKind]
    #: most SMS parts one message may have here; None: no limit (or not an SMS channel)
    max_segments: ClassVar[int | None] = None
    supports_html: ClassVar[bool] = False

    #: the URL the adapter was built from (secrets included: log `redacted_url()` instead)
    url: str

    @classmethod
    @abstractmethod
    def from_url(cls, url: str) -> Self:
        """Build the adapter; raise ChannelConfigError when the URL cannot be used."""

    @abstractmethod
    def send(self, message: OutgoingMessage) -> Receipt:
        """Send one message; raise TransientChannelError or PermanentChannelError on failure."""

    def close(self) -> None:
        """Release connections; the adapter may be used again afterwards (it reconnects)."""

    def redacted_url(self) -> str:
        """The URL with passwords and tokens replaced by ***, for logs and messages."""
        return redact_url(self.url)

    def accepts(self, channel: str) -> bool:
        """Whether this adapter carries messages of ``channel``."""
        return self.channel in ("any", channel)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.redacted_url()}>"


def redact_url(url: str) -> str:
    """``url`` with the userinfo password and secret query options (token=...) replaced by ***.

    Errs on the side of hiding: a password with an unencoded ``#`` or ``?`` (which breaks the
    URL) is still hidden, up to the last ``@`` before the path.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    authority_end = len(rest)
    for stop in "/?#":
        position = rest.find(stop)
        if position != -1:
            authority_end = min(authority_end, position)
    authority = rest[:authority_end]
    if "@" not in authority and ":" in authority and not authority.rpartition(":")[2].isdigit():
        # "user:pa#ss@host": the password cut the authority short; take it up to the last @
        slash = rest.find("/")
        at = rest.rfind("@", 0, len(rest) if slash == -1 else slash)
        if at != -1:
            authority_end = at + 1 + len(rest[at + 1:].split("/")[0].split("?")[0].split("#")[0])
            authority = rest[:authority_end]
    tail = rest[authority_end:]
    if "@" in authority:
        userinfo, host = authority.rsplit("@", 1)
        if ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":***"
        authority = f"{userinfo}@{host}"
    path, qmark, query = tail.partition("?")
    if qmark:
        fragment = ""
        if "#" in query:
            query, fragment = query.split("#", 1)
            fragment = "#" + fragment
        pairs = []
        for pair in query.split("&"):
            name, eq, _value = pair.partition("=")
            pairs.append(f"{name}=***" if eq and unquote(name).lower() in SECRET_OPTIONS else pair)
        tail = f"{path}?{'&'.join(pairs)}{fragment}"
    return f"{scheme}{sep}{authority}{tail}"


class UrlParts:
    """An adapter URL taken apart, with checked options; errors are ChannelConfigErrors."""

    def __init__(self, url: str, *, adapter: str, options: Iterable[str]) -> None:
        self.url = url
        self.adapter = adapter
        try:
            self.split: SplitResult = urlsplit(url)
            port = self.split.port
        except ValueError:
            # urllib's message quotes the text it could not read, which may be a password
            raise self.error(f"{redact_url(url)} is not a valid URL: the port must be a number up to "
                             "65535, and / ? # @ : in a user name or password must be percent-encoded "
                             "(%2F %3F %23 %40 %3A)") from None
        #: the port, None when the URL gives none
        self.port = port
        #: host name, lower case, "" when absent
        self.host = self.split.hostname or ""
        self.username = unquote(self.split.username) if self.split.username else ""
        self.password = unquote(self.split.password) if self.split.password is not None else ""
        self.path = self.split.path
        allowed = set(options)
        self.options: dict[str, str] = {}
        for name, value in parse_qsl(self.split.query, keep_blank_values=True):
            if name not in allowed:
                known = ", ".join(sorted(allowed)) or "none"
                raise self.error(f"unknown option {name!r} in {redact_url(url)}; known options: {known}")
            if name in self.options:
                raise self.error(f"option {name!r} is given twice in {redact_url(url)}")
            self.options[name] = value

    def error(self, message: str) -> ChannelConfigError:
        """A configuration error from this adapter (the registry adds the key)."""
        return ChannelConfigError(message, adapter=self.adapter)

    def text(self, name: str, default: str = "") -> str:
        return self.options.get(name, default)

    def flag(self, name: str, default: bool = False) -> bool:
        """A yes/no option: 1/0, true/false, yes/no, on/off."""
        value = self.options.get(name)
        if value is None:
            return default
        lowered = value.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise self.error(f"option {name}={value!r} must be 1 or 0")

    def seconds(self, name: str, default: float) -> float:
        """A positive number of seconds."""
        value = self.options.get(name)
        if value is None:
            return default
        try:
            seconds = float(value)
        except ValueError:
            seconds = -1.0
        if not seconds > 0 or seconds != seconds or seconds == float("inf"):
            raise self.error(f"option {name}={value!r} must be a positive number of seconds")
        return seconds

    def integer(self, name: str, default: int | None) -> int | None:
        """A positive whole number."""
        value = self.options.get(name)
        if value is None:
            return default
        if not value.isdigit() or int(value) < 1:
            raise self.error(f"option {name}={value!r} must be a whole number of at least 1")
        return int(value)
