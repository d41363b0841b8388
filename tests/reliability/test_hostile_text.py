"""Hostile text in the fields people fill in: addresses, names and attributes that meet templates,
and messages too long to send.

Addresses: normalise_email and normalise_phone raise nothing but AddressError, and what they return
is a fixed point (normalising it again gives it back), lower case for emails, E.164 for phones.
Templates: whatever a contact's attributes hold is data. It prints as written in previews and in
sent messages (HTML-escaped in HTML) and is never run as template code.
"""

from __future__ import annotations

import csv
import email
import email.policy
import json
import unicodedata

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from markupsafe import escape
from sqlalchemy import select

from izin.campaigns.render import RenderError, build_context, render
from izin.campaigns.spec import parse_campaign
from izin.config import Settings
from izin.consent.addresses import AddressError, Phone, normalise_email, normalise_phone

SENDER = {"name": "Örnek Ticaret A.Ş.", "mersis": "0123456789000015", "phone": "+90 212 555 00 00",
          "email": "destek@ornek.com.tr", "sms_header": "ORNEKTIC", "sms_optout": "RET yazip 4609'a gonderin"}
SENDER_TOML = "[sender]\n" + "".join(f'{key} = "{value}"\n' for key, value in SENDER.items())
SETTINGS = Settings.model_validate({"sender": SENDER})
#: campaign validation reads no consent data: one backend is enough
VALIDATION_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), database=None)
HEAVY_FUZZ = settings(max_examples=10_000, deadline=None, suppress_health_check=list(HealthCheck), database=None)


# --- addresses -----------------------------------------------------------------------------------

#: (input, normalised email or None when refused)
TRICKY_EMAILS = [
    ("Ayse.Yilmaz@Example.COM", "ayse.yilmaz@example.com"),
    ("  ali@example.com.tr\n", "ali@example.com.tr"),
    ("ali@ÖRNEK.com.tr", "ali@xn--rnek-4qa.com.tr"),              # IDN domain: stored as İYS can take it
    ("ali@xn--rnek-4qa.com.tr", "ali@xn--rnek-4qa.com.tr"),
    ("ali@örnek.com.tr", "ali@xn--rnek-4qa.com.tr"),              # both cases of Ö: one address
    ("ALİ@example.com", None),                                    # Turkish İ before the @: İYS takes ASCII only
    ("alı@example.com", None),                                    # dotless ı
    ("ayşe@example.com", None),
    ("a@b.c", None),                                              # under İYS's 6 characters
    ("ali@localhost", None),
    ("ali@[127.0.0.1]", None),
    ('"ali veli"@example.com', None),
    ("ali@@example.com", None),
    ("ali@example..com", None),
    ("ali@example.com,veli@example.com", None),
    ("ali\x00@example.com", None),
    ("x" * 65 + "@example.com", None),                            # local part over 64
    ("a@" + "b" * 250 + ".com", None),
    ("", None),
]

#: (input, E.164 and mobile, or None when refused)
TRICKY_PHONES = [
    ("0532 123 45 67", Phone("+905321234567", True)),
    ("+90 (532) 123 45 67", Phone("+905321234567", True)),
    ("+90 (0532) 123 45 67", Phone("+905321234567", True)),
    ("0090 532 123 45 67", Phone("+905321234567", True)),
    ("90 532 123 45 67", Phone("+905321234567", True)),
    ("5321234567", Phone("+905321234567", True)),
    ("+90-532-123-45-67", Phone("+905321234567", True)),
    ("０５３２ １２３ ４５ ６７", Phone("+905321234567", True)),      # full-width digits
    ("0212 555 00 00", Phone("+902125550000", False)),           # a landline: no SMS
    ("+44 7911 123456", Phone("+447911123456", True)),
    ("00532 123 45 67", Phone("+5321234567", False)),             # 00 dials abroad: +53 is Cuba, not Türkiye
    ("0532abc4567", None),                                        # letters were read as keypad digits
    ("0532 ONE 45 67", None),
    ("+90 532 123 45 67 ext 5", None),
    ("0532 123 45 6", None),                                      # too short
    ("0532 123 45 678", None),                                    # too long
    ("+905321234567123", None),
    ("0000 000 00 00", None),
    ("+", None),
    ("", None),
]


