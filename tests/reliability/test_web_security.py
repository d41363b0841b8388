"""Attacks on `izin serve`: forged and replayed links, CSRF, webhook secrets, address enumeration
and a request flood. After every attack the ledger holds exactly the events it held before, plus
only those a valid proof asked for."""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import os
import re
import secrets
import socket
import statistics
import subprocess
import sys
import time

import pytest
from hypothesis import strategies as st
from sqlalchemy import func, select
from starlette.testclient import TestClient

from izin.consent.ledger import LedgerWriter
from izin.consent.models import ConsentEvent, ConsentState, Contact, InboundMessage, OptinRequest
from izin.consent.tokens import make_token
from izin.clock import parse_instant

SECRET = "test-secret"  # what the `web` fixture signs with
HOOK = {"X-Izin-Webhook-Secret": "hook-secret"}
ALI, AYY = "ali@example.com", "ayy@example.com"  # same length: a stream-cipher XOR could turn one into the other
PHONE = "+905321234567"
CONSENTED = parse_instant("2026-01-01T10:00:00+03:00")


def count(db, model=ConsentEvent) -> int:
    with db.session() as session:
        return session.scalar(select(func.count()).select_from(model))


def state(db, recipient: str, channel: str = "email") -> list[str]:
    with db.session() as session:
        return list(session.scalars(select(ConsentState.status).where(
            ConsentState.recipient == recipient, ConsentState.channel == channel)))


def grant(db, external_id: str, email: str | None = None, phone: str | None = None) -> None:
    with db.session() as session:
        contact = Contact(external_id=external_id, email=email, phone=phone, phone_mobile=bool(phone),
                          recipient_type="BIREYSEL", locale="tr", attributes={}, created_at=CONSENTED,
                          updated_at=CONSENTED)
        session.add(contact)
        session.flush()
        writer = LedgerWriter(session)
        for channel in (["email"] if email else []) + (["sms"] if phone else []):
            writer.record(contact, channel, "ONAY", "HS_WEB", CONSENTED, CONSENTED)


@pytest.fixture
def people(db):
    grant(db, "ali", email=ALI, phone=PHONE)
    grant(db, "ayy", email=AYY)
    return db


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _raw(token: str) -> bytes:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


def forged_tokens(genuine: str) -> list[str]:
    """Every way we know to make a token out of a genuine one or out of nothing."""
    raw = _raw(genuine)
    out = [_b64(secrets.token_bytes(len(raw))) for _ in range(20)]
    out += [genuine[:n] for n in range(1, len(genuine))]  # truncated
    out += [genuine + "A", genuine + "AAAA", genuine.upper(), genuine.lower(), genuine + "=", genuine[1:]]
    for i in range(len(raw)):  # one bit flipped anywhere: header, nonce, ciphertext, tag
        out.append(_b64(raw[:i] + bytes([raw[i] ^ 1]) + raw[i + 1:]))
    # the stream cipher is malleable: XOR ALI into AYY in the ciphertext; only the MAC can stop it
    start = 1 + 2 + 8 + 1
    delta = bytes(a ^ b for a, b in zip(ALI.encode(), AYY.encode()))
    out.append(_b64(raw[:start] + bytes(c ^ d for c, d in zip(raw[start:start + len(delta)], delta))
                    + raw[start + len(delta):]))
    out.append(make_token("another-secret", ALI, "email"))
    out.append(make_token(SECRET, ALI, "email")[:-2] + "zz")
    return list(dict.fromkeys(t for t in out if t != genuine))


def test_forged_truncated_and_cross_address_tokens_change_nothing(web, people, findings):
    genuine = make_token(SECRET, ALI, "email")
    before = count(people)
    attempts = forged_tokens(genuine)
    answers = {}
    for token in attempts:
        for method in ("get", "post"):
            response = getattr(web, method)(f"/u/{token}", data={"List-Unsubscribe": "One-Click"}) \
                if method == "post" else web.get(f"/u/{token}")
            answers[response.status_code] = answers.get(response.status_code, 0) + 1
        if len(answers) > 1 or 429 in answers:
            break
        web.app.state.limiter._hits.clear()  # the limit is tested below; here every guess must be judged
    assert answers == {404: 2 * len(attempts)}
    assert count(people) == before
    assert state(people, ALI) == ["ONAY"] and state(people, AYY) == ["ONAY"]
    # the genuine token: one RET for ALI only, however often it is replayed
    replies = [web.post(f"/u/{genuine}", data={"List-Unsubscribe": "One-Click"}).status_code for _ in range(10)]
    assert replies == [200] * 10
    assert count(people) == before + 1
    assert state(people, ALI) == ["RET"] and state(people, AYY) == ["ONAY"] and state(people, PHONE, "sms") == ["ONAY"]
    with people.session() as session:
        last = session.scalars(select(ConsentEvent).order_by(ConsentEvent.id.desc()).limit(1)).one()
        assert (last.recipient, last.channel, last.status, last.source) == (ALI, "email", "RET", "HS_WEB")
    findings("unsubscribe token forgery", attempts=2 * len(attempts), answered_404=answers[404],
             events_recorded=0, replays=10, rets_from_replays=1, cross_address_rets=0)


