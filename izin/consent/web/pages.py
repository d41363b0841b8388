"""HTML pages from izin/templates/web/, autoescaped, in the request's language."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse

WEB_TEMPLATES = Path(__file__).resolve().parents[2] / "templates" / "web"
_env = Environment(loader=FileSystemLoader(str(WEB_TEMPLATES)), autoescape=select_autoescape(default=True),
                   undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def page(request: Request, name: str, lang: str, status: int = 200, **context: Any) -> HTMLResponse:
    """Render `name` (e.g. 'unsubscribe.html.j2') in `lang` with the sender's identity for the footer."""
    settings = request.app.state.settings
    html = _env.get_template(name).render(lang=lang, sender=settings.sender, request_path=request.url.path,
                                          **context)
    response = HTMLResponse(html, status_code=status)
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"  # tokens in URLs must not leak onward
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def not_found(request: Request, lang: str | None = None) -> HTMLResponse:
    """The one page for every bad, forged, expired or unknown link: it says nothing about why."""
    from izin.consent.web.i18n import language

    return page(request, "not_found.html.j2", lang or language(request), status=404)
