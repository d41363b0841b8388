"""Audiences: a campaign's ``audience`` condition compiled into one SQL boolean over contacts.

``compile_audience(condition, at)`` returns a ``WHERE`` expression on ``Contact``, so a campaign
tick selects its audience in one statement (``select(Contact.id).where(...)``) instead of a
Python loop over contacts. ``birthday_filter`` selects birthdays through the month/day index.
SQLite and PostgreSQL give the same answers; the rules, where the contract leaves room:

- Every leaf is true or false, never SQL NULL, so ``not`` is the exact complement of what it
  wraps: ``not: {attribute: city, eq: Ankara}`` keeps contacts without a city.
- An attribute is *present* when the ``attributes`` JSON has the key with a non-null value.
  ``external_id``, ``first_name``, ``last_name``, ``email``, ``phone``, ``locale``, ``timezone``
  and ``recipient_type`` read the contact's own column instead (present when not NULL); they
  never become JSON attributes on import.
- **Numeric** comparison when the condition value is a number: only a stored JSON number
  matches, so ``{attribute: zip, eq: 6100}`` does not match the text ``"06100"`` nor ``"6100"``.
  Built-in columns are text and never match a numeric comparison.
- **Text** comparison when the condition value is text (``true``/``false`` count as the text
  ``true``/``false``): against the stored text, or the JSON spelling of a stored number or
  boolean (``1500`` matches ``eq: "1500"``, ``1500.0`` does not). Exact and case-sensitive:
  ``İstanbul``, ``istanbul`` and ``ISTANBUL`` are three values (Turkish İ/ı are not folded).
  ``gt``/``gte``/``lt``/``lte`` on text order by Unicode code point (ISO dates sort right; it is
  not the Turkish alphabet's order).
- ``eq in gt gte lt lte contains`` never match a missing attribute or one of the other type;
  ``ne`` is exactly ``not eq`` and ``not_in`` exactly ``not in``, so both *do* match a contact
  lacking the attribute, or holding a value of the other type ("not equal to X").
- ``in``/``not_in`` compare each listed value by its own type (a list may mix numbers and text).
- ``contains`` is a literal, case-sensitive substring test on the text form (``instr`` /
  ``strpos`` rather than LIKE: ``%`` and ``_`` in the value are plain characters, and SQLite's
  LIKE would ignore ASCII case where PostgreSQL's does not).
- ``exists: true`` matches a present attribute, ``exists: false`` a missing (or null) one.
- ``{tag: x}``: the contact carries the tag (exact). ``{event: e, within: d}``: an event named
  ``e`` with ``at - d < occurred_at <= at``; without ``within``, any ``e`` at or before ``at``.
  Events after ``at`` never count, so a plan for a past instant sees what was known then.
- Attribute names containing ``"`` never match (SQLite's JSON paths cannot address them).
"""

from __future__ import annotations

import calendar
import json
import math
import operator
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    ColumnElement,
    Float,
    String,
    and_,
    false,
    func,
    literal,
    not_,
    or_,
    select,
    true,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from izin.campaigns.spec import (
    AllCondition,
    AnyCondition,
    AttributeCondition,
    Condition,
    EventCondition,
    NotCondition,
    TagCondition,
)
from izin.consent.models import Contact, ContactEvent, ContactTag

__all__ = ["BUILTIN_ATTRIBUTES", "birthday_filter", "birthday_filter_on", "compile_audience"]

#: Attribute names that compare a ``contacts`` column instead of the ``attributes`` JSON.
BUILTIN_ATTRIBUTES = ("external_id", "first_name", "last_name", "email", "phone", "locale",
                      "timezone", "recipient_type")

_INT64 = range(-(2**63), 2**63)
_ORDERINGS: dict[str, Callable[[Any, Any], Any]] = {
    "gt": operator.gt, "gte": operator.ge, "lt": operator.lt, "lte": operator.le,
}


