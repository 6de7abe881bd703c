"""pinlife command line: run the server, migrate, and talk to a running
server as a newcomer would.

    pinlife serve | migrate | config check [FILE] | dev-key [PATH] | grants ROLE
    pinlife check [--checkpoint NOTE_FILE ...] | checkpoint
    pinlife pki init DIR [--access FILE] [--server-name NAME ...] [--server-ip IP ...]   (mutual TLS, development CA)
    pinlife enroll CARD --pin TYPE=PIN ... [--ward WARD]   (a missing =PIN is prompted for)
    pinlife verify CARD TYPE [PIN]
    pinlife change CARD TYPE [CURRENT NEW]
    pinlife status CARD [TYPE]
    counters (with --office OFFICE in development; documents as --doc TYPE[:YYYY-MM-DD]):
    pinlife reset CARD TYPE [NEW] --doc my_number_card [--applicant legal_representative] [--adult-ward]
    pinlife unlock CARD TYPE --doc ...
    pinlife proxy-request CARD TYPE --doc my_number_card --doc other_id
    pinlife proxy-complete CARD TYPE INQUIRY_ID [CODE NEW] --doc ...
    pinlife suspend CARD [--reason lost|stolen|other]
    pinlife resume CARD --doc my_number_card
    the reset app and a convenience-store kiosk:
    pinlife reserve CARD TYPE [PROVING_PIN]
    pinlife store-reset CARD TYPE [PROVING_PIN NEW]
    auditors (`pinlife audit -h`): history, query, watch, verify, checkpoint, stats
    pinlife console [--listen 127.0.0.1:8040]   (the auditors' read-only web console)
    pinlife completion bash|zsh|tcsh|fish|powershell   (a shell completion script) | pinlife --version

Client commands take --server (default $PINLIFE_LISTEN, else
127.0.0.1:50051) and, for mutual TLS, --ca, --cert and --key (or
PINLIFE_CA, PINLIFE_CERT and PINLIFE_CLIENT_KEY; `pinlife pki init` makes
them), and --server-name when --server's host is not a name of the server's
certificate, before or after the command.

TYPE is one of: resident_registry, card_info_input_support,
user_certificate, signature. PINs left off the command line are read
without echo. PINs are never printed.
"""

from __future__ import annotations

import argparse
import importlib
import os

from ..runtime import build, logs
from .args import FORMATS, STREAMS, TYPES, client_options, kept_file, positive, when

