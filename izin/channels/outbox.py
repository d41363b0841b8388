"""``outbox://DIR``: every message becomes one file in DIR instead of leaving the machine.

The embedded default and the demo's channel, and the format outside tests read (MISSION.md,
"Outbox channel"). ``DIR`` is everything after ``outbox://``, taken literally (no query options,
no %-decoding): ``outbox:///var/izin/outbox`` is absolute, ``outbox://outbox`` is relative to the
working directory *when the adapter is built*. DIR is created when missing.

- email → ``DIR/<delivery_id>.eml``: the complete RFC 5322 message `izin.channels.mime` builds
  (the same bytes SMTP would send, CRLF line ends);
- SMS → ``DIR/<delivery_id>.sms.json``: exactly ``{"delivery_id", "to", "sender", "text",
  "encoding", "segments"}``, UTF-8, ``to`` in E.164 with its +, ``segments`` an integer.

One adapter serves both channels (``channel = "any"``). Each file is written to a temporary name
in DIR, flushed to disk and renamed over the final name, so a reader or a crash never sees half a
file; sending the same delivery again replaces its file (idempotent). The receipt's
``provider_id`` is the file's absolute path; for email ``detail`` holds the Message-ID.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import ClassVar, Self

from izin import clock
from izin.channels.base import ChannelAdapter, ChannelKind, OutgoingMessage, Receipt, sms_size
from izin.channels.errors import ChannelConfigError, PermanentChannelError, TransientChannelError
from izin.channels.mime import build_email, is_bad_recipient

__all__ = ["DEFAULT_FROM", "OutboxAdapter"]

#: From address of outbox mail when the message brings none (the outbox has no account)
DEFAULT_FROM = "izin@localhost"


class OutboxAdapter(ChannelAdapter):
    """Writes each message to a file named after its delivery id."""

    scheme: ClassVar[str] = "outbox"
    channel: ClassVar[ChannelKind] = "any"
    max_segments: ClassVar[int | None] = None
    supports_html: ClassVar[bool] = True

    def __init__(self, url: str, directory: Path) -> None:
        self.url = url
        #: absolute, so a later chdir does not move the outbox
        self.directory = directory

    @classmethod
    def from_url(cls, url: str) -> Self:
        prefix = f"{cls.scheme}://"
        if not url.startswith(prefix):
            raise ChannelConfigError(f"{url!r} is not an {prefix} URL", adapter=cls.scheme)
        raw = url[len(prefix):]
        if not raw:
            raise ChannelConfigError(
                "outbox:// needs a directory: outbox://outbox (relative) or outbox:///abs/path",
                adapter=cls.scheme)
        directory = Path(raw).absolute()
        if directory.exists() and not directory.is_dir():
            raise ChannelConfigError(f"outbox directory {str(directory)!r} exists and is not a directory",
                                     adapter=cls.scheme)
        return cls(url, directory)

    def redacted_url(self) -> str:
        return self.url  # a directory holds no secret

    def send(self, message: OutgoingMessage) -> Receipt:
        if message.channel == "email":
            from_addr = message.from_addr or DEFAULT_FROM
            try:
                email = build_email(message, from_addr)
            except ValueError as exc:  # a bad address, or a header with a line break
                raise PermanentChannelError(f"delivery {message.delivery_id}: {exc}", adapter=self.scheme,
                                            address_invalid=is_bad_recipient(exc)) from None
            path = self._write(f"{message.delivery_id}.eml", email.data)
            return Receipt(provider_id=str(path), accepted_at=clock.now(), detail=email.message_id)
        encoding, segments = sms_size(message)
        record = {
            "delivery_id": message.delivery_id,
            "to": message.to,
            "sender": message.sender,
            "text": message.sms_text,
            "encoding": encoding,
            "segments": segments,
        }
        body = (json.dumps(record, ensure_ascii=False, indent=2) + "\n").encode("utf-8")
        path = self._write(f"{message.delivery_id}.sms.json", body)
        return Receipt(provider_id=str(path), segments=segments, accepted_at=clock.now())

    def _write(self, name: str, data: bytes) -> Path:
        """Write ``data`` to DIR/name atomically: temp file, fsync, rename."""
        target = self.directory / name
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            # the temp file lives in DIR: os.replace is atomic only within one file system
            handle, temp_name = tempfile.mkstemp(dir=self.directory, prefix=f".{name}.", suffix=".tmp")
            try:
                with os.fdopen(handle, "wb") as file:
                    file.write(data)
                    file.flush()
                    os.fsync(file.fileno())
                os.chmod(temp_name, 0o644)  # mkstemp makes 0600; the outbox is for people to read
                os.replace(temp_name, target)
            except BaseException:
                Path(temp_name).unlink(missing_ok=True)
                raise
        except OSError as exc:
            # a full disk or a permission problem can be fixed and the delivery retried
            raise TransientChannelError(f"cannot write {target}: {exc.strerror or exc}",
                                        adapter=self.scheme) from None
        return target
