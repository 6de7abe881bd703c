"""Who may call what (DESIGN.md §5): one table from RPC to the roles allowed
to call it. Anything else is PERMISSION_DENIED, and the refusal is recorded."""

from __future__ import annotations

import enum

from .errors import DomainError


class Role(enum.Enum):
    MEDICAL_READER = "medical_reader"
    CONVENIENCE_STORE = "convenience_store"
    SMARTPHONE_APP = "smartphone_app"
    SELF_SERVICE = "self_service"
    WARD_OFFICE = "ward_office"
    SPECIAL_CENTER = "special_center"
    AUDITOR = "auditor"
    CALL_CENTER = "call_center"  # the lost-card call centre: suspends cards, nothing else
    # Only in development mode (plain text on loopback): may call everything.
    DEVELOPMENT = "development"


COUNTERS = frozenset({Role.WARD_OFFICE, Role.SPECIAL_CENTER})

# RPC (full method name) -> roles allowed to call it.
RPC_ROLES: dict[str, frozenset[Role]] = {
    # Card readers verify; the holder's own devices verify; counters verify at the desk.
    "/pinlife.v1.PinService/VerifyPin": frozenset({Role.MEDICAL_READER, Role.SELF_SERVICE, Role.SMARTPHONE_APP} | COUNTERS),
    # A change needs the current PIN: self service, or a counter assisting the holder.
    "/pinlife.v1.PinService/ChangePin": frozenset({Role.SELF_SERVICE} | COUNTERS),
    # Status costs no try: anyone who serves the holder, and auditors (read only).
    "/pinlife.v1.PinService/GetPinStatus": frozenset(
        {Role.SELF_SERVICE, Role.SMARTPHONE_APP, Role.CONVENIENCE_STORE, Role.AUDITOR} | COUNTERS
    ),
    # Only counters enroll, reset, unlock, run the proxy procedure and resume.
    "/pinlife.v1.CounterService/EnrollCard": COUNTERS,
    "/pinlife.v1.CounterService/ResetPin": COUNTERS,
    "/pinlife.v1.CounterService/UnlockPin": COUNTERS,
    "/pinlife.v1.CounterService/RequestProxyReset": COUNTERS,
    "/pinlife.v1.CounterService/CompleteProxyReset": COUNTERS,
    "/pinlife.v1.CounterService/ResumeCard": COUNTERS,
    # A lost card is suspended at a counter or by the call centre, around the clock.
    "/pinlife.v1.CounterService/SuspendCard": COUNTERS | {Role.CALL_CENTER},
    # The reset app reserves a store reset; the kiosk completes it.
    "/pinlife.v1.PinService/ReserveStoreReset": frozenset({Role.SMARTPHONE_APP}),
    "/pinlife.v1.ConvenienceStoreService/ResetPin": frozenset({Role.CONVENIENCE_STORE}),
    # Auditors read the history; nobody else may (every call of theirs is itself recorded).
    **{
        f"/pinlife.v1.AuditService/{rpc}": frozenset({Role.AUDITOR})
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
    },
}


class PermissionDenied(DomainError):
    pass


class Unauthenticated(DomainError):
    """No usable client identity: no certificate, an unknown or a revoked terminal."""


def authorize(rpc: str, role: Role) -> None:
    if role is Role.DEVELOPMENT:
        return
    if role not in RPC_ROLES.get(rpc, frozenset()):
        raise PermissionDenied(f"role {role.value} may not call {rpc.rsplit('/', 1)[-1]}")
