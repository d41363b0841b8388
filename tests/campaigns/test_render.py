"""Rendering: context, locale variants, footers, List-Unsubscribe, the sandbox, SMS sizing, and
template validation with positioned problems."""

from __future__ import annotations

import os
import shutil
import textwrap
import time
from datetime import date
from pathlib import Path

import pytest

from izin.campaigns import render as render_module
from izin.campaigns.render import (LIST_UNSUBSCRIBE_POST, Namespace, RenderError, Rendered,
                                   build_context, gsm, html_to_text, render, validate_templates)
from izin.campaigns.spec import Problem, load_campaign, parse_campaign
from izin.channels.sms_encoding import GSM7_DEFAULT, GSM7_EXTENSION, TURKISH_SHIFT
from izin.config import Settings
from izin.errors import InputError

EXAMPLES = Path(render_module.__file__).parent / "examples"
TEMPLATES = Path(render_module.__file__).parent.parent / "templates"
SENDER = {
    "name": "Örnek Ticaret A.Ş.",
    "mersis": "0123456789000015",
    "phone": "+90 212 555 00 00",
    "email": "destek@ornek.com.tr",
    "sms_header": "ORNEKTIC",
    "sms_optout": "RET yazip 4609'a gonderin",
}
SETTINGS = Settings.model_validate({"sender": SENDER})
URL = "https://ornek.com.tr/u/TOKEN"

INLINE = """\
name: selam
trigger: {type: birthday}
channels: [email, sms]
content:
  email:
    subject: "Merhaba {{ contact.first_name }}"
    html_inline: "<p>Merhaba {{ contact.first_name }}!</p>"
  sms:
    text: "Merhaba {{ contact.first_name }}, iyi ki doğdun!"
"""

#: an email and SMS campaign whose bodies are one word, so that what follows is the footer
FOOTER_CAMPAIGN = """\
    name: k
    trigger: {type: birthday}
    channels: [email, sms]
    content:
      email: {subject: Selam, html_inline: "<p>Selam</p>"}
      sms: {text: Selam}
    """


FOOTER_HTML_TR = (
    '<div style="margin-top:32px;padding-top:12px;border-top:1px solid #dddddd;'
    'font-family:Arial,Helvetica,sans-serif;font-size:12px;line-height:1.5;color:#666666">\n'
    '<p style="margin:0 0 6px 0">Bu ileti Örnek Ticaret A.Ş. tarafından gönderilmiştir. '
    "MERSİS No: 0123456789000015</p>\n"
    '<p style="margin:0 0 6px 0">İletişim: Tel: +90 212 555 00 00 · E-posta: '
    '<a href="mailto:destek@ornek.com.tr" style="color:#666666">destek@ornek.com.tr</a></p>\n'
    '<p style="margin:0">E-posta almak istemiyorsanız <a href="https://ornek.com.tr/u/TOKEN" '
    'style="color:#666666">buradan ayrılabilirsiniz</a>. Ret bildirimi ücretsizdir ve hemen '
    "geçerli olur.</p>\n"
    "</div>\n"
)
FOOTER_TEXT_TR = (
    "--\n"
    "Bu ileti Örnek Ticaret A.Ş. tarafından gönderilmiştir. MERSİS No: 0123456789000015\n"
    "İletişim: Tel: +90 212 555 00 00 · E-posta: destek@ornek.com.tr\n"
    "E-posta almak istemiyorsanız bu bağlantıdan ayrılabilirsiniz: https://ornek.com.tr/u/TOKEN\n"
)
FOOTER_TEXT_EN = (
    "--\n"
    "Sent by Örnek Ticaret A.Ş. · MERSİS No: 0123456789000015\n"
    "Contact: Phone: +90 212 555 00 00 · Email: destek@ornek.com.tr\n"
    "If you no longer want these emails, unsubscribe here: https://ornek.com.tr/u/TOKEN\n"
)
SMS_FOOTER = "Örnek Ticaret A.Ş. Mersis:0123456789000015 RET yazip 4609'a gonderin"


def settings_with(**sender: str) -> Settings:
    return Settings.model_validate({"sender": {**SENDER, **sender}})


