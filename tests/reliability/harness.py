"""Shared pieces of the reliability suite: a counting SMTP sink that can hold a message at a chosen
stage, private Redis and PostgreSQL servers that a test may restart, worker processes as operators
run them, bulk set-up through the library, and the one check every crash scenario ends with."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from sqlalchemy import select, text

from conftest import SENDER_TOML, service_missing
from izin.campaigns.models import Delivery
from izin.campaigns.schedule import schedule_campaign
from izin.campaigns.spec import parse_campaign
from izin.clock import parse_instant
from izin.consent.ledger import LedgerWriter
from izin.consent.models import Contact
from izin.db import Database

#: the instant the deliveries are due at (a once campaign at 11:00, run at 12:00 Türkiye time)
AT = parse_instant("2026-11-24T12:00:00+03:00")
ONCE = """
name: efsane-cuma
trigger: {type: once, at: "2026-11-24T11:00:00+03:00"}
channels: [email]
content:
  email: {subject: "Efsane Cuma", html_inline: "<p>Merhaba {{ contact.first_name }}</p>"}
"""
#: where the held message is when a kill lands (see Sink.arm)
PHASES = ("before_claim", "after_claim", "in_adapter", "after_receipt")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- the SMTP sink --------------------------------------------------------------------------------

@dataclass
class _Trap:
    stage: str
    countdown: int
    hook: Callable[[], None] | None
    #: the client's (host, port): which worker process holds this message
    peer: tuple[str, int] | None = None
    reached: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)


class Sink:
    """An aiosmtpd server on a fixed loopback port that counts what it accepted, per recipient.

    `arm(stage, n)` holds the n-th next message at `stage`: "rcpt" (the worker has claimed and is in
    the adapter call, nothing sent yet), "data" (the message is transmitted, no 250 yet: not
    accepted) or "accepted" (counted and answered 250; `hook` runs first, e.g. to lock the
    deliveries table so the worker cannot mark the row). A held rcpt/data message is never counted.
    """

    def __init__(self, delay_s: float = 0.0) -> None:
        self.port = free_port()
        self.delay_s = delay_s
        self.received: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.trap: _Trap | None = None
        self._controller: Controller | None = None

    def start(self) -> None:
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def arm(self, stage: str, countdown: int, hook: Callable[[], None] | None = None) -> _Trap:
        self.trap = _Trap(stage, countdown, hook)
        return self.trap

    def _sprung(self, stage: str) -> _Trap | None:
        trap = self.trap
        if trap is None or trap.stage != stage:
            return None
        with self.lock:
            trap.countdown -= 1
            if trap.countdown > 0:
                return None
            self.trap = None
        return trap

    async def _hold(self, trap: _Trap, session: Any) -> str:
        trap.peer = session.peer
        trap.reached.set()
        while not trap.released.is_set():
            await asyncio.sleep(0.01)
        return "451 4.3.0 held"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        trap = self._sprung("rcpt")
        if trap is not None:
            return await self._hold(trap, session)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's hook name)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        trap = self._sprung("data")
        if trap is not None:
            return await self._hold(trap, session)
        trap = self._sprung("accepted")
        with self.lock:
            for rcpt in envelope.rcpt_tos:
                self.received[rcpt] += 1
        if trap is not None:
            if trap.hook is not None:
                trap.hook()
            trap.peer = session.peer
            trap.reached.set()
        return "250 OK"

    @property
    def total(self) -> int:
        with self.lock:
            return sum(self.received.values())


@contextmanager
def running_sink(delay_s: float = 0.0) -> Iterator[Sink]:
    sink = Sink(delay_s)
    sink.start()
    try:
        yield sink
    finally:
        sink.stop()


# --- set-up through the library ---------------------------------------------------------------------

def populate(db: Database, count: int, prefix: str = "u", consent: bool = True) -> list[str]:
    """`count` contacts with an email each and (by default) an email ONAY; returns the addresses."""
    when = parse_instant("2026-01-01T10:00:00+03:00")
    addresses = [f"{prefix}{i:06d}@example.com" for i in range(count)]
    with db.session() as session:
        contacts = [Contact(external_id=f"{prefix}{i:06d}", email=address, first_name=f"Kisi{i}",
                            recipient_type="BIREYSEL", locale="tr", attributes={}, created_at=when,
                            updated_at=when) for i, address in enumerate(addresses)]
        session.add_all(contacts)
        session.flush()
        if consent:
            writer = LedgerWriter(session)
            for contact in contacts:
                writer.record(contact, "email", "ONAY", "HS_WEB", when, when)
    return addresses


def schedule_once(db: Database, settings: Any, at: datetime = AT) -> list[int]:
    """Schedule the once campaign at `at`; return the ids of the deliveries it created."""
    with db.session() as session:
        return schedule_campaign(session, parse_campaign(ONCE), settings, at, at).ids


def write_config(folder: Path, smtp_port: int) -> Path:
    path = folder / "izin.toml"
    path.write_text(SENDER_TOML + f'[channels.email]\nurl = "smtp://127.0.0.1:{smtp_port}'
                    '?from=kampanya@ornek.com.tr&timeout=5"\n', encoding="utf-8")
    return path


def lease_later(now: datetime, steps: int = 1, step: timedelta = timedelta(minutes=11)) -> datetime:
    """An instant past any lease taken at `now` and past the scheduler's re-enqueue delay."""
    return now + steps * step


