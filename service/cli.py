"""pinlife command line: run the server, migrate, and talk to a running
server as a newcomer would.

    pinlife serve | migrate | dev-key [PATH] | check
    pinlife enroll CARD --pin TYPE=PIN ...     (a missing =PIN is prompted for)
    pinlife verify CARD TYPE [PIN]
    pinlife change CARD TYPE [CURRENT NEW]
    pinlife status CARD [TYPE]

TYPE is one of: resident_registry, card_info_input_support,
user_certificate, signature. PINs left off the command line are read
without echo. PINs are never printed.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
import uuid

from service import config as config_mod
from service.domain.pins import PinType

TYPES = [t.value for t in PinType]


def _settings() -> config_mod.Settings:
    try:
        return config_mod.from_env()
    except config_mod.ConfigError as exc:
        sys.exit(f"pinlife: configuration: {exc}")


def _keys(settings):
    from service.keys import KeyFileError, KeyRing

    try:
        return KeyRing.load(settings.key_file)
    except KeyFileError as exc:
        sys.exit(f"pinlife: {exc} (set PINLIFE_KEY_FILE, or run `pinlife dev-key` in development)")


def cmd_serve(args) -> None:
    from service import logs
    from service.api.server import serve

    from service.access_config import AccessConfigError, load_access_config

    settings = _settings()
    logs.configure(settings.log_format)
    try:
        access = load_access_config(settings.access_file) if settings.access_file else None
    except AccessConfigError as exc:
        sys.exit(f"pinlife: {exc}")
    asyncio.run(serve(settings, _keys(settings), access))


def cmd_migrate(args) -> None:
    from service.store.migrate import upgrade

    upgrade(_settings().database_url)
    print("migrated to head")


def cmd_dev_key(args) -> None:
    from pathlib import Path

    from service.keys import write_new_key_file

    path = Path(args.path or _settings().key_file)
    if path.exists():
        print(f"{path} exists; keeping it")
        return
    write_new_key_file(path)
    print(f"WARNING: wrote a development verifier key to {path}. Production keys come from a "
          "secret store and are named by PINLIFE_KEY_FILE.", file=sys.stderr)


def cmd_check(args) -> None:
    """Walk every hash chain, compare the projection with a rebuild, and
    count the verifiers under each key id."""
    from service.store.event_store import EventStore

    store = EventStore(_settings().database_url)
    broken = store.first_broken_link()
    same = store.rebuild() == store.projection()
    print(json.dumps({"events": store.head_position(), "first_broken_link": broken and broken.__dict__,
                      "projection_matches_rebuild": same, "secrets_by_key": store.secrets_by_key()}))
    store.close()
    sys.exit(0 if broken is None and same else 1)


# -- client commands --------------------------------------------------------
def _stub(args):
    import grpc

    from pinlife.v1 import counter_service_pb2_grpc, pin_service_pb2_grpc

    channel = grpc.insecure_channel(args.server)
    return pin_service_pb2_grpc.PinServiceStub(channel), counter_service_pb2_grpc.CounterServiceStub(channel)


def _pin_type(name: str) -> int:
    from service.api.mapping import PIN_TYPE_TO_PROTO

    try:
        return PIN_TYPE_TO_PROTO[PinType(name)]
    except ValueError:
        sys.exit(f"pinlife: unknown PIN type {name!r}; one of {', '.join(TYPES)}")


def _ask(prompt: str, given: str | None) -> str:
    return given if given is not None else getpass.getpass(prompt)


def _show(message) -> None:
    from google.protobuf.json_format import MessageToDict

    print(json.dumps(MessageToDict(message, preserving_proto_field_name=True), indent=2, ensure_ascii=False))


def _call(fn, request) -> None:
    import grpc
    from grpc_status import rpc_status

    try:
        _show(fn(request, timeout=10, metadata=[("x-pinlife-terminal", "cli")]))
    except grpc.RpcError as err:
        status = rpc_status.from_call(err)
        print(f"error: {err.code().name}: {err.details()}", file=sys.stderr)
        if status is not None:
            from google.rpc import error_details_pb2

            for detail in status.details:
                bad = error_details_pb2.BadRequest()
                if detail.Unpack(bad):
                    for v in bad.field_violations:
                        print(f"  {v.field}: {v.description}", file=sys.stderr)
        sys.exit(1)


def cmd_enroll(args) -> None:
    from pinlife.v1 import counter_service_pb2 as cpb

    pins = []
    for item in args.pin:
        name, sep, value = item.partition("=")
        pins.append(cpb.InitialPin(pin_type=_pin_type(name), pin=value if sep else _ask(f"{name} PIN: ", None)))
    _, counter = _stub(args)
    _call(counter.EnrollCard, cpb.EnrollCardRequest(request_id=str(uuid.uuid4()), card_id=args.card, pins=pins))


def cmd_verify(args) -> None:
    from pinlife.v1 import pin_service_pb2 as ppb

    pin, _ = _stub(args)
    request = ppb.VerifyPinRequest(request_id=str(uuid.uuid4()), card_id=args.card,
                                   pin_type=_pin_type(args.type), pin=_ask("PIN: ", args.pin))
    _call(pin.VerifyPin, request)


def cmd_change(args) -> None:
    from pinlife.v1 import pin_service_pb2 as ppb

    pin, _ = _stub(args)
    request = ppb.ChangePinRequest(
        request_id=str(uuid.uuid4()), card_id=args.card, pin_type=_pin_type(args.type),
        current_pin=_ask("current PIN: ", args.current), new_pin=_ask("new PIN: ", args.new),
    )
    _call(pin.ChangePin, request)


def cmd_status(args) -> None:
    from pinlife.v1 import pin_service_pb2 as ppb

    pin, _ = _stub(args)
    _call(pin.GetPinStatus, ppb.GetPinStatusRequest(card_id=args.card, pin_type=_pin_type(args.type) if args.type else 0))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="pinlife", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", default="127.0.0.1:50051", help="address of a running server")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run the gRPC server").set_defaults(fn=cmd_serve)
    sub.add_parser("migrate", help="apply the Alembic migrations").set_defaults(fn=cmd_migrate)
    p = sub.add_parser("dev-key", help="create a development verifier key file if missing")
    p.add_argument("path", nargs="?")
    p.set_defaults(fn=cmd_dev_key)
    sub.add_parser("check", help="verify the hash chains and the projection").set_defaults(fn=cmd_check)
    p = sub.add_parser("enroll", help="enroll a card with its initial PINs")
    p.add_argument("card")
    p.add_argument("--pin", action="append", required=True, metavar="TYPE[=PIN]")
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
    args = parser.parse_args(argv)
    args.fn(args)


if __name__ == "__main__":
    main()
