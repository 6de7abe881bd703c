"""Merkle tree hashing of RFC 6962 / RFC 9162 (Certificate Transparency), the
tree a checkpoint's root hash commits to.

    leaf hash  = SHA-256(0x00 || leaf data)
    node hash  = SHA-256(0x01 || left || right)
    MTH([])    = SHA-256("")
    MTH(D[n])  = node hash(MTH(D[0:k]), MTH(D[k:n])), k the largest power of
                 two below n

A `Frontier` is the tree's compact range [0, size): the roots of its perfect
subtrees, left to right, one per set bit of `size` (largest first). It is all
an append-only log needs to keep to go on appending and to compute its root.

Proofs (RFC 9162 §2.1.3, §2.1.4): `inclusion_path` and `consistency_path`
name the subtrees whose hashes make a proof, as ranges [lo, hi) of leaves;
the store hashes them (service/store/tree.py) from the perfect subtree roots
kept at every NODE_EVERY-th level (`Frontier.extend_nodes` hands them over as
they complete) and, below the lowest such level, from the leaves themselves.
Any range of the tree is at most log2(n) perfect subtrees, each at most
2^(NODE_EVERY - 1) stored hashes: a proof reads O(log n) hashes.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

_HEX_HASH = re.compile(r"[0-9a-f]{64}")


def leaf_hash(data: bytes) -> bytes:
    """The hash of a leaf: SHA-256(0x00 || data)."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """The hash of an interior node: SHA-256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def root_of(leaves: Sequence[bytes]) -> bytes:
    """MTH of the leaves (their data, not their hashes), by the recursive
    definition of RFC 6962 §2.1. Holds every leaf hash in memory: to recompute
    the root of a long log from a stream, use Frontier().extend(...).root()."""
    hashes = [leaf_hash(d) for d in leaves]

    def mth(lo: int, hi: int) -> bytes:
        n = hi - lo
        if n == 1:
            return hashes[lo]
        k = 1 << ((n - 1).bit_length() - 1)  # the largest power of two < n
        return node_hash(mth(lo, lo + k), mth(lo + k, hi))

    return mth(0, len(hashes)) if hashes else EMPTY_ROOT


@dataclass(frozen=True, slots=True)
class Frontier:
    """The compact range of a tree of `size` leaves: the roots of its perfect
    subtrees, left to right (len(hashes) == popcount(size)). Immutable: append
    and extend return a new frontier."""

    size: int = 0
    hashes: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 0:
            raise ValueError(f"frontier size must be a non-negative int, not {self.size!r}")
        if len(self.hashes) != self.size.bit_count():
            raise ValueError(f"a frontier of size {self.size} has {self.size.bit_count()} hashes, not {len(self.hashes)}")
        if any(not isinstance(h, bytes) or len(h) != HASH_SIZE for h in self.hashes):
            raise ValueError("frontier hashes must be 32-byte values")

    def append(self, leaf: bytes) -> Frontier:
        """The frontier with one more leaf (its data). Amortised one hash
        besides the leaf's own, at most log2(size) + 1."""
        return self.extend((leaf,))

    def extend(self, leaves: Iterable[bytes]) -> Frontier:
        """The frontier with the leaves (their data) appended in order."""
        return self.extend_hashed(leaf_hash(data) for data in leaves)

    def extend_hashed(self, leaf_hashes: Iterable[bytes]) -> Frontier:
        """The frontier with leaves appended in order, given their leaf_hash."""
        size, hashes = self.size, list(self.hashes)
        for h in leaf_hashes:
            # Each trailing 1 bit of size is a perfect subtree of the new
            # leaf's height: merge it, as in a binary counter's carry.
            carry = size
            while carry & 1:
                h = node_hash(hashes.pop(), h)
                carry >>= 1
            hashes.append(h)
            size += 1
        return Frontier(size, tuple(hashes))

    def root(self) -> bytes:
        """MTH of the tree: the subtree roots folded from right to left."""
        if not self.hashes:
            return EMPTY_ROOT
        root = self.hashes[-1]
        for h in reversed(self.hashes[:-1]):
            root = node_hash(h, root)
        return root

    def to_json(self) -> str:
        """{"size": n, "hashes": [lowercase hex, ...]}, for storage."""
        return json.dumps({"size": self.size, "hashes": [h.hex() for h in self.hashes]}, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> Frontier:
        """The frontier to_json wrote; ValueError on anything else."""
        try:
            doc = json.loads(text)
        except ValueError as e:
            raise ValueError(f"frontier is not JSON: {e}") from None
        if not isinstance(doc, dict) or set(doc) != {"size", "hashes"}:
            raise ValueError('frontier JSON must be an object with exactly "size" and "hashes"')
        size, hashes = doc["size"], doc["hashes"]
        if not isinstance(hashes, list) or not all(isinstance(h, str) and _HEX_HASH.fullmatch(h) for h in hashes):
            raise ValueError("frontier hashes must be a list of 64 lowercase hex digits each")
        return cls(size, tuple(bytes.fromhex(h) for h in hashes))

    def extend_nodes(self, leaf_hashes: Iterable[bytes], every: int | None = None) -> tuple[Frontier, list[Node]]:
        """The frontier with leaves appended (given their leaf_hash), and the
        perfect subtrees completed on the way whose level is a positive
        multiple of `every` (NODE_EVERY): the hashes a store keeps to serve
        proofs. One node per 2^every leaves, amortised."""
        every = NODE_EVERY if every is None else every
        size, hashes = self.size, list(self.hashes)
        nodes: list[Node] = []
        for h in leaf_hashes:
            carry, level = size, 0
            while carry & 1:
                h = node_hash(hashes.pop(), h)
                carry >>= 1
                level += 1
                if level % every == 0:
                    nodes.append(Node(level, size >> level, h))
            hashes.append(h)
            size += 1
        return Frontier(size, tuple(hashes)), nodes


NODE_EVERY = 4  # the levels whose perfect subtree roots a store keeps (every 4th: 1 hash per 15 leaves)


@dataclass(frozen=True, slots=True)
class Node:
    """The root of a perfect subtree: `level` (0: a leaf) and its `index` at
    that level, i.e. the leaves [index * 2^level, (index + 1) * 2^level)."""

    level: int
    index: int
    hash: bytes


def _split(n: int) -> int:
    """The largest power of two below n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


Range = tuple[int, int]  # [lo, hi): a subtree of the tree, by its leaves


def inclusion_path(index: int, size: int) -> list[Range]:
    """The subtrees whose hashes make the inclusion proof of leaf `index` in
    the tree of `size` leaves (RFC 9162 §2.1.3.1 PATH), leaf to root."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of size {size}")
    path: list[Range] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            path.append((lo + k, hi))
            hi = lo + k
        else:
            path.append((lo, lo + k))
            lo += k
    return path[::-1]