def _outcome(function, text):
    try:
        return function(text)
    except AddressError:
        return None


def test_a_huge_address_gets_a_short_message():
    for function, value in ((normalise_email, "a" * 60_000 + "@example.com"), (normalise_phone, "0532" + "1" * 60_000),
                            (normalise_phone, "0532abc4567" * 6_000)):
        with pytest.raises(AddressError) as caught:
            function(value)
        assert len(str(caught.value)) < 300 and str(caught.value).startswith(repr(value[:80]) + "...")


def test_tricky_addresses_table(findings):
    emails = {text: _outcome(normalise_email, text) for text, _ in TRICKY_EMAILS}
    phones = {text: _outcome(normalise_phone, text) for text, _ in TRICKY_PHONES}
    assert emails == dict(TRICKY_EMAILS)
    assert phones == dict(TRICKY_PHONES)
    findings("tricky addresses", emails=len(TRICKY_EMAILS), phones=len(TRICKY_PHONES),
             refused=sum(v is None for v in [*emails.values(), *phones.values()]), mismatches=0)


_EMAIL_TEXT = st.one_of(
    st.text(max_size=80),
    st.emails().map(str),
    st.emails().map(lambda e: e.upper()),
    st.builds(lambda local, domain: f"{local}@{domain}", st.text(max_size=20),
              st.sampled_from(["example.com", "ÖRNEK.com.tr", "xn--rnek-4qa.com.tr", "İSTANBUL.com", "ex..com", ""])),
)
_PHONE_TEXT = st.one_of(
    st.text(alphabet="+0123456789 ()-./", max_size=25),
    st.text(max_size=30),
    st.from_regex(r"(\+90|0090|90|0)? ?\(?5[0-9]{2}\)? ?[0-9]{3} ?[0-9]{2} ?[0-9]{2}", fullmatch=True),
)


def _check_email(text: str, seen: dict) -> None:
    try:
        value = normalise_email(text)
    except AddressError:
        seen["refused"] += 1
        return
    seen["accepted"] += 1
    assert value == value.lower() and value.isascii()
    assert 6 <= len(value) <= 265
    assert normalise_email(value) == value


def _check_phone(text: str, seen: dict) -> None:
    try:
        phone = normalise_phone(text)
    except AddressError:
        seen["refused"] += 1
        return
    seen["accepted"] += 1
    assert phone.e164.startswith("+") and phone.e164[1:].isdigit() and len(phone.e164) <= 16
    assert normalise_phone(phone.e164) == phone


def _fuzz_addresses(config) -> dict:
    seen = {"emails": {"accepted": 0, "refused": 0}, "phones": {"accepted": 0, "refused": 0}}
    config(given(_EMAIL_TEXT)(lambda text: _check_email(text, seen["emails"])))()
    config(given(_PHONE_TEXT)(lambda text: _check_phone(text, seen["phones"])))()
    return seen


def test_address_fuzz_raises_only_address_error_and_is_idempotent(findings):
    seen = _fuzz_addresses(FUZZ)
    assert seen["emails"]["accepted"] > 0 and seen["phones"]["accepted"] > 0
    findings("address fuzz", emails=sum(seen["emails"].values()), emails_accepted=seen["emails"]["accepted"],
             phones=sum(seen["phones"].values()), phones_accepted=seen["phones"]["accepted"],
             other_exceptions=0, not_idempotent=0)


@pytest.mark.heavy
def test_address_fuzz_heavy(findings):
    seen = _fuzz_addresses(HEAVY_FUZZ)
    findings("address fuzz (heavy)", emails=sum(seen["emails"].values()), phones=sum(seen["phones"].values()))


# --- template injection through attributes -------------------------------------------------------

PAYLOADS = [
    "{{ 7*7 }}",
    "{% for x in range(3) %}x{% endfor %}",
    "{% for %}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "<script>alert('x')</script> & \"quotes\"",
    "{# comment #}{{",
]