# --- dialect-specific SQL pieces -----------------------------------------------------------------
# Each construct carries the JSON document, the SQLite path (``$."key"``) and the PostgreSQL key as
# bound parameters, so compiled statements cache per dialect and parameters stay parameters.


class _JsonPiece(FunctionElement[Any]):
    inherit_cache = True

    def __init__(self, document: ColumnElement[Any], key: str) -> None:
        # SQLite matches path labels against the stored key text, which the JSON serializer
        # writes ASCII-escaped (json.dumps): escape the label the same way.
        sqlite_path = '$."' + json.dumps(key)[1:-1] + '"'
        super().__init__(document, literal(sqlite_path, String), literal(key, String))


class _json_number(_JsonPiece):
    """The attribute when it is a JSON number, else NULL."""

    name = "json_number"
    type = Float()
    inherit_cache = True


class _json_text(_JsonPiece):
    """The attribute as text when it is a JSON string, number or boolean, else NULL."""

    name = "json_text"
    type = String()
    inherit_cache = True


class _json_present(_JsonPiece):
    """True when the key exists with a non-null value; never NULL."""

    name = "json_present"
    type = Boolean()
    inherit_cache = True


class _codepoint_order(FunctionElement[Any]):
    """Text that compares by code point on both backends (PostgreSQL's collation may not)."""

    name = "codepoint_order"
    type = String()
    inherit_cache = True


class _has_substring(FunctionElement[Any]):
    """``needle`` occurs literally in ``haystack`` (NULL when the haystack is NULL)."""

    name = "has_substring"
    type = Boolean()
    inherit_cache = True


def _args(element: FunctionElement[Any], compiler: SQLCompiler, **kw: Any) -> list[str]:
    return [compiler.process(clause, **kw) for clause in element.clauses]


def _sqlite_args(element: _JsonPiece, compiler: SQLCompiler, **kw: Any) -> tuple[str, str]:
    """The document and the ``$."key"`` path (the key parameter is not rendered, so not sent)."""
    document, path, _ = element.clauses
    return compiler.process(document, **kw), compiler.process(path, **kw)


def _postgresql_args(element: _JsonPiece, compiler: SQLCompiler, **kw: Any) -> tuple[str, str]:
    """The document and the key (the SQLite path is not rendered, so not sent)."""
    document, _, key = element.clauses
    return compiler.process(document, **kw), compiler.process(key, **kw)


def _sqlite_has_arrow(compiler: SQLCompiler) -> bool:
    dbapi = getattr(compiler.dialect, "dbapi", None) or sqlite3
    return tuple(getattr(dbapi, "sqlite_version_info", (0,))) >= (3, 38)


@compiles(_json_number, "sqlite")
def _json_number_sqlite(element: _json_number, compiler: SQLCompiler, **kw: Any) -> str:
    doc, path = _sqlite_args(element, compiler, **kw)
    return (f"(CASE WHEN json_type({doc}, {path}) IN ('integer', 'real') "
            f"THEN json_extract({doc}, {path}) END)")


@compiles(_json_number, "postgresql")
def _json_number_postgresql(element: _json_number, compiler: SQLCompiler, **kw: Any) -> str:
    doc, key = _postgresql_args(element, compiler, **kw)
    # CASE, not AND: PostgreSQL may evaluate AND operands in any order, and the cast of a
    # non-number would raise.
    return (f"(CASE WHEN json_typeof({doc} -> {key}) = 'number' "
            f"THEN CAST({doc} ->> {key} AS NUMERIC) END)")


@compiles(_json_text, "sqlite")
def _json_text_sqlite(element: _json_text, compiler: SQLCompiler, **kw: Any) -> str:
    doc, path = _sqlite_args(element, compiler, **kw)
    # `->` gives a number's JSON spelling as stored (as PostgreSQL's ->> does); before SQLite
    # 3.38 the cast spells reals with 15 significant digits.
    if _sqlite_has_arrow(compiler):
        number = f"{doc} -> {path}"
    else:
        number = f"CAST(json_extract({doc}, {path}) AS TEXT)"
    return (f"(CASE json_type({doc}, {path}) WHEN 'text' THEN json_extract({doc}, {path}) "
            f"WHEN 'integer' THEN {number} WHEN 'real' THEN {number} "
            "WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' END)")


