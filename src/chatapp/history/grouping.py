"""Date headings for the history list: Today, Yesterday, Previous 7 days, Previous 30 days, then months."""

from __future__ import annotations

from datetime import date, datetime
from functools import cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

UTC = ZoneInfo("UTC")


def user_zone(name: str | None) -> ZoneInfo:
    """The browser's time zone (sent as a cookie by static/app.js); UTC when unknown or invalid."""
    if not name or len(name) > 64:
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


def group_label(started_at: datetime, now: datetime, zone: ZoneInfo = UTC) -> str:
    """The heading an item falls under, by calendar day in the person's own time zone."""
    day = started_at.astimezone(zone).date()
    today = now.astimezone(zone).date()
    age = (today - day).days
    if age <= 0:
        return "Today"
    if age == 1:
        return "Yesterday"
    if age <= 7:
        return "Previous 7 days"
    if age <= 30:
        return "Previous 30 days"
    return _month(day)


def _month(day: date) -> str:
    return _month_label(day.year, day.month)


@cache
def _month_label(year: int, month: int) -> str:
    """The heading of an older month ("March 2026"): a list page asks once a row, strftime each time was ~1% of an
    htmx page's CPU."""
    return date(year, month, 1).strftime("%B %Y")


MONTH_ABBREVIATIONS = ("", "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def short_datetime(moment: datetime) -> str:
    """A history row's start, "Dec 8, 2026 14:05": what strftime("%b %-d, %Y %H:%M") says in the C locale, in a
    third of its time."""
    return f"{MONTH_ABBREVIATIONS[moment.month]} {moment.day}, {moment.year} {moment.hour:02d}:{moment.minute:02d}"


def duration_label(started_at: datetime, ended_at: datetime | None) -> str:
    if ended_at is None:
        return "ongoing"
    seconds = max(0, int((ended_at - started_at).total_seconds()))
    if seconds < 60:
        return f"{seconds} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"
