"""What every state-changing route needs: the client's address, a per-IP rate limit, CSRF tokens
bound to a cookie, and constant-time secret checks. Nothing here reveals whether an address exists.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets as token_source
import threading
import time
from collections import deque

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

#: the cookie that carries the CSRF nonce (double submit: the form carries its signature)
CSRF_COOKIE = "izin_csrf"
#: the header a provider may carry the webhook secret in (or ?secret= in the URL)
WEBHOOK_HEADER = "X-Izin-Webhook-Secret"
#: the sliding window of the rate limit, in seconds
RATE_WINDOW_S = 60.0


def client_ip(request: Request) -> str:
    """The client's address as uvicorn saw it (behind a proxy: run with --forwarded-allow-ips)."""
    return request.client.host if request.client else "unknown"


class RateLimiter:
    """At most `limit` hits per key in any RATE_WINDOW_S; in memory, per process."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def allow(self, key: str, now_s: float | None = None) -> bool:
        now_s = time.monotonic() if now_s is None else now_s
        with self._lock:
            hits = self._hits.setdefault(key, deque())
            while hits and hits[0] <= now_s - RATE_WINDOW_S:
                hits.popleft()
            if len(hits) >= self.limit:
                return False
            hits.append(now_s)
            if len(self._hits) > 100_000:  # a flood of distinct keys must not grow memory for ever
                self._hits = {k: v for k, v in self._hits.items() if v and v[-1] > now_s - RATE_WINDOW_S}
            return True

    def check(self, request: Request, bucket: str) -> None:
        """Raise 429 when this client has changed state too often in the last minute."""
        if not self.allow(f"{bucket}:{client_ip(request)}"):
            raise HTTPException(429, "too many requests; wait a minute")


def _sign(secret: str, nonce: str) -> str:
    return hmac.new(secret.encode(), b"izin-csrf:" + nonce.encode(), hashlib.sha256).hexdigest()


def csrf_pair(request: Request, secret: str) -> tuple[str, str | None]:
    """(token for the form, nonce to set as a cookie or None when the request already has one)."""
    nonce = request.cookies.get(CSRF_COOKIE)
    fresh = None
    if not nonce or len(nonce) != 32:
        nonce = fresh = token_source.token_hex(16)
    return _sign(secret, nonce), fresh


def set_csrf_cookie(response: Response, nonce: str | None, secure: bool) -> None:
    # over https the cookie may travel in a third-party frame (the embeddable opt-in form); the
    # signed token in the form, not SameSite, is what stops cross-site posts
    if nonce is not None:
        response.set_cookie(CSRF_COOKIE, nonce, httponly=True, samesite="none" if secure else "strict",
                            secure=secure, path="/")


def csrf_ok(request: Request, submitted: str | None, secrets: list[str]) -> bool:
    """The form's token matches the cookie's nonce under one of our keys (constant time)."""
    nonce = request.cookies.get(CSRF_COOKIE)
    if not nonce or not submitted:
        return False
    given = submitted.encode("utf-8", "replace")  # compare bytes: a non-ASCII str would raise
    return any(hmac.compare_digest(_sign(secret, nonce).encode(), given) for secret in secrets)


def webhook_ok(request: Request, expected: str) -> bool:
    """The provider presented the shared secret (header or ?secret=); never true without one configured."""
    if not expected:
        return False
    given = request.headers.get(WEBHOOK_HEADER) or request.query_params.get("secret") or ""
    return hmac.compare_digest(given.encode(), expected.encode())


_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f]")
_SURROGATES = re.compile(r"[\ud800-\udfff]")


def clean_text(text: str) -> str:
    """A text from a request without NUL and the other C0 controls (tab and newline stay; CR and
    CRLF become newlines) and with lone surrogates as U+FFFD: what the database can store."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _SURROGATES.sub("\ufffd", _CONTROLS.sub("", text))


_SECRET_PATH = re.compile(r"/(u|p|optin/confirm|optin/code)/[^/?#\s]+")
_SECRET_QUERY = re.compile(r"([?&]secret=)[^&#\s]*")


def redact_path(path: str) -> str:
    """A request path fit for an access log: link tokens and webhook secrets replaced by '***'."""
    return _SECRET_QUERY.sub(r"\1***", _SECRET_PATH.sub(r"/\1/***", path))


class AccessLogFilter(logging.Filter):
    """Keeps uvicorn's access log free of live secrets (a confirmation link in a log is a consent)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and len(record.args) >= 3 and isinstance(record.args[2], str):
            record.args = (*record.args[:2], redact_path(record.args[2]), *record.args[3:])
        return True
