"""Import throughput: contacts, consents and events through izin against a plain batched INSERT.

    python scripts/bench/import_bench.py --contacts 100000 [--data DIR] [--postgres URL] [--skip-postgres]

`measure_import(url, data_dir)` is what scripts/bench/run.py calls: it migrates the (empty) database
at `url`, then times the library functions the CLI calls (`import_contacts`, `import_consents`,
`import_events`) on data_dir's contacts.csv, consents.csv and events.csv, and a plain batched
INSERT of the same contact rows into a bare table (the raw stack: csv module plus SQLAlchemy Core
executemany, no validation, no upsert).
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Column, MetaData, String, Table, create_engine, insert, text

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from izin.clock import parse_instant  # noqa: E402
from izin.consent.consent_import import import_consents  # noqa: E402
from izin.consent.contacts import import_contacts  # noqa: E402
from izin.consent.events import import_events  # noqa: E402
from izin.db import Database, upgrade  # noqa: E402

NOW = parse_instant("2026-11-24T12:00:00+03:00")
POLICY_TZ = ZoneInfo("Europe/Istanbul")
#: rows per executemany in the raw stack, as izin's imports batch them
RAW_BATCH_ROWS = 1_000


def raw_insert(url: str, path: Path) -> int:
    """The raw stack: every row of a CSV into a bare table of text columns, batched executemany."""
    engine = create_engine(url)
    try:
        with path.open(encoding="utf-8", newline="") as f:
            reader = csv.reader(f)
            header = next(reader)
            table = Table("raw_contacts", MetaData(), *(Column(c, String(320)) for c in header))
            statement = insert(table)
            rows = 0
            with engine.begin() as conn:
                table.create(conn)
                batch: list[dict[str, str]] = []
                for cells in reader:
                    batch.append(dict(zip(header, cells)))
                    if len(batch) == RAW_BATCH_ROWS:
                        conn.execute(statement, batch)
                        rows += len(batch)
                        batch = []
                if batch:
                    conn.execute(statement, batch)
                    rows += len(batch)
    finally:
        engine.dispose()
    return rows


def _cpu_s() -> float:
    """CPU seconds of this process and its finished children (the import's validation workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _timed(fn: Any, *args: Any) -> tuple[Any, float, float]:
    """(result, wall seconds, CPU seconds on this side: the database server's own work is not in it)."""
    started, cpu = time.perf_counter(), _cpu_s()
    value = fn(*args)
    return value, time.perf_counter() - started, _cpu_s() - cpu


def measure_import(url: str, data_dir: Path) -> dict[str, dict[str, float]]:
    """Rows, wall seconds and client CPU seconds per import on an empty database: contacts (izin),
    contacts_raw, consents, events."""
    data_dir = Path(data_dir)
    db = Database(url)
    results: dict[str, dict[str, float]] = {}
    try:
        upgrade(db)
        with tempfile.TemporaryDirectory() as tmp:
            rejects = Path(tmp)
            report, seconds, cpu = _timed(import_contacts, db, str(data_dir / "contacts.csv"), NOW,
                                          str(rejects / "contacts.rejects.csv"))
            results["contacts"] = {"rows": report.imported + report.updated + report.unchanged,
                                   "rejected": report.rejected, "seconds": seconds, "cpu_seconds": cpu}
            rows, seconds, cpu = _timed(raw_insert, url, data_dir / "contacts.csv")
            results["contacts_raw"] = {"rows": rows, "rejected": 0, "seconds": seconds, "cpu_seconds": cpu}
            report, seconds, cpu = _timed(import_consents, db, str(data_dir / "consents.csv"), NOW, POLICY_TZ,
                                          str(rejects / "consents.rejects.csv"))
            results["consents"] = {"rows": report.imported, "rejected": report.rejected, "seconds": seconds,
                                   "cpu_seconds": cpu}
            report, seconds, cpu = _timed(import_events, db, str(data_dir / "events.csv"), NOW, POLICY_TZ,
                                          str(rejects / "events.rejects.csv"))
            results["events"] = {"rows": report.imported + report.unchanged, "rejected": report.rejected,
                                 "seconds": seconds, "cpu_seconds": cpu}
    finally:
        db.dispose()
    return results


def table(runs: dict[str, dict[str, dict[str, float]]]) -> str:
    """A markdown table: rows per second per import and backend, and the ratio izin / raw."""
    def rate(r: dict[str, float]) -> float:
        return r["rows"] / r["seconds"] if r["seconds"] else 0.0

    lines = ["| measure | " + " | ".join(runs) + " |", "|---|" + "---|" * len(runs)]
    for label, key in (("contacts/s (izin, validated)", "contacts"), ("contacts/s (plain batched INSERT)",
                       "contacts_raw"), ("consent events/s (izin)", "consents"), ("events/s (izin)", "events")):
        lines.append(f"| {label} | " + " | ".join(
            f"{rate(r[key]):,.0f} ({r[key]['rows']:,.0f} in {r[key]['seconds']:.1f} s, "
            f"CPU {r[key]['cpu_seconds']:.1f} s)" for r in runs.values()) + " |")
    lines.append("| ratio izin / raw (contacts) | " + " | ".join(
        f"{rate(r['contacts']) / rate(r['contacts_raw']):.2f}" for r in runs.values()) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--data", type=Path, help="reuse generated data in this folder (made if missing)")
    parser.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--skip-sqlite", action="store_true")
    args = parser.parse_args()
    data = args.data or Path(tempfile.mkdtemp(prefix="izin-import-bench-"))
    if not (data / "contacts.csv").is_file():
        subprocess.run([sys.executable, str(ROOT / "scripts/bench/generate.py"), "--contacts", str(args.contacts),
                        "--out", str(data)], check=True)
    runs: dict[str, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as work:
        if not args.skip_sqlite:
            print("running sqlite ...", file=sys.stderr, flush=True)
            runs["sqlite"] = measure_import(f"sqlite:///{Path(work) / 'bench.db'}", data)
        if not args.skip_postgres:
            schema = f"bench_{uuid.uuid4().hex[:8]}"
            admin = create_engine(args.postgres)
            with admin.begin() as conn:
                conn.execute(text(f"create schema {schema}"))
            try:
                print("running postgresql ...", file=sys.stderr, flush=True)
                runs["postgresql"] = measure_import(f"{args.postgres}?options=-csearch_path%3D{schema}", data)
            finally:
                with admin.begin() as conn:
                    conn.execute(text(f"drop schema {schema} cascade"))
                admin.dispose()
    print(table(runs))
    print(f"load average afterwards: {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores "
          "(other processes' load slows the wall-clock figures; CPU is this process and its workers)")


if __name__ == "__main__":
    main()