# --- worker processes ---------------------------------------------------------------------------------

def worker_env(folder: Path, db_url: str, now: datetime | None, broker_url: str = "") -> dict[str, str]:
    env = {**os.environ, "IZIN_DATABASE_URL": db_url, "IZIN_SECRET_KEY": "test-secret",
           "IZIN_CONFIG": str(folder / "izin.toml")}
    env.pop("IZIN_NOW", None)
    if now is not None:
        env["IZIN_NOW"] = now.isoformat()
    env.pop("IZIN_BROKER_URL", None)
    if broker_url:
        env["IZIN_BROKER_URL"] = broker_url
    return env


def spawn_worker(folder: Path, db_url: str, now: datetime | None, *args: str,
                 broker_url: str = "") -> subprocess.Popen[str]:
    """`izin worker ARGS` in its own process group, output to folder/worker-<pid>.log."""
    log = open(folder / f"worker-{time.monotonic_ns()}.log", "w", encoding="utf-8")  # noqa: SIM115
    try:
        return subprocess.Popen([sys.executable, "-m", "izin", "worker", *args], cwd=folder,
                                env=worker_env(folder, db_url, now, broker_url), text=True, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    finally:
        log.close()


def children(pid: int) -> list[int]:
    """Every descendant process of pid (Linux /proc)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids = [int(k) for k in (task / "children").read_text().split()]
        except OSError:
            continue
        for kid in kids:
            found += [kid, *children(kid)]
    return found


def socket_owner(port: int, pids: list[int]) -> int | None:
    """Which of pids has the loopback TCP socket whose local port is `port` (Linux /proc)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").glob("*"):
            try:
                if os.readlink(fd) in inodes:
                    return pid
            except OSError:
                continue
    return None


def stop_group(process: subprocess.Popen[str], sig: int = signal.SIGTERM, timeout_s: float = 30,
               signal_first: bool = True) -> None:
    """Signal the process's group, wait for the whole group to be gone, SIGKILL it after timeout_s."""
    if signal_first:
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout_s
    while _group_alive(process.pid) and time.monotonic() < deadline:
        process.poll()
        time.sleep(0.05)
    if _group_alive(process.pid):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


def _group_alive(pgid: int) -> bool:
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.02)


# --- database probes ------------------------------------------------------------------------------------

def statuses(db: Database) -> Counter[str]:
    with db.session() as session:
        return Counter(f"{s}:{r}" if r else s for s, r in session.execute(select(Delivery.status, Delivery.reason)))


def in_flight(db: Database) -> set[int]:
    """Deliveries claimed and not finished: a worker killed now leaves exactly these `sending`."""
    with db.session() as session:
        return set(session.scalars(select(Delivery.id).where(Delivery.status == "sending")))


def recipients(db: Database, ids: set[int]) -> dict[int, str]:
    with db.session() as session:
        rows = session.execute(select(Delivery.id, Delivery.recipient).where(Delivery.id.in_(ids))) if ids else []
        return {delivery_id: address for delivery_id, address in rows}


@contextmanager
def deliveries_locked(db: Database) -> Iterator[None]:
    """Block every write to the deliveries table (SQLite: the database's write lock) until exit."""
    connection = db.engine.connect()
    try:
        if db.engine.dialect.name == "sqlite":
            connection.begin()  # BEGIN IMMEDIATE: the one write lock
        else:
            connection.begin()
            connection.execute(text("LOCK TABLE deliveries IN EXCLUSIVE MODE"))
        yield
    finally:
        connection.rollback()
        connection.close()


