"""Real servers for end-to-end tests: in a thread of this process (so logs
can be captured), or as separate processes (python -m pinlife.cli serve);
and the `pinlife` command line, in its own process or in this one."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path

import grpc
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pinlife.bootstrap.serving import Server
from pinlife.config.settings import Settings
from pinlife.domain.access import Role
from pinlife.runtime.clock import system_clock
from pinlife.v1 import audit_service_pb2_grpc, counter_service_pb2_grpc, pin_service_pb2_grpc, store_service_pb2_grpc
from tests.rpc import Calls, development_metadata

ROOT = Path(__file__).resolve().parents[2]

# No request-rate limit for any role ([rate] settings): for the tests that
# flood one terminal to measure what lies behind the limit (the throttle, the
# aggregated refusals); the limit itself: tests/e2e/test_rate_limit.py.
NO_RATE_LIMITS: dict[str, str] = {f"rate_{role.value}": "off" for role in Role}
NO_RATE_LIMITS_ENV: dict[str, str] = {f"PINLIFE_RATE_{role.value.upper()}": "off" for role in Role}


class WithMetadata:
    """A stub whose calls carry the client's metadata (its terminal header)."""

    def __init__(self, stub, metadata):
        self._stub, self._metadata = stub, metadata

    def __getattr__(self, name):
        method = getattr(self._stub, name)
        return lambda request, **kw: method(request, metadata=self._metadata, **kw)


class Client(Calls):
    def __init__(
        self,
        target: str,
        terminal: str = "e2e-terminal",
        credentials: grpc.ChannelCredentials | None = None,
        office: str | None = None,
        chain: str | None = None,
    ):
        if credentials is None:
            self.channel = grpc.insecure_channel(target)
        else:
            self.channel = grpc.secure_channel(target, credentials, options=[("grpc.ssl_target_name_override", "localhost")])
        self.pins = pin_service_pb2_grpc.PinServiceStub(self.channel)
        self.counter = counter_service_pb2_grpc.CounterServiceStub(self.channel)
        self.store = store_service_pb2_grpc.ConvenienceStoreServiceStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)
        self.metadata = development_metadata(terminal, office, chain)
        self.audit = WithMetadata(audit_service_pb2_grpc.AuditServiceStub(self.channel), self.metadata)

    def close(self) -> None:
        self.channel.close()

    def serving(self) -> bool:
        try:
            return self.health.Check(health_pb2.HealthCheckRequest(), timeout=2).status == health_pb2.HealthCheckResponse.SERVING
        except grpc.RpcError:
            return False


