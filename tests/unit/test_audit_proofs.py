"""GetInclusionProof, GetConsistencyProof and GetCardHistory with proofs in the
auditors' facade (service/app/audit.py), over the in-memory store and a fake
of the audit reads holding a tree in memory: sizes must be those of signed
checkpoints (INVALID_ARGUMENT), not past the latest (OUT_OF_RANGE), the field
named; every call recorded as an AuditRead, refusals too. The error table
gives OUT_OF_RANGE its BadRequest detail. The CLI's check of a page of
history (event_problem) names a tampered proof, a proof for another tree
size and a leaf that is not the event."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2

from pinlife.api import audit_mapping as amap
from pinlife.api.errors import code_for, to_status
from pinlife.app.audit import Audit
from pinlife.cli.audit import event_problem
from pinlife.domain import merkle
from pinlife.domain.audit import Filter, Order
from pinlife.domain.chain import leaf_data
from pinlife.domain.errors import FieldViolation, InvalidInput, OutOfRange
from pinlife.v1 import audit_service_pb2 as apb
from tests.keys import INTEGRITY
from tests.unit.test_audit_bounds import AUDITOR, HeldChecks, audit_records, run

LEAVES = [f"leaf {i}".encode() for i in range(20)]
SIGNED = {5, 12, 20}


class TreeReads(HeldChecks):
    """The audit reads of a log of 20 leaves, checkpoints signed at 5, 12 and 20."""

    def __init__(self) -> None:
        super().__init__()
        self.inclusion, self.consistency = merkle.tree_proofs(LEAVES)

    def signed_sizes(self, sizes):
        return max(SIGNED), frozenset(s for s in sizes if s in SIGNED)

    def inclusion_proof(self, index, size):
        return self.inclusion(index, size)

    def consistency_proof(self, first, second):
        return self.consistency(first, second)


def refused(coro_fn) -> tuple[type, dict[str, str]]:
    out: dict = {}

    async def scenario(app) -> None:
        audit = Audit(TreeReads(), app, INTEGRITY, lambda exc: False)
        with pytest.raises(InvalidInput) as err:
            await coro_fn(audit)
        out["exc"] = err.value

    run(scenario)
    exc = out["exc"]
    return type(exc), {v.field: v.description for v in exc.violations}


def test_proofs_of_signed_sizes_are_given_and_recorded():
    async def scenario(app) -> None:
        audit = Audit(TreeReads(), app, INTEGRITY, lambda exc: False)
        proof = await audit.inclusion_proof(AUDITOR, 7, 12)
        assert proof == merkle.tree_proofs(LEAVES)[0](6, 12)
        assert await audit.consistency_proof(AUDITOR, 5, 20) == merkle.tree_proofs(LEAVES)[1](5, 20)
        assert await audit.consistency_proof(AUDITOR, 12, 12) == []

    store = run(scenario)
    assert audit_records(store) == [
        {"position": 7, "tree_size": 12},
        {"first_size": 5, "second_size": 20},
        {"first_size": 12, "second_size": 12},
    ]


@pytest.mark.parametrize(
    "position, size, kind, field",
    [
        (1, 13, InvalidInput, "tree_size"),  # never signed
        (1, 0, InvalidInput, "tree_size"),
        (1, 21, OutOfRange, "tree_size"),  # past the latest checkpoint
        (1, 2**64 - 1, InvalidInput, "tree_size"),
        (13, 12, OutOfRange, "position"),  # past the tree
        (0, 12, InvalidInput, "position"),
        (2**63, 12, InvalidInput, "position"),
    ],
)
def test_an_inclusion_proof_of_a_size_never_signed_or_past_the_log_names_the_field(position, size, kind, field):
    got, fields = refused(lambda audit: audit.inclusion_proof(AUDITOR, position, size))
    assert got is kind and list(fields) == [field], fields


@pytest.mark.parametrize(
    "first, second, kind, fields",
    [
        (12, 5, InvalidInput, ["first_size"]),
        (0, 5, InvalidInput, ["first_size"]),
        (6, 20, InvalidInput, ["first_size"]),
        (5, 21, OutOfRange, ["second_size"]),
        (21, 30, OutOfRange, ["first_size", "second_size"]),
        (6, 21, InvalidInput, ["first_size", "second_size"]),  # one never signed, one past the log: both named
    ],
)
def test_a_consistency_proof_between_sizes_not_signed_names_the_fields(first, second, kind, fields):
    got, named = refused(lambda audit: audit.consistency_proof(AUDITOR, first, second))
    assert got is kind and list(named) == fields, named


def test_refusals_are_recorded_with_their_kind():
    async def scenario(app) -> None:
        audit = Audit(TreeReads(), app, INTEGRITY, lambda exc: False)
        with pytest.raises(OutOfRange):
            await audit.inclusion_proof(AUDITOR, 1, 99)
        with pytest.raises(InvalidInput):
            await audit.history(AUDITOR, "card-1", Filter(), Order.OLDEST_FIRST, 101, "", proofs=12)

    store = run(scenario)
    assert audit_records(store) == [
        {"refused": "out_of_range", "fields": ["tree_size"]},
        {"refused": "invalid_argument", "fields": ["page_size"]},  # at most 100 events a page with proofs
    ]


def test_out_of_range_is_its_own_code_with_the_field_named():
    exc = OutOfRange(FieldViolation("tree_size", "past the latest"))
    assert code_for(exc) is grpc.StatusCode.OUT_OF_RANGE
    (detail,) = to_status(exc).details
    bad = error_details_pb2.BadRequest()
    assert detail.Unpack(bad) and [(v.field, v.description) for v in bad.field_violations] == [("tree_size", "past the latest")]


# -- the CLI's check of an event's proof ----------------------------------------------------
ENVELOPE = {"card_id": "card-1", "version": 3, "event_id": "e-3", "event_type": "PinLocked", "payload": {}}


def proved_event(size: int = 12) -> tuple[apb.AuditEvent, bytes]:
    """The event at position 7 of a log whose 7th leaf is its leaf, and the root of the tree of `size`."""
    leaves = list(LEAVES)
    leaves[6] = leaf_data(7, ENVELOPE)
    inclusion, _ = merkle.tree_proofs(leaves)
    proof = merkle.LeafProof(leaves[6], inclusion(6, size))
    e = apb.AuditEvent(position=7, stream_id="card-1", version=3, event_id="e-3", event_type="PinLocked")
    e.proof.CopyFrom(amap.leaf_proof(proof))
    return e, merkle.root_of(leaves[:size])


def test_the_cli_accepts_an_events_proof_and_names_each_way_it_fails():
    e, root = proved_event()
    assert event_problem(e, 12, root) is None
    tampered = apb.AuditEvent()
    tampered.CopyFrom(e)
    tampered.proof.audit_path[1] = bytes([e.proof.audit_path[1][0] ^ 1]) + e.proof.audit_path[1][1:]
    assert event_problem(tampered, 12, root)[0] == "tampered_proof"
    other, other_root = proved_event(20)  # a proof against the tree of 20, the auditor keeping 12
    assert event_problem(other, 12, root)[0] == "another_tree_size"
    other.proof.tree_size = 12  # relabelled: the path is still the other tree's
    assert event_problem(other, 12, root)[0] == "tampered_proof"
    moved = apb.AuditEvent()
    moved.CopyFrom(e)
    moved.version = 4  # the server shows another event than the leaf proves
    assert event_problem(moved, 12, root)[0] == "leaf_not_the_event"
    unproved = apb.AuditEvent(position=7, stream_id="card-1")
    assert event_problem(unproved, 12, root)[0] == "no_proof"