def write(tmp_path: Path, yaml_text: str, name: str = "kampanya.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(yaml_text), encoding="utf-8")
    return path


def write_template(tmp_path: Path, relative: str, text: str) -> None:
    path = tmp_path / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def context_for(campaign, *, first_name="Ayşe", attributes=None, coupon=None, event=None,
                locale="tr", url=URL, settings=SETTINGS):
    fields = {"first_name": first_name, "last_name": "Yılmaz", "external_id": "m-1",
              "email": "ayse@example.com", "phone": "+905321234567", "locale": locale}
    return build_context(fields, attributes or {}, coupon, event, campaign, settings, url)


def problems_of(path: Path, settings: Settings = SETTINGS, **kwargs) -> list[str]:
    return [str(p) for p in validate_templates(load_campaign(path), settings, **kwargs)]


# --- exact rendered messages --------------------------------------------------------------------


def test_inline_email_in_turkish_is_exact():
    campaign = parse_campaign(INLINE)
    rendered = render(campaign, "email", context_for(campaign), SETTINGS, "tr")
    assert rendered == Rendered(
        channel="email",
        locale="tr",
        subject="Merhaba Ayşe",
        html="<p>Merhaba Ayşe!</p>\n" + FOOTER_HTML_TR,
        text="Merhaba Ayşe!\n\n" + FOOTER_TEXT_TR,
        list_unsubscribe="<https://ornek.com.tr/u/TOKEN>",
        list_unsubscribe_post="List-Unsubscribe=One-Click",
    )


def test_inline_email_in_english_uses_the_english_footer_and_the_same_inline_text():
    campaign = parse_campaign(INLINE)
    rendered = render(campaign, "email", context_for(campaign, locale="en"), SETTINGS, "en")
    assert rendered.locale == "en"
    assert rendered.subject == "Merhaba Ayşe"  # inline texts have no variants
    assert rendered.text == "Merhaba Ayşe!\n\n" + FOOTER_TEXT_EN
    assert rendered.html is not None
    assert rendered.html.startswith("<p>Merhaba Ayşe!</p>\n<div ")
    assert "Sent by Örnek Ticaret A.Ş. · MERSİS No: 0123456789000015</p>" in rendered.html
    assert ('If you no longer want these emails, <a href="https://ornek.com.tr/u/TOKEN" '
            'style="color:#666666">unsubscribe here</a>.') in rendered.html


@pytest.mark.parametrize("locale", ["tr", "en", "de", "EN-us", "", None])
def test_inline_sms_is_exact_in_every_locale(locale):
    campaign = parse_campaign(INLINE)
    rendered = render(campaign, "sms", context_for(campaign), SETTINGS, locale)
    text = "Merhaba Ayşe, iyi ki doğdun!\n" + SMS_FOOTER
    assert rendered == Rendered(channel="sms", locale="en" if locale in ("en", "EN-us") else "tr",
                                text=text, encoding="gsm7-tr", units=97, segments=1)


def test_list_unsubscribe_headers():
    campaign = parse_campaign(INLINE)
    rendered = render(campaign, "email", context_for(campaign), SETTINGS, "tr")
    assert rendered.headers == {
        "List-Unsubscribe": "<https://ornek.com.tr/u/TOKEN>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
    assert LIST_UNSUBSCRIBE_POST == "List-Unsubscribe=One-Click"
    assert render(campaign, "sms", context_for(campaign), SETTINGS, "tr").headers == {}


def test_commercial_email_without_an_unsubscribe_url_is_refused():
    campaign = parse_campaign(INLINE)
    with pytest.raises(RenderError) as excinfo:
        render(campaign, "email", context_for(campaign, url=None), SETTINGS, "tr")
    assert str(excinfo.value) == "content.email: a commercial email needs an unsubscribe_url"
    assert isinstance(excinfo.value, InputError)


def test_transactional_messages_get_identity_but_no_opt_out():
    campaign = parse_campaign(INLINE.replace("name: selam", "name: selam\npurpose: transactional").replace(
        "trigger: {type: birthday}", "trigger: {type: after_event, event: purchase, delay: 1d}"))
    email = render(campaign, "email", context_for(campaign, url=None), SETTINGS, "tr")
    assert email.text == (
        "Merhaba Ayşe!\n\n--\n"
        "Bu ileti Örnek Ticaret A.Ş. tarafından gönderilmiştir. MERSİS No: 0123456789000015\n"
        "İletişim: Tel: +90 212 555 00 00 · E-posta: destek@ornek.com.tr\n"
    )
    assert email.list_unsubscribe is None and email.list_unsubscribe_post is None
    assert email.headers == {}
    assert "ayrılabilirsiniz" not in (email.html or "")
    sms = render(campaign, "sms", context_for(campaign, url=None), SETTINGS, "tr")
    assert sms.text == "Merhaba Ayşe, iyi ki doğdun!\nÖrnek Ticaret A.Ş. Mersis:0123456789000015"


def test_footer_comes_from_settings_and_leaves_out_empty_fields():
    campaign = parse_campaign(INLINE.replace("name: selam", "name: selam\npurpose: transactional").replace(
        "trigger: {type: birthday}", "trigger: {type: after_event, event: purchase, delay: 1d}"))
    settings = settings_with(phone="", mersis="")
    email = render(campaign, "email", context_for(campaign, url=None), settings, "tr")
    assert email.text == (
        "Merhaba Ayşe!\n\n--\n"
        "Bu ileti Örnek Ticaret A.Ş. tarafından gönderilmiştir.\n"
        "İletişim: E-posta: destek@ornek.com.tr\n"
    )
    sms = render(campaign, "sms", context_for(campaign, url=None), settings, "tr")
    assert sms.text == "Merhaba Ayşe, iyi ki doğdun!\nÖrnek Ticaret A.Ş."


def test_footer_is_placed_inside_the_body_of_a_whole_document(tmp_path):
    write_template(tmp_path, "k/email.html.j2",
                   "<html><body>\n<p>Selam {{ contact.first_name }}</p>\n</BODY></html>\n")
    campaign = load_campaign(write(tmp_path, """\
        name: k
        trigger: {type: birthday}
        channels: [email]
        content:
          email: {subject: Selam, html: k/email.html.j2}
        """))
    html = render(campaign, "email", context_for(campaign), SETTINGS, "tr").html
    # Jinja drops a template file's final newline.
    assert html == "<html><body>\n<p>Selam Ayşe</p>\n" + FOOTER_HTML_TR + "</BODY></html>"


def test_text_template_is_used_as_the_plain_alternative(tmp_path):
    campaign = load_campaign(write(tmp_path, """\
        name: k
        trigger: {type: birthday}
        channels: [email]
        content:
          email:
            subject: Selam
            html_inline: "<p>HTML {{ contact.first_name }}</p>"
            text_inline: "Düz metin {{ contact.first_name }}\\n"
        """))
    rendered = render(campaign, "email", context_for(campaign), SETTINGS, "tr")
    assert rendered.text == "Düz metin Ayşe\n\n" + FOOTER_TEXT_TR


def test_subject_is_one_line_whatever_the_data():
    campaign = parse_campaign(INLINE)
    context = context_for(campaign, first_name="Ayşe\r\nBcc: x@example.com")
    rendered = render(campaign, "email", context, SETTINGS, "tr")
    assert rendered.subject == "Merhaba Ayşe Bcc: x@example.com"


# --- locale variants and template lookup --------------------------------------------------------


@pytest.fixture
def variant_campaign(tmp_path):
    write_template(tmp_path, "k/email.html.j2", "<p>Türkçe {{ contact.first_name }}</p>")
    write_template(tmp_path, "k/email.en.html.j2", "<p>English {{ contact.first_name }}</p>")
    write_template(tmp_path, "k/body.j2", "düz {{ contact.first_name }}")
    return load_campaign(write(tmp_path, """\
        name: k
        trigger: {type: birthday}
        channels: [email]
        content:
          email: {subject: Selam, html: k/email.html.j2, text: k/body.j2}
        """))


@pytest.mark.parametrize(
    ("locale", "html_body", "text_body"),
    [
        ("tr", "<p>Türkçe Ayşe</p>", "düz Ayşe"),
        ("en", "<p>English Ayşe</p>", "düz Ayşe"),  # no body.en.j2: falls back to body.j2
        ("en_GB", "<p>English Ayşe</p>", "düz Ayşe"),
        ("fr", "<p>Türkçe Ayşe</p>", "düz Ayşe"),  # unknown locale: Turkish, the default
    ],
)
def test_locale_variant_with_fallback(variant_campaign, locale, html_body, text_body):
    rendered = render(variant_campaign, "email", context_for(variant_campaign), SETTINGS, locale)
    assert rendered.html is not None and rendered.html.startswith(html_body + "\n<div ")
    assert rendered.text.startswith(text_body + "\n\n--\n")


def test_template_files_are_looked_at_again_after_a_pause(variant_campaign, tmp_path, monkeypatch):
    def html(locale):
        rendered = render(variant_campaign, "email", context_for(variant_campaign), SETTINGS, locale)
        return rendered.html.split("\n")[0]

    assert html("tr") == "<p>Türkçe Ayşe</p>"
    write_template(tmp_path, "k/email.html.j2", "<p>Yeni {{ contact.first_name }}</p>")
    os.utime(tmp_path / "k/email.html.j2", (time.time() + 10, time.time() + 10))
    assert html("tr") == "<p>Türkçe Ayşe</p>"  # the file found a moment ago
    monkeypatch.setattr(render_module, "_RECHECK_FILES_S", 0.0)
    assert html("tr") == "<p>Yeni Ayşe</p>"  # an edit while a worker runs is used once looked at


def test_variant_names():
    assert render_module._variants("x/email.html.j2", "en") == ["x/email.en.html.j2", "x/email.html.j2"]
    assert render_module._variants("x/email.j2", "tr") == ["x/email.tr.j2", "x/email.j2"]
    assert render_module._variants("body.html", "en") == ["body.en.html", "body.html"]


def test_template_next_to_the_campaign_wins_over_the_builtin_one(tmp_path):
    write_template(tmp_path, "dogum-gunu/email.html.j2", "<p>Yerel şablon</p>")
    campaign = load_campaign(write(tmp_path, """\
        name: k
        trigger: {type: birthday}
        channels: [email]
        content:
          email: {subject: Selam, html: dogum-gunu/email.html.j2}
        """))
    rendered = render(campaign, "email", context_for(campaign), SETTINGS, "tr")
    assert rendered.text.startswith("Yerel şablon\n\n--\n")


def test_builtin_templates_are_found_from_any_campaign_folder(tmp_path):
    campaign = load_campaign(write(tmp_path, """\
        name: k
        trigger: {type: birthday}
        channels: [email]
        coupon: {prefix: IYIKI, percent: 20, valid_days: 14}
        content:
          email: {subject: Selam, html: dogum-gunu/email.html.j2}
        """))
    coupon = {"code": "IYIKI-ABCD2345", "percent": 20, "expires_on": date(2026, 12, 8)}
    rendered = render(campaign, "email", context_for(campaign, coupon=coupon), SETTINGS, "tr")
    assert "Kupon kodun: IYIKI-ABCD2345" in rendered.text
    assert "08.12.2026 tarihine kadar" in rendered.text


def test_shipped_footers_have_english_variants():
    names = sorted(p.name for p in (TEMPLATES / "footers").iterdir())
    assert names == ["email.en.html.j2", "email.en.txt.j2", "email.html.j2", "email.txt.j2",
                     "sms.en.txt.j2", "sms.txt.j2"]


# --- context ------------------------------------------------------------------------------------


def test_attribute_values_are_data_not_template_code():
    campaign = parse_campaign(INLINE)
    context = context_for(campaign, first_name="{{ 7*7 }}")
    email = render(campaign, "email", context, SETTINGS, "tr")
    sms = render(campaign, "sms", context, SETTINGS, "tr")
    assert email.subject == "Merhaba {{ 7*7 }}"
    assert email.html is not None and email.html.startswith("<p>Merhaba {{ 7*7 }}!</p>")
    assert sms.text.startswith("Merhaba {{ 7*7 }}, iyi ki doğdun!")


def test_html_is_escaped_in_html_only():
    campaign = parse_campaign(INLINE)
    context = context_for(campaign, first_name='<b>"A&B"</b>')
    email = render(campaign, "email", context, SETTINGS, "tr")
    assert email.html is not None
    assert email.html.startswith("<p>Merhaba &lt;b&gt;&#34;A&amp;B&#34;&lt;/b&gt;!</p>")
    assert email.subject == 'Merhaba <b>"A&B"</b>'
    assert email.text.startswith('Merhaba <b>"A&B"</b>!')


def test_html_body_with_a_plain_j2_name_is_escaped_too(tmp_path):
    write_template(tmp_path, "k/body.j2", "<p>{{ contact.first_name }}</p>")
    campaign = load_campaign(write(tmp_path, """\
        name: k
        trigger: {type: birthday}
        channels: [email]
        content:
          email: {subject: Selam, html: k/body.j2}
        """))
    context = context_for(campaign, first_name="<i>x</i>")
    html = render(campaign, "email", context, SETTINGS, "tr").html
    assert html is not None and html.startswith("<p>&lt;i&gt;x&lt;/i&gt;</p>")


def test_contact_exposes_fields_and_attributes():
    campaign = parse_campaign(INLINE)
    context = context_for(campaign, attributes={"city": "İzmir", "first_name": "attribute loses"})
    contact = context["contact"]
    assert isinstance(contact, Namespace)
    assert contact["first_name"] == "Ayşe"
    assert contact["city"] == "İzmir"
    assert contact["birthday"] is None
    assert sorted(contact) == ["birthday", "city", "email", "external_id", "first_name",
                               "last_name", "locale", "phone"]
    assert context["campaign"]["name"] == "selam"
    assert context["sender"]["mersis"] == "0123456789000015"
    assert context["unsubscribe_url"] == URL
    assert "coupon" not in context and "event" not in context


def test_none_prints_as_nothing():
    campaign = parse_campaign(INLINE)
    rendered = render(campaign, "sms", context_for(campaign, first_name=None), SETTINGS, "tr")
    assert rendered.text.startswith("Merhaba , iyi ki doğdun!\n")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{{ contact.city | default('-') }}", "-"),
        ("{{ 'var' if contact.city is defined else 'yok' }}", "yok"),
        ("{{ contact['first_name'] }}", "Ayşe"),
        ("{{ coupon.expires_on | date }}", "08.12.2026"),
        ("{{ coupon.expires_on | date('%Y/%m/%d') }}", "2026/12/08"),
        ("{{ '2026-12-08' | date }}", "08.12.2026"),
        ("{{ event.order_id }}", "S-1"),
        ("{{ campaign.name }} {{ campaign.purpose }}", "k commercial"),
    ],
)
def test_template_features(tmp_path, text, expected):
    campaign = load_campaign(write(tmp_path, f"""\
        name: k
        trigger: {{type: after_event, event: purchase, delay: 1d}}
        channels: [sms]
        coupon: {{prefix: K, percent: 5, valid_days: 1}}
        content:
          sms: {{text: "{text}"}}
        """))
    coupon = {"code": "K-ABCD2345", "percent": 5, "expires_on": date(2026, 12, 8)}
    context = context_for(campaign, coupon=coupon, event={"order_id": "S-1"})
    rendered = render(campaign, "sms", context, SETTINGS, "tr")
    assert rendered.text == expected + "\n" + SMS_FOOTER


