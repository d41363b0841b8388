"""A thin, typed httpx client for İYS's service-provider API (dev.iys.org.tr).

Tokens: OAuth2 password grant, refreshed with the refresh token a few minutes before expiry and
cached in a TokenStore (the database in production, so every `izin iys ...` process shares one
token). Token requests are budgeted locally (default 5 an hour; İYS allows about 10 and answers
H084 beyond); after H084 no token is asked for during the hour that follows.

Dates: İYS reads and writes `YYYY-MM-DD HH:mm:ss` in Türkiye time. Every datetime this module takes
or returns is aware; conversion happens here and nowhere else (a public client formats UTC and
shifts every consent by three hours).

Errors (all IzinError, so the CLI prints one line and the right exit status):

    IysError
    ├── IysTransient      429/H124, 5xx, timeouts, connection failures: try again later
    ├── IysRejected       422 (or another 4xx): İYS refused the content; `.codes` names why
    └── IysAuthError      401/403 on the token endpoint: credentials are wrong
        └── IysTokenLimit H084 or our own hourly budget: no token until `.until`
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import Any, Protocol

import httpx

from izin import clock
from izin.clock import ISTANBUL
from izin.errors import IzinError

IYS_TYPES = ("ARAMA", "MESAJ", "EPOSTA")
RECIPIENT_TYPES = ("BIREYSEL", "TACIR")
STATUSES = ("ONAY", "RET")
#: at most this many consents in one asynchronous request (sources disagree: 1,000 or 10,000)
MAX_BATCH = 1_000
#: İYS error codes with a meaning this client acts on
TOKEN_LIMIT = "H084"
RATE_LIMIT = "H124"
INVALID_TOKEN = "H351"
#: refresh this long before the access token expires
REFRESH_MARGIN = timedelta(minutes=5)
_IYS_FORMAT = "%Y-%m-%d %H:%M:%S"


def iys_datetime(value: datetime) -> str:
    """An aware datetime as İYS writes it: `YYYY-MM-DD HH:mm:ss` in Türkiye time."""
    if value.tzinfo is None:
        raise ValueError("naive datetime given to İYS; use an aware one")
    return value.astimezone(ISTANBUL).strftime(_IYS_FORMAT)


def parse_iys_datetime(text: str) -> datetime:
    """`YYYY-MM-DD HH:mm:ss` (Türkiye time; a `T`, fractions or an offset are tolerated) as an aware datetime."""
    text = text.strip().replace("T", " ")
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        value = datetime.strptime(text[:19], _IYS_FORMAT)
    return value.replace(tzinfo=ISTANBUL) if value.tzinfo is None else value


# --- errors ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ErrorDetail:
    code: str
    message: str = ""
    location: tuple[str, ...] = ()


class IysError(IzinError):
    """Something went wrong talking to İYS."""

    exit_code = 3

    def __init__(self, message: str, *, status: int | None = None, errors: Iterable[ErrorDetail] = ()) -> None:
        self.status = status
        self.errors = list(errors)
        super().__init__(message)

    @property
    def codes(self) -> list[str]:
        return [e.code for e in self.errors]

    @property
    def code(self) -> str | None:
        return self.errors[0].code if self.errors else None


class IysTransient(IysError):
    """Worth retrying later: rate limit, server error, timeout, no connection."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        self.retry_after = retry_after
        super().__init__(message, **kwargs)


class IysRejected(IysError):
    """İYS refused the request's content; retrying it unchanged will not help."""

    exit_code = 1


class IysAuthError(IysError):
    """İYS refused our credentials."""

    exit_code = 2


class IysTokenLimit(IysAuthError):
    """Too many token requests this hour (H084, or our own budget): wait until `until`."""

    exit_code = 3

    def __init__(self, message: str, *, until: datetime, **kwargs: Any) -> None:
        self.until = until
        super().__init__(message, **kwargs)


# --- values ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Consent:
    """One consent movement as İYS takes it."""

    recipient: str
    recipient_type: str
    type: str
    status: str
    source: str
    consent_date: datetime
    retailer_code: str | None = None
    retailer_access: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "consentDate": iys_datetime(self.consent_date), "source": self.source, "recipient": self.recipient,
            "recipientType": self.recipient_type, "status": self.status, "type": self.type,
        }
        if self.retailer_code:
            document["retailerCode"] = self.retailer_code
        if self.retailer_access:
            document["retailerAccess"] = list(self.retailer_access)
        return document


