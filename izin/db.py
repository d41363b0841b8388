"""Engine, sessions, column types and migrations: the one place that knows SQLite from PostgreSQL.

SQLite (embedded default) runs in WAL mode and opens every transaction with BEGIN IMMEDIATE, so
writers queue on the database lock instead of failing half-way; PostgreSQL serialises the ledger
with a row lock on its head (see consent/ledger.py).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import (DateTime, Engine, MetaData, Table, any_, bindparam, create_engine, event, insert,
                        inspect, text, type_coerce)
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

from izin.errors import ConfigError, InputError, ServiceUnavailable

#: connections an engine keeps open, and as many more at a peak: a sending thread holds one for its
#: marks and takes another for its sessions (`izin worker --threads` up to 16)
POOL_SIZE = 20
#: how long a SQLite writer waits for the lock before giving up, in milliseconds
SQLITE_BUSY_TIMEOUT_MS = 30_000
#: how long SQLite's busy handler waits for the write lock at BEGIN before we try again
SQLITE_LOCK_POLL_MS = 2


class UTCDateTime(TypeDecorator[datetime]):
    """An aware datetime stored as naive UTC, so SQLite and PostgreSQL compare alike."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=timezone.utc)


def stored_utc(column: Any) -> Any:
    """A UTCDateTime column read as stored: a naive UTC datetime, for exports that write
    millions of them (the aware value costs two conversions per cell to undo again)."""
    return type_coerce(column, DateTime())


class Base(DeclarativeBase):
    """Declarative base of every izin table."""

    # stable constraint names, so migrations can alter them on both backends
    metadata = MetaData(naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    })


def _normalise_url(url: str) -> str:
    # psycopg 3 is the driver we ship; a bare postgresql:// would ask for psycopg2
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def make_engine(url: str) -> Engine:
    """Create an engine for a database URL, tuned per backend."""
    url = _normalise_url(url)
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(f"{url!r} is not a database URL; use sqlite:///izin.db or postgresql+psycopg://...",
                          field="database.url") from None
    if parsed.get_backend_name() == "sqlite":
        # as on PostgreSQL: a sending thread keeps a connection of its own besides its sessions
        # (an in-memory database is one connection per thread, with no pool to size)
        pool = {} if parsed.database in (None, "", ":memory:") else {"pool_size": POOL_SIZE,
                                                                     "max_overflow": POOL_SIZE}
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}, **pool)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(connection: Any) -> None:
            _begin_immediate(connection)

        return engine
    if parsed.get_backend_name() == "postgresql":
        # a connection per worker thread (izin worker --threads, up to 16) without overflow: an
        # overflow connection is closed on return, and a new PostgreSQL connection forks a backend
        return create_engine(url, pool_pre_ping=True, pool_size=POOL_SIZE, max_overflow=POOL_SIZE)
    raise ConfigError(f"unsupported database {parsed.get_backend_name()!r}; use sqlite or postgresql",
                      field="database.url")


def _begin_immediate(connection: Connection) -> None:
    """BEGIN IMMEDIATE, waiting for SQLite's write lock by trying again every few milliseconds.

    SQLite's own busy handler sleeps longer the longer it waits (25 to 100 ms per try after the
    first 50 ms), so under steady contention a waiter slept on while the lock was taken and given
    back many times: a worker's threads spent most of their time asleep with the lock free. The
    short timeout is set for the BEGIN only; every other statement keeps the long one.
    """
    dbapi = connection.connection.dbapi_connection
    assert dbapi is not None
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    dbapi.execute(f"PRAGMA busy_timeout={SQLITE_LOCK_POLL_MS}")
    try:
        while time.monotonic() < deadline:
            try:
                dbapi.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                # extended codes (SQLITE_BUSY_RECOVERY after a crash, ...) are busy too
                if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY:
                    break
            time.sleep(0.0005)
        connection.exec_driver_sql("BEGIN IMMEDIATE")  # raises what stopped it, as SQLAlchemy raises it
    finally:
        dbapi.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")


