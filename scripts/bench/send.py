"""End-to-end sending: izin's workers against the raw stack, through Redis, to the same sinks.

    python scripts/bench/send.py --deliveries 100000 [--database postgresql|sqlite] [--profile]

izin: N deliveries of a `once` campaign (80% email, 20% SMS) scheduled into the database, enqueued
in one tick, and sent by `izin worker --processes 2` (dramatiq on Redis): claim, consent re-check,
cap and window, render, SMTP or HTTP SMS, record. The raw stack: plain dramatiq actors
(raw_actor.py, 2 processes) sending the same mix of pre-rendered messages to the same sinks: the
emails with smtplib, the SMS as the webhook adapter's JSON POST with http.client. Both enqueue
through one Redis pipeline and are timed from the first enqueue to the last accepted message;
latency is from enqueue (the moment a tick finds the delivery due) to accepted.
Also: the send gate's cost per message (consent + cap + window), in-process.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

from sinks import free_port, start_http_sink, start_smtp_sink  # noqa: E402

#: the Redis database the benchmark owns (flushed before each run)
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
SENDER_TOML = """[sender]
name = "Örnek Ticaret A.Ş."
mersis = "0123456789000015"
phone = "+90 212 555 00 00"
email = "destek@ornek.com.tr"
sms_header = "ORNEKTIC"
sms_optout = "RET yazip 4609'a gonderin"
"""
HTML = ("<p>Merhaba {{ contact.first_name }},</p><p>Efsane Cuma'da tüm ürünlerde %{{ coupon.percent }} "
        "indirim: kodunuz <b>{{ coupon.code }}</b>, {{ coupon.expires_on }} tarihine kadar geçerli.</p>")
CAMPAIGN = """name: bench-send
trigger: {{type: once, at: "{at}"}}
channels: [email, sms]
coupon: {{prefix: EFSANE, percent: 20, valid_days: 7}}
content:
  email:
    subject: "{{{{ contact.first_name }}}}, Efsane Cuma başladı"
    html_inline: "{html}"
  sms:
    text: "{{{{ contact.first_name }}}}, Efsane Cuma: {{{{ coupon.code }}}} ile %{{{{ coupon.percent }}}} indirim."
"""


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


def _flush_redis() -> Any:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    return client


def _wait_for_workers(client: Any, processes: int, timeout_s: float = 60) -> None:
    """Until `processes` dramatiq consumers beat in Redis (the worker has imported and started)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if client.zcard("dramatiq:__heartbeats__") >= processes:
            time.sleep(1.0)
            return
        time.sleep(0.2)
    raise RuntimeError("the worker processes did not start")


def _children_cpu_s() -> float:
    """CPU seconds of the child processes waited for so far, their own children included (the
    worker processes are waited for by dramatiq's main process, and it by us)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _stop(process: subprocess.Popen[Any]) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(process.pid, signal.SIGKILL)


def seed(url: str, work: Path, contacts: int, now: datetime) -> Path:
    """Contacts with consent through izin's own imports, and the campaign's YAML; return its path."""
    from izin.consent.consent_import import import_consents
    from izin.consent.contacts import import_contacts
    from izin.db import Database, upgrade

    subprocess.run([sys.executable, str(BENCH / "generate.py"), "--contacts", str(contacts), "--out", str(work),
                    "--email-onay", "0.8", "--sms-onay", "1.0", "--withdrawn", "0", "--events-per-contact", "0"],
                   check=True, stdout=subprocess.DEVNULL)
    db = Database(url)
    upgrade(db)
    import_contacts(db, str(work / "contacts.csv"), now)
    import_consents(db, str(work / "consents.csv"), now, now.tzinfo)  # type: ignore[arg-type]
    db.dispose()
    path = work / "bench-send.yaml"
    path.write_text(CAMPAIGN.format(at=(now - timedelta(minutes=1)).isoformat(), html=HTML.replace('"', '\\"')),
                    encoding="utf-8")
    return path


def _settings(work: Path, url: str, smtp_port: int, http_port: int) -> Path:
    config = work / "izin.toml"
    config.write_text(SENDER_TOML + f"""[database]
