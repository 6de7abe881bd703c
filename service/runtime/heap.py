"""Memory set-up for the long-running processes (the server and its
children): what they leave out, and the garbage collector.

`without_rich`: structlog's console renderer imports rich whenever it is
installed (about 5 MB resident); a server process draws nothing on a
terminal, so it is left out there, before anything imports structlog. The
other commands' tables and progress bars use it: `structlog_without_rich`
imports structlog with rich hidden and then lets the commands that draw
import it (the log never shows structlog's rich tracebacks: logs.py renders
an exception as plain text first), so a command that draws nothing does
not pay rich's import (about 40 ms).

Python's cyclic collector periodically walks every tracked object; a full
(generation 2) collection walks them all. After start-up the server holds
hundreds of thousands of long-lived objects (gRPC, protobuf descriptors,
SQLAlchemy, structlog), so each full collection paused the event loop
(figures: docs/performance.md). Freezing what start-up created moves it out
of the collector's reach: later collections walk only what requests create.
"""

from __future__ import annotations

import gc
import sys


def without_rich() -> None:
    """Make `import rich` fail in this process (call before structlog is imported)."""
    sys.modules.setdefault("rich", None)  # type: ignore[arg-type]  # None: `import rich` raises ImportError


def structlog_without_rich() -> None:
    """Import structlog while `import rich` fails, then let it succeed again."""
    if "structlog" in sys.modules or "rich" in sys.modules:
        return
    sys.modules["rich"] = None  # type: ignore[assignment]
    try:
        import structlog  # noqa: F401 - imported for its side: structlog.dev without rich
    finally:
        del sys.modules["rich"]


def freeze_startup_objects() -> None:
    """Call once start-up is done: collect what start-up left as garbage,
    then exempt everything still alive from future collections."""
    gc.collect()
    gc.freeze()
