#!/usr/bin/env bash
# Install izin with a plain `pip install .` into a throw-away venv and run it outside the source tree.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet --disable-pip-version-check "$root"
cd "$work"
export IZIN_NOW=2026-11-24T12:00:00+03:00
"$work/venv/bin/izin" init
"$work/venv/bin/izin" contacts import "$root/scripts/sample/contacts.csv" --rejects rejects.csv
"$work/venv/bin/izin" audit verify
echo "check_install: a plain pip install works outside the source tree"
