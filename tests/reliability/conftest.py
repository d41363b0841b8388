"""The reliability suite: faults, races, hostile input and load.

Every scenario reports what it tried and what it found through the `findings` fixture; the lines
are printed at the end of the run (and appended as JSON to $IZIN_RELIABILITY_REPORT when set, which
is how docs/reliability.md gets its figures). Heavier variants are marked `heavy` and run only with
`-m heavy` (or IZIN_HEAVY=1).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import pytest

from izin.db import Database, upgrade

_FINDINGS: list[dict[str, Any]] = []


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    asked = "heavy" in (config.getoption("-m") or "") or os.environ.get("IZIN_HEAVY") == "1"
    if asked:
        return
    skip = pytest.mark.skip(reason="heavy variant: run with -m heavy or IZIN_HEAVY=1")
    for item in items:
        if "heavy" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def findings(request: pytest.FixtureRequest) -> Callable[..., None]:
    """Record one scenario's figures: findings("what was tried", attempts=10, lost=0, ...)."""

    def record(scenario: str, **figures: Any) -> None:
        entry = {"test": request.node.nodeid, "scenario": scenario, **figures}
        _FINDINGS.append(entry)
        path = os.environ.get("IZIN_RELIABILITY_REPORT")
        if path:
            with open(path, "a", encoding="utf-8") as out:
                out.write(json.dumps(entry, ensure_ascii=False) + "\n")

    return record


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _FINDINGS:
        return
    terminalreporter.section("reliability findings")
    for entry in _FINDINGS:
        figures = ", ".join(f"{k}={v}" for k, v in entry.items() if k not in ("test", "scenario"))
        terminalreporter.write_line(f"{entry['scenario']}: {figures}")


@pytest.fixture(scope="session")
def private_redis():
    """A redis-server of our own that a test may restart (the shared one must never be touched)."""
    from .harness import PrivateRedis

    server = PrivateRedis()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def private_postgres():
    """A PostgreSQL cluster of our own that a test may restart, made once per session."""
    from .harness import PrivatePostgres

    server = PrivatePostgres()
    server.start()
    yield server
    server.destroy()


@pytest.fixture
def private_db(private_postgres):
    """A fresh, migrated database on the private cluster; its URL is `.url`."""
    import uuid

    from sqlalchemy import create_engine, text

    from izin.db import Database, upgrade

    name = f"r_{uuid.uuid4().hex[:10]}"
    admin = create_engine(private_postgres.url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'create database "{name}"'))
    database = Database(private_postgres.url.rsplit("/", 1)[0] + f"/{name}")
    upgrade(database)
    yield database
    database.dispose()
    admin.dispose()  # its pooled connection may predate a restart of the cluster
    with admin.connect() as connection:
        connection.execute(text(f'drop database if exists "{name}" with (force)'))
    admin.dispose()


@pytest.fixture
def pg(postgres_url):
    """A migrated database on the shared PostgreSQL (a fresh schema), for the distributed runs."""
    database = Database(postgres_url)
    upgrade(database)
    yield database
    database.dispose()
