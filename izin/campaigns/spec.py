"""The campaign file: pydantic models for its structure, and the loader that reports every problem.

``load_campaign(path)`` reads a campaign YAML file (see ``yaml_positions`` for the safe loading),
validates it against the models below (every model has ``extra="forbid"``) plus the cross-field
rules, and either returns a ``Campaign`` or raises ``SpecError`` listing *all* problems of the file,
one line each: ``FILE:LINE:COL: field.path: what is wrong and how to fix it``. Problems about the
file as a whole (malformed YAML, an empty file) leave out the ``field.path: `` part. A problem
about a missing key points at the nearest enclosing value that exists; one about a key that must
go ("unknown key", content for an unlisted channel, a coupon on a transactional campaign) points
at the key itself; every other problem points at the offending value.

Only structure is checked here: templates are rendered (and their names checked) by a later step.

Choices made where the contract leaves room:

- ``content.email`` takes ``subject`` (inline template text), exactly one of ``html`` (a template
  path ending in ``.j2`` or ``.html``, under ``templates/`` or next to the YAML) or ``html_inline``
  (template text), and optionally one of ``text`` (a plain-text template path ending in ``.j2``
  or ``.txt``) or ``text_inline``. ``content.sms`` takes ``text``, which is inline template text
  (an SMS is one short line, a separate file would only hide it).
- Template paths are relative, ``/``-separated and may not contain ``..``: they are resolved
  against fixed roots and must not escape them.
- Durations are ``<whole number><unit>`` with unit ``m``, ``h``, ``d`` or ``w``; ``delay`` may be
  ``0m``, ``within`` and a cap's period must be longer than zero.
- Values are strict: ``percent: "20"`` is an error, not 20, because a quoted number in a campaign
  file is usually a mistake elsewhere on the line.
- ``send_time`` is a ``datetime.time``; ``at`` is an aware ``datetime``; durations are
  ``timedelta``; a frequency cap is a ``Cap``.
"""

from __future__ import annotations

import difflib
import os
import re
import types
import typing
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PlainValidator,
    PrivateAttr,
    StrictBool,
    StrictInt,
    StrictStr,
    Tag,
    ValidationError,
    ValidationInfo,
    model_validator,
)
from pydantic_core import PydanticCustomError

from izin import clock
from izin.campaigns.yaml_positions import MAX_BYTES, LoadedYaml, YamlLoadError, load_yaml
from izin.errors import InputError

__all__ = [
    "AfterEventTrigger",
    "AllCondition",
    "AnyCondition",
    "AttributeCondition",
    "BirthdayTrigger",
    "Campaign",
    "Cap",
    "Condition",
    "Content",
    "Coupon",
    "EmailContent",
    "EventCondition",
    "Limits",
    "NotCondition",
    "OnceTrigger",
    "Problem",
    "SENDING_CHANNELS",
    "SmsContent",
    "SpecError",
    "TagCondition",
    "Trigger",
    "load_campaign",
    "parse_campaign",
    "parse_cap",
    "parse_duration",
    "parse_send_time",
]

#: Channels a campaign can send on; ``call`` is a consent channel only.
SENDING_CHANNELS = ("email", "sms")
#: Operators of an attribute condition, in the order they are listed in messages.
ATTRIBUTE_OPERATORS = ("eq", "ne", "in", "not_in", "gt", "gte", "lt", "lte", "contains", "exists")
#: Keys that decide what kind of audience condition a mapping is.
CONDITION_KINDS = ("all", "any", "not", "attribute", "tag", "event")

_ERROR = "izin"  # type of every error whose message is already written for people

_DURATION_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_DURATION = re.compile(r"([0-9]+)([mhdw])")
# Spellings people reach for, mapped to the unit letter, so the error can show the right form.
_UNIT_WORDS = {
    "m": ("m", "min", "mins", "minute", "minutes", "dk", "dakika"),
    "h": ("h", "hr", "hrs", "hour", "hours", "sa", "saat"),
    "d": ("d", "day", "days", "g", "gun", "gün"),
    "w": ("w", "wk", "wks", "week", "weeks", "hafta"),
}
#: the longest duration accepted, in days (a century)
MAX_DURATION_DAYS = 36_600
_UNIT_DAYS = {"m": 1 / 1440, "h": 1 / 24, "d": 1, "w": 7}
_LOOSE_DURATION = re.compile(r"\s*([0-9]+)\s*([^\W\d_]+)\s*")
_SEND_TIME = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")
_NAME = re.compile(r"[a-z0-9-]{1,64}")
_PREFIX = re.compile(r"[A-Z0-9]{1,16}")
_EVENT_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_TURKISH_ASCII = str.maketrans("çğıİöşüÇĞÖŞÜ", "cgiIosuCGOSU")


