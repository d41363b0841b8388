"""What a channel adapter raises. Callers decide by type, never by message.

    IzinError
    └── ChannelError                 anything a channel adapter raises on purpose; `.adapter` is its scheme
        ├── ChannelConfigError       exit 2: an adapter URL is wrong (unknown scheme, bad option, missing
        │                            credentials); also a ConfigError, and `.field` names the key, e.g.
        │                            channels.sms.url. Raised when the adapter is built, never by send()
        ├── TransientChannelError    not sent this time, try again later with backoff (4xx SMTP reply,
        │                            HTTP 429/5xx, rate limits, timeouts, connection refused);
        │                            `.retry_after_s` is the provider's hint, None when it gave none
        └── PermanentChannelError    refused for good, do not retry this message (5xx SMTP reply, a
            │                        provider's rejection); `.address_invalid` is True for a hard
            │                        bounce: the address itself does not exist, mark it
            └── ChannelAccountError  the provider refuses the account or its set-up (credentials, IP,
                                     originator, İYS brand): every message on the channel will fail the
                                     same way until the configuration is fixed, so stop sending on
                                     the channel instead of failing its deliveries one by one

Every error carries `.adapter`, `.status_code` (the SMTP reply code or HTTP status, when there was
one) and `.provider_code` (the provider's own code, e.g. Netgsm's "40" or SMTP's "5.1.1"), and its
message quotes them. Messages never contain a password or token: URLs appear in redacted form.

A timeout while a request was in flight is transient, but the provider may have accepted the
message: that is the one window in which a retry can duplicate a message (see README).
"""

from __future__ import annotations

from izin.errors import ConfigError, IzinError

__all__ = [
    "ChannelAccountError",
    "ChannelConfigError",
    "ChannelError",
    "PermanentChannelError",
    "TransientChannelError",
]


class ChannelError(IzinError):
    """Base of every error a channel adapter raises on purpose."""

    def __init__(self, message: str, *, adapter: str | None = None, status_code: int | None = None,
                 provider_code: str | None = None) -> None:
        self.message = message
        #: the adapter's URL scheme (``smtp``, ``netgsm``, ...)
        self.adapter = adapter
        #: SMTP reply code or HTTP status, when the provider answered
        self.status_code = status_code
        #: the provider's own code: Netgsm ``"40"``, an SMTP enhanced status ``"5.1.1"``, ...
        self.provider_code = provider_code
        super().__init__(message)


class ChannelConfigError(ChannelError, ConfigError):
    """An adapter URL cannot be used; ``field`` names the configuration key (exit 2)."""

    exit_code = 2

    def __init__(self, message: str, *, field: str | None = None, adapter: str | None = None) -> None:
        # InputError.__init__ sets .message and .field and renders "field: message"; the
        # ChannelError attributes are set here rather than through a second base __init__.
        self.adapter = adapter
        self.status_code = None
        self.provider_code = None
        ConfigError.__init__(self, message, field=field)


class TransientChannelError(ChannelError):
    """Not sent now; retry later with backoff."""

    def __init__(self, message: str, *, adapter: str | None = None, status_code: int | None = None,
                 provider_code: str | None = None, retry_after_s: float | None = None) -> None:
        super().__init__(message, adapter=adapter, status_code=status_code, provider_code=provider_code)
        #: seconds the provider asked us to wait (Retry-After), None when it said nothing
        self.retry_after_s = retry_after_s


class PermanentChannelError(ChannelError):
    """Refused for good: do not retry this message."""

    def __init__(self, message: str, *, adapter: str | None = None, status_code: int | None = None,
                 provider_code: str | None = None, address_invalid: bool = False) -> None:
        super().__init__(message, adapter=adapter, status_code=status_code, provider_code=provider_code)
        #: a hard bounce: the address does not exist or cannot receive on this channel; mark it
        self.address_invalid = address_invalid


class ChannelAccountError(PermanentChannelError):
    """The provider refuses the account or its set-up; every message on the channel will fail."""
