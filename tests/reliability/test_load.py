"""Load: deliveries through Redis to two dramatiq worker processes on PostgreSQL while consent
changes (RET, and a new ONAY after it) arrive at 100 a second through the library. Afterwards the
audit export alone must show that every message rests on consent in effect when it was checked.

The consent check, from `izin audit export --kind all --format ndjson` alone, for every `sent`
delivery D naming consent event E:
  1. E exists, is ONAY, and has D's recipient and channel;
  2. E.recorded_at <= D.sent_at;
  3. let N be the next event for that (recipient, channel) after E in ledger (id) order, if any;
     N is a RET (a repeated ONAY is refused) and N.recorded_at > D.sent_at - WINDOW.
The export holds no instant for the worker's check, only sent_at, which is taken after the
adapter returned. A RET recorded in the last WINDOW before sent_at is the documented race: its
transaction was still open when the worker checked, or it arrived while the message was in the
adapter call (see docs/reliability.md). Every other delivery is `suppressed` with
consent_withdrawn (or no_consent) and names no event after a RET; nothing is left in flight.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from izin.campaigns import actors
from izin.campaigns.runner import enqueue_due
from izin.consent.ledger import LedgerWriter, withdraw_address
from izin.consent.models import ConsentState, Contact
from izin.db import Database

from .harness import SENDER_TOML, AT, populate, schedule_once, spawn_worker, stop_group, wait_for, worker_env

#: how long before sent_at a RET may have been recorded and the message still go (see above)
WINDOW = timedelta(seconds=2)
RATE = 100  # consent changes a second
#: the CI variant (the issue's full 100,000 is the heavy one); 2 cores shared with the suite
CI_DELIVERIES = 1_000


class ConsentChurn:
    """RETs and fresh ONAYs for random addresses at RATE a second in all, each in its own
    transaction, from `threads` threads that each own a slice of the addresses (so one address's
    changes come in order, as one person's would)."""

    def __init__(self, db: Database, addresses: list[str], threads: int = 8) -> None:
        self.db = db
        self.stopping = threading.Event()
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(addresses[i::threads], RATE / threads, i),
                                          daemon=True) for i in range(threads)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self.stopping.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def _run(self, addresses: list[str], rate: float, seed: int) -> None:
        rng = random.Random(6563 + seed)
        started, done = time.monotonic(), 0
        while not self.stopping.is_set():
            address = rng.choice(addresses)
            now = datetime.now(timezone.utc)
            with self.db.session() as session:
                state = session.get(ConsentState, (address, "email", "BIREYSEL"))
                if state is not None and state.status == "ONAY":
                    withdraw_address(LedgerWriter(session), address, "email", "HS_WEB", now, "load: RET")
                    kind = "RET"
                else:
                    contact = session.scalar(select(Contact).where(Contact.email == address))
                    LedgerWriter(session).record(contact, "email", "ONAY", "HS_WEB", now, now, proof="load: ONAY")
                    kind = "ONAY"
            with self._lock:
                self.counts[kind] += 1
            done += 1
            time.sleep(max(0.0, started + done / rate - time.monotonic()))

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def _export(tmp_path, db_url: str) -> tuple[dict[int, dict], list[dict]]:
    path = tmp_path / "audit.ndjson"
    subprocess.run([sys.executable, "-m", "izin", "audit", "export", "--kind", "all", "--format", "ndjson",
                    "-o", str(path)], cwd=tmp_path, env=worker_env(tmp_path, db_url, None), check=True,
                   capture_output=True, timeout=600)
    events: dict[int, dict] = {}
    deliveries: list[dict] = []
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            record = json.loads(line)
            if record["kind"] == "consent":
                events[record["id"]] = record
            else:
                deliveries.append(record)
    return events, deliveries


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def check_consent(events: dict[int, dict], deliveries: list[dict]) -> dict[str, object]:
    """The check of the module docstring; returns its figures, raises on any violation."""
    following: dict[int, dict] = {}
    last_by_key: dict[tuple[str, str], dict] = {}
    for event_id in sorted(events):
        event = events[event_id]
        key = (event["recipient"], event["channel"])
        if key in last_by_key:
            following[last_by_key[key]["id"]] = event
        last_by_key[key] = event
    outcomes: Counter[str] = Counter()
    violations: list[str] = []
    in_window: list[float] = []
    for d in deliveries:
        outcomes[f"{d['status']}:{d['reason']}" if d["reason"] else d["status"]] += 1
        if d["status"] != "sent":
            continue
        event = events.get(d["consent_event_id"])
        sent_at = _instant(d["sent_at"])
        if event is None or event["status"] != "ONAY" or (event["recipient"], event["channel"]) != (
                d["recipient"], d["channel"]) or _instant(event["recorded_at"]) > sent_at:
            violations.append(f"delivery {d['id']} names event {d['consent_event_id']}: {event}")
            continue
        after = following.get(event["id"])
        if after is not None and _instant(after["recorded_at"]) <= sent_at:
            lag = sent_at - _instant(after["recorded_at"])
            if after["status"] != "RET" or lag >= WINDOW:
                violations.append(f"delivery {d['id']} sent {lag.total_seconds():.3f}s after event {after['id']}")
            in_window.append(lag.total_seconds())
    assert violations == [], f"{len(violations)} deliveries without consent in effect: {violations[:3]}"
    return {"outcomes": dict(outcomes), "sent_with_ret_in_window": len(in_window),
            "max_lag_ms": round(1000 * max(in_window, default=0.0), 1)}


