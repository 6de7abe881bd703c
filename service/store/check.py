"""The whole-store integrity check behind `pinlife check` (and, later, the
audit API): every problem a database-level attacker could leave, each named
by stream, version and position where it has one.

- keyed links, stream heads, positions 1..head without a gap (integrity.py);
- every card's MAC over its projection (integrity.py);
- the projection against a rebuild from the events, by card;
- the lawful-history replay: the first event of each card stream that the
  domain's rules could not have produced (service/domain/lawful.py);
- the stored signed checkpoints, and any checkpoint the caller supplies
  (checkpoints.py): a truncated log or a deleted stream shows there.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any

from service.domain.chain import BrokenLink
from service.domain.events import Recorded
from service.domain.lawful import first_unlawful
from service.domain.streams import is_card_stream
from service.domain.upcasting import event_from_stored
from service.keys import KeyRing
from service.store import checkpoints
from service.store.event_store import EventStore

# Instances' clocks differ a little: a lawful stream may step back this much.
CLOCK_TOLERANCE = timedelta(seconds=5)
LISTED = 20  # cards named per kind of problem; the count is always complete


@dataclass
class Report:
    events: int = 0  # rows in the log
    head_position: int = 0
    first_broken_link: BrokenLink | None = None
    cards_failing_mac: list[str] = field(default_factory=list)
    cards_failing_mac_count: int = 0
    projection_mismatches: list[str] = field(default_factory=list)
    projection_mismatch_count: int = 0
    first_unlawful: dict[str, Any] | None = None
    stored_checkpoints: int = 0
    checkpoint_problem: dict[str, Any] | None = None
    supplied_checkpoint_problem: dict[str, Any] | None = None

    @property
    def intact(self) -> bool:
        return not (
            self.first_broken_link or self.cards_failing_mac_count or self.projection_mismatch_count
            or self.first_unlawful or self.checkpoint_problem or self.supplied_checkpoint_problem
        )  # fmt: skip

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "intact": self.intact}


def check_store(store: EventStore, keys: KeyRing, supplied: list[str] = ()) -> Report:
    """supplied: signed checkpoint notes kept outside the store."""
    report = Report(head_position=store.head_position())
    report.first_broken_link = store.first_broken_link(keys.integrity)
    failing = list(store.cards_failing_mac(keys.integrity))
    report.cards_failing_mac, report.cards_failing_mac_count = failing[:LISTED], len(failing)
    rebuilt, projected = store.rebuild(), store.projection()
    mismatched = sorted(c for c in rebuilt.keys() | projected.keys() if rebuilt.get(c) != projected.get(c))
    report.projection_mismatches, report.projection_mismatch_count = mismatched[:LISTED], len(mismatched)
    streams: dict[str, list[Recorded]] = {}
    for e in store.all_events():
        report.events += 1
        if is_card_stream(e.stream_id):
            event = event_from_stored(e.event_type, e.schema_version, e.pin_type, e.payload)
            streams.setdefault(e.stream_id, []).append(Recorded(event, e.version, e.occurred_at))
    for stream_id in sorted(streams):
        recorded = sorted(streams[stream_id], key=lambda r: r.version)
        if (u := first_unlawful(recorded, clock_tolerance=CLOCK_TOLERANCE)) is not None:
            report.first_unlawful = {"stream_id": stream_id, **asdict(u)}
            break
    report.stored_checkpoints = len(checkpoints.stored(store))
    if keys.checkpoint is not None and (p := checkpoints.check_stored(store, keys)):
        report.checkpoint_problem = p._asdict()
    vkeys = [checkpoints.public_verifier_key(keys)] if keys.checkpoint is not None else []
    for note in supplied:
        if p := checkpoints.check_against(store, note, vkeys):
            report.supplied_checkpoint_problem = p._asdict()
            break
    return report
