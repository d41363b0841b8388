"""`izin worker` as operators run it in distributed mode: dramatiq worker processes on Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from sqlalchemy import select

from conftest import NOW, SENDER_TOML
from izin.campaigns import actors
from izin.campaigns.models import Delivery
from izin.campaigns.runner import enqueue_due
from support import AT, consent, person, schedule


def test_worker_processes_send_what_the_scheduler_enqueued(db, settings, redis_url, tmp_path):
    for name in ("ayse", "mehmet", "zeynep"):
        person(db, name, email=f"{name}@example.com")
        consent(db, name, "email")
    config = settings.model_copy(update={"broker": settings.broker.model_copy(update={"url": redis_url})})
    schedule(db, config)
    actors.configure(config)
    assert enqueue_due(db, AT) == 3
    actors.reset()
    (tmp_path / "izin.toml").write_text(
        SENDER_TOML + f'[channels.email]\nurl = "outbox://{tmp_path / "outbox"}"\n', encoding="utf-8")
    env = {**os.environ, "IZIN_DATABASE_URL": db.url, "IZIN_BROKER_URL": redis_url, "IZIN_NOW": NOW,
           "IZIN_SECRET_KEY": "test-secret", "IZIN_CONFIG": str(tmp_path / "izin.toml")}
    worker = subprocess.Popen([sys.executable, "-m", "izin", "worker", "--processes", "1", "--threads", "2"],
                              cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        statuses: list[str] = []
        while time.monotonic() < deadline:
            with db.session() as session:
                statuses = list(session.scalars(select(Delivery.status).order_by(Delivery.id)))
            if statuses == ["sent"] * 3:
                break
            time.sleep(0.2)
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        output, _ = worker.communicate(timeout=30)
    assert statuses == ["sent"] * 3, output
    assert sorted(p.name for p in (tmp_path / "outbox").iterdir()) == ["1.eml", "2.eml", "3.eml"]