def _load_run(db: Database, settings, tmp_path, broker_url: str, findings, count: int) -> None:
    (tmp_path / "izin.toml").write_text(
        SENDER_TOML + f'[channels.email]\nurl = "outbox://{tmp_path / "outbox"}"\n'
        '[policy]\nsend_window = "00:00-24:00"\n', encoding="utf-8")
    addresses = populate(db, count)
    ids = schedule_once(db, settings)
    assert len(ids) == count
    config = settings.model_copy(update={"broker": settings.broker.model_copy(update={"url": broker_url})})
    actors.configure(config)
    try:
        assert enqueue_due(db, AT) == count
    finally:
        actors.reset()
    churn = ConsentChurn(db, addresses)
    churn.start()
    started = time.monotonic()
    # the real clock: consent changes and sends interleave as they would in production
    worker = spawn_worker(tmp_path, db.url, None, "--processes", "2", "--threads", "4", broker_url=broker_url)
    try:
        from .harness import statuses

        def done() -> bool:
            return not {k.split(":")[0] for k in statuses(db)} & {"scheduled", "sending", "deferred"}

        wait_for(done, 60 + count / 10, "every delivery handled")
    finally:
        elapsed = time.monotonic() - started
        churn.stop()
        stop_group(worker)
    events, deliveries = _export(tmp_path, db.url)
    assert len(deliveries) == count
    figures = check_consent(events, deliveries)
    assert set(figures["outcomes"]) <= {"sent", "suppressed:consent_withdrawn"}, figures  # type: ignore[arg-type]
    verify = subprocess.run([sys.executable, "-m", "izin", "audit", "verify"], cwd=tmp_path,
                            env=worker_env(tmp_path, db.url, None), capture_output=True, text=True, timeout=600)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    findings("load: 2 dramatiq processes on PostgreSQL, consent changes aimed at 100/s", deliveries=count,
             seconds=round(elapsed, 1), deliveries_per_s=round(count / elapsed, 1),
             consent_changes=dict(churn.counts), consent_changes_per_s=round(churn.total / elapsed, 1),
             events_checked=len(events), messages_checked=figures["outcomes"].get("sent", 0),  # type: ignore[union-attr]
             **figures)


def test_load_with_consent_churn(pg, settings, tmp_path, private_redis, findings):
    _load_run(pg, settings, tmp_path, private_redis.url, findings, CI_DELIVERIES)


@pytest.mark.heavy
def test_load_with_consent_churn_full(pg, settings, tmp_path, private_redis, findings):
    _load_run(pg, settings, tmp_path, private_redis.url, findings, 100_000)
