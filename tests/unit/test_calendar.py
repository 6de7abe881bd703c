"""Office hours (DESIGN.md §2), first with the shipped Yokohama schedule
(service/config/offices.toml and Japanese public holidays from the `holidays`
library), then with small hand-built calendars for the rules of a day."""

from __future__ import annotations

from datetime import date, datetime, time

import pytest

from pinlife.config.offices import load_policy
from pinlife.domain.calendar import (
    TOKYO,
    Calendar,
    Closure,
    Hours,
    Office,
    OfficeKind,
    next_openings,
    week_of_month,
)
from pinlife.domain.policy import ThrottlePolicy

CALENDAR = load_policy(None, ThrottlePolicy(), date(2026, 6, 1)).calendar
WARD = CALENDAR.offices["nishi-ward-office"]
CENTER = CALENDAR.offices["special-center-yokohama"]  # serves nishi


def tokyo(y, mo, d, h=0, mi=0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=TOKYO)


def day_is(y, mo, d, weekday: str, week: int) -> date:
    """The date, after checking the calendar fact a test relies on."""
    day = date(y, mo, d)
    assert (day.strftime("%a"), week_of_month(day)) == (weekday, week)
    return day


def hours_of(office: Office, day: date) -> list[tuple[str, str]]:
    return [(s.strftime("%H:%M"), e.strftime("%H:%M")) for s, e in CALENDAR.intervals(office, day)]


# --- the shipped Yokohama schedule ------------------------------------------


def test_a_weekday_morning_the_ward_office_is_open_until_17_00():
    day_is(2026, 6, 1, "Mon", 1)
    assert CALENDAR.is_open(WARD, tokyo(2026, 6, 1, 10))
    assert CALENDAR.is_open(WARD, tokyo(2026, 6, 1, 8, 45))
    assert CALENDAR.is_open(WARD, tokyo(2026, 6, 1, 16, 59))
    assert not CALENDAR.is_open(WARD, tokyo(2026, 6, 1, 17, 0))
    assert CALENDAR.next_opening(WARD, tokyo(2026, 6, 1, 10)) == tokyo(2026, 6, 1, 10)


def test_before_8_45_the_ward_office_opens_at_8_45_that_day():
    at = tokyo(2026, 6, 1, 7, 30)
    assert not CALENDAR.is_open(WARD, at)
    assert CALENDAR.next_opening(WARD, at) == tokyo(2026, 6, 1, 8, 45)


def test_a_time_in_utc_is_read_in_tokyo():
    # 2026-06-01 00:00 UTC is 09:00 in Tokyo; 08:30 UTC is 17:30 in Tokyo.
    assert CALENDAR.is_open(WARD, datetime.fromisoformat("2026-06-01T00:00:00+00:00"))
    assert not CALENDAR.is_open(WARD, datetime.fromisoformat("2026-06-01T08:30:00+00:00"))


def test_the_ward_office_opens_the_2nd_and_4th_saturday_morning_only():
    day_is(2026, 6, 13, "Sat", 2)
    assert CALENDAR.is_open(WARD, tokyo(2026, 6, 13, 10))
    assert not CALENDAR.is_open(WARD, tokyo(2026, 6, 13, 13))
    assert CALENDAR.next_opening(WARD, tokyo(2026, 6, 13, 13)) == tokyo(2026, 6, 15, 8, 45)
    assert hours_of(WARD, day_is(2026, 6, 27, "Sat", 4)) == [("09:00", "12:00")]
    assert hours_of(WARD, day_is(2026, 6, 6, "Sat", 1)) == []
    assert hours_of(WARD, day_is(2026, 6, 20, "Sat", 3)) == []


def test_the_special_center_closes_the_3rd_saturday_and_the_sunday_after_it():
    saturday, sunday = day_is(2026, 5, 16, "Sat", 3), day_is(2026, 5, 17, "Sun", 3)
    assert hours_of(CENTER, saturday) == hours_of(CENTER, sunday) == []
    assert not CALENDAR.is_open(CENTER, tokyo(2026, 5, 16, 10))
    assert CALENDAR.next_opening(CENTER, tokyo(2026, 5, 16, 10)) == tokyo(2026, 5, 18, 11, 30)
    assert CALENDAR.next_opening(CENTER, tokyo(2026, 5, 17, 10)) == tokyo(2026, 5, 18, 11, 30)
    # other weekends it opens 9:00-16:45
    assert hours_of(CENTER, day_is(2026, 5, 9, "Sat", 2)) == [("09:00", "16:45")]
    assert hours_of(CENTER, day_is(2026, 5, 10, "Sun", 2)) == [("09:00", "16:45")]


