"""The `izin` command as a user meets it: help texts, exit statuses, consent commands end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import click
import pytest

from conftest import NOW, add_contact
from izin.cli import cli as root


def _commands(group: click.Group, prefix: tuple[str, ...] = ()):
    for name, command in group.commands.items():
        yield (*prefix, name), command
        if isinstance(command, click.Group):
            yield from _commands(command, (*prefix, name))


def test_every_command_has_help_text():
    missing = [" ".join(path) for path, command in _commands(root) if not (command.help or "").strip()]
    assert missing == []
    names = {" ".join(path) for path, _ in _commands(root)}
    assert {"init", "contacts import", "events import", "consent grant", "consent withdraw", "consent import",
            "consent show", "consent summary", "consent purge", "audit export", "audit verify"} <= names


@pytest.fixture
def people(cli, db):
    add_contact(db, "C1", email="ayse@example.com", phone="+905321112233")
    add_contact(db, "T1", email="satin@firma.com.tr", recipient_type="TACIR")
    return cli


def test_grant_withdraw_show_summary(people):
    cli = people
    granted = cli("consent", "grant", "C1", "--channel", "email", "--source", "hs_web",
                  "--at", "2026-11-20T10:00:00+03:00", "--proof", "form v3")
    assert granted.stdout.startswith("recorded event #1: ONAY email ayse@example.com (HS_WEB, BIREYSEL) hash ")
    again = cli("consent", "grant", "C1", "--channel", "email", "--source", "HS_WEB")
    assert again.stdout == ("unchanged: ayse@example.com is already ONAY on email since 2026-11-20T10:00:00+03:00 "
                            "(event #1); nothing recorded\n")
    first_ret = cli("consent", "withdraw", "T1", "--channel", "email", "--source", "HS_CAGRI_MERKEZI", "--json")
    document = json.loads(first_ret.stdout)
    assert (document["id"], document["status"], document["iys_uploadable"], document["notes"]) == (
        2, "RET", False, ["kept as a local suppression; İYS refuses a first-ever RET, so it will not be uploaded"])
    shown = json.loads(cli("consent", "show", "C1", "--json").stdout)
    assert shown["current"] == {
        "email": {"recipient": "ayse@example.com", "may_send": True, "reason": None, "basis": "onay", "event_id": 1},
        "sms": {"recipient": "+905321112233", "may_send": False, "reason": "no_consent", "basis": None,
                "event_id": None},
        "call": {"recipient": "+905321112233", "may_send": False, "reason": "no_consent", "basis": None,
                 "event_id": None},
    }
    assert [(h["id"], h["status"], h["proof"]) for h in shown["history"]] == [(1, "ONAY", "form v3")]
    summary = json.loads(cli("consent", "summary", "--json").stdout)
    assert summary == {"contacts": 2, "events": 2, "addresses": {"email": {"ONAY": 1, "RET": 1},
                                                                  "sms": {"ONAY": 0, "RET": 0},
                                                                  "call": {"ONAY": 0, "RET": 0}}}


@pytest.mark.parametrize(("args", "message"), [
    (("consent", "grant", "NOPE", "--channel", "email", "--source", "HS_WEB"),
     "izin: error: no contact with external_id 'NOPE'; import it with `izin contacts import`\n"),
    (("consent", "grant", "C1", "--channel", "email", "--source", "HS_WEB", "--at", "yesterday"),
     "izin: error: --at: 'yesterday' is not an ISO 8601 time; write e.g. 2026-11-24T10:00:00+03:00\n"),
    (("consent", "grant", "C1", "--channel", "email", "--source", "HS_WEB", "--at", "2026-11-20T10:00:00"),
     "izin: error: --at: '2026-11-20T10:00:00' has no UTC offset; add one, e.g. 2026-11-20T10:00:00+03:00\n"),
    (("consent", "grant", "C1", "--channel", "email", "--source", "HS_WEB", "--at", "2027-01-01T10:00:00+03:00"),
     "izin: error: consent date 2027-01-01T10:00:00+03:00 is in the future; give the moment the person "
     "actually consented\n"),
    (("consent", "grant", "C1", "--channel", "email", "--source", "WEB"),
     "izin: error: --source: unknown source 'WEB'; use an İYS code such as HS_WEB, HS_MESAJ, HS_FIZIKSEL_ORTAM, "
     "HS_ISLAK_IMZA, HS_CAGRI_MERKEZI\n"),
    (("consent", "show", "NOPE"), "izin: error: no contact with external_id 'NOPE'\n"),
])
def test_input_errors_exit_2_with_one_line(people, args, message):
    result = people(*args, expect=2)
    assert result.stderr == message
    assert result.stdout == ""


def test_uninitialised_database_says_run_init(tmp_path, monkeypatch):
    from conftest import Cli

    cli = Cli(f"sqlite:///{tmp_path / 'fresh.db'}", tmp_path, monkeypatch)
    result = cli("consent", "summary", expect=2)
    assert result.stderr == (f"izin: error: the database sqlite:///{tmp_path / 'fresh.db'} has no izin schema; "
                             "run `izin init` first\n")
    assert cli("init").stdout == f"created database sqlite:///{tmp_path / 'fresh.db'} (schema 0005)\n"
    assert cli("init").stdout == f"database sqlite:///{tmp_path / 'fresh.db'} is up to date (schema 0005)\n"


def test_unreachable_database_exits_3(tmp_path, monkeypatch):
    from conftest import Cli

    cli = Cli("postgresql+psycopg://postgres@127.0.0.1:9/test?connect_timeout=2", tmp_path, monkeypatch)
    result = cli("init", expect=3)
    assert result.stderr.startswith("izin: error: database unreachable (postgresql+psycopg://postgres@127.0.0.1:9/test")


def test_bad_config_exits_2_naming_file_and_key(tmp_path, monkeypatch):
    from conftest import Cli

    (tmp_path / "izin.toml").write_text('[policy]\nsend_window = "21:00-09:00"\n[sender]\nmersis = "12"\n',
                                        encoding="utf-8")
    cli = Cli(f"sqlite:///{tmp_path / 'x.db'}", tmp_path, monkeypatch)
    result = cli("init", expect=2)
    assert result.stderr == (
        "izin: error: izin.toml: sender.mersis: a MERSİS number is 16 digits\n"
        "izin: error: izin.toml: policy.send_window: '21:00-09:00' is not a window; write HH:MM-HH:MM with the "
        "start first, e.g. 09:00-21:00\n")


def test_installed_console_script_runs_end_to_end(tmp_path, db_url):
    """A real process, as a user runs it: init, import, grant, verify."""
    env = {**os.environ, "IZIN_DATABASE_URL": db_url, "IZIN_NOW": NOW}
    env.pop("IZIN_CONFIG", None)

    def izin(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "izin", *args], cwd=tmp_path, env=env, text=True,
                              capture_output=True, timeout=60)

    assert izin("init").returncode == 0
    (tmp_path / "c.csv").write_text("external_id,email\nC1,Ayse@Example.com\nC2,not-an-email\n", encoding="utf-8")
    imported = izin("contacts", "import", "c.csv")
    assert (imported.returncode, imported.stdout) == (0, "c.csv: 1 imported, 0 updated, 0 unchanged, 1 rejected "
                                                         "(see c.rejects.csv)\n")
    assert "Traceback" not in imported.stderr
    assert izin("consent", "grant", "C1", "--channel", "email", "--source", "HS_WEB").returncode == 0
    verified = izin("audit", "verify")
    assert verified.returncode == 0 and verified.stdout.startswith("ok: 1 consent events, chain intact; head #1 ")


def test_serve_refuses_the_default_secret(cli):
    result = cli("serve", expect=2, env={"IZIN_SECRET_KEY": "change-me"})
    assert result.stderr == ("izin: error: the secret key is the default 'change-me'; set IZIN_SECRET_KEY or "
                             "[web] secret_key, since it signs every unsubscribe link\n")


def test_serve_answers_on_its_port(tmp_path, db_url):
    import socket
    import time
    import urllib.request

    env = {**os.environ, "IZIN_DATABASE_URL": db_url, "IZIN_SECRET_KEY": "test-secret"}
    subprocess.run([sys.executable, "-m", "izin", "init"], cwd=tmp_path, env=env, check=True, capture_output=True)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "izin", "serve", "--port", str(port)], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        body = None
        while time.monotonic() < deadline and body is None:
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2).read()
            except OSError:
                time.sleep(0.2)
        assert body == b"ok"
    finally:
        server.terminate()
        server.wait(timeout=30)