CAMPAIGN = """\
name: enjeksiyon
trigger: {type: once, at: "2026-11-24T11:00:00+03:00"}
channels: [email, sms]
content:
  email:
    subject: "Merhaba {{ contact.first_name }}"
    html_inline: "<p>Merhaba {{ contact.first_name }}!</p><p>Not: {{ contact.note }}</p>"
  sms:
    text: "Merhaba {{ contact.first_name }}, not: {{ contact.note }}"
"""


@pytest.fixture
def shop(cli, tmp_path):
    """A sender, the campaign, and one contact per payload (in first_name and in an attribute)."""
    (tmp_path / "izin.toml").write_text(SENDER_TOML, encoding="utf-8")
    (tmp_path / "enjeksiyon.yaml").write_text(CAMPAIGN, encoding="utf-8")
    with (tmp_path / "contacts.csv").open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["external_id", "first_name", "email", "phone", "note"])
        for i, payload in enumerate(PAYLOADS):
            writer.writerow([f"p{i}", payload, f"p{i}@example.com", f"+90532000000{i}", payload])
    cli("contacts", "import", "contacts.csv")
    with (tmp_path / "consent.csv").open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["external_id", "channel", "status", "source", "consent_date"])
        for i in range(len(PAYLOADS)):
            # even contacts get email, odd ones SMS: both channels are sent
            writer.writerow([f"p{i}", "email" if i % 2 == 0 else "sms", "ONAY", "HS_WEB", "2026-11-01T10:00:00+03:00"])
    cli("consent", "import", "consent.csv")
    return cli


def test_template_code_in_attributes_prints_literally_in_preview_and_sent_messages(shop, tmp_path, findings):
    checked = 0
    for i, payload in enumerate(PAYLOADS):
        for channel in ("email", "sms"):
            shown = json.loads(shop("campaign", "preview", "enjeksiyon.yaml", "--contact", f"p{i}",
                                    "--channel", channel, "--json").stdout)
            assert shown["text"].startswith(f"Merhaba {payload}" + ("!\n\nNot: " if channel == "email" else ", not: ")
                                            + payload), shown["text"]
            if channel == "email":
                assert shown["subject"] == " ".join(f"Merhaba {payload}".split())
                assert shown["html"].startswith(f"<p>Merhaba {escape(payload)}!</p><p>Not: {escape(payload)}</p>")
            checked += 1
    result = shop("campaign", "run", "enjeksiyon.yaml")
    assert result.stdout == f"campaign enjeksiyon: {len(PAYLOADS)} deliveries created; sent {len(PAYLOADS)}\n"
    outbox = tmp_path / "outbox"
    for path in sorted(outbox.iterdir()):
        if path.suffix == ".eml":
            message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            payload = PAYLOADS[int(str(message["To"])[1:].split("@")[0])]
            assert str(message["Subject"]) == " ".join(f"Merhaba {payload}".split())
            html = message.get_body(("html",)).get_content()
            text = message.get_body(("plain",)).get_content()
            assert f"<p>Merhaba {escape(payload)}!</p><p>Not: {escape(payload)}</p>" in html
            assert f"Not: {payload}" in text
        else:
            sms = json.loads(path.read_text(encoding="utf-8"))
            payload = PAYLOADS[int(sms["to"][-1])]
            assert sms["text"].startswith(f"Merhaba {payload}, not: {payload}\n")
        checked += 1
    assert checked == 2 * len(PAYLOADS) + len(PAYLOADS)
    findings("template injection", payloads=len(PAYLOADS), previews=2 * len(PAYLOADS), sent=len(PAYLOADS),
             literal=checked, evaluated=0)


INLINE = parse_campaign("""\
name: selam
trigger: {type: birthday}
channels: [email, sms]
content:
  email:
    subject: "Merhaba {{ contact.first_name }}"
    html_inline: "<p>Merhaba {{ contact.first_name }}!</p><p>{{ contact.note }}</p>"
  sms:
    text: "Merhaba {{ contact.first_name }}, iyi ki doğdun! {{ contact.note }}"
""")