url = "{url}"
[broker]
url = "{REDIS_URL}"
[web]
secret_key = "bench-secret-key"
[channels.email]
url = "smtp://127.0.0.1:{smtp_port}?from=kampanya@ornek.com.tr&timeout=10"
[channels.sms]
url = "webhook://127.0.0.1:{http_port}/send"
[policy]
send_window = "00:00-24:00"
frequency_cap = "100/1d"
""", encoding="utf-8")
    return config


def engine(url: str, work: Path, campaign: Path, smtp_port: int, http_port: int, processes: int, threads: int,
           profile: bool) -> dict[str, Any]:
    """Schedule, enqueue in one tick, and time `izin worker` until every delivery is settled."""
    from sqlalchemy import func, select, update

    from izin.campaigns import actors
    from izin.campaigns.models import Delivery
    from izin.campaigns.schedule import schedule_campaign
    from izin.campaigns.spec import load_campaign
    from izin.clock import now as clock_now
    from izin.config import load_settings
    from izin.db import Database

    config = _settings(work, url, smtp_port, http_port)
    settings = load_settings(str(config))
    db = Database(url)
    with db.session() as session:
        ids = schedule_campaign(session, load_campaign(str(campaign)), settings, clock_now(), clock_now()).ids
    due = len(ids)
    with db.session() as session:
        campaign_id = session.scalar(select(Delivery.campaign_id).where(Delivery.id == ids[0])) if ids else None
    client = _flush_redis()
    env = {**os.environ, "IZIN_CONFIG": str(config)}
    env.pop("IZIN_NOW", None)
    cpu_before = _children_cpu_s()
    worker = subprocess.Popen([sys.executable, "-m", "izin", "worker", "--processes", str(processes),
                               "--threads", str(threads)], cwd=work, env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=open(work / "worker.log", "w"))
    spy = None
    try:
        _wait_for_workers(client, processes)
        actors.configure(settings)
        started = time.time()
        # what a scheduler tick does, for this campaign's deliveries only (the base may hold others)
        with db.session() as session:
            session.execute(update(Delivery).where(Delivery.campaign_id == campaign_id)
                            .values(enqueued_at=datetime.now(timezone.utc)))
        enqueued = actors.enqueue_deliveries(ids)
        if profile:
            spy = _py_spy(work, worker.pid)
        settled = 0
        while settled < due:
            time.sleep(0.5)
            with db.session() as session:
                settled = session.scalar(select(func.count()).where(
                    Delivery.campaign_id == campaign_id, Delivery.status.not_in(("scheduled", "sending")))
                    .select_from(Delivery))
            if worker.poll() is not None:
                raise RuntimeError(f"izin worker exited {worker.returncode}; see {work / 'worker.log'}")
    finally:
        spy_cpu_s = 0.0
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy_cpu_s = -_children_cpu_s()
            spy.wait(timeout=60)
            spy_cpu_s += _children_cpu_s()
        _stop(worker)
        actors.reset()
    cpu_s = _children_cpu_s() - cpu_before - spy_cpu_s  # the workers' own, py-spy's left out
    with db.session() as session:
        rows = session.execute(select(Delivery.status, Delivery.channel, Delivery.sent_at)
                               .where(Delivery.campaign_id == campaign_id)).all()
    db.dispose()
    sent = [r for r in rows if r.status == "sent"]
    finished = max(r.sent_at for r in sent).timestamp()
    latencies = [r.sent_at.timestamp() - started for r in sent]
    result = {"deliveries": due, "enqueued": enqueued, "sent": len(sent),
              "email": sum(1 for r in sent if r.channel == "email"), "sms": sum(1 for r in sent if r.channel == "sms"),
              "not_sent": len(rows) - len(sent), "seconds": finished - started,
              "per_s": len(sent) / (finished - started), "p50_s": percentile(latencies, 0.5),
              "p99_s": percentile(latencies, 0.99), "worker_cpu_ms_per_message": cpu_s / max(1, len(sent)) * 1e3}
    if spy is not None and (work / "py-spy.txt").exists():
        from profile_summary import summarise

        result["profile"] = [(name, round(share, 3)) for name, share in summarise(work / "py-spy.txt", 25)]
    return result


def _py_spy(work: Path, pid: int) -> subprocess.Popen[Any] | None:
    """py-spy over the worker and its children for the rest of the run (collapsed stacks)."""
    import shutil

    spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if spy is None:
        print("py-spy is not installed (pip install py-spy): no profile", file=sys.stderr)
        return None
    # --gil: only samples holding the GIL, i.e. the CPU a worker spends, not its waits
    return subprocess.Popen([spy, "record", "--pid", str(pid), "--subprocesses", "--gil", "--format", "raw",
                             "--rate", "50", "-o", str(work / "py-spy.txt")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def raw(emails: int, sms: int, smtp_port: int, http_port: int, processes: int, threads: int,
        work: Path) -> dict[str, Any]:
    """The same mix of pre-rendered messages through plain dramatiq actors: the emails with smtplib
    to the SMTP sink, the SMS as the webhook adapter's JSON POST with http.client to the HTTP sink."""
    from email.mime.text import MIMEText

    from dramatiq.brokers.redis import RedisBroker
    from jinja2 import Template

    from izin.campaigns.actors import enqueue_messages

    client = _flush_redis()
    template = Template(HTML)
    messages: list[tuple[str, tuple[Any, ...]]] = []
    for i in range(emails + sms):
        coupon = {"percent": 20, "code": f"EFSANE-{i:08d}", "expires_on": "2026-12-08"}
        # the SMS spread evenly among the emails, as a blast's channels interleave in the queue
        if i * sms // (emails + sms) != (i + 1) * sms // (emails + sms):
            text = f"Ayşe, Efsane Cuma: {coupon['code']} ile %20 indirim. RET yazip 4609'a gonderin"
            body = json.dumps({"to": f"+90532{i:07d}", "from": "ORNEKTIC", "text": text, "encoding": "gsm7-tr",
                               "segments": 1, "commercial": True, "recipient_type": "BIREYSEL", "delivery_id": i})
            messages.append(("raw_sms", (body,)))
            continue
        mime = MIMEText(template.render(contact={"first_name": "Ayşe"}, coupon=coupon), "html", "utf-8")
        mime["Subject"], mime["From"], mime["To"] = "Ayşe, Efsane Cuma başladı", "kampanya@ornek.com.tr", \
            f"c{i}@example.com"
        messages.append(("raw_send", ("kampanya@ornek.com.tr", f"c{i}@example.com", mime.as_string())))
    count = len(messages)
    env = {**os.environ, "BENCH_REDIS_URL": REDIS_URL, "BENCH_SMTP_PORT": str(smtp_port),
           "BENCH_HTTP_PORT": str(http_port), "dramatiq_queue_prefetch": "200", "PYTHONPATH": str(BENCH)}
    cpu_before = _children_cpu_s()
    worker = subprocess.Popen([sys.executable, "-m", "dramatiq", "raw_actor", "--processes", str(processes),
                               "--threads", str(threads)], cwd=BENCH, env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=open(work / "raw-worker.log", "w"))
    try:
        _wait_for_workers(client, processes)
        broker = RedisBroker(url=REDIS_URL)
        import dramatiq

        actors = {name: dramatiq.Actor(lambda *a: None, actor_name=name, queue_name="bench-raw", broker=broker,
                                       priority=0, options={}) for name in ("raw_send", "raw_sms")}
        started = time.time()
        for start in range(0, count, 1_000):
            enqueue_messages(broker, [actors[name].message(*args, time.time())
                                      for name, args in messages[start:start + 1_000]])
        while client.llen("bench:raw:done") < count:
            time.sleep(0.2)
            if worker.poll() is not None:
                raise RuntimeError(f"the raw worker exited {worker.returncode}; see {work / 'raw-worker.log'}")
    finally:
        _stop(worker)
    cpu_s = _children_cpu_s() - cpu_before
    done = [tuple(map(float, item.split(b","))) for item in client.lrange("bench:raw:done", 0, -1)]
    finished = max(accepted for _, accepted in done)
    latencies = [accepted - started for _, accepted in done]
    return {"sent": len(done), "email": emails, "sms": sms, "seconds": finished - started,
            "per_s": len(done) / (finished - started), "p50_s": percentile(latencies, 0.5),
            "p99_s": percentile(latencies, 0.99), "worker_cpu_ms_per_message": cpu_s / max(1, len(done)) * 1e3}


