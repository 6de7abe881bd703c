"""Audit reads on a store holding many events: one card's history page
(store.log.stream(card_id): every event of that card, in order, decoded),
and rebuilding the lock-state projection from the events alone
(store.cards.rebuilt(): reads the whole log in stream order, a page at a
time, and folds each card's stream)."""

from __future__ import annotations

import random
import time
from datetime import UTC

from bench.common import card_id, latency_summary
from pinlife.store.event_store import EventStore


def history_reads(store: EventStore, cards: int, reads: int, seed: int = 5) -> dict:
    rng = random.Random(seed)
    for _ in range(min(50, reads)):  # warm the pool and the statement cache
        store.log.stream(card_id(rng.randrange(cards)))
    lat: list[float] = []
    sizes: list[int] = []
    for _ in range(reads):
        c = card_id(rng.randrange(cards))
        t = time.perf_counter()
        page = store.log.stream(c)
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
    events = store.log.head_position()
    t = time.perf_counter()
    streams = sum(1 for _ in store.cards.rebuilt())  # folded a page at a time: memory flat in the cards
    seconds = time.perf_counter() - t
    return {
        "events": events,
        "streams": streams,
        "seconds": round(seconds, 3),
        "events_per_s": round(events / seconds, 1) if seconds else None,
    }


# -- AuditService's reads: pages, watch ---------------------------------------------------
PAGE = 100


def audit_pages(store: EventStore, keys, cards: int, reads: int, seed: int = 11) -> dict:
    """The store side of GetCardHistory and QueryEvents (service/store/audit_reads.py),
    a page of PAGE events each: one card's history (first page, oldest first),
    and one terminal's day from a random point in it (a keyset page, as a
    cursor resumes), with the PostgreSQL plans of the day's query."""
    from datetime import timedelta

    from pinlife.domain.audit import Filter, Order
    from pinlife.store.audit_reads import StoreAuditReads, query_plan

    reads_ = StoreAuditReads(store, keys)
    rng = random.Random(seed)
    # one card reader of the loaded verifies (bench/loader.py), and its day
    # (Asia/Tokyo) around its latest event
    from sqlalchemy import func, select

    from pinlife.domain.calendar import TOKYO
    from pinlife.store.tables import events

    # Found from the log's end and the terminal's index (a grouping over the
    # whole log outlasts the statement timeout on a store of millions of cards).
    with store.reader.begin() as conn:
        recent = select(events.c.terminal_id).where(events.c.stream_kind == "card").order_by(events.c.position.desc())
        terminal = conn.execute(recent.where(events.c.terminal_id.like("bench-reader-%")).limit(1)).scalar_one_or_none()
        if terminal is None:
            terminal = conn.execute(recent.limit(1)).scalar_one()
        latest = conn.execute(select(func.max(events.c.occurred_at)).where(events.c.terminal_id == terminal)).scalar_one()
    if latest.tzinfo is None:  # SQLite stores UTC without an offset
        latest = latest.replace(tzinfo=UTC)
    local = latest.astimezone(TOKYO)
    start = local.replace(hour=0, minute=0, second=0, microsecond=0)
    day = Filter(start=start, end=start + timedelta(days=1), terminal_id=terminal)
    with store.reader.begin() as conn:
        cond = (events.c.terminal_id == terminal) & (events.c.occurred_at >= day.start) & (events.c.occurred_at < day.end)
        keys_in_day = conn.execute(
            select(events.c.occurred_at, events.c.position).where(cond).order_by(func.random()).limit(min(reads, 2000))
        ).all()
    in_day = len(keys_in_day)

    def timed(fn) -> tuple[list[float], list[int]]:
        lat, sizes = [], []
        for _ in range(min(50, reads)):
            fn()
        for _ in range(reads):
            t = time.perf_counter()
            n = fn()
            lat.append(time.perf_counter() - t)
            sizes.append(n)
        return lat, sizes

    def history_page() -> int:
        return len(reads_.card_history(card_id(rng.randrange(cards)), Filter(), Order.OLDEST_FIRST, None, PAGE))

    def terminal_day_page() -> int:
        after = tuple(rng.choice(keys_in_day)) if keys_in_day else None
        return len(reads_.query_events(day, Order.OLDEST_FIRST, after, PAGE))

    def summary(lat, sizes) -> dict:
        return {
            **{k: v for k, v in latency_summary(lat).items() if k != "count"},
            "reads": len(lat),
            "events_per_page_mean": round(sum(sizes) / len(sizes), 1) if sizes else None,
        }

    h = summary(*timed(history_page))
    d = summary(*timed(terminal_day_page))
    d.update(terminal=terminal, day=start.date().isoformat(), events_in_day_sampled=in_day)
    out = {"page_size": PAGE, "card_history": h, "terminal_day": d}
    if store.dialect == "postgresql":
        out["plans"] = {
            "terminal_day": query_plan(store, day, limit=PAGE),
            "event_type_hour": query_plan(
                store,
                Filter(start=latest - timedelta(hours=1), end=latest, event_types=frozenset({"PinVerificationFailed"})),
                limit=PAGE,
            ),
        }
    return out


