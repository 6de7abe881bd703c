"""pinlife command line: run the server, migrate, and talk to a running
server as a newcomer would.

    pinlife serve | migrate | dev-key [PATH] | grants ROLE
    pinlife check [--checkpoint NOTE_FILE ...] | checkpoint
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

Client commands take --server (default $PINLIFE_LISTEN, else
127.0.0.1:50051) and, for mutual TLS, --ca, --cert and --key (or
PINLIFE_CA, PINLIFE_CERT and PINLIFE_CLIENT_KEY), before or after the command.

TYPE is one of: resident_registry, card_info_input_support,
user_certificate, signature. PINs left off the command line are read
without echo. PINs are never printed.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
import uuid
from datetime import date
from typing import TYPE_CHECKING, NoReturn

from service import config as config_mod
from service.domain.pins import PinType

if TYPE_CHECKING:  # the client commands import the stubs when they run
    from pinlife.v1 import common_pb2

TYPES = [t.value for t in PinType]
SERVER_SIDE = {"serve", "migrate", "dev-key", "grants", "check", "checkpoint", "config"}  # the rest call a server


def _settings() -> config_mod.Settings:
    try:
        return config_mod.from_env()
    except config_mod.ConfigError as exc:
        _config_problems(exc.problems)


def die(message: str) -> NoReturn:
    """The command could not run: one line on stderr, exit 2 (1 is kept for
    a problem found, as `pinlife check` reports one)."""
    print(message, file=sys.stderr)
    sys.exit(2)


def _config_problems(problems: list[str], code: int = 2) -> NoReturn:
    lines = [f"pinlife: configuration: {problems[0]}"] if len(problems) == 1 else [
        f"pinlife: configuration: {len(problems)} problems:", *(f"  - {p}" for p in problems)
    ]  # fmt: skip
    print("\n".join(lines), file=sys.stderr)
    sys.exit(code)


def cmd_config_check(args) -> None:
    """Everything `serve` reads before it serves, without serving: the
    configuration (file and variables), the access rules, the offices file
    and the key file. Every problem at once; exit 0 if none, 1 otherwise."""
    from service.access_config import AccessConfigError, access_from_settings
    from service.keys import KeyFileError, KeyRing
    from service.domain.policy import ThrottlePolicy
    from service.offices import OfficesConfigError, load_policy

    env = dict(os.environ)
    if args.file:
        env.pop("PINLIFE_CONFIG", None)
    try:
        settings = config_mod.load(env, path=args.file)
    except config_mod.ConfigError as exc:
        _config_problems(exc.problems, code=1)
    problems = []
    try:
        access_from_settings(settings)
    except AccessConfigError as exc:
        problems.append(f"access: {exc}")
    try:
        load_policy(settings.offices_file, ThrottlePolicy(), date.today())
    except OfficesConfigError as exc:
        problems.append(f"offices: {exc}")
    try:
        KeyRing.load(settings.key_file)
    except KeyFileError as exc:
        problems.append(f"PINLIFE_KEY_FILE ([keys] key_file): {exc}")
    if problems:
        _config_problems(problems, code=1)
    where = args.file or os.environ.get("PINLIFE_CONFIG") or "the environment"
    mode = "mutual TLS" if settings.tls else "development mode (plain text on loopback)"
    print(f"pinlife: {where}: ok ({settings.env}, {mode}, {settings.database_url.split('://')[0]} store)")


def _keys(settings):
    """The key file, refused when others may read it in production (a
    warning in development), as OpenSSH treats private keys."""
    from service.file_modes import FileModeError, check_private_file
    from service.keys import KeyFileError, KeyRing

    try:
        keys = KeyRing.load(settings.key_file)
        warning = check_private_file(settings.key_file, production=settings.production, what="the key file (PINLIFE_KEY_FILE)")
    except KeyFileError as exc:
        die(f"pinlife: {exc} (set PINLIFE_KEY_FILE, or run `pinlife dev-key` in development)")
    except FileModeError as exc:
        die(f"pinlife: {exc}")
    if warning:
        print(f"pinlife: warning: {warning}", file=sys.stderr)
    return keys


def cmd_serve(args) -> None:
    from service import logs
    from service.api.server import serve

    from service.access_config import AccessConfigError, access_from_settings

    settings = _settings()
    logs.configure(settings.log_format)
    try:
        access = access_from_settings(settings)
    except AccessConfigError as exc:
        die(f"pinlife: {exc}")
    keys = _keys(settings)

    async def serve_then_exit() -> None:
        status = await serve(settings, keys, access)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)  # from the running loop, with gRPC as it is (see serve)

    asyncio.run(serve_then_exit())


def sqlite_path(url: str):
    """The file of a SQLite store (None for other databases, or in memory)."""
    from pathlib import Path

    from sqlalchemy.engine import make_url

    u = make_url(url)
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:":
        return None
    return Path(u.database)


def _store(settings):
    """The configured store, refused (not created) when it does not exist."""
    from service.store.event_store import EventStore

    path = sqlite_path(settings.database_url)
    if path is not None and not path.exists():
        die(f"pinlife: there is no store at {path} (run `pinlife migrate` to make one)")
    return EventStore(settings.database_url)


def cmd_migrate(args) -> None:
    """Apply the migrations; then, if the store holds events chained before
    keyed chains, re-chain them under the integrity key, and MAC answers kept
    before answers had MACs (service/store/rechain.py)."""
    from service.store.event_store import EventStore
    from service.store.migrate import upgrade
    from service.store.rechain import RechainRefused, rechain, seal_answers, unkeyed_events, unsealed_answers

    settings = _settings()
    upgrade(settings.database_url)
    print("migrated to head")
    store = EventStore(settings.database_url)
    try:
        if unkeyed_events(store):
            try:
                print(f"re-chained {rechain(store, _keys(settings).integrity)} events under the integrity key")
            except RechainRefused as exc:
                die(f"pinlife: not re-chained: {exc}")
        if unsealed_answers(store):
            print(f"sealed {seal_answers(store, _keys(settings).integrity)} kept answers under the integrity key")
    finally:
        store.close()


def cmd_grants(args) -> None:
    """Print the SQL that gives the service's PostgreSQL role exactly the
    privileges it needs (docs/database-roles.md); run it as the schema owner."""
    from service.store.roles import RoleNameError, grant_script

    try:
        print(grant_script(args.role), end="")
    except RoleNameError as exc:
        die(f"pinlife: {exc}")


def cmd_dev_key(args) -> None:
    """A development key file. Never over a store that already has
    verifiers: they were made with a key this command cannot bring back, and
    a new key under the same id would turn every correct PIN into a wrong one."""
    from pathlib import Path

    from service.keys import add_missing_sections, write_new_key_file
    from service.store.engine import display_url
    from service.store.event_store import EventStore
    from service.store.key_checks import has_verifiers

    settings = _settings()
    path = Path(args.path or settings.key_file)
    if path.exists():
        added = add_missing_sections(path)
        print(f"{path} exists; keeping its keys" + (f", added {' and '.join(added)} keys" if added else ""))
        return
    db = sqlite_path(settings.database_url)
    if db is None or db.exists():
        store = EventStore(settings.database_url)
        try:
            if has_verifiers(store):
                die(
                    f"pinlife: {path} is missing but the store {display_url(settings.database_url)} already has PIN verifiers "
                    "made with its key: restore the key file (a new key would make every correct PIN wrong), "
                    "or point PINLIFE_DATABASE_URL at a new store"
                )
        except Exception as exc:  # noqa: BLE001 - an unmigrated or unreachable store has no verifiers to lose
            if isinstance(exc, SystemExit):
                raise
        finally:
            store.close()
    write_new_key_file(path)
    print(
        f"WARNING: wrote development keys to {path}. Production keys come from a secret store and are named by PINLIFE_KEY_FILE.",
        file=sys.stderr,
    )


def cmd_check(args) -> None:
    """Every integrity check of the store (service/store/check.py); exit 0
    intact, 1 a problem found, 2 an error."""
    from pathlib import Path

    from service.store.check import check_store

    settings = _settings()
    notes = []
    for name in args.checkpoint or ():
        try:
            notes.append(Path(name).read_text())
        except OSError as exc:
            die(f"pinlife: cannot read the checkpoint {name}: {exc.strerror}")
    store = _store(settings)
    try:
        report = check_store(store, _keys(settings), notes)
        print(json.dumps({**report.as_dict(), "secrets_by_key": store.secrets_by_key()}, default=str))
    finally:
        store.close()
    sys.exit(0 if report.intact else 1)


def cmd_checkpoint(args) -> None:
    """Sign a checkpoint of the log now and print it (the signed note), with
    the verifier key to check it with on stderr."""
    from service.app.ports import IntegrityViolation
    from service.clock import system_clock
    from service.store import checkpoints
    from service.store.key_checks import key_problems

    settings = _settings()
    keys = _keys(settings)
    store = _store(settings)
    try:
        problems = key_problems(store, keys, system_clock())
        if problems:
            die("pinlife: not signed: " + "; ".join(problems))
        try:
            checkpoints.sign_checkpoint(store, keys, system_clock())
        except IntegrityViolation as exc:
            # a problem found in the store: 1, as `pinlife check` says
            sys.exit(f"pinlife: not signed: {exc.stream_id}: {exc.reason} (`pinlife check` for the report)")
        latest = checkpoints.latest(store)
    finally:
        store.close()
    if latest is None:
        die("pinlife: the log is empty; nothing to sign")
    print(latest.note, end="")
    print(f"verifier key: {checkpoints.public_verifier_key(keys)}", file=sys.stderr)


# -- client commands --------------------------------------------------------
def default_server(env=None) -> str:
    """$PINLIFE_LISTEN (a wildcard host reached on loopback), else 127.0.0.1:50051."""

    listen = (os.environ if env is None else env).get("PINLIFE_LISTEN") or "127.0.0.1:50051"
    host, sep, port = listen.rpartition(":")
    wildcard = {"0.0.0.0": "127.0.0.1", "[::]": "[::1]", "": "127.0.0.1"}
    return f"{wildcard[host]}:{port}" if sep and host in wildcard else listen


def client_options(parser: argparse.ArgumentParser, suppress: bool = False, identity: bool = True) -> None:
    """Where a client command calls, and as whom: given before the command
    (with their defaults) or after it (suppress: only what is given
    overrides). identity: the development-mode --terminal, --office, --chain."""

    def default(value):
        return argparse.SUPPRESS if suppress else value

    g = parser.add_argument_group("connection")
    g.add_argument(
        "--server",
        default=default(default_server()),
        help="address of a running server (default: $PINLIFE_LISTEN, else 127.0.0.1:50051)",
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


def fail(message: str, code: int = 2) -> NoReturn:
    """One line on stderr, and the exit code (2: the command could not run)."""
    print(f"pinlife: {message}", file=sys.stderr)
    sys.exit(code)


def _tls(args) -> bool:
    return bool(args.ca or args.cert or args.key)


def _credentials(args):
    import grpc

    if bool(args.cert) != bool(args.key):
        fail("--cert and --key go together (the terminal's certificate and its private key)")

    def read(option: str, name: str | None) -> bytes | None:
        if not name:
            return None
        try:
            with open(name, "rb") as f:
                return f.read()
        except OSError as exc:
            fail(f"cannot read {option} {name}: {exc.strerror}")

    return grpc.ssl_channel_credentials(
        root_certificates=read("--ca", args.ca),
        private_key=read("--key", args.key),
        certificate_chain=read("--cert", args.cert),
    )


def channel(args):
    """The one channel of a command, shared by its stubs: mutual TLS when
    --ca, --cert or --key is given (or their PINLIFE_ variables), else plain
    text (development mode)."""
    import grpc

    if getattr(args, "_channel", None) is None:
        if _tls(args):
            args._channel = grpc.secure_channel(args.server, _credentials(args))
        else:
            args._channel = grpc.insecure_channel(args.server)
    return args._channel


def _stub(args):
    from pinlife.v1 import counter_service_pb2_grpc, pin_service_pb2_grpc

    ch = channel(args)
    return pin_service_pb2_grpc.PinServiceStub(ch), counter_service_pb2_grpc.CounterServiceStub(ch)


def _store_stub(args):
    from pinlife.v1 import store_service_pb2_grpc

    return store_service_pb2_grpc.ConvenienceStoreServiceStub(channel(args))


def metadata(args) -> list[tuple[str, str]]:
    """Development mode: who the CLI acts as (terminal, counter office, store
    chain). With TLS the certificate says who, and nothing is sent."""
    if _tls(args):
        return []
    md = [("x-pinlife-terminal", args.terminal)]
    if args.office:
        md.append(("x-pinlife-office", args.office))
    if args.chain:
        md.append(("x-pinlife-chain", args.chain))
    return md


def _documents(items: list[str]):
    from pinlife.v1 import common_pb2 as pb

    docs = []
    for item in items or []:
        name, _, issued = item.partition(":")
        value = getattr(pb, f"DOCUMENT_TYPE_{name.upper()}", None)
        if value is None:
            names = [n.removeprefix("DOCUMENT_TYPE_").lower() for n in pb.DocumentType.keys()[1:]]
            die(f"pinlife: unknown document {name!r}; one of {', '.join(names)}")
        docs.append(pb.Document(type=value, issued_on=issued))
    return docs


def _applicant(name: str) -> common_pb2.Applicant.ValueType:
    from pinlife.v1 import common_pb2 as pb

    return getattr(pb, f"APPLICANT_{name.upper()}")


def _pin_type(name: str) -> common_pb2.PinType.ValueType:
    from service.api.mapping import PIN_TYPE_TO_PROTO

    try:
        return PIN_TYPE_TO_PROTO[PinType(name)]
    except ValueError:
        die(f"pinlife: unknown PIN type {name!r}; one of {', '.join(TYPES)}")


def _ask(prompt: str, given: str | None) -> str:
    return given if given is not None else getpass.getpass(prompt)


def _show(message) -> None:
    from google.protobuf.json_format import MessageToDict

    print(json.dumps(MessageToDict(message, preserving_proto_field_name=True), indent=2, ensure_ascii=False))


def rpc_error(err) -> tuple[str, list[str]]:
    """An RPC error as "CODE: details", and what its google.rpc details add
    (field violations, failed preconditions, when to retry), one per item."""
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    code = err.code().name if err.code() is not None else "UNKNOWN"
    head = f"{code}: {' '.join((err.details() or '').split())}"
    extra: list[str] = []
    try:
        status = rpc_status.from_call(err)
    except ValueError:  # a status detail that contradicts the call's code or message
        status = None
    for detail in status.details if status is not None else ():
        bad, failure, retry = (
            error_details_pb2.BadRequest(),
            error_details_pb2.PreconditionFailure(),
            error_details_pb2.RetryInfo(),
        )
        if detail.Unpack(bad):
            extra += [f"{v.field}: {v.description}" for v in bad.field_violations]
        elif detail.Unpack(failure):
            extra += [f"{p.type} {p.subject}: {p.description}" for p in failure.violations]
        elif detail.Unpack(retry):
            extra.append(f"retry in {retry.retry_delay.ToTimedelta().total_seconds():g} s")
    return head, extra


def _call(fn, request, args) -> None:
    import grpc

    try:
        _show(fn(request, timeout=10, metadata=metadata(args)))
    except grpc.RpcError as err:
        head, extra = rpc_error(err)
        print(f"error: {head}", file=sys.stderr)
        for line in extra:
            print(f"  {line}", file=sys.stderr)
        sys.exit(1)


def cmd_enroll(args) -> None:
    from pinlife.v1 import counter_service_pb2 as cpb

    pins = []
    for item in args.pin:
        name, sep, value = item.partition("=")
        pins.append(cpb.InitialPin(pin_type=_pin_type(name), pin=value if sep else _ask(f"{name} PIN: ", None)))
    _, counter = _stub(args)
    request = cpb.EnrollCardRequest(request_id=str(uuid.uuid4()), card_id=args.card, pins=pins, ward=args.ward or "")
    _call(counter.EnrollCard, request, args)


def cmd_verify(args) -> None:
    from pinlife.v1 import pin_service_pb2 as ppb

    pin, _ = _stub(args)
    request = ppb.VerifyPinRequest(
        request_id=str(uuid.uuid4()), card_id=args.card, pin_type=_pin_type(args.type), pin=_ask("PIN: ", args.pin)
    )
    _call(pin.VerifyPin, request, args)


def cmd_change(args) -> None:
    from pinlife.v1 import pin_service_pb2 as ppb

    pin, _ = _stub(args)
    request = ppb.ChangePinRequest(
        request_id=str(uuid.uuid4()),
        card_id=args.card,
        pin_type=_pin_type(args.type),
        current_pin=_ask("current PIN: ", args.current),
        new_pin=_ask("new PIN: ", args.new),
    )
    _call(pin.ChangePin, request, args)


def cmd_status(args) -> None:
    from pinlife.v1 import common_pb2 as pb
    from pinlife.v1 import pin_service_pb2 as ppb

    pin, _ = _stub(args)
    pin_type = _pin_type(args.type) if args.type else pb.PIN_TYPE_UNSPECIFIED
    _call(pin.GetPinStatus, ppb.GetPinStatusRequest(card_id=args.card, pin_type=pin_type), args)


def cmd_reset(args) -> None:
    from pinlife.v1 import counter_service_pb2 as cpb

    _, counter = _stub(args)
    request = cpb.ResetPinRequest(
        request_id=str(uuid.uuid4()),
        card_id=args.card,
        pin_type=_pin_type(args.type),
        new_pin=_ask("new PIN: ", args.new),
        applicant=_applicant(args.applicant),
        documents=_documents(args.doc),
        adult_ward=args.adult_ward,
    )
    _call(counter.ResetPin, request, args)


def cmd_unlock(args) -> None:
    from pinlife.v1 import counter_service_pb2 as cpb

    _, counter = _stub(args)
    request = cpb.UnlockPinRequest(
        request_id=str(uuid.uuid4()),
        card_id=args.card,
        pin_type=_pin_type(args.type),
        applicant=_applicant(args.applicant),
        documents=_documents(args.doc),
        adult_ward=args.adult_ward,
    )
    _call(counter.UnlockPin, request, args)


def cmd_proxy_request(args) -> None:
    from pinlife.v1 import counter_service_pb2 as cpb

    _, counter = _stub(args)
    request = cpb.RequestProxyResetRequest(
        request_id=str(uuid.uuid4()), card_id=args.card, pin_type=_pin_type(args.type), documents=_documents(args.doc)
    )
    _call(counter.RequestProxyReset, request, args)


def cmd_proxy_complete(args) -> None:
    from pinlife.v1 import counter_service_pb2 as cpb

    _, counter = _stub(args)
    request = cpb.CompleteProxyResetRequest(
        request_id=str(uuid.uuid4()),
        card_id=args.card,
        pin_type=_pin_type(args.type),
        inquiry_id=args.inquiry_id,
        code=_ask("inquiry code: ", args.code),
        new_pin=_ask("new PIN: ", args.new),
        documents=_documents(args.doc),
    )
    _call(counter.CompleteProxyReset, request, args)


def cmd_suspend(args) -> None:
    from pinlife.v1 import counter_service_pb2 as cpb

    _, counter = _stub(args)
    reason = getattr(cpb, f"SUSPENSION_REASON_{args.reason.upper()}")
    _call(counter.SuspendCard, cpb.SuspendCardRequest(request_id=str(uuid.uuid4()), card_id=args.card, reason=reason), args)


def cmd_resume(args) -> None:
    from pinlife.v1 import counter_service_pb2 as cpb

    _, counter = _stub(args)
    request = cpb.ResumeCardRequest(
        request_id=str(uuid.uuid4()),
        card_id=args.card,
        applicant=_applicant(args.applicant),
        documents=_documents(args.doc),
        adult_ward=args.adult_ward,
    )
    _call(counter.ResumeCard, request, args)


def cmd_reserve(args) -> None:
    from pinlife.v1 import pin_service_pb2 as ppb

    pin, _ = _stub(args)
    request = ppb.ReserveStoreResetRequest(
        request_id=str(uuid.uuid4()),
        card_id=args.card,
        pin_type=_pin_type(args.type),
        proving_pin=_ask("the other certificate's PIN: ", args.proving),
    )
    _call(pin.ReserveStoreReset, request, args)


def cmd_store_reset(args) -> None:
    from pinlife.v1 import store_service_pb2 as spb

    request = spb.StoreResetPinRequest(
        request_id=str(uuid.uuid4()),
        card_id=args.card,
        pin_type=_pin_type(args.type),
        proving_pin=_ask("the PIN proved when reserving: ", args.proving),
        new_pin=_ask("new PIN: ", args.new),
    )
    _call(_store_stub(args).ResetPin, request, args)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="pinlife", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    client_options(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run the gRPC server").set_defaults(fn=cmd_serve)
    sub.add_parser("migrate", help="apply the Alembic migrations").set_defaults(fn=cmd_migrate)
    p = sub.add_parser("config", help="the configuration (pinlife.toml, PINLIFE_CONFIG)")
    config_sub = p.add_subparsers(dest="config_command", required=True, metavar="COMMAND")
    p = config_sub.add_parser("check", help="validate a configuration without serving: every problem at once (exit 1)")
    p.add_argument("file", nargs="?", help="the configuration file (default: $PINLIFE_CONFIG, else the environment alone)")
    p.set_defaults(fn=cmd_config_check)
    p = sub.add_parser("dev-key", help="create development keys if missing (never over a store with verifiers)")
    p.add_argument("path", nargs="?")
    p.set_defaults(fn=cmd_dev_key)
    p = sub.add_parser("grants", help="print the SQL granting the service's PostgreSQL role its privileges")
    p.add_argument("role", help="the login role the server connects as (e.g. pinlife_app)")
    p.set_defaults(fn=cmd_grants)
    p = sub.add_parser("check", help="check the keyed chains, MACs, positions, lawful history and checkpoints")
    p.add_argument("--checkpoint", action="append", metavar="NOTE_FILE", help="a signed checkpoint kept outside the store")
    p.set_defaults(fn=cmd_check)
    sub.add_parser("checkpoint", help="sign a checkpoint of the log now and print it").set_defaults(fn=cmd_checkpoint)
    p = sub.add_parser("enroll", help="enroll a card with its initial PINs")
    p.add_argument("card")
    p.add_argument("--pin", action="append", required=True, metavar="TYPE[=PIN]")
    p.add_argument("--ward", help="the holder's ward (counters act only for wards they serve)")
    p.set_defaults(fn=cmd_enroll)
    p = sub.add_parser("verify", help="verify a PIN")
    p.add_argument("card")
    p.add_argument("type", choices=TYPES)
    p.add_argument("pin", nargs="?")
    p.set_defaults(fn=cmd_verify)
    p = sub.add_parser("change", help="change a PIN, knowing the current one")
    p.add_argument("card")
    p.add_argument("type", choices=TYPES)
    p.add_argument("current", nargs="?")
    p.add_argument("new", nargs="?")
    p.set_defaults(fn=cmd_change)
    p = sub.add_parser("status", help="show the lock state of a card's PINs")
    p.add_argument("card")
    p.add_argument("type", nargs="?", choices=TYPES)
    p.set_defaults(fn=cmd_status)

    def counter_args(p, applicant: bool = True) -> None:
        p.add_argument("--doc", action="append", metavar="TYPE[:YYYY-MM-DD]", help="a document presented (repeat)")
        if applicant:
            p.add_argument("--applicant", default="holder", choices=["holder", "legal_representative"])
            p.add_argument("--adult-ward", action="store_true", help="the holder is an adult ward")

    p = sub.add_parser("reset", help="counter: set a new PIN and unlock")
    p.add_argument("card")
    p.add_argument("type", choices=TYPES)
    p.add_argument("new", nargs="?")
    counter_args(p)
    p.set_defaults(fn=cmd_reset)
    p = sub.add_parser("unlock", help="counter: clear the failure count, keep the PIN")
    p.add_argument("card")
    p.add_argument("type", choices=TYPES)
    counter_args(p)
    p.set_defaults(fn=cmd_unlock)
    p = sub.add_parser("proxy-request", help="counter: a proxy's first visit (issues an inquiry)")
    p.add_argument("card")
    p.add_argument("type", choices=TYPES)
    counter_args(p, applicant=False)
    p.set_defaults(fn=cmd_proxy_request)
    p = sub.add_parser("proxy-complete", help="counter: a proxy's second visit")
    p.add_argument("card")
    p.add_argument("type", choices=TYPES)
    p.add_argument("inquiry_id")
    p.add_argument("code", nargs="?")
    p.add_argument("new", nargs="?")
    counter_args(p, applicant=False)
    p.set_defaults(fn=cmd_proxy_complete)
    p = sub.add_parser("suspend", help="counter or call centre: suspend a lost card")
    p.add_argument("card")
    p.add_argument("--reason", default="lost", choices=["lost", "stolen", "other"])
    p.set_defaults(fn=cmd_suspend)
    p = sub.add_parser("resume", help="counter: resume a suspended card")
    p.add_argument("card")
    counter_args(p)
    p.set_defaults(fn=cmd_resume)
    p = sub.add_parser("reserve", help="reset app: reserve a convenience-store reset")
    p.add_argument("card")
    p.add_argument("type", choices=TYPES)
    p.add_argument("proving", nargs="?")
    p.set_defaults(fn=cmd_reserve)
    p = sub.add_parser("store-reset", help="kiosk: complete a reserved reset")
    p.add_argument("card")
    p.add_argument("type", choices=TYPES)
    p.add_argument("proving", nargs="?")
    p.add_argument("new", nargs="?")
    p.set_defaults(fn=cmd_store_reset)
    from service import audit_cli

    audit_cli.register(sub, client_options)
    for name, p in sub.choices.items():  # the connection options after a client command too
        if name not in SERVER_SIDE and name != "audit":
            client_options(p, suppress=True)
    args = parser.parse_args(argv)
    if args.fn is not cmd_serve:
        from service import logs

        # A client's errors are the one line it prints, not gRPC's own log
        # (read when gRPC starts, which it has not yet in this process).
        os.environ.setdefault("GRPC_VERBOSITY", "NONE")

        logs.configure()  # stderr: stdout carries only the command's output
    args.fn(args)


if __name__ == "__main__":
    main()