def _csrf(response) -> str:
    return re.search(r'name="csrf" value="([0-9a-f]+)"', response.text).group(1)


def _optin_form(client) -> dict:
    page = client.get("/optin?lang=en")
    text_hash = re.search(r'name="text_hash" value="([0-9a-f]{64})"', page.text).group(1)
    return {"csrf": _csrf(page), "lang": "en", "text_hash": text_hash, "first_name": "Ayşe",
            "last_name": "Yılmaz", "email": "new@example.com", "phone": "0532 765 43 21",
            "channel": ["email", "sms"]}


def test_every_form_post_needs_its_own_sessions_csrf_token(web, people, tmp_path, findings):
    other = TestClient(web.app, base_url="http://127.0.0.1:8000")
    other_token = _csrf(other.get("/optin?lang=en"))
    pref = f"/p/{make_token(SECRET, ALI, 'email')}"
    before = (count(people), count(people, OptinRequest))
    refused = attempts = 0

    def attack(path: str, data: dict) -> None:
        nonlocal refused, attempts
        for bad in (None, "0" * 64, "zz", other_token):
            body = {k: v for k, v in data.items() if k != "csrf"}
            if bad is not None:
                body["csrf"] = bad
            attempts += 1
            response = web.post(path, data=body)
            refused += response.status_code == 403
            web.app.state.limiter._hits.clear()

    attack("/optin?lang=en", _optin_form(web))
    own = _csrf(web.get(pref))
    attack(pref, {"csrf": own, "off": ["email", "sms"]})
    assert (count(people), count(people, OptinRequest)) == before
    # a real submission, then attacks on its confirmation link and its SMS code form
    sent = web.post("/optin?lang=en", data=_optin_form(web))
    assert sent.status_code == 200 and count(people, OptinRequest) == 2
    outbox = tmp_path / "outbox"
    eml = email.message_from_bytes(next(outbox.glob("*.eml")).read_bytes(), policy=email.policy.default).get_content()
    link = re.search(r"http://127\.0\.0\.1:8000(/optin/confirm/[A-Za-z0-9_\-]+)", eml).group(1)
    code_form = re.search(r'action="(/optin/code/[A-Za-z0-9_\-]+)\?lang=', sent.text).group(1)
    sms = next(outbox.glob("*.sms.json")).read_text(encoding="utf-8")
    code = re.search(r"\b(\d{6})\b", sms.split('"text"')[1]).group(1)
    attack(link, {"csrf": _csrf(web.get(link))})
    attack(code_form, {"csrf": "", "code": code})
    assert count(people) == before[0]
    assert attempts == refused == 16
    # with the session's own token each form works: proof that the refusals were the CSRF check
    assert web.post(link, data={"csrf": _csrf(web.get(link))}).status_code == 200
    assert count(people) == before[0] + 1
    findings("csrf", forms=4, attempts=attempts, refused_403=refused, events_recorded=0)


WEBHOOKS = [
    ("/webhooks/sms/inbound/generic", {"json": {"from": PHONE, "text": "RET", "id": "m-1"}}),
    ("/webhooks/sms/inbound/netgsm", {"data": {"gsmno": PHONE[1:], "message": "IPTAL", "id": "n-1"}}),
    ("/webhooks/delivery/generic", {"json": {"id": "x", "status": "delivered"}}),
    ("/webhooks/bounce", {"json": {"recipient": ALI, "status": "5.1.1"}}),
]


