"""The settings and the key file, as the server-side commands load them:
one line and exit 2 (exits.py) for what stops a command from running."""

from __future__ import annotations

import sys
from typing import NoReturn

from ..config import settings as config_mod
from ..keys.file_modes import FileModeError, check_private_file
from ..keys.ring import KeyFileError, KeyRing
from .exits import CANNOT_RUN, fail


def settings() -> config_mod.Settings:
    try:
        s = config_mod.from_env()
    except config_mod.ConfigError as exc:
        config_problems(exc.problems)
    return s


def config_problems(problems: list[str], code: int = CANNOT_RUN) -> NoReturn:
    if len(problems) == 1:
        lines = [f"pinlife: configuration: {problems[0]}"]
    else:
        lines = [f"pinlife: configuration: {len(problems)} problems:", *(f"  - {p}" for p in problems)]
    print("\n".join(lines), file=sys.stderr)
    sys.exit(code)


def keys(s: config_mod.Settings) -> KeyRing:
    """The key file, refused when others may read it in production (a
    warning in development), as OpenSSH treats private keys."""
    try:
        ring = KeyRing.load(s.key_file)
        warning = check_private_file(s.key_file, production=s.production, what="the key file (PINLIFE_KEY_FILE)")
    except KeyFileError as exc:
        fail(f"{exc} (set PINLIFE_KEY_FILE, or run `pinlife dev-key` in development)")
    except FileModeError as exc:
        fail(str(exc))
    if warning:
        print(f"pinlife: warning: {warning}", file=sys.stderr)
    return ring