@compiles(_json_text, "postgresql")
def _json_text_postgresql(element: _json_text, compiler: SQLCompiler, **kw: Any) -> str:
    doc, key = _postgresql_args(element, compiler, **kw)
    return (f"(CASE WHEN json_typeof({doc} -> {key}) IN ('string', 'number', 'boolean') "
            f"THEN {doc} ->> {key} END)")


@compiles(_json_present, "sqlite")
def _json_present_sqlite(element: _json_present, compiler: SQLCompiler, **kw: Any) -> str:
    doc, path = _sqlite_args(element, compiler, **kw)
    return f"(coalesce(json_type({doc}, {path}), 'null') <> 'null')"


@compiles(_json_present, "postgresql")
def _json_present_postgresql(element: _json_present, compiler: SQLCompiler, **kw: Any) -> str:
    doc, key = _postgresql_args(element, compiler, **kw)
    return f"(coalesce(json_typeof({doc} -> {key}), 'null') <> 'null')"


@compiles(_codepoint_order, "sqlite")
def _codepoint_order_sqlite(element: _codepoint_order, compiler: SQLCompiler, **kw: Any) -> str:
    (text,) = _args(element, compiler, **kw)
    return f"({text})"  # BINARY, the default collation, compares UTF-8 bytes: code point order


@compiles(_codepoint_order, "postgresql")
def _codepoint_order_postgresql(element: _codepoint_order, compiler: SQLCompiler, **kw: Any) -> str:
    (text,) = _args(element, compiler, **kw)
    return f'(({text}) COLLATE "C")'


@compiles(_has_substring, "sqlite")
def _has_substring_sqlite(element: _has_substring, compiler: SQLCompiler, **kw: Any) -> str:
    haystack, needle = _args(element, compiler, **kw)
    return f"(instr({haystack}, {needle}) > 0)"


@compiles(_has_substring, "postgresql")
def _has_substring_postgresql(element: _has_substring, compiler: SQLCompiler, **kw: Any) -> str:
    haystack, needle = _args(element, compiler, **kw)
    return f"(strpos({haystack}, {needle}) > 0)"


# --- attribute comparisons -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Source:
    """Where an attribute's value comes from: its text form, its number (None: never a number),
    and whether it is present."""

    text: ColumnElement[Any] | None
    number: ColumnElement[Any] | None
    present: ColumnElement[bool]


def _source(name: str) -> _Source:
    if name in BUILTIN_ATTRIBUTES:
        column = getattr(Contact, name)
        return _Source(text=column, number=None, present=column.is_not(None))
    if '"' in name:
        return _Source(text=None, number=None, present=false())
    document = Contact.attributes
    return _Source(text=_json_text(document, name), number=_json_number(document, name),
                   present=_json_present(document, name))


def _truth(expression: ColumnElement[Any]) -> ColumnElement[bool]:
    """The comparison with NULL (a missing or other-typed value) turned into false."""
    return func.coalesce(expression, false(), type_=Boolean)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number_param(value: int | float) -> ColumnElement[Any]:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"cannot compare with {value}; use a finite number")
    if isinstance(value, int) and value in _INT64:
        return literal(value, BigInteger)
    return literal(float(value), Float)


def _text_of(value: Any) -> str:
    """A condition value as text: strings as they are, numbers and booleans as JSON spells them."""
    return value if isinstance(value, str) else json.dumps(value)


def _equals(source: _Source, value: Any) -> ColumnElement[bool]:
    if _is_number(value):
        if source.number is None:
            return false()
        return _truth(source.number == _number_param(value))
    if source.text is None:
        return false()
    return _truth(source.text == literal(_text_of(value), String))


