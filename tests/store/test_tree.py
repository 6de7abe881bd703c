"""Proofs served from the store (service/store/tree.py), on SQLite and
PostgreSQL: the subtree hashes the signer stores as it signs give the same
inclusion and consistency proofs as the whole tree in memory, each proof
checked by the auditor's own verifier (service/cli/proofs.py); a proof reads
a bounded number of tiles, never the log; a store that held checkpoints
before the hashes were kept is filled in by `pinlife migrate` (fill_nodes),
and until then a proof says so instead of reading the log."""

from __future__ import annotations

import math

import pytest
from sqlalchemy import delete, func, select

from pinlife.cli import proofs as verifier
from pinlife.domain.chain import leaf_data
from pinlife.domain.merkle import NODE_EVERY, tree_proofs
from pinlife.store import checkpoints
from pinlife.store.tables import tree_nodes
from pinlife.store.tree import NodesMissing, TreeReader, fill_nodes, unfilled
from tests.store.test_checkpoints import grow_to

SIGNED = [1, 17, 100, 256, 300]  # the sizes signed, in this order: within a tile, past one, past level 8


def leaves(store) -> list[bytes]:
    return [leaf_data(e.position, e.envelope()) for e in store.log.all_events()]


def roots(store) -> dict[int, bytes]:
    return {c.tree_size: bytes.fromhex(c.root_hash) for c in checkpoints.stored(store)}


@pytest.fixture
def signed(store, writer, keys, clock):
    for n in SIGNED:
        grow_to(writer, store, n)
        assert checkpoints.sign_checkpoint(store, keys, clock()).tree_size == n
    return roots(store)


def node_count(store) -> int:
    with store.reader.begin() as conn:
        return conn.execute(select(func.count()).select_from(tree_nodes)).scalar_one()


def test_stored_proofs_are_the_trees_and_verify_against_the_signed_roots(store, signed):
    data = leaves(store)
    inclusion, consistency = tree_proofs(data)
    assert node_count(store) == 300 // 16 + 300 // 256  # one per completed subtree of level 4 and 8
    for size in SIGNED:
        with store.snapshot() as view:
            tree = TreeReader(view, size)
            for index in sorted({0, 1, size // 2, size - 2, size - 1} & set(range(size))):
                proof = tree.inclusion(index)
                assert proof == inclusion(index, size)
                verifier.verify_inclusion(index, size, verifier.hash_leaf(data[index]), proof.path, signed[size])
            for first in SIGNED:
                if first <= size:
                    path = tree.consistency(first)
                    assert path == consistency(first, size)
                    verifier.verify_consistency(first, size, signed[first], signed[size], path)
            # Bounded: per proof, at most two tiles per stored level (left and right siblings).
            assert tree.tiles_read <= 2 * (math.ceil(math.log2(size + 1) / NODE_EVERY) + 1) * 2


def test_one_inclusion_proof_reads_a_few_tiles_not_the_log(store, signed):
    with store.snapshot() as view:
        tree = TreeReader(view, 300)
        tree.inclusion(137)
        # Leaves of 137's tile, its level-4 tile, the right edge's tiles (256..299), the level-8 one.
        assert tree.tiles_read <= 6


def test_a_store_signed_before_the_hashes_were_kept_is_filled_in_and_until_then_says_so(store, signed):
    with store.writer.begin() as conn:
        conn.execute(delete(tree_nodes))
    assert unfilled(store) == (300, signed[300])
    with store.snapshot() as view, pytest.raises(NodesMissing):
        TreeReader(view, 300).inclusion(3)
    assert fill_nodes(store, 300, signed[300], page=64) == 300 // 16 + 300 // 256
    assert unfilled(store) is None
    data = leaves(store)
    with store.snapshot() as view:
        proof = TreeReader(view, 256).inclusion(200)
    verifier.verify_inclusion(200, 256, verifier.hash_leaf(data[200]), proof.path, signed[256])


def test_signing_again_over_stored_hashes_keeps_them(store, writer, keys, clock, signed):
    """Two signers extending the same frontier store the same subtrees: the second's are left as they are."""
    before = node_count(store)
    with store.writer.begin() as conn:
        conn.execute(delete(checkpoints.checkpoints).where(checkpoints.checkpoints.c.tree_size == 300))
    assert checkpoints.sign_checkpoint(store, keys, clock()).tree_size == 300
    assert node_count(store) == before
