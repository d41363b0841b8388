"""Business days in Türkiye: the 3-business-day limit for uploading a consent to İYS.

Weekends and the official public holidays (the `holidays` package's Turkey calendar, which follows
the religious holidays year by year) are not business days. Half days (arife, 28 October afternoon)
count as business days: that makes the deadline earlier, never later, so warnings err on the safe side.
Holidays the package does not know (an extra bridge day declared by decree) can be passed in.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime, timedelta
from functools import lru_cache

from izin.clock import ISTANBUL

#: İYS takes a consent whose consentDate is at most this many business days back
UPLOAD_LIMIT_DAYS = 3


@lru_cache(maxsize=64)
def _public_holidays(year: int) -> frozenset[date]:
    import holidays

    return frozenset(holidays.country_holidays("TR", years=year))


def is_business_day(day: date, extra_holidays: Iterable[date] = ()) -> bool:
    """Monday to Friday, and not a Turkish public holiday."""
    return day.weekday() < 5 and day not in _public_holidays(day.year) and day not in set(extra_holidays)


def add_business_days(moment: datetime, days: int, extra_holidays: Iterable[date] = ()) -> datetime:
    """The same Türkiye wall-clock time `days` business days later (an aware datetime)."""
    extra = frozenset(extra_holidays)
    local = moment.astimezone(ISTANBUL)
    day = local.date()
    counted = 0
    while counted < days:
        day += timedelta(days=1)
        if is_business_day(day, extra):
            counted += 1
    return datetime.combine(day, local.timetz().replace(tzinfo=None), tzinfo=ISTANBUL)


def upload_deadline(consent_date: datetime, extra_holidays: Iterable[date] = ()) -> datetime:
    """The last instant İYS still takes an event with this consentDate."""
    return add_business_days(consent_date, UPLOAD_LIMIT_DAYS, extra_holidays)


def business_days_between(start: datetime, end: datetime, extra_holidays: Iterable[date] = ()) -> int:
    """Whole business days after start's day up to and including end's day (0 when end <= start)."""
    extra = frozenset(extra_holidays)
    first, last = start.astimezone(ISTANBUL).date(), end.astimezone(ISTANBUL).date()
    count, day = 0, first
    while day < last:
        day += timedelta(days=1)
        if is_business_day(day, extra):
            count += 1
    return count
