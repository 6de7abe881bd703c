"""The service clock: the occurred-at of every event and the "now" of every
rule. One picklable value, so the writer process keeps the same time as the
server. Outside production it can be moved (DESIGN.md §2: demos, staff
training, acceptance runs against a fixed date); production refuses that
(service/config/settings.py). Tests may pass any callable returning an aware
datetime to the thread writer.

PINLIFE_CLOCK:
    system                       the system clock (the default; the only one in production)
    start:2026-12-12T10:00+09:00 starts at that instant when the server starts, then runs
    shift:-86400                 the system clock moved by that many seconds
    fixed:2026-12-12T10:00+09:00 stands still at that instant
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

Clock = Callable[[], datetime]


class ClockSettingError(ValueError):
    pass


@dataclass(frozen=True)
class ServiceClock:
    offset: timedelta = timedelta(0)  # added to the system clock
    fixed: datetime | None = None  # stands still here, if set

    def __call__(self) -> datetime:
        if self.fixed is not None:
            return self.fixed
        return datetime.now(UTC) + self.offset

    @property
    def is_system(self) -> bool:
        return self.fixed is None and not self.offset

    @classmethod
    def parse(cls, setting: str) -> ServiceClock:
        """A clock from its PINLIFE_CLOCK setting."""
        kind, _, value = setting.strip().partition(":")
        try:
            if kind in ("", "system") and not value:
                return cls()
            if kind == "shift":
                clock = cls(offset=timedelta(seconds=float(value)))
                clock()  # an instant past year 9999 (or before year 1) is refused now, not at the first call
                return clock
            if kind in ("start", "fixed"):
                at = datetime.fromisoformat(value)
                if at.tzinfo is None:
                    raise ClockSettingError(f"{setting!r}: give the instant with its UTC offset, e.g. +09:00")
                at = at.astimezone(UTC)
                return cls(fixed=at) if kind == "fixed" else cls(offset=at - datetime.now(UTC))
        except OverflowError:
            raise ClockSettingError(f"{setting!r}: the clock would be out of range (years 1 to 9999)") from None
        except ValueError as exc:
            if isinstance(exc, ClockSettingError):
                raise
            raise ClockSettingError(f"{setting!r}: {exc}") from exc
        raise ClockSettingError(f"{setting!r}: one of system, start:<instant>, shift:<seconds>, fixed:<instant>")


system_clock = ServiceClock()