def _context(value: str) -> dict:
    fields = {"first_name": value, "last_name": None, "external_id": "m-1", "email": "a@example.com",
              "phone": "+905321234567", "locale": "tr"}
    return build_context(fields, {"note": value}, None, None, INLINE, SETTINGS, "https://ornek.com.tr/u/T")


def _check_render(value: str, seen: dict) -> None:
    context = _context(value)
    mail = render(INLINE, "email", context, SETTINGS, "tr")
    assert mail.subject == " ".join(f"Merhaba {value}".split())
    assert mail.html is not None and mail.html.startswith(f"<p>Merhaba {escape(value)}!</p><p>{escape(value)}</p>")
    assert "".join(value.split()) in "".join(mail.text.split())
    try:
        sms = render(INLINE, "sms", context, SETTINGS, "tr")
    except RenderError as error:  # only ever because it is too long to send
        assert error.field == "content.sms.text" and "SMS parts" in error.message
        seen["too_long"] += 1
        return
    body = f"Merhaba {value}, iyi ki doğdun! {value}".strip()
    assert sms.text.startswith(unicodedata.normalize("NFC", body) + "\n")
    seen["rendered"] += 1


def _fuzz_render(config) -> dict:
    seen = {"rendered": 0, "too_long": 0}
    text = st.one_of(st.text(max_size=120), st.text(alphabet="{}%#<>&\"' ._()[]*7xç", max_size=60),
                     st.sampled_from(PAYLOADS), st.text(alphabet="aç€{}", min_size=300, max_size=700))
    config(given(text)(lambda value: _check_render(value, seen)))()
    return seen


def test_render_fuzz_attributes_are_always_data(findings):
    seen = _fuzz_render(FUZZ)
    findings("render fuzz", values=seen["rendered"] + seen["too_long"], literal=seen["rendered"],
             sms_too_long=seen["too_long"], other_exceptions=0)


@pytest.mark.heavy
def test_render_fuzz_heavy(findings):
    seen = _fuzz_render(HEAVY_FUZZ)
    findings("render fuzz (heavy)", values=seen["rendered"] + seen["too_long"], other_exceptions=0)


# --- oversize SMS --------------------------------------------------------------------------------

@VALIDATION_ONLY
def test_oversize_sms_fails_validation_clearly(cli, tmp_path):
    (tmp_path / "izin.toml").write_text(SENDER_TOML, encoding="utf-8")
    (tmp_path / "uzun.yaml").write_text(
        'name: uzun\ntrigger: {type: birthday}\nchannels: [sms]\ncontent:\n  sms:\n    text: "'
        + "Kampanya " * 130 + '"\n', encoding="utf-8")
    result = cli("campaign", "validate", "uzun.yaml", expect=2)
    assert result.stderr == ("uzun.yaml:6:11: content.sms.text: the message is 9 SMS parts (gsm7-tr, 1238 characters "
                             "with the footer); at most 7 parts can be sent, shorten the text\n")


@VALIDATION_ONLY
def test_validation_counts_parts_against_the_configured_sms_adapter(cli, tmp_path):
    """A provider that takes 2 parts: a 3-part text fails validation, not every delivery."""
    (tmp_path / "izin.toml").write_text(
        SENDER_TOML + '[channels.sms]\nurl = "webhooks://sms.example.com/v1?token=x&max_segments=2"\n',
        encoding="utf-8")
    (tmp_path / "orta.yaml").write_text(
        'name: orta\ntrigger: {type: birthday}\nchannels: [sms]\ncontent:\n  sms:\n    text: "'
        + "Kampanya " * 35 + '"\n', encoding="utf-8")
    result = cli("campaign", "validate", "orta.yaml", expect=2)
    assert result.stderr == ("orta.yaml:6:11: content.sms.text: the message is 3 SMS parts (gsm7-tr, 383 characters "
                             "with the footer); at most 2 parts can be sent, shorten the text\n")
    (tmp_path / "izin.toml").write_text(SENDER_TOML, encoding="utf-8")  # the outbox takes up to 7
    assert cli("campaign", "validate", "orta.yaml").stdout == "orta.yaml: ok\n"


