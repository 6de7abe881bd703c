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

from dataclasses import asdict
from datetime import timedelta
from collections.abc import Sequence
from typing import Any

from service.domain.integrity import Progress, Report
from service.domain.events import Recorded
from service.domain.state import CardState, evolve
from service.domain.lawful import first_unlawful
from service.domain.streams import is_card_stream
from service.keys.ring import KeyRing
from service.store import checkpoints
from service.store.event_store import EventStore

# Instances' clocks differ a little: a lawful stream may step back this much.
CLOCK_TOLERANCE = timedelta(seconds=5)
LISTED = 20  # cards named per kind of problem; the count is always complete
PROGRESS_EVERY = 10_000  # events between progress reports


def _quiet(phase: str, done: int, total: int) -> None:
    pass


def check_store(store: EventStore, keys: KeyRing, supplied: Sequence[str] = (), progress: Progress = _quiet) -> Report:
    """supplied: signed checkpoint notes kept outside the store. progress is
    called as each phase starts and ends, and every PROGRESS_EVERY events
    of the passes over the log."""
    report = Report(head_position=store.log.head_position())
    head = report.head_position
    progress("links", 0, head)
    report.first_broken_link = store.integrity.first_broken_link(keys.integrity, progress=lambda n: progress("links", n, head))
    progress("links", head, head)
    progress("macs", 0, 1)
    failing = list(store.integrity.cards_failing_mac(keys.integrity))
    report.cards_failing_mac, report.cards_failing_mac_count = failing[:LISTED], len(failing)
    progress("macs", 1, 1)
    progress("projection", 0, 1)
    rebuilt, projected = store.cards.rebuild(), store.cards.projection()
    report.cards = len(projected)
    mismatched = sorted(c for c in rebuilt.keys() | projected.keys() if rebuilt.get(c) != projected.get(c))
    report.projection_mismatches, report.projection_mismatch_count = mismatched[:LISTED], len(mismatched)
    progress("projection", 1, 1)
    streams: dict[str, list[Recorded]] = {}
    progress("lawful", 0, head)
    for e in store.log.all_events():
        report.events += 1
        if report.events % PROGRESS_EVERY == 0:
            progress("lawful", report.events, head)
        if is_card_stream(e.stream_id):
            streams.setdefault(e.stream_id, []).append(e.recorded())
    for stream_id in sorted(streams):
        if (u := _first_unlawful(stream_id, streams[stream_id])) is not None:
            report.first_unlawful = u
            break
    progress("lawful", head, head)
    progress("checkpoints", 0, len(supplied) + 1)
    _check_checkpoints(store, keys, supplied, report)
    progress("checkpoints", len(supplied) + 1, len(supplied) + 1)
    return report


def _first_unlawful(stream_id: str, recorded: list[Recorded]) -> dict[str, Any] | None:
    recorded = sorted(recorded, key=lambda r: r.version)
    if (u := first_unlawful(recorded, clock_tolerance=CLOCK_TOLERANCE)) is not None:
        return {"stream_id": stream_id, **asdict(u)}
    return None


def _check_checkpoints(store: EventStore, keys: KeyRing, supplied: Sequence[str], report: Report) -> None:
    report.stored_checkpoints = len(checkpoints.stored(store))
    report.supplied_checkpoints = len(supplied)
    if keys.checkpoint is not None and (p := checkpoints.check_stored(store, keys)):
        report.checkpoint_problem = p._asdict()
    vkeys = [checkpoints.public_verifier_key(keys)] if keys.checkpoint is not None else []
    for note in supplied:
        if p := checkpoints.check_against(store, note, vkeys):
            report.supplied_checkpoint_problem = p._asdict()
            break


def check_card(store: EventStore, keys: KeyRing, card_id: str) -> Report:
    """One card: its keyed links up to its head, its MAC, its projection
    against a fold of its events, and its lawful history."""
    stored = store.log.stream(card_id)
    report = Report(head_position=store.log.head_position(), events=len(stored), cards=1)
    report.first_broken_link = store.integrity.first_broken_link(keys.integrity, card_id)
    if failing := list(store.integrity.cards_failing_mac(keys.integrity, card_id)):
        report.cards_failing_mac, report.cards_failing_mac_count = failing, len(failing)
    recorded = [e.recorded() for e in stored]
    rebuilt = CardState(card_id)
    for r in recorded:
        rebuilt = evolve(rebuilt, r)
    if store.cards.read_card(card_id) != (rebuilt if recorded else None):
        report.projection_mismatches, report.projection_mismatch_count = [card_id], 1
    report.first_unlawful = _first_unlawful(card_id, recorded)
    return report