def refresh_statistics(session: Session, table: str) -> None:
    """Let the query planner know how a table grew, in the session's transaction.

    Without statistics SQLite walks the deliveries' status index (every sent row) for a worker's
    cap count instead of looking the contacts up (at 100,000 sent rows: 30 ms instead of 0.3 per
    batch); PostgreSQL's autovacuum refreshes them only a minute or more after a large insert.
    SQLite samples at most a thousand rows per index (a few ms).
    """
    quoted = session.get_bind().dialect.identifier_preparer.quote(table)
    if session.get_bind().dialect.name == "sqlite":
        session.execute(text("PRAGMA analysis_limit=1000"))
    session.execute(text(f"ANALYZE {quoted}"))


def insert_rows(session: Session, table: Table, rows: Sequence[Mapping[str, Any]],
                skip_conflicts: Sequence[str] = ()) -> None:
    """Insert many rows, every one with the same keys, in the session's transaction: COPY on
    PostgreSQL, the driver's executemany on SQLite, with each column's own bind processing (UTC
    datetimes, JSON) applied as SQLAlchemy applies it. `skip_conflicts` (SQLite only: COPY has
    no such clause) leaves out the rows whose values of these unique columns exist already.

    psycopg's executemany is a round trip per row and an INSERT with many VALUES is re-parsed per
    statement; COPY streams the rows. On SQLite, SQLAlchemy's per-row parameter handling costs
    more than SQLite's own insert.
    """
    if not rows:
        return
    connection = session.connection()
    dialect = connection.dialect
    columns = list(rows[0])
    processors = [(c, _reusing(table.c[c].type.dialect_impl(dialect).bind_processor(dialect))) for c in columns]
    quote = dialect.identifier_preparer.quote
    names = ", ".join(quote(c) for c in columns)
    values = ([process(row[c]) if process else row[c] for c, process in processors] for row in rows)
    if (dialect.name, dialect.driver) == ("postgresql", "psycopg"):
        if skip_conflicts:
            raise ValueError("COPY cannot skip conflicting rows: copy into a staging table instead")
        statement = f"COPY {quote(table.name)} ({names}) FROM STDIN"
        try:
            with connection.connection.dbapi_connection.cursor() as cursor, cursor.copy(statement) as copy:
                for row_values in values:
                    copy.write_row(row_values)
        except dialect.loaded_dbapi.Error as exc:
            # as SQLAlchemy raises it for its own statements (an IntegrityError for a unique key)
            raise DBAPIError.instance(statement, None, exc, dialect.loaded_dbapi.Error) from None
    elif (dialect.name, dialect.driver) == ("sqlite", "pysqlite"):
        # the same bind processing SQLAlchemy applies, without its per-row parameter bookkeeping;
        # through exec_driver_sql, so a constraint violation raises SQLAlchemy's IntegrityError
        conflict = f" ON CONFLICT ({', '.join(quote(c) for c in skip_conflicts)}) DO NOTHING" if skip_conflicts else ""
        connection.exec_driver_sql(
            f"INSERT INTO {quote(table.name)} ({names}) VALUES ({', '.join('?' * len(columns))}){conflict}",
            [tuple(row_values) for row_values in values])
    else:
        statement = insert(table)
        if skip_conflicts:
            statement = upsert_insert(session)(table).on_conflict_do_nothing(index_elements=list(skip_conflicts))
        connection.execute(statement, list(rows))


def _reusing(process: Callable[[Any], Any] | None) -> Callable[[Any], Any] | None:
    """A bind processor that answers the same object seen just before without processing it again:
    a batch's rows share their instants (`now`), and a UTC datetime costs two conversions."""
    if process is None:
        return None
    last: list[Any] = [object(), None]  # the last value given (never matches at first) and its answer

    def run(value: Any) -> Any:
        if value is not last[0]:
            last[0], last[1] = value, process(value)
        return last[1]

    return run


