"""Run the test suite in ./.venv (created on first use): `python3 scripts/test.py [pytest args]`.

PostgreSQL and Redis tests skip when those services are down; with IZIN_REQUIRE_SERVICES=1 (CI)
they fail instead.
"""

from __future__ import annotations

import os
import sys

from bootstrap import ROOT, ensure_venv

if __name__ == "__main__":
    python = ensure_venv()
    os.chdir(ROOT)
    os.execv(str(python), [str(python), "-m", "pytest", *sys.argv[1:]])
