"""What the HTTP adapters (Netgsm, webhook) share: one POST, transport failures typed, Retry-After read.

The POST goes over the standard library's http.client on a keep-alive connection of the sending
thread's own. httpx did the same job at almost three times the CPU per request (639 against
227 µs on the benchmark's machine), which made an SMS cost a worker three emails; an adapter needs
no more of HTTP than one request and its answer. Unlike httpx, no proxy is taken from the
environment (HTTPS_PROXY), and HTTPS trusts the system's certificate store (Debian's
ca-certificates), not certifi's.
"""

from __future__ import annotations

import base64
import http.client
import json
import math
import select
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

from izin.channels.errors import TransientChannelError

__all__ = ["DEFAULT_TIMEOUT_S", "HttpAdapterMixin", "HttpClient", "Reply", "post_json", "reply_json",
           "retry_after_s", "snippet"]

#: seconds for connecting, and for each read and write of one request
DEFAULT_TIMEOUT_S = 10.0
#: an idle connection older than this is not used again (httpx's default; servers close theirs
#: after 5 to 75 s, and one that closes as the request goes leaves it unanswered)
KEEPALIVE_S = 5.0


@dataclass(frozen=True)
class Reply:
    """An HTTP answer, read whole: status, headers (names in lower case) and body."""

    status_code: int
    headers: dict[str, str]
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")


class _Unreachable(Exception):
    """The request never left: no connection could be made."""


class _NoAnswer(Exception):
    """The connection broke or timed out after the request may have arrived."""


class HttpClient:
    """Keep-alive POSTs, one connection per sending thread and origin; no redirects followed (a
    POST must not turn into a GET) and no cookies kept."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._local = threading.local()
        self._open: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        self._tls: ssl.SSLContext | None = None

    def post(self, url: str, body: bytes, headers: dict[str, str]) -> Reply:
        parts = urlsplit(url)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        key = (parts.scheme, parts.hostname or "", parts.port)
        connection = self._connection(key)
        try:
            connection.request("POST", path, body, {"User-Agent": "izin", **headers})
            response = connection.getresponse()
            reply = Reply(response.status, {name.lower(): value for name, value in response.getheaders()},
                          response.read())
        except (OSError, http.client.HTTPException) as exc:
            self._discard(key, connection)
            raise _NoAnswer(_reason(exc)) from None
        except BaseException:
            self._discard(key, connection)  # left in the middle of a request: never used again
            raise
        if response.will_close:
            self._discard(key, connection)
        else:
            self._held()[key] = (connection, time.monotonic())
        return reply

    def close(self) -> None:
        with self._lock:
            connections, self._open = self._open, []
        for connection in connections:
            connection.close()
        self._local = threading.local()

    def _held(self) -> dict[tuple[str, str, int | None], tuple[http.client.HTTPConnection, float]]:
        """This thread's open connections by (scheme, host, port), with when each was last used."""
        if not hasattr(self._local, "held"):
            self._local.held = {}
        return self._local.held  # type: ignore[no-any-return]

    def _connection(self, key: tuple[str, str, int | None]) -> http.client.HTTPConnection:
        held = self._held().get(key)
        if held is not None:
            connection, used_at = held
            if (connection.sock is not None and time.monotonic() - used_at < KEEPALIVE_S
                    and not _readable(connection.sock)):
                return connection
            # closed by the server while idle (readable at EOF), or idle so long that the server
            # may be closing it right now: a request on it could be lost
            self._discard(key, connection)
        connection = self._new_connection(*key)
        try:
            connection.connect()
            connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            raise _Unreachable(_reason(exc)) from None
        self._held()[key] = (connection, time.monotonic())
        with self._lock:
            self._open.append(connection)
        return connection

    def _new_connection(self, scheme: str, host: str, port: int | None) -> http.client.HTTPConnection:
        """Not connected yet. The port is always given: without one, http.client reads an IPv6
        host ("::1") as host and port."""
        port = port or (443 if scheme == "https" else 80)
        if scheme == "https":
            if self._tls is None:
                self._tls = ssl.create_default_context()
            return http.client.HTTPSConnection(host, port, timeout=self.timeout_s, context=self._tls)
        return http.client.HTTPConnection(host, port, timeout=self.timeout_s)

    def _discard(self, key: tuple[str, str, int | None], connection: http.client.HTTPConnection) -> None:
        connection.close()
        self._held().pop(key, None)
        with self._lock:
            if connection in self._open:
                self._open.remove(connection)


class HttpAdapterMixin:
    """One HttpClient per HTTP adapter, made on first use and shared by the worker's threads
    (each thread keeps its own keep-alive connection); `close()` ends them."""

    timeout_s: float
    _client: HttpClient | None = None
    _client_lock = threading.Lock()

    def _http(self) -> HttpClient:
        with self._client_lock:
            if self._client is None:
                self._client = HttpClient(self.timeout_s)
            return self._client

    def close(self) -> None:
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()


def post_json(client: HttpClient, url: str, body: dict[str, Any], *, adapter: str,
              auth: tuple[str, str] | None = None, headers: dict[str, str] | None = None) -> Reply:
    """POST ``body`` as JSON; a transport failure becomes a TransientChannelError saying whether the
    request could have reached the provider."""
    sent = {"Content-Type": "application/json", **(headers or {})}
    if auth is not None:
        sent["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode("ascii")
    payload = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")
    try:
        return client.post(url, payload, sent)
    except _Unreachable as exc:
        raise TransientChannelError(f"cannot reach {_origin(url)}: {exc} (not sent)", adapter=adapter) from None
    except _NoAnswer as exc:
        # the request may have arrived: this is the window in which a retry can duplicate
        raise TransientChannelError(f"no answer from {_origin(url)}: {exc} (the provider may "
                                    "have accepted the message)", adapter=adapter) from None


def reply_json(response: Reply) -> Any:
    """The reply's JSON, or None when it is not JSON."""
    try:
        return json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        return None


def retry_after_s(response: Reply) -> float | None:
    """Retry-After as seconds (delta-seconds or an HTTP date), None when absent or unreadable."""
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = (when - datetime.now(timezone.utc)).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def snippet(response: Reply, limit: int = 200) -> str:
    """The start of the reply body, on one line, for error messages."""
    text = " ".join(response.text.split())
    return text if len(text) <= limit else text[:limit] + "..."


def _readable(sock: socket.socket) -> bool:
    """Whether an idle connection has something to read: only its end (or junk) can be there."""
    try:
        if not hasattr(select, "poll"):  # Windows
            return bool(select.select([sock], [], [], 0)[0])
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True


def _origin(url: str) -> str:
    parsed = urlsplit(url)
    return f"{parsed.scheme}://{parsed.netloc.rpartition('@')[2]}"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return f"timed out ({type(exc).__name__})"
    return str(exc) or type(exc).__name__
