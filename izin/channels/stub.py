"""An in-memory adapter for tests of the code that calls adapters (workers), like dramatiq's stub broker.

Not in the registry: no configuration can send real deliveries into it by mistake. Tests build it
directly, script failures with `StubAdapter.fail_next`, and read what was sent from ``sent``.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import ClassVar, Self

from izin import clock
from izin.channels.base import ChannelAdapter, ChannelKind, OutgoingMessage, Receipt, sms_size

__all__ = ["StubAdapter"]


class StubAdapter(ChannelAdapter):
    """Accepts every message (both channels) unless told to fail the next ones."""

    scheme: ClassVar[str] = "stub"
    channel: ClassVar[ChannelKind] = "any"
    max_segments: ClassVar[int | None] = None
    supports_html: ClassVar[bool] = True

    def __init__(self, url: str = "stub://") -> None:
        self.url = url
        #: every accepted message, in order
        self.sent: list[OutgoingMessage] = []
        #: every message send() was called with, failed ones included
        self.attempts: list[OutgoingMessage] = []
        self.closed = False
        self._failures: deque[BaseException] = deque()
        self._lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str) -> Self:
        return cls(url)

    def fail_next(self, *errors: BaseException) -> None:
        """Raise these, one per call, from the next send() calls (then accept again)."""
        with self._lock:
            self._failures.extend(errors)

    def send(self, message: OutgoingMessage) -> Receipt:
        with self._lock:
            self.attempts.append(message)
            if self._failures:
                raise self._failures.popleft()
            self.sent.append(message)
        segments = sms_size(message)[1] if message.channel == "sms" else None
        return Receipt(provider_id=f"stub-{message.delivery_id}", segments=segments, accepted_at=clock.now())

    def close(self) -> None:
        self.closed = True
