"""The command line's exit codes, in one place, and the one-line failure
(docs/operations.md#exit-status lists them for operators).

0  done: a check found the store intact; `serve` stopped by SIGTERM or SIGINT
1  a problem found (`check`, `config check`, `audit verify`), an RPC answered
   with an error, or a server that failed while serving (its writer process
   died): a supervisor restarts `serve`
2  the command cannot run as configured: one line naming the cause and the
   fix (a setting, the key file, the database missing, a login or privilege
   refused, the schema behind or ahead, a key that does not match the store,
   an address in use). A person must act: a supervisor does not restart it
   (systemd: RestartPreventExitStatus=2)
3  the database is unavailable (not running, unreachable): `serve` retried it
   for [store] startup_retry_seconds first. It may come back by itself: a
   supervisor restarts

Never a traceback for any of these.
"""

from __future__ import annotations

import sys
from typing import NoReturn

OK, PROBLEM, CANNOT_RUN, UNAVAILABLE = 0, 1, 2, 3


def fail(message: str, code: int = CANNOT_RUN) -> NoReturn:
    """`pinlife: message` on stderr, and the exit code."""
    print(f"pinlife: {message}", file=sys.stderr)
    sys.exit(code)
