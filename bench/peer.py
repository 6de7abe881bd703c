"""In-process comparison (no gRPC): the service's own command path against a
peer written with the `eventsourcing` library, same command, same store kind,
same number of cards, same concurrency, same duration.

The command: verify the user-certificate PIN of a random card (90 % right,
10 % wrong): load the card's state, decide (HMAC check under the same
KeyRing, failure counter, lock at the limit), save one event.

- service: PinLife.execute (throttle bookkeeping, then the group-commit queue)
  from `concurrency` asyncio tasks on one event loop; the writer thread
  handles every waiting command in one transaction (group commit).
- peer: an eventsourcing Application with one Aggregate per card;
  `verify` = repository.get (replays the card's events) + aggregate method
  (triggers the event) + save (one transaction, optimistic concurrency on
  the aggregate version), from `concurrency` threads. A version conflict
  (two threads on one card) is retried, as an application would, and
  counted. Persistence is eventsourcing's own SQLite module (WAL, a
  connection pool, one writer at a time) or its PostgreSQL module
  (psycopg 3, pool), configured through its environment variables
  (PERSISTENCE_MODULE, SQLITE_DBNAME, POSTGRES_*).

The peer does less per command than the service: no request-id log for
retries, no lock-state projection table, no hash chain, and its verifiers
live in the card's first event (the service keeps them out of events).
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
import uuid
from collections import Counter
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import RecordConflictError

from bench.common import card_id, latency_summary, pins_for, wrong_4digit
from pinlife.domain.pins import PinType, retry_limit
from pinlife.keys.ring import KeyRing, SecretRef, Verifier

WRONG_SHARE = 0.10
CARD_NS = uuid5(NAMESPACE_URL, "https://pinlife.invalid/bench/card")


def peer_card_uuid(card_no: str) -> UUID:
    return uuid5(CARD_NS, card_no)


class PeerCard(Aggregate):
    """One card: its verifiers and, per PIN type, the failure counter and lock."""

    @staticmethod
    def create_id(card_no: str, verifiers: dict) -> UUID:  # noqa: ARG004
        return peer_card_uuid(card_no)

    @event("Registered")
    def __init__(self, card_no: str, verifiers: dict):
        self.card_no = card_no
        self.verifiers = verifiers  # pin_type value -> [key_id, digest]
        self.failures: dict[str, int] = {}
        self.locked: list[str] = []

    @event("PinVerified")
    def pin_verified(self, pin_type: str) -> None:
        self.failures[pin_type] = 0

    @event("PinVerificationFailed")
    def pin_verification_failed(self, pin_type: str, failures: int) -> None:
        self.failures[pin_type] = failures

    @event("PinLocked")
    def pin_locked(self, pin_type: str) -> None:
        self.locked.append(pin_type)

    @event("LockedPinAttempted")
    def locked_pin_attempted(self, pin_type: str) -> None:
        pass

    def verify(self, keys: KeyRing, pin_type: PinType, pin: str) -> str:
        t = pin_type.value
        if t in self.locked:
            self.locked_pin_attempted(t)
            return "LOCKED"
        key_id, digest = self.verifiers[t]
        if keys.matches(Verifier(key_id, digest), SecretRef.pin(self.card_no, pin_type), pin):
            self.pin_verified(t)
            return "OK"
        failures = self.failures.get(t, 0) + 1
        self.pin_verification_failed(t, failures)
        if failures >= retry_limit(pin_type):
            self.pin_locked(t)
            return "LOCKED"
        return "WRONG_PIN"


class PeerPins(Application):
    def __init__(self, keys: KeyRing, env: dict[str, str]):
        super().__init__(env)
        self.keys = keys

    def enroll(self, indices: range) -> None:
        cards = []
        for i in indices:
            no, p = card_id(i), pins_for(i)
            verifiers = {}
            for t, pin in (
                (PinType.RESIDENT_REGISTRY, p.resident_registry),
                (PinType.CARD_INFO_INPUT_SUPPORT, p.card_info_input_support),
                (PinType.USER_CERTIFICATE, p.user_certificate),
                (PinType.SIGNATURE, p.signature),
            ):
                v = self.keys.make(SecretRef.pin(no, t), pin)
                verifiers[t.value] = [v.key_id, v.digest]
            cards.append(PeerCard(card_no=no, verifiers=verifiers))
        self.save(*cards)

    def verify(self, card_no: str, pin_type: PinType, pin: str) -> str:
        card: PeerCard = self.repository.get(peer_card_uuid(card_no))
        result = card.verify(self.keys, pin_type, pin)
        self.save(card)
        return result


def peer_env_sqlite(path: str) -> dict[str, str]:
    return {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": path, "SQLITE_LOCK_TIMEOUT": "30"}


def peer_env_postgres(url: str, pool: int) -> dict[str, str]:
    from sqlalchemy.engine import make_url

    u = make_url(url)
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": u.database or "",
        "POSTGRES_HOST": u.host or "127.0.0.1",
        "POSTGRES_PORT": str(u.port or 5432),
        "POSTGRES_USER": u.username or "postgres",
        "POSTGRES_PASSWORD": u.password or "",
        "POSTGRES_POOL_SIZE": str(pool),
        "POSTGRES_MAX_OVERFLOW": "0",
        "POSTGRES_CONNECT_TIMEOUT": "30",
    }


def _choose(rng: random.Random, cards: int) -> tuple[str, str]:
    i = rng.randrange(cards)
    right = pins_for(i).user_certificate
    pin = wrong_4digit(right, rng.randrange(1, 9999)) if rng.random() < WRONG_SHARE else right
    return card_id(i), pin


def _summary(name: str, lat: list[float], answers: Counter, errors: Counter, duration: float, **extra) -> dict:
    """Throughput and latency of the answered commands; errors counted apart."""
    return {
        "name": name,
        "completed": len(lat),
        "per_s": round(len(lat) / duration, 1),
        **{k: v for k, v in latency_summary(lat).items() if k != "count"},
        "answers": dict(answers),
        "errors": dict(errors),
        **extra,
    }


# -- peer: threads -------------------------------------------------------------------
def load_peer(app: PeerPins, cards: int, chunk: int = 500) -> float:
    t = time.perf_counter()
    for s in range(0, cards, chunk):
        app.enroll(range(s, min(cards, s + chunk)))
    return time.perf_counter() - t


def run_peer(app: PeerPins, cards: int, concurrency: int, warmup_s: float, duration_s: float, seed: int = 11) -> dict:
    t0 = time.perf_counter() + 0.2
    record_from = t0 + warmup_s
    stop_at = record_from + duration_s
    lock = threading.Lock()
    lat: list[float] = []
    answers: Counter = Counter()
    errors: Counter = Counter()
    conflicts = [0]

    def worker(k: int) -> None:
        rng = random.Random(seed * 1000 + k)
        my_lat, my_ans, my_err, my_conf = [], Counter(), Counter(), 0
        while time.perf_counter() < t0:
            time.sleep(0.01)
        while time.perf_counter() < stop_at:
            card_no, pin = _choose(rng, cards)
            started = time.perf_counter()
            answer = error = None
            for _attempt in range(20):
                try:
                    answer = app.verify(card_no, PinType.USER_CERTIFICATE, pin)
                    break
                except RecordConflictError:
                    my_conf += 1
                except Exception as exc:  # noqa: BLE001
                    error = type(exc).__name__
                    break
            else:
                error = "TooManyConflicts"
            ended = time.perf_counter()
            if record_from <= ended < stop_at:
                if error is None:
                    my_lat.append(ended - started)
                    my_ans[answer] += 1
                else:
                    my_err[error] += 1
        with lock:
            lat.extend(my_lat)
            answers.update(my_ans)
            errors.update(my_err)
            conflicts[0] += my_conf

    threads = [threading.Thread(target=worker, args=(k,), name=f"peer-{k}", daemon=True) for k in range(concurrency)]
    cpu0 = time.process_time()
    for th in threads:
        th.start()
    for th in threads:
        th.join(warmup_s + duration_s + 120)
    return _summary(
        "eventsourcing peer",
        lat,
        answers,
        errors,
        duration_s,
        version_conflicts_retried=conflicts[0],
        concurrency=f"{concurrency} threads",
        process_cpu_s=round(time.process_time() - cpu0, 2),
    )


# -- service: asyncio tasks -----------------------------------------------------------
async def _run_service_async(
    url: str, keys: KeyRing, cards: int, concurrency: int, warmup_s: float, duration_s: float, batch_max: int, seed: int
) -> dict:
    from pinlife.app.handlers import Caller
    from pinlife.bootstrap.instance import make_app
    from pinlife.domain.commands import VerifyPin
    from pinlife.runtime.clock import system_clock
    from pinlife.store.event_store import EventStore

    store = EventStore(url)
    app = make_app(store, keys, system_clock, batch_max=batch_max)
    await app.start()
    lat: list[float] = []
    answers: Counter = Counter()
    errors: Counter = Counter()
    try:
        t0 = time.perf_counter()
        record_from = t0 + warmup_s
        stop_at = record_from + duration_s

        async def task(k: int) -> None:
            rng = random.Random(seed * 1000 + k)
            while time.perf_counter() < stop_at:
                card_no, pin = _choose(rng, cards)
                caller = Caller("development", f"inproc-t{rng.randrange(20000)}")
                started = time.perf_counter()
                answer = error = None
                try:
                    cmd = VerifyPin.create(str(uuid.uuid4()), card_no, PinType.USER_CERTIFICATE, pin)
                    answer = (await app.execute(cmd, caller)).outcome.result.name
                except Exception as exc:  # noqa: BLE001
                    error = type(exc).__name__
                ended = time.perf_counter()
                if record_from <= ended < stop_at:
                    if error is None:
                        lat.append(ended - started)
                        answers[answer] += 1
                    else:
                        errors[error] += 1

        cpu0 = time.process_time()
        await asyncio.gather(*(task(k) for k in range(concurrency)))
        cpu = time.process_time() - cpu0
    finally:
        await app.stop()
        store.close()
    return _summary(
        "service (PinLife, group commit)",
        lat,
        answers,
        errors,
        duration_s,
        concurrency=f"{concurrency} asyncio tasks",
        batch_max=batch_max,
        process_cpu_s=round(cpu, 2),
    )


def run_service(
    url: str,
    keys: KeyRing,
    cards: int,
    concurrency: int,
    warmup_s: float,
    duration_s: float,
    batch_max: int = 256,
    seed: int = 11,
) -> dict:
    return asyncio.run(_run_service_async(url, keys, cards, concurrency, warmup_s, duration_s, batch_max, seed))
