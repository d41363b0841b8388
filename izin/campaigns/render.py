"""Render campaign messages with the mandatory footer; check a campaign's templates before it runs.

Three jobs:

- ``build_context`` turns a contact, a coupon, an event and the configuration into the names a
  template may use (the contract's "Template context"): ``contact``, ``coupon``, ``event``,
  ``campaign``, ``sender`` and ``unsubscribe_url``. Values are data: they are never parsed as
  template code, so a first name of ``{{ 7*7 }}`` prints as written (and, in HTML, escaped).
- ``render`` produces one message: for email the subject, the HTML body with the footer, the
  plain-text alternative with the footer, and the RFC 8058 ``List-Unsubscribe`` header values;
  for SMS the text with the footer, its encoding and its part count. Every failure is a
  ``RenderError`` naming the campaign field and the template line.
- ``validate_templates`` renders every channel in every locale against a sample contact and
  returns positioned ``Problem``s for everything that would stop or spoil a send (the list is in
  its docstring).

Templates run in Jinja2's ``ImmutableSandboxedEnvironment`` with a strict undefined: an unknown
name is an error, never an empty string, and ``_``-names (the way to Python internals) are closed.
Template files are looked up next to the campaign file first, then in ``izin/templates/`` inside
the installed package; ``footers/`` there holds the footers, which a campaign folder may override
(the footer checks of ``validate_templates`` then make sure the override still carries identity and
opt-out). A file template ``x/email.html.j2`` has per-locale variants ``x/email.en.html.j2``;
the contact's locale picks the variant and the plain name is the fallback (Turkish, the default).
Inline texts (subject, SMS text) have no variants yet.

Choices made where the contract leaves room:

- HTML bodies and the HTML footer are autoescaped, whatever their file name (the spec accepts
  ``html: x/body.j2``, which a name-based rule would leave unescaped); subjects, plain texts and
  SMS are not. ``None`` prints as nothing, so a contact without a first name gets no "None".
- ``contact`` also offers ``birthday`` (a date). Standard fields win over an attribute of the same
  name. ``coupon.expires_on`` is a date; the ``date`` filter writes it as ``27.11.2026``.
- The SMS footer is joined with a newline; it is the sender's name and MERSİS number and, for a
  commercial campaign, the configured ``sms_optout`` text, passed through the ``gsm`` filter so
  the footer alone can never force UCS-2. The message text itself is never transliterated.
- A transactional campaign gets the identity footer but no opt-out and no List-Unsubscribe.
- Promotion markers (checked only for transactional campaigns): a template that refers to
  ``coupon``, a percent figure (``%20``, ``20 %``) or a word starting with one of
  ``PROMOTION_WORDS`` in the rendered text.
"""

from __future__ import annotations

import difflib
import functools
import html as html_lib
import os
import re
import threading
import time
import traceback
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from jinja2 import (FileSystemLoader, StrictUndefined, Template, TemplateError, TemplateNotFound,
                    TemplateSyntaxError, UndefinedError, meta, nodes)
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import missing, object_type_repr

from izin import clock
from izin.campaigns.spec import (AllCondition, AnyCondition, AttributeCondition, Campaign,
                                 NotCondition, Problem)
from izin.campaigns.yaml_positions import LoadedYaml, YamlLoadError, load_yaml
from izin.channels.sms_encoding import (GSM7_DEFAULT, GSM7_EXTENSION, LOCKING_SHIFT_DROPPED,
                                        TURKISH_SHIFT, encode_info)
from izin.config import Settings
from izin.consent import tokens
from izin.errors import InputError

__all__ = [
    "CONTACT_FIELDS",
    "LIST_UNSUBSCRIBE_POST",
    "LOCALES",
    "Namespace",
    "PROMOTION_WORDS",
    "RenderError",
    "Rendered",
    "TEMPLATES_DIR",
    "build_context",
    "gsm",
    "html_to_text",
    "render",
    "validate_templates",
]

#: The templates shipped inside the package (footers and the examples' bodies).
TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"
#: Locales templates may have variants for; the first is the default and the fallback.
LOCALES = ("tr", "en")
#: What ``contact`` offers besides its attributes.
CONTACT_FIELDS = ("first_name", "last_name", "external_id", "email", "phone", "locale", "birthday")
SENDER_FIELDS = ("name", "mersis", "phone", "email", "sms_header", "sms_optout")
#: The one value RFC 8058 allows for the List-Unsubscribe-Post header.
LIST_UNSUBSCRIBE_POST = "List-Unsubscribe=One-Click"
#: Word starts that mark promotional content (Turkish and English); a transactional message must
#: not contain them. Kept short on purpose: each entry has to be unmistakably promotional.
PROMOTION_WORDS = ("indirim", "kupon", "kampanya", "discount", "coupon", "promo")

#: Sample values ``validate_templates`` renders with; the names carry Turkish letters on purpose,
#: so SMS sizes are checked in the Turkish encoding.
SAMPLE_CONTACT: dict[str, Any] = {
    "first_name": "Ayşe",
    "last_name": "Yılmaz",
    "external_id": "ornek-1",
    "email": "ayse.yilmaz@example.com",
    "phone": "+905321234567",
    "birthday": date(1990, 5, 17),
}
SAMPLE_CODE = "ABCD2345"  # 8 symbols of the coupon alphabet, as long as every real code

