"""Create ./.venv and install izin (editable, with test extras) into it when needed.

Used by scripts/demo.py and scripts/test.py so that both work on a fresh machine with only
Python 3.11+. Re-installs only when pyproject.toml changes.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
STAMP = VENV / ".izin-installed"


def venv_bin(name: str) -> Path:
    folder = "Scripts" if os.name == "nt" else "bin"
    suffix = ".exe" if os.name == "nt" else ""
    return VENV / folder / f"{name}{suffix}"


def ensure_venv() -> Path:
    """Return the venv's python, creating and installing first if needed."""
    if sys.version_info < (3, 11):
        sys.exit(f"izin needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    python = venv_bin("python")
    if not python.exists():
        print(f"creating {VENV}", file=sys.stderr)
        venv.create(VENV, with_pip=True)
    key = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if not STAMP.exists() or STAMP.read_text() != key:
        print("installing izin and its dependencies into .venv", file=sys.stderr)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                        "-e", f"{ROOT}[test]"], check=True)
        STAMP.write_text(key)
    return python
