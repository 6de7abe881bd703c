"""Who is calling.

With mutual TLS (PINLIFE_ACCESS_FILE) the client certificate, checked by the
TLS layer against the terminal CA, names the terminal in its common name;
the access file maps it to a role (the events' channel) and an office. An
unknown or revoked terminal is UNAUTHENTICATED.

Without TLS (development only, loopback only) there is no authentication:
the terminal names itself in `x-pinlife-terminal` (default "dev-terminal")
and has the development role, which may call everything; `x-pinlife-office`
makes it act as a counter of that office (whose hours and wards then apply),
`x-pinlife-chain` as a kiosk of that store chain. A malformed or repeated
header is refused, never ignored.
"""

from __future__ import annotations

import functools

import grpc
from cryptography import x509
from cryptography.x509.oid import NameOID

from ..app.handlers import Caller
from ..config.access import AccessConfig
from ..domain.access import Role, Unauthenticated
from ..domain.streams import TERMINAL_ID, TERMINAL_ID_MAX_LENGTH

TERMINAL_HEADER = "x-pinlife-terminal"
OFFICE_HEADER = "x-pinlife-office"  # development: act as a counter of this office (its hours and wards apply)
CHAIN_HEADER = "x-pinlife-chain"  # development: act as a kiosk of this store chain
DEVELOPMENT_HEADERS = (TERMINAL_HEADER, OFFICE_HEADER, CHAIN_HEADER)
TERMINAL_ID_RULE = f"1 to {TERMINAL_ID_MAX_LENGTH} of A-Z a-z 0-9 . _ -"  # streams.TERMINAL_ID (office and chain ids too)


def development_caller(context: grpc.aio.ServicerContext) -> Caller:
    """A header given with a malformed value, or given twice, is refused
    (UNAUTHENTICATED), not ignored: the call would otherwise run as another
    terminal than the one the caller named."""
    given: dict[str, str] = {}
    for key, value in context.invocation_metadata() or ():
        if key not in DEVELOPMENT_HEADERS:
            continue
        if key in given:
            raise Unauthenticated(f"{key} is given twice")
        if not isinstance(value, str) or not TERMINAL_ID.fullmatch(value):
            raise Unauthenticated(f"{key} must be {TERMINAL_ID_RULE}")
        given[key] = value
    return Caller(
        Role.DEVELOPMENT.value, given.get(TERMINAL_HEADER, "dev-terminal"), given.get(OFFICE_HEADER), given.get(CHAIN_HEADER)
    )


@functools.lru_cache(maxsize=4096)
def certificate_common_names(pem: bytes) -> tuple[str, ...]:
    """Every common name of the certificate's subject (cached: a terminal
    presents the same certificate on every call of its connection)."""
    cert = x509.load_pem_x509_certificate(pem)
    return tuple(str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME))


class CertificateAuthenticator:
    def __init__(self, access: AccessConfig):
        self.access = access

    def __call__(self, context: grpc.aio.ServicerContext) -> Caller:
        pems = list((context.auth_context() or {}).get("x509_pem_cert") or ())
        names = certificate_common_names(pems[0]) if pems else ()
        if len(names) != 1:
            # grpc reports only the first common name; a subject with several
            # is ambiguous about which terminal it is, so it names none.
            raise Unauthenticated("a client certificate whose subject has exactly one common name (the terminal) is required")
        terminal_id = names[0]
        entry = self.access.terminals.get(terminal_id)
        if entry is None:
            raise Unauthenticated("this terminal is not registered")
        if entry.revoked:
            raise Unauthenticated("this terminal's certificate is revoked")
        return Caller(entry.role.value, terminal_id, entry.office, entry.chain)