# --- errors at render time ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{{ contact.frist_name }}",
         "content.sms.text: 'contact' has no attribute 'frist_name'; did you mean first_name?"),
        ("{{ contact.city }}",
         "content.sms.text: 'contact' has no attribute 'city'; it has first_name, last_name, "
         "external_id, email, phone, locale, birthday; for an attribute only some contacts have, "
         "write {{ contact.city | default('') }}"),
        ("{{ contcat.first_name }}", "content.sms.text: 'contcat' is undefined; did you mean contact?"),
        ("{{ foo }}", "content.sms.text: 'foo' is undefined; templates can use contact, coupon, "
                      "event, campaign, sender, unsubscribe_url"),
        ("{{ coupon.code }}", "content.sms.text: 'coupon' is undefined: the campaign has no coupon; "
                              "add coupon: {prefix: ..., percent: ..., valid_days: ...}"),
        ("{{ event.order_id }}",
         "content.sms.text: 'event' is undefined: only after_event campaigns have an event"),
        ("{{ sender.adress }}",
         "content.sms.text: 'sender' has no attribute 'adress'; it has name, mersis, phone, email, "
         "sms_header, sms_optout"),
        ("{{ 1 / 0 }}", "content.sms.text: ZeroDivisionError: division by zero"),
        ("{{ lipsum(5) }}", "content.sms.text: 'lipsum' is undefined; templates can use contact, "
                            "coupon, event, campaign, sender, unsubscribe_url"),
    ],
)
def test_undefined_and_runtime_errors_name_the_field(text, message):
    campaign = parse_campaign(INLINE.replace(
        'text: "Merhaba {{ contact.first_name }}, iyi ki doğdun!"', f'text: "{text}"'))
    with pytest.raises(RenderError) as excinfo:
        render(campaign, "sms", context_for(campaign), SETTINGS, "tr")
    assert str(excinfo.value) == message


