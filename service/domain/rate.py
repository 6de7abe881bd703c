"""Request rates (DESIGN.md §5): every terminal has a request-rate limit per
role, a token bucket, so the events one terminal can cause per hour have an
upper bound (docs/security.md, "Events per terminal per hour").

A bucket holds up to `burst` tokens and refills at `per_second`; a call
takes one token, or is refused (RateLimited: RESOURCE_EXHAUSTED with the
delay until a token is back) and appends nothing. Over any interval of t
seconds a terminal is admitted at most burst + per_second * t calls.

Written here rather than taken from a library: the rule is a few lines of
arithmetic, and the maintained rate-limit libraries (limits, pyrate-limiter)
read a clock and keep their own storage, where this is a pure function of
the bucket and the time passed in (tests need no clock; the API gate keeps
one bucket per terminal in a dict: service/api/rate_limit.py).

Pure: the caller passes the time in (seconds on a monotonic clock)."""

from __future__ import annotations

import math
import re
from datetime import timedelta
from typing import Any, NamedTuple

from .access import Role
from .errors import DomainError

# The most events one admitted call can append (counted from the deciders and
# the handlers; tests/unit/test_rate.py holds each RPC's worst case to it):
# two on the card (a failed try and the lock it causes; a rejected proxy code
# and the void; a proving PIN and the reservation or the reset; a superseded
# inquiry and the new one), and one on the terminal (the TerminalThrottled
# that a failure may start, or a refusal, AccessDenied, CounterOutOfService,
# or an auditor's AuditRead). A refused (rate-limited or throttled) call
# appends nothing.
MAX_EVENTS_PER_CALL = 3


class RatePolicy(NamedTuple):
    """A role's limit: `burst` calls at once, refilled at `per_second`."""

    per_second: float
    burst: int

    @property
    def per_hour(self) -> float:
        return self.per_second * 3600

    def calls_per_hour(self) -> int:
        """The most calls a terminal is admitted in any hour: the full
        bucket, then the refill."""
        return self.burst + math.floor(self.per_hour)

    def events_per_hour(self) -> int:
        """The most events a terminal can append in any hour (per instance)."""
        return self.calls_per_hour() * MAX_EVENTS_PER_CALL

    def __str__(self) -> str:
        per_minute = self.per_second * 60
        return f"{per_minute:g}/min burst {self.burst}"


# Defaults per role: what a person at such a terminal does, with room to
# spare (docs/operations.md, "Request rates"). None: no limit. Development
# mode is off: there the terminal names itself in a header, so a per-terminal
# limit bounds nothing (and the benchmark drives thousands of calls a second
# from it); it can be set, as the tests do.
DEFAULT_RATES: dict[Role, RatePolicy | None] = {
    Role.MEDICAL_READER: RatePolicy(12 / 60, 20),  # a patient every 5 s at reception, all day
    Role.SELF_SERVICE: RatePolicy(6 / 60, 10),  # a holder at a kiosk: status, verify, change
    Role.SMARTPHONE_APP: RatePolicy(6 / 60, 10),  # one holder's phone (one certificate per device)
    Role.CONVENIENCE_STORE: RatePolicy(6 / 60, 10),  # a store kiosk: status, then a reset, per customer
    Role.WARD_OFFICE: RatePolicy(30 / 60, 30),  # a clerk: enrolment, status, procedures, several calls per visitor
    Role.SPECIAL_CENTER: RatePolicy(30 / 60, 30),
    Role.CALL_CENTER: RatePolicy(6 / 60, 10),  # a person taking lost-card calls: one suspension per call
    Role.AUDITOR: RatePolicy(60 / 60, 60),  # a reviewer's tool paging through histories
    Role.DEVELOPMENT: None,
}

_UNITS = {"s": 1.0, "sec": 1.0, "min": 60.0, "h": 3600.0}
_RATE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*/\s*(s|sec|min|h)\s+burst\s+(\d+)\s*")
OFF = "off"
RATE_FORMAT = '"N/s|min|h burst B" (e.g. "12/min burst 20") or "off"'


def parse_rate(text: str) -> RatePolicy | None:
    """A rate as configured: "12/min burst 20", "2/s burst 5", "off" (no
    limit). ValueError saying what is wrong."""
    if text.strip().lower() == OFF:
        return None
    m = _RATE.fullmatch(text)
    if m is None:
        raise ValueError(f"must be {RATE_FORMAT}, not {text!r}")
    count, unit, burst = float(m.group(1)), m.group(2), int(m.group(3))
    if count <= 0 or burst < 1:
        raise ValueError(f"needs a positive rate and a burst of at least 1, not {text!r}")
    return RatePolicy(count / _UNITS[unit], burst)


def format_rate(policy: RatePolicy | None) -> str:
    return OFF if policy is None else str(policy)


class Bucket(NamedTuple):
    """A terminal's bucket: its tokens at `at` (seconds, monotonic)."""

    tokens: float
    at: float


def take(bucket: Bucket | None, policy: RatePolicy, now: float) -> tuple[Bucket, float]:
    """Take a token for a call at `now`. Returns the bucket after, and 0.0
    when the call is admitted, else the seconds until a token is back (the
    bucket is then only refilled to now: a refused call costs nothing).
    A terminal's first call finds its bucket full."""
    if bucket is None:
        return Bucket(policy.burst - 1.0, now), 0.0
    tokens = bucket.tokens + (now - bucket.at) * policy.per_second if now > bucket.at else bucket.tokens
    if tokens > policy.burst:
        tokens = float(policy.burst)
    if tokens >= 1.0:
        return Bucket(tokens - 1.0, max(now, bucket.at)), 0.0
    return Bucket(tokens, max(now, bucket.at)), (1.0 - tokens) / policy.per_second


class RateLimited(DomainError):
    """A call over its terminal's request rate: refused before any work."""

    def __init__(self, terminal_id: str, role: str, policy: RatePolicy, retry_after: timedelta):
        self.terminal_id = terminal_id
        self.role = role
        self.policy = policy
        self.retry_after = retry_after
        super().__init__(
            f"terminal {terminal_id} is over the request rate of its role {role} ({policy}); nothing was done: "
            f"retry in {retry_after.total_seconds():.3g} s"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (RateLimited, (self.terminal_id, self.role, self.policy, self.retry_after))
