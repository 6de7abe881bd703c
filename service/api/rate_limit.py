"""The request-rate limit at the API gate (DESIGN.md §5): one token bucket
per terminal (service/domain/rate.py), its size and refill those of the
terminal's role ([rate] settings), checked after the caller is identified
and before anything else (authorization, the store, the writer), so a call
over its rate costs the write path nothing and appends no event.

Per instance and in memory: a dict lookup and a little arithmetic per call.
With N instances behind a balancer a terminal may get N times its rate
(docs/operations.md): configure the per-instance rate as the whole rate / N
where that matters.

A flood does not grow the service's own log either: the calls it refuses are
counted (pinlife_rate_limited_total{channel}), not logged one line each; a
terminal's refusals are written as one `rate_limited` line with their count,
at most once per `log_every` seconds per terminal."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING

import structlog

from ..domain.rate import Bucket, RateLimited, RatePolicy, take

if TYPE_CHECKING:
    from ..app.handlers import Caller
    from ..runtime.metrics import Metrics

log = structlog.get_logger()


class RateLimiter:
    """Admits a call, or raises RateLimited. `rates`: role (the caller's
    channel) to its policy; a role not there, or None, has no limit.
    `remember`: terminals kept before the idle ones are forgotten."""

    def __init__(
        self,
        rates: Mapping[str, RatePolicy | None],
        clock: Callable[[], float] = time.monotonic,
        metrics: Metrics | None = None,
        log_every: float = 60.0,
        remember: int = 10_000,
    ):
        self.rates = {role: policy for role, policy in rates.items() if policy is not None}
        self.clock = clock
        self.metrics = metrics
        self.log_every = log_every
        self.buckets: dict[str, Bucket] = {}
        self.remember = remember
        self._prune_at = remember
        # terminal -> (refusals not yet logged, when its last line was written)
        self._refused: dict[str, tuple[int, float]] = {}

    def admit(self, caller: Caller) -> None:
        policy = self.rates.get(caller.channel)
        if policy is None:
            return
        now = self.clock()
        terminal = caller.terminal_id
        bucket, wait = take(self.buckets.get(terminal), policy, now)
        self.buckets[terminal] = bucket
        if wait:
            self._refuse(caller, policy, now)
            raise RateLimited(terminal, caller.channel, policy, timedelta(seconds=wait))
        if len(self.buckets) > self._prune_at:
            self._prune(now)

    def _refuse(self, caller: Caller, policy: RatePolicy, now: float) -> None:
        if self.metrics is not None:
            self.metrics.rate_limited.labels(caller.channel).inc()
        unlogged, logged_at = self._refused.get(caller.terminal_id, (0, -self.log_every))
        if now - logged_at < self.log_every:
            self._refused[caller.terminal_id] = (unlogged + 1, logged_at)
            return
        self._refused[caller.terminal_id] = (0, now)
        log.warning(
            "rate_limited",
            terminal=caller.terminal_id,
            channel=caller.channel,
            rate=str(policy),
            refused=unlogged + 1,  # this one and those counted since the last line
        )

    def _prune(self, now: float) -> None:
        """Forget the terminals idle long enough for any role's bucket to
        have refilled (their next call finds a full bucket, as it would have)."""
        refill = max(policy.burst / policy.per_second for policy in self.rates.values())
        for terminal, bucket in list(self.buckets.items()):
            if now - bucket.at >= refill:
                del self.buckets[terminal]
                self._refused.pop(terminal, None)
        self._prune_at = max(self.remember, 2 * len(self.buckets))