def _run_with_one_note(shop, db, note: str):
    """Give p1 (the first SMS contact) this note, run the campaign; the one failed delivery."""
    from izin.campaigns.models import Delivery
    from izin.consent.models import Contact

    with db.session() as session:
        contact = session.scalar(select(Contact).where(Contact.external_id == "p1"))
        contact.attributes = {**contact.attributes, "note": note}
    result = shop("campaign", "run", "enjeksiyon.yaml")
    assert result.stdout == (f"campaign enjeksiyon: {len(PAYLOADS)} deliveries created; "
                             f"failed:template 1, sent {len(PAYLOADS) - 1}\n")
    with db.session() as session:
        failed = session.scalars(select(Delivery).where(Delivery.status == "failed")).one()
        session.expunge(failed)
        return failed


def test_oversize_sms_at_send_time_fails_that_delivery_with_a_reason(shop, tmp_path, db, findings):
    failed = _run_with_one_note(shop, db, "uzun " * 400)
    assert (failed.channel, failed.reason) == ("sms", "template")
    assert failed.detail == ("content.sms.text: the message is 15 SMS parts (gsm7-tr, 2123 characters with the "
                             "footer); at most 7 parts can be sent, shorten the text")
    assert not (tmp_path / "outbox" / f"{failed.id}.sms.json").exists()
    findings("oversize sms", validation_error=1, failed_deliveries=1, crashes=0, others_sent=len(PAYLOADS) - 1)


# --- templates that would never finish -----------------------------------------------------------

TEMPLATE_BOMBS = {
    "nested-loops": "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}Merhaba",
    "string-loops": "{% set s = 'x' * 100000 %}{% for a in s %}{% for b in s %}{% endfor %}{% endfor %}Merhaba",
    "macro-fork": "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(40) }}Merhaba",
}


@VALIDATION_ONLY
def test_template_bombs_fail_validation_quickly(cli, tmp_path, findings):
    import time

    (tmp_path / "izin.toml").write_text(SENDER_TOML, encoding="utf-8")
    slowest = 0.0
    for name, text in TEMPLATE_BOMBS.items():
        (tmp_path / f"{name}.yaml").write_text(
            f"name: {name}\ntrigger: {{type: birthday}}\nchannels: [sms]\ncontent:\n  sms:\n    text: \"{text}\"\n",
            encoding="utf-8")
        started = time.perf_counter()
        result = cli("campaign", "validate", f"{name}.yaml", expect=2)
        slowest = max(slowest, time.perf_counter() - started)
        assert result.stderr == (f"{name}.yaml:6:11: content.sms.text: the template takes more than 200000 steps "
                                 "(loop rounds and calls); a message needs far fewer, simplify its loops and macros\n")
    assert slowest < MAX_TEMPLATE_SECONDS
    findings("template bombs", templates=len(TEMPLATE_BOMBS), refused=len(TEMPLATE_BOMBS), slowest_s=round(slowest, 2))


#: a template run is capped at 200,000 steps, a fraction of a second; this leaves room for a slow CI
MAX_TEMPLATE_SECONDS = 10


def test_data_that_makes_a_loop_explode_fails_only_that_delivery(shop, tmp_path, db):
    """The sample note is short, so the campaign validates; one contact's 60,000-character note
    would make 3.6 billion rounds. That delivery fails (reason template); the others are sent."""
    (tmp_path / "enjeksiyon.yaml").write_text(CAMPAIGN.replace(
        'not: {{ contact.note }}"', 'not: {% for a in contact.note %}{% for b in contact.note %}{% endfor %}'
                                   '{% endfor %}{{ contact.note | length }}"'), encoding="utf-8")
    shop("campaign", "validate", "enjeksiyon.yaml")
    failed = _run_with_one_note(shop, db, "x" * 60_000)
    assert failed.detail == ("content.sms.text: the template takes more than 200000 steps (loop rounds and "
                                 "calls); a message needs far fewer, simplify its loops and macros")
