"""The one source of "now": IZIN_NOW (ISO 8601 with offset) when set, else the system clock."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from izin.errors import ConfigError


#: the years an instant may fall in: outside them, showing it in UTC or Türkiye time overflows
EARLIEST_YEAR, LATEST_YEAR = 1900, 9998
RANGE_HINT = f"use a year from {EARLIEST_YEAR} to {LATEST_YEAR}"


def out_of_range(value: datetime) -> bool:
    """Whether an aware instant lies outside the years izin can convert between time zones."""
    try:
        year = value.astimezone(timezone.utc).year
    except OverflowError:  # 0001-01-01T00:00+01:00 has no UTC form
        return True
    return not EARLIEST_YEAR <= year <= LATEST_YEAR


def parse_instant(text: str, *, field: str = "time") -> datetime:
    """Parse an ISO 8601 instant that carries an offset; return it in UTC."""
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"{text!r} is not an ISO 8601 time; write e.g. 2026-11-24T10:00:00+03:00",
                          field=field) from None
    if value.tzinfo is None:
        raise ConfigError(f"{text!r} has no UTC offset; add one, e.g. {text}+03:00", field=field)
    if out_of_range(value):
        raise ConfigError(f"{text!r} is out of range; {RANGE_HINT}", field=field)
    return value.astimezone(timezone.utc)


def now() -> datetime:
    """The current instant in UTC, honouring IZIN_NOW."""
    fixed = os.environ.get("IZIN_NOW")
    if fixed:
        return parse_instant(fixed, field="IZIN_NOW")
    return datetime.now(timezone.utc)


#: İYS reads every consentDate as Türkiye time
ISTANBUL = ZoneInfo("Europe/Istanbul")


def iso_utc(value: datetime) -> str:
    """A fixed-width UTC form (microseconds, Z): the canonical encoding the ledger hashes."""
    # isoformat writes the same as strftime("%Y-%m-%dT%H:%M:%S.%fZ") for years 1000-9999, faster
    return value.astimezone(timezone.utc).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def iso_stored_utc(value: datetime | None) -> str | None:
    """iso_utc of a naive UTC datetime as the database stores it (None stays None)."""
    return None if value is None else value.isoformat(timespec="microseconds") + "Z"


def iso_istanbul(value: datetime) -> str:
    """An instant as ISO 8601 in Türkiye time, with its offset."""
    return value.astimezone(ISTANBUL).isoformat(timespec="seconds")