def gate_cost(url: str, samples: int = 2_000) -> dict[str, float]:
    """Microseconds per message of the worker's re-check (consent, frequency cap, bounces, window),
    asked as a worker asks it: for a batch of actors.BATCH claimed deliveries at a time."""
    from sqlalchemy import select

    from izin.campaigns.actors import BATCH
    from izin.campaigns.deliver import recheck
    from izin.campaigns.models import Campaign, Delivery
    from izin.campaigns.spec import parse_campaign
    from izin.config import Settings
    from izin.consent.models import Contact
    from izin.db import Database

    db = Database(url)
    settings = Settings.model_validate({"policy": {"send_window": "00:00-24:00", "frequency_cap": "100/1d"}})
    now = datetime.now(timezone.utc)
    with db.session() as session:
        deliveries = list(session.scalars(select(Delivery).order_by(Delivery.id).limit(samples)))
        contacts = {c.id: c for c in session.scalars(
            select(Contact).where(Contact.id.in_({d.contact_id for d in deliveries})))}
        campaigns = {row.id: parse_campaign(row.spec_yaml) for row in session.scalars(select(Campaign))}
        started = time.perf_counter()
        for start in range(0, len(deliveries), BATCH):
            recheck(session, settings, deliveries[start:start + BATCH], contacts, campaigns, now)
        elapsed = time.perf_counter() - started
        session.rollback()
    db.dispose()
    return {"samples": len(deliveries), "us_per_message": elapsed / max(1, len(deliveries)) * 1e6}


