"""A fake İYS on loopback: a real ThreadingHTTPServer speaking the documented API (dev.iys.org.tr,
as summarised in section 2 of the legal reference), with İYS's rules and limits.

    POST /oauth2/token                                         password and refresh_token grants
    POST /sps/{iys}/brands/{brand}/consents                    add one
    POST /sps/{iys}/brands/{brand}/consents/request            add many (async, <= 1,000)
    GET  /sps/{iys}/brands/{brand}/consents/request/{id}       results: `enqueue` first, then final
    POST /sps/{iys}/brands/{brand}/consents/status             the current record of one key
    GET  /sps/{iys}/brands/{brand}/consents/changes            pull: source, after, limit; last 7 days minus the last hour
    GET  /sps/{iys}/brands/{brand}/changes/{date}/file         the daily CSV; only the last 7 days, else H501

Rules per (recipient, recipientType, type): the first record cannot be RET (H175); the same status
twice and a consentDate not later than the stored one are refused; consentDate not before
2015-05-01 (H155), not in the future, at most 3 business days back (H174); unknown type / source /
bad recipient: H111 / H113 / H114. Limits: tokens per hour (H084), scripted 429/H124 and 5xx.
Codes the sources do not document are the fake's own and start with X-.

Tests import the fixtures from here (`from server import fake_iys`); nothing here mocks httpx.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import pytest

TR = ZoneInfo("Europe/Istanbul")
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=TR)  # tests/conftest.py NOW
USERNAME, PASSWORD, IYS_CODE, BRAND_CODE = "izin-api", "s3cret", "700001", "700002"
HS_SOURCES = ("HS_FIZIKSEL_ORTAM", "HS_ISLAK_IMZA", "HS_WEB", "HS_CAGRI_MERKEZI", "HS_SOSYAL_MEDYA", "HS_EPOSTA",
              "HS_MESAJ", "HS_MOBIL", "HS_EORTAM", "HS_ETKINLIK", "HS_ATM", "HS_2015", "HS_KARAR")
TYPES = ("ARAMA", "MESAJ", "EPOSTA")
#: the fake's own codes for rules whose real code our sources do not give
SAME_STATUS = "X-SAME-STATUS"
NOT_LATER = "X-DATE-NOT-LATER"
FUTURE = "X-FUTURE-DATE"
BAD_DATE = "X-BAD-DATE"
TOO_MANY = "X-TOO-MANY"
NOT_FOUND = "X-NOT-FOUND"
_EMAIL = re.compile(r"^[a-z0-9._%+\-]+@[a-z0-9.\-]+\.[a-z]{2,}$")
_PHONE = re.compile(r"^\+90[0-9]{10}$")


def fmt(value: datetime) -> str:
    return value.astimezone(TR).strftime("%Y-%m-%d %H:%M:%S")


def parse(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=TR)


def business_days_back(consent: datetime, now: datetime) -> int:
    """Business days (Mon-Fri, not a Turkish public holiday) after consent's day up to now's day."""
    import holidays

    days, day = 0, consent.astimezone(TR).date()
    end = now.astimezone(TR).date()
    while day < end:
        day += timedelta(days=1)
        if day.weekday() < 5 and day not in holidays.country_holidays("TR", years=day.year):
            days += 1
    return days


@dataclass
class Movement:
    seq: int
    recipient: str
    recipient_type: str
    type: str
    status: str
    source: str
    consent_date: datetime
    creation_date: datetime
    transaction_id: str

    def as_json(self) -> dict[str, Any]:
        return {"consentDate": fmt(self.consent_date), "creationDate": fmt(self.creation_date), "source": self.source,
                "recipient": self.recipient, "recipientType": self.recipient_type, "status": self.status,
                "type": self.type, "transactionId": self.transaction_id}


@dataclass
class Call:
    method: str
    path: str
    query: dict[str, str]
    body: Any
    authorization: str | None


@dataclass
class FakeIys:
    """State and rules; `serve()` puts it on a loopback port."""

    now: Callable[[], datetime] = lambda: NOW
    token_ttl: int = 7200
    refresh_ttl: int = 14400
    token_limit_per_hour: int = 10
    #: result queries of an async request that answer `enqueue` before the final answer
    enqueue_polls: int = 1
    calls: list[Call] = field(default_factory=list)
    movements: list[Movement] = field(default_factory=list)
    #: scripted answers for the next API calls (after authentication): (status, body, headers)
    failures: deque[tuple[int, Any, dict[str, str]]] = field(default_factory=deque)
    #: expire every token after this many more authenticated calls (None: never)
    expire_after: int | None = None

    def __post_init__(self) -> None:
        self.lock = threading.RLock()
        self.tokens: dict[str, datetime] = {}
        self.refresh_tokens: dict[str, datetime] = {}
        self.token_requests: list[datetime] = []
        self.current: dict[tuple[str, str, str], Movement] = {}
        self.batches: dict[str, dict[str, Any]] = {}

    # -- helpers for tests --

    @property
    def token_calls(self) -> list[Call]:
        return [c for c in self.calls if c.path == "/oauth2/token"]

    def api_calls(self, suffix: str = "") -> list[Call]:
        return [c for c in self.calls if c.path.startswith("/sps/") and c.path.endswith(suffix)]

    def fail(self, status: int, code: str | None = None, times: int = 1, retry_after: str | None = "0") -> None:
        body = {"errors": [{"code": code, "message": "fake failure", "location": []}]} if code else {}
        headers = {"Retry-After": retry_after} if retry_after is not None and status == 429 else {}
        for _ in range(times):
            self.failures.append((status, body, headers))

    def expire_tokens(self) -> None:
        with self.lock:
            self.tokens.clear()

    def citizen(self, recipient: str, type_: str, status: str, at: datetime, source: str = "IYS_WEB",
                recipient_type: str = "BIREYSEL", consent_date: datetime | None = None) -> Movement:
        """A change a citizen made in İYS (web, app, 3338...), written at `at`."""
        with self.lock:
            return self._write(recipient, recipient_type, type_, status, source, consent_date or at, at)

    def _write(self, recipient: str, recipient_type: str, type_: str, status: str, source: str,
               consent_date: datetime, creation: datetime) -> Movement:
        seq = len(self.movements) + 1
        movement = Movement(seq, recipient, recipient_type, type_, status, source, consent_date, creation,
                            hashlib.sha256(f"tx-{seq}".encode()).hexdigest())
        self.movements.append(movement)
        self.current[(recipient, recipient_type, type_)] = movement
        return movement

    # -- rules --

    def validate(self, item: Any) -> tuple[str, str] | None:
        if not isinstance(item, dict):
            return "X-BAD-BODY", "not an object"
        if item.get("type") not in TYPES:
            return "H111", "type bulunamadı"
        if item.get("source") not in HS_SOURCES:
            return "H113", "source bulunamadı"
        recipient = str(item.get("recipient", ""))
        if not (_EMAIL.match(recipient) if item["type"] == "EPOSTA" else _PHONE.match(recipient)):
            return "H114", "recipient bulunamadı"
        if item.get("recipientType") not in ("BIREYSEL", "TACIR") or item.get("status") not in ("ONAY", "RET"):
            return "X-BAD-ENUM", "recipientType/status"
        try:
            consent = parse(str(item.get("consentDate", "")))
        except ValueError:
            return BAD_DATE, "consentDate biçimi YYYY-MM-DD HH:mm:ss olmalı"
        now = self.now()
        if consent < datetime(2015, 5, 1, tzinfo=TR):
            return "H155", "consentDate 2015-05-01 00:00:00 tarihinden önce olamaz"
        if consent > now:
            return FUTURE, "consentDate gelecekte olamaz"
        if business_days_back(consent, now) > 3 and item["source"] != "HS_2015":
            return "H174", "izin tarihi 3 iş gününden eski"
        held = self.current.get((recipient, item["recipientType"], item["type"]))
        if held is None and item["status"] == "RET":
            return "H175", "İlk izin kayıt işlemlerinde RET durum bilgisi içeren izinler kaydedilmez."
        if held is not None and held.status == item["status"]:
            return SAME_STATUS, "aynı durum tekrar kaydedilemez"
        if held is not None and consent <= held.consent_date:
            return NOT_LATER, "consentDate kayıtlı izinden sonra olmalı"
        return None

    def add(self, item: dict[str, Any]) -> Movement:
        return self._write(item["recipient"], item["recipientType"], item["type"], item["status"], item["source"],
                           parse(item["consentDate"]), self.now())

    # -- HTTP --

    def handle(self, method: str, url: str, headers: dict[str, str], raw: bytes
               ) -> tuple[int, Any, dict[str, str]]:
        parts = urlsplit(url)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        with self.lock:
            self.calls.append(Call(method, parts.path, query, body, headers.get("authorization")))
            if parts.path == "/oauth2/token" and method == "POST":
                return self._token(body or {})
            token = (headers.get("authorization") or "").removeprefix("Bearer ").strip()
            if self.tokens.get(token) is None or self.tokens[token] <= self.now():
                return 401, {"errors": [{"code": "H351", "message": "Eksik veya geçersiz jeton!"}]}, {}
            if self.expire_after is not None:
                self.expire_after -= 1
                if self.expire_after <= 0:
                    self.expire_after = None
                    self.tokens.clear()  # this call still passes; the next one meets a dead token
            if self.failures:
                return self.failures.popleft()
            prefix = f"/sps/{IYS_CODE}/brands/{BRAND_CODE}/"
            if not parts.path.startswith(prefix):
                return 404, {"errors": [{"code": NOT_FOUND, "message": "no such brand"}]}, {}
            return self._api(method, parts.path.removeprefix(prefix), query, body)

    def _token(self, body: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        now = self.now()
        self.token_requests = [t for t in self.token_requests if t > now - timedelta(hours=1)]
        if len(self.token_requests) >= self.token_limit_per_hour:
            return 429, {"errors": [{"code": "H084", "message": "Saatlik kimlik doğrulama limiti aşıldı."}]}, {}
        self.token_requests.append(now)
        grant = body.get("grant_type")
        if grant == "password":
            if body.get("username") != USERNAME or body.get("password") != PASSWORD:
                return 401, {"errors": [{"code": "X-BAD-CREDENTIALS", "message": "kullanıcı adı veya şifre"}]}, {}
        elif grant == "refresh_token":
            expiry = self.refresh_tokens.pop(str(body.get("refresh_token")), None)
            if expiry is None or expiry <= now:
                return 401, {"errors": [{"code": "X-BAD-REFRESH", "message": "refresh token geçersiz"}]}, {}
        else:
            return 400, {"errors": [{"code": "X-BAD-GRANT", "message": "grant_type"}]}, {}
        access, refresh = uuid.uuid4().hex, uuid.uuid4().hex
        self.tokens[access] = now + timedelta(seconds=self.token_ttl)
        self.refresh_tokens[refresh] = now + timedelta(seconds=self.refresh_ttl)
        return 200, {"access_token": access, "refresh_token": refresh, "expires_in": self.token_ttl,
                     "refresh_expires_in": self.refresh_ttl, "token_type": "bearer"}, {}

    def _api(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any, dict[str, str]]:
        if method == "POST" and path == "consents":
            error = self.validate(body)
            if error:
                return 422, {"errors": [{"code": error[0], "message": error[1], "location": ["body"]}]}, {}
            movement = self.add(body)
            return 200, {"transactionId": movement.transaction_id, "creationDate": fmt(movement.creation_date)}, {}
        if method == "POST" and path == "consents/request":
            if not isinstance(body, list) or not body:
                return 422, {"errors": [{"code": "H168", "message": "Alıcı listesi bulunamadı.", "location": []}]}, {}
            if len(body) > 1000:
                return 422, {"errors": [{"code": TOO_MANY, "message": "en fazla 1000", "location": []}]}, {}
            request_id = uuid.uuid4().hex
            results = []
            for index, item in enumerate(body):
                sub = str(uuid.uuid4())
                error = self.validate(item)
                if error:
                    results.append({"index": index, "status": "failure", "subRequestId": sub,
                                    "error": {"code": error[0], "message": error[1]}})
                else:
                    movement = self.add(item)
                    results.append({"index": index, "status": "success", "subRequestId": sub,
                                    "requestId": request_id, "transactionId": movement.transaction_id,
                                    "creationDate": fmt(movement.creation_date)})
            self.batches[request_id] = {"results": results, "polls": 0}
            return 200, {"requestId": request_id,
                         "subRequests": [{**item, "subRequestId": r["subRequestId"]}
                                         for item, r in zip(body, results)]}, {}
        if method == "GET" and path.startswith("consents/request/"):
            batch = self.batches.get(path.rsplit("/", 1)[1])
            if batch is None:
                return 404, {"errors": [{"code": NOT_FOUND, "message": "requestId bulunamadı"}]}, {}
            batch["polls"] += 1
            if batch["polls"] <= self.enqueue_polls:
                return 200, [{"index": r["index"], "status": "enqueue", "subrequestId": r["subRequestId"]}
                             for r in batch["results"]], {}
            return 200, batch["results"], {}
        if method == "POST" and path == "consents/status":
            held = self.current.get((body.get("recipient"), body.get("recipientType"), body.get("type")))
            if held is None:
                return 422, {"errors": [{"code": NOT_FOUND, "message": "izin bulunamadı"}]}, {}
            return 200, held.as_json(), {}
        if method == "GET" and path == "consents/changes":
            return self._changes(query)
        match = re.fullmatch(r"changes/([^/]+)/file", path)
        if method == "GET" and match:
            return self._file(match[1])
        return 404, {"errors": [{"code": NOT_FOUND, "message": path}]}, {}

    def _changes(self, query: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        """Ordered by creationDate; the cursor is `<epoch seconds>_<seq>` of the last movement returned."""
        source = query.get("source", "IYS")
        limit = int(query.get("limit", "999"))
        after = tuple(int(p) for p in query["after"].split("_")) if query.get("after") else (0, 0)
        now = self.now()
        prefix = "IYS_" if source == "IYS" else "HS_"

        def position(m: Movement) -> tuple[int, int]:
            return int(m.creation_date.timestamp()), m.seq

        window = [m for m in self.movements if m.source.startswith(prefix) and position(m) > after
                  and now - timedelta(days=7) <= m.creation_date < now - timedelta(hours=1)]
        page = sorted(window, key=position)[:limit]
        cursor = "_".join(map(str, position(page[-1]))) if page else query.get("after")
        return 200, {"after": cursor, "list": [m.as_json() for m in page]}, {}

    def _file(self, report: str) -> tuple[int, Any, dict[str, str]]:
        try:
            day = date.fromisoformat(report)
        except ValueError:
            day = None
        today = self.now().astimezone(TR).date()
        if day is None or not today - timedelta(days=7) <= day <= today:
            return 422, {"errors": [{"code": "H501", "message": "Tarih formatı hatalı.", "location": ["reportDate"]}]}, {}
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["creationDate", "transactionId", "recipient", "recipientType", "type", "status",
                         "consentDate", "source"])
        for m in self.movements:
            if m.creation_date.astimezone(TR).date() == day:
                writer.writerow([fmt(m.creation_date), m.transaction_id, m.recipient, m.recipient_type, m.type,
                                 m.status, fmt(m.consent_date), m.source])
        return 200, out.getvalue().encode(), {"Content-Type": "text/csv"}

    def serve(self) -> Server:
        return Server(self)


class Server:
    """The fake on 127.0.0.1 in a thread; `url` is its base URL."""

    def __init__(self, fake: FakeIys) -> None:
        state = fake

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length) if length else b""
                status, body, headers = state.handle(self.command, self.path,
                                                     {k.lower(): v for k, v in self.headers.items()}, raw)
                payload = body if isinstance(body, bytes) else json.dumps(body, ensure_ascii=False).encode()
                self.send_response(status)
                self.send_header("Content-Type", headers.pop("Content-Type", "application/json; charset=utf-8"))
                self.send_header("Content-Length", str(len(payload)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _serve  # noqa: N815 (http.server's naming)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.fake = fake
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def fake_iys() -> Iterator[FakeIys]:
    """The fake İYS, serving on loopback; `fake_iys.url` is its base URL."""
    fake = FakeIys()
    server = fake.serve()
    fake.url = server.url  # type: ignore[attr-defined]
    yield fake
    server.stop()


def iys_section(url: str, require_accepted: bool = True) -> str:
    """The [iys] section of izin.toml for the fake."""
    return (f'[iys]\nbase_url = "{url}"\nusername = "{USERNAME}"\npassword = "{PASSWORD}"\n'
            f'iys_code = "{IYS_CODE}"\nbrand_code = "{BRAND_CODE}"\n'
            f'require_accepted = {"true" if require_accepted else "false"}\n')


def client_for(fake: FakeIys, **kwargs: Any):
    """An IysClient for the fake: no real waiting, in-memory tokens unless a store is given."""
    from izin.consent.iys.client import IysClient

    kwargs.setdefault("sleep", lambda _s: None)
    kwargs.setdefault("backoff", 0.0)
    return IysClient(fake.url, USERNAME, PASSWORD, IYS_CODE, BRAND_CODE, **kwargs)  # type: ignore[attr-defined]
