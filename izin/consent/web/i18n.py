"""Page texts in Turkish and English; the language comes from ?lang=, the contact, or the browser."""

from __future__ import annotations

from starlette.requests import Request

LANGUAGES = ("tr", "en")


def language(request: Request, preferred: str | None = None) -> str:
    """?lang= wins, then the contact's own locale, then Accept-Language, then Turkish."""
    asked = request.query_params.get("lang")
    if asked in LANGUAGES:
        return asked
    if preferred in LANGUAGES:
        return preferred  # type: ignore[return-value]
    for part in request.headers.get("accept-language", "").split(","):
        code = part.split(";")[0].strip().lower()[:2]
        if code in LANGUAGES:
            return code
    return "tr"
