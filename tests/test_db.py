"""izin.db's batch helpers: insert_rows (COPY on PostgreSQL) and one_of, on both backends; how
SQLite writers wait for the write lock."""

from __future__ import annotations

import sqlite3
import threading
from datetime import date, datetime, timedelta, timezone

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, OperationalError

import izin.db

from izin.consent.models import Contact, ContactEvent
from izin.db import Database, insert_rows, one_of, upgrade

WHEN = datetime(2026, 11, 24, 9, 0, 0, 123456, tzinfo=timezone(timedelta(hours=3)))
#: text COPY must carry exactly: its escapes, separators and line ends, quotes, non-ASCII
AWKWARD = 'tab\there, new\nline, cr\r, back\\slash \\N, "quoted", \'single\', ş ğ İ ı, 😀, ,;|'


def test_insert_rows_round_trips_every_type(db):
    rows = [{"external_id": f"C{i}", "first_name": AWKWARD if i == 0 else None, "email": None,
             "phone": "+905321112233", "phone_mobile": i % 2 == 0, "birthday": date(1990, 2, 28) if i else None,
             "locale": "tr", "recipient_type": "BIREYSEL",
             "attributes": {"note": AWKWARD, "total": 1250.5, "visits": 3, "none": None, "list": [1, "a"]},
             "created_at": WHEN, "updated_at": WHEN + timedelta(microseconds=i)} for i in range(3)]
    with db.session() as session:
        insert_rows(session, Contact.__table__, rows)
        insert_rows(session, ContactEvent.__table__, [])  # nothing to insert is fine
    with db.session() as session:
        stored = session.execute(select(Contact.external_id, Contact.first_name, Contact.phone_mobile,
                                        Contact.birthday, Contact.attributes, Contact.created_at,
                                        Contact.updated_at).order_by(Contact.id)).all()
    assert [tuple(r) for r in stored] == [
        (f"C{i}", AWKWARD if i == 0 else None, i % 2 == 0, date(1990, 2, 28) if i else None,
         {"note": AWKWARD, "total": 1250.5, "visits": 3, "none": None, "list": [1, "a"]},
         WHEN, WHEN + timedelta(microseconds=i)) for i in range(3)]
    assert stored[0].created_at.tzinfo == timezone.utc


def test_one_of_matches_the_values_given(db):
    with db.session() as session:
        insert_rows(session, Contact.__table__, [
            {"external_id": e, "locale": "tr", "recipient_type": "BIREYSEL", "attributes": {}, "created_at": WHEN,
             "updated_at": WHEN} for e in ("A", "B", "C")])
    with db.session() as session:
        def found(values):
            return sorted(session.scalars(select(Contact.external_id).where(
                one_of(session, Contact.external_id, values))))

        assert found({"A", "C", "Z"}) == ["A", "C"]
        assert found(["B", None]) == ["B"]
        assert found([]) == []
        ids = sorted(session.scalars(select(Contact.id)))
        assert sorted(session.scalars(select(Contact.external_id).where(
            one_of(session, Contact.id, iter(ids[1:]))))) == ["B", "C"]


def _contact_rows(*external_ids: str, first_name: str = "Ada") -> list[dict[str, object]]:
    return [{"external_id": e, "first_name": first_name, "locale": "tr", "recipient_type": "BIREYSEL",
             "attributes": {}, "created_at": WHEN, "updated_at": WHEN} for e in external_ids]


def test_insert_rows_skips_rows_whose_unique_key_exists_on_sqlite_and_refuses_on_copy(db):
    with db.session() as session:
        insert_rows(session, Contact.__table__, _contact_rows("A", "B"))
    with db.session() as session:
        if session.get_bind().dialect.name == "postgresql":
            with pytest.raises(ValueError, match="COPY cannot skip"):
                insert_rows(session, Contact.__table__, _contact_rows("B", "C"), skip_conflicts=("external_id",))
            return
        insert_rows(session, Contact.__table__, _contact_rows("B", "C", first_name="Bea"),
                    skip_conflicts=("external_id",))
    with db.session() as session:
        assert session.execute(select(Contact.external_id, Contact.first_name).order_by(Contact.id)).all() == [
            ("A", "Ada"), ("B", "Ada"), ("C", "Bea")]


def test_insert_rows_raises_sqlalchemys_integrity_error_on_both_backends(db):
    with db.session() as session:
        insert_rows(session, Contact.__table__, _contact_rows("A"))
    with pytest.raises(IntegrityError), db.session() as session:
        insert_rows(session, Contact.__table__, _contact_rows("A"))


def _sqlite_lock_holder(path):
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    return holder


def test_a_sqlite_writer_waits_for_the_lock_and_takes_it_once_free(tmp_path):
    database = Database(f"sqlite:///{tmp_path / 'izin.db'}")
    upgrade(database)
    holder = _sqlite_lock_holder(tmp_path / "izin.db")
    wrote = threading.Event()

    def write():
        with database.session() as session:
            insert_rows(session, Contact.__table__, _contact_rows("A"))
        wrote.set()

    writer = threading.Thread(target=write)
    writer.start()
    assert not wrote.wait(0.3)  # the lock is held: the writer waits, it does not fail
    holder.execute("COMMIT")
    writer.join(10)
    assert wrote.is_set()
    with database.session() as session:
        assert session.scalars(select(Contact.external_id)).all() == ["A"]
    database.dispose()


def test_a_sqlite_writer_gives_up_after_the_busy_timeout_as_sqlalchemy_raises_it(tmp_path, monkeypatch):
    monkeypatch.setattr(izin.db, "SQLITE_BUSY_TIMEOUT_MS", 200)
    database = Database(f"sqlite:///{tmp_path / 'izin.db'}")
    upgrade(database)
    holder = _sqlite_lock_holder(tmp_path / "izin.db")
    with pytest.raises(OperationalError, match="database is locked"), database.session() as session:
        session.execute(select(Contact.id))
    holder.execute("COMMIT")
    with database.engine.connect() as connection:
        # the short wait was for the BEGIN only: every other statement keeps the whole timeout
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 200
    database.dispose()
