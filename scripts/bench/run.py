"""Benchmarks at scale: izin against the raw stack measured in the same run, on SQLite and PostgreSQL.

    python scripts/bench/run.py                          # 10k, 100k and 1M contacts, both databases
    python scripts/bench/run.py --sizes 2000 --send 1000 --audit-records 0 --out /tmp/smoke.md   # smoke run

For each database the base grows through each size (10k, then 90k more, then 900k more): each
increment is imported through izin's own imports (validation included) and the same contact rows
through a plain batched INSERT; then, at that size, a birthday tick, a whole-base discount blast
(planned as a dry run, then scheduled with its deliveries inserted), an after_event follow-up tick,
each against one plain SQL statement doing the bare set work, and the sending of a fixed audience
(the same ~1,600 deliveries at every size) through Redis and `izin worker`. At the largest size:
the end-to-end sending comparison (send.py: 100,000 deliveries against a plain dramatiq+smtplib
actor), the send gate's cost per message, and the audit export of 3,000,000 records (NDJSON and
CSV, records per second and peak RSS) and `izin audit verify`, against a plain SELECT written out.
Results go to docs/benchmarks.md (or --out) with the machine, versions and date.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from sqlalchemy import text

ROOT = Path(__file__).resolve().parents[2]
BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

import send  # noqa: E402
from import_bench import measure_import  # noqa: E402
from izin.campaigns.models import Campaign as CampaignRow  # noqa: E402
from izin.campaigns.plan import birthday_query, plan_campaign  # noqa: E402
from izin.campaigns.schedule import schedule_campaign  # noqa: E402
from izin.campaigns.spec import parse_campaign  # noqa: E402
from izin.clock import parse_instant  # noqa: E402
from izin.config import Settings  # noqa: E402
from izin.db import Database, upgrade  # noqa: E402

console = Console(stderr=True)
NOW = parse_instant("2026-11-24T12:00:00+03:00")
CONTENT = ('content:\n  sms: {text: "{{ contact.first_name }}, iyi ki dogdun!"}\n'
           '  email: {subject: "Iyi ki dogdun", html_inline: "<p>Merhaba {{ contact.first_name }}</p>"}\n')
BIRTHDAY = 'name: bench-dogum-gunu\ntrigger: {type: birthday, send_time: "10:00"}\nchannels: [sms, email]\n' + CONTENT
BLAST = ('name: bench-blast-{n}\ntrigger: {{type: once, at: "2026-11-24T11:00:00+03:00"}}\nchannels: [email, sms]\n'
         + CONTENT.replace("{", "{{").replace("}", "}}"))
FOLLOW_UP = ('name: bench-yorum\ntrigger: {type: after_event, event: purchase, delay: 3d, send_time: "11:00"}\n'
             'channels: [email, sms]\n' + CONTENT)
#: the settings planning is measured under: the product's defaults (3 messages a week per contact)
SETTINGS = Settings()
#: for filling the log up to the audit's size: blasts that no cap stops
UNCAPPED = Settings.model_validate({"policy": {"frequency_cap": "1000/1d"}})


def timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    value = fn(*args, **kwargs)
    return value, time.perf_counter() - started


def generate(work: Path, first: int, count: int) -> Path:
    folder = work / f"data-{first}"
    subprocess.run([sys.executable, str(BENCH / "generate.py"), "--contacts", str(count), "--first-id", str(first),
                    "--out", str(folder)], check=True, stdout=subprocess.DEVNULL)
    return folder


# --- planning ---------------------------------------------------------------------------------


def query_plan(db: Database) -> str:
    """What the database does for a birthday tick's query: it must read the (month, day) index."""
    from sqlalchemy import literal

    query = birthday_query(literal(True).label("in_audience"), NOW)
    with db.engine.connect() as conn:
        compiled = query.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True})
        prefix = "EXPLAIN QUERY PLAN " if conn.dialect.name == "sqlite" else "EXPLAIN "
        rows = conn.exec_driver_sql(prefix + str(compiled)).all()
    return " / ".join(str(row[-1]) for row in rows)


