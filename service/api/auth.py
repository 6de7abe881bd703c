"""Who is calling. In development mode (plain text on loopback) there is no
authentication: the terminal names itself in the `x-pinlife-terminal`
metadata (default "dev-terminal") and every caller has the development
channel. Mutual TLS, with the certificate naming the terminal and
configuration mapping it to a role, replaces this function."""

from __future__ import annotations

import re

import grpc

from service.app.handler import Caller

TERMINAL_HEADER = "x-pinlife-terminal"
DEV_CHANNEL = "development"
_TERMINAL = re.compile(r"[A-Za-z0-9._:-]{1,128}", re.ASCII)


def development_caller(context: grpc.aio.ServicerContext) -> Caller:
    terminal = "dev-terminal"
    for key, value in context.invocation_metadata() or ():
        if key == TERMINAL_HEADER and isinstance(value, str) and _TERMINAL.fullmatch(value):
            terminal = value
    return Caller(DEV_CHANNEL, terminal)
