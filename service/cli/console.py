"""`pinlife console`: serve the auditors' web console (service/console/) on
a local port, reading the server with this command's connection options,
as `pinlife audit` does (mutual TLS with the auditor's certificate, or
development mode)."""

from __future__ import annotations

import argparse
import socket
import sys

from ..config.settings import is_loopback
from .client import uses_tls
from .exits import fail

DEFAULT_LISTEN = "127.0.0.1:8040"


def listen_address(text: str) -> tuple[str, int]:
    """HOST:PORT (or [v6]:PORT) as a host and a port."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        fail(f"--listen {text!r}: HOST:PORT, e.g. {DEFAULT_LISTEN}")
    return host.strip("[]") or "127.0.0.1", int(port)


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        fail(f"cannot listen on {host}:{port}: {exc.strerror} (--listen HOST:PORT)")
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def console(args: argparse.Namespace) -> None:
    try:
        import uvicorn

        from ..console.app import create_app
        from ..console.client import GrpcReads
    except ImportError as exc:
        fail(f"pinlife console needs the console extra ({exc.name} is missing): pip install 'pinlife[console]'")
    host, port = listen_address(args.listen)
    if not is_loopback(host) and not args.allow_remote:
        fail(
            f"--listen {args.listen} is not a loopback address: anyone who reaches it reads the log as you "
            "(the console has no login of its own); use 127.0.0.1, or --allow-remote behind your own access control"
        )
    sock = bind(host, port)
    who = f"with the certificate {args.cert}" if uses_tls(args) else f"in development mode as terminal {args.terminal}"
    app = create_app(GrpcReads(args), kept=args.keep, hosts=[host], description=who)
    shown = f"[{host}]" if ":" in host else host
    print(
        f"pinlife console: http://{shown}:{sock.getsockname()[1]}/ reading {args.server} {who} (Ctrl-C ends)",
        file=sys.stderr,
        flush=True,
    )
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=2, lifespan="off")
    uvicorn.Server(config).run(sockets=[sock])
