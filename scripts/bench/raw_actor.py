"""The raw stack's worker: a plain dramatiq actor that sends a pre-rendered message with smtplib.

    BENCH_REDIS_URL=redis://127.0.0.1:6379/14 BENCH_SMTP_PORT=2525 dramatiq raw_actor --processes 2

No database, no consent check, no rendering: what is left of sending when the engine's work is
taken away. One SMTP connection per thread, reused, as izin's SMTP adapter does. Each accepted
message pushes "enqueued_at,accepted_at" (Unix seconds) onto a Redis list for the latencies.
"""

from __future__ import annotations

import os
import smtplib
import threading
import time

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker

QUEUE = "bench-raw"
DONE = "bench:raw:done"
_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
broker = RedisBroker(url=_url)
dramatiq.set_broker(broker)
_local = threading.local()
_results = redis.Redis.from_url(_url)


def _smtp() -> smtplib.SMTP:
    if getattr(_local, "smtp", None) is None:
        _local.smtp = smtplib.SMTP("127.0.0.1", int(os.environ.get("BENCH_SMTP_PORT", "2525")), timeout=10)
    return _local.smtp


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def raw_send(sender: str, to: str, message: str, enqueued_at: float) -> None:
    _smtp().sendmail(sender, [to], message.encode("utf-8"))
    _results.rpush(DONE, f"{enqueued_at},{time.time()}")
