"""`izin campaign schedule | run | status` and `izin worker --burst` in embedded mode, as a user runs them."""

from __future__ import annotations

import json

import pytest

from izin.clock import parse_instant as T
from conftest import SENDER_TOML
from support import CAMPAIGN, consent, person


@pytest.fixture
def shop(cli, db, tmp_path):
    (tmp_path / "izin.toml").write_text(SENDER_TOML, encoding="utf-8")
    (tmp_path / "dogum-gunu.yaml").write_text(CAMPAIGN, encoding="utf-8")
    person(db, "ayse", email="ayse@example.com", phone="+905320000001")
    person(db, "mehmet", email="mehmet@example.com")
    person(db, "zeynep", email="zeynep@example.com")
    consent(db, "ayse", "sms")
    consent(db, "mehmet", "email")
    consent(db, "zeynep", "email")
    return cli


def test_run_schedules_and_sends_into_the_outbox(shop, tmp_path):
    result = shop("campaign", "run", "dogum-gunu.yaml")
    assert result.stdout == "campaign dogum-gunu: 3 deliveries created; sent 3\n"
    assert sorted(p.name for p in (tmp_path / "outbox").iterdir()) == ["1.sms.json", "2.eml", "3.eml"]
    eml = (tmp_path / "outbox" / "2.eml").read_text(encoding="utf-8")
    assert "List-Unsubscribe-Post: List-Unsubscribe=One-Click" in eml
    assert "To: mehmet@example.com" in eml
    assert shop("campaign", "run", "dogum-gunu.yaml").stdout == "campaign dogum-gunu: 0 deliveries created; nothing\n"


def test_schedule_withdraw_then_worker_burst(shop):
    document = json.loads(shop("campaign", "schedule", "dogum-gunu.yaml", "--json").stdout)
    assert (document["created"], document["deferred"], document["enqueued"]) == (3, 0, None)
    shop("consent", "withdraw", "zeynep", "--channel", "email", "--source", "HS_EPOSTA")
    assert shop("worker", "--burst").stdout == "2 deliveries handled; sent 2\n"
    assert shop("campaign", "status", "dogum-gunu").stdout == (
        "campaign dogum-gunu (started 2026-11-24T12:00:00+03:00): 3 deliveries\n"
        "  sent            2\n"
        "  suppressed      1  (consent_withdrawn 1)\n")
    status = json.loads(shop("campaign", "status", "dogum-gunu.yaml", "--json").stdout)
    assert status["by_reason"] == {"sent": {"-": 2}, "suppressed": {"consent_withdrawn": 1}}


def test_run_late_in_the_day_defers_to_the_window(shop):
    result = shop("campaign", "run", "dogum-gunu.yaml", "--at", "2026-11-24T22:00:00+03:00")
    assert result.stdout == "campaign dogum-gunu: 3 deliveries created; deferred:send_window 3\n"


def test_unknown_campaign_status_and_bad_channel_url(shop, tmp_path):
    assert shop("campaign", "status", "nope", expect=2).stderr == (
        "izin: error: no campaign 'nope' has been planned or scheduled yet\n")
    (tmp_path / "izin.toml").write_text(
        (tmp_path / "izin.toml").read_text(encoding="utf-8") + '[channels.sms]\nurl = "carrier-pigeon://loft"\n',
        encoding="utf-8")
    result = shop("campaign", "run", "dogum-gunu.yaml", expect=2)
    assert result.stderr.startswith("izin: error: channels.sms.url: ")
    assert "carrier-pigeon" in result.stderr


def test_unreachable_broker_exits_3_and_creates_nothing(shop, db):
    from sqlalchemy import func, select

    from izin.campaigns.models import Delivery

    result = shop("campaign", "schedule", "dogum-gunu.yaml", expect=3,
                  env={"IZIN_BROKER_URL": "redis://127.0.0.1:9/0"})
    assert result.stderr.startswith("izin: error: broker unreachable (redis://127.0.0.1:9/0): ")
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(Delivery)) == 0


def test_run_at_a_past_instant_judges_consent_and_records_the_send_now(shop, db):
    """--at picks what is due; an opt-out recorded since then still wins, and sent_at is the real moment."""
    from sqlalchemy import select

    from izin.campaigns.models import Delivery

    shop("consent", "withdraw", "zeynep", "--channel", "email", "--source", "HS_EPOSTA")  # recorded now (12:00)
    result = shop("campaign", "run", "dogum-gunu.yaml", "--at", "2026-11-24T10:30:00+03:00")
    # the plan at 10:30 does not know better than the ledger today: zeynep is not even scheduled
    assert result.stdout == "campaign dogum-gunu: 2 deliveries created; sent 2\n"
    with db.session() as session:
        sent = set(session.scalars(select(Delivery.sent_at)))
    assert sent == {T("2026-11-24T12:00:00+03:00")}
