"""`pinlife serve`: the server, with the settings, the access rules and the
key file checked first (service/bootstrap/serving.py serves)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from ..bootstrap.serving import serve as serve_forever
from ..config.access import AccessConfigError, access_from_settings
from ..runtime import logs
from .configured import keys, settings
from .exits import fail


def serve(args: argparse.Namespace) -> None:
    s = settings()
    logs.configure(s.log_format, s.log_level)
    try:
        access = access_from_settings(s)
    except AccessConfigError as exc:
        fail(str(exc))
    ring = keys(s)

    async def serve_then_exit() -> None:
        status = await serve_forever(s, ring, access)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)  # from the running loop, with gRPC as it is (see serve)

    asyncio.run(serve_then_exit())