def test_event_missing_an_attribute_fails_only_that_render(tmp_path):
    campaign = load_campaign(write(tmp_path, """\
        name: k
        trigger: {type: after_event, event: purchase, delay: 1d}
        channels: [sms]
        content:
          sms: {text: "Sipariş {{ event.order_id }}"}
        """))
    ok = render(campaign, "sms", context_for(campaign, event={"order_id": "S-9"}), SETTINGS, "tr")
    assert ok.text.startswith("Sipariş S-9\n")
    with pytest.raises(RenderError) as excinfo:
        render(campaign, "sms", context_for(campaign, event={"total": 10}), SETTINGS, "tr")
    assert str(excinfo.value) == "content.sms.text: 'event' has no attribute 'order_id'; it has total"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{{ ''.__class__ }}", "templates may not reach Python internals (access to attribute "
                               "'__class__' of 'str' object is unsafe)"),
        ("{{ ''.__class__.__mro__ }}", "templates may not reach Python internals (access to "
                                       "attribute '__class__' of 'str' object is unsafe)"),
        ("{{ cycler.__init__.__globals__ }}", "templates may not reach Python internals (access "
                                              "to attribute '__init__' of 'type' object is unsafe)"),
        ("{{ contact.__class__ }}", "templates may not reach Python internals (access to "
                                    "attribute '__class__' of 'Namespace' object is unsafe)"),
        ("{{ contact._values }}", "templates may not reach Python internals (access to "
                                  "attribute '_values' of 'Namespace' object is unsafe)"),
        ("{{ [1].append(2) }}", "templates may not reach Python internals (access to attribute "
                                "'append' of 'list' object is unsafe)"),
        ("{{ 'a' * 1000000 }}", "repeating to more than 100000 items is not allowed in templates"),
        ("{{ 10 ** 100000 }}", "an exponent above 1000 is not allowed in templates"),
        ("{{ range(10 ** 6) | list }}",
         "OverflowError: Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000)."),
    ],
)
def test_sandbox_refuses_escapes(text, message):
    campaign = parse_campaign(INLINE.replace(
        'text: "Merhaba {{ contact.first_name }}, iyi ki doğdun!"', f'text: "{text}"'))
    with pytest.raises(RenderError) as excinfo:
        render(campaign, "sms", context_for(campaign), SETTINGS, "tr")
    assert str(excinfo.value) == "content.sms.text: " + message