def raw_plan(db: Database, which: str, size: int) -> tuple[int, float]:
    """The bare set work in one SQL statement: contacts due with an ONAY on email (and, for the
    blast, the rows written with a plain executemany into a bare table)."""
    where = {"birthday": "c.birth_month = 11 and c.birth_day in (23, 24)", "blast": "1 = 1"}[which]
    started = time.perf_counter()
    with db.engine.begin() as conn:
        rows = conn.exec_driver_sql(
            "select c.id, c.email from contacts c join consent_state s on s.recipient = c.email "
            f"and s.channel = 'email' and s.status = 'ONAY' where {where}").all()
        if which == "blast":
            table = f"raw_deliveries_{size}"
            conn.exec_driver_sql(f"create table {table} (contact_id integer, recipient varchar(320))")
            conn.execute(text(f"insert into {table} values (:c, :r)"), [{"c": i, "r": e} for i, e in rows])
    return len(rows), time.perf_counter() - started


def planning(db: Database, size: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with db.session() as session:
        plan, seconds = timed(plan_campaign, session, parse_campaign(BIRTHDAY), SETTINGS, NOW)
        session.rollback()
    results["birthday"] = {"deliveries": len(plan.deliveries), "seconds": seconds,
                           "raw": dict(zip(("rows", "seconds"), raw_plan(db, "birthday", size)))}
    blast = parse_campaign(BLAST.format(n=size))
    with db.session() as session:
        plan, seconds = timed(plan_campaign, session, blast, SETTINGS, NOW)
        planned = len(plan.deliveries)
        del plan
        session.rollback()
    with db.session() as session:
        report, scheduled_s = timed(schedule_campaign, session, blast, SETTINGS, NOW, NOW)
    results["blast"] = {"deliveries": planned, "plan_seconds": seconds, "created": report.created,
                        "schedule_seconds": scheduled_s,
                        "raw": dict(zip(("rows", "seconds"), raw_plan(db, "blast", size)))}
    # a follow-up campaign that started four days ago: today's tick follows up the purchases of one day
    with db.session() as session:
        session.merge(CampaignRow(id=10_000 + size, name=f"bench-yorum-{size}", started_at=NOW - timedelta(days=4)))
    follow_up = parse_campaign(FOLLOW_UP.replace("bench-yorum", f"bench-yorum-{size}"))
    with db.session() as session:
        plan, seconds = timed(plan_campaign, session, follow_up, SETTINGS, NOW)
        session.rollback()
    results["follow_up"] = {"deliveries": len(plan.deliveries), "seconds": seconds}
    return results


# --- audit ------------------------------------------------------------------------------------


def fill_log(db: Database, records: int) -> int:
    """Blast the base (no cap) until consent events and deliveries together reach `records`."""
    with db.engine.connect() as conn:
        have = conn.exec_driver_sql("select (select count(*) from consent_events) + "
                                    "(select count(*) from deliveries)").scalar_one()
    round_ = 0
    while have < records:
        with db.session() as session:
            report = schedule_campaign(session, parse_campaign(BLAST.format(n=f"fill-{round_}")), UNCAPPED, NOW, NOW)
        if report.created == 0:
            raise RuntimeError("the base is too small to fill the log")
        have += report.created
        round_ += 1
    return have


def _measured(command: list[str], url: str) -> tuple[float, float, str]:
    """(seconds, peak RSS MiB, stderr) of one izin command in its own process."""
    code = ("import resource,subprocess,sys,time;t=time.perf_counter();"
            f"r=subprocess.run({command!r},capture_output=True,text=True);"
            "print(time.perf_counter()-t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss/1024);"
            "print(r.stderr.strip().replace(chr(10),' '))")
    env = {**os.environ, "IZIN_DATABASE_URL": url, "IZIN_NOW": NOW.isoformat(), "IZIN_SECRET_KEY": "bench-secret-key"}
    lines = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                           check=True).stdout.splitlines()
    seconds, rss = lines[0].split()
    return float(seconds), float(rss), lines[1] if len(lines) > 1 else ""


def raw_export(db: Database, out: Path) -> tuple[int, float]:
    """The same tables read with a plain SELECT and written with csv.writer, nothing formatted."""
    started = time.perf_counter()
    count = 0
    with db.engine.connect() as conn, out.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        for table in ("consent_events", "deliveries"):
            result = conn.execution_options(yield_per=2_000).exec_driver_sql(f"select * from {table} order by id")
            for row in result:
                writer.writerow(row)
                count += 1
    return count, time.perf_counter() - started