class ThreadedServer:
    """The real Server on its own event loop in a background thread."""

    def __init__(
        self,
        database_url: str,
        keys,
        clock=None,
        batch_max: int = 256,
        access=None,
        access_file=None,
        writer=None,
        metrics: bool = False,
        settings: Settings | None = None,
        batch_deadline: float | None = None,
        health_interval: float = 1.0,
        rates: Mapping[str, str] | None = None,
        tracing=None,
    ):
        """A server on `database_url` with test settings, or with `settings`
        as given (its clock then comes from them unless `clock` is given).
        batch_deadline (the settings' default unless given) and
        health_interval (how often health looks at the store and the writer):
        shorter for a test that waits on them. rates: request rates by
        setting name (NO_RATE_LIMITS: none). tracing: a Tracing (spans in memory)."""
        if settings is None:
            clock = clock or system_clock
            # The thread writer unless a test is about the writer process (which
            # costs a spawned child per server).
            writer = writer or "thread"
            settings = Settings(
                env="test",
                database_url=database_url,
                listen="127.0.0.1:0",
                batch_max=batch_max,
                access_file=access_file,
                writer=writer,
                metrics_listen="127.0.0.1:0" if metrics else "",
            )
        if batch_deadline is not None:
            settings = replace(settings, batch_deadline_seconds=batch_deadline)
        if rates is not None:  # [rate] settings by name: rate_<role> = "2/s burst 5" | "off"
            settings = replace(settings, **rates)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="e2e-server", daemon=True)
        self.thread.start()

        async def make() -> Server:
            server = Server(settings, keys, clock, access=access, tracing=tracing)
            await server.start(health_interval)
            return server

        self.server: Server = self._run(make())
        self.target = f"127.0.0.1:{self.server.port}"
        self.store = self.server.store
        self.metrics_url = f"http://127.0.0.1:{self.server.metrics_port}/metrics" if settings.metrics_listen else None

    def _run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def close(self) -> None:
        self._run(self.server.stop(0))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def refusing_port() -> Iterator[int]:
    """A port where nothing listens for as long as the block runs: bound
    here without listening (a connection to it is refused), so no other
    test's server can take it meanwhile, as it could a free_port()."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


class ProcessServer:
    """`python -m pinlife.cli serve` in its own process."""

    def __init__(
        self, database_url: str, key_file: Path, log_path: Path, env: dict[str, str] | None = None, new_session: bool = False
    ):
        self.port = free_port()
        self.target = f"127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "PINLIFE_ENV": "test",
            "PINLIFE_DATABASE_URL": database_url,
            "PINLIFE_KEY_FILE": str(key_file),
            "PINLIFE_LISTEN": self.target,
            "PINLIFE_LOG_FORMAT": "json",
            **(env or {}),
        }
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pinlife.cli", "serve"],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=new_session,  # its own process group, as under a supervisor
        )
        client = Client(self.target)
        deadline = time.monotonic() + 30
        try:
            while not client.serving():
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"server did not start; see {log_path}")
                time.sleep(0.02)
        finally:
            client.close()

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


class TcpProxy:
    """A loopback TCP proxy that a test can cut (refusing and dropping every
    connection, as a stopped database does) and restore."""

    def __init__(self, target_port: int, host: str = "127.0.0.1"):
        self.host, self.target_port = host, target_port
        self.port = free_port()
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self.restore()

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            try:
                listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
            except OSError:
                pass
            listener.close()
        with self._lock:
            for conn in self._conns:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                conn.close()
            self._conns.clear()

    close = cut

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection((self.host, self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


# -- the command line ------------------------------------------------------------------
def cli_process(*args: str, env: Mapping[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    """`pinlife ARGS` as an operator runs it: `python -m pinlife.cli ARGS`
    in its own process (an interpreter and the imports: about a second)."""
    return subprocess.run(
        [sys.executable, "-m", "pinlife.cli", *args],
        cwd=ROOT,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class _ThreadOutput(io.TextIOBase):
    """sys.stdout or sys.stderr while a command runs in this process: what
    the command's thread writes is captured; what other threads write (a
    ThreadedServer's log lines) goes where it went before."""

    def __init__(self, before, thread: int):
        self.before, self.thread, self.buffer_ = before, thread, io.StringIO()

    def write(self, text: str) -> int:
        if threading.get_ident() == self.thread:
            return self.buffer_.write(text)
        return self.before.write(text)

    def flush(self) -> None:
        if threading.get_ident() != self.thread:
            self.before.flush()

    def isatty(self) -> bool:
        return False  # as a pipe: a subprocess's captured output

    @property
    def encoding(self) -> str:  # rich asks
        return "utf-8"


def _set_environment(env: Mapping[str, str]) -> None:
    """os.environ made `env`, changing only the variables that differ (other
    threads of the process may read the environment meanwhile)."""
    for key in [k for k in os.environ if k not in env]:
        del os.environ[key]
    for key, value in env.items():
        if os.environ.get(key) != value:
            os.environ[key] = value


@contextlib.contextmanager
def _environment(env: Mapping[str, str]) -> Iterator[None]:
    before = dict(os.environ)
    _set_environment(env)
    try:
        yield
    finally:
        _set_environment(before)


def cli(*args: str, env: Mapping[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    """`pinlife ARGS` run in this process (pinlife.cli.main.main): what it
    prints, its exit code and, for an exception that escapes, a traceback on
    stderr and 1, as `python -m pinlife.cli` would give; with exactly the
    environment `env` while it runs. Milliseconds instead of the second a
    process costs. Not for `serve` (it serves until a signal, then calls
    os._exit): cli_process runs that; and what only a process shows (gRPC's
    own logging, read once when gRPC starts) is tested with cli_process.
    `timeout` is cli_process's: a command here is not stopped."""
    from pinlife.cli.main import main, parser

    try:
        with contextlib.redirect_stderr(io.StringIO()):  # a usage error is the command's own, below
            command = parser().parse_args(list(args)).command
    except SystemExit:
        command = None
    if command == ("serve", "serve"):
        raise ValueError("`pinlife serve` runs in its own process: cli_process or ProcessServer")

    thread = threading.get_ident()
    out, err = _ThreadOutput(sys.stdout, thread), _ThreadOutput(sys.stderr, thread)
    logging_before = structlog.get_config()  # main() configures logging to its stderr: put back after
    code = 0
    try:
        with _environment(env), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main(list(args))
            except SystemExit as exc:
                if exc.code is None or isinstance(exc.code, int):
                    code = exc.code or 0
                else:
                    print(exc.code, file=sys.stderr)
                    code = 1
            except Exception:  # noqa: BLE001 - as the interpreter reports it
                traceback.print_exc()
                code = 1
    finally:
        structlog.configure(**logging_before)
    return subprocess.CompletedProcess(["pinlife", *args], code, out.buffer_.getvalue(), err.buffer_.getvalue())
