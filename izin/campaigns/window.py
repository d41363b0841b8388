"""Send windows in the contact's time zone: is an instant inside, and when does it next open?"""

from __future__ import annotations

from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo


def in_window(instant: datetime, tz: ZoneInfo, start: time, end: time) -> bool:
    """True when the local time is within [start, end]; a window opening at 09:00 is open at 09:00."""
    local = instant.astimezone(tz).time().replace(tzinfo=None)
    return start <= local <= end


def next_open(instant: datetime, tz: ZoneInfo, start: time, end: time) -> datetime:
    """The instant itself when inside the window, else the next local opening time (in UTC)."""
    if in_window(instant, tz, start, end):
        return instant
    local = instant.astimezone(tz)
    day = local.date() if local.time().replace(tzinfo=None) < start else local.date() + timedelta(days=1)
    return datetime.combine(day, start, tzinfo=tz).astimezone(instant.tzinfo)