def test_multi_line_inline_text_errors_carry_the_line():
    campaign = parse_campaign(INLINE.replace(
        'html_inline: "<p>Merhaba {{ contact.first_name }}!</p>"',
        'html_inline: "<p>Merhaba</p>\\n<p>{{ contact.frist_name }}</p>"'))
    with pytest.raises(RenderError) as excinfo:
        render(campaign, "email", context_for(campaign), SETTINGS, "tr")
    assert str(excinfo.value) == ("content.email.html_inline: line 2: 'contact' has no attribute "
                                  "'frist_name'; did you mean first_name?")


# --- SMS sizing ---------------------------------------------------------------------------------


def test_sms_encoding_and_segments_for_turkish_text(tmp_path):
    body = "Çok teşekkürler! Şimdi sipariş verin, ğüşıöç İĞÜŞÖÇ. " * 3
    campaign = load_campaign(write(tmp_path, f"""\
        name: k
        trigger: {{type: birthday}}
        channels: [sms]
        content:
          sms: {{text: "{body}"}}
        """))
    rendered = render(campaign, "sms", context_for(campaign), SETTINGS, "tr")
    assert rendered.text == body.strip() + "\n" + SMS_FOOTER
    assert (rendered.encoding, rendered.units, rendered.segments) == ("gsm7-tr", 227, 2)
    # Without the 5-character reserve for the operator code the parts are the same here.
    plain = render(campaign, "sms", context_for(campaign), SETTINGS, "tr", sms_reserve=0)
    assert (plain.units, plain.segments) == (227, 2)


def test_sms_text_is_never_transliterated():
    campaign = parse_campaign(INLINE.replace("iyi ki doğdun!", "hâlâ bekliyoruz 😀"))
    rendered = render(campaign, "sms", context_for(campaign), SETTINGS, "tr")
    assert rendered.text == "Merhaba Ayşe, hâlâ bekliyoruz 😀\n" + SMS_FOOTER
    assert (rendered.encoding, rendered.units, rendered.segments) == ("ucs2", 101, 2)


def test_decomposed_letters_are_composed_not_counted_as_ucs2():
    campaign = parse_campaign(INLINE)
    rendered = render(campaign, "sms", context_for(campaign, first_name="Ays\u0327e"), SETTINGS, "tr")
    assert rendered.text.startswith("Merhaba Ayşe,")
    assert rendered.encoding == "gsm7-tr"


def test_sms_over_the_part_limit_is_refused(tmp_path):
    campaign = load_campaign(write(tmp_path, f"""\
        name: k
        trigger: {{type: birthday}}
        channels: [sms]
        content:
          sms: {{text: "{'a' * 300}"}}
        """))
    with pytest.raises(RenderError) as excinfo:
        render(campaign, "sms", context_for(campaign), SETTINGS, "tr", max_segments=2)
    assert str(excinfo.value) == (
        "content.sms.text: the message is 3 SMS parts (gsm7-tr, 369 characters with the footer); "
        "at most 2 parts can be sent, shorten the text")
    assert render(campaign, "sms", context_for(campaign), SETTINGS, "tr").segments == 3


def test_sms_footer_is_gsm7_and_turkish_only():
    campaign = parse_campaign(INLINE)
    settings = settings_with(name="Çiçekçi “Lâle” Ltd. Şti. – Øst", sms_optout="RET yazıp 4609’a gönderin")
    text = render(campaign, "sms", context_for(campaign, settings=settings), settings, "tr").text
    footer = text.split("\n", 1)[1]
    assert footer == "Çiçekçi \"Lale\" Ltd. Şti. - ?st Mersis:0123456789000015 RET yazıp 4609'a gönderin"
    allowed = GSM7_DEFAULT | GSM7_EXTENSION | TURKISH_SHIFT
    assert set(footer) <= allowed


def test_builtin_footer_templates_are_gsm7_or_turkish_in_their_literal_text():
    for name in ("sms.txt.j2", "sms.en.txt.j2"):
        source = (TEMPLATES / "footers" / name).read_text(encoding="utf-8")
        code = source.split("#}", 1)[1]  # the leading comment is not sent
        assert set(code) <= GSM7_DEFAULT | GSM7_EXTENSION | TURKISH_SHIFT, name


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Örnek Ticaret A.Ş.", "Örnek Ticaret A.Ş."),
        ("ğĞıİşŞçÇöÖüÜ", "ğĞıİşŞçÇöÖüÜ"),
        ("hâlâ îmân ûmit", "hala iman umit"),
        ("‘a’ “b” c–d e—f…", "'a' \"b\" c-d e-f..."),
        ("Crème brûlée", "Creme brulée"),  # the Turkish table gives up è but keeps é
        ("Ø Æ ¡ ¿ 😀", "? ? ? ? ?"),
        ("", ""),
        (None, ""),
    ],
)
def test_gsm_filter(value, expected):
    assert gsm(value) == expected


# --- html to text -------------------------------------------------------------------------------


def test_html_to_text():
    markup = (
        "<html><head><title>T</title><style>p{color:red}</style></head><body>"
        "<h1>Başlık</h1><p>Bir  iki\n üç &amp; dört</p>"
        "<ul><li>bir</li><li>iki</li></ul>"
        "<p><a href=\"https://ornek.com.tr/x\">buradan</a> veya "
        "<a href=\"mailto:destek@ornek.com.tr\">destek@ornek.com.tr</a>"
        "<br>son<br/>satır</p><script>alert(1)</script></body></html>"
    )
    assert html_to_text(markup) == (
        "Başlık\n\nBir iki üç & dört\n\n- bir\n\n- iki\n\n"
        "buradan (https://ornek.com.tr/x) veya destek@ornek.com.tr\nson\nsatır"
    )


# --- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["dogum-gunu", "efsane-cuma", "degerlendirme"])
def test_examples_validate_with_a_complete_sender(name):
    campaign = load_campaign(EXAMPLES / f"{name}.yaml")
    assert validate_templates(campaign, SETTINGS) == []