def test_the_sunday_after_the_3rd_saturday_is_not_always_the_3rd_sunday():
    # February 2026 starts on a Sunday: its 3rd Sunday (15th) comes before
    # the 3rd Saturday (21st); the Sunday after that is the 4th Sunday.
    day_is(2026, 2, 1, "Sun", 1)
    assert hours_of(CENTER, day_is(2026, 2, 15, "Sun", 3)) == [("09:00", "16:45")]
    assert hours_of(CENTER, day_is(2026, 2, 21, "Sat", 3)) == []
    assert hours_of(CENTER, day_is(2026, 2, 22, "Sun", 4)) == []
    # ... and the Monday after is the Emperor's Birthday: holiday hours from 9:00.
    assert CALENDAR.next_opening(CENTER, tokyo(2026, 2, 22, 12)) == tokyo(2026, 2, 23, 9, 0)
    # Sunday 1 March follows Saturday 28 February, a 4th Saturday: open.
    day_is(2026, 2, 28, "Sat", 4)
    assert hours_of(CENTER, day_is(2026, 3, 1, "Sun", 1)) == [("09:00", "16:45")]


def test_on_a_wednesday_the_center_is_closed_and_the_ward_office_open():
    at = tokyo(2026, 5, 13, 12)
    day_is(2026, 5, 13, "Wed", 2)
    assert CALENDAR.is_open(WARD, at)
    assert not CALENDAR.is_open(CENTER, at)
    assert CALENDAR.next_opening(CENTER, at) == tokyo(2026, 5, 15, 11, 30)  # Thursday closed too


@pytest.mark.parametrize("holiday, next_day", [((2026, 11, 23), (2026, 11, 24)), ((2027, 1, 11), (2027, 1, 12))])
def test_a_monday_holiday_closes_the_ward_office_and_opens_the_center_9_to_16_45(holiday, next_day):
    day = date(*holiday)
    assert day.strftime("%a") == "Mon" and day in CALENDAR.holidays
    assert hours_of(WARD, day) == []
    assert hours_of(CENTER, day) == [("09:00", "16:45")]
    assert CALENDAR.is_open(CENTER, tokyo(*holiday, 9)) and not CALENDAR.is_open(CENTER, tokyo(*holiday, 16, 45))
    assert CALENDAR.next_opening(WARD, tokyo(*holiday, 9)) == tokyo(*next_day, 8, 45)


def test_a_holiday_on_a_wednesday_closes_both():
    day = day_is(2026, 4, 29, "Wed", 5)  # Showa Day
    assert hours_of(WARD, day) == hours_of(CENTER, day) == []


def test_a_holiday_on_a_2nd_saturday_closes_the_ward_office():
    day = day_is(2029, 8, 11, "Sat", 2)  # Mountain Day
    assert day in CALENDAR.holidays
    assert hours_of(WARD, day) == []
    assert hours_of(CENTER, day) == [("09:00", "16:45")]


def test_the_year_end_closure_runs_from_12_29_to_01_03():
    assert hours_of(WARD, date(2026, 12, 28)) == [("08:45", "17:00")]
    for day in (date(2026, 12, 29), date(2026, 12, 31), date(2027, 1, 1), date(2027, 1, 2), date(2027, 1, 3)):
        assert hours_of(WARD, day) == hours_of(CENTER, day) == [], day
    assert CALENDAR.next_opening(WARD, tokyo(2027, 1, 1, 10)) == tokyo(2027, 1, 4, 8, 45)
    assert CALENDAR.next_opening(CENTER, tokyo(2026, 12, 28, 20)) == tokyo(2027, 1, 4, 11, 30)


def test_silver_week_2026():
    # Sat 19 Sep is a 3rd Saturday; Mon 21 and Tue 22 are holidays; Wed 23 too.
    at = tokyo(2026, 9, 19, 10)
    day_is(2026, 9, 19, "Sat", 3)
    assert CALENDAR.next_opening(CENTER, at) == tokyo(2026, 9, 21, 9, 0)
    assert CALENDAR.next_opening(WARD, at) == tokyo(2026, 9, 24, 8, 45)


# --- which offices serve a ward, and their next openings ---------------------


def test_offices_serving_a_ward_in_id_order():
    assert [o.office_id for o in CALENDAR.serving("nishi")] == ["nishi-ward-office", "special-center-yokohama"]
    assert [o.office_id for o in CALENDAR.serving("tsurumi")] == ["special-center-shin-yokohama", "tsurumi-ward-office"]
    assert CALENDAR.serving("atlantis") == []
    assert WARD.serves("nishi") and not WARD.serves("naka")
    assert WARD.serves(None)  # a card with no recorded ward


def test_every_ward_has_one_ward_office_and_one_special_center():
    wards = {w for o in CALENDAR.offices.values() for w in o.wards}
    assert len(wards) == 18
    for ward in wards:
        kinds = sorted(o.kind for o in CALENDAR.serving(ward))
        assert kinds == [OfficeKind.SPECIAL_CENTER, OfficeKind.WARD_OFFICE], ward