_PROMOTION = re.compile(
    r"(?<!\w)(?:" + "|".join(PROMOTION_WORDS) + r")\w*|%\s*\d+|\d+\s*%", re.IGNORECASE
)
_FOOTERS = {
    ("email", "html"): "footers/email.html.j2",
    ("email", "text"): "footers/email.txt.j2",
    ("sms", "text"): "footers/sms.txt.j2",
}
_TOP_LEVEL = ("contact", "coupon", "event", "campaign", "sender", "unsubscribe_url")
# Why a top-level name can be missing, for the error message.
_ABSENT_HINTS = {
    "coupon": ("the campaign has no coupon; "
               "add coupon: {prefix: ..., percent: ..., valid_days: ...}"),
    "event": "only after_event campaigns have an event",
}
# Refused before they are computed: a template must not be able to exhaust memory or CPU.
_MAX_REPEAT = 100_000
_MAX_EXPONENT = 1_000
#: loop rounds plus calls (functions, filters' callables, macros) one template run may take: nested
#: loops and self-calling macros would otherwise hang validation and every worker that renders
_MAX_STEPS = 200_000
#: the global that every {% for %} iterates through, so its rounds are counted
_LOOP = "_izin_counted"
_MAX_INLINE_CACHE = 1_024
#: how long a template file found is used before the files are looked at again: an edit while a
#: worker runs is used within that; looking at them for every message (a stat per file and per
#: locale variant that does not exist) was a fifth of rendering
_RECHECK_FILES_S = 1.0
#: what a shipped footer may depend on for its text to be kept: the same for every message of a
#: sender and campaign but for the link, it is rendered once with a stand-in link (twice, to prove
#: the link is only copied) and each message gets its own link in its place. A footer a shop
#: writes itself is rendered for each message: no test of two stand-ins can prove what it does
#: with the link (a condition on its length or its text)
_FOOTER_NAMES = frozenset({"sender", "campaign", "unsubscribe_url"})
_STAND_INS = ("izin-footer-link-7q2xk9", "IZIN_FOOTER_LINK_VB4MR8ZTW")
_MAX_FOOTER_CACHE = 256
# Characters an SMS footer may carry so that it never changes the body's encoding: GSM-7, the
# Turkish letters, and the default letters the Turkish locking table keeps.
_GSM_FOOTER = (GSM7_DEFAULT - LOCKING_SHIFT_DROPPED) | GSM7_EXTENSION | TURKISH_SHIFT
_GSM_PUNCTUATION = str.maketrans({
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u2032": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u2033": '"',
    "\u2010": "-", "\u2011": "-", "\u2013": "-", "\u2014": "-", "\u2022": "-", "\u00b7": "-",
    "\u00a0": " ", "\u2026": "...",
})


# --- errors and results ------------------------------------------------------------------------


