"""The `pinlife` command: main.py builds the command line and runs each
command from its own module (serve, admin: the store's tools, pins: the
PIN, counter and kiosk client, audit: the auditor's client), over one client
module (client.py) and one set of exit codes (exits.py)."""

import sys

if sys.argv[1:2] == ["serve"]:
    # The server draws nothing on a terminal, but structlog's console renderer
    # imports rich when it can: about 5 MB resident for the server's life.
    # Kept out, as in its children (runtime/child.py); the tables and progress
    # bars of the other commands use it.
    sys.modules.setdefault("rich", None)  # type: ignore[arg-type]  # None: `import rich` raises ImportError