def _one_of(source: _Source, values: Sequence[Any]) -> ColumnElement[bool]:
    numbers = [_number_param(v) for v in values if _is_number(v)]
    texts = sorted({_text_of(v) for v in values if not _is_number(v)})
    parts = []
    if numbers and source.number is not None:
        parts.append(_truth(source.number.in_(numbers)))
    if texts and source.text is not None:
        parts.append(_truth(source.text.in_(texts)))
    return or_(false(), *parts)


def _ordering(source: _Source, op: str, value: Any) -> ColumnElement[bool]:
    compare = _ORDERINGS[op]
    if _is_number(value):
        if source.number is None:
            return false()
        return _truth(compare(source.number, _number_param(value)))
    if source.text is None:
        return false()
    return _truth(compare(_codepoint_order(source.text), literal(_text_of(value), String)))


def _attribute(condition: AttributeCondition) -> ColumnElement[bool]:
    source = _source(condition.attribute)
    op, value = condition.op, condition.value
    if op == "eq":
        return _equals(source, value)
    if op == "ne":
        return not_(_equals(source, value))
    if op == "in":
        return _one_of(source, value)
    if op == "not_in":
        return not_(_one_of(source, value))
    if op in _ORDERINGS:
        return _ordering(source, op, value)
    if op == "contains":
        if source.text is None:
            return false()
        return _truth(_has_substring(source.text, literal(_text_of(value), String)))
    if op == "exists":
        return source.present if value else not_(source.present)
    raise ValueError(f"unknown attribute operator {op!r}")  # the spec admits no other


# --- conditions ----------------------------------------------------------------------------------


def _compile(condition: Condition, at: datetime) -> ColumnElement[bool]:
    if isinstance(condition, AllCondition):
        return and_(*(_compile(part, at) for part in condition.all))
    if isinstance(condition, AnyCondition):
        return or_(*(_compile(part, at) for part in condition.any))
    if isinstance(condition, NotCondition):
        return not_(_compile(condition.not_, at))
    if isinstance(condition, AttributeCondition):
        return _attribute(condition)
    if isinstance(condition, TagCondition):
        return (select(ContactTag.contact_id)
                .where(ContactTag.contact_id == Contact.id, ContactTag.tag == condition.tag)
                .exists())
    if isinstance(condition, EventCondition):
        # Matches the (contact_id, name, occurred_at) index.
        happened = [ContactEvent.contact_id == Contact.id, ContactEvent.name == condition.event,
                    ContactEvent.occurred_at <= at]
        if condition.within is not None:
            happened.append(ContactEvent.occurred_at > at - condition.within)
        return select(ContactEvent.id).where(*happened).exists()
    raise TypeError(f"not an audience condition: {condition!r}")


def compile_audience(condition: Condition | None, at: datetime) -> ColumnElement[bool]:
    """The audience as one boolean SQL expression over ``Contact``; no condition means everyone."""
    if at.utcoffset() is None:
        raise ValueError("at must be an aware datetime (event windows are instants)")
    if condition is None:
        return true()
    return _compile(condition, at)


# --- birthdays -----------------------------------------------------------------------------------


def birthday_filter(month: int, day: int, include_feb29: bool = False) -> ColumnElement[bool]:
    """Contacts born on ``month``/``day``; ``include_feb29`` (28 Feb, non-leap year) adds 29 Feb."""
    date(2000, month, day)  # a leap year: raises ValueError for a day no year has
    if include_feb29:
        if (month, day) != (2, 28):
            raise ValueError("include_feb29 applies to 28 February only")
        return and_(Contact.birth_month == 2, Contact.birth_day.in_((28, 29)))
    return and_(Contact.birth_month == month, Contact.birth_day == day)


def birthday_filter_on(day: date) -> ColumnElement[bool]:
    """Contacts whose birthday falls on ``day``: 29 February falls on 28 February in other years."""
    feb29_moves_here = (day.month, day.day) == (2, 28) and not calendar.isleap(day.year)
    return birthday_filter(day.month, day.day, include_feb29=feb29_moves_here)
