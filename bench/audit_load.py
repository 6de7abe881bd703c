"""What auditors cost the PIN path (the `audit_load` phase): watchers of the
log, each a WatchEvents stream from the head taking several events per
message, in a process of their own (asyncio, grpc.aio); a whole-store
VerifyIntegrity run again and again; and the server's health, polled every
0.1 s, to count the seconds it was not SERVING."""

from __future__ import annotations

import asyncio
import multiprocessing
import resource
import threading
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pinlife.v1 import audit_service_pb2 as apb
from pinlife.v1 import audit_service_pb2_grpc

AUDITOR = (("x-pinlife-terminal", "bench-auditor"),)


class Watchers:
    """`n` watchers from position `after`, in a process of their own."""

    def __init__(self, target: str, after: int, n: int, per_message: int = 100):
        ctx = multiprocessing.get_context("spawn")
        self._stop = ctx.Event()
        self._ready = ctx.Event()
        self._out = ctx.Queue()
        self._proc = ctx.Process(
            target=_watchers_main, args=(target, after, n, per_message, self._ready, self._stop, self._out), daemon=True
        )
        self.n = n

    def start(self, timeout: float = 60) -> Watchers:
        self._proc.start()
        if not self._ready.wait(timeout):
            raise RuntimeError(f"{self.n} watchers did not start within {timeout} s")
        return self

    def stop(self) -> dict:
        self._stop.set()
        try:
            out = self._out.get(timeout=30)
        finally:
            self._proc.join(10)
            if self._proc.is_alive():
                self._proc.kill()
        return out


def _watchers_main(target: str, after: int, n: int, per_message: int, ready, stop, out) -> None:
    asyncio.run(_watch_all(target, after, n, per_message, ready, stop, out))


async def _watch_all(target: str, after: int, n: int, per_message: int, ready, stop, out) -> None:
    events, received, errors, opened = [0] * n, [0] * n, [], 0
    # Each bench watcher names its own terminal: the server caps watchers per terminal.
    async with grpc.aio.insecure_channel(target) as channel:
        stub = audit_service_pb2_grpc.AuditServiceStub(channel)
        # The first watcher reads every message; the others take its bytes as they come, counted,
        # not parsed: real watchers run on machines of their own, these share the server's two cores.
        raw = channel.unary_stream(
            "/pinlife.v1.AuditService/WatchEvents", request_serializer=apb.WatchEventsRequest.SerializeToString
        )
        calls = []
        for i in range(n):
            md = (("x-pinlife-terminal", f"bench-watcher-{i}"),)
            request = apb.WatchEventsRequest(after_position=after, max_events_per_message=per_message)
            calls.append((stub.WatchEvents if i == 0 else raw)(request, metadata=md))

        async def consume(i: int, call) -> None:
            nonlocal opened
            try:
                await call.initial_metadata()
                opened += 1
                if opened == n:
                    ready.set()
                async for r in call:
                    if i == 0:
                        events[i] += len(r.events) or 1
                    else:
                        received[i] += len(r)
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.CANCELLED:
                    errors.append(f"{exc.code().name}: {exc.details()}")

        tasks = [asyncio.create_task(consume(i, c)) for i, c in enumerate(calls)]
        while not stop.is_set():
            await asyncio.sleep(0.1)
        for c in calls:
            c.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    usage = resource.getrusage(resource.RUSAGE_SELF)  # the watchers' own CPU: they share the cores with the server
    out.put(
        {
            "watchers": n,
            "events_first_watcher": events[0],
            "bytes_others": sum(received),
            "errors": len(errors),
            "first_errors": errors[:3],
            "client_cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        }
    )


class IntegrityLoop:
    """Whole-store VerifyIntegrity, one after another, until stopped."""

    def __init__(self, target: str):
        self.target = target
        self.runs, self.errors = 0, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-integrity", daemon=True)
        self._call = None

    def start(self) -> IntegrityLoop:
        self._thread.start()
        return self

    def _run(self) -> None:
        with grpc.insecure_channel(self.target) as channel:
            stub = audit_service_pb2_grpc.AuditServiceStub(channel)
            while not self._stop.is_set():
                try:
                    self._call = stub.VerifyIntegrity(apb.VerifyIntegrityRequest(), metadata=AUDITOR, timeout=600)
                    for _ in self._call:
                        pass
                    self.runs += 1
                except grpc.RpcError as exc:
                    if not self._stop.is_set():
                        self.errors.append(f"{exc.code().name}: {exc.details()}")
                        time.sleep(1)

    def stop(self) -> dict:
        self._stop.set()
        if self._call is not None:
            self._call.cancel()
        self._thread.join(30)
        return {"runs_completed": self.runs, "errors": len(self.errors), "first_errors": self.errors[:3]}


class HealthMonitor:
    """The server's health every 0.1 s: how long it was not SERVING."""

    def __init__(self, target: str, every: float = 0.1):
        self.target, self.every = target, every
        self.not_serving_s = 0.0
        self.checks = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-health", daemon=True)

    def start(self) -> HealthMonitor:
        self._thread.start()
        return self

    def _run(self) -> None:
        with grpc.insecure_channel(self.target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            last = time.monotonic()
            while not self._stop.wait(self.every):
                now = time.monotonic()
                try:
                    serving = (
                        stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == health_pb2.HealthCheckResponse.SERVING
                    )
                except grpc.RpcError:
                    serving = False
                if not serving:
                    self.not_serving_s += now - last
                self.checks += 1
                last = now

    def stop(self) -> float:
        self._stop.set()
        self._thread.join(5)
        return round(self.not_serving_s, 2)
