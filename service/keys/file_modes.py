"""Private files (a TLS private key, the verifier keys) must not be readable
by anyone but their owner. As OpenSSH does for its keys: production refuses
such a file; development starts, with a warning."""

from __future__ import annotations

import os
import stat
from pathlib import Path


class FileModeError(Exception):
    """A private file is readable or writable by group or others (production)."""


def check_private_file(path: Path | str, *, production: bool, what: str) -> str | None:
    """None if only the owner may read `path` (mode & 0o077 == 0); otherwise
    raise FileModeError in production, or return the warning to log. The
    mode is that of the file a symbolic link points to."""
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if not mode & 0o077:
        return None
    message = f"{what} {path} is accessible by group or others (mode {mode:04o}): chmod 600 {path}"
    if production:
        raise FileModeError(message)
    return message
