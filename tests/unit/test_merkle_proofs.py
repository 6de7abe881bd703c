"""Inclusion and consistency proofs (RFC 9162 §2.1.3, §2.1.4), both
implementations against the same published vectors: the server's tree
(service/domain/merkle.py) makes the published proofs from the published
leaves; the auditor's verifier (service/cli/proofs.py, which imports nothing
of the server's) accepts them and refuses each corruption of them. Then, for
any tree size and leaf (hypothesis), the server's proof verifies, and any bit
flipped in it, or another size, does not.

The vectors are those of transparency-dev/merkle at commit
417fb0c314750d94e53942e9f92e79b6d35915db (github.com/transparency-dev/merkle):
- testonly/constants.go: LeafInputs() (the 8 leaves) and RootHashes();
- cmd/proofgen/main.go: inclusionProofs and consistencyProofs (leaf indexes
  there count from 1), and the corruptions its probes apply
  (invalidInclusionProof, and the consistency ones), which this file applies
  the same way. proofgen writes them out as testdata/inclusion/*/*.json and
  testdata/consistency/*/*.json in that repository; the JSON files themselves
  are not copied here.
"""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pinlife.cli import proofs as auditor
from pinlife.domain import merkle
from tests.unit.test_merkle import CT_LEAVES, CT_ROOTS

