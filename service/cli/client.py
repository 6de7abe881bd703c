"""The one client module every command that calls a server shares: the
channel (plain text in development, mutual TLS with --ca/--cert/--key), who
the CLI acts as in development mode, and RPC errors as lines."""

from __future__ import annotations

import argparse
import getpass
import json
import re
import sys

import grpc
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from ..api.mapping import PIN_TYPE_TO_PROTO
from ..domain.pins import PinType
from ..v1 import common_pb2 as pb
from .args import TYPES
from .exits import PROBLEM, fail


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
    --ca, --cert or --key is given (or their PINLIFE_ variables), the
    server's certificate checked against --server-name if given, else
    --server's host; else plain text (development mode)."""
    if getattr(args, "_channel", None) is None:
        if uses_tls(args):
            name = getattr(args, "server_name", None)
            options = [("grpc.ssl_target_name_override", name)] if name else []
            args._channel = grpc.secure_channel(args.server, _credentials(args), options=options)
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


def rpc_error(err: grpc.RpcError, args: argparse.Namespace | None = None) -> tuple[str, list[str]]:
    """An RPC error as "CODE: details", and what its google.rpc details add
    (field violations, failed preconditions, when to retry), one per item.
    With the command's `args`, a server certificate that does not name the
    host called is said as such: the names it has, and what to pass."""
    call: grpc.Call = err  # type: ignore[assignment]  # grpc's RpcError raised by a call is also its Call
    code = call.code().name if call.code() is not None else "UNKNOWN"
    head = f"{code}: {' '.join((call.details() or '').split())}"
    if args is not None and uses_tls(args) and HOSTNAME_FAILED.search(call.details() or ""):
        return f"{code}: {hostname_mismatch(args)}", []
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


# gRPC's words for a server certificate that does not name the target (core's
# "Hostname Verification Check failed", older releases' "Peer name ... is not in peer certificate").
HOSTNAME_FAILED = re.compile(r"Hostname Verification Check failed|Peer name .* is not in peer certificate", re.IGNORECASE)


def _host_port(server: str) -> tuple[str, int | None]:
    """--server as (host, port): host:port, [v6]:port, or a host alone."""
    target = server.removeprefix("dns:///").removeprefix("ipv4:").removeprefix("ipv6:")
    host, sep, port = target.rpartition(":")
    if not sep or "]" in port or (":" in host and not host.startswith("[")):  # no port, or a bare IPv6 address
        return target.strip("[]"), None
    return host.strip("[]"), int(port) if port.isdigit() else None


def server_certificate_names(args: argparse.Namespace) -> tuple[list[str], str | None] | None:
    """The names the server's certificate has (its DNS and IP
    subjectAltNames) and its common name, read in a TLS handshake of our own
    (with this terminal's certificate, checking nothing): None if it
    cannot be read."""
    import socket
    import ssl

    from cryptography import x509
    from cryptography.x509.oid import NameOID

    host, port = _host_port(args.server)
    if port is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    try:
        if args.cert and args.key:
            context.load_cert_chain(args.cert, args.key)
        with socket.create_connection((host, port), timeout=3) as sock, context.wrap_socket(sock) as tls:
            der = tls.getpeercert(binary_form=True)
        cert = x509.load_der_x509_certificate(der) if der else None
    except (OSError, ValueError):
        return None
    if cert is None:
        return None
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [str(n) for n in sans.get_values_for_type(x509.DNSName)]
        names += [str(a) for a in sans.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        names = []
    common = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return names, (str(common[0].value) if common else None)


def hostname_mismatch(args: argparse.Namespace) -> str:
    """One line: the server's certificate does not name the host called;
    the names it has; what to pass (--server with one of them, or --server-name)."""
    called = getattr(args, "server_name", None) or _host_port(args.server)[0]
    option = "--server-name" if getattr(args, "server_name", None) else "--server"
    found = server_certificate_names(args)
    if found is None:
        return (
            f"the server's certificate does not name {called} ({option}): pass --server HOST:PORT with a name it has "
            "(openssl x509 -noout -ext subjectAltName -in server.pem), or --server-name NAME"
        )
    names, common = found
    port = _host_port(args.server)[1]
    if not names:
        return (
            f"the server's certificate has no subjectAltName, only the common name {common!r}, which is not {called}: "
            f"pass --server-name {common}; better, re-issue it with subjectAltNames (`pinlife pki init`, or "
            "docs/operations.md), as grpcurl and Go refuse it"
        )
    name = next((n for n in names if not _is_address(n)), names[0])
    host = f"[{name}]" if ":" in name else name
    return (
        f"the server's certificate does not name {called} ({option}); it names {', '.join(names)}: "
        f"pass --server {host}:{port} (if it reaches this server), or --server-name {name}"
    )


def _is_address(name: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def show(message: Message) -> None:
    print(json.dumps(MessageToDict(message, preserving_proto_field_name=True), indent=2, ensure_ascii=False))


def call(fn, request: Message, args: argparse.Namespace) -> None:
    """A unary call, its answer printed as JSON; an RPC error is its code,
    details and google.rpc details on stderr, and exit 1."""
    try:
        show(fn(request, timeout=10, metadata=metadata(args)))
    except grpc.RpcError as err:
        head, extra = rpc_error(err, args)
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
