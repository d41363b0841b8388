"""The application shell: health, the one not-found page, rate limits, webhook secrets."""

from __future__ import annotations

from izin.consent.web.security import RateLimiter


def test_health_and_unknown_pages(web):
    assert web.get("/healthz").text == "ok"
    missing = web.get("/no/such/page", headers={"accept-language": "en-GB,en;q=0.9"})
    assert missing.status_code == 404
    assert "<h1>Page not found</h1>" in missing.text
    assert "<h1>Sayfa bulunamadı</h1>" in web.get("/no/such/page").text


def test_rate_limiter_window():
    limiter = RateLimiter(2)
    assert [limiter.allow("k", t) for t in (0.0, 1.0, 2.0)] == [True, True, False]
    assert limiter.allow("other", 2.0) is True
    assert limiter.allow("k", 60.5) is True  # the first hit has left the window


def test_access_log_paths_lose_their_secrets():
    import logging

    from izin.consent.web.security import AccessLogFilter, redact_path

    assert redact_path("/u/ASO-abc_123?lang=en") == "/u/***?lang=en"
    assert redact_path("/optin/confirm/tok3n") == "/optin/confirm/***"
    assert redact_path("/optin/code/r3f") == "/optin/code/***"
    assert redact_path("/webhooks/sms/inbound/netgsm?secret=hook&x=1") == "/webhooks/sms/inbound/netgsm?secret=***&x=1"
    assert redact_path("/optin?lang=tr") == "/optin?lang=tr"
    record = logging.LogRecord("uvicorn.access", logging.INFO, "", 0, '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:5", "POST", "/p/secrettoken", "1.1", 200), None)
    assert AccessLogFilter().filter(record) is True
    assert record.getMessage() == '127.0.0.1:5 - "POST /p/*** HTTP/1.1" 200'