@dataclass(frozen=True)
class Ack:
    """İYS's receipt for one movement."""

    transaction_id: str
    creation_date: datetime


@dataclass(frozen=True)
class BatchTicket:
    request_id: str
    sub_request_ids: list[str]


@dataclass(frozen=True)
class BatchItem:
    """The answer for one element of an asynchronous request, by its index in what we sent."""

    index: int
    #: success | failure | enqueue (still being processed)
    status: str
    transaction_id: str | None = None
    creation_date: datetime | None = None
    error: ErrorDetail | None = None
    sub_request_id: str | None = None


@dataclass(frozen=True)
class Change:
    """One movement read back from İYS (pull, status query, daily file)."""

    recipient: str
    recipient_type: str
    type: str
    status: str
    source: str
    consent_date: datetime | None
    creation_date: datetime | None
    transaction_id: str | None
    retailer_code: str | None = None

    @classmethod
    def from_json(cls, item: dict[str, Any]) -> Change:
        def when(key: str) -> datetime | None:
            value = item.get(key)
            return parse_iys_datetime(str(value)) if value else None

        return cls(recipient=str(item.get("recipient", "")), recipient_type=str(item.get("recipientType", "")),
                   type=str(item.get("type", "")), status=str(item.get("status", "")),
                   source=str(item.get("source", "")), consent_date=when("consentDate"),
                   creation_date=when("creationDate"),
                   transaction_id=item.get("transactionId") or item.get("transaction_id"),
                   retailer_code=item.get("retailerCode"))


@dataclass(frozen=True)
class ChangesPage:
    #: the cursor to pass back for the next page
    after: str | None
    changes: list[Change]


# --- tokens ------------------------------------------------------------------------------------


@dataclass
class TokenState:
    access_token: str | None = None
    refresh_token: str | None = None
    expires_at: datetime | None = None
    refresh_expires_at: datetime | None = None
    #: when each token request of the last hour was made
    requests: list[datetime] = field(default_factory=list)
    #: after H084: no token request before this instant
    blocked_until: datetime | None = None


class TokenStore(Protocol):
    def load(self) -> TokenState: ...

    def save(self, state: TokenState) -> None: ...


class MemoryTokenStore:
    """Tokens for the life of one process."""

    def __init__(self) -> None:
        self._state = TokenState()

    def load(self) -> TokenState:
        return replace(self._state, requests=list(self._state.requests))

    def save(self, state: TokenState) -> None:
        self._state = replace(state, requests=list(state.requests))


# --- the client --------------------------------------------------------------------------------