@contextmanager
def sinks() -> Iterator[tuple[int, int, str]]:
    """An SMTP sink and an HTTP SMS sink on loopback for the run: (smtp port, http port, sink name)."""
    smtp_port, http_port = free_port(), free_port()
    smtp, sink_name = start_smtp_sink(smtp_port)
    http = start_http_sink(http_port)
    try:
        yield smtp_port, http_port, sink_name
    finally:
        for process in (smtp, http):
            process.terminate()
            process.wait(timeout=10)


def run(url: str, deliveries: int, processes: int = 2, threads: int = 8, profile: bool = False,
        work: Path | None = None) -> dict[str, Any]:
    """The whole comparison on one (empty) database: seed, izin, the raw stack, the gate's cost."""
    from izin.clock import now as clock_now

    work = work or Path(tempfile.mkdtemp(prefix="izin-send-"))
    work.mkdir(parents=True, exist_ok=True)
    with sinks() as (smtp_port, http_port, sink_name):
        started = time.perf_counter()
        campaign = seed(url, work, deliveries, clock_now())
        print(f"seeded {deliveries:,} contacts in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        izin = engine(url, work, campaign, smtp_port, http_port, processes, threads, profile)
        print(f"izin: {izin}", file=sys.stderr)
        baseline = raw(izin["email"], izin["sms"], smtp_port, http_port, processes, threads, work)
        print(f"raw: {baseline}", file=sys.stderr)
        gate = gate_cost(url)
    return {"sink": sink_name, "processes": processes, "threads": threads, "izin": izin, "raw": baseline,
            "gate": gate, "ratio": izin["per_s"] / baseline["per_s"]}


WAVE = """name: {name}
trigger: {{type: once, at: "{at}"}}
audience: {{attribute: wave, eq: 1}}
channels: [email, sms]
content:
  email: {{subject: "Merhaba {{{{ contact.first_name }}}}", html_inline: "<p>Merhaba {{{{ contact.first_name }}}}</p>"}}
  sms: {{text: "Merhaba {{{{ contact.first_name }}}}"}}
"""


def run_wave(url: str, name: str, work: Path, processes: int = 2, threads: int = 8) -> dict[str, Any]:
    """Send the fixed audience (attribute wave=1, the same contacts at every base size) on a base
    that already exists: how sending costs when the contact table grows."""
    from izin.clock import now as clock_now

    work.mkdir(parents=True, exist_ok=True)
    path = work / f"{name}.yaml"
    path.write_text(WAVE.format(name=name, at=(clock_now() - timedelta(minutes=1)).isoformat()), encoding="utf-8")
    with sinks() as (smtp_port, http_port, _):
        return engine(url, work, path, smtp_port, http_port, processes, threads, profile=False)


def database_url(kind: str, work: Path, base: str | None = None) -> tuple[str, Any]:
    """A fresh database of that kind, and how to drop it afterwards."""
    work.mkdir(parents=True, exist_ok=True)
    if kind == "sqlite":
        return f"sqlite:///{work / 'bench.db'}", lambda: None
    import uuid

    from sqlalchemy import create_engine, text

    base = base or os.environ.get("BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(base)
    with admin.begin() as conn:
        conn.execute(text(f"create schema {schema}"))

    def drop() -> None:
        with admin.begin() as conn:
            conn.execute(text(f"drop schema {schema} cascade"))
        admin.dispose()

    return f"{base}?options=-csearch_path%3D{schema}", drop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=10_000)
    parser.add_argument("--database", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--profile", action="store_true", help="py-spy the izin workers (collapsed stacks)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="izin-send-"))
    url, drop = database_url(args.database, work)
    try:
        result = run(url, args.deliveries, args.processes, args.threads, args.profile, work)
    finally:
        drop()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
