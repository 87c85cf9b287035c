"""The history list's filters, declared in one place: each reads its form fields, checks them, and adds one SQL
condition to the list, Archived and search statements (and the pinned block above the list).

A new filter is one `HistoryFilter` in FILTERS plus a macro for its form fields in
templates/_history_filters.html; the page, its links, the row buttons' hidden fields, the statements and the
script that refills the fields after Back all loop over FILTERS.

Every condition is written so that NULL parameters switch it off, and its parameters come after the
statement's own: the statements stay constant (prepared once per connection) whichever filters are in use.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo


class BadFilter(ValueError):
    """A filter's fields cannot be used; the message is shown next to the fields (and the list is empty)."""


@dataclass(frozen=True)
class HistoryFilter:
    """`fields` are its query/form field names, `macro` the macro in _history_filters.html that renders them.
    `parse` turns the fields' raw values into the condition's parameters (all None when it is off), or raises
    BadFilter. `condition` is SQL with {0}, {1}, ... where its parameters' placeholders go."""

    fields: tuple[str, ...]
    macro: str
    parse: Callable[[Mapping[str, str], ZoneInfo], tuple[Any, ...]]
    condition: str


# A day more than Python's range on each side, so every zone's day bounds still fit in UTC.
FIRST_DATE, LAST_DATE = date(1, 1, 2), date(9999, 12, 30)


def date_bounds(
    date_from: date | None, date_to: date | None, zone: ZoneInfo
) -> tuple[datetime | None, datetime | None]:
    """Inclusive calendar days in the person's time zone, as a half-open timestamp range."""
    start = datetime.combine(date_from, time.min, tzinfo=zone) if date_from else None
    end = datetime.combine(date_to + timedelta(days=1), time.min, tzinfo=zone) if date_to else None
    return start, end


def _date(raw: str, name: str) -> date | None:
    if not raw:
        return None
    try:
        day = date.fromisoformat(raw)
    except ValueError:
        raise BadFilter(f"{name} must be a date (YYYY-MM-DD).") from None
    if not FIRST_DATE <= day <= LAST_DATE:  # a day later and the bounds overflow in some time zones
        raise BadFilter(f"{name} must be between {FIRST_DATE} and {LAST_DATE}.")
    return day


def _date_range(values: Mapping[str, str], zone: ZoneInfo) -> tuple[Any, ...]:
    """From/To as timestamps, or BadFilter: a typo'd date, one out of range, or From after To."""
    date_from, date_to = _date(values.get("from", ""), "From"), _date(values.get("to", ""), "To")
    if date_from and date_to and date_from > date_to:
        raise BadFilter("From must be on or before To.")
    return date_bounds(date_from, date_to, zone)


DATE_RANGE = HistoryFilter(
    fields=("from", "to"),
    macro="date_range",
    parse=_date_range,
    condition="({0}::timestamptz IS NULL OR ended_at >= {0}) AND ({1}::timestamptz IS NULL OR ended_at < {1})",
)

FILTERS: tuple[HistoryFilter, ...] = (DATE_RANGE,)
FIELDS: tuple[str, ...] = tuple(name for f in FILTERS for name in f.fields)


def _arity(f: HistoryFilter) -> int:
    """How many parameters the filter's condition takes: {0} up to the highest {n} it names."""
    return max((n + 1 for n in range(10) if f"{{{n}}}" in f.condition), default=0)


def sql(first: int) -> str:
    """Every filter's condition, their parameters numbered from `$first` on in FILTERS order."""
    conditions = []
    for f in FILTERS:
        conditions.append(f.condition.format(*(f"${first + n}" for n in range(_arity(f)))))
        first += _arity(f)
    return " AND ".join(conditions) if conditions else "true"


def none() -> tuple[Any, ...]:
    """The statements' filter parameters with every filter off."""
    return (None,) * sum(_arity(f) for f in FILTERS)


def params_or_none(params: Sequence[Any] | None) -> tuple[Any, ...]:
    """The filter parameters a statement gets: `params` (from `apply(...).params`), or every filter off."""
    return none() if params is None else tuple(params)


@dataclass(frozen=True)
class Applied:
    """The filters as the request gave them: the raw field values (for the form, links and hidden fields),
    the statements' parameters, and the message when some field cannot be used (then every filter is off
    and the page shows no rows)."""

    values: dict[str, str]
    params: tuple[Any, ...]
    error: str = ""

    @property
    def active(self) -> bool:
        return any(p is not None for p in self.params)


def apply(raw: Mapping[str, Any], zone: ZoneInfo) -> Applied:
    """Read every filter's fields from a query string or form (a missing or non-text value counts as empty)."""
    values = {name: value if isinstance(value := raw.get(name), str) else "" for name in FIELDS}
    params: list[Any] = []
    try:
        for f in FILTERS:
            got = f.parse(values, zone)
            if len(got) != _arity(f):
                raise TypeError(f"the {f.macro} filter gave {len(got)} parameters for {_arity(f)} placeholders")
            params += got
    except BadFilter as exc:
        return Applied(values, none(), str(exc))
    return Applied(values, tuple(params))
