"""dramatiq wiring: the broker and the actors, `send_deliveries(delivery_ids)` and `iys_push()`.

The broker comes from `[broker] url` / IZIN_BROKER_URL: a Redis URL gives dramatiq's RedisBroker
(distributed mode, `izin worker` processes anywhere); empty gives a StubBroker that the embedded
mode drains in-process with dramatiq's own Worker. A message carries only delivery ids, up to
BATCH of them, which the worker claims, checks and renders in one transaction: the rows are the
truth, and a duplicate message finds them already claimed.

`dramatiq izin.campaigns.actors` imports this module in every worker process, so configuration
is read here, once per process.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any
from uuid import uuid4

import dramatiq
from dramatiq.brokers.stub import StubBroker

from izin import clock
from izin.config import Settings, load_settings
from izin.errors import ConfigError, ServiceUnavailable

#: the queue every delivery message goes to
QUEUE = "izin-deliveries"
#: the queue of İYS uploads
IYS_QUEUE = "izin-iys"
#: messages pushed to Redis per pipeline round trip
PIPELINE_MESSAGES = 1_000
#: delivery ids per message: a worker's claim, consent re-check and cap count serve them all
#: at once (per-message transactions cost about ten database round trips each)
BATCH = 50
#: dramatiq's time limit of one message (its default is 10 minutes)
TIME_LIMIT_MS = 60 * 60 * 1000
#: dramatiq retries only for unexpected failures (a database outage); channel errors are
#: retried through the delivery row's own schedule
MAX_RETRIES = 10

_lock = threading.Lock()
_sender: Any = None


def make_broker(url: str) -> dramatiq.Broker:
    """The broker for a URL: Redis for redis:// and rediss://, a StubBroker for ''."""
    if not url:
        return StubBroker()
    if url.startswith(("redis://", "rediss://", "unix://")):
        import redis
        from dramatiq.brokers.redis import RedisBroker

        broker = RedisBroker(url=url)
        try:
            broker.client.ping()
        except redis.exceptions.RedisError as exc:
            raise ServiceUnavailable(f"broker unreachable ({_redacted(url)}): {exc}") from None
        return broker
    raise ConfigError(f"unsupported broker URL {url.split('://')[0]}://...; use redis://host:6379/0, or leave "
                      "it empty for embedded mode", field="broker.url")


def _redacted(url: str) -> str:
    from izin.channels.base import redact_url

    return redact_url(url)


def configure(settings: Settings, now: Callable[[], datetime] = clock.now, db: Any = None) -> dramatiq.Broker:
    """Set the process's broker from settings and declare the actor on it.

    `now` is the clock the sender judges windows and caps by (a fixed instant for `run --at`);
    `db` an open Database to share (the embedded mode), else one is made from the settings.
    """
    global send_deliveries, send_delivery, iys_push, _settings, _now, _db
    reset()
    _settings, _now, _db = settings, now, db
    broker = make_broker(settings.broker.url)
    dramatiq.set_broker(broker)
    # embedded runs drain the queue and return: an unexpected error surfaces at once, not after backoff
    retries = MAX_RETRIES if settings.broker.url else 0
    # dramatiq's time limit interrupts a thread wherever it is, an adapter call included (a message
    # the provider took, never marked): far above what a batch may take (BATCH_MAX_SECONDS)
    send_deliveries = dramatiq.actor(_send_deliveries, actor_name="send_deliveries", queue_name=QUEUE,
                                     max_retries=retries, min_backoff=1_000, max_backoff=300_000,
                                     time_limit=TIME_LIMIT_MS, broker=broker)
    # messages of one id each, as izin before batching enqueued them, are still taken
    send_delivery = dramatiq.actor(_send_delivery, actor_name="send_delivery", queue_name=QUEUE,
                                   max_retries=retries, min_backoff=1_000, max_backoff=300_000,
                                   broker=broker)
    # İYS uploads run on workers too, on their own queue so a slow İYS never delays a greeting
    iys_push = dramatiq.actor(_iys_push, actor_name="iys_push", queue_name=IYS_QUEUE, max_retries=retries,
                              min_backoff=30_000, max_backoff=900_000, broker=broker)
    return broker