def _fail(message: str) -> typing.NoReturn:
    raise PydanticCustomError(_ERROR, message)


def _describe(value: Any) -> str:
    """How a value reads in a message: ``text 'x'``, ``the number 3``, ``a list``..."""
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, str):
        return f"text '{value}'"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


# --- scalar parsers (public: the config and the CLI parse the same forms) ---------------------


def _duration_hint(text: str) -> str | None:
    """``3d`` for ``3 days``, ``3 gün`` or ``3D``; None when the text is no duration at all."""
    match = _LOOSE_DURATION.fullmatch(text)
    if not match:
        return None
    number, word = match.group(1), match.group(2).lower()
    for unit, words in _UNIT_WORDS.items():
        if word in words:
            return f"{int(number)}{unit}"
    return None


class DurationTooLong(ValueError):
    """A well-formed duration past MAX_DURATION_DAYS."""


def parse_duration(text: str) -> timedelta:
    """Parse ``<whole number><unit>`` (unit m, h, d or w), e.g. ``3d``; ValueError says the fix."""
    match = _DURATION.fullmatch(text)
    if match:
        number, unit = int(match.group(1)), match.group(2)
        # compared before building it: 9999999999d would overflow timedelta, and adding a century
        # to a date is already past anything a campaign means
        if number * _UNIT_DAYS[unit] > MAX_DURATION_DAYS:
            raise DurationTooLong(f"'{text}' is longer than {MAX_DURATION_DAYS // 366} years; "
                                  "write a shorter duration")
        return timedelta(**{_DURATION_UNITS[unit]: number})
    form = "a whole number followed by m, h, d or w"
    if text.strip().isdigit():
        raise ValueError(f"'{text}' has no unit; write e.g. {int(text)}d ({form})")
    hint = _duration_hint(text)
    if hint:
        raise ValueError(f"'{text}' is not a duration; write {hint} ({form})")
    raise ValueError(f"'{text}' is not a duration; write {form}, e.g. 3d")


@dataclass(frozen=True)
class Cap:
    """At most ``count`` commercial messages per contact in any ``period``."""

    count: int
    period: timedelta


def parse_cap(text: str) -> Cap:
    """Parse a frequency cap ``<count>/<duration>``, e.g. ``3/7d``; ValueError says the fix."""
    form = "<count>/<duration>, e.g. 3/7d"
    count_text, slash, period_text = text.partition("/")
    count_text, period_text = count_text.strip(), period_text.strip()
    if not slash or not count_text.isdigit():
        raise ValueError(f"'{text}' is not a frequency cap; write {form}")
    count = int(count_text)
    try:
        period = parse_duration(period_text)
    except DurationTooLong:
        raise ValueError(f"'{text}' has a period longer than {MAX_DURATION_DAYS // 366} years; "
                         "write a shorter one, e.g. 3/7d") from None
    except ValueError:
        hint = _duration_hint(period_text)
        if hint:
            raise ValueError(f"'{text}' is not a frequency cap; write {count}/{hint}") from None
        raise ValueError(f"'{text}' is not a frequency cap; write {form}") from None
    if count < 1:
        raise ValueError(f"'{text}' allows nothing; the count must be at least 1, e.g. 3/7d")
    if period <= timedelta(0):
        raise ValueError(f"'{text}' has an empty period; use a period longer than zero, e.g. 3/7d")
    return Cap(count=count, period=period)


def parse_send_time(text: str) -> time:
    """Parse ``HH:MM`` (00:00-23:59) into a ``time``; ValueError says the fix."""
    match = _SEND_TIME.fullmatch(text)
    if not match:
        raise ValueError(f"must be HH:MM (00:00-23:59), e.g. 10:00; got '{text}'")
    return time(int(match.group(1)), int(match.group(2)))


# --- field types ---------------------------------------------------------------------------------


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.translate(_TURKISH_ASCII).lower()).strip("-")[:64]


def _check_name(value: Any) -> str:
    if not isinstance(value, str):
        _fail(f"must be text like dogum-gunu, got {_describe(value)}")
    if _NAME.fullmatch(value):
        return value
    if not value:
        _fail("must not be empty; use lower-case letters, digits and -, e.g. dogum-gunu")
    if len(value) > 64:
        _fail(f"must be at most 64 characters, got {len(value)}")
    suggestion = _slug(value)
    fix = f"try '{suggestion}'" if suggestion else "e.g. dogum-gunu"
    _fail(f"must use only a-z, 0-9 and - (no spaces, capitals or Turkish letters); {fix}")


