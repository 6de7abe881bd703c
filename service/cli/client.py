"""The one client module every command that calls a server shares: the
channel (plain text in development, mutual TLS with --ca/--cert/--key), who
the CLI acts as in development mode, and RPC errors as lines."""

from __future__ import annotations

import argparse
import getpass
import json
import sys

import grpc
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from pinlife.v1 import common_pb2 as pb
from service.api.mapping import PIN_TYPE_TO_PROTO
from service.cli.args import TYPES
from service.cli.exits import PROBLEM, fail
from service.domain.pins import PinType


def uses_tls(args: argparse.Namespace) -> bool:
    return bool(args.ca or args.cert or args.key)


def _credentials(args: argparse.Namespace) -> grpc.ChannelCredentials:
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


def channel(args: argparse.Namespace) -> grpc.Channel:
    """The one channel of a command, shared by its stubs: mutual TLS when
    --ca, --cert or --key is given (or their PINLIFE_ variables), else plain
    text (development mode)."""
    if getattr(args, "_channel", None) is None:
        if uses_tls(args):
            args._channel = grpc.secure_channel(args.server, _credentials(args))
        else:
            args._channel = grpc.insecure_channel(args.server)
    return args._channel


def close(args: argparse.Namespace) -> None:
    """Close the command's channel (and its connectivity watcher, which would keep the process alive)."""
    if getattr(args, "_channel", None) is not None:
        args._channel.close()


def metadata(args: argparse.Namespace) -> list[tuple[str, str]]:
    """Development mode: who the CLI acts as (terminal, counter office, store
    chain). With TLS the certificate says who, and nothing is sent."""
    if uses_tls(args):
        return []
    md = [("x-pinlife-terminal", args.terminal)]
    if args.office:
        md.append(("x-pinlife-office", args.office))
    if args.chain:
        md.append(("x-pinlife-chain", args.chain))
    return md


def rpc_error(err: grpc.RpcError) -> tuple[str, list[str]]:
    """An RPC error as "CODE: details", and what its google.rpc details add
    (field violations, failed preconditions, when to retry), one per item."""
    call: grpc.Call = err  # type: ignore[assignment]  # grpc's RpcError raised by a call is also its Call
    code = call.code().name if call.code() is not None else "UNKNOWN"
    head = f"{code}: {' '.join((call.details() or '').split())}"
    extra: list[str] = []
    try:
        status = rpc_status.from_call(call)
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


def show(message: Message) -> None:
    print(json.dumps(MessageToDict(message, preserving_proto_field_name=True), indent=2, ensure_ascii=False))


def call(fn, request: Message, args: argparse.Namespace) -> None:
    """A unary call, its answer printed as JSON; an RPC error is its code,
    details and google.rpc details on stderr, and exit 1."""
    try:
        show(fn(request, timeout=10, metadata=metadata(args)))
    except grpc.RpcError as err:
        head, extra = rpc_error(err)
        print(f"error: {head}", file=sys.stderr)
        for line in extra:
            print(f"  {line}", file=sys.stderr)
        sys.exit(PROBLEM)


def ask(prompt: str, given: str | None) -> str:
    """A secret left off the command line is read without echo."""
    return given if given is not None else getpass.getpass(prompt)


def pin_type(name: str) -> pb.PinType.ValueType:
    try:
        return PIN_TYPE_TO_PROTO[PinType(name)]
    except ValueError:
        fail(f"unknown PIN type {name!r}; one of {', '.join(TYPES)}")


def documents(items: list[str] | None) -> list[pb.Document]:
    """--doc TYPE[:YYYY-MM-DD], as presented at a counter."""
    docs = []
    for item in items or []:
        name, _, issued = item.partition(":")
        value = getattr(pb, f"DOCUMENT_TYPE_{name.upper()}", None)
        if value is None:
            names = [n.removeprefix("DOCUMENT_TYPE_").lower() for n in pb.DocumentType.keys()[1:]]
            fail(f"unknown document {name!r}; one of {', '.join(names)}")
        docs.append(pb.Document(type=value, issued_on=issued))
    return docs


def applicant(name: str) -> pb.Applicant.ValueType:
    return pb.Applicant.Value(f"APPLICANT_{name.upper()}")
