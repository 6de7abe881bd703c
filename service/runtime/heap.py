"""Garbage-collector set-up for the long-running processes (the server and
its writer process).

Python's cyclic collector periodically walks every tracked object; a full
(generation 2) collection walks them all. After start-up the server holds
hundreds of thousands of long-lived objects (gRPC, protobuf descriptors,
SQLAlchemy, structlog), so each full collection paused the event loop
(figures: docs/performance.md). Freezing what start-up created moves it out
of the collector's reach: later collections walk only what requests create.
"""

from __future__ import annotations

import gc


def freeze_startup_objects() -> None:
    """Call once start-up is done: collect what start-up left as garbage,
    then exempt everything still alive from future collections."""
    gc.collect()
    gc.freeze()
