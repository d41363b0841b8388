"""Fixtures: a migrated database per test, on SQLite and on PostgreSQL.

A service-backed fixture skips with a one-line reason when its service is down, unless
IZIN_REQUIRE_SERVICES=1 (CI), where a missing service fails the test instead.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import datetime

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import create_engine, text

from izin.clock import parse_instant
from izin.db import Database, upgrade

REQUIRE_SERVICES = os.environ.get("IZIN_REQUIRE_SERVICES") == "1"
POSTGRES_URL = os.environ.get("IZIN_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
#: the instant most tests live at
NOW = "2026-11-24T12:00:00+03:00"


def service_missing(name: str, reason: object) -> None:
    """Skip (laptop) or fail (CI) a test whose service is down."""
    first_line = str(reason).strip().splitlines()[0] if str(reason).strip() else "no answer"
    if REQUIRE_SERVICES:
        pytest.fail(f"{name} is required (IZIN_REQUIRE_SERVICES=1) but unreachable: {first_line}")
    pytest.skip(f"{name} not reachable ({first_line}); CI runs this with IZIN_REQUIRE_SERVICES=1")


@pytest.fixture(scope="session")
def postgres_available() -> str | None:
    """None when PostgreSQL answers, else why not."""
    engine = create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as connection:
            connection.execute(text("select 1"))
    except Exception as exc:  # any driver error means: not available here
        return str(exc)
    finally:
        engine.dispose()
    return None


@pytest.fixture
def postgres_url(postgres_available: str | None) -> Iterator[str]:
    """A URL whose search_path is a fresh schema, dropped afterwards."""
    if postgres_available is not None:
        service_missing("PostgreSQL", postgres_available)
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as connection:
        connection.execute(text(f'create schema "{schema}"'))
    separator = "&" if "?" in POSTGRES_URL else "?"
    yield f"{POSTGRES_URL}{separator}options=-csearch_path%3D{schema}"
    with admin.begin() as connection:
        connection.execute(text(f'drop schema "{schema}" cascade'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path) -> str:
    """Every database test runs on both backends."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'izin.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database(db_url)
    upgrade(database)
    yield database
    database.dispose()


@pytest.fixture
def now() -> datetime:
    return parse_instant(NOW)


class Cli:
    """Runs `izin` in-process against one database, at a fixed instant, in a temporary directory."""

    def __init__(self, db_url: str, cwd, monkeypatch: pytest.MonkeyPatch) -> None:
        self.cwd = cwd
        monkeypatch.chdir(cwd)
        monkeypatch.setenv("IZIN_DATABASE_URL", db_url)
        monkeypatch.setenv("IZIN_NOW", NOW)
        monkeypatch.setenv("IZIN_SECRET_KEY", "test-secret")
        monkeypatch.delenv("IZIN_CONFIG", raising=False)
        monkeypatch.delenv("IZIN_BROKER_URL", raising=False)
        self.runner = CliRunner()

    def __call__(self, *args: str, expect: int = 0, env: dict[str, str] | None = None) -> Result:
        from izin.cli import cli

        result = self.runner.invoke(cli, list(args), env=env, catch_exceptions=False)
        assert result.exit_code == expect, (
            f"izin {' '.join(args)} exited {result.exit_code}, expected {expect}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}")
        return result


@pytest.fixture
def cli(db: Database, tmp_path, monkeypatch: pytest.MonkeyPatch) -> Cli:
    """The CLI on a migrated database (both backends)."""
    return Cli(db.url, tmp_path, monkeypatch)


def add_contact(db: Database, external_id: str, *, email: str | None = None, phone: str | None = None,
                mobile: bool = True, recipient_type: str = "BIREYSEL", when: datetime | None = None) -> int:
    """Insert one contact directly; return its id."""
    from izin.consent.models import Contact

    when = when or parse_instant(NOW)
    with db.session() as session:
        contact = Contact(external_id=external_id, email=email, phone=phone,
                          phone_mobile=mobile if phone else None, recipient_type=recipient_type,
                          locale="tr", attributes={}, created_at=when, updated_at=when)
        session.add(contact)
        session.flush()
        return contact.id


REDIS_URL = os.environ.get("IZIN_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A Redis database emptied before and after the test."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except Exception as exc:  # any client error means: not available here
        service_missing("Redis", exc)
    client.flushdb()
    yield REDIS_URL
    client.flushdb()
    client.close()


#: a complete sender identity, as izin.toml text
SENDER_TOML = """\
[sender]
name = "Örnek Ticaret A.Ş."
mersis = "0123456789000015"
phone = "+90 212 555 00 00"
email = "destek@ornek.com.tr"
sms_header = "ORNEKTIC"
sms_optout = "RET yazip 4609'a gonderin"
"""


@pytest.fixture
def settings(tmp_path):
    """Settings with a complete sender and both channels into tmp_path/outbox."""
    from izin.config import Settings

    outbox = tmp_path / "outbox"
    return Settings.model_validate({
        "sender": {"name": "Örnek Ticaret A.Ş.", "mersis": "0123456789000015", "phone": "+90 212 555 00 00",
                   "email": "destek@ornek.com.tr", "sms_header": "ORNEKTIC",
                   "sms_optout": "RET yazip 4609'a gonderin"},
        "channels": {"email": {"url": f"outbox://{outbox}"}, "sms": {"url": f"outbox://{outbox}"}},
        "web": {"secret_key": "test-secret"},
    })


@pytest.fixture
def web(db, settings):
    """The `izin serve` application on the test database, at NOW, as an in-process HTTP client."""
    from starlette.testclient import TestClient

    from izin.consent.web.app import create_app

    config = settings.model_copy(update={"web": settings.web.model_copy(update={
        "base_url": "http://127.0.0.1:8000", "webhook_secret": "hook-secret", "rate_limit_per_minute": 30})})
    app = create_app(config, db, now=lambda: parse_instant(NOW))
    with TestClient(app, base_url="http://127.0.0.1:8000") as client:
        yield client
