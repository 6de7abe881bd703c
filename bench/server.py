"""The real server as a separate process (`python -m pinlife.cli serve`),
started as tests/e2e/harness.py's ProcessServer does."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.common import ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_status(pid: int) -> dict[str, str]:
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            k, _, v = line.partition(":")
            out[k] = v.strip()
    except OSError:
        pass
    return out


def pss_kib(pid: int) -> int | None:
    """Proportional set size: each page shared with other processes (a
    library mapped by the server and its writer alike) counted by its share."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat after the command name: [state, ppid, ...]."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def postgres_cpu_seconds() -> float:
    """User + system CPU so far of every `postgres` process on this machine
    (the database server shares the cores with the service: a quiet host)."""
    ticks = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if not Path(f"/proc/{pid}/comm").read_text().startswith("postgres"):
                continue
        except OSError:
            continue  # gone meanwhile
        fields = _stat_fields(int(pid))
        if fields:
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def kib(value: str | None) -> int | None:
    return int(value.split()[0]) if value else None


class ServerProcess:
    def __init__(self, database_url: str, key_file: Path, log_path: Path, *, batch_max: int | None = None):
        self.port = free_port()
        self.target = f"127.0.0.1:{self.port}"
        self.log_path = log_path
        env = {
            **os.environ,
            "PINLIFE_ENV": "test",
            "PINLIFE_DATABASE_URL": database_url,
            "PINLIFE_KEY_FILE": str(key_file),
            "PINLIFE_LISTEN": self.target,
            "PINLIFE_LOG_FORMAT": "json",
        }
        env.pop("PINLIFE_ACCESS_FILE", None)  # plain text on loopback
        # Development mode has no request-rate limit by default; said here so
        # that an inherited setting cannot make the bench measure the limiter
        # (thousands of calls a second from a few thousand terminal ids).
        env["PINLIFE_RATE_DEVELOPMENT"] = "off"
        if batch_max is not None:
            env["PINLIFE_BATCH_MAX"] = str(batch_max)
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pinlife.cli", "serve"], cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT
        )
        self.pid = self.proc.pid
        self.start_seconds = self._wait_serving(60)

    def _wait_serving(self, timeout: float) -> float:
        started = time.perf_counter()
        channel = grpc.insecure_channel(self.target)
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            while True:
                try:
                    if stub.Check(health_pb2.HealthCheckRequest(), timeout=2).status == health_pb2.HealthCheckResponse.SERVING:
                        return time.perf_counter() - started
                except grpc.RpcError:
                    pass
                if self.proc.poll() is not None:
                    raise RuntimeError(f"server exited with {self.proc.returncode}; see {self.log_path}:\n{self.log_tail()}")
                if time.perf_counter() - started > timeout:
                    raise RuntimeError(f"server not SERVING after {timeout:.0f} s; see {self.log_path}")
                time.sleep(0.1)
        finally:
            channel.close()

    def log_tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def processes(self) -> list[int]:
        """The server and its descendants (the writer process, the
        multiprocessing resource tracker): all of them are the server."""
        parents: dict[int, int] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                fields = _stat_fields(int(entry.name))
                if fields:
                    parents[int(entry.name)] = int(fields[1])
        found, frontier = [self.pid], [self.pid]
        while frontier:
            frontier = [pid for pid, ppid in parents.items() if ppid in frontier]
            found += frontier
        return found

    def memory(self) -> dict:
        """Peak (VmHWM) and current (VmRSS) resident set, summed over the
        server's processes (a sum of peaks: an upper bound of the peak), and
        the current proportional set size (PSS), whose sum counts a page the
        processes share once: what they take from the machine."""
        per = []
        for pid in self.processes():
            st = proc_status(pid)
            if st:
                per.append(
                    {
                        "pid": pid,
                        "name": st.get("Name"),
                        "vm_hwm_kib": kib(st.get("VmHWM")),
                        "vm_rss_kib": kib(st.get("VmRSS")),
                        "pss_kib": pss_kib(pid),
                        "threads": st.get("Threads"),
                    }
                )
        return {
            "vm_hwm_kib": sum(p["vm_hwm_kib"] or 0 for p in per),
            "vm_rss_kib": sum(p["vm_rss_kib"] or 0 for p in per),
            "pss_kib": sum(p["pss_kib"] or 0 for p in per),
            "processes": per,
        }

    def cpu_by_process(self) -> dict[str, float]:
        """User + system CPU so far: the server process ("server") and its
        children together ("children": the writer process, the resource
        tracker)."""
        out = {"server": 0.0, "children": 0.0}
        for pid in self.processes():
            fields = _stat_fields(pid)
            if fields:
                out["server" if pid == self.pid else "children"] += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return out

    def cpu_seconds(self) -> float | None:
        """User + system CPU of the server's processes so far."""
        total = None
        for pid in self.processes():
            fields = _stat_fields(pid)
            if fields:
                total = (total or 0) + (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return total

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode
