"""Crashes and restarts in the middle of a delivery run: nothing lost, duplicates only in the window.

Workers are killed with SIGKILL at chosen points (before the claim, after it, inside the adapter
call, after the provider's 250 but before the row is marked); Redis, PostgreSQL and the SMTP sink
are restarted under running workers. After each run every due delivery must be `sent`, the sink
must hold every due address, and an address may have come twice only if its delivery was claimed
and unfinished when a fault struck (`harness.duplicate_verdict`). A restarted worker runs at a later
IZIN_NOW, past the dead one's lease, as an operator's next run would.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest

from .harness import (AT, PHASES, Locker, duplicate_verdict, in_flight, lease_later,
                     populate, recipients, socket_owner, running_sink, schedule_once, spawn_worker, children, statuses,
                     stop_group, wait_for, write_config)
from izin.campaigns import actors
from izin.campaigns.runner import enqueue_due
from izin.db import Database, upgrade

CI_DELIVERIES, HEAVY_DELIVERIES = 600, 5_000
#: dramatiq runs: a cycle can use up the batches (actors.BATCH each) that the killed process's
#: sibling holds besides its countdown, as it finishes them before it stops; the last kill needs some left
CI_DISTRIBUTED = 1_500


def _phases(kills: int, rng: random.Random) -> list[str]:
    """Every phase at least kills // 4 times, the rest at random, in random order."""
    chosen = [*PHASES * (kills // len(PHASES)), *rng.choices(PHASES, k=kills % len(PHASES))]
    rng.shuffle(chosen)
    return chosen


def _enqueue(db: Database, settings, broker_url: str, now: datetime) -> int:
    """What the scheduler's tick does: enqueue every due row not enqueued in the last 10 minutes."""
    config = settings.model_copy(update={"broker": settings.broker.model_copy(update={"url": broker_url})})
    actors.configure(config)
    try:
        return enqueue_due(db, now)
    finally:
        actors.reset()


class Run:
    """One crash run: deliveries, a sink, and a way to start and kill workers."""

    def __init__(self, db: Database, settings, tmp_path, sink, count: int, broker_url: str = "") -> None:
        self.db, self.settings, self.folder, self.sink = db, settings, tmp_path, sink
        self.broker_url = broker_url
        write_config(tmp_path, sink.port)
        addresses = populate(db, count)
        ids = schedule_once(db, settings)
        assert len(ids) == count
        self.due = recipients(db, set(ids))
        assert sorted(self.due.values()) == addresses
        self.windows: list[set[int]] = []
        self.now = AT
        self.workers_started = 0

    def start(self, before_spawn: Callable[[], None] | None = None) -> subprocess.Popen[str]:
        """A worker at self.now (in distributed mode after the scheduler's tick has enqueued)."""
        self.workers_started += 1
        if self.broker_url:
            _enqueue(self.db, self.settings, self.broker_url, self.now)
        if before_spawn is not None:
            before_spawn()
        if self.broker_url:
            # a small prefetch: the killed process's sibling finishes what it holds before it stops
            return spawn_worker(self.folder, self.db.url, self.now, "--processes", "2", "--threads", "2",
                                "--prefetch", "2", broker_url=self.broker_url)
        return spawn_worker(self.folder, self.db.url, self.now, "--burst", "--threads", "2")

    def kill(self, worker: subprocess.Popen[str], rng: random.Random, release: Callable[[], None],
             peer: tuple[str, int] | None = None) -> None:
        """SIGKILL the worker: the embedded process itself, or one dramatiq worker process (its
        siblings are then stopped by dramatiq's main process, as in production). `release` lets
        go of whatever held the worker, once the kill has landed."""
        if self.broker_url:
            workers = [pid for pid in children(worker.pid) if children(pid) == []]
            # the process holding the trapped message when there is one, else any
            holder = socket_owner(peer[1], workers) if peer else None
            os.kill(holder or rng.choice(workers), signal.SIGKILL)
            release()
            stop_group(worker, signal.SIGKILL, timeout_s=30, signal_first=False)
        else:
            os.kill(worker.pid, signal.SIGKILL)
            release()
            stop_group(worker, signal.SIGKILL)

    def wait_started(self, worker: subprocess.Popen[str]) -> None:
        """Until the worker process can take a message (dramatiq's processes boot in the background)."""
        if self.broker_url:
            wait_for(lambda: len(children(worker.pid)) >= 2, 60, "dramatiq's worker processes")

    def kill_at(self, phase: str, rng: random.Random) -> None:
        """Start a worker, kill it at `phase`, record what was in flight, move the clock past the lease."""
        locker = Locker(self.db)
        # the trap holds one message while the other threads go on sending: a countdown larger
        # than what is left would never be reached
        left = len(self.due) - statuses(self.db)["sent"]
        countdown = min(rng.randint(3, 40), max(1, left // 2))
        if phase == "before_claim":
            # the worker blocks on its first write, before any claim is taken
            worker = self.start(before_spawn=locker)
            self.wait_started(worker)
            time.sleep(rng.uniform(0.3, 1.0))
        else:
            stage = {"after_claim": "rcpt", "in_adapter": "data", "after_receipt": "accepted"}[phase]
            trap = self.sink.arm(stage, countdown, hook=locker if stage == "accepted" else None)
            worker = self.start()
            if not trap.reached.wait(90):
                stop_group(worker, signal.SIGKILL)  # a failing run must not leave workers behind
                pytest.fail(f"the worker never reached {stage} (countdown {countdown}, {left} unsent before "
                            f"the start; now {dict(statuses(self.db))})")
            if stage == "accepted":
                time.sleep(0.2)  # the worker has the 250 and waits to mark the row
        def release() -> None:
            self.sink.trap = None
            if phase != "before_claim":
                trap.released.set()
            locker.release()

        self.kill(worker, rng, release, None if phase == "before_claim" else trap.peer)
        self.windows.append(in_flight(self.db))
        self.now = lease_later(self.now)
        if self.broker_url:
            # the queue still holds this cycle's untaken messages; drop them so the next tick's
            # re-enqueue is the one source (as after a Redis restart) and the run stays short
            import redis

            redis.Redis.from_url(self.broker_url).flushdb()

    def finish(self, timeout_s: float = 300) -> None:
        """A last worker after every lease ran out sends whatever is left."""
        worker = self.start()
        if self.broker_url:
            try:
                wait_for(lambda: statuses(self.db) == Counter({"sent": len(self.due)}), timeout_s,
                         "every delivery sent")
            finally:
                stop_group(worker)
        else:
            assert worker.wait(timeout=timeout_s) == 0
        assert statuses(self.db) == Counter({"sent": len(self.due)})


def _kill_run(db, settings, tmp_path, findings, count: int, kills: int, broker_url: str, label: str) -> None:
    rng = random.Random(f"{label}-{count}-{kills}")
    with running_sink() as sink:
        run = Run(db, settings, tmp_path, sink, count, broker_url)
        phases = _phases(kills, rng)
        for phase in phases:
            run.kill_at(phase, rng)
        after_receipt = [w for p, w in zip(phases, run.windows) if p == "after_receipt"]
        assert all(after_receipt), "an after-receipt kill left nothing in flight: the window was not exercised"
        run.finish()
        verdict = duplicate_verdict(sink, run.due, run.windows)
    # a worker claims a whole batch, but only the message in a thread's adapter call can go twice:
    # the killed process had 2 threads
    assert verdict["duplicated"] <= 2 * kills, verdict
    findings(f"SIGKILL {label} worker", deliveries=count, faults_injected=kills, attempts=run.workers_started,
             phases=dict(Counter(phases)), **verdict)


def _embedded(tmp_path) -> Database:
    database = Database(f"sqlite:///{tmp_path / 'izin.db'}")
    upgrade(database)
    return database


def test_sigkill_embedded_worker(tmp_path, settings, findings):
    db = _embedded(tmp_path)
    _kill_run(db, settings, tmp_path, findings, CI_DELIVERIES, 10, "", "embedded")


@pytest.mark.heavy
def test_sigkill_embedded_worker_full(tmp_path, settings, findings):
    db = _embedded(tmp_path)
    _kill_run(db, settings, tmp_path, findings, HEAVY_DELIVERIES, 10, "", "embedded")


def test_sigkill_dramatiq_worker_process(pg, settings, tmp_path, private_redis, findings):
    _kill_run(pg, settings, tmp_path, findings, CI_DISTRIBUTED, 4, private_redis.url, "dramatiq")


@pytest.mark.heavy
def test_sigkill_dramatiq_worker_process_full(pg, settings, tmp_path, private_redis, findings):
    _kill_run(pg, settings, tmp_path, findings, HEAVY_DELIVERIES, 10, private_redis.url, "dramatiq")


def _settled(db: Database, quiet_s: float = 3.0):
    """A predicate: nothing due is left, and what is still `sending` has not moved for quiet_s."""
    seen: dict[str, object] = {"flight": None, "since": time.monotonic()}

    def check() -> bool:
        counts = statuses(db)
        if any(k.split(":")[0] in ("scheduled", "deferred") for k in counts):
            return False
        flight = in_flight(db)
        if flight != seen["flight"]:
            seen["flight"], seen["since"] = flight, time.monotonic()
        return not flight or time.monotonic() - float(seen["since"]) > quiet_s  # type: ignore[arg-type]

    return check


def _restart_run(db, settings, tmp_path, findings, broker_url: str, restart, label: str,
                 count: int = CI_DISTRIBUTED, after: int = 100) -> None:
    """Two dramatiq processes on Redis; `restart()` once `after` messages arrived, workers left
    running; the scheduler's next tick re-enqueues what the broker lost. An outage shorter than the
    worker's retry budget must cost nothing: no delivery stuck, none lost, none twice."""
    with running_sink() as sink:
        run = Run(db, settings, tmp_path, sink, count, broker_url)
        worker = run.start()
        started = time.monotonic()
        try:
            wait_for(lambda: sink.total >= after, 120, f"{after} messages")
            flight = in_flight(db)
            restart()
            run.now = lease_later(run.now)
            _enqueue(db, settings, broker_url, run.now)
            wait_for(_settled(db), 180, "the run to settle after the restart")
        finally:
            stop_group(worker)
        stuck = in_flight(db)
        run.windows.append(flight | stuck)
        if stuck:  # claimed when the fault struck and never marked: a later worker finishes them
            run.now = lease_later(run.now)
            run.finish()
        assert statuses(db) == Counter({"sent": count})
        verdict = duplicate_verdict(sink, run.due, run.windows)
    findings(f"{label} restarted under 2 dramatiq worker processes", deliveries=count, faults_injected=1,
             attempts=run.workers_started, seconds=round(time.monotonic() - started, 1), stuck_sending=len(stuck),
             **verdict)
    # a row claimed just before the outage and not yet sent may wait for its lease (delayed, never
    # lost); a message the provider accepted must be marked once the database is back
    assert verdict["duplicated"] == 0, "a short outage sent deliveries twice"


def test_redis_restart_mid_run(pg, settings, tmp_path, private_redis, findings):
    _restart_run(pg, settings, tmp_path, findings, private_redis.url, private_redis.restart, "Redis")


def test_postgres_restart_mid_run(private_db, settings, tmp_path, private_redis, private_postgres, findings):
    _restart_run(private_db, settings, tmp_path, findings, private_redis.url, lambda: private_postgres.restart(2.0),
                 "PostgreSQL")


def test_smtp_sink_outage(tmp_path, settings, findings):
    """The SMTP server goes away mid-run: what could not go is deferred, and goes once it is back."""
    db = _embedded(tmp_path)
    with running_sink() as sink:
        run = Run(db, settings, tmp_path, sink, CI_DELIVERIES)
        worker = run.start()
        wait_for(lambda: sink.total >= 150, 60, "150 messages")
        flight = in_flight(db)
        sink.stop()
        flight |= in_flight(db)
        assert worker.wait(timeout=120) == 0
        during = statuses(db)
        assert set(during) == {"sent", "deferred:transient"}, during
        sink.start()
        run.now = lease_later(run.now, steps=6)  # past the 30 s backoff
        run.finish()
        run.windows.append(flight)
        verdict = duplicate_verdict(sink, run.due, run.windows)
    findings("SMTP sink stopped and restarted under an embedded worker", deliveries=CI_DELIVERIES, faults_injected=1,
             deferred_during_outage=during["deferred:transient"], attempts=run.workers_started, **verdict)


def test_sigterm_to_izin_worker_stops_its_dramatiq_processes(pg, tmp_path, private_redis, findings):
    """A supervisor that stops `izin worker` signals that one process; its dramatiq processes must
    stop with it (gracefully, finishing what they hold), not run on as orphans."""
    write_config(tmp_path, 25)
    worker = spawn_worker(tmp_path, pg.url, AT, "--processes", "2", "--threads", "1", broker_url=private_redis.url)
    try:
        wait_for(lambda: len(children(worker.pid)) >= 2, 60, "dramatiq's worker processes")
        family = [worker.pid, *children(worker.pid)]
        os.kill(worker.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() and _running(pid) for pid in family):
            worker.poll()
            time.sleep(0.1)
        left = [pid for pid in family if Path(f"/proc/{pid}").exists() and _running(pid)]
    finally:
        stop_group(worker, signal.SIGKILL, timeout_s=5)
    findings("SIGTERM to izin worker (distributed)", processes=len(family), left_running=len(left))
    assert left == [], f"{len(left)} of {len(family)} processes still running 30 s after SIGTERM"


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
