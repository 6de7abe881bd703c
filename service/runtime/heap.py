"""Memory set-up for the long-running processes (the server and its
children): what they leave out, and the garbage collector.

`without_rich`: structlog's console renderer imports rich whenever it is
installed (about 5 MB resident); a server process draws nothing on a
terminal, so it is left out there, before anything imports structlog. The
other commands' tables and progress bars use it.

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


def freeze_startup_objects() -> None:
    """Call once start-up is done: collect what start-up left as garbage,
    then exempt everything still alive from future collections."""
    gc.collect()
    gc.freeze()
