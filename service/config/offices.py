"""The procedures' configuration (TOML, named by PINLIFE_OFFICES_FILE; the
shipped default is service/config/offices.toml, the seed's Yokohama schedule):
offices with their hours, closures and wards; store kiosk hours and chains;
the validity of proxy inquiries and store reservations; the bounds on wrong
proxy codes per card and day and on suspensions per terminal and window
([procedures]: proxy_wrong_codes_per_day, suspensions_per_window,
suspension_window_minutes). Public holidays come
from the maintained `holidays` library, precomputed for the years around
now so the policy is a plain value (in a short-lived child process: see
japanese_holidays).

Read as strictly as the settings (service/config/schema.py): an unknown
section or key is refused by name with the nearest known one, every number
has its range, an office's wards are ids and a special center's are served
by some ward office of the file (when it has ward offices), and every
problem is reported at once (OfficesConfigError.problems)."""

from __future__ import annotations

import functools
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from ..domain.calendar import DAYS, HOLIDAY, Calendar, Closure, Hours, Office, OfficeKind
from ..domain.policy import Policy, StoreChain, ThrottlePolicy
from ..domain.streams import TERMINAL_ID
from .schema import (
    Field,
    Problems,
    boolean,
    integer,
    join,
    list_of,
    matching,
    month_day,
    one_of,
    read_table,
    string,
    table_list,
    tables,
    time_of_day,
    unknown,
)
from .settings import ConfigError

DEFAULT_OFFICES_FILE = Path(__file__).with_name("offices.toml")
HOLIDAY_YEARS_BEHIND, HOLIDAY_YEARS_AHEAD = 1, 3
ID_RULE = "an id (1 to 64 of A-Z a-z 0-9 . _ -)"
an_id = matching(TERMINAL_ID, ID_RULE)  # office, chain and ward ids: as terminal ids

SECTIONS = ("procedures", "stores", "chains", "offices")
PROCEDURES = {
    "inquiry_validity_days": Field(integer(1, 366), 30),
    "inquiry_max_wrong_codes": Field(integer(1, 100), 3),
    "inquiry_reissue_after_minutes": Field(integer(0, 43_200), 60),
    "repeat_window_minutes": Field(integer(1, 1_440), 10),
    "reservation_validity_hours": Field(integer(1, 720), 24),
    "proxy_wrong_codes_per_day": Field(integer(1, 1_000), 5),
    "suspensions_per_window": Field(integer(1, 100_000), 30),
    "suspension_window_minutes": Field(integer(1, 10_080), 60),
}
STORES = {"opens": Field(time_of_day, time_of_day("06:30")), "closes": Field(time_of_day, time_of_day("23:00"))}
CHAIN = {"resets_user_certificate": Field(boolean, False)}
OFFICE = {
    "name": Field(string, None),
    "kind": Field(one_of(OfficeKind.WARD_OFFICE, OfficeKind.SPECIAL_CENTER)),
    "wards": Field(list_of(an_id, nonempty=True)),
    "hours": Field(table_list, []),
    "closures": Field(table_list, []),
}
HOURS = {
    "days": Field(list_of(one_of(*DAYS, HOLIDAY), nonempty=True)),
    "opens": Field(time_of_day),
    "closes": Field(time_of_day),
    "weeks": Field(list_of(integer(1, 5)), frozenset()),
}
CLOSURE = {
    "days": Field(list_of(one_of(*DAYS)), frozenset()),
    "nth_weekends": Field(list_of(integer(1, 5)), frozenset()),
    "dates": Field(list_of(month_day), frozenset()),
}


@dataclass(frozen=True)
class OfficeIds:
    """The offices and chains a file names, which the access rules refer to."""

    path: Path
    offices: frozenset[str]
    chains: frozenset[str]


class OfficesConfigError(ConfigError):
    """Every problem of the offices file, each naming where it is; `ids`:
    the offices and chains it names all the same, for the access rules'
    references to be checked with its own problems (None: unreadable)."""

    def __init__(self, problems: list[str] | str, ids: OfficeIds | None = None):
        super().__init__(problems)
        self.ids = ids


@dataclass(frozen=True)
class OfficesConfig:
    """The offices file, read and checked (the policy is made from it with the day's holidays)."""

    path: Path
    offices: dict[str, Office]
    chains: dict[str, StoreChain]
    procedures: dict[str, Any]
    stores: dict[str, Any]

    @property
    def ids(self) -> OfficeIds:
        return OfficeIds(self.path, frozenset(self.offices), frozenset(self.chains))

    def policy(self, throttle: ThrottlePolicy, today: date) -> Policy:
        p = self.procedures
        return Policy(
            throttle=throttle,
            calendar=Calendar(self.offices, japanese_holidays(today)),
            inquiry_validity=timedelta(days=p["inquiry_validity_days"]),
            inquiry_max_wrong_codes=p["inquiry_max_wrong_codes"],
            inquiry_reissue_after=timedelta(minutes=p["inquiry_reissue_after_minutes"]),
            repeat_window=timedelta(minutes=p["repeat_window_minutes"]),
            reservation_validity=timedelta(hours=p["reservation_validity_hours"]),
            proxy_wrong_codes_per_day=p["proxy_wrong_codes_per_day"],
            suspensions_per_window=p["suspensions_per_window"],
            suspension_window=timedelta(minutes=p["suspension_window_minutes"]),
            store_opens=self.stores["opens"],
            store_closes=self.stores["closes"],
            store_chains=self.chains,
        )