class Locker:
    """deliveries_locked as a hook the sink can call from its thread and the test can release."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._cm: Any = None

    def __call__(self) -> None:
        self._cm = deliveries_locked(self.db)
        self._cm.__enter__()

    def release(self) -> None:
        if self._cm is not None:
            self._cm.__exit__(None, None, None)
            self._cm = None


# --- the verdict --------------------------------------------------------------------------------------

def duplicate_verdict(sink: Sink, due: dict[int, str], windows: list[set[int]]) -> dict[str, int]:
    """The documented duplicate window, checked exactly.

    `due` maps delivery id to address; `windows` holds, per fault, the deliveries that were
    `sending` (claimed, not yet marked) when it struck. An address may be received more than once
    only if its delivery was in flight at a fault, and at most once more per such fault. Every due
    address must have been received at least once (none lost) and nothing else at all.
    """
    by_address = {address: delivery for delivery, address in due.items()}
    received = dict(sink.received)
    lost = sorted(set(by_address) - set(received))
    strangers = sorted(set(received) - set(by_address))
    beyond: list[str] = []
    duplicated = 0
    for address, n in received.items():
        if n > 1 and address in by_address:
            duplicated += n - 1
            allowed = sum(1 for window in windows if by_address[address] in window)
            if n - 1 > allowed:
                beyond.append(f"{address} x{n} (in flight at {allowed} faults)")
    assert strangers == [], f"messages to addresses that were never due: {strangers[:5]}"
    assert lost == [], f"{len(lost)} due deliveries never reached the sink: {lost[:5]}"
    assert beyond == [], f"duplicates outside the documented window: {beyond[:5]}"
    return {"messages_checked": sum(received.values()), "lost": len(lost), "duplicated": duplicated,
            "window_bound": sum(len(w) for w in windows)}


# --- private servers that a test may restart ---------------------------------------------------------

def _binary(name: str, *candidates: str) -> str | None:
    for candidate in (*candidates, shutil.which(name)):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


class PrivateRedis:
    """A redis-server of our own on a free port, no persistence (a restart loses every queue)."""

    def __init__(self) -> None:
        binary = _binary("redis-server")
        if binary is None:
            service_missing("redis-server (a private Redis to restart)", "redis-server not installed")
        self.binary = binary
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None
        self.restarts = 0

    def start(self) -> None:
        self.process = subprocess.Popen([self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                         "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import redis

        client = redis.Redis.from_url(self.url)

        def up() -> bool:
            try:
                return bool(client.ping())
            except redis.exceptions.RedisError:
                return False

        wait_for(up, 20, "the private redis-server")
        client.close()

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=20)
            self.process = None

    def restart(self, down_s: float = 1.0) -> None:
        self.stop()
        time.sleep(down_s)
        self.start()
        self.restarts += 1


PG_BIN = Path("/usr/lib/postgresql/15/bin")


class PrivatePostgres:
    """A PostgreSQL cluster of our own (initdb + pg_ctl as the postgres user), trust auth, loopback."""

    def __init__(self) -> None:
        initdb, pg_ctl = _binary("initdb", str(PG_BIN / "initdb")), _binary("pg_ctl", str(PG_BIN / "pg_ctl"))
        if initdb is None or pg_ctl is None:
            service_missing("PostgreSQL binaries (a private cluster to restart)", "initdb/pg_ctl not installed")
        self.pg_ctl = pg_ctl
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="izin-pg-"))
        self.data = self.root / "data"
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        self.restarts = 0
        as_postgres = self._as_postgres()
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        subprocess.run([*as_postgres, initdb, "-D", str(self.data), "-U", "postgres", "--auth=trust",
                        "-E", "UTF8", "--no-sync"], check=True, capture_output=True)

    @staticmethod
    def _as_postgres() -> list[str]:
        # PostgreSQL refuses to run as root
        return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def _ctl(self, *args: str) -> None:
        subprocess.run([*self._as_postgres(), self.pg_ctl, "-D", str(self.data), "-w", "-t", "60", *args],
                       check=True, capture_output=True)

    def start(self) -> None:
        self._ctl("-l", str(self.root / "log"), "-o",
                  f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
                  "-c max_connections=200", "start")

    def stop(self) -> None:
        self._ctl("-m", "fast", "stop")

    def restart(self, down_s: float = 1.0) -> None:
        self.stop()
        time.sleep(down_s)
        self.start()
        self.restarts += 1

    def destroy(self) -> None:
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.root, ignore_errors=True)