AUDIT_USAGE = """pinlife audit: the auditor's client of AuditService
(protos/pinlife/v1/audit_service.proto).

    pinlife audit history CARD [--type PIN_TYPE] [--event-type T ...] [--outcome O ...] [--from WHEN] [--to WHEN]
                               [--newest-first] [--limit N]
    pinlife audit query [--from WHEN] [--to WHEN] [--event-type T ...] [--channel C ...] [--terminal ID] [--office ID]
                        [--type PIN_TYPE] [--outcome O ...] [--streams cards|terminals|all] [--newest-first] [--limit N]
    pinlife audit watch [--after POSITION] [--limit N]
    pinlife audit verify [CARD] [--checkpoint FILE ...] [--keep FILE | --no-keep]
    pinlife audit checkpoint [--save FILE] [--compare FILE] [--keep FILE | --no-keep] [--accept-new-key]
    pinlife audit prove CARD [--keep FILE]
    pinlife audit stats [--from WHEN] [--to WHEN] [--granularity hour|day] [--top N]

Output (--format): `table` on a terminal (times in Asia/Tokyo), else `jsonl`
(one JSON object per event: the whole envelope, hashes included, and the
payload as JSON; canonical proto3 JSON, so 64-bit numbers are strings), or
`csv`. history and query read page after page until no more match or --limit.
On a terminal narrower than a table's columns, the least telling ones are left out, and it
says which. watch starts with a header (the server, the position; on stderr) and,
when the connection is lost, retries after 0.5 s doubling to 30 s (with jitter),
one line on stderr per attempt, resuming after the last position received.

WHEN is ISO 8601 (a date, or a time without an offset, is Asia/Tokyo: 2026-12-01,
2026-12-01T10:30, 2026-12-01T01:30Z), `now`, `today`, or `now-2h` (s, m, h, d, w).
--event-type, --channel and --outcome repeat, or take a comma-separated list.

`checkpoint` keeps each checkpoint it fetches in the auditor's own file
(--keep, default ~/.local/share/pinlife/checkpoints.jsonl), after checking
its signature, its key against the one kept for its origin, that no kept
checkpoint of the same size has another root, and, with a consistency proof
checked here, that it extends the newest one kept of that server; `verify`
fetches and keeps the latest the same way, then checks the whole store
(kept checkpoints no proof links are supplied to it, up to 16). `prove CARD`
checks each of the card's events, with its inclusion proof, against the newest
kept checkpoint. The proofs are checked by the CLI's own code
(service/cli/proofs.py), not the server's.

Exit codes: 0 done (verify: intact; prove: every event proved); 1 verify,
prove or checkpoint found a problem (a tampered proof, a proof for another tree
size, a checkpoint that does not extend the kept one); 2 the command could not run (an error, one line on stderr:
`pinlife: CODE: details`). Ctrl-C ends `watch` (130).

In development mode (`make run`: plain text on loopback) every terminal has
the development role, which may call AuditService: `pinlife audit ...` works
as it is. With mutual TLS the certificate given with --cert/--key must be a
terminal whose role is `auditor` in the access file; any other role is
PERMISSION_DENIED (and the refusal is recorded).
"""


def _command(p: argparse.ArgumentParser, module: str, function: str) -> None:
    """The command runs `pinlife.cli.<module>.<function>(args)`."""
    p.set_defaults(command=(module, function))


def _counter_args(p: argparse.ArgumentParser, applicant: bool = True) -> None:
    p.add_argument("--doc", action="append", metavar="TYPE[:YYYY-MM-DD]", help="a document presented (repeat)")
    if applicant:
        p.add_argument("--applicant", default="holder", choices=["holder", "legal_representative"])
        p.add_argument("--adult-ward", action="store_true", help="the holder is an adult ward")


def _server_commands(sub: argparse._SubParsersAction) -> None:
    _command(sub.add_parser("serve", help="run the gRPC server"), "serve", "serve")
    p = sub.add_parser("migrate", help="apply the Alembic migrations")
    p.add_argument(
        "--seal-terminals",
        action="store_true",
        help="also MAC terminal rows that have none, as they are (after checking them: docs/security.md)",
    )
    _command(p, "admin", "migrate")
    p = sub.add_parser("config", help="the configuration (pinlife.toml, PINLIFE_CONFIG)")
    config_sub = p.add_subparsers(dest="config_command", required=True, metavar="COMMAND")
    p = config_sub.add_parser("check", help="validate a configuration without serving: every problem at once (exit 1)")
    p.add_argument("file", nargs="?", help="the configuration file (default: $PINLIFE_CONFIG, else the environment alone)")
    p.add_argument(
        "--connect",
        action="store_true",
        help="also connect: the database reachable, migrated, and holding this key file's check values (writes nothing)",
    )
    _command(p, "admin", "config_check")
    p = sub.add_parser("dev-key", help="create development keys if missing (never over a store with verifiers)")
    p.add_argument("path", nargs="?")
    _command(p, "admin", "dev_key")
    p = sub.add_parser("grants", help="print the SQL granting the service's PostgreSQL role its privileges")
    p.add_argument("role", help="the login role the server connects as (e.g. pinlife_app)")
    _command(p, "admin", "grants")
    p = sub.add_parser("check", help="check the keyed chains, MACs, positions, lawful history and checkpoints")
    p.add_argument("--checkpoint", action="append", metavar="NOTE_FILE", help="a signed checkpoint kept outside the store")
    _command(p, "admin", "check")
    _command(sub.add_parser("checkpoint", help="sign a checkpoint of the log now and print it"), "admin", "checkpoint")
    _pki_command(sub)


