"""A child Python process that runs one function of this package and talks
to its parent over a Connection (multiprocessing.connection: pickled
messages) on a socket pair: the writer process, the integrity check's.

Not multiprocessing's `spawn`: besides the child it starts a resource
tracker, a third Python process (about 13 MB resident) that lives as long as
the server, for semaphores and shared memory this service never makes.
Like `spawn` (and unlike a fork of a process that runs gRPC, which is not
safe), the child is a fresh interpreter: it imports this package by its
installed name, takes the parent's `sys.path`, then the function and its
arguments, pickled.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

# The child's first statement: leave rich out (heap.without_rich), import
# this module under the name the parent knows it by (the package's installed
# name), and enter.
_ENTER = "import sys; from {heap} import without_rich; without_rich(); from {module} import _enter; _enter(int(sys.argv[1]))"


class Child:
    """The part of multiprocessing.Process the service uses, over a Popen."""

    def __init__(self, proc: subprocess.Popen[bytes]):
        self._proc = proc
        self.pid = proc.pid

    def is_alive(self) -> bool:
        return self._proc.poll() is None

    @property
    def exitcode(self) -> int | None:
        """None while it runs; negative: the signal that ended it."""
        return self._proc.poll()

    def join(self, timeout: float | None = None) -> None:
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass

    def kill(self) -> None:
        if self.is_alive():
            self._proc.kill()


def start(target: Callable[..., None], args: tuple[Any, ...]) -> tuple[Child, Connection]:
    """Start a child that calls `target(connection, *args)`; the child and
    the parent's end of the connection. `target` must be a module-level
    function (it is pickled by name)."""
    parent, child = socket.socketpair()
    try:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                _ENTER.format(heap=__name__.rpartition(".")[0] + ".heap", module=__name__),
                str(child.fileno()),
            ],
            pass_fds=(child.fileno(),),
            stdin=subprocess.DEVNULL,  # as multiprocessing gives its children: a child never reads the server's terminal
        )
    except BaseException:
        parent.close()
        raise
    finally:
        child.close()
    conn = Connection(parent.detach())
    try:
        conn.send(sys.path)  # plain strings: the child can read them before it can import anything else
        conn.send((target, args))
    except OSError:
        pass  # it died at once: its exit code and the closed connection say so
    return Child(proc), conn


def _enter(fd: int) -> None:
    conn = Connection(fd)
    sys.path[:] = conn.recv()
    target, args = conn.recv()
    target(conn, *args)