def _check_prefix(value: Any) -> str:
    if not isinstance(value, str):
        _fail(f"must be text like IYIKI, got {_describe(value)}")
    if _PREFIX.fullmatch(value):
        return value
    suggestion = re.sub(r"[^A-Z0-9]", "", value.translate(_TURKISH_ASCII).upper())[:16]
    fix = f"try '{suggestion}'" if suggestion else "e.g. IYIKI"
    _fail(f"must be 1-16 characters of A-Z and 0-9; {fix}")


def _check_event_name(value: Any) -> str:
    if isinstance(value, str) and _EVENT_NAME.fullmatch(value):
        return value
    _fail(
        "must be an event name of letters, digits, _, . or - (at most 64 characters), "
        f"e.g. purchase; got {_describe(value)}"
    )


def _check_send_time(value: Any) -> time:
    if isinstance(value, time):  # models built in code pass parsed values
        return value
    if not isinstance(value, str):
        _fail(f"must be HH:MM (00:00-23:59) in quotes, e.g. \"10:00\"; got {_describe(value)}")
    try:
        return parse_send_time(value)
    except ValueError as error:
        _fail(str(error))


def _duration_from(value: Any) -> timedelta:
    if isinstance(value, timedelta):  # models built in code pass parsed values
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # `delay: 3` gets the "has no unit" message, not a type complaint
    if not isinstance(value, str):
        _fail(f"must be a duration like 3d (m, h, d or w), got {_describe(value)}")
    try:
        return parse_duration(value)
    except ValueError as error:
        _fail(str(error))


def _check_positive_duration(value: Any) -> timedelta:
    duration = _duration_from(value)
    if duration <= timedelta(0):
        _fail(f"must be longer than zero, e.g. 30d; got '{value}'")
    return duration


def _check_cap(value: Any) -> Cap:
    if isinstance(value, Cap):  # models built in code pass parsed values
        return value
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        _fail(f"must be a frequency cap like \"3/7d\", got {_describe(value)}")
    try:
        return parse_cap(str(value))
    except ValueError as error:
        _fail(str(error))


def _check_at(value: Any) -> datetime:
    example = "2026-11-27T10:00:00+03:00"
    if isinstance(value, datetime):  # models built in code pass parsed values
        moment = value
    elif not isinstance(value, str):
        _fail(f"must be an ISO 8601 date and time with offset, e.g. \"{example}\"; "
              f"got {_describe(value)}")
    else:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            _fail(f"must be an ISO 8601 date and time with offset, e.g. \"{example}\"; "
                  f"got '{value}'")
    if moment.utcoffset() is None:
        # Without an offset the moment depends on the server's clock zone: refuse, show the fix.
        _fail(f"needs a UTC offset: write \"{moment.isoformat()}+03:00\" for Türkiye time")
    if clock.out_of_range(moment):
        _fail(f"'{value}' is out of range; {clock.RANGE_HINT}")
    return moment


def _check_channel(value: Any) -> str:
    if value in SENDING_CHANNELS:
        return value
    if value == "call":
        _fail("call is a consent channel (İYS ARAMA), not a sending channel; use email or sms")
    guess = _did_you_mean(value, SENDING_CHANNELS)
    _fail(f"must be email or sms{guess}; got {_describe(value)}")


def _check_scalar(value: Any) -> str | int | float | bool:
    if isinstance(value, (str, int, float)):  # bool is an int
        return value
    _fail(f"must be one value (text, a number or true/false), got {_describe(value)}")


def _check_comparable(value: Any) -> str | int | float:
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return value
    _fail(f"must be a number or text (e.g. a date \"2025-01-31\"), got {_describe(value)}")


def _template_path_checker(suffixes: tuple[str, ...]) -> PlainValidator:
    shown = " or ".join(suffixes)

    def check(value: Any) -> str:
        if not isinstance(value, str) or not value:
            _fail(f"must be a template path ending in {shown}, got {_describe(value)}")
        if "\\" in value or value.startswith("/") or ".." in value.split("/"):
            # Paths are joined to fixed template roots; an absolute path or .. would escape them.
            _fail(f"must be a relative path with / and without .., e.g. dogum-gunu/email{suffixes[0]}")
        if not value.endswith(suffixes):
            _fail(f"must end in {shown}; got '{value}'")
        return value

    return PlainValidator(check)


