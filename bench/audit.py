"""Audit reads on a store holding many events: one card's history page
(EventStore.stream(card_id): every event of that card, in order, decoded),
and rebuilding the lock-state projection from the events alone
(EventStore.rebuild(): reads the whole log in position order and folds it)."""

from __future__ import annotations

import random
import time

from bench.common import card_id, latency_summary
from service.store.event_store import EventStore


def history_reads(store: EventStore, cards: int, reads: int, seed: int = 5) -> dict:
    rng = random.Random(seed)
    for _ in range(min(50, reads)):  # warm the pool and the statement cache
        store.stream(card_id(rng.randrange(cards)))
    lat: list[float] = []
    sizes: list[int] = []
    for _ in range(reads):
        c = card_id(rng.randrange(cards))
        t = time.perf_counter()
        page = store.stream(c)
        lat.append(time.perf_counter() - t)
        sizes.append(len(page))
    s = sorted(sizes)
    return {
        "reads": reads,
        **{k: v for k, v in latency_summary(lat).items() if k != "count"},
        "events_per_page_mean": round(sum(sizes) / len(sizes), 2) if sizes else None,
        "events_per_page_max": s[-1] if s else None,
        "empty_pages": sum(1 for x in sizes if x == 0),
    }


def rebuild_speed(store: EventStore) -> dict:
    events = store.head_position()
    t = time.perf_counter()
    states = store.rebuild()
    seconds = time.perf_counter() - t
    return {
        "events": events,
        "streams": len(states),
        "seconds": round(seconds, 3),
        "events_per_s": round(events / seconds, 1) if seconds else None,
    }
