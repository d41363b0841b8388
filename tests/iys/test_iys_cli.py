"""`izin iys push | pull | status | reconcile` end to end against the fake İYS (both backends)."""

from __future__ import annotations

import json
from datetime import date, timedelta

from conftest import SENDER_TOML, add_contact
from izin.consent.models import Contact
from server import NOW, fake_iys, iys_section  # noqa: F401


def configure(cli, fake, require_accepted=True):
    (cli.cwd / "izin.toml").write_text(SENDER_TOML + iys_section(fake.url, require_accepted), encoding="utf-8")


def test_iys_commands_need_the_iys_section(cli):
    result = cli("iys", "push", expect=2)
    assert result.stderr == ("izin: error: [iys]: İYS is not configured; add an [iys] section to izin.toml with "
                             "base_url, username, password, iys_code and brand_code\n")


def test_push_pull_status_reconcile(cli, db, fake_iys):
    configure(cli, fake_iys)
    add_contact(db, "C1", email="c1@ornek.com.tr", phone="+905321112233")
    add_contact(db, "C2", email="c2@ornek.com.tr")
    # recorded before İYS was configured: still uploaded
    cli("consent", "grant", "C1", "--channel", "email", "--source", "HS_WEB", "--at", "2026-11-24T10:15:00+03:00")
    cli("consent", "grant", "C1", "--channel", "sms", "--source", "HS_MESAJ", "--at", "2026-11-24T10:20:00+03:00")
    cli("consent", "withdraw", "C2", "--channel", "email", "--source", "HS_WEB")  # first-ever RET: local

    before = cli("iys", "status", "--json")
    document = json.loads(before.stdout)
    assert document["counts"] == {"local": 1, "pending": 2, "sent": 0, "accepted": 0, "rejected": 0}
    assert document["oldest_pending"] == {
        "event_id": 1, "recipient": "c1@ornek.com.tr", "channel": "email", "status": "ONAY",
        "consent_date": "2026-11-24T10:15:00+03:00", "recorded_at": "2026-11-24T12:00:00+03:00",
        "deadline": "2026-11-27T10:15:00+03:00"}
    assert document["last_pull"] is None
    assert "no İYS pull (IYS) has ever succeeded" in before.stderr

    pushed = cli("iys", "push", "--poll-interval", "0")
    assert pushed.stdout == "İYS push: 2 events sent in 1 requests; 2 accepted, 0 rejected, 0 still unanswered\n"
    assert [c.body[0]["consentDate"] for c in fake_iys.api_calls("/consents/request")] == ["2026-11-24 10:15:00"]

    fake_iys.citizen("+905321112233", "MESAJ", "RET", NOW - timedelta(hours=2), source="IYS_3338")
    pulled = json.loads(cli("iys", "pull", "--json").stdout)
    assert (pulled["received"], pulled["appended"], pulled["withdrawals"]) == (1, 1, 1)
    shown = json.loads(cli("consent", "show", "C1", "--json").stdout)
    assert shown["current"]["sms"]["may_send"] is False
    assert [(h["status"], h["source"]) for h in shown["history"] if h["channel"] == "sms"] == [
        ("ONAY", "HS_MESAJ"), ("RET", "IYS_3338")]

    after = cli("iys", "status")
    assert after.stdout.splitlines()[:3] == [
        "İYS sync: local 1, pending 0, sent 0, accepted 3, rejected 0",
        "oldest waiting: none",
        "last successful pull: 2026-11-24T12:00:00+03:00"]
    assert "WARNING" not in after.stderr
    stale = cli("iys", "status", "--json", env={"IZIN_NOW": "2026-11-25T12:30:00+03:00"})
    assert json.loads(stale.stdout)["warnings"] == [
        "no İYS pull (IYS) has succeeded since 2026-11-24T12:00:00+03:00: citizens' opt-outs in İYS are not "
        "reaching izin; run `izin iys pull` at least hourly"]

    reconciled = json.loads(cli("iys", "reconcile", "--date", "2026-11-24", "--json").stdout)
    assert (reconciled["rows"], reconciled["matched"], reconciled["appended"]) == (3, 3, 0)
    assert cli("iys", "reconcile", "--date", "24.11.2026", expect=2).stderr == (
        "izin: error: --date: '24.11.2026' is not a date; write YYYY-MM-DD\n")
    assert "H501" in cli("iys", "reconcile", "--date", "2026-10-01", expect=1).stderr