CampaignName = Annotated[str, PlainValidator(_check_name)]
CouponPrefix = Annotated[str, PlainValidator(_check_prefix)]
EventName = Annotated[str, PlainValidator(_check_event_name)]
SendTime = Annotated[time, PlainValidator(_check_send_time)]
Duration = Annotated[timedelta, PlainValidator(_duration_from)]
PositiveDuration = Annotated[timedelta, PlainValidator(_check_positive_duration)]
FrequencyCap = Annotated[Cap, PlainValidator(_check_cap)]
AwareDatetime = Annotated[datetime, PlainValidator(_check_at)]
Channel = Annotated[str, PlainValidator(_check_channel)]
Scalar = Annotated[Union[str, int, float, bool], PlainValidator(_check_scalar)]
Comparable = Annotated[Union[str, int, float], PlainValidator(_check_comparable)]
NonEmptyText = Annotated[StrictStr, Field(min_length=1)]


def _localized(value: Any) -> str | dict[str, str]:
    if isinstance(value, str):
        if not value:
            _fail("must not be empty")
        return value
    if isinstance(value, dict):
        if not value:
            _fail("give the text, or one text per locale, e.g. {tr: \"...\", en: \"...\"}")
        for locale, text in value.items():
            if locale not in ("tr", "en"):
                _fail(f"unknown locale {locale!r}; use tr or en")
            if not isinstance(text, str) or not text:
                _fail(f"{locale}: must be non-empty text; got {_describe(text)}")
        return dict(value)
    _fail(f"must be text, or one text per locale such as {{tr: \"...\", en: \"...\"}}; got {_describe(value)}")


#: inline template text, or one per locale: {tr: "...", en: "..."} (Turkish is the fallback)
Localized = Annotated[str | dict[str, str], PlainValidator(_localized)]
HtmlPath = Annotated[str, _template_path_checker((".j2", ".html"))]
TextPath = Annotated[str, _template_path_checker((".j2", ".txt"))]


class _Model(BaseModel):
    """Base of every spec model: unknown keys are errors, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: The tag that selects this model inside a discriminated union (None outside unions).
    union_tag: ClassVar[str | None] = None


# --- triggers ------------------------------------------------------------------------------------


class BirthdayTrigger(_Model):
    """On the contact's birthday (29 February falls on 28 February), at ``send_time`` local time."""

    union_tag: ClassVar[str | None] = "birthday"
    type: Literal["birthday"]
    send_time: SendTime = time(10, 0)


class OnceTrigger(_Model):
    """One blast at a fixed moment."""

    union_tag: ClassVar[str | None] = "once"
    type: Literal["once"]
    at: AwareDatetime


class AfterEventTrigger(_Model):
    """A follow-up ``delay`` after each ``event``, optionally moved to ``send_time`` local time."""

    union_tag: ClassVar[str | None] = "after_event"
    type: Literal["after_event"]
    event: EventName
    delay: Duration
    send_time: SendTime | None = None
    backfill: StrictBool = False


Trigger = Annotated[
    Union[BirthdayTrigger, OnceTrigger, AfterEventTrigger], Field(discriminator="type")
]
TRIGGER_TYPES = {"birthday": BirthdayTrigger, "once": OnceTrigger, "after_event": AfterEventTrigger}


# --- audience conditions -------------------------------------------------------------------------


def _condition_kind(value: Any) -> str | None:
    """The union tag of a condition mapping, or None (reported by ``_condition_problem``)."""
    if isinstance(value, BaseModel):
        return value.union_tag  # type: ignore[attr-defined]
    if not isinstance(value, dict):
        return None
    kinds = [kind for kind in CONDITION_KINDS if kind in value]
    return f"cond:{kinds[0]}" if len(kinds) == 1 else None


class AllCondition(_Model):
    """True when every nested condition is."""

    union_tag: ClassVar[str | None] = "cond:all"
    all: Annotated[list[Condition], Field(min_length=1)]


class AnyCondition(_Model):
    """True when at least one nested condition is."""

    union_tag: ClassVar[str | None] = "cond:any"
    any: Annotated[list[Condition], Field(min_length=1)]


class NotCondition(_Model):
    """True when the nested condition is not."""

    union_tag: ClassVar[str | None] = "cond:not"
    not_: Condition = Field(alias="not")