def enqueue_deliveries(ids: Iterable[int], batch: int = BATCH) -> int:
    """Enqueue `send_deliveries` messages for these delivery ids, `batch` ids per message, in the
    order given; return how many ids."""
    ids = list(ids)
    send_many(send_deliveries, [ids[start:start + batch] for start in range(0, len(ids), batch)])
    return len(ids)


def send_many(actor: Any, args: Iterable[Any]) -> int:
    """Enqueue one message per argument for `actor`; return how many.

    dramatiq's RedisBroker enqueues with one round trip per message (about 5,500 a second here);
    a due tick of 100,000 deliveries would spend 18 s on that alone. On Redis this runs the same
    dispatch script through a pipeline, PIPELINE_MESSAGES at a time (about 5x faster); other
    brokers enqueue one by one.
    """
    from dramatiq.brokers.redis import RedisBroker

    broker = actor.broker
    if not isinstance(broker, RedisBroker):
        count = 0
        for arg in args:
            actor.send(arg)
            count += 1
        return count
    batch: list[Any] = []
    count = 0
    for arg in args:
        batch.append(actor.message(arg))
        if len(batch) == PIPELINE_MESSAGES:
            count += enqueue_messages(broker, batch)
            batch = []
    return count + (enqueue_messages(broker, batch) if batch else 0)


def enqueue_messages(broker: Any, messages: list[Any]) -> int:
    """Enqueue dramatiq messages on a RedisBroker through one pipeline; return how many.

    The arguments are those RedisBroker._dispatch("enqueue") sends (tests/campaigns/test_distributed.py
    drains such messages with real workers); middleware sees every message as through broker.enqueue.
    """
    from dramatiq.common import current_millis

    pipe = broker.client.pipeline(transaction=False)
    dispatch = broker.scripts["dispatch"]
    keys = [broker.namespace]
    sent = []
    for message in messages:
        message = message.copy(options={"redis_message_id": str(uuid4())})
        broker.emit_before("enqueue", message, None)
        dispatch(keys=keys, client=pipe, args=[
            "enqueue", current_millis(), message.queue_name, broker.broker_id, broker.heartbeat_timeout,
            broker.dead_message_ttl, broker._should_do_maintenance("enqueue"), broker._max_unpack_size(),
            message.options["redis_message_id"], message.encode()])
        sent.append(message)
    pipe.execute()
    for message in sent:
        broker.emit_after("enqueue", message, None)
    return len(sent)


def sender() -> Any:
    """This process's Sender, made on first use."""
    global _sender
    with _lock:
        if _sender is None:
            from izin.campaigns.deliver import Sender
            from izin.db import Database

            db = _db or Database(_settings.database.url)
            _sender = Sender(_settings, db, _settings.web.secret_key, now=_now)
        return _sender


def reset() -> None:
    """Forget this process's Sender (tests, and a worker reloading its configuration)."""
    global _sender
    with _lock:
        if _sender is not None:
            _sender.close()
            if _sender.db is not _db:
                _sender.db.dispose()
        _sender = None


def _iys_push() -> None:
    """Upload to İYS what it has not got yet (`izin iys push` as a job)."""
    from izin.consent.iys.sync import push_job

    if _settings.iys is not None:
        push_job(_settings, sender().db, _now)


def _send_deliveries(delivery_ids: list[int]) -> None:
    # the outcomes are on the delivery rows; a result backend would only duplicate them
    sender().process_many(delivery_ids)


def _send_delivery(delivery_id: int) -> None:
    sender().process(delivery_id)


_settings: Settings = load_settings()
_now: Callable[[], datetime] = clock.now
_db: Any = None
send_deliveries: Any = None
send_delivery: Any = None
iys_push: Any = None
broker = configure(_settings)
