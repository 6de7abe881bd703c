"""The role table: who may call what."""

from __future__ import annotations

import pytest

from pinlife.domain.access import COUNTERS, RPC_ROLES, PermissionDenied, Role, authorize

VERIFY = "/pinlife.v1.PinService/VerifyPin"
ENROLL = "/pinlife.v1.CounterService/EnrollCard"


def test_only_counters_enroll_and_auditors_only_read():
    assert RPC_ROLES[ENROLL] == COUNTERS
    audit = [
        f"/pinlife.v1.AuditService/{rpc}"
        for rpc in (
            "GetCardHistory",
            "QueryEvents",
            "WatchEvents",
            "VerifyIntegrity",
            "GetCheckpoint",
            "GetStatistics",
            "GetInclusionProof",
            "GetConsistencyProof",
        )
    ]
    assert sorted(rpc for rpc, roles in RPC_ROLES.items() if Role.AUDITOR in roles) == sorted(
        ["/pinlife.v1.PinService/GetPinStatus", *audit]
    )
    assert all(RPC_ROLES[rpc] == {Role.AUDITOR} for rpc in audit)  # only auditors read the log
    assert [rpc for rpc, roles in RPC_ROLES.items() if Role.MEDICAL_READER in roles] == [VERIFY]


def test_authorize_refuses_what_the_table_does_not_allow():
    authorize(VERIFY, Role.MEDICAL_READER)
    with pytest.raises(PermissionDenied):
        authorize(ENROLL, Role.MEDICAL_READER)
    with pytest.raises(PermissionDenied):
        authorize("/pinlife.v1.PinService/NoSuchRpc", Role.SPECIAL_CENTER)


def test_development_role_may_call_anything():
    authorize(ENROLL, Role.DEVELOPMENT)
