"""The auditor's own check of Merkle proofs (RFC 9162 §2.1.3.2 and §2.1.4.2),
written apart from the server's tree (service/domain/merkle.py) and
importing nothing of it: a proof is checked here with no code the server
runs, against a root the auditor keeps.

    leaf hash = SHA-256(0x00 || leaf data)     node hash = SHA-256(0x01 || left || right)

Every rejection raises ProofError, whose `kind` names what failed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

SIZE = 32


class ProofError(ValueError):
    """A proof that does not prove: kind is "malformed" (wrong sizes, a hash
    not of 32 bytes, a path of the wrong length) or "mismatch" (the path does
    not lead to the root it must)."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def hash_leaf(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _check_hashes(path: Sequence[bytes], *named: tuple[str, bytes]) -> None:
    for name, h in named:
        if len(h) != SIZE:
            raise ProofError("malformed", f"the {name} has {len(h)} bytes, not {SIZE}")
    for i, h in enumerate(path):
        if len(h) != SIZE:
            raise ProofError("malformed", f"hash {i} of the proof has {len(h)} bytes, not {SIZE}")


def verify_inclusion(leaf_index: int, tree_size: int, leaf_hash: bytes, path: Sequence[bytes], root: bytes) -> None:
    """That the leaf of this hash is at leaf_index in the tree of tree_size
    leaves whose root is `root` (RFC 9162 §2.1.3.2)."""
    _check_hashes(path, ("leaf hash", leaf_hash), ("root", root))
    if not 0 <= leaf_index < tree_size:
        raise ProofError("malformed", f"leaf {leaf_index} is not in a tree of size {tree_size}")
    fn, sn, r = leaf_index, tree_size - 1, leaf_hash
    for p in path:
        if sn == 0:
            raise ProofError("malformed", f"the proof is longer than a tree of size {tree_size} needs")
        if fn & 1 or fn == sn:
            r = _node(p, r)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = _node(r, p)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofError("malformed", f"the proof is shorter than a tree of size {tree_size} needs")
    if r != root:
        raise ProofError("mismatch", f"the proof does not lead to the root of the tree of size {tree_size}")


def verify_consistency(first_size: int, second_size: int, first_root: bytes, second_root: bytes, path: Sequence[bytes]) -> None:
    """That the tree of first_size leaves and root first_root is a prefix of
    the tree of second_size leaves and root second_root (RFC 9162 §2.1.4.2)."""
    if not 0 < first_size <= second_size:
        raise ProofError("malformed", f"no consistency proof goes from size {first_size} to {second_size}")
    if first_size == second_size:
        if path:
            raise ProofError("malformed", "a proof between equal sizes must be empty")
        if first_root != second_root:
            raise ProofError("mismatch", f"two different roots for the tree of size {first_size}")
        return
    _check_hashes(path, ("first root", first_root), ("second root", second_root))
    if not path:
        raise ProofError("malformed", "the proof is empty")
    nodes = list(path)
    if first_size & (first_size - 1) == 0:  # a power of two: the first tree is a node of the second
        nodes.insert(0, first_root)
    fn, sn = first_size - 1, second_size - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = nodes[0]
    for c in nodes[1:]:
        if sn == 0:
            raise ProofError("malformed", f"the proof is longer than from size {first_size} to {second_size} needs")
        if fn & 1 or fn == sn:
            fr, sr = _node(c, fr), _node(c, sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = _node(sr, c)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofError("malformed", f"the proof is shorter than from size {first_size} to {second_size} needs")
    if fr != first_root:
        raise ProofError("mismatch", f"the proof does not lead to the kept root of the tree of size {first_size}")
    if sr != second_root:
        raise ProofError("mismatch", f"the proof does not lead to the root of the tree of size {second_size}")


def leaf_fields(leaf_data: bytes) -> tuple[int, dict]:
    """The position and envelope a pinlife leaf commits to: 8 bytes of
    position (big-endian), then the event's canonical JSON envelope."""
    if len(leaf_data) < 9:
        raise ProofError("malformed", "the leaf is too short to hold a position and an envelope")
    try:
        envelope = json.loads(leaf_data[8:])
    except ValueError:
        raise ProofError("malformed", "the leaf's envelope is not JSON") from None
    if not isinstance(envelope, dict):
        raise ProofError("malformed", "the leaf's envelope is not a JSON object")
    return int.from_bytes(leaf_data[:8], "big"), envelope
