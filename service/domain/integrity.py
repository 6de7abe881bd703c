"""What an integrity check of the store reports (service/store/check.py
runs it; `pinlife check` prints it; AuditService.VerifyIntegrity answers
with it): every problem a database-level attacker could leave, each named by
stream, version and position where it has one."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from .chain import BrokenLink


@dataclass
class Report:
    events: int = 0  # rows in the log (of the card's stream for one card)
    cards: int = 0
    head_position: int = 0
    first_broken_link: BrokenLink | None = None
    cards_failing_mac: list[str] = field(default_factory=list)
    cards_failing_mac_count: int = 0
    # terminal streams ("terminal:<id>") whose row (throttle state, head) fails its MAC
    terminals_failing_mac: list[str] = field(default_factory=list)
    terminals_failing_mac_count: int = 0
    projection_mismatches: list[str] = field(default_factory=list)
    projection_mismatch_count: int = 0
    first_unlawful: dict[str, Any] | None = None
    stored_checkpoints: int = 0
    supplied_checkpoints: int = 0
    checkpoint_problem: dict[str, Any] | None = None
    supplied_checkpoint_problem: dict[str, Any] | None = None
    first_unreadable: dict[str, Any] | None = None  # a stored event this release cannot read (the first by position)
    unreadable_count: int = 0
    # A stream stepping back in time by more than the tolerated clock skew
    # ([audit] clock_skew_seconds): reported, not a problem of integrity.
    first_clock_step: dict[str, Any] | None = None
    clock_steps: int = 0

    @property
    def intact(self) -> bool:
        return not (
            self.first_broken_link
            or self.cards_failing_mac_count
            or self.terminals_failing_mac_count
            or self.projection_mismatch_count
            or self.first_unlawful
            or self.checkpoint_problem
            or self.supplied_checkpoint_problem
            or self.unreadable_count
        )

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "intact": self.intact}


Progress = Callable[[str, int, int], None]  # phase, done, total


class CheckCancelled(Exception):
    """The caller cancelled an integrity check (its report is not complete)."""