def _pki_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pki", help="mutual TLS: a development CA, the server's and the terminals' certificates")
    p = p.add_subparsers(dest="pki_command", required=True, metavar="COMMAND").add_parser(
        "init",
        help="make (or complete) DIR: ca.pem, server.pem, terminals/ID.pem and their keys (0600); keys are never overwritten",
        description="A development CA in DIR, the server's certificate with subjectAltNames (DNS names and IP addresses), "
        "and a certificate per terminal (its common name the terminal id). Run again to add terminals: what exists and "
        "still fits is kept. Production CAs: docs/operations.md (OpenSSL).",
    )
    p.add_argument("dir", help="the folder to write (made if missing)")
    p.add_argument("--access", metavar="FILE", help="an access file (or pinlife.toml): a certificate per [terminals.ID]")
    p.add_argument("--terminal", action="append", metavar="ID", help="also a certificate for this terminal id (repeat)")
    p.add_argument(
        "--server-name",
        action="append",
        metavar="NAME",
        help="a DNS name of the server (repeat; neither this nor --server-ip: localhost and 127.0.0.1)",
    )
    p.add_argument("--server-ip", action="append", metavar="IP", help="an IP address of the server (repeat)")
    p.add_argument("--days", type=positive, default=365, help="the server's and terminals' certificates' validity (default 365)")
    p.add_argument("--force", action="store_true", help="make every key and certificate anew (a new CA: re-issue everything)")
    _command(p, "pki", "init")


def _client_commands(sub: argparse._SubParsersAction) -> list[argparse.ArgumentParser]:
    made = []

    def command(name: str, help: str, function: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help)
        _command(p, "pins", function)
        made.append(p)
        return p

    p = command("enroll", "enroll a card with its initial PINs", "enroll")
    p.add_argument("card")
    p.add_argument("--pin", action="append", required=True, metavar="TYPE[=PIN]")
    p.add_argument("--ward", help="the holder's ward (counters act only for wards they serve)")
    p = command("verify", "verify a PIN", "verify")
    p.add_argument("card")
    p.add_argument("type", choices=TYPES)
    p.add_argument("pin", nargs="?")
    p = command("change", "change a PIN, knowing the current one", "change")
    p.add_argument("card")
    p.add_argument("type", choices=TYPES)
    p.add_argument("current", nargs="?")
    p.add_argument("new", nargs="?")
    p = command("status", "show the lock state of a card's PINs", "status")
    p.add_argument("card")
    p.add_argument("type", nargs="?", choices=TYPES)
    p = command("reset", "counter: set a new PIN and unlock", "reset")
    p.add_argument("card")
    p.add_argument("type", choices=TYPES)
    p.add_argument("new", nargs="?")
    _counter_args(p)
    p = command("unlock", "counter: clear the failure count, keep the PIN", "unlock")
    p.add_argument("card")
    p.add_argument("type", choices=TYPES)
    _counter_args(p)
    p = command("proxy-request", "counter: a proxy's first visit (issues an inquiry)", "proxy_request")
    p.add_argument("card")
    p.add_argument("type", choices=TYPES)
    _counter_args(p, applicant=False)
    p = command("proxy-complete", "counter: a proxy's second visit", "proxy_complete")
    p.add_argument("card")
    p.add_argument("type", choices=TYPES)
    p.add_argument("inquiry_id")
    p.add_argument("code", nargs="?")
    p.add_argument("new", nargs="?")
    _counter_args(p, applicant=False)
    p = command("suspend", "counter or call centre: suspend a lost card", "suspend")
    p.add_argument("card")
    p.add_argument("--reason", default="lost", choices=["lost", "stolen", "other"])
    p = command("resume", "counter: resume a suspended card", "resume")
    p.add_argument("card")
    _counter_args(p)
    p = command("reserve", "reset app: reserve a convenience-store reset", "reserve")
    p.add_argument("card")
    p.add_argument("type", choices=TYPES)
    p.add_argument("proving", nargs="?")
    p = command("store-reset", "kiosk: complete a reserved reset", "store_reset")
    p.add_argument("card")
    p.add_argument("type", choices=TYPES)
    p.add_argument("proving", nargs="?")
    p.add_argument("new", nargs="?")
    return made


