"""Distributed mode for real: dramatiq's Redis broker, the scheduler's locks, two schedulers at once."""

from __future__ import annotations

import threading
from datetime import timedelta

import dramatiq
import pytest
from sqlalchemy import func, select

from izin.campaigns import actors
from izin.campaigns.models import Delivery
from izin.campaigns.runner import SCHEDULER_LEASE, SchedulerLock, drain_broker, enqueue_due
from izin.clock import parse_instant as T
from support import AT, CAMPAIGN, consent, person, schedule, snapshot


@pytest.fixture
def crowd(db):
    person(db, "ayse", email="ayse@example.com", phone="+905320000001")
    person(db, "mehmet", email="mehmet@example.com")
    person(db, "zeynep", email="zeynep@example.com")
    consent(db, "ayse", "sms")
    consent(db, "mehmet", "email")
    return db


def test_redis_broker_carries_deliveries_to_the_workers(crowd, settings, redis_url, monkeypatch):
    from conftest import NOW

    monkeypatch.setenv("IZIN_NOW", NOW)  # the worker judges the send window by the clock
    db = crowd
    distributed = settings.model_copy(update={"broker": settings.broker.model_copy(update={"url": redis_url}),
                                              "database": settings.database.model_copy(update={"url": db.url})})
    schedule(db, distributed)
    actors.configure(distributed, now=lambda: AT)
    assert enqueue_due(db, AT) == 2
    assert enqueue_due(db, AT) == 0  # enqueued a moment ago: not again
    import redis
    client = redis.Redis.from_url(redis_url)
    # dramatiq's Redis queue holds one message carrying the two ids
    assert client.llen(f"dramatiq:{actors.QUEUE}") == 1
    [message] = [dramatiq.Message.decode(m) for m in client.hvals(f"dramatiq:{actors.QUEUE}.msgs")]
    with db.session() as session:
        ids = sorted(session.scalars(select(Delivery.id)))
    assert (message.actor_name, message.args) == ("send_deliveries", (ids,))
    actors.configure(distributed, now=lambda: AT)  # a fresh worker process would read the same config
    drain_broker(distributed, threads=2)
    actors.reset()
    assert snapshot(db) == [("ayse", "sent", None, "sms"), ("mehmet", "sent", None, "email")]
    # a lost message: the row is re-enqueued from the table once REENQUEUE_AFTER has passed
    with db.session() as session:
        session.execute(Delivery.__table__.update().values(status="scheduled", sent_at=None))
    later = T("2026-11-24T12:11:00+03:00")
    actors.configure(distributed, now=lambda: later)
    assert enqueue_due(db, later) == 2
    client.delete(f"dramatiq:{actors.QUEUE}", f"dramatiq:{actors.QUEUE}.msgs")
    actors.reset()


def test_database_lock_admits_one_scheduler(db):
    first, second = SchedulerLock(db, ""), SchedulerLock(db, "")
    assert first.acquire(AT) is True
    assert second.acquire(AT) is False
    assert first.acquire(AT + SCHEDULER_LEASE / 2) is True  # renewing its own lease
    assert second.acquire(AT + SCHEDULER_LEASE) is False
    # the first died: once its last renewal's lease has run out, the second takes over
    assert second.acquire(AT + SCHEDULER_LEASE / 2 + SCHEDULER_LEASE + timedelta(seconds=1)) is True
    first.release()
    assert second.acquire(AT + 3 * SCHEDULER_LEASE) is True


def test_redis_lock_admits_one_scheduler(db, redis_url):
    first, second = SchedulerLock(db, redis_url), SchedulerLock(db, redis_url)
    assert first.acquire(AT) is True
    assert second.acquire(AT) is False
    assert first.acquire(AT) is True
    first.release()
    assert second.acquire(AT) is True
    second.release()


def test_two_schedulers_at_once_create_each_delivery_once(crowd, settings, tmp_path, monkeypatch):
    """Two scheduler ticks racing (as if both held the lock): the unique key keeps one row each."""
    db = crowd
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def tick() -> None:
        try:
            barrier.wait()
            schedule(db, settings)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=tick) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(Delivery)) == 2


def test_scheduler_cli_tick_schedules_and_sends(crowd, tmp_path, monkeypatch):
    from conftest import SENDER_TOML, Cli

    db = crowd
    folder = tmp_path / "campaigns"
    folder.mkdir()
    (folder / "dogum-gunu.yaml").write_text(CAMPAIGN, encoding="utf-8")
    (folder / "broken.yaml").write_text("name: Broken\n", encoding="utf-8")
    (tmp_path / "izin.toml").write_text(
        SENDER_TOML + f'[channels.email]\nurl = "outbox://{tmp_path / "outbox"}"\n[channels.sms]\nurl = "outbox://{tmp_path / "outbox"}"\n',
        encoding="utf-8")
    cli = Cli(db.url, tmp_path, monkeypatch)
    result = cli("scheduler", "--campaigns", str(folder), "--once")
    assert result.stdout == "tick 2026-11-24T12:00:00+03:00: 2 created, 2 handled\n"
    assert "broken.yaml:1:7: name:" in result.stderr
    assert snapshot(db) == [("ayse", "sent", None, "sms"), ("mehmet", "sent", None, "email")]
    again = cli("scheduler", "--campaigns", str(folder), "--once")
    assert again.stdout == "tick 2026-11-24T12:00:00+03:00: 0 created, 0 handled\n"
    assert len(list((tmp_path / "outbox").iterdir())) == 2


def test_pipelined_enqueue_gives_workers_every_message_once(redis_url, settings):
    """send_many pushes through Redis pipelines (PIPELINE_MESSAGES at a time): messages arrive
    whole, in order, each once, and a dramatiq worker runs them as if sent one by one."""
    import dramatiq
    import redis
    from dramatiq.brokers.redis import RedisBroker

    broker = RedisBroker(url=redis_url, namespace="izin-test-pipeline")
    seen: list[int] = []
    lock = threading.Lock()

    def record(delivery_id: int) -> None:
        with lock:
            seen.append(delivery_id)

    actor = dramatiq.Actor(record, broker=broker, actor_name="record", queue_name="pipeline", priority=0, options={})
    ids = list(range(1, 2 * actors.PIPELINE_MESSAGES + 351))
    assert actors.send_many(actor, ids) == len(ids)
    client = redis.Redis.from_url(redis_url)
    assert client.llen("izin-test-pipeline:pipeline") == len(ids)
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=100)
    worker.start()
    try:
        broker.join("pipeline", timeout=60_000)
        worker.join()
    finally:
        worker.stop()
    assert seen == ids
    assert actors.send_many(actor, []) == 0