def test_webhooks_refuse_a_missing_or_wrong_secret(web, people, findings):
    before = (count(people), count(people, InboundMessage))
    codes = []
    for path, body in WEBHOOKS:
        for headers, query in (({}, ""), ({"X-Izin-Webhook-Secret": "wrong"}, ""), ({}, "?secret=wrong"),
                               ({"X-Izin-Webhook-Secret": ""}, ""), ({"X-Izin-Webhook-Secret": "hook-secret "}, ""),
                               ({"X-Izin-Webhook-Secret": "HOOK-SECRET"}, ""), ({"X-Other": "hook-secret"}, "")):
            codes.append(web.post(path + query, headers=headers, **body).status_code)
            web.app.state.limiter._hits.clear()
    assert codes == [403] * len(codes)
    assert (count(people), count(people, InboundMessage)) == before
    assert state(people, PHONE, "sms") == ["ONAY"]
    # the right secret: the SMS opt-out is recorded (one RET), the refusals were the secret check
    assert web.post(WEBHOOKS[0][0], headers=HOOK, **WEBHOOKS[0][1]).status_code == 200
    assert count(people) == before[0] + 1 and state(people, PHONE, "sms") == ["RET"]
    findings("webhook secrets", attempts=len(codes), refused_403=codes.count(403), events_recorded=0)


def _shape(text: str) -> str:
    """A page with its per-request values (CSRF tokens, refs, masked addresses) blanked."""
    text = re.sub(r'value="[0-9a-f]{32,}"', 'value="*"', text)
    text = re.sub(r"/optin/code/[A-Za-z0-9_\-]+", "/optin/code/*", text)
    text = re.sub(r"/(u|p)/[A-Za-z0-9_\-]+", r"/\1/*", text)
    return re.sub(r"[a-z]\*\*\*@example\.com", "*", text)


