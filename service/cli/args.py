"""What the command line takes: argument types (times, counts, lists), the
connection options every client command shares, and the names an operator
types for PIN types, outcomes and stream kinds. Light on purpose: the parser
is built from this module alone (main.py), before any command's own imports."""

from __future__ import annotations

import argparse
import os
import re
from datetime import UTC, datetime, timedelta

from ..domain.calendar import TOKYO
from ..domain.pins import PinType

TYPES = [t.value for t in PinType]
FORMATS = ("table", "jsonl", "csv")
OUTCOMES = {  # EventOutcome by the names an auditor types
    "success": "EVENT_OUTCOME_SUCCESS",
    "failure": "EVENT_OUTCOME_FAILURE",
    "locked": "EVENT_OUTCOME_LOCKED",
    "lock": "EVENT_OUTCOME_LOCKED",
    "refused": "EVENT_OUTCOME_REFUSED",
    "refusal": "EVENT_OUTCOME_REFUSED",
    "other": "EVENT_OUTCOME_OTHER",
}
STREAMS = {"all": "STREAM_KIND_UNSPECIFIED", "cards": "STREAM_KIND_CARD", "terminals": "STREAM_KIND_TERMINAL"}
RELATIVE = re.compile(r"(?:now)?-(\d+)([smhdw])")
UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def when(text: str) -> datetime:
    """A point in time: ISO 8601 (a date, or a time without an offset, is
    Asia/Tokyo), `now`, `today`, or `now-2h` (s, m, h, d, w)."""
    t = text.strip().lower()
    now = datetime.now(UTC)
    if t == "now":
        return now
    if t == "today":
        return datetime.now(TOKYO).replace(hour=0, minute=0, second=0, microsecond=0)
    if m := RELATIVE.fullmatch(t):
        return now - timedelta(**{UNITS[m[2]]: int(m[1])})
    try:
        at = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a time: ISO 8601 (2026-12-01, 2026-12-01T10:30 in Asia/Tokyo, or with an offset), "
            "now, today, now-2h"
        ) from None
    return at if at.tzinfo else at.replace(tzinfo=TOKYO)


def positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return n


def listed(values: list[str] | None) -> list[str]:
    """Repeated options, each possibly a comma-separated list."""
    return [v.strip() for item in values or () for v in item.split(",") if v.strip()]


def kept_file() -> str:
    """The auditor's kept checkpoints: $PINLIFE_AUDIT_CHECKPOINTS, else
    checkpoints.jsonl in the user's data folder (XDG)."""
    if path := os.environ.get("PINLIFE_AUDIT_CHECKPOINTS"):
        return path
    data = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(data, "pinlife", "checkpoints.jsonl")


def default_server(env: dict[str, str] | None = None) -> str:
    """$PINLIFE_LISTEN (a wildcard host reached on loopback), else 127.0.0.1:50051."""
    listen = (os.environ if env is None else env).get("PINLIFE_LISTEN") or "127.0.0.1:50051"
    host, sep, port = listen.rpartition(":")
    wildcard = {"0.0.0.0": "127.0.0.1", "[::]": "[::1]", "": "127.0.0.1"}
    return f"{wildcard[host]}:{port}" if sep and host in wildcard else listen


def client_options(parser: argparse.ArgumentParser, suppress: bool = False, identity: bool = True) -> None:
    """Where a client command calls, and as whom: given before the command
    (with their defaults) or after it (suppress: only what is given
    overrides). identity: the development-mode --terminal, --office, --chain."""

    def default(value: str | None) -> str | None:
        return argparse.SUPPRESS if suppress else value

    g = parser.add_argument_group("connection")
    g.add_argument(
        "--server",
        default=default(default_server()),
        help="address of a running server (default: $PINLIFE_LISTEN, else 127.0.0.1:50051)",
    )
    g.add_argument(
        "--server-name",
        metavar="NAME",
        default=default(os.environ.get("PINLIFE_SERVER_NAME")),
        help="mutual TLS: a name of the server's certificate to check it against, when --server's host is not one "
        "(e.g. an address the certificate lacks; $PINLIFE_SERVER_NAME)",
    )
    g.add_argument(
        "--ca",
        metavar="FILE",
        default=default(os.environ.get("PINLIFE_CA")),
        help="mutual TLS: the CA certificate that issued the server's certificate (PEM; $PINLIFE_CA)",
    )
    g.add_argument(
        "--cert",
        metavar="FILE",
        default=default(os.environ.get("PINLIFE_CERT")),
        help="mutual TLS: this terminal's certificate chain, its common name the terminal id (PEM; $PINLIFE_CERT)",
    )
    g.add_argument(
        "--key",
        metavar="FILE",
        default=default(os.environ.get("PINLIFE_CLIENT_KEY")),
        help="mutual TLS: the private key of --cert (PEM; $PINLIFE_CLIENT_KEY)",
    )
    if not identity:
        return
    g.add_argument("--terminal", default=default("cli"), help="development mode: the terminal id the CLI acts as")
    g.add_argument(
        "--office", default=default(None), help="development mode: act as a counter of this office (e.g. naka-ward-office)"
    )
    g.add_argument("--chain", default=default(None), help="development mode: act as a kiosk of this store chain")