class AttributeCondition(_Model):
    """Compares a contact attribute with exactly one operator, e.g. ``{attribute: city, eq: Ankara}``."""

    union_tag: ClassVar[str | None] = "cond:attribute"
    attribute: NonEmptyText
    eq: Scalar | None = None
    ne: Scalar | None = None
    in_: Annotated[list[Scalar], Field(min_length=1)] | None = Field(None, alias="in")
    not_in: Annotated[list[Scalar], Field(min_length=1)] | None = None
    gt: Comparable | None = None
    gte: Comparable | None = None
    lt: Comparable | None = None
    lte: Comparable | None = None
    contains: Scalar | None = None
    exists: StrictBool | None = None

    @model_validator(mode="after")
    def _one_operator(self) -> AttributeCondition:
        given = self.operators_given()
        allowed = ", ".join(ATTRIBUTE_OPERATORS)
        if not given:
            _fail(f"condition on '{self.attribute}' needs one operator: {allowed}; "
                  f"e.g. {{attribute: {self.attribute}, eq: ...}}")
        if len(given) > 1:
            _fail(f"condition on '{self.attribute}' has {len(given)} operators "
                  f"({', '.join(given)}); use exactly one of {allowed}, and combine several "
                  "conditions under all: [...]")
        return self

    def operators_given(self) -> list[str]:
        """The operator keys present in the file, in ``ATTRIBUTE_OPERATORS`` order."""
        fields = type(self).model_fields
        present = {fields[name].alias or name for name in self.model_fields_set}
        return [op for op in ATTRIBUTE_OPERATORS if op in present]

    @property
    def op(self) -> str:
        """The one operator: ``eq``, ``in``, ``gte``, ..."""
        return self.operators_given()[0]

    @property
    def value(self) -> Any:
        """The operand of ``op`` (a list for ``in``/``not_in``, a bool for ``exists``)."""
        return getattr(self, "in_" if self.op == "in" else self.op)


class TagCondition(_Model):
    """True when the contact carries ``tag``."""

    union_tag: ClassVar[str | None] = "cond:tag"
    tag: NonEmptyText


class EventCondition(_Model):
    """True when the contact had ``event`` (within the last ``within``, when given)."""

    union_tag: ClassVar[str | None] = "cond:event"
    event: EventName
    within: PositiveDuration | None = None


Condition = Annotated[
    Union[
        Annotated[AllCondition, Tag("cond:all")],
        Annotated[AnyCondition, Tag("cond:any")],
        Annotated[NotCondition, Tag("cond:not")],
        Annotated[AttributeCondition, Tag("cond:attribute")],
        Annotated[TagCondition, Tag("cond:tag")],
        Annotated[EventCondition, Tag("cond:event")],
    ],
    Discriminator(_condition_kind, custom_error_type="condition_kind",
                  custom_error_message="not a condition"),
]
AllCondition.model_rebuild()
AnyCondition.model_rebuild()
NotCondition.model_rebuild()


# --- channels, content, coupon, limits -----------------------------------------------------------


class EmailContent(_Model):
    """Subject, an HTML body (template path or inline) and an optional plain-text body."""

    subject: Localized
    html: HtmlPath | None = None
    html_inline: Localized | None = None
    text: TextPath | None = None
    text_inline: Localized | None = None

    @model_validator(mode="after")
    def _one_body(self) -> EmailContent:
        if (self.html is None) == (self.html_inline is None):
            _fail("give exactly one of html (a template path) or html_inline (template text)")
        if self.text is not None and self.text_inline is not None:
            _fail("give at most one of text (a template path) or text_inline (template text)")
        return self


class SmsContent(_Model):
    """The SMS body as inline template text (the engine adds the opt-out footer)."""

    text: Localized


class Content(_Model):
    """One block per channel listed in ``channels``."""

    email: EmailContent | None = None
    sms: SmsContent | None = None


class Coupon(_Model):
    """A unique code per delivery: ``PREFIX-XXXXXXXX``, ``percent`` off, valid ``valid_days``."""

    prefix: CouponPrefix
    percent: Annotated[StrictInt, Field(ge=1, le=100)]
    valid_days: Annotated[StrictInt, Field(ge=1, le=365)]


class Limits(_Model):
    """Per-campaign limits, applied on top of the global policy."""

    frequency_cap: FrequencyCap | None = None


