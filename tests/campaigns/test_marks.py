"""GroupCommit: many threads' rows in one transaction, each caller back only once its row is
committed; and the sent marks it writes, fenced by the lease, on both backends."""

from __future__ import annotations

import os
import signal
import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, insert, select, update
from sqlalchemy.exc import IntegrityError

from izin.campaigns.deliver import _write_sent
from izin.campaigns.marks import GroupCommit
from izin.campaigns.models import Delivery
from tests.campaigns.support import AT, consent, person, schedule

_METADATA = MetaData()
_ROWS = Table("group_commit_rows", _METADATA, Column("id", Integer, primary_key=True), Column("thread", Integer))


def _insert(connection, rows):
    connection.execute(insert(_ROWS), list(rows))


def _wait_until(condition, timeout_s=10.0):
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.fixture
def table(db):
    _METADATA.create_all(db.engine)
    yield _ROWS
    _METADATA.drop_all(db.engine)


def _held_first_commit(db, kind=GroupCommit):
    """A GroupCommit whose first commit waits for the returned event: what is recorded meanwhile
    queues for the next group."""
    commits: list[int] = []
    release = threading.Event()

    def held(connection, rows):
        commits.append(len(rows))
        _insert(connection, rows)
        if len(commits) == 1:
            release.wait(10)

    marks = kind(db, held)
    first = threading.Thread(target=marks.record, args=({"id": 0, "thread": 0},))
    first.start()
    _wait_until(lambda: commits == [1])
    return marks, release, first, commits


def test_rows_queued_during_a_commit_share_the_next_and_each_caller_returns_once_committed(db, table):
    marks, release, first, commits = _held_first_commit(db)
    returned: list[int] = []

    def record(i):
        marks.record({"id": i, "thread": i})
        returned.append(i)

    others = [threading.Thread(target=record, args=(i,)) for i in range(1, 16)]
    for thread in others:
        thread.start()
    _wait_until(lambda: len(marks._queue) == 15)
    assert returned == []  # nobody is back before the commit that holds their row
    release.set()
    for thread in [first, *others]:
        thread.join(10)
    assert commits == [1, 15]
    assert sorted(returned) == list(range(1, 16))
    with db.engine.connect() as connection:
        assert sorted(connection.scalars(select(table.c.id))) == list(range(16))
    marks.close()


def test_a_failed_commit_raises_in_every_caller_of_its_group_and_the_writer_goes_on(db, table):
    marks = GroupCommit(db, _insert)
    marks.record({"id": 1, "thread": 0})
    with pytest.raises(IntegrityError):
        marks.record({"id": 1, "thread": 1})  # the key exists: the transaction is rolled back
    marks.record({"id": 2, "thread": 2})
    marks.close()
    marks.record({"id": 3, "thread": 3})  # a closed writer starts again when asked
    marks.close()
    with db.engine.connect() as connection:
        assert connection.execute(select(table.c.id, table.c.thread).order_by(table.c.id)).all() == [
            (1, 0), (2, 2), (3, 3)]


def test_a_row_the_database_refuses_fails_its_own_caller_and_not_the_others_of_its_group(db, table):
    marks, release, first, _ = _held_first_commit(db)
    errors: dict[int, BaseException | None] = {}

    def record(i, key):
        try:
            marks.record({"id": key, "thread": i})
            errors[i] = None
        except BaseException as exc:
            errors[i] = exc

    threads = [threading.Thread(target=record, args=(i, key)) for i, key in ((1, 1), (2, 0), (3, 3))]
    for thread in threads:
        thread.start()
    _wait_until(lambda: len(marks._queue) == 3)
    release.set()
    for thread in [first, *threads]:
        thread.join(10)
    assert errors[1] is None and errors[3] is None
    assert isinstance(errors[2], IntegrityError)  # id 0 exists: only this one fails
    with db.engine.connect() as connection:
        assert sorted(connection.scalars(select(table.c.id))) == [0, 1, 3]
    marks.close()


def test_a_mark_recorded_while_the_writer_closes_is_written_all_the_same(db, table):
    own_commits: list[list] = []

    class Watched(GroupCommit):
        def _commit(self, connection, rows):
            if connection is None and threading.current_thread().name != "izin-marks":
                own_commits.append(rows)  # on the recording thread's own connection
            return super()._commit(connection, rows)

    marks, release, first, _ = _held_first_commit(db, Watched)
    closer = threading.Thread(target=marks.close)
    closer.start()
    _wait_until(lambda: marks._closing)
    late = threading.Thread(target=marks.record, args=({"id": 7, "thread": 7},))
    late.start()
    _wait_until(lambda: own_commits)  # not refused: written on its own (SQLite: once the lock is free)
    release.set()
    for thread in (first, closer, late):
        thread.join(10)
    assert own_commits == [[{"id": 7, "thread": 7}]]
    with db.engine.connect() as connection:
        assert sorted(connection.scalars(select(table.c.id))) == [0, 7]


def test_a_forked_child_records_with_a_writer_of_its_own(db, table):
    marks = GroupCommit(db, _insert)
    marks.record({"id": 1, "thread": 0})  # the parent's writer is running
    child = os.fork()
    if child == 0:  # pragma: no cover (the child's outcome is its exit status)
        signal.alarm(10)  # a child that hangs waiting for its parent's writer dies instead
        try:
            db.engine.dispose(close=False)  # the parent's connections are the parent's
            marks.record({"id": 2, "thread": 1})
            os._exit(0)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    marks.close()
    with db.engine.connect() as connection:
        assert sorted(connection.scalars(select(table.c.id))) == [1, 2]


def test_sent_marks_are_written_only_under_the_lease_they_name(db, settings):
    for i in range(4):
        person(db, f"C{i}", phone=f"+90532111223{i}")
        consent(db, f"C{i}", "sms")
    ids = sorted(schedule(db, settings).ids)
    lease, sent_at = AT + timedelta(minutes=5, microseconds=250_001), AT + timedelta(seconds=1, microseconds=7)
    with db.session() as session:
        session.execute(update(Delivery).values(status="sending", lease_until=lease, attempts=1))
    # provider ids as providers may write them: quotes, backslashes, commas, braces, the word NULL
    tricky = 'p"0\\,{x} y'
    rows = [{"delivery": ids[0], "lease": lease, "now": sent_at, "provider": tricky, "parts": None},
            {"delivery": ids[1], "lease": lease, "now": sent_at, "provider": "", "parts": 2},
            # a lease that lapsed and went to another worker: this mark changes nothing
            {"delivery": ids[2], "lease": lease - timedelta(minutes=1), "now": sent_at, "provider": "p-2", "parts": 1}]
    with db.engine.begin() as connection:
        _write_sent(connection, rows)
    # as a worker writes them: one statement, committed as it runs on PostgreSQL
    marks = GroupCommit(db, _write_sent, one_statement=True)
    marks.record({"delivery": ids[3], "lease": lease, "now": AT, "provider": "NULL", "parts": 1})
    marks.close()
    with db.session() as session:
        stored = session.execute(select(Delivery.status, Delivery.sent_at, Delivery.provider_id, Delivery.segments,
                                        Delivery.attempts, Delivery.lease_until).order_by(Delivery.id)).all()
    assert [tuple(r) for r in stored] == [("sent", sent_at, tricky, None, 2, None), ("sent", sent_at, "", 2, 2, None),
                                          ("sending", None, None, None, 1, lease), ("sent", AT, "NULL", 1, 2, None)]
