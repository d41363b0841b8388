"""`izin campaign validate | preview | plan` as a marketer uses them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from sqlalchemy import select

from conftest import SENDER_TOML, add_contact
from izin.campaigns.models import Delivery
from izin.clock import parse_instant as T
from izin.consent.ledger import LedgerWriter
from izin.consent.models import Contact

EXAMPLES = Path(__file__).resolve().parents[2] / "izin" / "campaigns" / "examples"


@pytest.fixture
def shop(cli, db):
    (cli.cwd / "izin.toml").write_text(SENDER_TOML, encoding="utf-8")
    for name in ("dogum-gunu.yaml", "efsane-cuma.yaml", "degerlendirme.yaml"):
        shutil.copy(EXAMPLES / name, cli.cwd / name)
    add_contact(db, "C1", email="ayse@example.com", phone="+905321112233")
    with db.session() as session:
        contact = session.scalar(select(Contact).where(Contact.external_id == "C1"))
        contact.first_name = "Ayşe"
        from datetime import date
        contact.birthday, contact.birth_month, contact.birth_day = date(1990, 11, 24), 11, 24
        LedgerWriter(session).record(contact, "sms", "ONAY", "HS_WEB", T("2026-03-01T10:00:00+03:00"),
                                     T("2026-03-01T10:00:00+03:00"))
    return cli


def test_examples_validate(shop):
    result = shop("campaign", "validate", "dogum-gunu.yaml", "efsane-cuma.yaml", "degerlendirme.yaml")
    assert result.stdout == "dogum-gunu.yaml: ok\nefsane-cuma.yaml: ok\ndegerlendirme.yaml: ok\n"


def test_validate_reports_every_file_and_exits_2(shop):
    (shop.cwd / "bad.yaml").write_text(
        "name: kotu\ntrigger: {type: birthday}\nchannels: [sms]\ncontent:\n"
        "  sms: {text: \"{{ contact.frist_name }}\"}\n", encoding="utf-8")
    result = shop("campaign", "validate", "dogum-gunu.yaml", "bad.yaml", expect=2)
    assert result.stdout == "dogum-gunu.yaml: ok\n"
    assert result.stderr.startswith("bad.yaml:5:")
    assert "content.sms.text" in result.stderr and "'contact' has no attribute 'frist_name'; did you mean first_name?" in result.stderr
    document = json.loads(shop("campaign", "validate", "bad.yaml", "--json", expect=2).stdout)
    assert [(d["file"], d["ok"], len(d["problems"])) for d in document] == [("bad.yaml", False, 1)]


def test_validate_refuses_a_missing_sender_identity(cli, tmp_path):
    shutil.copy(EXAMPLES / "efsane-cuma.yaml", tmp_path / "efsane-cuma.yaml")
    result = cli("campaign", "validate", "efsane-cuma.yaml", expect=2)
    assert "sender" in result.stderr and "izin.toml" in result.stderr


def test_preview_shows_the_exact_sms(shop):
    document = json.loads(shop("campaign", "preview", "dogum-gunu.yaml", "--contact", "C1", "--json").stdout)
    assert (document["channel"], document["to"], document["would_send"], document["encoding"]) == (
        "sms", "+905321112233", True, "gsm7-tr")
    code = document["coupon_example"]
    assert document["text"] == (f"İyi ki doğdun Ayşe! %20 indirim kodun: {code} (08.12.2026'e kadar)\n"
                                "Örnek Ticaret A.Ş. Mersis:0123456789000015 RET yazip 4609'a gonderin")
    assert document["segments"] == 1


def test_preview_warns_when_the_contact_would_not_get_it(shop):
    result = shop("campaign", "preview", "dogum-gunu.yaml", "--contact", "C1", "--channel", "email", "--json")
    document = json.loads(result.stdout)
    assert (document["would_send"], document["warning"]) == (False, "C1 would not get this on email now: no_consent")
    assert document["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert document["headers"]["List-Unsubscribe"].startswith("<http://127.0.0.1:8000/u/")


def test_plan_json_and_writes_no_deliveries(shop, db):
    document = json.loads(shop("campaign", "plan", "dogum-gunu.yaml", "--at", "2026-11-24T10:30:00+03:00",
                               "--json").stdout)
    assert document["deliveries"] == [{
        "contact": "C1", "channel": "sms", "recipient": "+905321112233", "occurrence": "2026",
        "send_at": "2026-11-24T07:00:00Z", "send_at_local": "2026-11-24T10:00+03:00", "timezone": "Europe/Istanbul",
        "status": "scheduled", "basis": "onay", "consent_event_id": 1}]
    assert document["skipped"] == {"no_consent": 0, "no_address": 0, "frequency_cap": 0, "already_sent": 0,
                                   "not_in_audience": 0}
    with db.session() as session:
        assert session.scalars(select(Delivery)).all() == []
    text = shop("campaign", "plan", "dogum-gunu.yaml").stdout
    assert text.splitlines()[0] == "campaign dogum-gunu at 2026-11-24T12:00:00+03:00: 1 deliveries"
    assert text.splitlines()[-1] == ("left out: no_consent 0, no_address 0, frequency_cap 0, already_sent 0, "
                                     "not_in_audience 0")


def test_templates_may_use_attributes_the_contacts_carry(shop, db):
    (shop.cwd / "sehir.yaml").write_text(
        "name: sehir\ntrigger: {type: once, at: \"2026-11-27T10:00:00+03:00\"}\nchannels: [sms]\ncontent:\n"
        "  sms: {text: \"{{ contact.first_name }}, {{ contact.city }} magazamiz acildi\"}\n", encoding="utf-8")
    refused = shop("campaign", "validate", "sehir.yaml", expect=2)
    assert "'contact' has no attribute 'city'" in refused.stderr
    with db.session() as session:
        session.scalar(select(Contact).where(Contact.external_id == "C1")).attributes = {"city": "İzmir"}
    assert shop("campaign", "validate", "sehir.yaml").stdout == "sehir.yaml: ok\n"
