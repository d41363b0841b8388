"""izin.toml: found, parsed and validated once, at the edge; environment overrides applied last.

Look-up order for the file: `--config PATH`, then `IZIN_CONFIG`, then `./izin.toml`; with none of
them every default applies (embedded mode: SQLite in the working directory, files to ./outbox).
`IZIN_DATABASE_URL`, `IZIN_BROKER_URL` and `IZIN_SECRET_KEY` override the file.
"""

from __future__ import annotations

import os
import re
import tomllib
from datetime import time
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, ValidationError,
                      field_validator)

from izin.errors import ConfigError

DEFAULT_FILE = "izin.toml"
DEFAULT_SECRET = "change-me"

_WINDOW = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-(?:([01]\d|2[0-3]):([0-5]\d)|(24):(00))$")
_CAP = re.compile(r"^([1-9]\d{0,3})/([1-9]\d{0,3})([dhw])$")
_RETENTION = re.compile(r"^([1-9]\d?)y$")
_HEADER = re.compile(r"^[A-Za-z0-9 .&\-]{3,11}$")


def _timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a folder such as "Europe"
        raise ValueError(f"unknown time zone {value!r}; use an IANA name such as Europe/Istanbul") from None
    return value


def _window(value: str) -> str:
    match = _WINDOW.match(value)
    # the end is HH:MM after the start, or 24:00 (midnight at the end of the day)
    if not match or match[5] is None and (match[3], match[4]) <= (match[1], match[2]):
        raise ValueError(f"{value!r} is not a window; write HH:MM-HH:MM with the start first, e.g. 09:00-21:00")
    return value


def _cap(value: str) -> str:
    if not _CAP.match(value):
        raise ValueError(f"{value!r} is not a cap; write COUNT/PERIOD with h, d or w, e.g. 3/7d")
    return value


def parse_retention(value: str) -> int:
    """Whole years from '3y'; ValueError below the legal minimum of 3."""
    return int(_retention(value)[:-1])


def _retention(value: str) -> str:
    if not _RETENTION.match(value):
        raise ValueError(f"{value!r} is not a retention period; write whole years, e.g. 3y")
    if int(value[:-1]) < 3:
        raise ValueError("consent evidence must be kept at least 3 years after the consent ends (law 6563); use 3y or more")
    return value


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Sender(_Section):
    """The identity printed in every commercial message (law 6563 art. 5)."""

    name: str = ""
    mersis: str = ""
    phone: str = ""
    email: str = ""
    sms_header: str = ""
    sms_optout: str = ""

    @field_validator("mersis")
    @classmethod
    def _mersis(cls, value: str) -> str:
        if value and not re.fullmatch(r"\d{16}", value):
            raise ValueError("a MERSİS number is 16 digits")
        return value

    @field_validator("sms_header")
    @classmethod
    def _header(cls, value: str) -> str:
        if value and not _HEADER.match(value):
            raise ValueError("an SMS originator is 3-11 ASCII letters, digits or spaces, with no Turkish letters")
        return value

    def missing(self) -> list[str]:
        """Names of the identity fields a commercial message cannot go without."""
        return [k for k in ("name", "mersis", "phone", "email") if not getattr(self, k)]


class Database(_Section):
    url: str = "sqlite:///izin.db"


class Broker(_Section):
    url: str = ""


class Web(_Section):
    base_url: str = "http://127.0.0.1:8000"
    secret_key: str = DEFAULT_SECRET
    #: keys that signed links still in people's mailboxes: they verify, they never sign
    old_secret_keys: list[str] = Field(default_factory=list)
    #: what providers must present on webhook calls (header X-Izin-Webhook-Secret or ?secret=)
    webhook_secret: str = ""
    #: state-changing requests allowed per client IP and minute
    rate_limit_per_minute: int = Field(default=30, ge=1, le=100_000)
    #: the version of the consent text the opt-in form shows; its text is izin/templates/web/consent.LANG.txt
    consent_text_version: str = "2026-11"
    #: where the KVKK notice (aydınlatma metni) lives; linked from the opt-in form
    kvkk_notice_url: str = ""


class Channel(_Section):
    url: str
    #: messages per second on this channel, shared by every worker (on Redis); None: no limit
    rate: float | None = Field(default=None, gt=0, le=10_000)