def japanese_holidays(today: date) -> frozenset[date]:
    return _holidays_of(today.year - HOLIDAY_YEARS_BEHIND, today.year + HOLIDAY_YEARS_AHEAD)


# The library imports the modules of every country it knows (about 300,
# some 15 MB resident that a server would keep for its whole life) to give
# a few dozen dates: they are computed in a child interpreter, once per
# range of years and process, and only the dates come back.
_HOLIDAYS = (
    "import sys, holidays; print(*sorted(holidays.country_holidays('JP', years=range(int(sys.argv[1]), int(sys.argv[2]) + 1))))"
)


@functools.cache
def _holidays_of(first_year: int, last_year: int) -> frozenset[date]:
    done = subprocess.run(
        [sys.executable, "-c", _HOLIDAYS, str(first_year), str(last_year)], capture_output=True, text=True, timeout=60
    )
    if done.returncode != 0:
        raise RuntimeError(f"the public holidays of Japan could not be computed: {done.stderr.strip().splitlines()[-1:]}")
    return frozenset(date.fromisoformat(day) for day in done.stdout.split())


def _office(problems: Problems, office_id: str, data: Any) -> Office | None:
    where = f"offices.{office_id}"
    o = read_table(problems, where, data, OFFICE)
    hours: list[Hours] = []
    for i, h in enumerate(_entries(data, "hours")):
        w = join(join(where, "hours"), i)
        if (v := read_table(problems, w, h, HOURS)) is None:
            continue
        if v["closes"] <= v["opens"]:
            problems.add(w, f"closes ({v['closes']:%H:%M}) must be after opens ({v['opens']:%H:%M})")
            continue
        hours.append(Hours(v["days"], v["opens"], v["closes"], v["weeks"]))
    closures: list[Closure] = []
    for i, c in enumerate(_entries(data, "closures")):
        w = join(join(where, "closures"), i)
        if (v := read_table(problems, w, c, CLOSURE)) is None:
            continue
        if not (v["days"] or v["nth_weekends"] or v["dates"]):
            problems.add(w, "closes nothing: give days, nth_weekends or dates")
            continue
        closures.append(Closure(v["days"], v["nth_weekends"], v["dates"]))
    if o is None:
        return None
    return Office(office_id, o["name"] or office_id, o["kind"], o["wards"], tuple(hours), tuple(closures))


def _entries(data: Any, name: str) -> list[Any]:
    """An office's list of tables, to read each (a value that is not a list is reported by read_table)."""
    value = data.get(name, []) if isinstance(data, dict) else []
    return value if isinstance(value, list) else []


def parse_offices(data: dict[str, Any], path: Path, origin: str) -> OfficesConfig:
    """The offices file from its TOML tables; OfficesConfigError lists every problem."""
    problems = Problems(origin)
    for name in data:
        if name not in SECTIONS:
            problems.add(name, unknown(name, SECTIONS, "section"))
    procedures = read_table(problems, "procedures", data.get("procedures", {}), PROCEDURES)
    stores = read_table(problems, "stores", data.get("stores", {}), STORES)
    if stores is not None and stores["closes"] <= stores["opens"]:
        problems.add("stores", f"closes ({stores['closes']:%H:%M}) must be after opens ({stores['opens']:%H:%M})")
    chains: dict[str, StoreChain] = {}
    for chain_id, c in tables(problems, "chains", data.get("chains", {})).items():
        where = f"chains.{chain_id}"
        if not TERMINAL_ID.fullmatch(chain_id):
            problems.add(where, f"the chain id must be {ID_RULE}")
        if (v := read_table(problems, where, c, CHAIN)) is not None:
            chains[chain_id] = StoreChain(resets_user_certificate=v["resets_user_certificate"])
    offices: dict[str, Office] = {}
    for office_id, o in tables(problems, "offices", data.get("offices", {})).items():
        if not TERMINAL_ID.fullmatch(office_id):
            problems.add(f"offices.{office_id}", f"the office id must be {ID_RULE}")
        if (office := _office(problems, office_id, o)) is not None:
            offices[office_id] = office
    # Wards are ids of the city's own, referred to by enrolments: a special
    # center's ward that no ward office serves is most likely a typo.
    by_ward_office = {w for o in offices.values() if o.kind == OfficeKind.WARD_OFFICE for w in o.wards}
    if by_ward_office:
        for o in offices.values():
            if o.kind == OfficeKind.SPECIAL_CENTER and (stray := sorted(o.wards - by_ward_office)):
                problems.add(
                    f"offices.{o.office_id}.wards",
                    f"{', '.join(stray)}: no ward office of this file serves it (a typo? wards served: "
                    f"{', '.join(sorted(by_ward_office))})",
                )
    if problems or procedures is None or stores is None:
        named = {name: set(v) if isinstance(v := data.get(name, {}), dict) else set() for name in ("offices", "chains")}
        raise OfficesConfigError(problems.items, OfficeIds(path, frozenset(named["offices"]), frozenset(named["chains"])))
    return OfficesConfig(path, offices, chains, procedures, stores)


def read_toml(path: Path, what: str, error: type[ConfigError]) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{what} {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{what} {path}: cannot read it: {getattr(exc, 'strerror', None) or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{what} {path} is not valid TOML: {exc}") from None


def load_offices(path: Path | None) -> OfficesConfig:
    """The offices file (None: the shipped one), checked."""
    path = path or DEFAULT_OFFICES_FILE
    return parse_offices(read_toml(path, "offices file", OfficesConfigError), path, f"offices file {path}")


def load_policy(path: Path | None, throttle: ThrottlePolicy, today: date) -> Policy:
    return load_offices(path).policy(throttle, today)