@pytest.mark.parametrize(
    ("name", "line"), [("dogum-gunu", 5), ("efsane-cuma", 4), ("degerlendirme", 5)]
)
def test_examples_fail_with_a_missing_sender(name, line):
    path = EXAMPLES / f"{name}.yaml"
    assert problems_of(path, Settings()) == [
        f"{path}:{line}:10: purpose: a commercial message must carry the sender's identity and "
        "opt-out (law 6563 art. 5 and 8); set name, mersis, phone, email, sms_optout under "
        "[sender] in izin.toml"
    ]


def test_missing_sender_names_the_configuration_file(tmp_path):
    path = write(tmp_path, """\
        name: k
        purpose: commercial
        trigger: {type: birthday}
        channels: [email]
        content:
          email: {subject: Selam, html_inline: "<p>Selam</p>"}
        """)
    settings = settings_with(mersis="", phone="").model_copy(update={"source": "/etc/izin.toml"})
    assert problems_of(path, settings) == [
        f"{path}:2:10: purpose: a commercial message must carry the sender's identity and opt-out "
        "(law 6563 art. 5 and 8); set mersis, phone under [sender] in /etc/izin.toml"
    ]


def test_examples_render_in_both_locales():
    campaign = load_campaign(EXAMPLES / "dogum-gunu.yaml")
    coupon = {"code": "IYIKI-ABCD2345", "percent": 20, "expires_on": date(2026, 12, 8)}
    tr = render(campaign, "email", context_for(campaign, coupon=coupon), SETTINGS, "tr")
    en = render(campaign, "email", context_for(campaign, coupon=coupon), SETTINGS, "en")
    assert (tr.subject, en.subject) == ("İyi ki doğdun Ayşe! Sana özel %20 indirim",
                                        "Happy birthday Ayşe! 20% off, just for you")
    assert tr.text.startswith("İyi ki doğdun Ayşe!\n\nYeni yaşını")
    assert en.text.startswith("Happy birthday, Ayşe!\n\nWarmest wishes")
    sms = render(campaign, "sms", context_for(campaign, coupon=coupon), SETTINGS, "tr")
    assert sms.text == ("İyi ki doğdun Ayşe! %20 indirim kodun: IYIKI-ABCD2345 (08.12.2026'e kadar)\n"
                        + SMS_FOOTER)
    assert (sms.encoding, sms.units, sms.segments) == ("gsm7-tr", 143, 1)


BROKEN = """\
name: k
trigger: {type: birthday}
channels: [email, sms]
content:
  email:
    subject: "Merhaba {{ contact.frist_name }}"
    html: k/email.html.j2
    text: k/missing.txt
  sms:
    text: "{{ ''.__class__.__mro__ }} {{ cycler.__init__.__globals__ }}"
"""


def test_validation_reports_every_broken_field_with_its_position(tmp_path):
    write_template(tmp_path, "k/email.html.j2",
                   "<p>Merhaba</p>\n<p>{{ contact.first_name }}</p>\n<p>{{ contact.first_name }</p>\n")
    path = write(tmp_path, BROKEN)
    assert problems_of(path) == [
        f"{path}:6:14: content.email.subject: 'contact' has no attribute 'frist_name'; "
        "did you mean first_name?",
        f"{path}:7:11: content.email.html: k/email.html.j2 line 3: unexpected '}}'",
        f"{path}:8:11: content.email.text: template 'k/missing.txt' not found next to the campaign "
        f"({tmp_path.resolve()}) or among izin's templates ({TEMPLATES.resolve()}); check the path",
        f"{path}:10:11: content.sms.text: templates may not reach Python internals (access to "
        "attribute '__class__' of 'str' object is unsafe)",
    ]


def test_validation_errors_in_an_included_template_name_that_template(tmp_path):
    write_template(tmp_path, "k/email.html.j2", "<p>Merhaba</p>\n{% include 'k/parca.j2' %}\n")
    write_template(tmp_path, "k/parca.j2", "ok\n\n{{ contact.frist_name }}\n")
    path = write(tmp_path, """\
        name: k
        trigger: {type: birthday}
        channels: [email]
        content:
          email:
            subject: Selam
            html: k/email.html.j2
        """)
    assert problems_of(path) == [
        f"{path}:7:11: content.email.html: k/parca.j2 line 3: 'contact' has no attribute "
        "'frist_name'; did you mean first_name?"
    ]


def test_validation_of_an_english_variant_only_broken(tmp_path):
    write_template(tmp_path, "k/email.html.j2", "<p>Merhaba</p>")
    write_template(tmp_path, "k/email.en.html.j2", "<p>Hello</p>\n{% if %}")
    path = write(tmp_path, """\
        name: k
        trigger: {type: birthday}
        channels: [email]
        content:
          email: {subject: Selam, html: k/email.html.j2}
        """)
    assert problems_of(path) == [
        f"{path}:5:33: content.email.html: k/email.en.html.j2 line 2: Expected an expression, "
        "got 'end of statement block'"
    ]


def test_sample_contact_has_audience_and_known_attributes_and_any_event_name(tmp_path):
    path = write(tmp_path, """\
        name: k
        trigger: {type: after_event, event: purchase, delay: 3d}
        audience:
          all:
            - {attribute: total_spent, gte: 500}
            - {attribute: city, in: [İstanbul, Ankara]}
            - not: {attribute: segment, eq: kapali}
        channels: [sms]
        content:
          sms:
            text: >-
              {{ contact.city }} {{ 'çok' if contact.total_spent > 400 else 'az' }}
              {{ contact.segment }} {{ contact.tier }} {{ event.anything_at_all }}
        """)
    assert problems_of(path, known_attributes=["tier"]) == []
    assert problems_of(path) == [
        f"{path}:11:11: content.sms.text: 'contact' has no attribute 'tier'; it has total_spent, "
        "city, segment, first_name, last_name, external_id, email, phone, locale, birthday; for an "
        "attribute only some contacts have, write {{ contact.tier | default('') }}"
    ]
    campaign = load_campaign(path)
    context = render_module._sample_context(
        campaign, SETTINGS, "sms", "tr", render_module._sample_attributes(campaign, ["tier"]))
    rendered = render(campaign, "sms", context, SETTINGS, "tr")
    assert rendered.text == ("İstanbul çok kapali [tier] [event.anything_at_all]\n" + SMS_FOOTER)


