"""What this build is: pinlife's version, from the installed package's metadata."""

from __future__ import annotations

import functools
from importlib import metadata


@functools.cache
def version() -> str:
    """pinlife's version ("unknown" when run from sources that were never installed)."""
    try:
        return metadata.version("pinlife")
    except metadata.PackageNotFoundError:
        return "unknown"
