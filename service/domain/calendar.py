"""Offices, their hours and the wards they serve (DESIGN.md §2). Pure: the
office data and the public holidays are configuration (service/config/offices.py
reads them from TOML and a maintained holiday library); times are
Asia/Tokyo.

How a day is decided, in this order:
  1. a closure that matches the day closes the office all day (closing
     weekdays, the n-th weekend, fixed dates such as the year-end closure);
  2. on a public holiday, only hours rules that name "holiday" apply (none:
     closed);
  3. otherwise the hours rules whose weekday (and, if given, week of the
     month) match.
So a closing weekday beats a holiday, and a holiday beats a weekday's hours:
the shipped Yokohama data documents both choices (service/config/offices.toml).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

TOKYO = ZoneInfo("Asia/Tokyo")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
HOLIDAY = "holiday"
LOOK_AHEAD_DAYS = 62  # how far next_opening searches


class OfficeKind:
    WARD_OFFICE = "ward_office"
    SPECIAL_CENTER = "special_center"


def tokyo_day(at: datetime) -> date:
    """The Tokyo calendar day of an instant (guards.day_of; the fold counts wrong proxy codes by it)."""
    return at.astimezone(TOKYO).date()


def next_tokyo_day(at: datetime) -> datetime:
    """The start (00:00 Asia/Tokyo) of the Tokyo day after the one `at` falls on."""
    return datetime.combine(tokyo_day(at) + timedelta(days=1), time(0), TOKYO)


def week_of_month(day: date) -> int:
    """1 for the first seven days of the month (the 1st Saturday is in it), ..."""
    return (day.day - 1) // 7 + 1


@dataclass(frozen=True)
class Hours:
    """Open from `opens` to `closes` on the matching days."""

    days: frozenset[str]  # of DAYS, or HOLIDAY
    opens: time
    closes: time
    weeks: frozenset[int] = frozenset()  # weeks of the month (2, 4: the 2nd and 4th ...); empty: every week

    def applies(self, day: date, holiday: bool) -> bool:
        if holiday:
            return HOLIDAY in self.days
        return DAYS[day.weekday()] in self.days and (not self.weeks or week_of_month(day) in self.weeks)


@dataclass(frozen=True)
class Closure:
    """Closed all day on the matching days."""

    days: frozenset[str] = frozenset()  # closing weekdays
    nth_weekends: frozenset[int] = frozenset()  # the weekend whose Saturday is the n-th of the month (Sat and the Sunday after)
    dates: frozenset[str] = frozenset()  # "MM-DD", every year (e.g. the year-end closure)

    def applies(self, day: date) -> bool:
        weekday = DAYS[day.weekday()]
        if weekday in self.days or day.strftime("%m-%d") in self.dates:
            return True
        if weekday == "sat" and week_of_month(day) in self.nth_weekends:
            return True
        saturday = day - timedelta(days=1)
        return weekday == "sun" and week_of_month(saturday) in self.nth_weekends


@dataclass(frozen=True)
class Office:
    office_id: str
    name: str
    kind: str
    wards: frozenset[str]
    hours: tuple[Hours, ...]
    closures: tuple[Closure, ...] = ()

    def serves(self, ward: str | None) -> bool:
        """A card with no recorded ward may be served anywhere."""
        return ward is None or ward in self.wards


@dataclass(frozen=True)
class Calendar:
    offices: dict[str, Office]
    holidays: frozenset[date] = field(default_factory=frozenset)  # public holidays of Japan

    def intervals(self, office: Office, day: date) -> list[tuple[datetime, datetime]]:
        """The office's open intervals on a Tokyo calendar day."""
        if any(c.applies(day) for c in office.closures):
            return []
        holiday = day in self.holidays
        return sorted(
            (datetime.combine(day, h.opens, TOKYO), datetime.combine(day, h.closes, TOKYO))
            for h in office.hours
            if h.applies(day, holiday)
        )

    def is_open(self, office: Office, at: datetime) -> bool:
        local = at.astimezone(TOKYO)
        return any(start <= local < end for start, end in self.intervals(office, local.date()))

    def next_opening(self, office: Office, at: datetime) -> datetime | None:
        """`at` itself if the office is open then, else when it next opens
        (None if not within LOOK_AHEAD_DAYS)."""
        local = at.astimezone(TOKYO)
        for n in range(LOOK_AHEAD_DAYS):
            for start, end in self.intervals(office, local.date() + timedelta(days=n)):
                if local < end:
                    return max(start, local)
        return None

    def serving(self, ward: str | None) -> list[Office]:
        """Offices that act for a card of this ward, in id order."""
        return [o for _, o in sorted(self.offices.items()) if o.serves(ward)]


@dataclass(frozen=True)
class Opening:
    office_id: str
    name: str
    at: datetime


def next_openings(calendar: Calendar, ward: str | None, at: datetime, limit: int = 3) -> tuple[Opening, ...]:
    """Where and when a holder of this ward can go next: the earliest
    openings of the offices that serve the ward."""
    found = []
    for office in calendar.serving(ward):
        when = calendar.next_opening(office, at)
        if when is not None:
            found.append(Opening(office.office_id, office.name, when))
    return tuple(sorted(found, key=lambda o: (o.at, o.office_id))[:limit])