def test_validation_reports_an_sms_over_the_part_limit(tmp_path):
    path = write(tmp_path, f"""\
        name: k
        trigger: {{type: birthday}}
        channels: [sms]
        content:
          sms:
            text: "{'Çok uzun bir metin. ' * 8}"
        """)
    assert problems_of(path, max_segments=1) == [
        f"{path}:6:11: content.sms.text: the message is 2 SMS parts (gsm7-tr, 228 characters "
        "with the footer); at most 1 parts can be sent, shorten the text"
    ]
    assert problems_of(path) == []


def test_validation_reports_a_field_that_renders_to_nothing(tmp_path):
    path = write(tmp_path, """\
        name: k
        trigger: {type: birthday}
        channels: [sms]
        content:
          sms: {text: "{{ contact.last_name if false else '' }}   "}
        """)
    assert problems_of(path) == [
        f"{path}:5:15: content.sms.text: renders to nothing for the sample contact; give it some text"
    ]


def test_overridden_footer_without_identity_or_link_does_not_validate(tmp_path):
    write_template(tmp_path, "footers/email.html.j2", "<p>{{ sender.name }}</p>")
    write_template(tmp_path, "footers/sms.txt.j2", "{{ sender.name }}")
    path = write(tmp_path, FOOTER_CAMPAIGN)
    assert problems_of(path) == [
        f"{path}:5:3: content.email: the rendered HTML has no link to unsubscribe_url; the footer "
        "(footers/email.html.j2) must keep <a href=\"{{ unsubscribe_url }}\">",
        f"{path}:5:3: content.email: the rendered HTML lacks the MERSİS number; the footer "
        "(footers/email.html.j2) must keep it",
        f"{path}:5:3: content.email: the rendered HTML lacks the unsubscribe link; the footer "
        "(footers/email.html.j2) must keep it",
        f"{path}:6:3: content.sms: the rendered SMS lacks the opt-out text; the footer "
        "(footers/sms.txt.j2) must keep it",
    ]


def test_sender_that_sms_cannot_carry_does_not_validate(tmp_path):
    path = write(tmp_path, """\
        name: k
        trigger: {type: birthday}
        channels: [sms]
        content:
          sms: {text: Selam}
        """)
    assert problems_of(path, settings_with(name="Øresund ¿ Ltd")) == [
        f"{path}:1:1: purpose: [sender] name in izin.toml has 'Ø', '¿', which an SMS footer "
        "cannot carry in GSM-7; spell it without"
    ]


TRANSACTIONAL = """\
name: k
purpose: transactional
trigger: {type: after_event, event: purchase, delay: 0m}
channels: [email, sms]
content:
  email:
    subject: "Siparişiniz {{ event.order_id }} kargoda"
    html_inline: "<p>Merhaba {{ contact.first_name }}, siparişiniz yolda.</p>"
    text_inline: |
      Merhaba {{ contact.first_name }},
      siparişiniz yolda.
  sms:
    text: "Siparişiniz {{ event.order_id }} kargoya verildi."
"""


def test_clean_transactional_campaign_validates_without_a_sender(tmp_path):
    assert problems_of(write(tmp_path, TRANSACTIONAL), Settings()) == []


@pytest.mark.parametrize(
    ("old", "new", "field", "position", "found"),
    [
        ("kargoda\"", "kargoda, %10 İNDİRİM\"", "content.email.subject", "7:14", "'%10'"),
        ("kargoda\"", "kargoda, KUPONLU\"", "content.email.subject", "7:14", "'KUPONLU'"),
        ("yolda.</p>", "yolda. 20% off</p>", "content.email.html_inline", "8:18", "'20%'"),
        ("verildi.", "verildi. Yeni kampanyamızı kaçırmayın.", "content.sms.text", "13:11",
         "'kampanyamızı'"),
        ("siparişiniz yolda.\n", "siparişiniz yolda. Big discount!\n", "content.email.text_inline",
         "9:18", "'discount'"),
    ],
)
def test_transactional_campaign_refuses_promotional_text(tmp_path, old, new, field, position, found):
    path = write(tmp_path, TRANSACTIONAL.replace(old, new, 1))
    assert problems_of(path) == [
        f"{path}:{position}: {field}: a transactional campaign may not carry promotions, and the "
        f"text says {found}; remove it or set purpose: commercial"
    ]


def test_transactional_campaign_refuses_a_coupon_reference(tmp_path):
    path = write(tmp_path, TRANSACTIONAL.replace("kargoya verildi.", "{{ coupon.code }}"))
    assert problems_of(path) == [
        f"{path}:13:11: content.sms.text: a transactional campaign may not carry promotions, and "
        "this template refers to coupon; remove it or set purpose: commercial"
    ]


def test_validation_without_a_source_file_points_at_the_top():
    campaign = parse_campaign(INLINE.replace("{{ contact.first_name }}, iyi", "{{ contact.nope }}"))
    problems = validate_templates(campaign, SETTINGS)
    assert problems == [
        Problem("<campaign>", 1, 1, "content.sms.text",
                "'contact' has no attribute 'nope'; it has first_name, last_name, external_id, "
                "email, phone, locale, birthday; for an attribute only some contacts have, write "
                "{{ contact.nope | default('') }}"),
    ]


def test_footer_goes_before_body_end_even_after_dotted_capital_i():
    from izin.campaigns.render import _attach_footer

    body = "<html><body><p>İyi alışverişler! İİİİ</p></body></html>"
    assert _attach_footer(body, "<div>footer</div>") == (
        "<html><body><p>İyi alışverişler! İİİİ</p>\n<div>footer</div>\n</body></html>")