def _audit_commands(sub: argparse._SubParsersAction) -> None:
    """The `audit` command and its subcommands, each taking the connection
    options (--server, --ca, --cert, --key) after it too."""
    audit = sub.add_parser(
        "audit",
        help="auditors: history, query, watch, verify, checkpoint, prove, stats (AuditService)",
        description=AUDIT_USAGE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = audit.add_subparsers(dest="audit_command", required=True, metavar="COMMAND")

    def command(name: str, help: str, formats: bool = True) -> argparse.ArgumentParser:
        p = commands.add_parser(name, help=help, description=help)
        client_options(p, suppress=True, identity=False)
        if formats:
            p.add_argument(
                "--format", choices=FORMATS, help="table (the default on a terminal), jsonl (the default otherwise), csv"
            )
        p.add_argument("--timeout", type=float, metavar="SECONDS", help="give up on a call after this long")
        _command(p, "audit", name)
        return p

    def times(p: argparse.ArgumentParser) -> None:
        p.add_argument("--from", dest="start", type=when, metavar="WHEN", help="events at or after (default: the first)")
        p.add_argument("--to", dest="end", type=when, metavar="WHEN", help="events before (default: the last)")

    def event_filter(p: argparse.ArgumentParser) -> None:
        times(p)
        p.add_argument("--event-type", action="append", metavar="TYPE", help="e.g. PinLocked (repeat, or a,b)")
        p.add_argument("--type", dest="pin_type", choices=TYPES, help="this PIN type only")
        p.add_argument(
            "--outcome", action="append", metavar="OUTCOME", help="success|failure|locked|refused|other (repeat, or a,b)"
        )
        p.add_argument("--newest-first", action="store_true", help="the latest first")
        p.add_argument("--limit", type=positive, metavar="N", help="at most N events")

    def kept(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--keep",
            metavar="FILE",
            default=kept_file(),
            help="the auditor's file of fetched checkpoints (default: $PINLIFE_AUDIT_CHECKPOINTS, "
            "else ~/.local/share/pinlife/checkpoints.jsonl)",
        )
        p.add_argument("--no-keep", dest="keep", action="store_const", const=None, help="neither read nor write it")

    p = command("history", "one card's events, in stream order")
    p.add_argument("card")
    event_filter(p)
    p = command("query", "events across cards and terminal streams, in time order")
    event_filter(p)
    p.add_argument(
        "--channel", action="append", metavar="CHANNEL", help="the caller's role, e.g. medical_reader (repeat, or a,b)"
    )
    p.add_argument("--terminal", dest="filter_terminal", metavar="ID", help="events caused by this terminal")
    p.add_argument("--office", dest="filter_office", metavar="ID", help="events caused at this office's counters")
    p.add_argument("--streams", choices=list(STREAMS), default="all", help="card streams, terminal streams, or both")
    p = command("watch", "follow the log as it grows (Ctrl-C ends); resumes after the last position on a reconnect")
    p.add_argument(
        "--after", type=int, default=0, metavar="POSITION", help="start after this global position (default: 0, every event)"
    )
    p.add_argument("--limit", type=positive, metavar="N", help="stop after N events")
    p = command("verify", "check the whole store (or one card): links, MACs, projection, lawful history, checkpoints")
    p.add_argument("card", nargs="?", help="one card (default: the whole store)")
    p.add_argument("--checkpoint", action="append", metavar="FILE", help="a signed checkpoint note kept outside (repeat)")
    p.add_argument(
        "--accept-new-key",
        action="store_true",
        help="keep a checkpoint signed by another key than the one kept for its origin (after a key rotation)",
    )
    kept(p)
    p = command("checkpoint", "fetch the latest signed checkpoint of the log (a C2SP signed note) and keep it")
    p.add_argument("--save", metavar="FILE", help="also write the note to FILE")
    p.add_argument("--compare", metavar="FILE", help="confirm the log still holds the checkpoint saved in FILE (exit 1 if not)")
    p.add_argument(
        "--accept-new-key",
        action="store_true",
        help="keep a checkpoint signed by another key than the one kept for its origin (after a key rotation)",
    )
    kept(p)
    p = command("prove", "check each of a card's events against the newest kept checkpoint, with inclusion proofs")
    p.add_argument("card")
    kept(p)
    p = command("stats", "counts by channel, office, terminal, PIN type and hour or day (Asia/Tokyo)")
    times(p)
    p.add_argument(
        "--granularity",
        choices=["hour", "day"],
        default="hour",
        help="buckets (default hour; the default range is the last 24 hours, or 7 days by day)",
    )
    p.add_argument("--top", type=positive, metavar="N", help="terminals listed (default 20)")


def _console_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "console",
        help="auditors: a read-only web console (history, query, live tail, integrity, statistics) on a local port",
        description="Serve the auditors' web console on a local port. It reads the server through AuditService "
        "(and GetPinStatus) with this command's connection options, as `pinlife audit` does: with mutual TLS, "
        "the auditor's own certificate (--ca, --cert, --key), so every read is authorised and recorded as the "
        "CLI's. It changes nothing and holds no database credentials. docs/audit.md.",
    )
    client_options(p, suppress=True, identity=False)
    p.add_argument(
        "--listen", default="127.0.0.1:8040", metavar="HOST:PORT", help="where to serve it (default 127.0.0.1:8040; port 0: any)"
    )
    p.add_argument(
        "--allow-remote",
        action="store_true",
        help="serve on a non-loopback address (anyone who reaches it reads as you: put your own access control in front)",
    )
    p.add_argument(
        "--keep",
        metavar="FILE",
        default=kept_file(),
        help="the auditor's kept checkpoints, shown and checked against (default as `pinlife audit checkpoint`)",
    )
    _command(p, "console", "console")


