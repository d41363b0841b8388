"""One walk through the real flows in headless Chromium: unsubscribe from a sent email, and a
double opt-in from the form to ONAY in the ledger. Assertions are on page content and the ledger."""

from __future__ import annotations

import email
import json
import re
import shutil
import threading
import time
from email import policy
from pathlib import Path

import pytest
import uvicorn
from sqlalchemy import select

from campaigns.support import AT, consent, free_port, person, schedule
from conftest import Cli, service_missing
from izin.campaigns.runner import drain_embedded
from izin.consent.models import ConsentEvent, ConsentState
from izin.consent.web.app import create_app

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture
def browser():
    if not Path(CHROMIUM).exists():
        service_missing("Chromium", "no chromium on PATH; .ci/run installs Debian's package")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-quic"])
        yield chromium
        chromium.close()


@pytest.fixture
def live(db, settings):
    """The real application under uvicorn on a loopback port; links in messages point at it."""
    port = free_port()
    config = settings.model_copy(update={"web": settings.web.model_copy(update={
        "base_url": f"http://127.0.0.1:{port}"})})
    server = uvicorn.Server(uvicorn.Config(create_app(config, db, now=lambda: AT), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield config, f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def _outbox(config) -> Path:
    return Path(config.channels["email"].url.removeprefix("outbox://"))


def test_unsubscribe_from_a_sent_email(db, live, browser):
    config, base = live
    person(db, "ayse", email="ayse@example.com")
    consent(db, "ayse", "email")
    schedule(db, config, text="""
name: efsane-cuma
trigger: {type: once, at: "2026-11-24T11:00:00+03:00"}
channels: [email]
content:
  email: {subject: "Efsane Cuma", html_inline: "<p>Merhaba {{ contact.first_name }}</p>"}
""")
    drain_embedded(db, config, now=lambda: AT)
    [eml] = sorted(_outbox(config).glob("*.eml"))
    message = email.message_from_bytes(eml.read_bytes(), policy=policy.default)
    link = re.fullmatch(r"<(.+)>", str(message["List-Unsubscribe"])).group(1)
    assert link.startswith(f"{base}/u/")
    page = browser.new_page()
    page.goto(link)
    assert page.inner_text("h1") == "Abonelikten çık"
    assert "a***@example.com" in page.content()
    with db.session() as session:  # looking at the page changed nothing
        assert session.get(ConsentState, ("ayse@example.com", "email", "BIREYSEL")).status == "ONAY"
    page.click("button[type=submit]")
    page.wait_for_load_state()
    assert page.inner_text("h1") == "Abonelikten çıktınız"
    with db.session() as session:
        event = session.scalars(select(ConsentEvent).order_by(ConsentEvent.id.desc())).first()
        assert (event.recipient, event.channel, event.status, event.source) == (
            "ayse@example.com", "email", "RET", "HS_WEB")
        assert json.loads(event.proof)["route"] == "confirm-page"


def test_double_opt_in_from_the_form_to_the_ledger(db, live, browser, tmp_path, monkeypatch):
    config, base = live
    page = browser.new_page()
    page.goto(f"{base}/optin?lang=en")
    page.fill("input[name=first_name]", "John")
    page.fill("input[name=last_name]", "Smith")
    page.fill("input[name=email]", "John.Smith@Example.co.uk")
    assert page.is_checked("input[name=channel][value=email]") is False  # nothing is ticked for anyone
    page.check("input[name=channel][value=email]")
    page.click("form button[type=submit]")
    page.wait_for_load_state()
    assert page.inner_text("h1") == "Check your inbox"
    [eml] = sorted(_outbox(config).glob("*.eml"))
    body = email.message_from_bytes(eml.read_bytes(), policy=policy.default).get_body(("plain",)).get_content()
    link = re.search(re.escape(base) + r"/optin/confirm/\S+", body).group(0)
    page.goto(link)
    assert page.inner_text("h1") == "Confirm your subscription"
    with db.session() as session:  # a link scanner's GET confirms nothing
        assert session.scalar(select(ConsentEvent)) is None
    page.click("button[type=submit]")
    page.wait_for_load_state()
    assert page.inner_text("h1") == "Thank you, your subscription is confirmed"
    with db.session() as session:
        event = session.scalar(select(ConsentEvent))
    cli = Cli(db.url, tmp_path, monkeypatch)
    shown = json.loads(cli("consent", "show", event.contact_ref, "--json").stdout)
    assert shown["current"]["email"] == {"recipient": "john.smith@example.co.uk", "may_send": True, "reason": None,
                                         "basis": "onay", "event_id": event.id}
    proof = json.loads(event.proof)
    assert (proof["route"], event.source) == ("double-opt-in", "HS_WEB")
