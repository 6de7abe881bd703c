"""Signed checkpoints of the log (RFC 6962 Merkle tree head, C2SP
tlog-checkpoint signed with Ed25519; formats in service/keys/notes.py).

`sign_checkpoint` extends the last checkpoint's Merkle frontier with the
events appended since (O(log n) hashes per event, amortised O(1)), checks
each new event's keyed link before it signs, and stores the checkpoint with
its frontier. The frontier row is MACed under the integrity key: a frontier
edited in the database is never extended (the server would otherwise sign
a forged tree). Each instance signs one every few seconds while the log grows, off the
write path (CheckpointSigner); `pinlife checkpoint` signs one now.

`check_against` recomputes the root of the first N events from the store and
compares it with a checkpoint taken earlier (kept outside the operator's
reach): a log truncated, a stream deleted, or any event changed, moved or
inserted before position N is detected, whatever else the attacker rewrote.

Leaves hash each event's position and canonical envelope (unkeyed), so an
auditor recomputes roots with the events alone. Each signing also stores the
perfect subtrees it completed at every 4th level (tree_nodes), from which
inclusion and consistency proofs are served (service/store/tree.py).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from itertools import islice
from typing import Any, NamedTuple

import structlog
from sqlalchemy import Connection, select
from sqlalchemy import exc as sa_exc

from ..app.ports import IntegrityViolation
from ..domain.chain import leaf_data, link_hash
from ..domain.merkle import Frontier, leaf_hash
from ..keys.notes import Checkpoint, NoteError, NoteSigner, open_note, parse_checkpoint
from ..keys.ring import KeyRing
from ..runtime.clock import Clock
from .event_store import EventStore, StoreView
from .tables import checkpoints
from .tree import insert_nodes

log = structlog.get_logger()

FRONTIER_LABEL = b"pinlife-frontier-v1\x1f"
CHECKPOINT_EVERY = 10.0  # seconds between checkpoints while the log grows
KNOWN_LEAVES_MAX = 200_000  # leaves a writer keeps for its next checkpoint (past it: read back)
SIGN_STEP = 10_000  # positions one signing step covers at most (a long tail is signed in steps)
SIGN_PACE = 0.25  # the share of its time a signer catching up on a long tail works
BUSY_STEP_S = 0.05  # a step that took longer read the log back: the signer then rests


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


def _last_frontier(conn: Connection, keys: KeyRing, head: int) -> Frontier:
    """The frontier of the latest stored checkpoint that is authentic (its
    frontier's MAC checks, its size is its tree's) and within the log; a row
    that is not (inserted or edited by someone without the keys) is skipped
    and logged, never extended: signing goes on from the one before it."""
    c = checkpoints.c
    for row in _newest_first(conn, head, c.frontier, c.mac):
        if (frontier := _authentic_frontier(row.tree_size, row.frontier, row.mac, keys)) is not None:
            return frontier
    return Frontier()


def _newest_first(conn: Connection, head: int, *columns: Any) -> Iterator[Any]:
    """Stored checkpoints within the log (tree_size and `columns`), the
    latest first, read 100 rows at a time."""
    c = checkpoints.c
    below = head + 1
    while True:
        q = select(c.tree_size, *columns).where(c.tree_size < below).order_by(c.tree_size.desc()).limit(100)
        rows = conn.execute(q).all()
        if not rows:
            return
        yield from rows
        below = rows[-1].tree_size


def _authentic_frontier(size: int, body: Any, mac: Any, keys: KeyRing) -> Frontier | None:
    if not isinstance(body, str) or not keys.integrity.checks(mac, FRONTIER_LABEL + body.encode()):
        log.error("integrity_violation", stream="checkpoints", what="frontier MAC", tree_size=size)
        return None
    try:
        frontier = Frontier.from_json(body)
    except (ValueError, KeyError, TypeError):
        log.error("integrity_violation", stream="checkpoints", what="frontier unreadable", tree_size=size)
        return None
    if frontier.size != size:
        log.error("integrity_violation", stream="checkpoints", what="frontier size", tree_size=size)
        return None
    return frontier


def latest_authentic(store: EventStore, keys: KeyRing) -> StoredCheckpoint | None:
    """The latest stored checkpoint whose signed note verifies under this
    instance's checkpoint key and matches its row (what auditors are given,
    GetCheckpoint): a forged row is skipped and logged."""
    vkey = public_verifier_key(keys)
    c = checkpoints.c
    with store.reader.begin() as conn:
        head: int = conn.execute(store.log.head_query).scalar_one()
        for row in _newest_first(conn, head, c.root_hash, c.note):
            try:
                cp = parse_checkpoint(open_note(row.note, [vkey])[0])
            except NoteError:
                log.error("integrity_violation", stream="checkpoints", what="note signature", tree_size=row.tree_size)
                continue
            if (cp.size, cp.root.hex()) == (row.tree_size, row.root_hash):
                return StoredCheckpoint(row.tree_size, row.root_hash, row.note)
            log.error("integrity_violation", stream="checkpoints", what="note and row differ", tree_size=row.tree_size)
    return None


def signed_sizes(store: EventStore, keys: KeyRing, sizes: Iterable[int]) -> tuple[int, frozenset[int]]:
    """The tree size of the latest authentic checkpoint (0: none), and which
    of `sizes` have a checkpoint whose note verifies under this instance's
    key and matches its row (what a proof may be asked against)."""
    latest = latest_authentic(store, keys)
    vkey = public_verifier_key(keys)
    c = checkpoints.c
    signed = set()
    with store.reader.begin() as conn:
        for size in set(sizes):
            row = conn.execute(select(c.tree_size, c.root_hash, c.note).where(c.tree_size == size)).first()
            if row is None:
                continue
            try:
                cp = parse_checkpoint(open_note(row.note, [vkey])[0])
            except NoteError:
                continue
            if (cp.size, cp.root.hex()) == (row.tree_size, row.root_hash):
                signed.add(size)
    return (latest.tree_size if latest else 0), frozenset(signed)


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


KnownLeaves = Callable[[range], "list[bytes] | None"]  # the leaf hashes of these positions, if all are known


def _none_known(positions: range) -> list[bytes] | None:
    return None


def sign_checkpoint(
    store: EventStore, keys: KeyRing, now: datetime, known: KnownLeaves = _none_known, upto: int | None = None
) -> StoredCheckpoint | None:
    """Sign a checkpoint of the log as it is now (or of its first `upto`
    positions, to sign a long tail in steps); None when nothing was appended
    since the last one (or another instance signed it first). It extends
    the last checkpoint's stored frontier: no signing rereads what an
    earlier one covered.

    known: the leaf hashes of events this process committed itself
    (CheckpointSigner). When they cover every position to sign, the events
    are not read back: they are as this process wrote them, so the
    checkpoint commits to them even if a row was edited meanwhile (the edit
    then fails against it)."""
    s = signer(keys)
    with store.reader.begin() as conn:
        head: int = conn.execute(store.log.head_query).scalar_one()
        frontier = _last_frontier(conn, keys, head)
    if upto is not None:
        head = min(head, upto)
    if head <= frontier.size:
        return None
    positions = range(frontier.size + 1, head + 1)
    hashed: Iterable[bytes] | None = known(positions)
    if hashed is None:
        hashed = (leaf_hash(data) for data in _leaves(store, frontier.size, head, keys))
    frontier, nodes = frontier.extend_nodes(hashed)
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
            insert_nodes(conn, nodes)  # the subtrees completed on the way, for proofs (store/tree.py)
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


class CheckpointSigner:
    """An instance's checkpoints, signed off the write path: at start, every
    CHECKPOINT_EVERY seconds and once more at stop, on a thread of its own
    with its own connections, it signs the log up to its head, SIGN_STEP
    positions at a time, each step stored with its frontier (so a long
    unsigned tail, a restored backup or a store from before checkpoints is
    signed in bounded steps, and no step is lost).

    It is the writer's LeafSink: a batch hands it the Merkle leaves of the
    events it committed (`committed`: a dict update under a lock, nothing
    more), and a step whose every position is known is signed without
    reading the events back; other instances' events are read back and their
    links checked. A failure is logged and tried again next round; it never
    reaches a batch."""

    def __init__(self, store: EventStore, keys: KeyRing, clock: Clock, *, every: float = CHECKPOINT_EVERY, step: int = SIGN_STEP):
        self.store, self.keys, self.clock, self.every, self.step = store, keys, clock, every, step
        self._known: dict[int, bytes] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the write path's side -------------------------------------------------------
    def committed(self, leaves: Iterable[tuple[int, bytes]]) -> None:
        if self.keys.checkpoint is None:
            return
        with self._lock:
            self._known.update(leaves)
            if len(self._known) > KNOWN_LEAVES_MAX:
                self._known.clear()  # signing has fallen far behind: it reads the events back

    # -- the signer's side -----------------------------------------------------------
    def _hashes(self, positions: range) -> list[bytes] | None:
        with self._lock:
            if not all(p in self._known for p in positions):
                return None
            return [self._known[p] for p in positions]

    def _forget(self, upto: int) -> None:
        with self._lock:
            for p in [p for p in self._known if p <= upto]:
                del self._known[p]

    def sign(self) -> StoredCheckpoint | None:
        """One round: the log up to the head it has when the round begins, a
        step at a time (a stop between steps ends the round); the last
        checkpoint signed, if any. Events appended meanwhile wait for the
        next round: a round that chased the head of a busy log signed a
        checkpoint after every batch, each one a write beside the writer's."""
        if self.keys.checkpoint is None:
            return None
        signed = None
        target = self.store.log.head_position()
        while True:
            size = signed_size(self.store, self.keys)
            self._forget(size)
            if size >= target:
                return signed
            started = time.monotonic()
            step = sign_checkpoint(self.store, self.keys, self.clock(), self._hashes, upto=min(target, size + self.step))
            if step is None:
                return signed
            signed = step
            if self._stopping.is_set() and self._thread is not None:
                return signed
            worked = time.monotonic() - started
            if worked > BUSY_STEP_S and self._thread is not None:
                # A step that read the log back (a long unsigned tail): rest three times as long
                # before the next, so that the writer it shares its process with keeps its pace.
                self._stopping.wait(worked * (1 / SIGN_PACE - 1))

    def _round(self) -> None:
        try:
            self.sign()
        except Exception as exc:  # noqa: BLE001 - logged; the next round tries again
            log.error("checkpoint_failed", error=type(exc).__name__, detail=str(exc))

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._round()
            self._stopping.wait(self.every)

    def start(self) -> None:
        if self.keys.checkpoint is None or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="pinlife-checkpoints", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the rounds, then sign the log as this instance leaves it."""
        self._stopping.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join()
        self._stopping.clear()
        self._round()


def signed_size(store: EventStore, keys: KeyRing) -> int:
    """The tree size of the latest authentic checkpoint (0: none)."""
    with store.reader.begin() as conn:
        head: int = conn.execute(store.log.head_query).scalar_one()
        return _last_frontier(conn, keys, head).size
