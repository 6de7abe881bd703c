"""Who is calling.

With mutual TLS (PINLIFE_ACCESS_FILE) the client certificate, checked by the
TLS layer against the terminal CA, names the terminal in its common name;
the access file maps it to a role (the events' channel) and an office. An
unknown or revoked terminal is UNAUTHENTICATED.

Without TLS (development only, loopback only) there is no authentication:
the terminal names itself in `x-pinlife-terminal` (default "dev-terminal")
and has the development role, which may call everything; `x-pinlife-office`
makes it act as a counter of that office (whose hours and wards then apply),
`x-pinlife-chain` as a kiosk of that store chain.
"""

from __future__ import annotations

import grpc

from service.access_config import AccessConfig
from service.app.handlers import Caller
from service.domain.access import Role, Unauthenticated
from service.domain.streams import TERMINAL_ID

TERMINAL_HEADER = "x-pinlife-terminal"
OFFICE_HEADER = "x-pinlife-office"  # development: act as a counter of this office (its hours and wards apply)
CHAIN_HEADER = "x-pinlife-chain"  # development: act as a kiosk of this store chain


def development_caller(context: grpc.aio.ServicerContext) -> Caller:
    terminal, office, chain = "dev-terminal", None, None
    for key, value in context.invocation_metadata() or ():
        if not isinstance(value, str) or not TERMINAL_ID.fullmatch(value):
            continue
        if key == TERMINAL_HEADER:
            terminal = value
        elif key == OFFICE_HEADER:
            office = value
        elif key == CHAIN_HEADER:
            chain = value
    return Caller(Role.DEVELOPMENT.value, terminal, office, chain)


class CertificateAuthenticator:
    def __init__(self, access: AccessConfig):
        self.access = access

    def __call__(self, context: grpc.aio.ServicerContext) -> Caller:
        names = (context.auth_context() or {}).get("x509_common_name") or []
        if not names:
            raise Unauthenticated("a client certificate naming the terminal is required")
        terminal_id = names[0].decode("utf-8", "replace")
        entry = self.access.terminals.get(terminal_id)
        if entry is None:
            raise Unauthenticated("this terminal is not registered")
        if entry.revoked:
            raise Unauthenticated("this terminal's certificate is revoked")
        return Caller(entry.role.value, terminal_id, entry.office, entry.chain)
