"""The campaign spec: safe YAML with positions, the models, and one line per problem with its fix."""

from __future__ import annotations

from datetime import datetime, time, timedelta, timezone
from pathlib import Path
from textwrap import dedent

import pytest

from izin.campaigns import spec
from izin.campaigns.spec import (
    AfterEventTrigger,
    AttributeCondition,
    BirthdayTrigger,
    Cap,
    EventCondition,
    OnceTrigger,
    Problem,
    SpecError,
    TagCondition,
    load_campaign,
    parse_campaign,
    parse_cap,
    parse_duration,
    parse_send_time,
)
from izin.campaigns.yaml_positions import MAX_BYTES, YamlLoadError, load_yaml
from izin.errors import InputError

EXAMPLES = Path(spec.__file__).parent / "examples"

# The smallest valid tail, appended to cases that only exercise the keys above it.
TAIL = "channels: [sms]\ncontent: {sms: {text: hi}}\n"


@pytest.fixture
def write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Write YAML to ./c.yaml in a temporary working directory, so problems read ``c.yaml:L:C``."""
    monkeypatch.chdir(tmp_path)

    def _write(text: str | bytes) -> str:
        target = tmp_path / "c.yaml"
        if isinstance(text, bytes):
            target.write_bytes(text)
        else:
            target.write_text(text, encoding="utf-8")
        return "c.yaml"

    return _write


def problems_of(name: str) -> list[str]:
    with pytest.raises(SpecError) as caught:
        load_campaign(name)
    assert str(caught.value) == "\n".join(str(p) for p in caught.value.problems)
    return [str(p) for p in caught.value.problems]


# --- valid files -------------------------------------------------------------------------------


def test_birthday_file_parses_every_field(write) -> None:
    campaign = load_campaign(write(dedent("""\
        name: dogum-gunu
        description: İyi ki doğdun, %20 indirim
        trigger:
          type: birthday
          send_time: 09:30
        channels: [sms, email]
        coupon: {prefix: IYIKI, percent: 20, valid_days: 14}
        content:
          email:
            subject: "İyi ki doğdun {{ contact.first_name }}!"
            html: dogum-gunu/email.html.j2
            text_inline: "İyi ki doğdun!"
          sms:
            text: "{{ contact.first_name }}, iyi ki dogdun!"
        limits: {frequency_cap: "1/30d"}
        """)))
    assert campaign.name == "dogum-gunu"
    assert campaign.description == "İyi ki doğdun, %20 indirim"
    assert campaign.purpose == "commercial"
    # Unquoted 09:30 is text, not the YAML 1.1 sexagesimal number 570.
    assert campaign.trigger == BirthdayTrigger(type="birthday", send_time=time(9, 30))
    assert campaign.audience is None
    assert campaign.channels == ["sms", "email"]
    assert (campaign.coupon.prefix, campaign.coupon.percent, campaign.coupon.valid_days) == (
        "IYIKI", 20, 14)
    assert campaign.content.email.subject == "İyi ki doğdun {{ contact.first_name }}!"
    assert campaign.content.email.html == "dogum-gunu/email.html.j2"
    assert campaign.content.email.html_inline is None
    assert campaign.content.email.text is None
    assert campaign.content.email.text_inline == "İyi ki doğdun!"
    assert campaign.content.sms.text == "{{ contact.first_name }}, iyi ki dogdun!"
    assert campaign.limits.frequency_cap == Cap(count=1, period=timedelta(days=30))
    assert campaign.source_path == Path("c.yaml")


def test_birthday_send_time_defaults_to_ten(write) -> None:
    campaign = load_campaign(write("name: b\ntrigger: {type: birthday}\n" + TAIL))
    assert campaign.trigger == BirthdayTrigger(type="birthday", send_time=time(10, 0))


def test_once_file_keeps_the_offset(write) -> None:
    campaign = load_campaign(write(dedent("""\
        name: efsane-cuma
        trigger: {type: once, at: 2026-11-27T10:00:00+03:00}
        channels: [email]
        content: {email: {subject: Kargo, html_inline: "<p>Yolda</p>", text: kargo/text.txt}}
        """)))
    assert campaign.purpose == "commercial"
    assert campaign.trigger == OnceTrigger(
        type="once", at=datetime(2026, 11, 27, 10, 0, tzinfo=timezone(timedelta(hours=3))))
    assert campaign.trigger.at.astimezone(timezone.utc) == datetime(
        2026, 11, 27, 7, 0, tzinfo=timezone.utc)
    assert campaign.content.email.html_inline == "<p>Yolda</p>"
    assert campaign.content.email.text == "kargo/text.txt"


def test_after_event_file(write) -> None:
    campaign = load_campaign(write(
        "name: degerlendirme\n"
        "trigger: {type: after_event, event: purchase, delay: 3d, send_time: '11:00', backfill: true}\n"
        + TAIL))
    assert campaign.trigger == AfterEventTrigger(
        type="after_event", event="purchase", delay=timedelta(days=3), send_time=time(11, 0),
        backfill=True)


def test_after_event_defaults(write) -> None:
    campaign = load_campaign(write(
        "name: t\ntrigger: {type: after_event, event: signup, delay: 0m}\n" + TAIL))
    assert campaign.trigger == AfterEventTrigger(
        type="after_event", event="signup", delay=timedelta(0), send_time=None, backfill=False)


def test_every_audience_operator_and_kind(write) -> None:
    campaign = load_campaign(write(dedent("""\
        name: segment
        trigger: {type: birthday}
        audience:
          all:
            - {attribute: city, eq: Ankara}
            - {attribute: city, ne: İzmir}
            - {attribute: city, in: [İstanbul, Ankara]}
            - {attribute: locale, not_in: [en]}
            - {attribute: total_spent, gt: 100}
            - {attribute: total_spent, gte: 500.5}
            - {attribute: age, lt: 65}
            - {attribute: signup_date, lte: "2025-01-31"}
            - {attribute: interests, contains: kitap}
            - {attribute: phone, exists: true}
            - {tag: vip}
            - {event: purchase, within: 365d}
            - {event: signup}
            - any:
                - {tag: sadik}
                - not: {event: purchase, within: 30d}
        """) + TAIL))
    conditions = campaign.audience.all
    attribute_tests = [(c.attribute, c.op, c.value) for c in conditions[:10]]
    assert attribute_tests == [
        ("city", "eq", "Ankara"),
        ("city", "ne", "İzmir"),
        ("city", "in", ["İstanbul", "Ankara"]),
        ("locale", "not_in", ["en"]),
        ("total_spent", "gt", 100),
        ("total_spent", "gte", 500.5),
        ("age", "lt", 65),
        ("signup_date", "lte", "2025-01-31"),
        ("interests", "contains", "kitap"),
        ("phone", "exists", True),
    ]
    assert all(isinstance(c, AttributeCondition) for c in conditions[:10])
    assert conditions[10] == TagCondition(tag="vip")
    assert conditions[11] == EventCondition(event="purchase", within=timedelta(days=365))
    assert conditions[12] == EventCondition(event="signup", within=None)
    nested = conditions[13].any
    assert nested[0] == TagCondition(tag="sadik")
    assert nested[1].not_ == EventCondition(event="purchase", within=timedelta(days=30))


def test_yaml_11_booleans_stay_text(write) -> None:
    # `in: [NO, SE]` means Norway and Sweden, not [False, "SE"].
    campaign = load_campaign(write(dedent("""\
        name: ulke
        trigger: {type: birthday}
        audience: {attribute: country, in: [NO, SE, on]}
        """) + TAIL))
    assert campaign.audience.value == ["NO", "SE", "on"]


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_examples_load(path: Path) -> None:
    campaign = load_campaign(path)
    assert campaign.name == path.stem


def test_examples_are_the_three_documented_ones() -> None:
    campaigns = {p.stem: load_campaign(p) for p in EXAMPLES.glob("*.yaml")}
    assert sorted(campaigns) == ["degerlendirme", "dogum-gunu", "efsane-cuma"]
    birthday = campaigns["dogum-gunu"]
    assert birthday.trigger == BirthdayTrigger(type="birthday", send_time=time(10, 0))
    assert birthday.channels == ["sms", "email"]
    assert (birthday.coupon.prefix, birthday.coupon.percent, birthday.coupon.valid_days) == (
        "IYIKI", 20, 14)
    assert birthday.content.email.html == "dogum-gunu/email.html.j2"
    blast = campaigns["efsane-cuma"]
    assert blast.trigger.at == datetime(2026, 11, 27, 10, 0, tzinfo=timezone(timedelta(hours=3)))
    assert blast.channels == ["email", "sms"]
    follow_up = campaigns["degerlendirme"]
    assert follow_up.trigger == AfterEventTrigger(
        type="after_event", event="purchase", delay=timedelta(days=3), send_time=time(11, 0))
    assert follow_up.coupon is None


# --- invalid files: every problem, exactly, in file order ---------------------------------------

INVALID = [
    pytest.param(
        "name: x\ntrigger: {type: birthday\nchannels: [sms]\n",
        ["c.yaml:3:9: invalid YAML: while parsing a flow mapping (from line 2), expected ',' or "
         "'}', but got ':'; check indentation and quoting"],
        id="malformed-flow-mapping",
    ),
    pytest.param(
        "name: x\n  trigger: y\n",
        ["c.yaml:2:10: invalid YAML: mapping values are not allowed here; check indentation and "
         "quoting"],
        id="malformed-indentation",
    ),
    pytest.param(
        "name: x\n" + TAIL + "---\nname: y\n",
        ["c.yaml:4:1: invalid YAML: expected a single document in the stream (from line 1), but "
         "found another document; check indentation and quoting"],
        id="two-documents",
    ),
    pytest.param(
        "",
        ["c.yaml:1:1: file is empty; a campaign needs at least name, trigger, channels and content"],
        id="empty-file",
    ),
    pytest.param(
        "- name: x\n",
        ["c.yaml:1:1: must be a mapping of campaign keys (name, trigger, channels, content, ...), "
         "got a list"],
        id="list-at-top",
    ),
    pytest.param(
        "description: 5\n",
        ["c.yaml:1:1: channels: missing required key 'channels'; add e.g. channels: [sms, email]",
         "c.yaml:1:1: content: missing required key 'content'; add e.g. content: {sms: {text: ...}}",
         "c.yaml:1:1: name: missing required key 'name'; add e.g. name: dogum-gunu",
         "c.yaml:1:1: trigger: missing required key 'trigger'; add e.g. trigger: {type: birthday}",
         "c.yaml:1:14: description: must be text, got the number 5"],
        id="missing-keys-and-wrong-type",
    ),
    pytest.param(
        "name: Doğum Günü\npurpose: comercial\ntrigger: birthday\n" + TAIL,
        ["c.yaml:1:7: name: must use only a-z, 0-9 and - (no spaces, capitals or Turkish letters); "
         "try 'dogum-gunu'",
         "c.yaml:2:10: purpose: must be one of commercial, transactional (did you mean "
         "'commercial'?); got text 'comercial'",
         "c.yaml:3:10: trigger: must be a mapping, e.g. {type: birthday, send_time: \"10:00\"}; got "
         "text 'birthday'"],
        id="wrong-types",
    ),
    pytest.param(
        "name: x\ntrigger:\n  type: birthday\n  sned_time: '10:00'\n" + TAIL + "limit: {}\n",
        ["c.yaml:4:3: trigger.sned_time: unknown key 'sned_time' (did you mean 'send_time'?); "
         "allowed: send_time, type",
         "c.yaml:7:1: limit: unknown key 'limit' (did you mean 'limits'?); allowed: audience, "
         "channels, content, coupon, description, limits, name, purpose, trigger"],
        id="unknown-keys-did-you-mean",
    ),
    pytest.param(
        "name: x\ntrigger: {type: birthday, at: '2026-11-27T10:00:00+03:00'}\n" + TAIL,
        ["c.yaml:2:27: trigger.at: unknown key 'at' for type birthday (at belongs to type once); "
         "allowed: send_time, type"],
        id="key-of-another-trigger-type",
    ),
    pytest.param(
        "name: x\ntrigger: {type: birthdy}\n" + TAIL,
        ["c.yaml:2:17: trigger.type: unknown trigger type 'birthdy' (did you mean 'birthday'?); "
         "allowed: after_event, birthday, once"],
        id="unknown-trigger-type",
    ),
    pytest.param(
        "name: x\ntrigger: {type: null}\n" + TAIL,
        ["c.yaml:2:17: trigger.type: must be one of after_event, birthday, once; got nothing"],
        id="trigger-type-null",
    ),
    pytest.param(
        "name: x\ntrigger:\n  send_time: '10:00'\n" + TAIL,
        ["c.yaml:2:1: trigger.type: missing required key 'type'; allowed types: after_event, "
         "birthday, once"],
        id="trigger-without-type",
    ),
    pytest.param(
        "name: x\ntrigger: {type: after_event, event: purchase, delay: 3 days}\n" + TAIL,
        ["c.yaml:2:54: trigger.delay: '3 days' is not a duration; write 3d (a whole number "
         "followed by m, h, d or w)"],
        id="delay-3-days",
    ),
    pytest.param(
        "name: x\ntrigger: {type: after_event, delay: 3, send_time: 1000, backfill: yes}\n" + TAIL,
        # A missing key points at the key that opens its mapping.
        ["c.yaml:2:1: trigger.event: missing required key 'event'; add e.g. event: purchase",
         "c.yaml:2:37: trigger.delay: '3' has no unit; write e.g. 3d (a whole number followed by "
         "m, h, d or w)",
         "c.yaml:2:51: trigger.send_time: must be HH:MM (00:00-23:59) in quotes, e.g. \"10:00\"; "
         "got the number 1000",
         "c.yaml:2:67: trigger.backfill: must be true or false, got text 'yes'"],
        id="after-event-problems",
    ),
    pytest.param(
        "name: x\ntrigger: {type: birthday, send_time: \"25:00\"}\n" + TAIL,
        ["c.yaml:2:38: trigger.send_time: must be HH:MM (00:00-23:59), e.g. 10:00; got '25:00'"],
        id="send-time-25",
    ),
    pytest.param(
        "name: x\ntrigger: {type: birthday, send_time: \"9:00\"}\n" + TAIL,
        ["c.yaml:2:38: trigger.send_time: must be HH:MM (00:00-23:59), e.g. 10:00; got '9:00'"],
        id="send-time-one-digit-hour",
    ),
    pytest.param(
        "name: x\ntrigger: {type: once, at: 2026-11-27 10:00:00}\n" + TAIL,
        ["c.yaml:2:27: trigger.at: needs a UTC offset: write \"2026-11-27T10:00:00+03:00\" for "
         "Türkiye time"],
        id="at-without-offset",
    ),
    pytest.param(
        "name: x\ntrigger: {type: once, at: yarın}\n" + TAIL,
        ["c.yaml:2:27: trigger.at: must be an ISO 8601 date and time with offset, e.g. "
         "\"2026-11-27T10:00:00+03:00\"; got 'yarın'"],
        id="at-not-a-date",
    ),
    pytest.param(
        "name: x\ntrigger: {type: once}\n" + TAIL,
        ["c.yaml:2:1: trigger.at: missing required key 'at'; add e.g. at: "
         "\"2026-11-27T10:00:00+03:00\""],
        id="at-missing",
    ),
    pytest.param(
        dedent("""\
            name: x
            trigger: {type: birthday}
            audience:
              any:
                - {attribute: city, in: [İstanbul], eq: Ankara}
                - {attribute: total_spent}
                - {tag: vip, event: purchase}
                - {atribute: city, eq: Ankara}
                - not: 3
                - {attribute: a, in: []}
                - {attribute: a, in: Ankara}
                - {attribute: a, exists: yes}
                - {attribute: a, gt: true}
                - {attribute: a, eq: [1]}
                - {attribute: a, not_in: [1, [2]]}
                - {attribute: "", eq: 1}
                - {event: purchase, within: 0d}
                - {event: purchase, within: 30 gün}
                - {tag: 5}
                - {all: []}
                - {attribute: a, within: 3d, eq: 1}
            """) + TAIL,
        ["c.yaml:5:7: audience.any.0: condition on 'city' has 2 operators (eq, in); use exactly "
         "one of eq, ne, in, not_in, gt, gte, lt, lte, contains, exists, and combine several "
         "conditions under all: [...]",
         "c.yaml:6:7: audience.any.1: condition on 'total_spent' needs one operator: eq, ne, in, "
         "not_in, gt, gte, lt, lte, contains, exists; e.g. {attribute: total_spent, eq: ...}",
         "c.yaml:7:7: audience.any.2: mixes tag and event; a condition has exactly one of all, "
         "any, not, attribute, tag, event (put several conditions in a list under all or any)",
         "c.yaml:8:7: audience.any.3: needs one of all, any, not, attribute, tag, event; found "
         "'atribute', 'eq' (did you mean 'attribute'?)",
         "c.yaml:9:12: audience.any.4.not: must be a condition mapping with one of all, any, not, "
         "attribute, tag, event, e.g. {tag: vip}; got the number 3",
         "c.yaml:10:22: audience.any.5.in: must list at least 1 item, e.g. [İstanbul, Ankara]",
         "c.yaml:11:26: audience.any.6.in: must be a list, e.g. [İstanbul, Ankara]; got text "
         "'Ankara'",
         "c.yaml:12:30: audience.any.7.exists: must be true or false, got text 'yes'",
         "c.yaml:13:26: audience.any.8.gt: must be a number or text (e.g. a date \"2025-01-31\"), "
         "got true",
         "c.yaml:14:22: audience.any.9.eq: must be one value (text, a number or true/false), got "
         "a list",
         "c.yaml:15:34: audience.any.10.not_in.1: must be one value (text, a number or "
         "true/false), got a list",
         "c.yaml:16:19: audience.any.11.attribute: must not be empty",
         "c.yaml:17:33: audience.any.12.within: must be longer than zero, e.g. 30d; got '0d'",
         "c.yaml:18:33: audience.any.13.within: '30 gün' is not a duration; write 30d (a whole "
         "number followed by m, h, d or w)",
         "c.yaml:19:13: audience.any.14.tag: must be text, got the number 5",
         "c.yaml:20:8: audience.any.15.all: must list at least 1 item, e.g. [{tag: vip}, "
         "{attribute: city, eq: Ankara}]",
         "c.yaml:21:22: audience.any.16.within: unknown key 'within'; allowed: attribute, "
         "contains, eq, exists, gt, gte, in, lt, lte, ne, not_in"],
        id="audience-invalid",
    ),
    pytest.param(
        "name: x\ntrigger: {type: birthday}\n" + TAIL + "limits: {frequency_cap: 3}\n",
        ["c.yaml:5:25: limits.frequency_cap: '3' is not a frequency cap; write <count>/<duration>, "
         "e.g. 3/7d"],
        id="cap-without-period",
    ),
    pytest.param(
        "name: x\ntrigger: {type: birthday}\n" + TAIL + "limits: {frequency_cap: 3/7 days}\n",
        ["c.yaml:5:25: limits.frequency_cap: '3/7 days' is not a frequency cap; write 3/7d"],
        id="cap-with-words",
    ),
    pytest.param(
        "name: x\ntrigger: {type: birthday}\n" + TAIL + "limits: {frequency_cap: 0/7d}\n",
        ["c.yaml:5:25: limits.frequency_cap: '0/7d' allows nothing; the count must be at least 1, "
         "e.g. 3/7d"],
        id="cap-zero",
    ),
    pytest.param(
        "name: x\ntrigger: {type: birthday}\nchannels: [sms, call, fax, sms]\n"
        "content: {sms: {text: hi}}\n",
        ["c.yaml:3:17: channels.1: call is a consent channel (İYS ARAMA), not a sending channel; "
         "use email or sms",
         "c.yaml:3:23: channels.2: must be email or sms; got text 'fax'",
         "c.yaml:3:28: channels.3: channel 'sms' is listed twice; list each channel once"],
        id="channels-call-unknown-duplicate",
    ),
    pytest.param(
        "name: x\ntrigger: {type: birthday}\nchannels: []\ncontent: {}\n",
        ["c.yaml:3:1: channels: must list at least 1 item, e.g. [sms, email]"],
        id="channels-empty",
    ),
    pytest.param(
        "name: x\ntrigger: {type: birthday}\nchannels: sms\ncontent: {sms: {text: hi}}\n",
        ["c.yaml:3:11: channels: must be a list, e.g. [sms, email]; got text 'sms'"],
        id="channels-not-a-list",
    ),
    pytest.param(
        dedent("""\
            name: x
            trigger: {type: birthday}
            channels: [email]
            content:
              sms:
                text: merhaba
              call: {}
            """),
        ["c.yaml:4:1: content.email: missing content for channel 'email'; add content.email with "
         "subject and html",
         "c.yaml:5:3: content.sms: content for 'sms' but sms is not in channels; add it to "
         "channels or remove content.sms",
         "c.yaml:7:3: content.call: unknown key 'call'; allowed: email, sms"],
        id="content-channel-mismatch",
    ),
    pytest.param(
        dedent("""\
            name: x
            trigger: {type: birthday}
            channels: [email]
            content:
              email:
                subject: ""
                html: ../x.html
                text: notlar.md
            """),
        ["c.yaml:6:14: content.email.subject: must not be empty",
         "c.yaml:7:11: content.email.html: must be a relative path with / and without .., e.g. "
         "dogum-gunu/email.j2",
         "c.yaml:8:11: content.email.text: must end in .j2 or .txt; got 'notlar.md'"],
        id="email-fields",
    ),
    pytest.param(
        "name: x\ntrigger: {type: birthday}\nchannels: [email]\n"
        "content:\n  email:\n    subject: Merhaba\n",
        ["c.yaml:5:3: content.email: give exactly one of html (a template path) or html_inline "
         "(template text)"],
        id="email-without-body",
    ),
    pytest.param(
        "name: x\npurpose: transactional\ntrigger: {type: after_event, event: purchase, delay: 1d}\n" + TAIL
        + "coupon: {prefix: IYIKI, percent: 20, valid_days: 14}\n",
        ["c.yaml:6:1: coupon: a transactional campaign may not carry promotions; remove coupon or "
         "set purpose: commercial"],
        id="transactional-with-coupon",
    ),
    pytest.param(
        "name: x\ntrigger: {type: birthday}\n" + TAIL
        + "coupon: {prefix: iyiki, percent: \"20\", valid_days: 0}\n",
        ["c.yaml:5:18: coupon.prefix: must be 1-16 characters of A-Z and 0-9; try 'IYIKI'",
         "c.yaml:5:34: coupon.percent: must be a whole number, got text '20'",
         "c.yaml:5:52: coupon.valid_days: must be at least 1, got 0"],
        id="coupon-fields",
    ),
    pytest.param(
        "name: !!python/object/apply:os.system [ls]\ntrigger: {type: birthday}\n"
        "channels: [sms]\ncontent: {sms: {text: !sablon hi}}\n",
        ["c.yaml:1:7: name: tag '!!python/object/apply:os.system' is not allowed; use plain text, "
         "numbers, true/false, lists and mappings",
         "c.yaml:4:23: content.sms.text: tag '!sablon' is not allowed; use plain text, numbers, "
         "true/false, lists and mappings"],
        id="python-object-tag",
    ),
    pytest.param(
        "a: &a [x,x,x,x,x,x,x,x,x,x]\n"
        "b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
        "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
        "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
        "e: [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\n",
        # a holds 11 values, b 111, c 1,111: the 10,000th is reached inside d, at its 9th *c.
        ["c.yaml:4:29: alias *c expands the document beyond 10000 values; write the content out "
         "instead of nesting aliases"],
        id="alias-bomb",
    ),
    pytest.param(
        "a: &a [*a]\n",
        ["c.yaml:1:8: alias *a refers to a node that contains it; remove the alias"],
        id="recursive-alias",
    ),
    pytest.param(
        "base: &b {x: 1}\n<<: *b\n",
        ["c.yaml:2:1: merge keys (<<) are not supported; write the keys out"],
        id="merge-key",
    ),
    pytest.param(
        "name: x\ntrigger: {type: birthday}\n" + TAIL + "name: y\ntrigger: {type: once}\n",
        ["c.yaml:5:1: name: duplicate key 'name' (first defined on line 1); keep only one",
         "c.yaml:6:1: trigger: duplicate key 'trigger' (first defined on line 2); keep only one"],
        id="duplicate-keys",
    ),
    pytest.param(
        "name: " + "[" * 60 + "]" * 60 + "\n",
        ["c.yaml:1:56: nesting deeper than 50 levels; a campaign file is shallow, check for "
         "unclosed brackets or runaway indentation"],
        id="too-deep",
    ),
    pytest.param(
        b"name: x\ndescription: \xff\n",
        ["c.yaml:2:14: file is not UTF-8 text; save it as UTF-8"],
        id="not-utf8",
    ),
    pytest.param(
        "name: x\x00\n",
        ["c.yaml:1:8: invalid YAML: control character U+0000 is not allowed; remove it"],
        id="control-character",
    ),
    pytest.param(
        dedent("""\
            name: Efsane Cuma
            purpose: transactional
            trigger:
              type: after_event
              event: purchase
              delay: 3
              send_tme: "11:00"
            channels: [email, call]
            coupon: {prefix: EFSANE, percent: 130, valid_days: 3}
            content:
              sms: {text: merhaba}
            limits: {frequency_cap: 3/week}
            """),
        ["c.yaml:1:7: name: must use only a-z, 0-9 and - (no spaces, capitals or Turkish "
         "letters); try 'efsane-cuma'",
         "c.yaml:6:10: trigger.delay: '3' has no unit; write e.g. 3d (a whole number followed by "
         "m, h, d or w)",
         "c.yaml:7:3: trigger.send_tme: unknown key 'send_tme' (did you mean 'send_time'?); "
         "allowed: backfill, delay, event, send_time, type",
         "c.yaml:8:19: channels.1: call is a consent channel (İYS ARAMA), not a sending channel; "
         "use email or sms",
         "c.yaml:9:1: coupon: a transactional campaign may not carry promotions; remove coupon or "
         "set purpose: commercial",
         "c.yaml:9:35: coupon.percent: must be at most 100, got 130",
         "c.yaml:10:1: content.email: missing content for channel 'email'; add content.email with "
         "subject and html",
         "c.yaml:11:3: content.sms: content for 'sms' but sms is not in channels; add it to "
         "channels or remove content.sms",
         "c.yaml:12:25: limits.frequency_cap: '3/week' is not a frequency cap; write "
         "<count>/<duration>, e.g. 3/7d"],
        id="several-problems-in-one-file",
    ),
]


@pytest.mark.parametrize(("text", "expected"), INVALID)
def test_invalid_files_report_every_problem(write, text: str | bytes, expected: list[str]) -> None:
    assert problems_of(write(text)) == expected


def test_spec_error_is_an_input_error_with_structured_problems(write) -> None:
    with pytest.raises(SpecError) as caught:
        load_campaign(write("name: x\ntrigger: {type: birthday, send_time: '25:00'}\n" + TAIL))
    error = caught.value
    assert isinstance(error, InputError)
    assert error.exit_code == 2
    assert error.problems == [Problem(
        file="c.yaml", line=2, column=38, field="trigger.send_time",
        message="must be HH:MM (00:00-23:59), e.g. 10:00; got '25:00'")]


def test_missing_file_is_a_problem_too(write) -> None:
    assert problems_of("yok.yaml") == ["yok.yaml:1:1: cannot read the file: No such file or directory"]


def test_oversized_file_is_refused_before_parsing(write) -> None:
    name = write("name: x\n" + "#" * MAX_BYTES + "\n")
    assert problems_of(name) == [
        "c.yaml:1:1: file is larger than 1048576 bytes (1 MiB); a campaign file is a few kilobytes"]


def test_rules_also_hold_when_models_are_built_in_code() -> None:
    with pytest.raises(ValueError, match="a transactional campaign may not carry promotions"):
        spec.Campaign.model_validate({
            "name": "x", "purpose": "transactional", "trigger": {"type": "birthday"},
            "channels": ["sms"], "coupon": {"prefix": "A", "percent": 1, "valid_days": 1},
            "content": {"sms": {"text": "a"}},
        })


# --- the YAML layer ------------------------------------------------------------------------------


def test_positions_are_recorded_for_values_and_keys() -> None:
    loaded = load_yaml(dedent("""\
        trigger:
          send_time: 10:00
        audience:
          all:
            - {attribute: city, eq: Ankara}
        """))
    assert loaded.data == {
        "trigger": {"send_time": "10:00"},
        "audience": {"all": [{"attribute": "city", "eq": "Ankara"}]},
    }
    assert loaded.positions[()] == (1, 1)
    assert loaded.positions[("trigger",)] == (2, 3)
    assert loaded.positions[("trigger", "send_time")] == (2, 14)
    assert loaded.key_positions[("trigger", "send_time")] == (2, 3)
    assert loaded.positions[("audience", "all", 0)] == (5, 7)
    assert loaded.positions[("audience", "all", 0, "attribute")] == (5, 19)
    assert loaded.key_positions[("audience", "all", 0, "eq")] == (5, 25)
    assert loaded.locate(("audience", "all", 0, "missing")) == (5, 7)


def test_small_aliases_are_allowed_and_point_at_their_use() -> None:
    loaded = load_yaml("a: &v [1, 2]\nb: *v\n")
    assert loaded.data == {"a": [1, 2], "b": [1, 2]}
    assert loaded.positions[("b",)] == (2, 4)
    assert loaded.positions[("b", 0)] == (1, 8)


def test_yaml_load_error_carries_every_issue() -> None:
    with pytest.raises(YamlLoadError) as caught:
        load_yaml("a: 1\na: 2\nb: !!set {x}\n")
    assert [(i.line, i.column, i.path, i.message) for i in caught.value.issues] == [
        (2, 1, ("a",), "duplicate key 'a' (first defined on line 1); keep only one"),
        (3, 4, ("b",), "tag '!!set' is not allowed; use plain text, numbers, true/false, lists "
                       "and mappings"),
    ]


# --- the scalar parsers --------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("30m", timedelta(minutes=30)),
    ("12h", timedelta(hours=12)),
    ("3d", timedelta(days=3)),
    ("2w", timedelta(weeks=2)),
    ("0m", timedelta(0)),
    ("3 days", "'3 days' is not a duration; write 3d (a whole number followed by m, h, d or w)"),
    ("3", "'3' has no unit; write e.g. 3d (a whole number followed by m, h, d or w)"),
    ("3D", "'3D' is not a duration; write 3d (a whole number followed by m, h, d or w)"),
    ("2 saat", "'2 saat' is not a duration; write 2h (a whole number followed by m, h, d or w)"),
    ("1y", "'1y' is not a duration; write a whole number followed by m, h, d or w, e.g. 3d"),
    ("-3d", "'-3d' is not a duration; write a whole number followed by m, h, d or w, e.g. 3d"),
    ("", "'' is not a duration; write a whole number followed by m, h, d or w, e.g. 3d"),
])
def test_parse_duration(text: str, expected: timedelta | str) -> None:
    if isinstance(expected, timedelta):
        assert parse_duration(text) == expected
    else:
        with pytest.raises(ValueError) as caught:
            parse_duration(text)
        assert str(caught.value) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("3/7d", Cap(3, timedelta(days=7))),
    ("1/30d", Cap(1, timedelta(days=30))),
    ("10/12h", Cap(10, timedelta(hours=12))),
    ("3/7 days", "'3/7 days' is not a frequency cap; write 3/7d"),
    ("3/7", "'3/7' is not a frequency cap; write <count>/<duration>, e.g. 3/7d"),
    ("3 per week", "'3 per week' is not a frequency cap; write <count>/<duration>, e.g. 3/7d"),
    ("x/7d", "'x/7d' is not a frequency cap; write <count>/<duration>, e.g. 3/7d"),
    ("0/7d", "'0/7d' allows nothing; the count must be at least 1, e.g. 3/7d"),
    ("3/0d", "'3/0d' has an empty period; use a period longer than zero, e.g. 3/7d"),
])
def test_parse_cap(text: str, expected: Cap | str) -> None:
    if isinstance(expected, Cap):
        assert parse_cap(text) == expected
    else:
        with pytest.raises(ValueError) as caught:
            parse_cap(text)
        assert str(caught.value) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("00:00", time(0, 0)),
    ("10:00", time(10, 0)),
    ("23:59", time(23, 59)),
    ("24:00", None),
    ("25:00", None),
    ("10:60", None),
    ("9:00", None),
    ("10.00", None),
    ("10:00:00", None),
])
def test_parse_send_time(text: str, expected: time | None) -> None:
    if expected is not None:
        assert parse_send_time(text) == expected
    else:
        with pytest.raises(ValueError) as caught:
            parse_send_time(text)
        assert str(caught.value) == f"must be HH:MM (00:00-23:59), e.g. 10:00; got '{text}'"


@pytest.mark.parametrize("trigger", ["{type: birthday}", "{type: once, at: \"2026-11-27T10:00:00+03:00\"}"])
def test_transactional_birthday_or_blast_is_refused(tmp_path, trigger):
    text = (f"name: kutlama\npurpose: transactional\ntrigger: {trigger}\nchannels: [sms]\n"
            "content:\n  sms: {text: merhaba}\n")
    with pytest.raises(SpecError) as info:
        parse_campaign(text, "k.yaml")
    kind = "birthday" if "birthday" in trigger else "once"
    assert [str(p) for p in info.value.problems] == [
        f"k.yaml:2:10: purpose: a {kind} campaign is a commercial message (law 6563 counts celebration and blast "
        "messages as commercial), so it needs consent; set purpose: commercial"]
