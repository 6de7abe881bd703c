"""How every configuration file is read: the settings' tables
(settings.py), the access rules (access.py) and the offices file
(offices.py). A table is described by its fields, each a kind (what a value
must be, and its range) and a default; reading one refuses unknown keys by
name with the nearest known one, checks every value, and records every
problem rather than stopping at the first, each naming where it is
(`terminals.kiosk-01.revokd: unknown key (did you mean revoked?)`).

Hand-written rather than a validation library: msgspec stops at the first
error; pydantic reports them all, but its messages and locations would be
translated into this format anyway, it suggests no nearest key, and the
cross-file references (a terminal's office in the offices file) and the
settings' variables are ours either way. This module is that one model."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, time
from typing import Any

Kind = Callable[[Any], Any]  # a TOML value to the value it configures, or ValueError naming what is wrong

REQUIRED: Any = object()


class Problems:
    """The problems found so far, each `origin: where: what` (origin: the file)."""

    def __init__(self, origin: str = ""):
        self.origin = origin
        self.items: list[str] = []

    def add(self, where: str, message: str) -> None:
        self.items.append(": ".join(p for p in (self.origin, where, message) if p))

    def __bool__(self) -> bool:
        return bool(self.items)


@dataclass(frozen=True)
class Field:
    kind: Kind
    default: Any = REQUIRED


def nearest(name: str, known: Iterable[str]) -> str | None:
    """The known name closest to a mistyped one (None if none is close)."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return close[0] if close else None


def unknown(name: str, known: Iterable[str], noun: str = "key") -> str:
    """`unknown key (did you mean revoked?)`, or the known names when none is close."""
    known = sorted(known)
    guess = nearest(name, known)
    if guess is not None:
        return f"unknown {noun} (did you mean {guess}?)"
    return f"unknown {noun} (one of {', '.join(known)})" if known else f"unknown {noun} (none is expected here)"


def join(where: str, name: str | int) -> str:
    if isinstance(name, int):
        return f"{where}[{name}]"
    return f"{where}.{name}" if where else name


def read_table(
    problems: Problems, where: str, value: Any, fields: Mapping[str, Field], noun: str = "key"
) -> dict[str, Any] | None:
    """The table's values by field (defaults for those not given), or None
    if it is not a table or any of its values is wrong (each recorded)."""
    if not isinstance(value, dict):
        problems.add(where, f"must be a table, not {value!r}")
        return None
    before = len(problems.items)
    out: dict[str, Any] = {}
    for name in value:
        if name not in fields:
            problems.add(join(where, name), unknown(name, fields, noun))
    for name, f in fields.items():
        if name not in value:
            if f.default is REQUIRED:
                problems.add(join(where, name), "is required")
            else:
                out[name] = f.default
            continue
        try:
            out[name] = f.kind(value[name])
        except ValueError as exc:
            problems.add(join(where, name), str(exc))
    return out if len(problems.items) == before else None


def tables(problems: Problems, where: str, value: Any) -> dict[str, Any]:
    """A table of tables (`[terminals.*]`, `[offices.*]`): its entries ({} if it is not a table)."""
    if not isinstance(value, dict):
        problems.add(where, f"must be a table of [{where}.NAME] tables, not {value!r}")
        return {}
    return value


# -- kinds ---------------------------------------------------------------------------------


def integer(low: int, high: int) -> Kind:
    def kind(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
            raise ValueError(f"must be a whole number from {low:,} to {high:,}, not {v!r}")
        return v

    return kind


def boolean(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError(f"must be true or false, not {v!r}")
    return v


def string(v: Any) -> str:
    if not isinstance(v, str) or not v:
        raise ValueError(f"must be a non-empty string, not {v!r}")
    return v


def matching(pattern: re.Pattern[str], rule: str) -> Kind:
    def kind(v: Any) -> str:
        if not isinstance(v, str) or not pattern.fullmatch(v):
            raise ValueError(f"must be {rule}, not {v!r}")
        return v

    return kind


def one_of(*allowed: str) -> Kind:
    def kind(v: Any) -> str:
        if v not in allowed:
            guess = nearest(v, allowed) if isinstance(v, str) else None
            hint = f" (did you mean {guess}?)" if guess else ""
            raise ValueError(f"must be one of {', '.join(allowed)}, not {v!r}{hint}")
        return str(v)

    return kind


def time_of_day(v: Any) -> time:
    if not isinstance(v, str) or not re.fullmatch(r"\d\d:\d\d", v):
        raise ValueError(f"must be a time HH:MM, not {v!r}")
    try:
        return time.fromisoformat(v)
    except ValueError:
        raise ValueError(f"must be a time HH:MM, not {v!r}") from None


def month_day(v: Any) -> str:
    """`MM-DD`, a day of some year (02-29 included)."""
    try:
        if not isinstance(v, str) or not re.fullmatch(r"\d\d-\d\d", v):
            raise ValueError
        date(2000, int(v[:2]), int(v[3:]))
    except ValueError:
        raise ValueError(f"must be a date MM-DD, not {v!r}") from None
    return v


def list_of(item: Kind, *, nonempty: bool = False) -> Kind:
    """A list of distinct items, as a frozenset; each wrong item named."""

    def kind(v: Any) -> frozenset[Any]:
        if not isinstance(v, list):
            raise ValueError(f"must be a list, not {v!r}")
        if nonempty and not v:
            raise ValueError("must not be empty")
        wrong = []
        for x in v:
            try:
                item(x)
            except ValueError as exc:
                wrong.append(str(exc))
        if wrong:
            raise ValueError("; ".join(dict.fromkeys(f"each {w}" for w in wrong)))
        if len(set(v)) != len(v):
            raise ValueError(f"lists {sorted({x for x in v if v.count(x) > 1})} more than once")
        return frozenset(v)

    return kind


def table_list(v: Any) -> list[Any]:
    """An array of tables (hours = [{...}, ...]), each read by its caller."""
    if not isinstance(v, list):
        raise ValueError(f"must be a list of tables, not {v!r}")
    return v