def test_strict_plan_lists_iys_pending(cli, db, fake_iys, tmp_path):
    configure(cli, fake_iys)
    add_contact(db, "B1", email="b1@ornek.com.tr")
    with db.session() as session:
        contact = session.query(Contact).one()
        contact.first_name, contact.birthday = "Ayşe", date(1990, 11, 24)
        contact.birth_month, contact.birth_day = 11, 24
    cli("consent", "grant", "B1", "--channel", "email", "--source", "HS_WEB", "--at", "2026-11-24T09:00:00+03:00")
    (tmp_path / "c.yaml").write_text(
        'name: dogum-gunu\ntrigger: {type: birthday, send_time: "10:00"}\nchannels: [email]\n'
        'content:\n  email: {subject: "Iyi ki dogdun", html_inline: "<p>Merhaba</p>"}\n', encoding="utf-8")
    before = json.loads(cli("campaign", "plan", "c.yaml", "--json").stdout)
    assert (before["deliveries"], before["skipped"]["iys_pending"]) == ([], 1)
    cli("iys", "push", "--poll-interval", "0")
    after = json.loads(cli("campaign", "plan", "c.yaml", "--json").stdout)
    assert [d["contact"] for d in after["deliveries"]] == ["B1"] and after["skipped"]["iys_pending"] == 0


def test_scheduler_tick_pushes_and_pulls(cli, db, fake_iys, tmp_path):
    configure(cli, fake_iys, require_accepted=False)
    (tmp_path / "campaigns").mkdir()
    add_contact(db, "C1", email="c1@ornek.com.tr", phone="+905321112233")
    cli("consent", "grant", "C1", "--channel", "email", "--source", "HS_WEB", "--at", "2026-11-24T10:15:00+03:00")
    fake_iys.citizen("+905321112233", "MESAJ", "RET", NOW - timedelta(hours=2), source="IYS_3338")
    result = cli("scheduler", "--campaigns", str(tmp_path / "campaigns"), "--once")
    assert result.stdout.splitlines()[:2] == ["iys push: 1 accepted, 0 rejected, 0 waiting",
                                              "iys pull (IYS): 1 new, 1 opt-outs"]
    status = json.loads(cli("iys", "status", "--json").stdout)
    assert status["counts"]["accepted"] == 2  # ours, and the citizen's RET pulled from İYS


def test_scheduler_survives_iys_being_down(cli, db, tmp_path):
    (cli.cwd / "izin.toml").write_text(SENDER_TOML + iys_section("http://127.0.0.1:9", True), encoding="utf-8")
    (tmp_path / "campaigns").mkdir()
    add_contact(db, "C1", email="c1@ornek.com.tr")
    cli("consent", "grant", "C1", "--channel", "email", "--source", "HS_WEB", "--at", "2026-11-24T10:15:00+03:00")
    result = cli("scheduler", "--campaigns", str(tmp_path / "campaigns"), "--once")
    assert "izin: error: iys: " in result.stderr
    assert result.stdout.endswith("0 created, 0 handled\n")


def test_iys_state_shows_in_consent_show_and_the_export(cli, db, fake_iys):
    configure(cli, fake_iys)
    add_contact(db, "C1", email="c1@ornek.com.tr")
    cli("consent", "grant", "C1", "--channel", "email", "--source", "HS_WEB", "--at", "2026-11-24T10:15:00+03:00")
    cli("iys", "push")
    [record] = [json.loads(line) for line in cli("audit", "export").stdout.splitlines()]
    assert record["iys_status"] == "accepted"
    assert record["iys_transaction_id"] is not None and record["iys_creation_date"] is not None
    shown = json.loads(cli("consent", "show", "C1", "--json").stdout)
    assert shown["history"][0]["iys_transaction_id"] == record["iys_transaction_id"]


def test_with_a_broker_the_push_runs_on_a_worker(cli, db, fake_iys, tmp_path, redis_url):
    from izin.campaigns import actors
    from izin.campaigns.runner import drain_broker
    from izin.config import load_settings

    configure(cli, fake_iys)
    (tmp_path / "campaigns").mkdir()
    add_contact(db, "C1", email="c1@ornek.com.tr")
    cli("consent", "grant", "C1", "--channel", "email", "--source", "HS_WEB", "--at", "2026-11-24T10:15:00+03:00")
    cli("scheduler", "--campaigns", str(tmp_path / "campaigns"), "--once", env={"IZIN_BROKER_URL": redis_url})
    assert fake_iys.api_calls("/consents/request") == []  # the tick only enqueued the job
    loaded = load_settings(str(tmp_path / "izin.toml"))
    settings = type(loaded).model_validate({**loaded.model_dump(), "broker": {"url": redis_url},
                                            "database": {"url": db.url}})
    drain_broker(settings, threads=1)
    actors.reset()
    assert len(fake_iys.api_calls("/consents/request")) == 1
    assert json.loads(cli("iys", "status", "--json").stdout)["counts"]["accepted"] == 1