class Policy(_Section):
    timezone: Annotated[str, AfterValidator(_timezone)] = "Europe/Istanbul"
    send_window: Annotated[str, AfterValidator(_window)] = "09:00-21:00"
    frequency_cap: Annotated[str, AfterValidator(_cap)] = "3/7d"
    #: how long consent evidence is kept after the consent ends
    retention: Annotated[str, AfterValidator(_retention)] = "3y"

    @property
    def window_local(self) -> tuple[time, time]:
        """The send window as (start, end) local times; an end of 24:00 is midnight."""
        start, end = self.send_window.split("-")
        end_time = time(23, 59, 59, 999999) if end == "24:00" else time.fromisoformat(end)
        return time.fromisoformat(start), end_time

    @property
    def retention_years(self) -> int:
        return parse_retention(self.retention)


class Iys(_Section):
    base_url: str = "https://api.iys.org.tr"
    username: str
    password: str
    iys_code: str
    brand_code: str
    require_accepted: bool = True


def _default_channels() -> dict[str, Channel]:
    return {"email": Channel(url="outbox://outbox"), "sms": Channel(url="outbox://outbox")}


class Settings(_Section):
    """The whole validated configuration."""

    sender: Sender = Field(default_factory=Sender)
    database: Database = Field(default_factory=Database)
    broker: Broker = Field(default_factory=Broker)
    web: Web = Field(default_factory=Web)
    channels: dict[str, Channel] = Field(default_factory=_default_channels)
    policy: Policy = Field(default_factory=Policy)
    iys: Iys | None = None
    #: where the settings came from, for messages; not a key of the file
    source: str = Field(default="defaults", exclude=True)

    @field_validator("channels")
    @classmethod
    def _channels(cls, value: dict[str, Channel]) -> dict[str, Channel]:
        unknown = sorted(set(value) - {"email", "sms"})
        if unknown:
            raise ValueError(f"unknown channel section {unknown[0]!r}; use [channels.email] or [channels.sms]")
        return {**_default_channels(), **value}


def _describe(error: dict[str, Any]) -> tuple[str, str]:
    path = ".".join(str(p) for p in error["loc"])
    kind = error["type"]
    if kind == "extra_forbidden":
        return path, "unknown key; remove it or check its spelling against the README"
    if kind == "missing":
        return path, "is required in this section"
    message = error["msg"].removeprefix("Value error, ")
    return path, message


def _overrides(data: dict[str, Any]) -> dict[str, Any]:
    env = {
        ("database", "url"): os.environ.get("IZIN_DATABASE_URL"),
        ("broker", "url"): os.environ.get("IZIN_BROKER_URL"),
        ("web", "secret_key"): os.environ.get("IZIN_SECRET_KEY"),
    }
    for (section, key), value in env.items():
        if value is not None and value != "":
            data.setdefault(section, {})
            if not isinstance(data[section], dict):
                continue  # the validator will name the bad section
            data[section][key] = value
    return data


def load_settings(path: str | os.PathLike[str] | None = None) -> Settings:
    """Find, parse and validate the configuration; raise ConfigError naming file, key and fix."""
    explicit = path or os.environ.get("IZIN_CONFIG")
    file = Path(explicit) if explicit else Path(DEFAULT_FILE)
    data: dict[str, Any] = {}
    if file.is_file():
        try:
            # utf-8-sig: Windows editors save a BOM that TOML itself does not allow
            data = tomllib.loads(file.read_text(encoding="utf-8-sig"))
        except OSError as exc:
            raise ConfigError(f"cannot be read: {exc.strerror}", file=str(file)) from None
        except UnicodeDecodeError:
            raise ConfigError("is not UTF-8; save it as UTF-8", file=str(file)) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"not valid TOML: {exc}", file=str(file)) from None
    elif explicit:
        raise ConfigError("no such configuration file; check --config or IZIN_CONFIG", file=str(file))
    data = _overrides(data)
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        lines = [f"{file}: {path}: {message}" for path, message in map(_describe, exc.errors())]
        raise ConfigError("\n".join(lines)) from None
    return settings.model_copy(update={"source": str(file) if file.is_file() else "defaults"})
