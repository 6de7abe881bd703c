"""The command line's exit codes, in one place, and the one-line failure.

0  done (a check: intact)
1  a problem found: a check that failed, or an RPC answered with an error
2  the command could not run: one line on stderr, never a traceback
"""

from __future__ import annotations

import sys
from typing import NoReturn

OK, PROBLEM, CANNOT_RUN = 0, 1, 2


def fail(message: str, code: int = CANNOT_RUN) -> NoReturn:
    """`pinlife: message` on stderr, and the exit code."""
    print(f"pinlife: {message}", file=sys.stderr)
    sys.exit(code)
