"""The procedures' configuration (TOML, named by PINLIFE_OFFICES_FILE; the
shipped default is service/config/offices.toml, the seed's Yokohama schedule):
offices with their hours, closures and wards; store kiosk hours and chains;
the validity of proxy inquiries and store reservations; the bounds on wrong
proxy codes per card and day and on suspensions per terminal and window
([procedures]: proxy_wrong_codes_per_day, suspensions_per_window,
suspension_window_minutes). Public holidays come
from the maintained `holidays` library, precomputed for the years around
now so the policy is a plain value."""

from __future__ import annotations

import tomllib
from datetime import date, time, timedelta
from pathlib import Path

import holidays

from service.domain.calendar import DAYS, HOLIDAY, Calendar, Closure, Hours, Office, OfficeKind
from service.domain.policy import Policy, StoreChain, ThrottlePolicy

DEFAULT_OFFICES_FILE = Path(__file__).with_name("offices.toml")
HOLIDAY_YEARS_BEHIND, HOLIDAY_YEARS_AHEAD = 1, 3


class OfficesConfigError(Exception):
    pass


def japanese_holidays(today: date) -> frozenset[date]:
    years = range(today.year - HOLIDAY_YEARS_BEHIND, today.year + HOLIDAY_YEARS_AHEAD + 1)
    return frozenset(holidays.country_holidays("JP", years=years))


def _time(where: str, value) -> time:
    try:
        return time.fromisoformat(value)
    except (TypeError, ValueError) as exc:
        raise OfficesConfigError(f"{where}: {value!r} is not a time HH:MM") from exc


def _positive(procedures: dict, name: str, default: int) -> int:
    value = procedures.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise OfficesConfigError(f"procedures.{name}: a whole number of at least 1, not {value!r}")
    return value


def _days(where: str, values, allowed) -> frozenset[str]:
    bad = [v for v in values if v not in allowed]
    if bad:
        raise OfficesConfigError(f"{where}: unknown day(s) {bad}; one of {sorted(allowed)}")
    return frozenset(values)


def _office(office_id: str, data: dict) -> Office:
    where = f"offices.{office_id}"
    kind = data.get("kind")
    if kind not in (OfficeKind.WARD_OFFICE, OfficeKind.SPECIAL_CENTER):
        raise OfficesConfigError(f"{where}.kind: ward_office or special_center")
    if not data.get("wards"):
        raise OfficesConfigError(f"{where}.wards: the wards it serves are required")
    hours = []
    for i, h in enumerate(data.get("hours", [])):
        w = f"{where}.hours[{i}]"
        opens, closes = _time(w + ".opens", h.get("opens")), _time(w + ".closes", h.get("closes"))
        if closes <= opens:
            raise OfficesConfigError(f"{w}: closes must be after opens")
        hours.append(Hours(_days(w + ".days", h.get("days", []), {*DAYS, HOLIDAY}), opens, closes, frozenset(h.get("weeks", []))))
    closures = tuple(
        Closure(
            _days(f"{where}.closures[{i}].days", c.get("days", []), set(DAYS)),
            frozenset(c.get("nth_weekends", [])),
            frozenset(c.get("dates", [])),
        )
        for i, c in enumerate(data.get("closures", []))
    )
    return Office(office_id, data.get("name", office_id), kind, frozenset(data["wards"]), tuple(hours), closures)


def load_policy(path: Path | None, throttle: ThrottlePolicy, today: date) -> Policy:
    path = path or DEFAULT_OFFICES_FILE
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError as exc:
        raise OfficesConfigError(f"offices file {path} does not exist") from exc
    except tomllib.TOMLDecodeError as exc:
        raise OfficesConfigError(f"offices file {path}: {exc}") from exc
    offices = {office_id: _office(office_id, o) for office_id, o in data.get("offices", {}).items()}
    procedures, stores = data.get("procedures", {}), data.get("stores", {})
    chains = {
        name: StoreChain(resets_user_certificate=bool(c.get("resets_user_certificate", False)))
        for name, c in data.get("chains", {}).items()
    }
    return Policy(
        throttle=throttle,
        calendar=Calendar(offices, japanese_holidays(today)),
        inquiry_validity=timedelta(days=int(procedures.get("inquiry_validity_days", 30))),
        inquiry_max_wrong_codes=int(procedures.get("inquiry_max_wrong_codes", 3)),
        inquiry_reissue_after=timedelta(minutes=int(procedures.get("inquiry_reissue_after_minutes", 60))),
        repeat_window=timedelta(minutes=int(procedures.get("repeat_window_minutes", 10))),
        reservation_validity=timedelta(hours=int(procedures.get("reservation_validity_hours", 24))),
        proxy_wrong_codes_per_day=_positive(procedures, "proxy_wrong_codes_per_day", 5),
        suspensions_per_window=_positive(procedures, "suspensions_per_window", 30),
        suspension_window=timedelta(minutes=_positive(procedures, "suspension_window_minutes", 60)),
        store_opens=_time("stores.opens", stores.get("opens", "06:30")),
        store_closes=_time("stores.closes", stores.get("closes", "23:00")),
        store_chains=chains,
    )