def test_inline_texts_have_locale_variants_with_turkish_fallback():
    localized = parse_campaign("""
name: selam
trigger: {type: birthday}
channels: [sms]
content:
  sms:
    text: {tr: "İyi ki doğdun {{ contact.first_name }}", en: "Happy birthday {{ contact.first_name }}"}
""")
    assert render(localized, "sms", context_for(localized), SETTINGS, "en").text.startswith("Happy birthday Ayşe\n")
    assert render(localized, "sms", context_for(localized), SETTINGS, "tr").text.startswith("İyi ki doğdun Ayşe\n")
    turkish_only = parse_campaign(localized.source_text.replace(', en: "Happy birthday {{ contact.first_name }}"', ""))
    assert render(turkish_only, "sms", context_for(turkish_only), SETTINGS, "en").text.startswith("İyi ki doğdun")


# --- footers kept between messages -------------------------------------------------------------


def footers_of(campaign, url, first_name="Ayşe", settings=SETTINGS):
    context = context_for(campaign, url=url, first_name=first_name, settings=settings)
    email = render(campaign, "email", context, settings, "tr")
    sms = render(campaign, "sms", context, settings, "tr")
    return email.html.split("<p>Selam</p>\n")[1], email.text.split("Selam\n\n")[1], sms.text.split("Selam\n")[1]


def test_the_shipped_footers_carry_each_messages_own_link_and_the_current_sender(monkeypatch):
    monkeypatch.setattr(render_module, "_kept_footers", {})
    campaign = parse_campaign(textwrap.dedent(FOOTER_CAMPAIGN))
    for token in ("TOKEN", "ZZZ-1_x", "TOKEN"):
        url = f"https://ornek.com.tr/u/{token}"
        assert footers_of(campaign, url) == (FOOTER_HTML_TR.replace(URL, url), FOOTER_TEXT_TR.replace(URL, url),
                                             SMS_FOOTER)
    kept = [text for text in render_module._kept_footers.values() if text]
    assert any(render_module._STAND_INS[0] in text for text in kept)  # rendered once, not per message
    other = settings_with(name="Başka Mağaza", mersis="")
    html, text, sms = footers_of(campaign, URL, settings=other)
    assert "Bu ileti Başka Mağaza tarafından gönderilmiştir.</p>" in html
    assert text.startswith("--\nBu ileti Başka Mağaza tarafından gönderilmiştir.\n")
    assert sms == "Başka Mağaza RET yazip 4609'a gonderin"


def test_a_link_that_html_escapes_is_escaped_in_the_html_footer():
    campaign = parse_campaign(textwrap.dedent(FOOTER_CAMPAIGN))
    html, text, _ = footers_of(campaign, "https://ornek.com.tr/u?t=A&k=1")
    assert '<a href="https://ornek.com.tr/u?t=A&amp;k=1" style="color:#666666">' in html
    assert text.endswith("ayrılabilirsiniz: https://ornek.com.tr/u?t=A&k=1\n")


@pytest.mark.parametrize("footer, expected", [
    # a shop's own footer is rendered for each message, whatever it does with the link
    ("<p><a href=\"{{ unsubscribe_url }}\">ayrıl</a></p>",
     ["<p><a href=\"https://a.tr/u/1\">ayrıl</a></p>\n", "<p><a href=\"https://a.tr/u/22\">ayrıl</a></p>\n"]),
    ("<p>{{ contact.first_name }} için: <a href=\"{{ unsubscribe_url }}\">ayrıl</a></p>",
     ["<p>Ayşe için: <a href=\"https://a.tr/u/1\">ayrıl</a></p>\n",
      "<p>Can için: <a href=\"https://a.tr/u/22\">ayrıl</a></p>\n"]),
    ("<p>{{ unsubscribe_url | upper }} {{ unsubscribe_url[-2:] }}</p>",
     ["<p>HTTPS://A.TR/U/1 /1</p>\n", "<p>HTTPS://A.TR/U/22 22</p>\n"]),
    ("<p>{% if unsubscribe_url | length > 16 %}uzun{% endif %} {{ unsubscribe_url }}</p>",
     ["<p> https://a.tr/u/1</p>\n", "<p>uzun https://a.tr/u/22</p>\n"]),
])
def test_a_shops_own_footer_is_rendered_per_message(tmp_path, footer, expected):
    write_template(tmp_path, "footers/email.html.j2", footer)
    campaign = load_campaign(write(tmp_path, FOOTER_CAMPAIGN))
    got = [footers_of(campaign, url, first_name)[0]
           for url, first_name in (("https://a.tr/u/1", "Ayşe"), ("https://a.tr/u/22", "Can"))]
    assert got == expected


@pytest.mark.parametrize("footer, expected", [
    ("<p>{{ unsubscribe_url | upper }}</p>", ["<p>HTTPS://A.TR/U/1</p>\n", "<p>HTTPS://A.TR/U/22</p>\n"]),
    ("<p>{{ unsubscribe_url[-2:] }} {{ unsubscribe_url }}</p>",
     ["<p>/1 https://a.tr/u/1</p>\n", "<p>22 https://a.tr/u/22</p>\n"]),
    ("<p>{{ unsubscribe_url | truncate(20) }}</p>", ["<p>https://a.tr/u/1</p>\n", "<p>https://a.tr/u/22</p>\n"]),
])
def test_a_shipped_footer_that_changes_the_link_is_never_kept(tmp_path, monkeypatch, footer, expected):
    # as if izin shipped this footer: the two stand-ins must catch what it does to the link
    shutil.copytree(TEMPLATES / "footers", tmp_path / "footers")
    monkeypatch.setattr(render_module, "TEMPLATES_DIR", tmp_path)
    monkeypatch.setattr(render_module, "_kept_footers", {})
    write_template(tmp_path, "footers/email.html.j2", footer)
    campaign = load_campaign(write(tmp_path, FOOTER_CAMPAIGN))
    got = [footers_of(campaign, url, first_name)[0]
           for url, first_name in (("https://a.tr/u/1", "Ayşe"), ("https://a.tr/u/22", "Can"))]
    assert got == expected
    assert None in render_module._kept_footers.values()  # looked at, and rendered per message