class RenderError(InputError):
    """A message could not be rendered; ``field`` is the campaign field, ``message`` says why."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message, field=field)


@dataclass(frozen=True)
class Rendered:
    """One rendered message. Email fills subject/html/text and the List-Unsubscribe values;
    SMS fills text/encoding/units/segments."""

    channel: str
    locale: str
    text: str
    subject: str | None = None
    html: str | None = None
    #: ``<https://.../u/TOKEN>`` for the List-Unsubscribe header (commercial email only)
    list_unsubscribe: str | None = None
    #: ``List-Unsubscribe=One-Click`` for the List-Unsubscribe-Post header (RFC 8058)
    list_unsubscribe_post: str | None = None
    encoding: str | None = None
    units: int | None = None
    segments: int | None = None

    @property
    def headers(self) -> dict[str, str]:
        """Extra email headers the sender must add (and DKIM-sign)."""
        if self.list_unsubscribe is None:
            return {}
        return {"List-Unsubscribe": self.list_unsubscribe,
                "List-Unsubscribe-Post": self.list_unsubscribe_post or LIST_UNSUBSCRIBE_POST}


# --- the template context ----------------------------------------------------------------------


class Namespace:
    """A read-only bag of values under one name; asking for a missing one is an error naming it.

    Attribute and item access both work (``contact.city``, ``contact['city']``). It has no public
    methods, so no attribute can be shadowed by one (a dict's ``items`` would be).
    """

    __slots__ = ("_label", "_values")

    def __init__(self, label: str, values: Mapping[str, Any]) -> None:
        self._label = label
        self._values = dict(values)

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __contains__(self, key: object) -> bool:
        return key in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"<{self._label}>"

    def _missing_message(self, name: str) -> str:
        message = f"'{self._label}' has no attribute '{name}'"
        close = difflib.get_close_matches(name, list(self._values), n=1, cutoff=0.6)
        if close:
            return f"{message}; did you mean {close[0]}?"
        known = ", ".join(self._values)
        message = f"{message}; it has {known}" if known else message
        if self._label == "contact":
            # Attributes come from the contacts CSV, so some contacts may lack one.
            message += (f"; for an attribute only some contacts have, write "
                        f"{{{{ contact.{name} | default('') }}}}")
        return message


class SampleEvent(Namespace):
    """The sample's event: any attribute name renders a visible placeholder."""

    __slots__ = ()

    def __getitem__(self, key: str) -> Any:
        if isinstance(key, str) and not key.startswith("_"):
            return f"[event.{key}]"
        raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and not key.startswith("_")


def build_context(contact_fields: Mapping[str, Any], attributes: Mapping[str, Any] | None,
                  coupon: Mapping[str, Any] | None, event: Mapping[str, Any] | None,
                  campaign: Campaign, settings: Settings,
                  unsubscribe_url: str | None) -> dict[str, Any]:
    """The names a template sees.

    ``contact_fields`` holds the keys of ``CONTACT_FIELDS`` (absent ones are None);
    ``attributes`` the contact's other columns; ``coupon`` ``code``, ``percent`` and
    ``expires_on`` (a date); ``event`` the triggering event's attributes (after_event only).
    A None coupon or event leaves the name undefined, so a template using it fails.
    """
    values = {str(k): v for k, v in (attributes or {}).items()}
    values.update({name: contact_fields.get(name) for name in CONTACT_FIELDS})
    context: dict[str, Any] = {
        "contact": Namespace("contact", values),
        "campaign": Namespace("campaign", {"name": campaign.name,
                                           "description": campaign.description,
                                           "purpose": campaign.purpose}),
        "sender": _sender(settings),
        "unsubscribe_url": unsubscribe_url,
    }
    if coupon is not None:
        context["coupon"] = Namespace("coupon", {k: coupon.get(k)
                                                 for k in ("code", "percent", "expires_on")})
    if event is not None:
        context["event"] = event if isinstance(event, Namespace) else Namespace("event", event)
    return context


def _sender(settings: Settings) -> Namespace:
    return Namespace("sender", {name: getattr(settings.sender, name) for name in SENDER_FIELDS})


# --- the sandbox -------------------------------------------------------------------------------


class _Undefined(StrictUndefined):
    """StrictUndefined whose messages name the template variable and suggest the fix."""

    __slots__ = ()

    @property
    def _undefined_message(self) -> str:
        if self._undefined_hint:
            return self._undefined_hint
        name, owner = self._undefined_name, self._undefined_obj
        if owner is missing:
            if name in _ABSENT_HINTS:
                return f"'{name}' is undefined: {_ABSENT_HINTS[name]}"
            close = difflib.get_close_matches(str(name), _TOP_LEVEL, n=1, cutoff=0.6)
            if close:
                return f"'{name}' is undefined; did you mean {close[0]}?"
            return f"'{name}' is undefined; templates can use {', '.join(_TOP_LEVEL)}"
        if isinstance(owner, Namespace):
            return owner._missing_message(str(name))
        return f"{object_type_repr(owner)} has no attribute '{name}'"


class _TooLarge(SecurityError):
    """A template asked for a value too large to compute."""


class _Sandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, plus caps on ``*`` and ``**`` (``'a' * 10**9`` is a 1 GB string)."""

    intercepted_binops = frozenset({"*", "**"})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        #: compiled inline texts by (field, text); cleared when it grows past _MAX_INLINE_CACHE
        self.inline_cache: dict[tuple[str, str | None], Template] = {}
        #: template files by (path, locale): the one found, and when it was looked for
        self.file_cache: dict[tuple[str, str], tuple[Template, float]] = {}

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        for loop in tree.find_all(nodes.For):
            loop.iter = nodes.Call(nodes.Name(_LOOP, "load", lineno=loop.lineno), [loop.iter], [], None, None,
                                   lineno=loop.lineno)
        tree.set_environment(self)
        return tree

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 (Jinja's names)
        _spend()
        return super().call(__context, __obj, *args, **kwargs)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, (int, float)) and abs(right) > _MAX_EXPONENT:
            raise _TooLarge(f"an exponent above {_MAX_EXPONENT} is not allowed in templates")
        if operator == "*":
            for seq, count in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(count, int) \
                        and len(seq) * count > _MAX_REPEAT:
                    raise _TooLarge(f"repeating to more than {_MAX_REPEAT} items is not allowed "
                                    "in templates")
        return super().call_binop(context, operator, left, right)


_steps = threading.local()  # steps left in the template run on this thread (workers render in threads)


def _spend() -> None:
    left = getattr(_steps, "left", None)
    if left is None:
        return  # outside a template run (compiling, a test calling a filter)
    if left <= 0:
        raise _TooLarge(f"the template takes more than {_MAX_STEPS} steps (loop rounds and calls); "
                        "a message needs far fewer, simplify its loops and macros")
    _steps.left = left - 1


def _counted(iterable: Any) -> Iterator[Any]:
    """What a template's {% for %} iterates: the same items, each one a step."""
    for item in iterable:
        _spend()
        yield item


def _finalize(value: Any) -> Any:
    return "" if value is None else value


def date_filter(value: Any, format: str = "%d.%m.%Y") -> str:
    """``{{ coupon.expires_on | date }}`` -> ``27.11.2026``; takes a date or ISO 8601 text."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value) if "T" in value else date.fromisoformat(value)
    if not isinstance(value, date):
        raise TypeError(f"date filter needs a date, got {type(value).__name__}")
    return value.strftime(format)


def gsm(value: Any) -> str:
    """``value`` with what GSM-7 lacks replaced: curly quotes and dashes by plain ones, accented
    letters by their base letter, anything else by ``?``. For footers; never for message text."""
    text = unicodedata.normalize("NFC", "" if value is None else str(value))
    out = []
    for char in text.translate(_GSM_PUNCTUATION):
        if char in _GSM_FOOTER:
            out.append(char)
            continue
        decomposed = unicodedata.normalize("NFKD", char)
        base = "".join(c for c in decomposed if not unicodedata.combining(c))
        out.append(base if base and all(c in _GSM_FOOTER for c in base) else "?")
    return "".join(out)


def _gsm_unmappable(value: str) -> list[str]:
    """Characters of ``value`` that ``gsm`` can only turn into ``?``."""
    return [char for char in dict.fromkeys(value) if char != "?" and gsm(char) == "?"]


@functools.lru_cache(maxsize=64)
def _environment(search_dirs: tuple[str, ...], html: bool) -> _Sandbox:
    env = _Sandbox(
        loader=FileSystemLoader(list(search_dirs)),
        undefined=_Undefined,
        autoescape=html,
        finalize=_finalize,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=True,
    )
    env.globals.pop("lipsum", None)  # lipsum(100000) would be a cheap way to burn CPU
    env.globals[_LOOP] = _counted
    env.filters["date"] = date_filter
    env.filters["gsm"] = gsm
    return env


def _search_dirs(campaign: Campaign, base_dir: str | os.PathLike[str] | None) -> tuple[str, ...]:
    if base_dir is None and campaign.source_path is not None:
        base_dir = campaign.source_path.parent
    # resolving walks the path with a system call per part: once per folder (and working directory)
    return _resolved_dirs(None if base_dir is None else str(base_dir), os.getcwd())


@functools.lru_cache(maxsize=256)
def _resolved_dirs(base_dir: str | None, cwd: str) -> tuple[str, ...]:
    dirs = [str(Path(cwd, base_dir).resolve())] if base_dir is not None else []
    return tuple(dict.fromkeys(dirs + [str(TEMPLATES_DIR)]))


def _normal_locale(locale: str | None) -> str:
    short = (locale or "").strip().lower().replace("_", "-").split("-")[0]
    return short if short in LOCALES else LOCALES[0]


def _variants(path: str, locale: str) -> list[str]:
    """``x/email.html.j2`` for ``en`` -> ``[x/email.en.html.j2, x/email.html.j2]``."""
    folder, slash, filename = path.rpartition("/")
    stem, dot, suffixes = filename.partition(".")
    variant = f"{stem}.{locale}.{suffixes}" if dot else f"{filename}.{locale}"
    return [f"{folder}{slash}{variant}", path]


# --- sources and error reporting ---------------------------------------------------------------


@dataclass(frozen=True)
class _Source:
    """One template of a message: where it is configured, and whether it is a file or inline."""

    field: tuple[str, ...]
    path: str | None = None
    text: str | None = None
    html: bool = False

    @property
    def label(self) -> str:
        return ".".join(self.field)


def _inline(field: tuple[str, ...], value: str | dict[str, str], locale: str, html: bool = False) -> _Source:
    """An inline text, or its variant for the locale (Turkish, then the first given, as fallback)."""
    if isinstance(value, str):
        return _Source(field, text=value, html=html)
    chosen = locale if locale in value else "tr" if "tr" in value else next(iter(value))
    return _Source(field + (chosen,), text=value[chosen], html=html)


def _sources(campaign: Campaign, channel: str, locale: str = "tr") -> dict[str, _Source]:
    content = campaign.content
    if channel == "email":
        email = content.email
        if email is None:
            raise RenderError("content.email", "the campaign has no email content")
        base = ("content", "email")
        sources = {"subject": _inline(base + ("subject",), email.subject, locale)}
        if email.html is not None:
            sources["html"] = _Source(base + ("html",), path=email.html, html=True)
        else:
            assert email.html_inline is not None
            sources["html"] = _inline(base + ("html_inline",), email.html_inline, locale, html=True)
        if email.text is not None:
            sources["text"] = _Source(base + ("text",), path=email.text)
        elif email.text_inline is not None:
            sources["text"] = _inline(base + ("text_inline",), email.text_inline, locale)
        return sources
    if channel == "sms":
        if content.sms is None:
            raise RenderError("content.sms", "the campaign has no sms content")
        return {"text": _inline(("content", "sms", "text"), content.sms.text, locale)}
    raise RenderError("channels", f"unknown channel '{channel}'; expected email or sms")


def _footer(channel: str, kind: str) -> _Source:
    return _Source(("content", channel), path=_FOOTERS[(channel, kind)], html=kind == "html")


def _template_name(filename: str | None, dirs: tuple[str, ...]) -> str | None:
    """The loader name of a template file (``dogum-gunu/email.html.j2``); None when inline."""
    if not filename or filename.startswith("<"):
        return None
    for folder in dirs:
        try:
            relative = Path(filename).resolve().relative_to(folder)
        except ValueError:
            continue
        return relative.as_posix()
    return Path(filename).name


def _is_template_file(filename: str, dirs: tuple[str, ...]) -> bool:
    if filename.startswith("<content."):
        return True
    return any(filename.startswith(folder + os.sep) for folder in dirs)


def _where(source: _Source, dirs: tuple[str, ...], filename: str | None, line: int | None) -> str:
    """``dogum-gunu/email.html.j2 line 3: `` or, inline, ``line 2: `` (multi-line text only)."""
    name = _template_name(filename, dirs)
    if name is not None:
        return f"{name} line {line}: " if line else f"{name}: "
    if line and source.text is not None and "\n" in source.text.strip("\n"):
        return f"line {line}: "
    return ""


def _describe(error: BaseException) -> str:
    if isinstance(error, _TooLarge):
        return str(error)
    if isinstance(error, SecurityError):
        detail = str(error).rstrip(".")
        return f"templates may not reach Python internals ({detail})"
    if isinstance(error, TemplateNotFound):
        return f"template '{error.name}' not found next to the campaign or among izin's templates"
    if isinstance(error, (TemplateSyntaxError, UndefinedError)):
        return str(error.message)
    if isinstance(error, TemplateError):
        return str(error.message or error)
    return f"{type(error).__name__}: {error}"


def _error(source: _Source, dirs: tuple[str, ...], error: BaseException) -> RenderError:
    if isinstance(error, TemplateSyntaxError):
        filename, line = error.filename or error.name, error.lineno
    else:
        # Jinja rewrites tracebacks so that template frames carry the template's own file and
        # line; the innermost one is where the error is (an included template, perhaps).
        filename, line = None, None
        for frame in traceback.extract_tb(error.__traceback__):
            if _is_template_file(frame.filename, dirs):
                filename, line = frame.filename, frame.lineno
    return RenderError(source.label, _where(source, dirs, filename, line) + _describe(error))


def _compile(source: _Source, dirs: tuple[str, ...], locale: str) -> Template:
    """The compiled template of ``source`` (the locale's variant if there is one)."""
    env = _environment(dirs, source.html)
    if source.path is None:
        cache = env.inline_cache
        key = (source.label, source.text)
        if key not in cache:
            try:
                code = env.compile(source.text or "", filename=f"<{source.label}>")
            except TemplateSyntaxError as error:
                raise _error(source, dirs, error) from None
            if len(cache) >= _MAX_INLINE_CACHE:
                cache.clear()
            cache[key] = env.template_class.from_code(env, code, env.make_globals(None), None)
        return cache[key]
    found = env.file_cache.get((source.path, locale))
    if found is not None and time.monotonic() - found[1] < _RECHECK_FILES_S:
        return found[0]
    for name in _variants(source.path, locale):
        try:
            template = env.get_template(name)
        except TemplateNotFound:
            continue
        except TemplateSyntaxError as error:
            raise _error(source, dirs, error) from None
        env.file_cache[(source.path, locale)] = (template, time.monotonic())
        return template
    where = f"next to the campaign ({dirs[0]}) or " if len(dirs) > 1 else ""
    raise RenderError(source.label, f"template '{source.path}' not found {where}among izin's "
                                    f"templates ({dirs[-1]}); check the path")


def _render_source(source: _Source, dirs: tuple[str, ...], locale: str,
                   context: Mapping[str, Any]) -> str:
    return _run(_compile(source, dirs, locale), source, dirs, context)


def _run(template: Template, source: _Source, dirs: tuple[str, ...], context: Mapping[str, Any]) -> str:
    """One run of ``source``'s compiled template, its steps counted and its errors made ours."""
    _steps.left = _MAX_STEPS
    try:
        return template.render(context)
    except Exception as error:  # anything a template run raises is that template's fault
        raise _error(source, dirs, error) from None
    finally:
        _steps.left = None


def _render_footer(source: _Source, dirs: tuple[str, ...], locale: str, context: Mapping[str, Any]) -> str:
    """The footer for ``context``: its kept text with this message's link, when it can be kept."""
    template = _compile(source, dirs, locale)
    url, sender, campaign = (context.get(name) for name in ("unsubscribe_url", "sender", "campaign"))
    # in HTML the link is escaped where it is copied: kept only where escaping leaves it as it is
    if not (isinstance(url, str) and isinstance(sender, Namespace) and isinstance(campaign, Namespace)) \
            or (source.html and html_lib.escape(url) != url):
        return _run(template, source, dirs, context)
    key = (template, _values(sender), _values(campaign))
    kept = _kept_footers.get(key, False)
    if kept is False:
        kept = _keep_footer(source, dirs, template, context)
        if len(_kept_footers) >= _MAX_FOOTER_CACHE:
            _kept_footers.clear()
        _kept_footers[key] = kept
    if kept is None:
        return _run(template, source, dirs, context)
    return kept.replace(_STAND_INS[0], url)


_kept_footers: dict[tuple[Any, ...], str | None] = {}


def _values(namespace: Any) -> tuple[tuple[str, Any], ...]:
    return tuple((name, namespace[name]) for name in namespace)


def _keep_footer(source: _Source, dirs: tuple[str, ...], template: Template, context: Mapping[str, Any]) -> str | None:
    """The shipped footer rendered with the first stand-in link, or None when it is not shipped or
    its text may depend on more than the sender, the campaign and the link copied as it is."""
    env = template.environment
    if template.filename is None or not Path(template.filename).is_relative_to(TEMPLATES_DIR):
        return None
    try:
        text, _, _ = env.loader.get_source(env, template.name)  # type: ignore[union-attr]
        if not meta.find_undeclared_variables(env.parse(text)) <= _FOOTER_NAMES:
            return None
        first, second = (_run(template, source, dirs, {**context, "unsubscribe_url": stand_in})
                         for stand_in in _STAND_INS)
    except (TemplateError, RenderError, OSError, TypeError):
        return None  # rendered per message, which reports its own error if it has one
    return first if first.replace(*_STAND_INS) == second else None


# --- rendering ---------------------------------------------------------------------------------


class _TextExtractor(HTMLParser):
    """HTML to readable plain text: blocks become lines, links show their address."""

    _BLOCKS = {"p", "div", "br", "tr", "table", "ul", "ol", "li", "hr", "blockquote", "pre",
               "section", "article", "header", "footer", "h1", "h2", "h3", "h4", "h5", "h6"}
    _SKIP = {"head", "script", "style", "title"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0
        self._links: list[tuple[str | None, int]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self._skip += 1
        elif tag in self._BLOCKS:
            self.parts.append("\n- " if tag == "li" else "\n")
        elif tag == "a":
            self._links.append((dict(attrs).get("href"), len(self.parts)))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            self._skip = max(0, self._skip - 1)
        elif tag in self._BLOCKS:
            self.parts.append("\n")
        elif tag == "a" and self._links:
            href, start = self._links.pop()
            shown = " ".join("".join(self.parts[start:]).split())
            target = href[len("mailto:"):] if href and href.startswith("mailto:") else href
            if target and target != shown:
                self.parts.append(f" ({target})")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(re.sub(r"\s+", " ", data))


def promotion_in(text: str) -> str | None:
    """The first promotional phrase in a text (a discount word or a percentage), or None."""
    found = _PROMOTION.search(text.replace("İ", "i"))
    return found.group(0) if found else None


def html_to_text(markup: str) -> str:
    """A plain-text version of an HTML body, for the text/plain alternative."""
    parser = _TextExtractor()
    parser.feed(markup)
    parser.close()
    lines = [" ".join(line.split()) for line in "".join(parser.parts).split("\n")]
    text = "\n".join(lines).strip("\n")
    return re.sub(r"\n{3,}", "\n\n", text)


_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)


def _attach_footer(body: str, footer: str) -> str:
    """The footer inside ``<body>`` when the template is a whole document, else after it."""
    footer = footer.strip("\n")
    # search the text itself: lower() changes lengths ("İ" becomes two characters), so an index
    # found in a lowered copy would cut the markup in the wrong place
    closings = list(_BODY_END.finditer(body))
    at = closings[-1].start() if closings else -1
    if at == -1:
        return f"{body.rstrip()}\n{footer}\n"
    return f"{body[:at].rstrip()}\n{footer}\n{body[at:]}"


def render(campaign: Campaign, channel: str, context: Mapping[str, Any], settings: Settings,
           locale: str | None, *, sms_reserve: int = 5, max_segments: int = 7,
           base_dir: str | os.PathLike[str] | None = None) -> Rendered:
    """Render ``campaign``'s message on ``channel`` for ``context`` (see ``build_context``).

    The footer's identity always comes from ``settings``. ``sms_reserve`` units per part are kept
    for the operator code; an SMS over ``max_segments`` parts is a ``RenderError``, as is any
    template failure and a commercial email without an ``unsubscribe_url``.
    """
    dirs = _search_dirs(campaign, base_dir)
    locale = _normal_locale(locale)
    sources = _sources(campaign, channel, locale)
    context = {**context, "sender": _sender(settings)}
    commercial = campaign.purpose == "commercial"
    if channel == "email":
        url = context.get("unsubscribe_url")
        if commercial and not url:
            raise RenderError("content.email", "a commercial email needs an unsubscribe_url")
        subject = " ".join(_render_source(sources["subject"], dirs, locale, context).split())
        body_html = _render_source(sources["html"], dirs, locale, context)
        if "text" in sources:
            body_text = _render_source(sources["text"], dirs, locale, context)
        else:
            body_text = html_to_text(body_html)
        footer_html = _render_footer(_footer("email", "html"), dirs, locale, context)
        footer_text = _render_footer(_footer("email", "text"), dirs, locale, context)
        return Rendered(
            channel="email",
            locale=locale,
            subject=subject,
            html=_attach_footer(body_html, footer_html),
            text=f"{body_text.strip()}\n\n{footer_text.strip()}\n",
            list_unsubscribe=f"<{url}>" if commercial else None,
            list_unsubscribe_post=LIST_UNSUBSCRIBE_POST if commercial else None,
        )
    body = _render_source(sources["text"], dirs, locale, context).strip()
    footer = _render_footer(_footer("sms", "text"), dirs, locale, context).strip()
    # NFC is not transliteration: it only composes "s" + cedilla into the one letter "ş", which
    # the encoder would otherwise count as UCS-2.
    text = unicodedata.normalize("NFC", f"{body}\n{footer}" if footer else body)
    info = encode_info(text, reserve=sms_reserve)
    if info.segments > max_segments:
        raise RenderError("content.sms.text",
                          f"the message is {info.segments} SMS parts ({info.encoding}, "
                          f"{info.units} characters with the footer); at most {max_segments} "
                          "parts can be sent, shorten the text")
    return Rendered(channel="sms", locale=locale, text=text, encoding=info.encoding,
                    units=info.units, segments=info.segments)


# --- validation --------------------------------------------------------------------------------


def _sample_attributes(campaign: Campaign, known: Iterable[str]) -> dict[str, Any]:
    """A value for every attribute the audience names (the condition's own operand, so that a
    template comparing it meets the right type) and a placeholder for every other known one."""
    values: dict[str, Any] = {}

    def walk(condition: Any) -> None:
        if isinstance(condition, AllCondition):
            for item in condition.all:
                walk(item)
        elif isinstance(condition, AnyCondition):
            for item in condition.any:
                walk(item)
        elif isinstance(condition, NotCondition):
            walk(condition.not_)
        elif isinstance(condition, AttributeCondition):
            value = condition.value
            if condition.op == "in":
                value = value[0]
            elif condition.op in ("ne", "not_in", "exists"):
                value = f"[{condition.attribute}]"
            values.setdefault(condition.attribute, value)

    walk(campaign.audience)
    for name in known:
        values.setdefault(name, f"[{name}]")
    return values


def _sample_context(campaign: Campaign, settings: Settings, channel: str, locale: str,
                    attributes: Mapping[str, Any]) -> dict[str, Any]:
    coupon = None
    if campaign.coupon is not None:
        today = clock.now().astimezone(clock.ISTANBUL).date()
        coupon = {"code": f"{campaign.coupon.prefix}-{SAMPLE_CODE}",
                  "percent": campaign.coupon.percent,
                  "expires_on": today + timedelta(days=campaign.coupon.valid_days)}
    event = SampleEvent("event", {}) if campaign.trigger.type == "after_event" else None
    recipient = SAMPLE_CONTACT["email"] if channel == "email" else SAMPLE_CONTACT["phone"]
    # A real token, so the sample has the length of the real thing.
    url = tokens.unsubscribe_url(settings.web.base_url, settings.web.secret_key or "sample",
                                 recipient, channel)
    fields = {**SAMPLE_CONTACT, "locale": locale}
    return build_context(fields, attributes, coupon, event, campaign, settings, url)


def _positions(campaign: Campaign) -> tuple[str, LoadedYaml]:
    path = campaign.source_path
    empty = LoadedYaml(data=None, positions={(): (1, 1)})
    if path is None:
        return "<campaign>", empty
    try:
        return str(path), load_yaml(path.read_bytes())
    except (OSError, YamlLoadError):  # changed since it was loaded: problems go to line 1
        return str(path), empty


def _locate(loaded: LoadedYaml, path: tuple[str, ...]) -> tuple[int, int]:
    """Where a problem about ``path`` points: at its value, or, when that is a whole mapping
    (``content.email``), at its key, as the spec's own problems do."""
    value: Any = loaded.data
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    if isinstance(value, (dict, list)) and path in loaded.key_positions:
        return loaded.key_positions[path]
    return loaded.locate(path)


def _plain(markup_or_text: str, html: bool) -> str:
    return " ".join((html_to_text(markup_or_text) if html else markup_or_text).split())


def _references_coupon(source: _Source, dirs: tuple[str, ...]) -> bool:
    env = _environment(dirs, source.html)
    text = source.text
    if source.path is not None:
        try:
            text, _, _ = env.loader.get_source(env, source.path)  # type: ignore[union-attr]
        except TemplateNotFound:
            return False
    try:
        return "coupon" in meta.find_undeclared_variables(env.parse(text or ""))
    except TemplateSyntaxError:
        return False


def validate_templates(campaign: Campaign, settings: Settings, *,
                       base_dir: str | os.PathLike[str] | None = None,
                       known_attributes: Iterable[str] = (), sms_reserve: int = 5,
                       max_segments: int = 7) -> list[Problem]:
    """Render every channel in every locale against a sample contact; return what is wrong.

    Reported, each at the YAML position of the field it concerns: a template file that does not
    exist, a syntax error (with the template's own line), an undefined name (``contact.<name>``
    must be a contact field, an attribute the audience names or one in ``known_attributes``;
    ``event.<any name>`` renders a placeholder), an attempt to reach Python internals, any other
    runtime error, a field that renders to nothing, an SMS over ``max_segments`` parts, a
    commercial message whose rendered footer lacks the sender's identity or the opt-out (a link
    in email), a sender identity missing from the configuration, and promotional content in a
    transactional campaign.
    """
    file, loaded = _positions(campaign)
    dirs = _search_dirs(campaign, base_dir)
    commercial = campaign.purpose == "commercial"
    attributes = _sample_attributes(campaign, known_attributes)
    problems: set[Problem] = set()

    def add(field: tuple[str, ...] | str, message: str) -> None:
        path = tuple(field.split(".")) if isinstance(field, str) else field
        line, column = _locate(loaded, path)
        problems.add(Problem(file, line, column, ".".join(path), message))

    sender_ok = _check_sender(campaign, settings, commercial, add)
    for channel in campaign.channels:
        for locale in LOCALES:
            context = _sample_context(campaign, settings, channel, locale, attributes)
            if not _check_sources(campaign, channel, locale, dirs, context, commercial, add):
                continue  # the whole message cannot be judged until its parts render
            try:
                rendered = render(campaign, channel, context, settings, locale,
                                  sms_reserve=sms_reserve, max_segments=max_segments,
                                  base_dir=base_dir)
            except RenderError as error:
                add(str(error.field), error.message)
                continue
            if commercial and sender_ok:
                _check_footer(rendered, settings, context, add)
    return sorted(problems)


def _check_sender(campaign: Campaign, settings: Settings, commercial: bool, add: Any) -> bool:
    if not commercial:
        return True
    sender = settings.sender
    missing_fields = sender.missing()
    if "sms" in campaign.channels and not sender.sms_optout:
        missing_fields.append("sms_optout")
    where = "izin.toml" if settings.source == "defaults" else settings.source
    ok = True
    if missing_fields:
        names = ", ".join(missing_fields)
        add(("purpose",), f"a commercial message must carry the sender's identity and opt-out "
                          f"(law 6563 art. 5 and 8); set {names} under [sender] in {where}")
        ok = False
    if "sms" in campaign.channels:
        for name in ("name", "sms_optout"):
            bad = _gsm_unmappable(getattr(sender, name))
            if bad:
                add(("purpose",), f"[sender] {name} in {where} has {', '.join(map(repr, bad))}, "
                                  "which an SMS footer cannot carry in GSM-7; spell it without")
                ok = False
    return ok


def _check_sources(campaign: Campaign, channel: str, locale: str, dirs: tuple[str, ...],
                   context: Mapping[str, Any], commercial: bool, add: Any) -> bool:
    """Render each part of the message on its own, so every broken part is reported."""
    ok = True
    for source in _sources(campaign, channel, locale).values():
        if not commercial and _references_coupon(source, dirs):
            add(source.field, "a transactional campaign may not carry promotions, and this "
                              "template refers to coupon; remove it or set purpose: commercial")
            ok = False
            continue
        try:
            output = _render_source(source, dirs, locale, context)
        except RenderError as error:
            add(source.field, error.message)
            ok = False
            continue
        plain = _plain(output, source.html)
        if not plain:
            add(source.field, "renders to nothing for the sample contact; give it some text")
            ok = False
        elif not commercial:
            found = promotion_in(plain)
            if found:
                add(source.field, f"a transactional campaign may not carry promotions, and the "
                                  f"text says '{found}'; remove it or set purpose: "
                                  "commercial")
                ok = False
    return ok


def _check_footer(rendered: Rendered, settings: Settings, context: Mapping[str, Any],
                  add: Any) -> None:
    """Defensive: the footer template (possibly overridden next to the campaign) must still
    carry identity and opt-out (invariant 5)."""
    sender = settings.sender
    field = ("content", rendered.channel)
    if rendered.channel == "email":
        url = str(context["unsubscribe_url"])
        needed = {"the sender's name": sender.name, "the MERSİS number": sender.mersis,
                  "the unsubscribe link": url}
        parts = [("HTML", _FOOTERS[("email", "html")], html_to_text(rendered.html or "")),
                 ("plain text", _FOOTERS[("email", "text")], rendered.text)]
        links = re.findall(r"""href\s*=\s*["']([^"']*)["']""", rendered.html or "")
        if url not in (html_lib.unescape(link) for link in links):
            add(field, "the rendered HTML has no link to unsubscribe_url; the footer "
                       f"({_FOOTERS[('email', 'html')]}) must keep "
                       '<a href="{{ unsubscribe_url }}">')
    else:
        needed = {"the sender's name": gsm(sender.name), "the opt-out text": gsm(sender.sms_optout)}
        parts = [("SMS", _FOOTERS[("sms", "text")], rendered.text)]
    for kind, footer, text in parts:
        flat = " ".join(text.split())
        for what, value in needed.items():
            if " ".join(value.split()) not in flat:
                add(field, f"the rendered {kind} lacks {what}; the footer ({footer}) must keep it")
