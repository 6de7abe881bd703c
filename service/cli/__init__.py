"""The `pinlife` command: main.py builds the command line and runs each
command from its own module (serve, admin: the store's tools, pins: the
PIN, counter and kiosk client, audit: the auditor's client), over one client
module (client.py) and one set of exit codes (exits.py)."""

import sys

from ..runtime.heap import structlog_without_rich, without_rich

if sys.argv[1:2] == ["serve"]:
    without_rich()  # the server, as its children (runtime/child.py)
else:
    structlog_without_rich()  # rich only for the commands that draw (runtime/heap.py)
