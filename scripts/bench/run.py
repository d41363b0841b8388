"""Benchmarks: izin against the raw stack, measured in the same run, on SQLite and PostgreSQL.

    python scripts/bench/run.py --contacts 100000 [--postgres postgresql+psycopg://postgres@127.0.0.1/test]

Generates data (scripts/bench/generate.py), then measures: contacts and consents imported per second
through izin (validation included) against a plain batched INSERT of the same rows; a birthday tick
and a whole-base blast plan; the audit export (records per second, peak RSS of the exporting process).
Prints a table and writes docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from izin.campaigns.plan import plan_campaign  # noqa: E402
from izin.campaigns.spec import parse_campaign  # noqa: E402
from izin.clock import parse_instant  # noqa: E402
from izin.config import Settings  # noqa: E402
from izin.consent.consent_import import import_consents  # noqa: E402
from izin.consent.contacts import import_contacts  # noqa: E402
from izin.db import Database, upgrade  # noqa: E402

NOW = parse_instant("2026-11-24T12:00:00+03:00")
BIRTHDAY = 'name: bench-dogum-gunu\ntrigger: {type: birthday, send_time: "10:00"}\nchannels: [sms, email]\n' \
           'content:\n  sms: {text: "Iyi ki dogdun {{ contact.first_name }}"}\n' \
           '  email: {subject: "Iyi ki dogdun", html_inline: "<p>Merhaba</p>"}\n'
BLAST = BIRTHDAY.replace("bench-dogum-gunu", "bench-blast").replace(
    'trigger: {type: birthday, send_time: "10:00"}', 'trigger: {type: once, at: "2026-11-24T11:00:00+03:00"}')


def timed(label: str, results: dict[str, float], fn, *args):
    started = time.perf_counter()
    value = fn(*args)
    results[label] = time.perf_counter() - started
    return value


def raw_insert(url: str, path: Path) -> int:
    """The raw stack: the same rows into a bare table with batched executemany, no validation."""
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("create table raw_contacts (external_id varchar(128), first_name varchar(100), "
                          "last_name varchar(100), email varchar(320), phone varchar(32), birthday varchar(10))"))
    rows = 0
    with path.open(encoding="utf-8") as f, engine.begin() as conn:
        reader = csv.DictReader(f)
        batch = []
        for row in reader:
            batch.append({k: row[k] for k in ("external_id", "first_name", "last_name", "email", "phone", "birthday")})
            if len(batch) == 1000:
                conn.execute(text("insert into raw_contacts values (:external_id, :first_name, :last_name, :email, "
                                  ":phone, :birthday)"), batch)
                rows += len(batch)
                batch = []
        if batch:
            conn.execute(text("insert into raw_contacts values (:external_id, :first_name, :last_name, :email, "
                              ":phone, :birthday)"), batch)
            rows += len(batch)
    engine.dispose()
    return rows


def export_rss(url: str, out: Path) -> tuple[int, float, float]:
    """(records, seconds, peak RSS MiB) of `izin audit export` in its own process."""
    code = ("import resource,subprocess,sys,time;t=time.perf_counter();"
            f"r=subprocess.run([sys.executable,'-m','izin','audit','export','--kind','all','-o','{out}'],"
            "capture_output=True,text=True);dt=time.perf_counter()-t;"
            "print(r.stderr.strip().split()[1], dt, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss/1024)")
    env = {**os.environ, "IZIN_DATABASE_URL": url, "IZIN_NOW": NOW.isoformat()}
    records, seconds, rss = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                           check=True).stdout.split()
    return int(records), float(seconds), float(rss)


def bench(url: str, data: Path, contacts: int) -> dict[str, float]:
    results: dict[str, float] = {}
    db = Database(url)
    upgrade(db)
    settings = Settings()
    report = timed("import_contacts_s", results, import_contacts, db, str(data / "contacts.csv"), NOW)
    results["contacts"] = report.imported
    consents = timed("import_consents_s", results, import_consents, db, str(data / "consents.csv"), NOW,
                     NOW.tzinfo, None)
    results["consent_events"] = consents.imported
    results["raw_rows"] = timed("raw_insert_s", results, raw_insert, url, data / "contacts.csv")
    with db.session() as session:
        plan = timed("birthday_tick_s", results, plan_campaign, session, parse_campaign(BIRTHDAY), settings, NOW)
        session.rollback()
    results["birthday_deliveries"] = len(plan.deliveries)
    with db.session() as session:
        plan = timed("blast_plan_s", results, plan_campaign, session, parse_campaign(BLAST), settings, NOW)
        session.rollback()
    results["blast_deliveries"] = len(plan.deliveries)
    with tempfile.TemporaryDirectory() as tmp:
        records, seconds, rss = export_rss(url, Path(tmp) / "audit.ndjson")
    results.update(export_records=records, export_s=seconds, export_rss_mib=rss)
    db.dispose()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="izin-bench-"))
    subprocess.run([sys.executable, str(ROOT / "scripts/bench/generate.py"), "--contacts", str(args.contacts),
                    "--out", str(work)], check=True)
    runs = {"sqlite": f"sqlite:///{work / 'bench.db'}"}
    schema = None
    if not args.skip_postgres:
        schema = f"bench_{uuid.uuid4().hex[:8]}"
        admin = create_engine(args.postgres)
        with admin.begin() as conn:
            conn.execute(text(f"create schema {schema}"))
        runs["postgresql"] = f"{args.postgres}?options=-csearch_path%3D{schema}"
    table = {}
    try:
        for name, url in runs.items():
            print(f"running {name} ...", flush=True)
            table[name] = bench(url, work, args.contacts)
    finally:
        if schema:
            with admin.begin() as conn:
                conn.execute(text(f"drop schema {schema} cascade"))
    lines = [f"# Benchmarks ({datetime.now().date()}, {args.contacts:,} contacts)", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
             f"{platform.platform()}. Command: `python scripts/bench/run.py --contacts {args.contacts}`.", "",
             "| measure | " + " | ".join(table) + " |", "|---|" + "---|" * len(table)]
    def row(label, fn):
        lines.append(f"| {label} | " + " | ".join(fn(r) for r in table.values()) + " |")
    row("contacts imported per second (izin, validated)", lambda r: f"{r['contacts'] / r['import_contacts_s']:,.0f}")
    row("rows per second (plain batched INSERT)", lambda r: f"{r['raw_rows'] / r['raw_insert_s']:,.0f}")
    row("ratio izin / raw", lambda r: f"{(r['contacts'] / r['import_contacts_s']) / (r['raw_rows'] / r['raw_insert_s']):.2f}")
    row("consent events recorded per second", lambda r: f"{r['consent_events'] / r['import_consents_s']:,.0f}")
    row("birthday tick: seconds (deliveries)", lambda r: f"{r['birthday_tick_s']:.2f} ({r['birthday_deliveries']:,.0f})")
    row("whole-base blast plan: seconds (deliveries)", lambda r: f"{r['blast_plan_s']:.2f} ({r['blast_deliveries']:,.0f})")
    row("audit export: records per second", lambda r: f"{r['export_records'] / r['export_s']:,.0f}")
    row("audit export: peak RSS MiB", lambda r: f"{r['export_rss_mib']:.0f}")
    report = "\n".join(lines) + "\n"
    print(report)
    (ROOT / "docs").mkdir(exist_ok=True)
    (ROOT / "docs" / "benchmarks.md").write_text(report, encoding="utf-8")


if __name__ == "__main__":
    main()
