"""The demo: `python3 scripts/demo.py`.

Creates ./.venv if needed, then in ./demo, in embedded mode (SQLite, no broker): imports the sample
contacts, consents and purchases (bad rows go to rejects files), validates the example campaigns,
plans and schedules the birthday campaign, takes an SMS opt-out that arrives before sending, sends
into ./demo/outbox, and shows where every delivery stands, why one went, and the verified audit
log. Runs at a fixed instant (IZIN_NOW) so the output is the same every time.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from bootstrap import ROOT, ensure_venv, venv_bin

DEMO = ROOT / "demo"
SAMPLE = ROOT / "scripts" / "sample"
NOW = "2026-11-24T14:00:00+03:00"
EXAMPLES = ROOT / "izin" / "campaigns" / "examples"

CONFIG = """\
[sender]
name = "Örnek Ticaret A.Ş."
mersis = "0123456789000015"
phone = "+90 212 555 00 00"
email = "destek@ornek.com.tr"
sms_header = "ORNEKTIC"
sms_optout = "RET yazip 4609'a gonderin"

[database]
url = "sqlite:///izin.db"

[web]
base_url = "http://127.0.0.1:8000"
secret_key = "demo-secret-change-me"
"""


def izin(*args: str) -> None:
    print(f"\n$ izin {' '.join(args)}", flush=True)
    result = subprocess.run([str(venv_bin("izin")), *args], cwd=DEMO)
    if result.returncode not in (0, 1):
        sys.exit(result.returncode)


def main() -> None:
    ensure_venv()
    if DEMO.exists():
        shutil.rmtree(DEMO)
    DEMO.mkdir()
    (DEMO / "izin.toml").write_text(CONFIG, encoding="utf-8")
    os.environ["IZIN_NOW"] = NOW
    for name in ("IZIN_DATABASE_URL", "IZIN_CONFIG", "IZIN_BROKER_URL"):
        os.environ.pop(name, None)
    izin("init")
    izin("contacts", "import", str(SAMPLE / "contacts.csv"), "--rejects", "contacts.rejects.csv")
    izin("consent", "import", str(SAMPLE / "consents.csv"), "--rejects", "consents.rejects.csv")
    izin("events", "import", str(SAMPLE / "events.csv"), "--rejects", "events.rejects.csv")
    izin("campaign", "validate", *(str(p) for p in sorted(EXAMPLES.glob("*.yaml"))))
    birthday = str(EXAMPLES / "dogum-gunu.yaml")
    izin("campaign", "plan", birthday)
    izin("campaign", "schedule", birthday)
    # Zeynep answers an earlier SMS with RET before the worker runs: her queued greeting is cancelled
    izin("consent", "withdraw", "C003", "--channel", "sms", "--source", "HS_MESAJ", "--proof", "SMS reply: RET")
    izin("worker", "--burst")
    izin("campaign", "status", birthday)
    izin("audit", "why", "1")
    izin("consent", "summary")
    izin("audit", "export", "--kind", "all", "--format", "ndjson", "-o", "audit.ndjson")
    izin("audit", "verify")
    print(f"\nEverything is in {DEMO}: izin.db, the messages in outbox/, audit.ndjson, and the *.rejects.csv "
          "files with each bad row's line and reason.")


if __name__ == "__main__":
    main()
