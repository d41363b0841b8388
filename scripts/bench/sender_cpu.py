"""The engine's CPU per message, in one thread: claim, re-check, render, send and mark, without the broker.

    python scripts/bench/sender_cpu.py --deliveries 5000 [--database postgresql|sqlite]

send.py's end-to-end figures share two cores between the workers, the database, Redis and both
sinks, and move with whatever else the machine does; this one calls `Sender.process_many` on
batches of actors.BATCH in this process, against the same sinks and data, and reports the CPU
time of this process (its mark writer thread included) per message. It is the figure to compare
two versions of the sending path with, run after run, one after the other.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import send  # noqa: E402  (puts the project on the path)

from izin.campaigns.actors import BATCH  # noqa: E402
from izin.campaigns.deliver import Sender  # noqa: E402
from izin.campaigns.schedule import schedule_campaign  # noqa: E402
from izin.campaigns.spec import load_campaign  # noqa: E402
from izin.clock import now as clock_now  # noqa: E402
from izin.config import load_settings  # noqa: E402
from izin.db import Database  # noqa: E402

#: deliveries sent first and left out of the figure: imports, template compiling, connections
WARM_UP = 200


def measure(url: str, work: Path, deliveries: int) -> dict[str, float]:
    with send.sinks() as (smtp_port, http_port, sink_name):
        campaign = send.seed(url, work, deliveries, clock_now())
        settings = load_settings(str(send._settings(work, url, smtp_port, http_port)))
        db = Database(url)
        with db.session() as session:
            ids = schedule_campaign(session, load_campaign(str(campaign)), settings, clock_now(), clock_now()).ids
        sender = Sender(settings, db, "bench-secret-key")
        try:
            sender.process_many(ids[:WARM_UP])
            measured = ids[WARM_UP:]
            cpu, wall = time.process_time(), time.perf_counter()
            sent = 0
            for start in range(0, len(measured), BATCH):
                outcomes = sender.process_many(measured[start:start + BATCH])
                sent += sum(1 for outcome in outcomes.values() if outcome.status == "sent")
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        finally:
            sender.close()
            db.dispose()
    return {"sink": sink_name, "measured": len(measured), "sent": sent,
            "cpu_ms_per_message": cpu / max(1, len(measured)) * 1e3,
            "wall_ms_per_message": wall / max(1, len(measured)) * 1e3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=5_000)
    parser.add_argument("--database", choices=("postgresql", "sqlite"), default="postgresql")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="izin-sender-cpu-"))
    url, drop = send.database_url(args.database, work)
    try:
        result = measure(url, work, max(args.deliveries, WARM_UP + BATCH))
    finally:
        drop()
    print(json.dumps({"database": args.database, **result}, indent=2))


if __name__ == "__main__":
    main()