def _timed(call) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def test_no_page_tells_known_from_unknown_addresses(db, settings, people, findings):
    from izin.consent.web.app import create_app

    config = settings.model_copy(update={"web": settings.web.model_copy(update={
        "base_url": "http://127.0.0.1:8000", "webhook_secret": "hook-secret", "rate_limit_per_minute": 100_000})})
    app = create_app(config, people, now=lambda: parse_instant("2026-11-24T12:00:00+03:00"))
    rounds = 200
    # distinct known and unknown addresses: one address asked for again is capped (3 an hour) and
    # sends nothing, which would be a difference in the work done, though not in knownness
    with people.session() as session:
        session.add_all(Contact(external_id=f"k{i}", email=f"known{i}@example.com", recipient_type="BIREYSEL",
                                locale="tr", attributes={}, created_at=CONSENTED, updated_at=CONSENTED)
                        for i in range(rounds))
    with TestClient(app, base_url="http://127.0.0.1:8000") as client:
        def optin(address: str):
            form = _optin_form(client)
            form.update(email=address, channel=["email"])
            return client.post("/optin?lang=en", data=form)

        known, unknown = optin(AYY), optin("nobody@example.com")
        assert known.status_code == unknown.status_code == 200
        assert _shape(known.text) == _shape(unknown.text)
        known_token, unknown_token = make_token(SECRET, AYY, "email"), make_token(SECRET, "ghost@example.com", "email")
        pages = [client.get(f"/u/{t}") for t in (known_token, unknown_token)]
        assert [p.status_code for p in pages] == [200, 200] and _shape(pages[0].text) == _shape(pages[1].text)
        prefs = [client.get(f"/p/{t}") for t in (known_token, unknown_token)]
        assert [p.status_code for p in prefs] == [200, 200]
        # timing, interleaved so drift hits both alike
        times: dict[str, list[float]] = {"optin_known": [], "optin_unknown": [], "u_known": [], "u_unknown": []}
        for i in range(rounds):
            times["optin_known"].append(_timed(lambda: optin(f"known{i}@example.com")))
            times["optin_unknown"].append(_timed(lambda: optin(f"nobody{i}@example.com")))
            times["u_known"].append(_timed(lambda: client.get(f"/u/{known_token}")))
            times["u_unknown"].append(_timed(lambda: client.get(f"/u/{unknown_token}")))
    medians = {k: statistics.median(v) * 1000 for k, v in times.items()}
    for a, b in (("optin_known", "optin_unknown"), ("u_known", "u_unknown")):
        # generous: a database lookup that only known addresses take would show as a steady gap
        assert abs(medians[a] - medians[b]) < max(5.0, 0.5 * min(medians[a], medians[b])), medians
    findings("address enumeration", requests=4 * rounds + 6, same_status_and_shape=True,
             **{f"median_ms_{k}": round(v, 2) for k, v in medians.items()})


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    """A real `izin serve` on a free loopback port, with a SQLite database of 40 consenting contacts."""
    from izin.db import Database, upgrade

    url = f"sqlite:///{tmp_path / 'izin.db'}"
    database = Database(url)
    upgrade(database)
    for i in range(40):
        grant(database, f"c{i}", email=f"c{i}@example.com")
    (tmp_path / "izin.toml").write_text(
        '[sender]\nname = "Örnek Ticaret A.Ş."\nmersis = "0123456789000015"\nphone = "+90 212 555 00 00"\n'
        'email = "destek@ornek.com.tr"\nsms_header = "ORNEKTIC"\nsms_optout = "RET yazip 4609\'a gonderin"\n'
        '[web]\nbase_url = "http://127.0.0.1:8000"\nrate_limit_per_minute = 60\nwebhook_secret = "hook-secret"\n'
        '[channels.email]\nurl = "outbox://outbox"\n[channels.sms]\nurl = "outbox://outbox"\n', encoding="utf-8")
    port = _free_port()
    env = {**os.environ, "IZIN_DATABASE_URL": url, "IZIN_SECRET_KEY": "flood-secret",
           "IZIN_NOW": "2026-11-24T12:00:00+03:00"}
    env.pop("IZIN_CONFIG", None)
    process = subprocess.Popen([sys.executable, "-m", "izin", "serve", "--host", "127.0.0.1", "--port", str(port)],
                               cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    import httpx

    deadline = time.monotonic() + 20
    while True:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "izin serve did not start"
        time.sleep(0.1)
    yield base, database, process
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    database.dispose()


def test_a_request_flood_leaves_the_server_up_and_genuine_opt_outs_working(server, findings):
    import httpx

    base, database, process = server
    before = count(database)
    attacker = {"X-Forwarded-For": "203.0.113.7"}
    genuine = [(f"c{i}@example.com", make_token("flood-secret", f"c{i}@example.com", "email")) for i in range(20)]
    flood = []
    for i in range(2_000):
        kind = i % 4
        if kind == 0:
            flood.append(("POST", f"/u/{_b64(secrets.token_bytes(48))}", {"data": {"List-Unsubscribe": "One-Click"}}))
        elif kind == 1:
            flood.append(("POST", "/optin?lang=en", {"data": {"email": f"x{i}@example.com", "channel": "email"}}))
        elif kind == 2:
            flood.append(("POST", "/webhooks/sms/inbound/generic", {"json": {"from": PHONE, "text": "RET"}}))
        else:
            flood.append(("GET", "/optin", {}))
    statuses: dict[int, int] = {}
    opt_outs: list[int] = []

    async def run() -> float:
        limits = httpx.Limits(max_connections=20)
        async with httpx.AsyncClient(base_url=base, limits=limits, timeout=10) as client:
            queue: asyncio.Queue = asyncio.Queue()
            for item in flood:
                queue.put_nowait(item)

            async def worker() -> None:
                while not queue.empty():
                    method, path, body = queue.get_nowait()
                    try:
                        response = await client.request(method, path, headers=attacker, **body)
                        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                    except httpx.HTTPError:
                        statuses[0] = statuses.get(0, 0) + 1

            started = time.perf_counter()
            workers = [asyncio.create_task(worker()) for _ in range(20)]
            await asyncio.sleep(0.5)  # the flood is on: now the genuine people click, each from their own address
            for n, (_, token) in enumerate(genuine):
                response = await client.post(f"/u/{token}", data={"List-Unsubscribe": "One-Click"},
                                             headers={"X-Forwarded-For": f"198.51.100.{n + 1}"})
                opt_outs.append(response.status_code)
            await asyncio.gather(*workers)
            return time.perf_counter() - started

    elapsed = asyncio.run(run())
    assert process.poll() is None, "the server died"
    assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200
    assert sum(statuses.values()) == 2_000
    assert statuses.get(0, 0) == 0 and statuses.get(500, 0) == 0, statuses
    assert statuses.get(429, 0) >= 1_000, statuses  # 60 a minute per bucket: nearly everything is refused
    assert opt_outs == [200] * len(genuine)
    assert elapsed < 60, elapsed
    with database.session() as session:
        rets = session.execute(select(ConsentEvent.recipient, ConsentEvent.status).where(
            ConsentEvent.id > before).order_by(ConsentEvent.id)).all()
    assert sorted(rets) == sorted((address, "RET") for address, _ in genuine)
    assert count(database) == before + len(genuine)
    findings("request flood", requests=2_000, concurrency=20, seconds=round(elapsed, 1),
             answered_429=statuses.get(429, 0), answered_5xx=sum(v for k, v in statuses.items() if k >= 500),
             server_up=True, genuine_opt_outs=len(genuine), recorded=len(rets), other_events=0)


_TEXT = st.text(max_size=60)
_FORMS = st.fixed_dictionaries({
    "first_name": _TEXT, "last_name": _TEXT, "email": st.one_of(_TEXT, st.emails()),
    "phone": st.one_of(_TEXT, st.from_regex(r"05[0-9]{9}", fullmatch=True)),
    "channel": st.lists(st.sampled_from(["email", "sms", "call", "x", ""]), max_size=3),
    "lang": st.sampled_from(["en", "tr", "xx", ""])})
_JSON = st.one_of(st.dictionaries(st.sampled_from(["from", "text", "keyword", "to", "id", "recipient", "status"]),
                                  st.one_of(_TEXT, st.integers(), st.none(), st.lists(_TEXT, max_size=2))), _TEXT)
_CONTENT_TYPES = ["application/json", "application/x-www-form-urlencoded", "message/delivery-status", "text/plain",
                  "multipart/form-data; boundary=x"]


def test_fuzzed_forms_and_webhook_bodies_never_fail_and_never_record_an_onay(web, people, findings):
    """Arbitrary opt-in forms (with a valid CSRF token) and arbitrary authenticated webhook bodies:
    no 5xx, and nothing but an SMS opt-out (a RET) ever reaches the ledger: an ONAY needs a confirmation."""
    from hypothesis import HealthCheck, given, settings

    before = count(people)
    form = _optin_form(web)
    seen = {"requests": 0, "server_errors": 0}

    def post(path: str, **kwargs) -> None:
        response = web.post(path, **kwargs)
        seen["requests"] += 1
        seen["server_errors"] += response.status_code >= 500
        web.app.state.limiter._hits.clear()

    fuzz = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)

    @fuzz
    @given(_FORMS)
    def forms(fields):
        post("/optin?lang=en", data={**fields, "csrf": form["csrf"], "text_hash": form["text_hash"]})

    @fuzz
    @given(_JSON, st.binary(max_size=200), st.sampled_from(_CONTENT_TYPES))
    def webhooks(body, raw, content_type):
        for path in ("/webhooks/sms/inbound/generic", "/webhooks/sms/inbound/netgsm", "/webhooks/delivery/generic",
                     "/webhooks/delivery/netgsm", "/webhooks/bounce"):
            post(path, headers=HOOK, json=body)
            post(path, headers={**HOOK, "content-type": content_type}, content=raw)

    forms()
    webhooks()
    assert seen["server_errors"] == 0
    with people.session() as session:
        new = session.execute(select(ConsentEvent.status, ConsentEvent.source).where(ConsentEvent.id > before)).all()
    assert all(tuple(row) == ("RET", "HS_MESAJ") for row in new), new
    findings("web input fuzz", requests=seen["requests"], server_errors=0, onay_recorded=0, rets_recorded=len(new))


XSS = "\"><script>alert(1)</script><x a='"


def test_reflected_values_are_escaped_on_every_page(web, people, findings):
    """Query strings, path segments, form fields and an address inside a genuine token come back, if
    at all, escaped: no page carries a script it was sent."""
    urls = [f"/optin?lang={XSS}", f"/optin?lang=en&x={XSS}", f"/u/{XSS}", f"/p/{XSS}", f"/optin/confirm/{XSS}",
            f"/optin/code/{XSS}?lang={XSS}"]
    token = make_token(SECRET, "x" + XSS.replace(" ", "") + "@example.com", "email")
    pages = [web.get(url) for url in urls + [f"/u/{token}", f"/p/{token}"]]
    form = _optin_form(web)
    pages.append(web.post("/optin?lang=en", data={**form, "first_name": XSS, "last_name": XSS, "email": XSS,
                                                   "phone": XSS, "lang": XSS}))
    assert [p.status_code for p in pages] == [200, 200, 404, 404, 404, 404, 200, 200, 400]
    assert not any("<script>" in p.text for p in pages)
    findings("reflected xss", pages=len(pages), scripts_reflected=0)
