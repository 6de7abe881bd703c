"""Who is calling.

With mutual TLS (PINLIFE_ACCESS_FILE) the client certificate, checked by the
TLS layer against the terminal CA, names the terminal in its common name;
the access file maps it to a role (the events' channel) and an office. An
unknown or revoked terminal is UNAUTHENTICATED.

Without TLS (development only, loopback only) there is no authentication:
the terminal names itself in `x-pinlife-terminal` (default "dev-terminal")
and has the development role, which may call everything.
"""

from __future__ import annotations

import grpc

from service.access_config import AccessConfig
from service.app.handlers import Caller
from service.domain.access import Role, Unauthenticated
from service.domain.streams import TERMINAL_ID

TERMINAL_HEADER = "x-pinlife-terminal"


def development_caller(context: grpc.aio.ServicerContext) -> Caller:
    terminal = "dev-terminal"
    for key, value in context.invocation_metadata() or ():
        if key == TERMINAL_HEADER and isinstance(value, str) and TERMINAL_ID.fullmatch(value):
            terminal = value
    return Caller(Role.DEVELOPMENT.value, terminal)


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
        return Caller(entry.role.value, terminal_id, entry.office)