class Campaign(_Model):
    """A validated campaign file."""

    name: CampaignName
    description: StrictStr | None = None
    purpose: Literal["commercial", "transactional"] = "commercial"
    trigger: Trigger
    audience: Condition | None = None
    channels: Annotated[list[Channel], Field(min_length=1)]
    coupon: Coupon | None = None
    content: Content
    limits: Limits | None = None

    _source_path: Path | None = PrivateAttr(default=None)
    _source_text: str | None = PrivateAttr(default=None)

    @property
    def source_path(self) -> Path | None:
        """The file this campaign was loaded from (template paths may be relative to it)."""
        return self._source_path

    @property
    def source_text(self) -> str | None:
        """The YAML it was parsed from, stored with scheduled deliveries so workers render the same."""
        return self._source_text

    @model_validator(mode="after")
    def _rules(self, info: ValidationInfo) -> Campaign:
        # parse_campaign checks these rules on the raw data (with positions) before validating.
        if info.context and info.context.get("rules_checked"):
            return self
        problems = _rule_problems(self.model_dump(by_alias=True, exclude_none=True))
        if problems:
            _fail("; ".join(f"{'.'.join(map(str, path))}: {message}"
                            for path, _, message in problems))
        return self


# --- problems and their reporting ----------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong with a campaign file, with where it is and how to fix it."""

    file: str
    line: int
    column: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}"
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


