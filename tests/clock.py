"""The one test clock: the service clock as a test moves it (any callable
returning an aware datetime serves as the service clock with the thread
writer; the writer process takes a ServiceClock, fixed or started)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

T0 = datetime(2026, 4, 1, 9, 30, 15, 123456, tzinfo=UTC)


class FakeClock:
    """Returns `now` until the test moves it."""

    def __init__(self, now: datetime = T0):
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, by: timedelta | None = None, **delta: float) -> datetime:
        """Move on by `by`, or by the keyword arguments of a timedelta (1 second with neither)."""
        self.now += by if by is not None else timedelta(**(delta or {"seconds": 1}))
        return self.now
