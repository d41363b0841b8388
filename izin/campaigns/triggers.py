"""Triggers: when is a contact due, and under which occurrence key.

The key, with campaign and contact, names a delivery for ever: the year for a birthday, "once" for
a `once` campaign (moving its instant does not make a second blast), the event id for a follow-up. Birthday and `once`
occurrences are due from their moment until the end of that local day, so a tick later the same
day still sends them and a tick the next day does not (no late greetings, no look-ahead).
"""

from __future__ import annotations

import calendar
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

#: every UTC offset in use, so a tick can tell which calendar days it is somewhere on earth
_OFFSETS_H = range(-12, 15)


def birthday_this_year(birthday: date, year: int) -> date:
    """The day the birthday is kept in `year`: 29 February falls on 28 February in other years."""
    if birthday.month == 2 and birthday.day == 29 and not calendar.isleap(year):
        return date(year, 2, 28)
    return birthday.replace(year=year)


def local_days(at: datetime) -> set[tuple[int, int]]:
    """(month, day) pairs that are 'today' in some time zone at this instant; 29 Feb added on 28 Feb of
    a non-leap year. The birthday query reads only these through the (month, day) index."""
    days: set[tuple[int, int]] = set()
    for hours in _OFFSETS_H:
        day = (at + timedelta(hours=hours)).date()
        days.add((day.month, day.day))
        if (day.month, day.day) == (2, 28) and not calendar.isleap(day.year):
            days.add((2, 29))
    return days


def birthday_due(birthday: date, tz: ZoneInfo, send_time: time, at: datetime) -> tuple[str, datetime] | None:
    """(occurrence key, due instant) when the birthday greeting is due at `at`, else None."""
    local_today = at.astimezone(tz).date()
    day = birthday_this_year(birthday, local_today.year)
    if day != local_today:
        return None
    due = datetime.combine(day, send_time, tzinfo=tz).astimezone(timezone.utc)
    return (str(day.year), due) if due <= at else None


#: a `once` campaign's occurrence key: one blast per contact for ever, wherever its instant is moved;
#: a second blast is a new campaign (a new name)
ONCE_KEY = "once"


def once_due(instant: datetime, tz: ZoneInfo, at: datetime) -> bool:
    """A blast is due from its instant to the end of that day in the policy time zone."""
    return instant <= at and instant.astimezone(tz).date() == at.astimezone(tz).date()


def follow_up_due(occurred_at: datetime, delay: timedelta, send_time: time | None, tz: ZoneInfo) -> datetime:
    """When a follow-up falls due: `delay` after the event, moved to the next `send_time` if given."""
    due = occurred_at + delay
    if send_time is None:
        return due
    local = due.astimezone(tz)
    snapped = datetime.combine(local.date(), send_time, tzinfo=tz)
    if snapped < local:
        snapped = datetime.combine(local.date() + timedelta(days=1), send_time, tzinfo=tz)
    return snapped.astimezone(timezone.utc)