def watch_catch_up(target: str, events: int, budget_s: float = 60.0) -> dict:
    """WatchEvents from position 0 over gRPC: the catch-up rate in events/s
    (stored events, read page after page), over `events` events or
    `budget_s` seconds, whichever comes first."""
    import grpc

    from pinlife.v1 import audit_service_pb2 as apb
    from pinlife.v1 import audit_service_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        stub = audit_service_pb2_grpc.AuditServiceStub(channel)
        md = (("x-pinlife-terminal", "bench-auditor"),)
        stream = stub.WatchEvents(apb.WatchEventsRequest(after_position=0), metadata=md)
        t, n, last = time.perf_counter(), 0, 0
        stop_at = t + budget_s
        for r in stream:
            n, last = n + 1, r.event.position
            if n >= events or (n % 1000 == 0 and time.perf_counter() > stop_at):
                break
        seconds = time.perf_counter() - t
        stream.cancel()
    return {
        "events": n,
        "last_position": last,
        "seconds": round(seconds, 2),
        "events_per_s": round(n / seconds, 0) if seconds else None,
    }


class LiveWatcher:
    """WatchEvents from the head while a load runs: for each event, the time
    from its occurred_at (set before the batch commits) to its delivery, an
    upper bound of commit → delivery. Same host, same clock."""

    def __init__(self, target: str, after: int):
        import threading

        self.target, self.after = target, after
        self.lags: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-watcher", daemon=True)
        self.error: str | None = None

    def start(self) -> LiveWatcher:
        self._thread.start()
        return self

    def _run(self) -> None:
        import grpc

        from pinlife.v1 import audit_service_pb2 as apb
        from pinlife.v1 import audit_service_pb2_grpc

        try:
            with grpc.insecure_channel(self.target) as channel:
                stub = audit_service_pb2_grpc.AuditServiceStub(channel)
                md = (("x-pinlife-terminal", "bench-auditor"),)
                self._stream = stub.WatchEvents(apb.WatchEventsRequest(after_position=self.after), metadata=md)
                for r in self._stream:
                    now = time.time()
                    occurred = r.event.occurred_at.seconds + r.event.occurred_at.nanos / 1e9
                    self.lags.append(now - occurred)
                    if self._stop.is_set():
                        break
        except grpc.RpcError as exc:
            if not self._stop.is_set():
                self.error = f"{exc.code().name}: {exc.details()}"

    def stop(self) -> dict:
        self._stop.set()
        stream = getattr(self, "_stream", None)
        if stream is not None:
            stream.cancel()
        self._thread.join(timeout=10)
        lat = latency_summary(self.lags)
        return {
            "events": len(self.lags),
            **{f"lag_{k}": v for k, v in lat.items() if k != "count"},
            **({"error": self.error} if self.error else {}),
        }
