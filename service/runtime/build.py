"""What this build is: pinlife's version, from the installed package's metadata."""

from __future__ import annotations

import functools


@functools.cache
def version() -> str:
    """pinlife's version ("unknown" when run from sources that were never installed).
    importlib.metadata is imported here, not at start: it and the search of
    the installed distributions cost a command about 30 ms it rarely needs."""
    from importlib import metadata

    try:
        return metadata.version("pinlife")
    except metadata.PackageNotFoundError:
        return "unknown"