def one_of(session: Session, column: Any, values: Iterable[Any]) -> Any:
    """`column IN values` for a batch: one array parameter on PostgreSQL (psycopg re-parses a
    statement with a thousand placeholders every time), an ordinary IN list elsewhere."""
    values = list(values)
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import ARRAY

        return column == any_(bindparam(None, values, type_=ARRAY(column.type)))
    return column.in_(values)


def upsert_insert(session: Session) -> Any:
    """The dialect's INSERT, which has on_conflict_do_nothing / _do_update (SQLite and PostgreSQL)."""
    from sqlalchemy.dialects.postgresql import insert as pg_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert


def serialise(session: Session, name: str) -> None:
    """Hold the lock called `name` until the transaction ends: PostgreSQL's advisory lock (SQLite's
    BEGIN IMMEDIATE already lets one writer in at a time)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("select pg_advisory_xact_lock(hashtext(:name))"), {"name": name})


class Database:
    """An engine and its session factory."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self, durable: bool = True) -> Iterator[Session]:
        """A session whose transaction commits on success and rolls back on error.

        `durable=False` lets PostgreSQL acknowledge the commit before its WAL reaches the disk
        (synchronous_commit off for this transaction): a crash of the database may then lose
        it, never corrupt anything. For work that is safe to redo, such as a delivery's claim.
        """
        try:
            with self.sessions.begin() as session:
                if not durable and self.engine.dialect.name == "postgresql":
                    session.execute(text("SET LOCAL synchronous_commit TO OFF"))
                yield session
        except OperationalError as exc:
            if _is_unreachable(exc):
                raise ServiceUnavailable(f"database unreachable ({self.redacted_url}): {exc.orig}") from None
            raise

    def autocommit(self) -> Connection:
        """A new connection for single statements: call `commit()` after each. On PostgreSQL the
        statement commits as it runs (one round trip instead of BEGIN, statement, COMMIT)."""
        connection = self.engine.connect()
        if self.engine.dialect.name == "postgresql":
            return connection.execution_options(isolation_level="AUTOCOMMIT")
        return connection

    @property
    def redacted_url(self) -> str:
        return make_url(_normalise_url(self.url)).render_as_string(hide_password=True)

    def check_schema(self) -> None:
        """Refuse to work on a database that `izin init` has not brought to the current schema."""
        from alembic.runtime.migration import MigrationContext
        from alembic.script import ScriptDirectory

        try:
            with self.engine.connect() as connection:
                current = MigrationContext.configure(connection).get_current_revision()
        except OperationalError as exc:
            raise ServiceUnavailable(f"database unreachable ({self.redacted_url}): {exc.orig}") from None
        head = ScriptDirectory.from_config(alembic_config(self.url)).get_current_head()
        if current is None:
            raise InputError(f"the database {self.redacted_url} has no izin schema; run `izin init` first")
        if current != head:
            raise InputError(f"the database {self.redacted_url} is at schema {current}, this izin needs {head}; "
                             "run `izin init` to upgrade")

    def dispose(self) -> None:
        self.engine.dispose()


def _is_unreachable(exc: OperationalError) -> bool:
    text = str(exc.orig).lower()
    return any(s in text for s in ("connection refused", "could not connect", "unable to open database",
                                   "connection failed", "timeout expired", "server closed"))


def alembic_config(url: str) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    config.set_main_option("sqlalchemy.url", _normalise_url(url).replace("%", "%%"))
    return config


def upgrade(db: Database) -> tuple[str | None, str]:
    """Create or upgrade the schema to the newest migration; return (before, after) revisions."""
    from alembic import command
    from alembic.runtime.migration import MigrationContext

    config = alembic_config(db.url)
    try:
        with db.engine.begin() as connection:
            before = MigrationContext.configure(connection).get_current_revision()
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
            after = MigrationContext.configure(connection).get_current_revision()
    except OperationalError as exc:
        if _is_unreachable(exc):
            raise ServiceUnavailable(f"database unreachable ({db.redacted_url}): {exc.orig}") from None
        raise
    return before, after or ""


def table_names(db: Database) -> list[str]:
    return sorted(inspect(db.engine).get_table_names())
