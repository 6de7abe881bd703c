"""What the rules take from configuration, in one value passed to `decide`
and to the app (never read from a global): the terminal throttle today;
office calendars, inquiry and reservation validity and per-chain store rules
as the procedures that need them arrive.

The retry limits are not here: they are the law's table (pins.py), not a
setting, and the stored projection's remaining tries are computed from them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta


@dataclass(frozen=True)
class ThrottlePolicy:
    """Terminal throttling (rule: throttle.py)."""

    max_distinct_cards: int = 10  # failures on more distinct cards than this ...
    window: timedelta = timedelta(minutes=10)  # ... within this window ...
    penalty: timedelta = timedelta(minutes=15)  # ... refuse the terminal this long


@dataclass(frozen=True)
class Policy:
    throttle: ThrottlePolicy = field(default_factory=ThrottlePolicy)
