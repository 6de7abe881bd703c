"""Terminal throttling (DESIGN.md §5): a terminal that fails on many distinct
cards within a window (a compromised reader enumerating cards) is refused for
a while. It throttles the terminal, never a card: a holder's PINs still
follow only their own retry rule.

The window is a value (TerminalWindow) kept with the terminal's stream head
and decided inside the write transaction (service/app/handlers.py), which
writes it only over the row as it read it (else the transaction is retried
with the row locked: service/store/unit_of_work.py), so the bound holds
whatever the concurrency and across service instances: at most
`max_distinct_cards` + 1 cards fail before the terminal is refused.

Pure: the caller passes the time in."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from .errors import DomainError
from .events import CardSuspended, CounterOutOfService, Event, RefusalReason
from .outcomes import CheckOutcome, CheckResult, ProxyCompletion, ProxyResult
from .policy import Policy, ThrottlePolicy
from .state import EMPTY

# What counts as a failure on a card: a wrong PIN, an attempt against a locked
# PIN, a wrong proxy code (also the one that voids the inquiry), a counter's
# refusal for a ward it does not serve (is_probe), and (counted by the
# caller, as it is an error) an unknown card, also when a status read asks
# for it.
FAILED_RESULTS = (CheckResult.WRONG_PIN, CheckResult.LOCKED)
FAILED_PROXY_RESULTS = (ProxyResult.WRONG_CODE, ProxyResult.VOIDED)


def is_failure(outcome: object) -> bool:
    """A failed check: a PIN of a verify or change, the proving PIN of a
    store reset, or a proxy inquiry's code."""
    if isinstance(outcome, ProxyCompletion):
        return outcome.result in FAILED_PROXY_RESULTS
    check = outcome if isinstance(outcome, CheckOutcome) else getattr(outcome, "check", None)
    return isinstance(check, CheckOutcome) and check.result in FAILED_RESULTS


def is_probe(refusals: tuple[Event, ...]) -> bool:
    """A counter refused for a card of a ward its office does not serve: the
    answer proves the card exists and names its ward, so it counts as a
    failure on that card, as an unknown card does."""
    return any(isinstance(e, CounterOutOfService) and e.reason is RefusalReason.OUT_OF_JURISDICTION for e in refusals)


class Throttled(DomainError):
    def __init__(self, terminal_id: str, retry_after: timedelta):
        self.terminal_id = terminal_id
        self.retry_after = retry_after
        super().__init__(
            f"terminal {terminal_id} is throttled after failures on many cards; retry in "
            f"{max(1, int(retry_after.total_seconds()))} s"
        )

    def __reduce__(self) -> tuple[Any, ...]:  # crosses from the writer process
        return (Throttled, (self.terminal_id, self.retry_after))


class TerminalWindow(NamedTuple):
    """A terminal's recent failures: the last failure time of each distinct
    card (so its size stays at most max_distinct_cards + 1), and the end of
    its throttle, if any; and the times of its suspensions within the
    suspension window (at most policy.suspensions_per_window: the bound,
    guards.suspension_free_at). Kept in one row value (store/projection.py
    window_to_row), so whatever authenticates the row covers them all."""

    last_failure: Mapping[str, datetime] = EMPTY
    throttled_until: datetime | None = None
    suspensions: tuple[datetime, ...] = ()


def check(window: TerminalWindow, terminal_id: str, now: datetime) -> None:
    """Raises Throttled while the terminal is throttled."""
    if window.throttled_until is not None and now < window.throttled_until:
        raise Throttled(terminal_id, window.throttled_until - now)


def record_failure(
    window: TerminalWindow, card_id: str, now: datetime, policy: ThrottlePolicy
) -> tuple[TerminalWindow, int | None]:
    """Count a failed check on a card. Returns the new window, and the number
    of distinct cards when this failure starts a throttle (to be recorded)."""
    since = now - policy.window
    recent = {c: at for c, at in window.last_failure.items() if at > since}
    recent[card_id] = now
    if len(recent) > policy.max_distinct_cards and (window.throttled_until is None or now >= window.throttled_until):
        return window._replace(last_failure=EMPTY, throttled_until=now + policy.penalty), len(recent)
    return window._replace(last_failure=recent), None


def record_suspensions(window: TerminalWindow, events: tuple[Event, ...], now: datetime, policy: Policy) -> TerminalWindow | None:
    """The window after a command whose card events are `events`, if it
    suspended a card (None: unchanged). It keeps only the suspensions still
    within the window: the bound's decision (guards.suspension_free_at)
    needs no more, so the value stays small."""
    if not any(type(e) is CardSuspended for e in events):
        return None
    since = now - policy.suspension_window
    recent = tuple(at for at in window.suspensions if at > since) + (now,)
    return window._replace(suspensions=recent[-policy.suspensions_per_window :])
