"""Inclusion and consistency proofs over a real gRPC channel, on SQLite and
PostgreSQL, each checked by the auditor's own verifier (service/cli/proofs.py)
against the roots of signed checkpoints; then `pinlife audit prove` and
`pinlife audit checkpoint` as an auditor runs them (SQLite), and what they
say when the store's tree hashes are forged or a checkpoint does not extend
the kept one. (Both trees against the published vectors and hypothesis:
tests/unit/test_merkle_proofs.py; the facade's rules: test_audit_proofs.py;
the store's reads: tests/store/test_tree.py.)"""

from __future__ import annotations

import json

import grpc
import pytest

from pinlife.cli import proofs as verifier
from pinlife.keys.notes import open_note, parse_checkpoint
from pinlife.runtime.clock import ServiceClock
from pinlife.store import checkpoints
from pinlife.v1 import audit_service_pb2 as apb
from tests.e2e.harness import Client, ThreadedServer
from tests.e2e.test_audit import NOW, lock_user_pin
from tests.e2e.test_audit_cli import pinlife
from tests.rpc import field_violations


@pytest.fixture
def server(db_url, keys):
    srv = ThreadedServer(db_url, keys, clock=ServiceClock(fixed=NOW))
    yield srv
    srv.close()


@pytest.fixture
def auditor(server):
    c = Client(server.target, terminal="auditor-e2e")
    yield c
    c.close()


def roots(store, keys) -> dict[int, bytes]:
    vkey = checkpoints.public_verifier_key(keys)
    return {c.tree_size: parse_checkpoint(open_note(c.note, [vkey])[0]).root for c in checkpoints.stored(store)}


def grow(server, cards: range) -> None:
    reader = Client(server.target, terminal="reader-01")
    for i in cards:
        lock_user_pin(reader, f"card-P{i}")
    reader.close()


def test_proofs_verify_against_signed_roots_and_sizes_not_signed_are_refused(server, auditor, keys):
    grow(server, range(2))
    first = checkpoints.sign_checkpoint(server.store, keys, NOW).tree_size
    grow(server, range(2, 4))
    second = checkpoints.sign_checkpoint(server.store, keys, NOW).tree_size
    signed = roots(server.store, keys)
    assert second > 16  # past the first stored level of subtree hashes

    for position in (1, first, second):
        r = auditor.audit.GetInclusionProof(apb.GetInclusionProofRequest(position=position, tree_size=second), timeout=10)
        assert (r.leaf_index, r.tree_size) == (position - 1, second)
        verifier.verify_inclusion(position - 1, second, r.leaf_hash, list(r.audit_path), signed[second])
    c = auditor.audit.GetConsistencyProof(apb.GetConsistencyProofRequest(first_size=first, second_size=second), timeout=10)
    verifier.verify_consistency(first, second, signed[first], signed[second], list(c.consistency_path))

    request = apb.GetCardHistoryRequest(card_id="card-P0", with_proofs=True, proof_tree_size=first)
    history = auditor.audit.GetCardHistory(request, timeout=10)
    assert history.proof_tree_size == first and len(history.events) == 6
    for e in history.events:
        leaf = verifier.hash_leaf(e.proof.leaf_data)
        verifier.verify_inclusion(e.position - 1, first, leaf, list(e.proof.audit_path), signed[first])

    with pytest.raises(grpc.RpcError) as err:
        auditor.audit.GetInclusionProof(apb.GetInclusionProofRequest(position=1, tree_size=second + 1000), timeout=10)
    assert err.value.code() == grpc.StatusCode.OUT_OF_RANGE and list(field_violations(err.value)) == ["tree_size"]
    with pytest.raises(grpc.RpcError) as err:
        auditor.audit.GetConsistencyProof(apb.GetConsistencyProofRequest(first_size=first + 1, second_size=second), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and list(field_violations(err.value)) == ["first_size"]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_the_cli_proves_a_cards_events_and_checkpoint_growth_and_names_what_fails(server, keys, tmp_path):
    kept = tmp_path / "kept.jsonl"

    def audit(*args: str):
        return pinlife("audit", *args, "--server", server.target, "--keep", str(kept))

    grow(server, range(4))
    checkpoints.sign_checkpoint(server.store, keys, NOW)
    assert audit("checkpoint").returncode == 0
    done = audit("prove", "card-P1", "--format", "table")
    assert done.returncode == 0, done.stderr
    assert "6 events of card card-P1 proved in the kept checkpoint" in done.stdout

    grow(server, range(4, 5))
    checkpoints.sign_checkpoint(server.store, keys, NOW)
    done = audit("verify", "--format", "table")  # fetches the latest, proves it extends the kept one
    assert done.returncode == 0, done.stdout + done.stderr
    assert "extends the kept one" in done.stdout and "consistency proof" in done.stdout
    rows = [json.loads(line) for line in audit("prove", "card-P4").stdout.splitlines()]
    assert [r["result"] for r in rows] == ["included"] * 6

    # The operator forges a stored subtree hash: every proof through it fails, named, exit 1.
    with server.store.writer.begin() as conn:
        conn.exec_driver_sql(
            "UPDATE tree_nodes SET hash = zeroblob(32) WHERE level = 4 AND idx = 1"
        )  # the sibling of leaves 0..15
    done = audit("prove", "card-P0")
    assert done.returncode == 1
    assert {json.loads(line)["result"] for line in done.stdout.splitlines()} == {"tampered_proof"}

    # A kept checkpoint the server's log does not extend (here: the kept root edited) is named, not kept.
    entries = [json.loads(line) for line in kept.read_text().splitlines()]
    entries[-1]["root_hash"] = "A" * 43 + "="
    kept.write_text("".join(json.dumps(e) + "\n" for e in entries))
    grow(server, range(5, 6))
    checkpoints.sign_checkpoint(server.store, keys, NOW)
    done = audit("checkpoint")
    assert done.returncode == 1 and len(done.stderr.splitlines()) == 1
    assert "does not extend the kept one of tree size" in done.stderr
    assert len(kept.read_text().splitlines()) == len(entries)