def test_next_openings_of_a_ward_earliest_first():
    # Wednesday evening: the ward office opens Thursday, the center Friday.
    openings = next_openings(CALENDAR, "nishi", tokyo(2026, 5, 13, 18))
    assert [(o.office_id, o.at) for o in openings] == [
        ("nishi-ward-office", tokyo(2026, 5, 14, 8, 45)),
        ("special-center-yokohama", tokyo(2026, 5, 15, 11, 30)),
    ]
    # An ordinary Sunday morning: the center is open now.
    sunday = tokyo(2026, 5, 10, 10)
    assert [o.office_id for o in next_openings(CALENDAR, "nishi", sunday)] == [
        "special-center-yokohama",
        "nishi-ward-office",
    ]
    assert next_openings(CALENDAR, "nishi", sunday)[0].at == sunday


def test_next_openings_without_a_ward_are_limited():
    openings = next_openings(CALENDAR, None, tokyo(2026, 6, 1, 10), limit=3)
    assert [o.office_id for o in openings] == ["aoba-ward-office", "asahi-ward-office", "hodogaya-ward-office"]
    assert next_openings(CALENDAR, "atlantis", tokyo(2026, 6, 1, 10)) == ()


# --- the rules of a day, on hand-built calendars -----------------------------

WEEKDAYS = frozenset({"mon", "tue", "wed", "thu", "fri"})


def office(hours, closures=()) -> Office:
    return Office("o", "Office", OfficeKind.SPECIAL_CENTER, frozenset({"w"}), tuple(hours), tuple(closures))


def test_week_of_month():
    assert [week_of_month(date(2026, 5, d)) for d in (1, 7, 8, 14, 15, 21, 22, 28, 29, 31)] == [
        1,
        1,
        2,
        2,
        3,
        3,
        4,
        4,
        5,
        5,
    ]


def test_a_closing_weekday_stays_closed_on_a_holiday():
    o = office([Hours(frozenset({"wed", "holiday"}), time(9), time(17))], [Closure(days=frozenset({"wed"}))])
    cal = Calendar({"o": o}, frozenset({date(2026, 4, 29)}))
    assert cal.intervals(o, date(2026, 4, 29)) == []


def test_a_holiday_uses_only_holiday_hours():
    holiday = date(2026, 11, 23)
    weekday_only = office([Hours(WEEKDAYS, time(9), time(17))])
    with_holiday = office([Hours(WEEKDAYS, time(9), time(17)), Hours(frozenset({"holiday"}), time(10), time(12))])
    cal = Calendar({}, frozenset({holiday}))
    assert cal.intervals(weekday_only, holiday) == []
    assert cal.intervals(with_holiday, holiday) == [(tokyo(2026, 11, 23, 10), tokyo(2026, 11, 23, 12))]
    assert Calendar({}).intervals(weekday_only, holiday) == [(tokyo(2026, 11, 23, 9), tokyo(2026, 11, 23, 17))]


def test_a_sunday_after_a_5th_saturday_falls_in_the_next_month():
    o = office([Hours(frozenset({"sat", "sun"}), time(9), time(17))], [Closure(nth_weekends=frozenset({5}))])
    cal = Calendar({"o": o})
    assert cal.intervals(o, day_is(2026, 1, 31, "Sat", 5)) == []
    assert cal.intervals(o, day_is(2026, 2, 1, "Sun", 1)) == []
    assert cal.intervals(o, day_is(2026, 2, 7, "Sat", 1)) != []


def test_next_opening_skips_a_lunch_break_and_gives_up_after_the_look_ahead():
    o = office([Hours(WEEKDAYS, time(9), time(12)), Hours(WEEKDAYS, time(13), time(17))])
    cal = Calendar({"o": o})
    assert not cal.is_open(o, tokyo(2026, 6, 1, 12, 30))
    assert cal.next_opening(o, tokyo(2026, 6, 1, 12, 30)) == tokyo(2026, 6, 1, 13)
    assert cal.next_opening(office([]), tokyo(2026, 6, 1)) is None


def test_the_holidays_computed_in_a_child_process_are_the_librarys_for_the_years_around_today():
    """config/offices.py asks a child interpreter (the library's 300 country
    modules stay out of the server): the same dates, 1 year behind to 3 ahead."""
    import holidays

    from pinlife.config.offices import japanese_holidays

    got = japanese_holidays(date(2026, 12, 7))
    assert got == frozenset(holidays.country_holidays("JP", years=range(2025, 2030)))
    assert date(2027, 1, 1) in got and date(2026, 11, 3) in got  # New Year's Day, Culture Day
