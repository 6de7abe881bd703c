"""The log's Merkle tree as the store keeps it, for proofs (RFC 9162 §2.1.3,
§2.1.4): the roots of its perfect subtrees at every NODE_EVERY-th level
(`tree_nodes`, written by the checkpoint signer as they complete) and, at
level 0, the events themselves (a leaf is an event's position and canonical
envelope, hashed).

A proof names at most log2(n) subtrees (merkle.inclusion_path,
consistency_path); each is at most log2(n) perfect subtrees; a perfect
subtree of level l is the root of at most 2^(NODE_EVERY - 1) = 8 stored
hashes of level l - l % NODE_EVERY, or of as many events below level
NODE_EVERY. They are read a tile at a time (16 consecutive hashes of one
level, one indexed range read), each tile once per request: an inclusion
proof in a tree of 2^32 leaves reads at most 8 tiles for its left-hand
siblings and 8 for its right-hand ones, of at most 16 rows each, however
long the log; a page of history shares the upper tiles between its events.
Nothing here rereads the log.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import Connection, func, select
from sqlalchemy.dialects import postgresql, sqlite

from ..app.ports import IntegrityViolation
from ..domain.chain import leaf_data
from ..domain.log import LoggedEvent
from ..domain.merkle import (
    NODE_EVERY,
    Frontier,
    InclusionProof,
    LeafProof,
    Node,
    consistency_path,
    fold,
    inclusion_path,
    leaf_hash,
    perfect_parts,
    perfect_root,
)
from .event_store import EventStore, StoreView
from .tables import checkpoints, tree_nodes

TILE = 1 << NODE_EVERY  # hashes of one level read at once
INSERT_CHUNK = 1000


class NodesMissing(Exception):
    """The stored subtree hashes do not reach this far (a store that held
    checkpoints before migration 0012, not yet filled in: `pinlife migrate`)."""


def insert_nodes(conn: Connection, nodes: Sequence[Node]) -> None:
    """Store subtree roots; one already stored is left as it is (another
    signer stored the same subtree of the append-only log)."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    for i in range(0, len(nodes), INSERT_CHUNK):
        rows = [{"level": n.level, "idx": n.index, "hash": n.hash} for n in nodes[i : i + INSERT_CHUNK]]
        conn.execute(dialect.insert(tree_nodes).on_conflict_do_nothing(), rows)


class TreeReader:
    """Subtree hashes of the log's first `size` leaves, read from one view
    of the store (a snapshot), each tile once."""

    def __init__(self, view: StoreView, size: int):
        self.view, self.size = view, size
        self._tiles: dict[tuple[int, int], list[bytes]] = {}
        self.tiles_read = 0

    def _tile(self, level: int, tile: int) -> list[bytes]:
        """The stored hashes of `level` (0: the leaves) with indexes
        tile * TILE .. , as many as the tree has complete."""
        key = (level, tile)
        if (found := self._tiles.get(key)) is not None:
            return found
        first = tile * TILE
        count = min(TILE, (self.size >> level) - first)
        self.tiles_read += 1
        if level == 0:
            events = self.view.log.read_all(first, count)
            hashes = []
            for i, e in enumerate(events):
                if e.position != first + i + 1:
                    raise IntegrityViolation("log", f"position {first + i + 1} is missing")
                hashes.append(leaf_hash(leaf_data(e.position, e.envelope())))
            if len(hashes) < count:
                raise IntegrityViolation("log", f"the log ends before position {first + count}")
        else:
            c = tree_nodes.c
            q = select(c.idx, c.hash).where(c.level == level, c.idx >= first, c.idx < first + count).order_by(c.idx)
            with self.view.read() as conn:
                rows = conn.execute(q).all()
            if [r.idx for r in rows] != list(range(first, first + count)):
                raise NodesMissing(f"the store's subtree hashes of level {level} are not filled in near index {first}")
            hashes = [bytes(r.hash) for r in rows]
        self._tiles[key] = hashes
        return hashes

    def perfect(self, level: int, index: int) -> bytes:
        """The root of the perfect subtree (level, index), from the stored level at or below it."""
        base = level - level % NODE_EVERY
        width = 1 << (level - base)
        first = index * width
        tile = self._tile(base, first // TILE)
        offset = first % TILE
        return perfect_root(tile[offset : offset + width])

    def subtree(self, lo: int, hi: int) -> bytes:
        """MTH of the leaves [lo, hi), a subtree of this tree."""
        if hi > self.size:
            raise ValueError(f"[{lo}, {hi}) is not within the tree of size {self.size}")
        return fold([self.perfect(level, index) for level, index in perfect_parts(lo, hi)])

    def inclusion(self, index: int) -> InclusionProof:
        path = tuple(self.subtree(lo, hi) for lo, hi in inclusion_path(index, self.size))
        return InclusionProof(index, self.size, self.perfect(0, index), path)

    def consistency(self, first: int) -> list[bytes]:
        return [self.subtree(lo, hi) for lo, hi in consistency_path(first, self.size)]

    def leaf_proofs(self, events: Iterable[LoggedEvent]) -> dict[int, LeafProof]:
        """Each event's leaf and inclusion proof, by position (those within the tree)."""
        return {
            e.position: LeafProof(leaf_data(e.position, e.envelope()), self.inclusion(e.position - 1))
            for e in events
            if 1 <= e.position <= self.size
        }


def nodes_complete(conn: Connection, size: int) -> bool:
    """Whether every stored level's hashes below tree size `size` are there
    (counted on the lowest stored level, which the others are built with)."""
    expected = size >> NODE_EVERY
    c = tree_nodes.c
    found = conn.execute(select(func.count()).where(c.level == NODE_EVERY, c.idx < expected)).scalar_one()
    return bool(found == expected)


def fill_nodes(store: EventStore, upto: int, root: bytes, page: int = 10_000) -> int:
    """Store the subtree hashes of the log's first `upto` events, in one
    pass (a store that held checkpoints before migration 0012); the pass must
    end at `root`, the root a checkpoint of that size signed, or nothing of
    it is trusted (IntegrityViolation). Returns how many hashes it stored."""
    frontier, stored, after = Frontier(), 0, 0
    while after < upto:
        events = store.log.read_all(after, min(page, upto - after))
        if not events:
            raise IntegrityViolation("log", f"the log ends at position {after}, before {upto}")
        hashes = []
        for e in events:
            if e.position != after + 1:
                raise IntegrityViolation("log", f"position {after + 1} is missing")
            hashes.append(leaf_hash(leaf_data(e.position, e.envelope())))
            after = e.position
        frontier, nodes = frontier.extend_nodes(hashes)
        with store.writer.begin() as conn:
            insert_nodes(conn, nodes)
        stored += len(nodes)
    if frontier.root() != root:
        # What was stored is of no use to a forger: a proof from it fails against every signed root.
        raise IntegrityViolation("checkpoints", f"the log's first {upto} events do not have the root of its checkpoint")
    return stored


def unfilled(store: EventStore) -> tuple[int, bytes] | None:
    """The latest checkpoint (its size and root) when the subtree hashes
    below it are not all stored (a store that held checkpoints before
    migration 0012); None when there is nothing to fill in."""
    c = checkpoints.c
    with store.reader.begin() as conn:
        row = conn.execute(select(c.tree_size, c.root_hash).order_by(c.tree_size.desc()).limit(1)).first()
        if row is None or nodes_complete(conn, row.tree_size):
            return None
    return row.tree_size, bytes.fromhex(row.root_hash)
