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

Proofs, later: an inclusion or consistency proof also needs interior nodes
that the frontier has already folded away (the right siblings of an old
leaf's path, the subtrees of [m, n) between two sizes). They are served either
from stored per-level hashes (Go's sumdb/tlog keeps every perfect subtree root,
indexed by StoredHashIndex) or by recomputing the subtree roots from the
leaves. The frontier of size m is exactly the left part of a consistency proof
from m: its hashes fold to MTH of the first m leaves.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
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
