"""Triggers: leap days, time zones, same-day catch-up, follow-up snapping, send windows."""

from __future__ import annotations

from datetime import date, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from izin.campaigns.triggers import birthday_due, birthday_this_year, follow_up_due, local_days, once_due
from izin.campaigns.window import in_window, next_open
from izin.clock import parse_instant as T

IST = ZoneInfo("Europe/Istanbul")
LONDON = ZoneInfo("Europe/London")
TOKYO = ZoneInfo("Asia/Tokyo")


@pytest.mark.parametrize(("birthday", "year", "expected"), [
    (date(2000, 2, 29), 2026, date(2026, 2, 28)),
    (date(2000, 2, 29), 2028, date(2028, 2, 29)),
    (date(1990, 11, 24), 2026, date(2026, 11, 24)),
    (date(1990, 2, 28), 2028, date(2028, 2, 28)),
])
def test_birthday_this_year(birthday, year, expected):
    assert birthday_this_year(birthday, year) == expected


@pytest.mark.parametrize(("birthday", "tz", "at", "expected"), [
    # due at 10:00 local, still due later that day, not before, not the next day
    (date(1990, 11, 24), IST, "2026-11-24T10:00:00+03:00", ("2026", T("2026-11-24T07:00:00+00:00"))),
    (date(1990, 11, 24), IST, "2026-11-24T23:59:00+03:00", ("2026", T("2026-11-24T07:00:00+00:00"))),
    (date(1990, 11, 24), IST, "2026-11-24T09:59:00+03:00", None),
    (date(1990, 11, 24), IST, "2026-11-25T00:00:00+03:00", None),
    # the contact's own zone decides: 10:00 in London is 13:00 in Istanbul
    (date(1990, 11, 24), LONDON, "2026-11-24T12:59:00+03:00", None),
    (date(1990, 11, 24), LONDON, "2026-11-24T13:00:00+03:00", ("2026", T("2026-11-24T10:00:00+00:00"))),
    # 10:00 in Tokyo on the 24th is 04:00 in Istanbul; at 23:00 on the 24th in Istanbul it is the 25th there
    (date(1990, 11, 24), TOKYO, "2026-11-24T04:00:00+03:00", ("2026", T("2026-11-24T01:00:00+00:00"))),
    (date(1990, 11, 24), TOKYO, "2026-11-24T23:00:00+03:00", None),
    # leap-day birthdays on 28 February of other years, and on 29 February of leap years
    (date(2000, 2, 29), IST, "2026-02-28T12:00:00+03:00", ("2026", T("2026-02-28T07:00:00+00:00"))),
    (date(2000, 2, 29), IST, "2028-02-28T12:00:00+03:00", None),
    (date(2000, 2, 29), IST, "2028-02-29T12:00:00+03:00", ("2028", T("2028-02-29T07:00:00+00:00"))),
])
def test_birthday_due(birthday, tz, at, expected):
    assert birthday_due(birthday, tz, time(10, 0), T(at)) == expected


def test_local_days_cover_every_zone_and_leap_day():
    assert local_days(T("2026-11-24T12:00:00+00:00")) == {(11, 24), (11, 25)}
    assert local_days(T("2026-11-24T00:30:00+00:00")) == {(11, 23), (11, 24)}
    assert local_days(T("2026-02-28T12:00:00+00:00")) == {(2, 28), (3, 1), (2, 29)}
    assert local_days(T("2028-02-28T12:00:00+00:00")) == {(2, 28), (2, 29)}


def test_once():
    blast = T("2026-11-27T10:00:00+03:00")
    assert [once_due(blast, IST, T(at)) for at in ("2026-11-27T09:59:00+03:00", "2026-11-27T10:00:00+03:00",
                                                   "2026-11-27T23:59:00+03:00", "2026-11-28T00:00:00+03:00")] == [
        False, True, True, False]


@pytest.mark.parametrize(("occurred", "delay", "send_time", "expected"), [
    ("2026-11-20T14:30:00+03:00", timedelta(days=3), None, "2026-11-23T14:30:00+03:00"),
    ("2026-11-20T14:30:00+03:00", timedelta(days=3), time(11, 0), "2026-11-24T11:00:00+03:00"),
    ("2026-11-20T09:30:00+03:00", timedelta(days=3), time(11, 0), "2026-11-23T11:00:00+03:00"),
    ("2026-11-20T11:00:00+03:00", timedelta(days=3), time(11, 0), "2026-11-23T11:00:00+03:00"),
    ("2026-11-20T23:30:00+03:00", timedelta(hours=1), None, "2026-11-21T00:30:00+03:00"),
])
def test_follow_up_due(occurred, delay, send_time, expected):
    assert follow_up_due(T(occurred), delay, send_time, IST) == T(expected)


@pytest.mark.parametrize(("at", "inside", "opens"), [
    ("2026-11-24T09:00:00+03:00", True, "2026-11-24T09:00:00+03:00"),
    ("2026-11-24T21:00:00+03:00", True, "2026-11-24T21:00:00+03:00"),
    ("2026-11-24T21:00:01+03:00", False, "2026-11-25T09:00:00+03:00"),
    ("2026-11-24T08:59:59+03:00", False, "2026-11-24T09:00:00+03:00"),
    ("2026-11-24T02:00:00+03:00", False, "2026-11-24T09:00:00+03:00"),
])
def test_send_window(at, inside, opens):
    assert in_window(T(at), IST, time(9), time(21)) is inside
    assert next_open(T(at), IST, time(9), time(21)) == T(opens)
