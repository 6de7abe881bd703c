"""What the rules take from configuration, in one value passed to `decide`
and to the app (never read from a global): office calendars, the validity of
proxy inquiries and store reservations, the convenience-store chains' rules
and kiosk hours, the terminal throttle, the bounds on wrong proxy codes
per card and day and on suspensions per terminal and window. The composition root builds it from
configuration (service/config/offices.py, service/config/access.py); it crosses into
the writer process as a value.

The retry limits are not here: they are the law's table (pins.py), not a
setting, and the stored projection's remaining tries are computed from them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import time, timedelta

from .calendar import Calendar


@dataclass(frozen=True)
class ThrottlePolicy:
    """Terminal throttling (rule: throttle.py)."""

    max_distinct_cards: int = 10  # failures on more distinct cards than this ...
    window: timedelta = timedelta(minutes=10)  # ... within this window ...
    penalty: timedelta = timedelta(minutes=15)  # ... refuse the terminal this long


@dataclass(frozen=True)
class StoreChain:
    """A convenience-store chain's kiosks."""

    resets_user_certificate: bool = False  # also reset the user-certificate PIN by proving the signature PIN


@dataclass(frozen=True)
class Policy:
    throttle: ThrottlePolicy = field(default_factory=ThrottlePolicy)
    calendar: Calendar = field(default_factory=lambda: Calendar({}))
    # The published pages give no validity for a proxy inquiry: 30 days lets
    # the form travel by post both ways (docs/procedures.md).
    inquiry_validity: timedelta = timedelta(days=30)
    inquiry_max_wrong_codes: int = 3  # the inquiry is voided at this many wrong codes
    # A card and PIN type take at most this many wrong proxy codes per Tokyo
    # day, across inquiries (re-issuing one does not start a new count):
    # beyond, a completion is refused without checking its code.
    proxy_wrong_codes_per_day: int = 5
    # Suspensions one terminal (the call centre's, a counter's) may make per
    # window: a person taking lost-card calls makes a few an hour, so 30 an
    # hour is well above any real caller's pace (docs/procedures.md).
    suspensions_per_window: int = 30
    suspension_window: timedelta = timedelta(hours=1)
    # A new inquiry for a PIN whose open one was issued less than this ago is
    # refused (one form in the post at a time; guards.inquiry_reissue_refused).
    inquiry_reissue_after: timedelta = timedelta(hours=1)
    reservation_validity: timedelta = timedelta(hours=24)
    store_opens: time = time(6, 30)  # kiosk hours, Asia/Tokyo
    store_closes: time = time(23, 0)
    store_chains: dict[str, StoreChain] = field(default_factory=dict)  # unknown chain: the default rules
    # A request id's answer is replayed to retries this long; after, the id is
    # refused as reused (and the kept answer is pruned).
    replay_window: timedelta = timedelta(hours=24)
    # Repeated refusals and attempts of one terminal are recorded once per
    # key and window, with a count (service/domain/repeats.py).
    repeat_window: timedelta = timedelta(minutes=10)

    def chain(self, chain_id: str | None) -> StoreChain:
        return self.store_chains.get(chain_id or "", StoreChain())
