"""Terminal throttling (DESIGN.md §5): a terminal that fails on many distinct
cards within a window (a compromised reader enumerating cards) is refused for
a while. It throttles the terminal, never a card: a holder's PINs still
follow only their own retry rule.

Pure: the caller passes the time in."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from service.domain.decide import CheckOutcome, CheckResult
from service.domain.errors import DomainError
from service.domain.policy import ThrottlePolicy

# What counts as a failure on a card: a wrong PIN, an attempt against a locked
# PIN, and (counted by the caller, as it is an error) an unknown card.
FAILED_RESULTS = (CheckResult.WRONG_PIN, CheckResult.LOCKED)


def is_failure(outcome: object) -> bool:
    """A failed PIN check: of a verify or change, or the proving PIN of a store reset."""
    check = outcome if isinstance(outcome, CheckOutcome) else getattr(outcome, "check", None)
    return isinstance(check, CheckOutcome) and check.result in FAILED_RESULTS


class Throttled(DomainError):
    def __init__(self, terminal_id: str, retry_after: timedelta):
        self.retry_after = retry_after
        super().__init__(
            f"terminal {terminal_id} is throttled after failures on many cards; retry in "
            f"{max(1, int(retry_after.total_seconds()))} s"
        )


@dataclass
class _TerminalWindow:
    failures: deque = field(default_factory=deque)  # (at, card_id), oldest first
    throttled_until: datetime | None = None


class FailureTracker:
    """Per-terminal sliding window of failed PIN checks by card."""

    def __init__(self, policy: ThrottlePolicy):
        self.policy = policy
        self._terminals: dict[str, _TerminalWindow] = {}

    def check(self, terminal_id: str, now: datetime) -> None:
        """Raises Throttled while the terminal is throttled."""
        w = self._terminals.get(terminal_id)
        if w is not None and w.throttled_until is not None and now < w.throttled_until:
            raise Throttled(terminal_id, w.throttled_until - now)

    def record_failure(self, terminal_id: str, card_id: str, now: datetime) -> int | None:
        """Count a failed check. Returns the number of distinct cards when
        this failure starts a throttle (to be recorded), else None."""
        w = self._terminals.setdefault(terminal_id, _TerminalWindow())
        w.failures.append((now, card_id))
        while w.failures and w.failures[0][0] <= now - self.policy.window:
            w.failures.popleft()
        distinct = len({card for _, card in w.failures})
        if distinct > self.policy.max_distinct_cards and (w.throttled_until is None or now >= w.throttled_until):
            w.throttled_until = now + self.policy.penalty
            w.failures.clear()
            return distinct
        return None

    def throttled_until(self, terminal_id: str) -> datetime | None:
        w = self._terminals.get(terminal_id)
        return w.throttled_until if w else None
