"""GroupCommit: many threads' rows in one transaction, each caller back only once its row is
committed; and the sent marks it writes, fenced by the lease, on both backends."""

from __future__ import annotations

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


def test_rows_queued_during_a_commit_share_the_next_and_each_caller_returns_once_committed(db, table):
    commits: list[int] = []
    first_commit_may_end = threading.Event()

    def write(connection, rows):
        _insert(connection, rows)
        commits.append(len(rows))
        if len(commits) == 1:
            first_commit_may_end.wait(10)

    marks = GroupCommit(db, write)
    returned: list[int] = []

    def record(i):
        marks.record({"id": i, "thread": i})
        returned.append(i)

    first = threading.Thread(target=record, args=(0,))
    first.start()
    _wait_until(lambda: commits == [1])
    others = [threading.Thread(target=record, args=(i,)) for i in range(1, 16)]
    for thread in others:
        thread.start()
    _wait_until(lambda: len(marks._queue) == 15)
    assert returned == []  # nobody is back before the commit that holds their row
    first_commit_may_end.set()
    for thread in [first, *others]:
        thread.join(10)
    assert commits == [1, 15]
    assert sorted(returned) == list(range(16))
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


def test_sent_marks_are_written_only_under_the_lease_they_name(db, settings):
    for i in range(4):
        person(db, f"C{i}", phone=f"+90532111223{i}")
        consent(db, f"C{i}", "sms")
    ids = sorted(schedule(db, settings).ids)
    lease, sent_at = AT + timedelta(minutes=5, microseconds=250_001), AT + timedelta(seconds=1, microseconds=7)
    with db.session() as session:
        session.execute(update(Delivery).values(status="sending", lease_until=lease, attempts=1))
    rows = [{"delivery": ids[0], "lease": lease, "now": sent_at, "provider": "p-0", "parts": None},
            {"delivery": ids[1], "lease": lease, "now": sent_at, "provider": "", "parts": 2},
            # a lease that lapsed and went to another worker: this mark changes nothing
            {"delivery": ids[2], "lease": lease - timedelta(minutes=1), "now": sent_at, "provider": "p-2", "parts": 1}]
    with db.engine.begin() as connection:
        _write_sent(connection, rows)
    # as a worker writes them: one statement, committed as it runs on PostgreSQL
    marks = GroupCommit(db, _write_sent, one_statement=True)
    marks.record({"delivery": ids[3], "lease": lease, "now": sent_at, "provider": "p-3", "parts": 1})
    marks.close()
    with db.session() as session:
        stored = session.execute(select(Delivery.status, Delivery.sent_at, Delivery.provider_id, Delivery.segments,
                                        Delivery.attempts, Delivery.lease_until).order_by(Delivery.id)).all()
    assert [tuple(r) for r in stored] == [("sent", sent_at, "p-0", None, 2, None), ("sent", sent_at, "", 2, 2, None),
                                          ("sending", None, None, None, 1, lease), ("sent", sent_at, "p-3", 1, 2, None)]