# The same leaves and roots as tests/unit/test_merkle.py (testonly/constants.go).
LEAVES, ROOTS = CT_LEAVES, CT_ROOTS
INCLUSION = [  # inclusionProofs: (leaf index from 1, tree size, proof)
    (1, 1, []),
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (3, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        2,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]
CONSISTENCY = [  # consistencyProofs: (size1, size2, proof)
    (1, 1, []),
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
]
SOME_HASH = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")  # proofgen's sha256SomeHash
EMPTY_ROOT = bytes.fromhex(ROOTS[0])


def root(n: int) -> bytes:
    return bytes.fromhex(ROOTS[n])


def hexes(path) -> list[str]:
    return [h.hex() for h in path]


# -- the server's tree makes the published proofs ------------------------------------------
@pytest.mark.parametrize("leaf, size, proof", INCLUSION)
def test_the_servers_tree_makes_the_published_inclusion_proofs(leaf, size, proof):
    inclusion, _ = merkle.tree_proofs(LEAVES)
    made = inclusion(leaf - 1, size)
    assert hexes(made.path) == proof and made.leaf_hash == merkle.leaf_hash(LEAVES[leaf - 1])
    assert merkle.root_of(LEAVES[:size]) == root(size)


@pytest.mark.parametrize("first, second, proof", CONSISTENCY)
def test_the_servers_tree_makes_the_published_consistency_proofs(first, second, proof):
    _, consistency = merkle.tree_proofs(LEAVES)
    assert hexes(consistency(first, second)) == proof


def test_the_stored_nodes_are_the_published_subtree_hashes():
    """Every 2nd level here (every NODE_EVERY-th in the store): the published NodeHashes of levels 2 and 0 above it."""
    frontier, nodes = merkle.Frontier().extend_nodes((merkle.leaf_hash(x) for x in LEAVES), every=2)
    assert frontier.root() == root(8)
    assert [(n.level, n.index, n.hash.hex()) for n in nodes] == [
        (2, 0, "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        (2, 1, "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
    ]


# -- the auditor's verifier accepts them and refuses every corruption ---------------------
def inclusion_corruptions(index: int, size: int, leaf: bytes, path: list[bytes], r: bytes):
    """cmd/proofgen's invalidInclusionProof, as (description, index, size, leaf, path, root)."""
    yield "leafIdx sub @1", index - 1, size, leaf, path, r
    yield "leafIdx plus @1", index + 1, size, leaf, path, r
    yield "leafIdx XOR @2", index ^ 2, size, leaf, path, r
    yield "treeSize mul @2", index, size * 2, leaf, path, r
    yield "treeSize div @2", index, size // 2, leaf, path, r
    yield "wrong leaf", index, size, b"WrongLeaf", path, r
    yield "empty root", index, size, leaf, path, EMPTY_ROOT
    yield "random root", index, size, leaf, path, SOME_HASH
    yield "trailing garbage", index, size, leaf, [*path, b""], r
    yield "trailing root", index, size, leaf, [*path, r], r
    yield "preceding garbage", index, size, leaf, [b"", *path], r
    yield "preceding root", index, size, leaf, [r, *path], r
    for i in range(len(path)):
        flipped = list(path)
        flipped[i] = bytes([path[i][0] ^ 8]) + path[i][1:]
        yield f"modified proof[{i}] bit @3", index, size, leaf, flipped, r
    if path:
        yield "removed component", index, size, leaf, path[:-1], r
        for i in range(len(path) + 1):
            yield f"inserted component @{i}", index, size, leaf, [*path[:i], SOME_HASH, *path[i:]], r


@pytest.mark.parametrize("leaf, size, proof", INCLUSION)
def test_the_auditor_accepts_the_published_inclusion_proofs_and_refuses_each_corruption(leaf, size, proof):
    index, leaf_hash, path = leaf - 1, merkle.leaf_hash(LEAVES[leaf - 1]), [bytes.fromhex(h) for h in proof]
    auditor.verify_inclusion(index, size, leaf_hash, path, root(size))
    for desc, *args in inclusion_corruptions(index, size, leaf_hash, path, root(size)):
        with pytest.raises(auditor.ProofError):
            auditor.verify_inclusion(*args)
            pytest.fail(desc)


def consistency_corruptions(first: int, second: int, path: list[bytes], r1: bytes, r2: bytes):
    """cmd/proofgen's invalidConsistencyProof, as (description, size1, size2, root1, root2, path)."""
    yield "size1 sub @1", first - 1, second, r1, r2, path
    yield "size1 plus @1", first + 1, second, r1, r2, path
    yield "size1 XOR @2", first ^ 2, second, r1, r2, path
    yield "size2 mul @2", first, second * 2, r1, r2, path
    yield "size2 div @2", first, second // 2, r1, r2, path
    yield "wrong root1", first, second, b"WrongRoot", r2, path
    yield "wrong root2", first, second, r1, b"WrongRoot", path
    yield "swapped roots", first, second, r2, r1, path
    yield "empty proof", first, second, r1, r2, []
    yield "trailing garbage", first, second, r1, r2, [*path, b""]
    yield "trailing root1", first, second, r1, r2, [*path, r1]
    yield "trailing root2", first, second, r1, r2, [*path, r2]
    yield "preceding garbage", first, second, r1, r2, [b"", *path]
    yield "preceding root1", first, second, r1, r2, [r1, *path]
    yield "preceding root2", first, second, r1, r2, [r2, *path]
    yield "preceding proof @0", first, second, r1, r2, [path[0], *path]
    yield "truncated proof", first, second, r1, r2, path[:-1]
    for i in range(len(path)):
        flipped = list(path)
        flipped[i] = bytes([path[i][0] ^ 16]) + path[i][1:]
        yield f"modified proof@{i} bit @4", first, second, r1, r2, flipped


@pytest.mark.parametrize("first, second, proof", CONSISTENCY)
def test_the_auditor_accepts_the_published_consistency_proofs_and_refuses_each_corruption(first, second, proof):
    path = [bytes.fromhex(h) for h in proof]
    auditor.verify_consistency(first, second, root(first), root(second), path)
    if not path:
        return  # proofgen corrupts only the non-trivial proofs
    for desc, *args in consistency_corruptions(first, second, path, root(first), root(second)):
        with pytest.raises(auditor.ProofError):
            auditor.verify_consistency(*args)
            pytest.fail(desc)


def test_the_published_edge_cases():
    """testdata/consistency/additional and inclusion/single-entry, as proofgen writes them."""
    one = merkle.leaf_hash(b"")
    auditor.verify_inclusion(0, 1, one, [], one)  # matching root and leaf
    for leaf, r in ((b"", one), (one, b""), (b"", b"")):
        with pytest.raises(auditor.ProofError):
            auditor.verify_inclusion(0, 1, leaf, [], r)
    auditor.verify_consistency(1, 1, b"don't care 2", b"don't care 2", [])  # sizes equal (one), proof empty
    for first, second, r1, r2, path in (
        (0, 0, b"x", b"x", []),  # sizes equal zero
        (1, 1, b"x", b"y", []),  # equal sizes, different roots
        (1, 1, b"x", b"x", [b"x"]),  # equal sizes, a proof
        (2, 1, root(2), root(1), []),  # size1 greater than size2
        (0, 1, EMPTY_ROOT, root(1), []),  # size1 zero
        (1, 2, root(1), root(2), []),  # sizes differ, proof empty
    ):
        with pytest.raises(auditor.ProofError):
            auditor.verify_consistency(first, second, r1, r2, path)


# -- any tree, any leaf (hypothesis) --------------------------------------------------------
def tree(n: int) -> list[bytes]:
    return [hashlib.sha256(i.to_bytes(4, "big")).digest()[: i % 7] for i in range(n)]


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 300).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n - 1), st.integers(0, 8 * 32 * 9))))
def test_any_inclusion_proof_verifies_and_no_flipped_bit_does(case):
    size, index, bit = case
    leaves = tree(size)
    inclusion, _ = merkle.tree_proofs(leaves)
    proof = inclusion(index, size)
    r = merkle.root_of(leaves)
    auditor.verify_inclusion(index, size, auditor.hash_leaf(leaves[index]), proof.path, r)
    if proof.path:
        path = list(proof.path)
        i, b = (bit // 256) % len(path), bit % 256
        path[i] = (int.from_bytes(path[i], "big") ^ (1 << b)).to_bytes(32, "big")
        with pytest.raises(auditor.ProofError):
            auditor.verify_inclusion(index, size, auditor.hash_leaf(leaves[index]), path, r)
    if size > 1:
        with pytest.raises(auditor.ProofError):  # the proof of another tree size
            auditor.verify_inclusion(index, size, auditor.hash_leaf(leaves[index]), proof.path, merkle.root_of(leaves[:-1]))


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 300).flatmap(lambda n: st.tuples(st.integers(1, n), st.just(n), st.integers(0, 8 * 32 * 9))))
def test_any_consistency_proof_verifies_and_no_flipped_bit_does(case):
    first, second, bit = case
    leaves = tree(second)
    _, consistency = merkle.tree_proofs(leaves)
    path = consistency(first, second)
    r1, r2 = merkle.root_of(leaves[:first]), merkle.root_of(leaves)
    auditor.verify_consistency(first, second, r1, r2, path)
    if path:
        i, b = (bit // 256) % len(path), bit % 256
        bad = list(path)
        bad[i] = (int.from_bytes(bad[i], "big") ^ (1 << b)).to_bytes(32, "big")
        with pytest.raises(auditor.ProofError):
            auditor.verify_consistency(first, second, r1, r2, bad)
        with pytest.raises(auditor.ProofError):  # a log that does not extend the kept tree
            auditor.verify_consistency(first, second, r1, merkle.root_of([*leaves[:-1], b"other"]), path)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 600), st.integers(1, 600))
def test_the_stored_nodes_are_every_perfect_subtree_of_their_levels_and_rebuild_any_range(before, after):
    """What the signer stores, extending a checkpoint's frontier, is the same whatever the steps."""
    leaves = [merkle.leaf_hash(x) for x in tree(before + after)]
    first, early = merkle.Frontier().extend_nodes(leaves[:before])
    _, late = first.extend_nodes(leaves[before:])
    nodes = {(n.level, n.index): n.hash for n in early + late}
    _, whole = merkle.Frontier().extend_nodes(leaves)
    assert nodes == {(n.level, n.index): n.hash for n in whole}
    n = before + after
    assert set(nodes) == {(lv, i) for lv in range(merkle.NODE_EVERY, n.bit_length(), merkle.NODE_EVERY) for i in range(n >> lv)}
