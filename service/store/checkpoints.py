"""Signed checkpoints of the log (RFC 6962 Merkle tree head, C2SP
tlog-checkpoint signed with Ed25519; formats in service/keys/notes.py).

`sign_checkpoint` extends the last checkpoint's Merkle frontier with the
events appended since (O(log n) hashes per event, amortised O(1)), checks
each new event's keyed link before it signs, and stores the checkpoint with
its frontier. The frontier row is MACed under the integrity key: a frontier
edited in the database is never extended (the server would otherwise sign
a forged tree). The server signs one every few seconds while the log grows
(service/api/server.py); `pinlife checkpoint` signs one now.

`check_against` recomputes the root of the first N events from the store and
compares it with a checkpoint taken earlier (kept outside the operator's
reach): a log truncated, a stream deleted, or any event changed, moved or
inserted before position N is detected, whatever else the attacker rewrote.

Leaves hash each event's position and canonical envelope (unkeyed), so an
auditor recomputes roots with the events alone. Inclusion and consistency
proofs can later be served from the same leaves and the stored frontiers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from itertools import islice
from datetime import datetime
from typing import NamedTuple

import structlog
from sqlalchemy import exc as sa_exc
from sqlalchemy import select

from service.runtime.clock import Clock
from service.domain.chain import leaf_data, link_hash
from service.domain.merkle import Frontier
from service.app.ports import IntegrityViolation
from service.keys.ring import KeyRing
from service.keys.notes import Checkpoint, NoteError, NoteSigner, open_note, parse_checkpoint
from service.store.event_store import EventStore, StoreView
from service.store.tables import checkpoints

log = structlog.get_logger()

FRONTIER_LABEL = b"pinlife-frontier-v1\x1f"
CHECKPOINT_EVERY = 10.0  # seconds between checkpoints while the log grows
KNOWN_LEAVES_MAX = 200_000  # leaves a writer keeps for its next checkpoint (past it: read back)


class StoredCheckpoint(NamedTuple):
    tree_size: int
    root_hash: str
    note: str


def signer(keys: KeyRing) -> NoteSigner:
    if keys.checkpoint is None:
        raise ValueError('no checkpoint key (the key file\'s "checkpoint" section)')
    return NoteSigner(keys.checkpoint.origin, keys.checkpoint.private_key())


def public_verifier_key(keys: KeyRing) -> str:
    """The note verifier key an auditor checks checkpoints with."""
    return signer(keys).verifier_key


def latest(store: EventStore) -> StoredCheckpoint | None:
    with store.reader.begin() as conn:
        q = select(checkpoints.c.tree_size, checkpoints.c.root_hash, checkpoints.c.note)
        row = conn.execute(q.order_by(checkpoints.c.tree_size.desc()).limit(1)).first()
    return StoredCheckpoint(row.tree_size, row.root_hash, row.note) if row else None


def stored(store: StoreView) -> list[StoredCheckpoint]:
    with store.read() as conn:
        q = select(checkpoints.c.tree_size, checkpoints.c.root_hash, checkpoints.c.note).order_by(checkpoints.c.tree_size)
        return [StoredCheckpoint(r.tree_size, r.root_hash, r.note) for r in conn.execute(q)]


def _leaves(store: StoreView, after: int, upto: int, keys: KeyRing | None = None) -> Iterator[bytes]:
    """Leaf data of positions after+1..upto, in order; with keys, each
    event's own keyed link is checked first. Read 1,000 events a page: a
    server that signs at start over a large tail holds one page at a time."""
    expected = after + 1
    while expected <= upto:
        page = store.log.read_all(expected - 1, min(1000, upto - expected + 1))
        if not page:
            break
        for e in page:
            if e.position != expected:
                raise IntegrityViolation("log", f"position {expected} is missing")
            env = e.envelope()
            if keys is not None:
                key = keys.integrity.key_or_none(e.key_id or "")
                if key is None or link_hash(key, e.prev_hash, e.position, env) != e.hash:
                    raise IntegrityViolation(e.stream_id, f"the event at position {e.position} fails its keyed link")
            yield leaf_data(e.position, env)
            expected += 1
    if expected <= upto:
        raise IntegrityViolation("log", f"the log ends at position {expected - 1}, before {upto}")


def sign_checkpoint(
    store: EventStore, keys: KeyRing, now: datetime, known: MutableMapping[int, bytes] | None = None
) -> StoredCheckpoint | None:
    """Sign a checkpoint of the log as it is now; None when nothing was
    appended since the last one (or another instance signed it first).

    known: the leaf hashes (by position) of events this process committed
    itself (LeafFeed). When they cover every position since the last
    checkpoint, the events are not read back: they are as this process
    wrote them, so the checkpoint commits to them even if a row was edited
    meanwhile (the edit then fails against it). Entries the signed tree
    covers are removed."""
    s = signer(keys)
    known = {} if known is None else known
    with store.reader.begin() as conn:
        head: int = conn.execute(store.log.head_query).scalar_one()
        q = select(checkpoints.c.tree_size, checkpoints.c.frontier, checkpoints.c.mac)
        last = conn.execute(q.order_by(checkpoints.c.tree_size.desc()).limit(1)).first()
    frontier = Frontier()
    if last is not None:
        if not keys.integrity.checks(last.mac, FRONTIER_LABEL + last.frontier.encode()):
            log.error("integrity_violation", stream="checkpoints", what="frontier MAC")
            raise IntegrityViolation("checkpoints", f"the frontier of checkpoint {last.tree_size} fails its MAC")
        frontier = Frontier.from_json(last.frontier)
        if frontier.size != last.tree_size:
            raise IntegrityViolation("checkpoints", f"the frontier of checkpoint {last.tree_size} has another size")
    _forget(known, frontier.size)
    if head <= frontier.size:
        return None
    positions = range(frontier.size + 1, head + 1)
    if all(p in known for p in positions):
        frontier = frontier.extend_hashed(known[p] for p in positions)
    else:
        frontier = frontier.extend(_leaves(store, frontier.size, head, keys))
    _forget(known, frontier.size)
    root = frontier.root()
    note = s.sign(Checkpoint(s.name, frontier.size, root).body())
    body = frontier.to_json()
    row = dict(
        tree_size=frontier.size,
        root_hash=root.hex(),
        frontier=body,
        note=note,
        mac=keys.integrity.tag(FRONTIER_LABEL + body.encode()),
        created_at=now,
    )
    try:
        with store.writer.begin() as conn:
            conn.execute(checkpoints.insert().values(**row))
    except sa_exc.IntegrityError:
        return None  # another instance signed this size first
    log.info("checkpoint_signed", tree_size=frontier.size)
    return StoredCheckpoint(frontier.size, root.hex(), note)


class CheckpointProblem(NamedTuple):
    tree_size: int
    reason: str


def check_against(store: StoreView, note: str, verifier_keys: list[str]) -> CheckpointProblem | None:
    """Whether the log's first N events still have the root a signed
    checkpoint of size N records (its signature checked first)."""
    try:
        body, _ = open_note(note, verifier_keys)
        cp = parse_checkpoint(body)
    except NoteError as exc:
        return CheckpointProblem(0, f"the checkpoint does not verify: {exc}")
    try:
        root = Frontier().extend(_leaves(store, 0, cp.size)).root()
    except IntegrityViolation as exc:
        return CheckpointProblem(cp.size, exc.reason)
    if root != cp.root:
        return CheckpointProblem(
            cp.size, f"the log's first {cp.size} events do not have the checkpoint's root (rewritten or removed)"
        )
    return None


def check_stored(store: StoreView, keys: KeyRing) -> CheckpointProblem | None:
    """Every stored checkpoint: its signature, and its root against the
    log, in one pass over the events."""
    vkey = public_verifier_key(keys)
    with store.read() as conn:
        q = select(
            checkpoints.c.tree_size, checkpoints.c.root_hash, checkpoints.c.note, checkpoints.c.frontier, checkpoints.c.mac
        )
        expected = conn.execute(q.order_by(checkpoints.c.tree_size)).all()
    if not expected:
        return None
    frontier = Frontier()
    leaves = _leaves(store, 0, store.log.head_position())
    for cp in expected:
        # The frontier the next checkpoint extends: authentic, and the tree
        # of the log's first tree_size events (checked below with the root).
        if not keys.integrity.checks(cp.mac, FRONTIER_LABEL + cp.frontier.encode()):
            return CheckpointProblem(cp.tree_size, "the stored frontier fails its MAC (the next checkpoint cannot be signed)")
        try:
            kept = Frontier.from_json(cp.frontier)
            kept_root = kept.root()
        except (ValueError, KeyError, TypeError):
            return CheckpointProblem(cp.tree_size, "the stored frontier cannot be read")
        try:
            body, _ = open_note(cp.note, [vkey])
            parsed = parse_checkpoint(body)
        except NoteError as exc:
            return CheckpointProblem(cp.tree_size, f"stored checkpoint does not verify: {exc}")
        if (parsed.size, parsed.root.hex()) != (cp.tree_size, cp.root_hash):
            return CheckpointProblem(cp.tree_size, "the stored checkpoint's row does not match its signed note")
        try:
            frontier = frontier.extend(islice(leaves, cp.tree_size - frontier.size))
        except IntegrityViolation as exc:
            return CheckpointProblem(cp.tree_size, exc.reason)
        if frontier.size < cp.tree_size:
            return CheckpointProblem(cp.tree_size, f"the log holds fewer than {cp.tree_size} events (truncated)")
        if frontier.root() != parsed.root:
            return CheckpointProblem(cp.tree_size, f"the log's first {cp.tree_size} events do not match the checkpoint")
        if kept.size != cp.tree_size or kept_root != parsed.root:
            return CheckpointProblem(cp.tree_size, "the stored frontier is not the tree of the checkpoint it belongs to")
    return None


def _forget(known: MutableMapping[int, bytes], upto: int) -> None:
    for p in [p for p in known if p <= upto]:
        del known[p]


class LeafFeed:
    """A writer's checkpoints: the Merkle leaves of the events it commits
    (from each batch, service/app/batch.py), signed every CHECKPOINT_EVERY
    seconds while the log grows, without reading the events back when this
    writer wrote every one since the last checkpoint (the usual case with
    one instance; with several, sign_checkpoint reads the others' events
    and checks their links). The server's maintenance signs when no writer
    has for a while (an idle log's tail; service/store/maintenance.py). A failure
    is logged, never the batch's."""

    def __init__(
        self,
        store: EventStore,
        keys: KeyRing,
        clock: Clock,
        every: float = CHECKPOINT_EVERY,
        monotonic: Callable[[], float] = time.monotonic,
    ):
        self.store, self.keys, self.clock, self.every, self._monotonic = store, keys, clock, every, monotonic
        self._known: dict[int, bytes] = {}
        self._signed_at = monotonic()

    def committed(self, leaves: Iterable[tuple[int, bytes]]) -> None:
        if self.keys.checkpoint is None:
            return
        self._known.update(leaves)
        if len(self._known) > KNOWN_LEAVES_MAX:
            self._known.clear()  # signing has failed for long: the next one reads the events back
        if self._monotonic() - self._signed_at < self.every:
            return
        self._signed_at = self._monotonic()
        try:
            sign_checkpoint(self.store, self.keys, self.clock(), self._known)
        except Exception as exc:  # noqa: BLE001 - logged; the next round tries again
            log.error("checkpoint_failed", error=type(exc).__name__, detail=str(exc))
