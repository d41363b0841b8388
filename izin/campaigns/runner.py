"""Running the pipeline: embedded draining, enqueueing from the table, and the scheduler loop.

The database decides what is due; the broker only carries delivery ids. The scheduler enqueues
every due row that has not been enqueued in the last `REENQUEUE_AFTER`, so a message the broker
lost is sent again from the table, and a duplicate message finds its row already claimed.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import dramatiq
from sqlalchemy import func, select, update

from izin.campaigns import actors
from izin.campaigns.models import Delivery, Lock
from izin.campaigns.schedule import due_ids
from izin.config import Settings
from izin.db import Database, upsert_insert

#: a due row whose message was sent longer ago than this and is still not taken is enqueued again
REENQUEUE_AFTER = timedelta(minutes=10)
#: how long the scheduler's lock lasts without renewal; a dead scheduler is replaced after this
SCHEDULER_LEASE = timedelta(seconds=90)
#: ids enqueued or processed per round
_ROUND = 1_000


def enqueue_due(db: Database, now: datetime) -> int:
    """Send a broker message for every due delivery not enqueued recently; return how many."""
    with db.session() as session:
        ids = due_ids(session, now, enqueued_before=now - REENQUEUE_AFTER)
        for start in range(0, len(ids), _ROUND):
            chunk = ids[start:start + _ROUND]
            session.execute(update(Delivery).where(Delivery.id.in_(chunk)).values(enqueued_at=now))
    return actors.enqueue_deliveries(ids)


def status_counts(db: Database, ids: list[int]) -> Counter[str]:
    """How the given deliveries stand, as 'status' or 'status:reason'."""
    counts: Counter[str] = Counter()
    with db.session() as session:
        for start in range(0, len(ids), _ROUND):
            for status, reason, n in session.execute(
                    select(Delivery.status, Delivery.reason, func.count()).where(
                        Delivery.id.in_(ids[start:start + _ROUND])).group_by(Delivery.status, Delivery.reason)):
                counts[f"{status}:{reason}" if reason else status] += n
    return counts


def drain_embedded(db: Database, settings: Settings, now: Callable[[], datetime],
                   threads: int = 2, progress: Callable[[int], None] | None = None,
                   due_by: datetime | None = None) -> list[int]:
    """Process every delivery due now in this process through dramatiq's Worker on a StubBroker.

    `now` is the sender's clock: consent, caps and windows are judged, and sends recorded, by it.
    `due_by` (default: now) picks which deliveries to take, for `campaign run --at`. Repeats until
    nothing is due: a delivery deferred to later waits for a later run. Returns the ids it handled.
    """
    broker = actors.configure(settings, now, db)
    actors.sender()  # adapters are built here: a configuration error stops us before any claim
    worker = dramatiq.Worker(broker, queues={actors.QUEUE}, worker_threads=threads, worker_timeout=100)
    worker.start()
    handled: list[int] = []
    try:
        seen: set[int] = set()
        while True:
            with db.session() as session:
                ids = [i for i in due_ids(session, due_by or now(), limit=_ROUND) if i not in seen]
            if not ids:
                break
            seen.update(ids)
            actors.enqueue_deliveries(ids)
            broker.join(actors.QUEUE, fail_fast=True)
            worker.join()
            handled.extend(ids)
            if progress:
                progress(len(handled))
    finally:
        worker.stop()
        actors.reset()
    return handled


def drain_broker(settings: Settings, threads: int = 4) -> None:
    """Process the Redis queue in this process until it is empty (`izin worker --burst` with a broker)."""
    broker = actors.configure(settings)
    actors.sender()
    worker = dramatiq.Worker(broker, queues={actors.QUEUE, actors.IYS_QUEUE}, worker_threads=threads,
                             worker_timeout=100)
    worker.start()
    try:
        broker.join(actors.QUEUE)
        broker.join(actors.IYS_QUEUE)
        worker.join()
    finally:
        worker.stop()


@dataclass
class SchedulerLock:
    """One active scheduler: a lease in Redis when a broker is set, else a row in the database."""

    db: Database
    redis_url: str
    holder: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}")
    name: str = "izin:scheduler"

    def acquire(self, now: datetime) -> bool:
        """Take or renew the lease; False when another live scheduler holds it."""
        if self.redis_url:
            return self._acquire_redis()
        return self._acquire_db(now)

    def _acquire_redis(self) -> bool:
        import redis

        client = redis.Redis.from_url(self.redis_url)
        try:
            ttl_ms = int(SCHEDULER_LEASE.total_seconds() * 1000)
            if client.set(self.name, self.holder, nx=True, px=ttl_ms):
                return True
            # renew only our own lease, atomically
            renewed = client.eval("if redis.call('get', KEYS[1]) == ARGV[1] then "
                                  "return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end",
                                  1, self.name, self.holder, ttl_ms)
            return bool(renewed)
        finally:
            client.close()

    def _acquire_db(self, now: datetime) -> bool:
        with self.db.session() as session:
            statement = upsert_insert(session)(Lock).values(name=self.name, holder=self.holder, expires_at=now + SCHEDULER_LEASE)
            statement = statement.on_conflict_do_update(
                index_elements=["name"],
                set_={"holder": self.holder, "expires_at": now + SCHEDULER_LEASE},
                where=(Lock.holder == self.holder) | (Lock.expires_at < now))
            session.execute(statement)
            holder = session.scalar(select(Lock.holder).where(Lock.name == self.name))
        return holder == self.holder

    def release(self) -> None:
        if self.redis_url:
            import redis

            client = redis.Redis.from_url(self.redis_url)
            client.eval("if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) "
                        "else return 0 end", 1, self.name, self.holder)
            client.close()
            return
        with self.db.session() as session:
            session.execute(Lock.__table__.delete().where(Lock.name == self.name, Lock.holder == self.holder))


def campaign_files(folder: str | os.PathLike[str]) -> list[Path]:
    """The campaign YAML files of a folder, in name order."""
    root = Path(folder)
    return sorted([*root.glob("*.yaml"), *root.glob("*.yml")])


def sleep_until_next_tick(interval_s: float, started: float) -> None:
    time.sleep(max(0.0, interval_s - (time.monotonic() - started)))
