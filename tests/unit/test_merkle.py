"""RFC 6962 Merkle tree hashing (service/domain/merkle.py): the frontier agrees
with the recursive definition, and both agree with the published vectors."""

from __future__ import annotations

import hashlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pinlife.domain.merkle import EMPTY_ROOT, Frontier, leaf_hash, node_hash, root_of

# Test data of the Certificate Transparency reference implementation
# (transparency-dev/merkle testonly/constants.go, from certificate-transparency-go).
CT_LEAVES = [
    bytes.fromhex(h) for h in ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"]
]
CT_ROOTS = [  # MTH of the first n leaves, n = 0..8
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
# Node hashes by level, then index: NodeHashes() of the same file.
CT_NODES = [
    [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
        "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
        "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
        "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
    ],
    [
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
    ],
    [
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    ["5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"],
]
# The compact range of each size 0..8, as (level, index) into CT_NODES: CompactTrees().
CT_COMPACT = [
    [],
    [(0, 0)],
    [(1, 0)],
    [(1, 0), (0, 2)],
    [(2, 0)],
    [(2, 0), (0, 4)],
    [(2, 0), (1, 2)],
    [(2, 0), (1, 2), (0, 6)],
    [(3, 0)],
]


def test_hash_primitives():
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert leaf_hash(b"abc") == hashlib.sha256(b"\x00abc").digest()
    assert node_hash(b"L" * 32, b"R" * 32) == hashlib.sha256(b"\x01" + b"L" * 32 + b"R" * 32).digest()
    assert leaf_hash(b"") != EMPTY_ROOT  # the domain separation matters


@pytest.mark.parametrize("n", range(len(CT_LEAVES) + 1))
def test_roots_match_the_ct_reference_vectors(n):
    assert root_of(CT_LEAVES[:n]).hex() == CT_ROOTS[n]
    assert Frontier().extend(CT_LEAVES[:n]).root().hex() == CT_ROOTS[n]


def test_leaf_and_node_hashes_match_the_ct_reference_vectors():
    assert [leaf_hash(d).hex() for d in CT_LEAVES] == CT_NODES[0]
    for level in range(1, len(CT_NODES)):
        below = [bytes.fromhex(h) for h in CT_NODES[level - 1]]
        assert [node_hash(a, b).hex() for a, b in zip(below[::2], below[1::2])] == CT_NODES[level]


def test_frontier_hashes_are_the_ct_compact_ranges():
    f = Frontier()
    for n in range(len(CT_LEAVES) + 1):
        assert f.size == n
        assert [h.hex() for h in f.hashes] == [CT_NODES[lvl][i] for lvl, i in CT_COMPACT[n]]
        if n < len(CT_LEAVES):
            f = f.append(CT_LEAVES[n])


leaf_lists = st.lists(st.binary(max_size=12), max_size=70)


@settings(max_examples=150, deadline=None)
@given(leaf_lists)
def test_frontier_root_is_the_rfc6962_root_for_every_prefix(leaves):
    f = Frontier()
    assert f.root() == root_of([]) == EMPTY_ROOT
    for n, leaf in enumerate(leaves, start=1):
        f = f.append(leaf)
        assert f.size == n
        assert len(f.hashes) == n.bit_count()
        assert f.root() == root_of(leaves[:n])
    assert Frontier().extend(leaves) == f


@settings(max_examples=100, deadline=None)
@given(leaf_lists, leaf_lists)
def test_extend_in_two_steps_is_extend_at_once(a, b):
    f = Frontier().extend(a)
    assert f.extend(b) == Frontier().extend(a + b)
    assert f.extend([]) == f  # and the original is untouched
    assert f == Frontier().extend(a)


def test_frontier_is_immutable_and_hashable():
    f = Frontier().append(b"x")
    with pytest.raises(AttributeError):
        f.size = 2  # type: ignore[misc]
    assert hash(f) == hash(Frontier().append(b"x"))


def test_frontier_validates_its_fields():
    h = b"\x00" * 32
    with pytest.raises(ValueError):
        Frontier(-1, ())
    with pytest.raises(ValueError):
        Frontier(3, (h,))  # popcount(3) == 2
    with pytest.raises(ValueError):
        Frontier(1, (b"short",))
    with pytest.raises(ValueError):
        Frontier(True, (h,))  # type: ignore[arg-type]
    assert Frontier(5, (h, h)).size == 5


@settings(max_examples=60, deadline=None)
@given(leaf_lists)
def test_json_round_trip(leaves):
    f = Frontier().extend(leaves)
    assert Frontier.from_json(f.to_json()) == f
    assert Frontier.from_json(f.to_json().encode()) == f


def test_json_shape():
    f = Frontier().extend(CT_LEAVES[:3])
    assert json.loads(f.to_json()) == {"size": 3, "hashes": [CT_NODES[1][0], CT_NODES[0][2]]}
    assert Frontier.from_json('{"size":0,"hashes":[]}') == Frontier()


GOOD_HEX = "ab" * 32


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not json",
        "[]",
        '{"size": 1}',
        '{"hashes": []}',
        '{"size": 1, "hashes": [], "extra": 1}',
        f'{{"size": 2, "hashes": ["{GOOD_HEX}", "{GOOD_HEX}"]}}',  # popcount(2) == 1
        '{"size": 1, "hashes": []}',
        '{"size": 0, "hashes": ["' + GOOD_HEX + '"]}',
        '{"size": -1, "hashes": []}',
        '{"size": 1.0, "hashes": ["' + GOOD_HEX + '"]}',
        '{"size": "1", "hashes": ["' + GOOD_HEX + '"]}',
        '{"size": true, "hashes": ["' + GOOD_HEX + '"]}',
        '{"size": 1, "hashes": "' + GOOD_HEX + '"}',
        '{"size": 1, "hashes": ["' + GOOD_HEX[:-2] + '"]}',  # 31 bytes
        '{"size": 1, "hashes": ["' + GOOD_HEX + 'ab"]}',  # 33 bytes
        '{"size": 1, "hashes": ["' + GOOD_HEX.upper() + '"]}',
        '{"size": 1, "hashes": ["' + "zz" * 32 + '"]}',
        '{"size": 1, "hashes": ["' + "ab " * 31 + 'ab"]}',  # fromhex would take it
        '{"size": 1, "hashes": [1]}',
    ],
)
def test_from_json_rejects_bad_input(text):
    with pytest.raises(ValueError):
        Frontier.from_json(text)