class SpecError(InputError):
    """A campaign file is invalid; ``problems`` lists everything wrong with it, in file order."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        first = problems[0]
        super().__init__("\n".join(map(str, problems)), file=first.file, line=first.line,
                         field=first.field or None)

    def __str__(self) -> str:
        return "\n".join(map(str, self.problems))


def _did_you_mean(word: Any, choices: typing.Iterable[str]) -> str:
    if not isinstance(word, str):
        return ""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _rule_problems(data: Any) -> list[tuple[tuple[Any, ...], bool, str]]:
    """Cross-field rules as ``(path, at_key, message)``, checked on raw data so they always run."""
    if not isinstance(data, dict):
        return []
    problems: list[tuple[tuple[Any, ...], bool, str]] = []
    channels = data.get("channels")
    listed: list[str] = []
    if isinstance(channels, list):
        for index, channel in enumerate(channels):
            if not isinstance(channel, str):
                continue
            if channel in listed:
                problems.append((("channels", index), False,
                                 f"channel '{channel}' is listed twice; list each channel once"))
            else:
                listed.append(channel)
    content = data.get("content")
    if isinstance(content, dict) and isinstance(channels, list):
        needs = {"email": "subject and html", "sms": "text"}
        for channel in listed:
            if channel in SENDING_CHANNELS and channel not in content:
                problems.append((("content", channel), False,
                                 f"missing content for channel '{channel}'; add content.{channel} "
                                 f"with {needs[channel]}"))
        for channel in content:
            if channel in SENDING_CHANNELS and channel not in listed:
                problems.append((("content", channel), True,
                                 f"content for '{channel}' but {channel} is not in channels; "
                                 f"add it to channels or remove content.{channel}"))
    trigger = data.get("trigger")
    if data.get("purpose") == "transactional" and isinstance(trigger, dict) and trigger.get("type") in ("birthday", "once"):
        problems.append((("purpose",), False,
                         f"a {trigger['type']} campaign is a commercial message (law 6563 counts celebration "
                         "and blast messages as commercial), so it needs consent; set purpose: commercial"))
    if data.get("purpose") == "transactional" and data.get("coupon") is not None:
        problems.append((("coupon",), True,
                         "a transactional campaign may not carry promotions; remove coupon or set "
                         "purpose: commercial"))
    return problems


# Examples appended to "missing required key" messages, by key name.
_KEY_EXAMPLES = {
    "name": "name: dogum-gunu",
    "trigger": "trigger: {type: birthday}",
    "channels": "channels: [sms, email]",
    "content": "content: {sms: {text: ...}}",
    "subject": "subject: \"İyi ki doğdun!\"",
    "text": "text: \"...\"",
    "at": "at: \"2026-11-27T10:00:00+03:00\"",
    "event": "event: purchase",
    "delay": "delay: 3d",
    "prefix": "prefix: IYIKI",
    "percent": "percent: 20",
    "valid_days": "valid_days: 14",
    "attribute": "attribute: city",
    "tag": "tag: vip",
}

# Examples appended to "must be a mapping/list" messages, by key name.
_SHAPE_EXAMPLES = {
    "trigger": "{type: birthday, send_time: \"10:00\"}",
    "channels": "[sms, email]",
    "content": "{email: {subject: ..., html: ...}, sms: {text: ...}}",
    "email": "{subject: ..., html: campaign/email.html.j2}",
    "sms": "{text: ...}",
    "coupon": "{prefix: IYIKI, percent: 20, valid_days: 14}",
    "limits": "{frequency_cap: \"1/30d\"}",
    "in": "[İstanbul, Ankara]",
    "not_in": "[İstanbul, Ankara]",
    "all": "[{tag: vip}, {attribute: city, eq: Ankara}]",
    "any": "[{tag: vip}, {attribute: city, eq: Ankara}]",
}


def _unwrap(tp: Any) -> Any:
    """Strip ``Annotated`` and ``Optional`` until a model, a list or a real union is left."""
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            members = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(members) != 1:
                return tp
            tp = members[0]
        else:
            return tp


def _walk_loc(loc: tuple[Any, ...]) -> tuple[tuple[Any, ...], type[_Model] | None]:
    """Turn a pydantic ``loc`` into a data path (union tags dropped) and the model owning its end."""
    tp: Any = Campaign
    path: list[Any] = []
    owner: type[_Model] | None = None
    for element in loc:
        tp = _unwrap(tp)
        if typing.get_origin(tp) in (Union, types.UnionType):
            members = [_unwrap(a) for a in typing.get_args(tp)]
            chosen = [m for m in members if getattr(m, "union_tag", None) == element]
            if chosen:
                tp = chosen[0]
                continue
        path.append(element)
        if isinstance(tp, type) and issubclass(tp, _Model):
            owner = tp
            fields = {(f.alias or name): f for name, f in tp.model_fields.items()}
            tp = fields[element].annotation if element in fields else None
        elif typing.get_origin(tp) is list and isinstance(element, int):
            tp = typing.get_args(tp)[0]
        else:
            tp = None
    return tuple(path), owner


def _value_at(data: Any, path: tuple[Any, ...]) -> tuple[bool, Any]:
    for element in path:
        if isinstance(data, dict) and element in data:
            data = data[element]
        elif isinstance(data, list) and isinstance(element, int) and element < len(data):
            data = data[element]
        else:
            return False, None
    return True, data


def _allowed_keys(model: type[_Model]) -> list[str]:
    return sorted((f.alias or name) for name, f in model.model_fields.items())


def _unknown_key_message(key: Any, owner: type[_Model] | None) -> str:
    if owner is None:
        return f"unknown key '{key}'; remove it"
    allowed = _allowed_keys(owner)
    message = f"unknown key '{key}'{_did_you_mean(key, allowed)}"
    tag = owner.union_tag
    if tag in TRIGGER_TYPES:
        # A key of another trigger type usually means the wrong type was chosen.
        homes = [t for t, m in TRIGGER_TYPES.items() if t != tag and key in m.model_fields]
        if homes:
            message += f" for type {tag} ({key} belongs to type {' or '.join(homes)})"
    return f"{message}; allowed: {', '.join(allowed)}"


def _condition_problem(value: Any) -> str:
    kinds = ", ".join(CONDITION_KINDS)
    if not isinstance(value, dict):
        return (f"must be a condition mapping with one of {kinds}, e.g. {{tag: vip}}; "
                f"got {_describe(value)}")
    present = [kind for kind in CONDITION_KINDS if kind in value]
    if present:
        return (f"mixes {' and '.join(present)}; a condition has exactly one of {kinds} "
                "(put several conditions in a list under all or any)")
    # Operators and `within` are expected companions; only a misspelt kind deserves a guess.
    companions = ATTRIBUTE_OPERATORS + ("within",)
    guesses = "".join(_did_you_mean(key, CONDITION_KINDS)
                      for key in value if key not in companions)
    keys = ", ".join(f"'{key}'" for key in value) or "no keys"
    return f"needs one of {kinds}; found {keys}{guesses}"


def _message(error: Any, path: tuple[Any, ...], owner: type[_Model] | None,
             value: Any) -> str:
    """A plain message with the fix for one pydantic error."""
    kind = error["type"]
    ctx = error.get("ctx") or {}
    last = path[-1] if path else None
    shape = f", e.g. {_SHAPE_EXAMPLES[last]}" if last in _SHAPE_EXAMPLES else ""
    got = _describe(value)
    if kind == _ERROR:
        return error["msg"]
    if kind == "missing":
        example = f"; add e.g. {_KEY_EXAMPLES[last]}" if last in _KEY_EXAMPLES else ""
        return f"missing required key '{last}'{example}"
    if kind == "extra_forbidden":
        return _unknown_key_message(last, owner)
    if kind == "union_tag_invalid":
        allowed = ", ".join(sorted(TRIGGER_TYPES))
        if not isinstance(value, str):
            return f"must be one of {allowed}; got {got}"
        return f"unknown trigger type '{value}'{_did_you_mean(value, TRIGGER_TYPES)}; allowed: {allowed}"
    if kind == "union_tag_not_found":
        return f"missing required key 'type'; allowed types: {', '.join(sorted(TRIGGER_TYPES))}"
    if kind == "condition_kind":
        return _condition_problem(value)
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        if not path:
            if value is None:
                return "file is empty; a campaign needs at least name, trigger, channels and content"
            return (f"must be a mapping of campaign keys (name, trigger, channels, content, ...), "
                    f"got {got}")
        return f"must be a mapping{shape}; got {got}"
    if kind == "list_type":
        return f"must be a list{shape}; got {got}"
    if kind in ("string_type", "string_sub_type"):
        return f"must be text, got {got}"
    if kind in ("int_type", "int_from_float", "int_parsing"):
        return f"must be a whole number, got {got}"
    if kind in ("bool_type", "bool_parsing"):
        return f"must be true or false, got {got}"
    if kind == "literal_error":
        allowed = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        return f"must be one of {', '.join(allowed)}{_did_you_mean(value, allowed)}; got {got}"
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "string_too_long":
        return f"must be at most {ctx.get('max_length')} characters"
    if kind == "too_short":
        return f"must list at least {ctx.get('min_length', 1)} item{shape}"
    if kind == "greater_than_equal":
        return f"must be at least {ctx.get('ge')}, got {value}"
    if kind == "less_than_equal":
        return f"must be at most {ctx.get('le')}, got {value}"
    return error["msg"]  # not expected with these models; pydantic's text is better than nothing


def _locate(loaded: LoadedYaml, path: tuple[Any, ...], *, at_key: bool) -> tuple[int, int]:
    """Where to point for ``path``: its key when asked, its value when that is a scalar.

    A missing key, or a problem with a whole mapping or list, points at the key that opens the
    nearest existing block (``content:``), which is where a reader looks, rather than at the
    first line inside it.
    """
    probe = tuple(path)
    while probe and probe not in loaded.positions:
        probe = probe[:-1]
    if at_key and path in loaded.key_positions:
        return loaded.key_positions[path]
    _, value = _value_at(loaded.data, probe)
    if (probe != tuple(path) or isinstance(value, (dict, list))) and probe in loaded.key_positions:
        return loaded.key_positions[probe]
    return loaded.locate(probe)


def _pydantic_problems(file: str, loaded: LoadedYaml, error: ValidationError) -> list[Problem]:
    problems = []
    for item in error.errors(include_url=False):
        path, owner = _walk_loc(tuple(item["loc"]))
        field_path = path
        if item["type"] == "union_tag_not_found":
            field_path = path + ("type",)  # the key to add; the position stays on the trigger
        elif item["type"] == "union_tag_invalid":
            path = field_path = path + ("type",)
        _, value = _value_at(loaded.data, path)
        line, column = _locate(loaded, path, at_key=item["type"] == "extra_forbidden")
        message = _message(item, path, owner, value)
        problems.append(Problem(file, line, column, ".".join(map(str, field_path)), message))
    return problems


def parse_campaign(source: str | bytes, file: str = "<campaign>") -> Campaign:
    """Validate campaign YAML text; ``file`` names it in problems. Raises ``SpecError``."""
    try:
        loaded = load_yaml(source)
    except YamlLoadError as error:
        raise SpecError([
            Problem(file, issue.line, issue.column, ".".join(map(str, issue.path)), issue.message)
            for issue in error.issues
        ]) from None
    problems = []
    for path, at_key, message in _rule_problems(loaded.data):
        line, column = _locate(loaded, path, at_key=at_key)
        problems.append(Problem(file, line, column, ".".join(map(str, path)), message))
    campaign = None
    try:
        campaign = Campaign.model_validate(loaded.data, context={"rules_checked": True})
    except ValidationError as error:
        problems.extend(_pydantic_problems(file, loaded, error))
    if problems:
        raise SpecError(sorted(set(problems)))
    assert campaign is not None
    campaign._source_text = source.decode("utf-8") if isinstance(source, bytes) else source
    return campaign


def load_campaign(path: str | os.PathLike[str]) -> Campaign:
    """Load and validate one campaign file; raise ``SpecError`` listing every problem in it."""
    file = os.fspath(path)
    try:
        with open(file, "rb") as stream:
            # Read one byte past the cap so an oversized file is refused without reading it all.
            raw = stream.read(MAX_BYTES + 1)
    except OSError as error:
        raise SpecError([Problem(file, 1, 1, "", f"cannot read the file: {error.strerror}")]) from None
    campaign = parse_campaign(raw, file)
    campaign._source_path = Path(file)
    return campaign
