"""Business days for the 3-business-day İYS upload limit: weekends and Turkish public holidays skipped."""

from __future__ import annotations

from datetime import date, datetime

from izin.consent.iys.holidays_tr import add_business_days, business_days_between, is_business_day, upload_deadline
from server import TR


def test_weekend_is_skipped():
    friday = datetime(2026, 11, 20, 15, 30, tzinfo=TR)
    assert upload_deadline(friday) == datetime(2026, 11, 25, 15, 30, tzinfo=TR)  # Mon, Tue, Wed


def test_public_holidays_are_skipped():
    # 29 October (Republic Day) is a Thursday in 2026; 28 October afternoon is only a half day
    assert not is_business_day(date(2026, 10, 29)) and is_business_day(date(2026, 10, 28))
    assert upload_deadline(datetime(2026, 10, 27, 9, 0, tzinfo=TR)) == datetime(2026, 11, 2, 9, 0, tzinfo=TR)
    # Kurban Bayramı 2026: 27-30 May
    assert add_business_days(datetime(2026, 5, 26, 18, 0, tzinfo=TR), 1) == datetime(2026, 6, 1, 18, 0, tzinfo=TR)


def test_extra_holidays_and_counting_back():
    monday = datetime(2026, 11, 23, 10, 0, tzinfo=TR)
    assert upload_deadline(monday, [date(2026, 11, 24)]) == datetime(2026, 11, 27, 10, 0, tzinfo=TR)
    assert business_days_between(datetime(2026, 11, 18, 23, 0, tzinfo=TR), datetime(2026, 11, 24, 12, 0, tzinfo=TR)) == 4
    assert business_days_between(monday, monday) == 0
