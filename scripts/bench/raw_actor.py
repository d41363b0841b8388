"""The raw stack's worker: plain dramatiq actors that send pre-rendered messages, emails with
smtplib and SMS as one JSON POST with http.client.

    BENCH_REDIS_URL=redis://127.0.0.1:6379/14 BENCH_SMTP_PORT=2525 BENCH_HTTP_PORT=8080 \
        dramatiq raw_actor --processes 2

No database, no consent check, no rendering: what is left of sending when the engine's work is
taken away. One SMTP connection and one HTTP keep-alive connection per thread, reused, as izin's
adapters do. Each accepted message pushes "enqueued_at,accepted_at" (Unix seconds) onto a Redis
list for the latencies.
"""

from __future__ import annotations

import http.client
import json
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


def _http() -> http.client.HTTPConnection:
    if getattr(_local, "http", None) is None:
        _local.http = http.client.HTTPConnection("127.0.0.1", int(os.environ.get("BENCH_HTTP_PORT", "8080")),
                                                 timeout=10)
    return _local.http


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def raw_send(sender: str, to: str, message: str, enqueued_at: float) -> None:
    _smtp().sendmail(sender, [to], message.encode("utf-8"))
    _results.rpush(DONE, f"{enqueued_at},{time.time()}")


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def raw_sms(body: str, enqueued_at: float) -> None:
    connection = _http()
    connection.request("POST", "/send", body.encode("utf-8"), {"Content-Type": "application/json"})
    response = connection.getresponse()
    if response.status != 200:
        raise RuntimeError(f"the HTTP sink answered {response.status}")
    json.loads(response.read())["id"]
    _results.rpush(DONE, f"{enqueued_at},{time.time()}")