class _Version(argparse.Action):
    """--version, the version read only when asked for (runtime/build.py)."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs: object) -> None:
        super().__init__(option_strings, dest=dest, default=argparse.SUPPRESS, nargs=0, help="show the version and exit")

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: object, values: object, option_string: str | None = None
    ) -> None:
        print(f"{parser.prog} {build.version()}")
        parser.exit()


def parser() -> argparse.ArgumentParser:
    """The whole command line; each command names the module that runs it."""
    p = argparse.ArgumentParser(prog="pinlife", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action=_Version)
    client_options(p)
    sub = p.add_subparsers(dest="command_name", required=True)
    _server_commands(sub)
    for client in _client_commands(sub):  # the connection options after a client command too
        client_options(client, suppress=True)
    _audit_commands(sub)
    _console_command(sub)
    completion = sub.add_parser("completion", help="print the shell completion script of this command line (shtab)")
    completion.add_argument("shell", choices=["bash", "zsh", "tcsh", "fish", "powershell"])
    _command(completion, "completion", "completion")
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    module, function = args.command
    if module != "serve":
        # A client's errors are the one line it prints, not gRPC's own log
        # (read when gRPC starts, which it has not yet in this process).
        os.environ.setdefault("GRPC_VERBOSITY", "NONE")
        logs.configure()  # stderr: stdout carries only the command's output
    # Deferred on purpose: a command loads only its own module (serve never
    # loads rich or Alembic; a client command never loads SQLAlchemy).
    run = getattr(importlib.import_module(f".{module}", __package__), function)
    run(args)
