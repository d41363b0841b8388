"""Races: an opt-out against the worker's claim, schedulers and workers on one campaign, the same
import run twice at once. Real threads and processes on SQLite and PostgreSQL; the checks read
what the adapter received and what the ledger recorded."""

from __future__ import annotations

import csv
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import event, func, select

from izin.campaigns.deliver import Sender
from izin.campaigns.models import Delivery
from izin.campaigns.schedule import due_ids
from izin.consent.ledger import LedgerWriter, withdraw_address
from izin.consent.models import ConsentEvent, Contact

from .harness import AT, populate, running_sink, schedule_once, write_config

ITERATIONS = 200
#: the race against a worker's batch: rounds, and deliveries per batch
BATCH_ROUNDS, BATCH_SIZE = 20, 10


class Clock:
    """The engine's clock for a race: AT plus real elapsed time, so instants order like events do."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    def __call__(self) -> datetime:
        return AT + timedelta(seconds=time.monotonic() - self.started)


def _together(*calls):
    """Run the calls in threads released by one barrier, each after a random few hundred µs."""
    barrier = threading.Barrier(len(calls))
    results: list[object] = [None] * len(calls)
    errors: list[BaseException] = []

    def run(index: int, call) -> None:
        try:
            barrier.wait()
            time.sleep(random.random() * 0.002)
            results[index] = call()
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


@pytest.mark.parametrize("rounds, size", [(ITERATIONS, 1), (BATCH_ROUNDS, BATCH_SIZE)], ids=["one", "batch"])
def test_withdrawal_racing_the_claim(db, settings, findings, rounds, size):
    """An opt-out and the worker's claim of a delivery to that address, released together, 200
    times; and the same against a worker's batch of BATCH_SIZE deliveries, one of them to the
    address, 20 times. Whatever the order, no message goes after the RET took effect: a sent
    delivery was checked (the worker's read of the consent state went to the database) before the
    RET's transaction committed and names the ONAY before it; otherwise it is suppressed,
    consent_withdrawn, and nothing reached the adapter. The rest of a batch goes whatever the order."""
    addresses = populate(db, rounds * size)
    ids = schedule_once(db, settings)
    outbox = settings.channels["email"].url.removeprefix("outbox://")
    rng = random.Random("race")
    outcomes: Counter[str] = Counter()
    late: list[str] = []
    in_flight: list[float] = []
    # the instant each thread's first read of the consent state is sent, on the round's clock
    reads: dict[int, datetime] = {}
    current: list[Clock] = []

    def note_read(conn, cursor, statement, parameters, context, executemany) -> None:
        if "FROM consent_state" in statement and current:
            reads.setdefault(threading.get_ident(), current[-1]())

    event.listen(db.engine, "before_cursor_execute", note_read)
    for start in range(0, len(ids), size):
        batch = ids[start:start + size]
        target = rng.randrange(size)
        clock = Clock()
        current.append(clock)
        sender = Sender(settings, db, "test-secret", now=clock)

        def withdraw(address=addresses[start + target], clock=clock):
            with db.session() as session:
                event_id = withdraw_address(LedgerWriter(session), address, "email", "HS_WEB", clock(), "race")[0].event.id
            return event_id, clock()  # the instant the RET is committed: in effect from here on

        def claim(batch=batch):
            reads.pop(threading.get_ident(), None)
            result = sender.process_many(batch)
            return result, reads.get(threading.get_ident())

        (ret_id, committed), (result, gate) = _together(withdraw, claim)
        sender.close()
        with db.session() as session:
            rows = {d.id: d for d in session.scalars(select(Delivery).where(Delivery.id.in_(batch)))}
            ret = session.get(ConsentEvent, ret_id)
            for index, delivery_id in enumerate(batch):
                delivery, sent_file = rows[delivery_id], Path(outbox, f"{delivery_id}.eml").exists()
                if index != target:
                    assert (result[delivery_id].status, delivery.status, sent_file) == ("sent", "sent", True)
                    continue
                # an opt-out that commits first cancels the queued delivery itself: the worker skips it
                outcomes[f"{delivery.status}:{delivery.reason}" if delivery.reason else delivery.status] += 1
                if delivery.status == "sent":
                    consent = session.get(ConsentEvent, delivery.consent_event_id)
                    assert sent_file and consent.status == "ONAY" and consent.id < ret.id
                    assert gate is not None, f"delivery {delivery_id} was sent without reading the consent state"
                    if not gate < committed:
                        late.append(f"delivery {delivery_id}: gate {gate.isoformat()} after RET "
                                    f"#{ret.id} committed at {committed.isoformat()}")
                    if ret.recorded_at <= gate:
                        # the RET was requested (and stamped) before the check, but its transaction
                        # was still open: it was not in effect yet (see docs/reliability.md)
                        in_flight.append((gate - ret.recorded_at).total_seconds())
                else:
                    assert (delivery.status, delivery.reason, sent_file) == ("suppressed", "consent_withdrawn", False)
    event.remove(db.engine, "before_cursor_execute", note_read)
    findings(f"RET racing the claim of {size} ({db.engine.dialect.name})", attempts=rounds,
             sent_before_ret=outcomes["sent"], suppressed=outcomes["suppressed:consent_withdrawn"],
             sent_after_ret_committed=len(late), sent_while_ret_in_flight=len(in_flight),
             max_in_flight_ms=round(1000 * max(in_flight, default=0), 2))
    assert set(outcomes) <= {"sent", "suppressed:consent_withdrawn"}, outcomes
    assert late == [], f"{len(late)} messages went after the RET was recorded: {late[:3]}"


def test_two_schedulers_four_workers_send_each_delivery_once(db, settings, tmp_path, findings):
    """Two scheduler ticks and four workers race on one campaign: one row per contact, each
    address receives exactly one message."""
    count = 200
    addresses = populate(db, count)
    with running_sink() as sink:
        config = settings.model_copy(update={"channels": {**settings.channels, "email": settings.channels["email"]
                                     .model_copy(update={"url": f"smtp://127.0.0.1:{sink.port}?from=k@ornek.com.tr"})}})
        scheduling = threading.Event()

        def scheduler():
            ids = schedule_once(db, config)
            return len(ids)

        def worker():
            sender = Sender(config, db, "test-secret", now=lambda: AT)
            outcomes: Counter[str] = Counter()
            try:
                while True:
                    with db.session() as session:
                        ids = due_ids(session, AT, limit=50)
                    if not ids and scheduling.is_set():
                        return outcomes
                    random.shuffle(ids)
                    for delivery_id in ids:
                        outcomes[sender.process(delivery_id).status] += 1
                    if not ids:
                        time.sleep(0.01)
            finally:
                sender.close()

        def tick():
            created = scheduler()
            return created

        def schedulers():
            results = _together(tick, tick)
            scheduling.set()
            return results

        results = _together(schedulers, worker, worker, worker, worker)
    created = results[0]
    attempts = sum((r for r in results[1:]), Counter())
    with db.session() as session:
        rows = session.scalar(select(func.count()).select_from(Delivery))
        statuses = Counter(session.scalars(select(Delivery.status)))
    findings(f"2 schedulers + 4 workers on one campaign ({db.engine.dialect.name})", deliveries=count,
             created_by_each=created, attempts=dict(attempts), messages_checked=sum(sink.received.values()),
             duplicated=sum(n - 1 for n in sink.received.values()), lost=count - len(sink.received))
    assert sorted(created) == [0, count] and rows == count
    assert statuses == Counter({"sent": count})
    assert attempts["sent"] == count
    assert sink.received == Counter({a: 1 for a in addresses})


def _csv(path, header, rows):
    with open(path, "w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(header)
        writer.writerows(rows)


def _izin(tmp_path, db_url, *args) -> subprocess.Popen[str]:
    from .harness import worker_env

    write_config(tmp_path, 25)
    return subprocess.Popen([sys.executable, "-m", "izin", *args], cwd=tmp_path, text=True,
                            env=worker_env(tmp_path, db_url, AT), stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _twice(tmp_path, db_url, *args) -> list[tuple[int, str, str]]:
    first, second = _izin(tmp_path, db_url, *args), _izin(tmp_path, db_url, *args)
    outputs = [p.communicate(timeout=300) for p in (first, second)]
    return [(p.returncode, *out) for p, out in zip((first, second), outputs)]


def test_the_same_imports_twice_at_once(db, tmp_path, findings):
    """`izin contacts import` and then `izin consent import` of the same files, each in two processes
    at once: every contact once, every consent event once, and the chain verifies."""
    count = 1_500  # two batches of BATCH_ROWS, so the processes interleave
    _csv(tmp_path / "contacts.csv", ["external_id", "first_name", "email", "phone"],
         [(f"c{i:05d}", f"Kisi{i}", f"c{i:05d}@example.com", f"+90532{i:07d}") for i in range(count)])
    _csv(tmp_path / "consents.csv", ["external_id", "channel", "status", "source", "consent_date"],
         [(f"c{i:05d}", channel, "ONAY", "HS_WEB", "2026-01-01T10:00:00+03:00")
          for i in range(count) for channel in ("email", "sms")])
    contacts = _twice(tmp_path, db.url, "contacts", "import", "contacts.csv", "--rejects", "c.rejects.csv")
    assert [c for c, _, _ in contacts] == [0, 0], [e[-400:] for _, _, e in contacts]
    consents = _twice(tmp_path, db.url, "consent", "import", "consents.csv", "--rejects", "e.rejects.csv")
    assert [c for c, _, _ in consents] == [0, 0], [e[-400:] for _, _, e in consents]
    verify = _izin(tmp_path, db.url, "audit", "verify")
    out, err = verify.communicate(timeout=120)
    with db.session() as session:
        contact_rows = session.scalar(select(func.count()).select_from(Contact))
        distinct = session.scalar(select(func.count(func.distinct(Contact.external_id))))
        events = Counter(session.execute(select(ConsentEvent.recipient, ConsentEvent.channel, ConsentEvent.status)))
    twice = {k: n for k, n in events.items() if n > 1}
    findings(f"contacts and consent import twice at once ({db.engine.dialect.name})", rows=count,
             consent_rows=2 * count, contacts=contact_rows, events=sum(events.values()), events_twice=len(twice),
             verify_exit=verify.returncode)
    assert (contact_rows, distinct) == (count, count)
    assert twice == {}, f"{len(twice)} consent events recorded twice, e.g. {list(twice)[:3]}"
    assert sum(events.values()) == 2 * count
    assert verify.returncode == 0, out + err