def consistency_path(first: int, second: int) -> list[Range]:
    """The subtrees whose hashes make the consistency proof from the tree of
    `first` leaves to the tree of `second` (RFC 9162 §2.1.4.1 SUBPROOF with
    b = true), in the proof's order. Empty when the sizes are equal."""
    if not 0 < first <= second:
        raise ValueError(f"no consistency proof from size {first} to {second}")
    path: list[Range] = []
    lo, hi, m, whole = 0, second, first, True
    while m != hi - lo:
        k = _split(hi - lo)
        if m <= k:
            path.append((lo + k, hi))
            hi = lo + k
        else:
            path.append((lo, lo + k))
            lo, m, whole = lo + k, m - k, False
    if not whole:
        path.append((lo, hi))
    return path[::-1]


def perfect_parts(lo: int, hi: int) -> list[tuple[int, int]]:
    """The perfect subtrees (level, index) that make up the subtree [lo, hi)
    of an RFC 6962 tree (lo a multiple of a power of two >= hi - lo), left to
    right: one per set bit of hi - lo, largest first."""
    if not 0 <= lo < hi or lo % (1 << (hi - lo - 1).bit_length()):
        raise ValueError(f"[{lo}, {hi}) is not a subtree")
    parts, at = [], lo
    for level in range((hi - lo).bit_length() - 1, -1, -1):
        if (hi - lo) >> level & 1:
            parts.append((level, at >> level))
            at += 1 << level
    return parts


def fold(hashes: Sequence[bytes]) -> bytes:
    """The root of consecutive perfect subtrees, largest first (as a
    frontier's, or perfect_parts'): folded right to left."""
    root = hashes[-1]
    for h in reversed(hashes[:-1]):
        root = node_hash(h, root)
    return root


def perfect_root(hashes: Sequence[bytes]) -> bytes:
    """The root of a perfect subtree from its 2^k nodes at one level, left to right."""
    level = list(hashes)
    if not level or len(level) & (len(level) - 1):
        raise ValueError(f"{len(level)} nodes are not a perfect subtree")
    while len(level) > 1:
        level = [node_hash(level[i], level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


@dataclass(frozen=True, slots=True)
class InclusionProof:
    leaf_index: int
    tree_size: int
    leaf_hash: bytes
    path: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class LeafProof:
    """An event's leaf (position and canonical envelope, chain.leaf_data) and
    its inclusion proof: what a page of history carries to be checked offline."""

    leaf_data: bytes
    proof: InclusionProof


def tree_proofs(leaves: Sequence[bytes]) -> tuple[Callable[[int, int], InclusionProof], Callable[[int, int], list[bytes]]]:
    """Inclusion and consistency proofs over leaves held in memory (their
    data): for tests and small trees; a store serves them from its nodes."""
    hashes = [leaf_hash(d) for d in leaves]

    def subtree(lo: int, hi: int) -> bytes:
        return fold([perfect_root(hashes[i << lv : (i + 1) << lv]) for lv, i in perfect_parts(lo, hi)])

    def inclusion(index: int, size: int) -> InclusionProof:
        if size > len(hashes):
            raise ValueError(f"the tree has {len(hashes)} leaves, not {size}")
        return InclusionProof(index, size, hashes[index], tuple(subtree(lo, hi) for lo, hi in inclusion_path(index, size)))

    def consistency(first: int, second: int) -> list[bytes]:
        if second > len(hashes):
            raise ValueError(f"the tree has {len(hashes)} leaves, not {second}")
        return [subtree(lo, hi) for lo, hi in consistency_path(first, second)]

    return inclusion, consistency
