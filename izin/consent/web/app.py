"""The ASGI application behind `izin serve`: unsubscribe, preferences, opt-in, provider webhooks.

Routes live in one module per flow (`unsubscribe.py`, `optin.py`, `webhooks.py`), each exposing a
`routes` list. Every route reaches the database through `app.state.db` and the clock through
`app.state.now`, so tests run the real application in-process against a real database.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from izin import clock
from izin.config import Settings
from izin.consent.web import optin, unsubscribe, webhooks
from izin.consent.web.i18n import language
from izin.consent.web.pages import not_found, page
from izin.consent.web.security import RateLimiter
from izin.db import Database


async def _health(request: Request) -> Response:
    return PlainTextResponse("ok")


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return not_found(request)
    lang = language(request)
    return page(request, "error.html.j2", lang, status=exc.status_code, status_code=exc.status_code)


def create_app(settings: Settings, db: Database, *, now: Callable[[], datetime] = clock.now,
               adapters: dict[str, Any] | None = None) -> Starlette:
    """The application for one configuration and database.

    `adapters` are the channel adapters confirmation messages go through (default: from settings).
    """
    app = Starlette(routes=[Route("/healthz", _health), *unsubscribe.routes, *optin.routes, *webhooks.routes],
                    exception_handlers={HTTPException: _http_error})
    app.state.settings = settings
    app.state.db = db
    app.state.now = now
    #: the key that signs, then the keys that still verify links already sent
    app.state.secrets = [settings.web.secret_key, *settings.web.old_secret_keys]
    app.state.limiter = RateLimiter(settings.web.rate_limit_per_minute)
    app.state.adapters = adapters
    return app


def channel_adapters(app: Starlette) -> dict[str, Any]:
    """The adapters confirmation messages go through, built on first use."""
    if app.state.adapters is None:
        from izin.channels.registry import open_channels

        app.state.adapters = open_channels(app.state.settings.channels)
    return app.state.adapters