def audit(db: Database, url: str, records: int, work: Path) -> dict[str, Any]:
    total = fill_log(db, records)
    results: dict[str, Any] = {"records": total}
    izin = [sys.executable, "-m", "izin"]
    for fmt in ("ndjson", "csv"):
        out = work / f"audit.{fmt}"
        seconds, rss, said = _measured(izin + ["audit", "export", "--kind", "all", "--format", fmt, "-o", str(out)],
                                       url)
        results[fmt] = {"seconds": seconds, "rss_mib": rss, "said": said, "bytes": out.stat().st_size}
        out.unlink()
    seconds, rss, said = _measured(izin + ["audit", "verify"], url)
    results["verify"] = {"seconds": seconds, "rss_mib": rss, "said": said[:160]}
    rows, seconds = raw_export(db, work / "raw.csv")
    (work / "raw.csv").unlink()
    results["raw"] = {"rows": rows, "seconds": seconds}
    return results


# --- the run ----------------------------------------------------------------------------------


def bench(kind: str, url: str, sizes: list[int], send_deliveries: int, audit_records: int,
          work: Path, profile: bool) -> dict[str, Any]:
    db = Database(url)
    upgrade(db)
    results: dict[str, Any] = {"sizes": {}}
    previous = 0
    for size in sizes:
        console.print(f"[bold]{kind}[/]: growing the base to {size:,} contacts")
        data = generate(work, previous, size - previous)
        step: dict[str, Any] = {"import": measure_import(url, data)}
        with db.engine.begin() as conn:
            conn.exec_driver_sql("drop table raw_contacts")  # the raw stack's table, made again next size
        console.print(f"  import: {json.dumps(step['import'])}")
        step["planning"] = planning(db, size)
        console.print(f"  planning: {json.dumps(step['planning'])}")
        step["wave"] = send.run_wave(url, f"bench-wave-{size}", work)
        console.print(f"  sending the fixed audience: {json.dumps(step['wave'])}")
        results["sizes"][size] = step
        previous = size
    results["query_plan"] = query_plan(db)
    if send_deliveries:
        console.print(f"[bold]{kind}[/]: end-to-end sending, {send_deliveries:,} deliveries")
        send_url, drop = send.database_url(kind, work / "send")
        try:
            results["send"] = send.run(send_url, send_deliveries, work=work / "send", profile=profile)
        finally:
            drop()
        console.print(f"  {json.dumps(results['send'])}")
    if audit_records:
        console.print(f"[bold]{kind}[/]: audit export of {audit_records:,} records")
        results["audit"] = audit(db, url, audit_records, work)
        console.print(f"  {json.dumps(results['audit'])}")
    db.dispose()
    return results


def versions() -> str:
    import importlib.metadata as meta

    names = ("sqlalchemy", "dramatiq", "redis", "psycopg", "orjson", "jinja2")
    parts = [f"{n} {meta.version(n)}" for n in names]
    for command in (["psql", "--version"], ["redis-server", "--version"]):
        try:
            parts.append(subprocess.run(command, capture_output=True, text=True).stdout.split("\n")[0].strip())
        except FileNotFoundError:
            pass
    import sqlite3

    return ", ".join(parts + [f"SQLite {sqlite3.sqlite_version}"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000", help="base sizes, comma-separated, growing")
    parser.add_argument("--send", type=int, default=100_000, help="deliveries of the end-to-end sending run (0: skip)")
    parser.add_argument("--audit-records", type=int, default=3_000_000, help="records in the audit export (0: skip)")
    parser.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--skip-sqlite", action="store_true")
    parser.add_argument("--profile", action="store_true",
                        help="py-spy the izin workers during the end-to-end run: where their time goes")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    work = Path(tempfile.mkdtemp(prefix="izin-bench-"))
    started = time.perf_counter()
    table: dict[str, Any] = {}
    kinds = [k for k, skip in (("sqlite", args.skip_sqlite), ("postgresql", args.skip_postgres)) if not skip]
    for kind in kinds:
        url, drop = send.database_url(kind, work / kind, args.postgres)
        try:
            table[kind] = bench(kind, url, sizes, args.send, args.audit_records, work / kind, args.profile)
        finally:
            drop()
    (work / "results.json").write_text(json.dumps(table, indent=2, default=str), encoding="utf-8")
    from report import write_report

    command = " ".join(["python", "scripts/bench/run.py", *sys.argv[1:]])
    report = write_report(table, sizes, command, versions(), time.perf_counter() - started)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report, encoding="utf-8")
    print(report)
    console.print(f"raw results: {work / 'results.json'}; report: {args.out}")


if __name__ == "__main__":
    main()
