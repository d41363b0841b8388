"""Marking messages sent: the marks of all a process's sending threads, committed in groups.

A thread that handed a message to a provider waits until its `sent` mark is committed before it
sends its next message; that keeps the duplicate window (a crash between the provider's
acceptance and the mark) one message wide per thread. Committing each mark on its own made the
database's commit the worker's limit: SQLite has one writer and waits for the disk at each
commit, and the threads spent 83% of their time waiting for each other's. Here one thread per
process writes the marks: those that arrive while a commit is under way go together in the next
one, so each thread still waits for its own mark to be durable, and the disk is waited for once
per group (what PostgreSQL itself does for concurrent commits, and SQLite does not).
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.exc import OperationalError

from izin.db import Database
from izin.errors import ServiceUnavailable

#: the most marks in one commit (a group is as large as the marks that queued during the last)
MAX_GROUP = 500
#: tries of a group's commit while the database is unreachable (0.5 s, doubling, between them)
ATTEMPTS = 5


#: writes a group's rows in the transaction open on the connection
Write = Callable[[Connection, list[Mapping[str, Any]]], None]
#: every GroupCommit made, to be reset in a forked child
_INSTANCES: weakref.WeakSet[GroupCommit] = weakref.WeakSet()


class GroupCommit:
    """Writes the rows of many threads' `record(row)` calls in one transaction; `record` returns
    once the caller's row is committed, or raises what stopped the commit."""

    def __init__(self, db: Database, write: Write, name: str = "izin-marks", one_statement: bool = False) -> None:
        """`one_statement`: `write` runs a single statement, which PostgreSQL then commits as it
        runs (Database.autocommit: one round trip instead of BEGIN, statement, COMMIT)."""
        self._db = db
        self._write_rows = write
        self._one_statement = one_statement
        self._name = name
        self._reset()
        _INSTANCES.add(self)

    def _reset(self) -> None:
        """Nothing queued and no writer: as made, and in a forked child, which has none of its
        parent's threads (and may have copied the lock held)."""
        self._queue: list[tuple[Mapping[str, Any], _Waiter]] = []
        self._lock = threading.Condition()
        self._writer: threading.Thread | None = None
        self._closing = False
        self._idle = False  # the writer waits for marks: the next one must wake it

    def record(self, row: Mapping[str, Any]) -> None:
        done = _Waiter()
        with self._lock:
            closing = self._closing
            if not closing:
                self._queue.append((row, done))
                if self._writer is None or not self._writer.is_alive():
                    writer = threading.Thread(target=self._write, name=self._name, daemon=True)
                    try:
                        writer.start()
                    except BaseException:
                        self._queue.remove((row, done))
                        raise
                    self._writer = writer
                if self._idle:
                    self._lock.notify()
        if closing:
            # the writer is stopping, and this is the mark of a message already sent: write it here
            self._commit(None, [row]).close()
            return
        done.result()

    def close(self) -> None:
        """Commit what is queued, then stop the writer."""
        with self._lock:
            self._closing = True
            writer, self._writer = self._writer, None
            self._lock.notify()
        if writer is not None:
            writer.join()
        with self._lock:
            self._closing = False

    def _write(self) -> None:
        connection = None
        while True:
            with self._lock:
                while not self._queue and not self._closing:
                    self._idle = True
                    self._lock.wait()
                    self._idle = False
                if not self._queue:
                    break
                group, self._queue = self._queue[:MAX_GROUP], self._queue[MAX_GROUP:]
            try:
                connection = self._commit(connection, [row for row, _ in group])
            except BaseException as exc:
                connection = None
                if len(group) > 1 and not isinstance(exc, ServiceUnavailable):
                    # a value one row carries that the database refuses must not lose the others
                    self._one_by_one(group)
                    continue
                for _, done in group:  # every waiter learns why its mark is not recorded
                    done.set_exception(exc)
            else:
                for _, done in group:
                    done.set_result(None)
        if connection is not None:
            connection.close()

    def _one_by_one(self, group: list[tuple[Mapping[str, Any], _Waiter]]) -> None:
        for row, done in group:
            try:
                self._commit(None, [row]).close()
            except BaseException as exc:
                done.set_exception(exc)
            else:
                done.set_result(None)

    def _commit(self, connection: Any, rows: list[Mapping[str, Any]]) -> Any:
        """One transaction for the rows, on the writer's connection (opened again after a failure);
        returns the connection to keep."""
        for attempt in range(ATTEMPTS):
            try:
                if connection is None:
                    connection = self._db.autocommit() if self._one_statement else self._db.engine.connect()
                with connection.begin():
                    self._write_rows(connection, rows)
                return connection
            except BaseException as exc:
                # a new connection next time: this one may hold a transaction (SQLite: the write lock)
                if connection is not None:
                    connection.invalidate()
                    connection.close()
                    connection = None
                if not isinstance(exc, OperationalError):
                    raise
                # a database that is down (restarting): try again once it is back
                if attempt == ATTEMPTS - 1:
                    raise ServiceUnavailable(f"database unreachable ({self._db.redacted_url}): {exc.orig}") from None
                time.sleep(0.5 * 2 ** attempt)
        raise AssertionError("unreachable")


class _Waiter:
    """One caller's wait for its row's commit: a held lock the writer releases (a Future's
    condition and callbacks cost the writer more than the row's own statement)."""

    __slots__ = ("_done", "_error")

    def __init__(self) -> None:
        self._done = threading.Lock()
        self._done.acquire()
        self._error: BaseException | None = None

    def set_result(self, _: None) -> None:
        self._done.release()

    def set_exception(self, error: BaseException) -> None:
        self._error = error
        self._done.release()

    def result(self) -> None:
        self._done.acquire()
        if self._error is not None:
            raise self._error


def _after_fork_in_child() -> None:
    for marks in list(_INSTANCES):
        marks._reset()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