class IysClient:
    """One brand of one service provider. Use as a context manager, or call close()."""

    def __init__(self, base_url: str, username: str, password: str, iys_code: str, brand_code: str, *,
                 timeout: float = 10.0, retries: int = 3, backoff: float = 1.0, max_backoff: float = 60.0,
                 max_token_requests_per_hour: int = 5, store: TokenStore | None = None,
                 now: Callable[[], datetime] = clock.now, sleep: Callable[[float], None] = time.sleep,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.username, self.password = username, password
        self.iys_code, self.brand_code = iys_code, brand_code
        self.retries, self.backoff, self.max_backoff = retries, backoff, max_backoff
        self.max_token_requests = max_token_requests_per_hour
        self.store: TokenStore = store or MemoryTokenStore()
        self.now, self.sleep = now, sleep
        self._http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout, transport=transport,
                                  headers={"Accept": "application/json"})

    @classmethod
    def from_settings(cls, iys: Any, **kwargs: Any) -> IysClient:
        """From the `[iys]` section of izin.toml."""
        return cls(iys.base_url, iys.username, iys.password, iys.iys_code, iys.brand_code, **kwargs)

    def __enter__(self) -> IysClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- consents --

    def _brand(self, tail: str) -> str:
        return f"/sps/{self.iys_code}/brands/{self.brand_code}/{tail}"

    def add_consent(self, consent: Consent) -> Ack:
        """Add one consent synchronously; IysRejected (422) names the rule it broke."""
        body = self._request("POST", self._brand("consents"), json=consent.as_json()).json()
        return Ack(str(body.get("transactionId") or body.get("transaction_id")),
                   parse_iys_datetime(body["creationDate"]))

    def add_consents(self, consents: list[Consent]) -> BatchTicket:
        """Queue up to 1,000 consents; İYS answers each later (batch_result)."""
        if not consents:
            raise ValueError("an asynchronous request needs at least one consent")
        if len(consents) > MAX_BATCH:
            raise ValueError(f"at most {MAX_BATCH} consents per request, got {len(consents)}")
        body = self._request("POST", self._brand("consents/request"), json=[c.as_json() for c in consents]).json()
        subs = body.get("subRequests") or []
        if isinstance(subs, dict):
            subs = [subs]
        return BatchTicket(str(body["requestId"]),
                           [str(s.get("subRequestId") or s.get("subrequestId") or "") for s in subs])

    def batch_result(self, request_id: str) -> list[BatchItem]:
        """Where each element of an asynchronous request stands, in index order."""
        body = self._request("GET", self._brand(f"consents/request/{request_id}")).json()
        if isinstance(body, dict):
            body = body.get("list") or body.get("subRequests") or [body]
        items = []
        for raw in body:
            error = raw.get("error")
            items.append(BatchItem(
                index=int(raw["index"]), status=str(raw.get("status", "enqueue")).lower(),
                transaction_id=raw.get("transactionId"),
                creation_date=parse_iys_datetime(raw["creationDate"]) if raw.get("creationDate") else None,
                error=ErrorDetail(str(error.get("code", "")), str(error.get("message", ""))) if error else None,
                sub_request_id=raw.get("subRequestId") or raw.get("subrequestId")))
        return sorted(items, key=lambda i: i.index)

    def consent_status(self, recipient: str, recipient_type: str, type_: str) -> Change:
        """İYS's current record for one (recipient, recipientType, type)."""
        body = self._request("POST", self._brand("consents/status"),
                             json={"recipient": recipient, "recipientType": recipient_type, "type": type_}).json()
        return Change.from_json(body)

    def changes(self, source: str = "IYS", after: str | None = None, limit: int = 999) -> ChangesPage:
        """One page of movements (last 7 days, without the last hour), oldest first."""
        if source not in ("IYS", "HS"):
            raise ValueError("source is IYS (citizens' changes) or HS (the provider's own)")
        params: dict[str, Any] = {"source": source, "limit": limit}
        if after:
            params["after"] = after
        body = self._request("GET", self._brand("consents/changes"), params=params).json()
        items = body.get("list") or []
        if isinstance(items, dict):
            items = [items]
        return ChangesPage(body.get("after") or after, [Change.from_json(i) for i in items])

    def change_file(self, report_date: date) -> list[Change]:
        """The daily movement file (CSV) of one of the last 7 days."""
        response = self._request("GET", self._brand(f"changes/{report_date.isoformat()}/file"))
        return parse_change_file(response.text)

    # -- plumbing --

    def _request(self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None
                 ) -> httpx.Response:
        attempt, reauthenticated = 0, False
        while True:
            try:
                headers = {"Authorization": f"Bearer {self._token()}"}
                try:
                    response = self._http.request(method, path, json=json, params=params, headers=headers)
                except httpx.TimeoutException as exc:
                    raise IysTransient(f"İYS did not answer in time ({method} {path}): {exc}") from None
                except httpx.TransportError as exc:
                    raise IysTransient(f"cannot reach İYS ({method} {path}): {exc}") from None
                if response.status_code < 300:
                    return response
                error = self._error(response, f"{method} {path}")
                if response.status_code == 401 and not isinstance(error, IysTokenLimit) and not reauthenticated:
                    # the token died early (revoked, or İYS's clock): forget it and try once more
                    self._forget_access_token()
                    reauthenticated = True
                    continue
                raise error
            except IysTransient as exc:
                if attempt >= self.retries:
                    raise
                delay = exc.retry_after if exc.retry_after is not None else self.backoff * 2 ** attempt
                self.sleep(min(delay, self.max_backoff))
                attempt += 1

    def _error(self, response: httpx.Response, what: str) -> IysError:
        details = _details(response)
        codes = [d.code for d in details]
        text = "; ".join(f"{d.code} {d.message}".strip() for d in details) or response.reason_phrase
        message = f"İYS answered {response.status_code} to {what}: {text}"
        if TOKEN_LIMIT in codes:
            return self._blocked(details)
        if response.status_code == 429 or RATE_LIMIT in codes:
            return IysTransient(message, retry_after=_retry_after(response), status=response.status_code,
                                errors=details)
        if response.status_code >= 500:
            return IysTransient(message, retry_after=_retry_after(response), status=response.status_code,
                                errors=details)
        if response.status_code in (401, 403):
            return IysAuthError(message, status=response.status_code, errors=details)
        return IysRejected(message, status=response.status_code, errors=details)

    def _blocked(self, details: list[ErrorDetail]) -> IysTokenLimit:
        state = self.store.load()
        state.blocked_until = self.now() + timedelta(hours=1)
        state.access_token = None
        self.store.save(state)
        return IysTokenLimit(f"İYS refused another token this hour (H084); no token is asked for before "
                             f"{clock.iso_istanbul(state.blocked_until)}", until=state.blocked_until,
                             errors=details)

    def _forget_access_token(self) -> None:
        state = self.store.load()
        state.access_token, state.expires_at = None, None
        self.store.save(state)

    def _token(self) -> str:
        state = self.store.load()
        now = self.now()
        if state.access_token and state.expires_at and state.expires_at - REFRESH_MARGIN > now:
            return state.access_token
        use_refresh = bool(state.refresh_token and state.refresh_expires_at
                           and state.refresh_expires_at - REFRESH_MARGIN > now)
        try:
            return self._new_token(state, now, use_refresh)
        except IysAuthError as exc:
            if not use_refresh or isinstance(exc, IysTokenLimit):
                raise
            # the refresh token was refused: fall back to the password grant once
            state = self.store.load()
            state.refresh_token, state.refresh_expires_at = None, None
            self.store.save(state)
            return self._new_token(state, now, False)

    def _new_token(self, state: TokenState, now: datetime, use_refresh: bool) -> str:
        if state.blocked_until and state.blocked_until > now:
            raise IysTokenLimit(f"İYS's hourly token limit was reached (H084); waiting until "
                                f"{clock.iso_istanbul(state.blocked_until)}", until=state.blocked_until)
        recent = sorted(t for t in state.requests if t > now - timedelta(hours=1))
        if len(recent) >= self.max_token_requests:
            until = recent[0] + timedelta(hours=1)
            raise IysTokenLimit(f"{len(recent)} İYS token requests in the last hour already; the next one is "
                                f"allowed at {clock.iso_istanbul(until)}", until=until)
        # counted before the call: a request that crashes half-way still used up İYS's budget
        state.requests = recent + [now]
        self.store.save(state)
        body = ({"refresh_token": state.refresh_token, "grant_type": "refresh_token"} if use_refresh else
                {"username": self.username, "password": self.password, "grant_type": "password"})
        try:
            response = self._http.post("/oauth2/token", json=body)
        except httpx.TimeoutException as exc:
            raise IysTransient(f"İYS did not answer the token request in time: {exc}") from None
        except httpx.TransportError as exc:
            raise IysTransient(f"cannot reach İYS for a token: {exc}") from None
        if response.status_code >= 300:
            error = self._error(response, "POST /oauth2/token")
            if isinstance(error, IysRejected):  # a 400/422 from the token endpoint is a credentials problem
                error = IysAuthError(str(error), status=error.status, errors=error.errors)
            raise error
        token = response.json()
        state = self.store.load()
        state.access_token = str(token["access_token"])
        state.expires_at = now + timedelta(seconds=int(token.get("expires_in", 7200)))
        if token.get("refresh_token"):
            state.refresh_token = str(token["refresh_token"])
            state.refresh_expires_at = now + timedelta(seconds=int(token.get("refresh_expires_in", 14400)))
        self.store.save(state)
        return state.access_token


def _details(response: httpx.Response) -> list[ErrorDetail]:
    try:
        body = response.json()
    except ValueError:
        return []
    raw = body.get("errors") if isinstance(body, dict) else None
    if not isinstance(raw, list):
        return [ErrorDetail(str(body["code"]), str(body.get("message", "")))] \
            if isinstance(body, dict) and body.get("code") else []
    return [ErrorDetail(str(e.get("code", "")), str(e.get("message", "")),
                        tuple(str(x) for x in e.get("location") or ())) for e in raw if isinstance(e, dict)]


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


#: columns of the daily movement file
CHANGE_FILE_COLUMNS = ("creationDate", "transactionId", "recipient", "recipientType", "type", "status",
                       "consentDate", "source")


def parse_change_file(text: str) -> list[Change]:
    """The daily movement file: a header row, then one movement a row (comma or semicolon separated)."""
    text = text.lstrip("\ufeff")
    first = text.split("\n", 1)[0]
    delimiter = ";" if first.count(";") > first.count(",") else ","
    rows = csv.DictReader(io.StringIO(text), delimiter=delimiter)
    return [Change.from_json({k.strip(): (v or "").strip() for k, v in row.items() if k}) for row in rows]
