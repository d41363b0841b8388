"""What the HTTP adapters (Netgsm, webhook) share: one POST, transport failures typed, Retry-After read."""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
import threading
from typing import Any

import httpx

from izin.channels.errors import TransientChannelError

__all__ = ["DEFAULT_TIMEOUT_S", "new_client", "post_json", "reply_json", "retry_after_s", "snippet"]

#: seconds for connecting, and for each read and write of one request
DEFAULT_TIMEOUT_S = 10.0


def new_client(timeout_s: float) -> httpx.Client:
    """The pooled client an adapter keeps: keep-alive, no redirects (a POST must not turn into a GET)."""
    return httpx.Client(timeout=timeout_s, follow_redirects=False, headers={"User-Agent": "izin"})


class HttpAdapterMixin:
    """One pooled httpx client per HTTP adapter, made on first use and shared by the worker's
    threads (thread-safe, keep-alive across sends); `close()` ends it."""

    timeout_s: float
    _client: httpx.Client | None = None
    _client_lock = threading.Lock()

    def _http(self) -> httpx.Client:
        with self._client_lock:
            if self._client is None:
                self._client = new_client(self.timeout_s)
            return self._client

    def close(self) -> None:
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()


def post_json(client: httpx.Client, url: str, body: dict[str, Any], *, adapter: str,
              auth: tuple[str, str] | None = None, headers: dict[str, str] | None = None) -> httpx.Response:
    """POST ``body`` as JSON; a transport failure becomes a TransientChannelError saying whether the
    request could have reached the provider."""
    try:
        return client.post(url, json=body, auth=auth, headers=headers)
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
        raise TransientChannelError(f"cannot reach {_origin(url)}: {_reason(exc)} (not sent)",
                                    adapter=adapter) from None
    except httpx.TransportError as exc:
        # the request may have arrived: this is the window in which a retry can duplicate
        raise TransientChannelError(f"no answer from {_origin(url)}: {_reason(exc)} (the provider may "
                                    "have accepted the message)", adapter=adapter) from None


def reply_json(response: httpx.Response) -> Any:
    """The reply's JSON, or None when it is not JSON."""
    try:
        return json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        return None


def retry_after_s(response: httpx.Response) -> float | None:
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


def snippet(response: httpx.Response, limit: int = 200) -> str:
    """The start of the reply body, on one line, for error messages."""
    text = " ".join(response.text.split())
    return text if len(text) <= limit else text[:limit] + "..."


def _origin(url: str) -> str:
    parsed = httpx.URL(url)
    return f"{parsed.scheme}://{parsed.netloc.decode('ascii', 'replace')}"


def _reason(exc: httpx.TransportError) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out ({type(exc).__name__})"
    return str(exc) or type(exc).__name__
