"""Load generator: separate processes (multiprocessing, spawn), each with one
grpc.aio channel and `inflight` concurrent tasks calling the server as fast
as answers come back (closed loop), for a warm-up and then a fixed measured
duration.

Open loop (`rate` > 0): requests are sent at Poisson arrival times, `rate`
per second over all processes, whether or not earlier ones were answered;
each latency is measured from the request's scheduled time, not from when it
was sent, so a server that falls behind cannot hide the queue it builds
(coordinated omission).

Two workloads:
- "health": the standard grpc.health.v1 Health/Check, which does no work:
  the ceiling of this machine, this gRPC stack and this load generator.
- "mix": a realistic PinService mix over the enrolled cards (see MIX).

Cards [0, N) are laid out as: verify cards (most), then LOCK cards (wrong
user-certificate PINs only: they lock after 3 and then answer LOCKED, each
attempt recorded), then CHANGE cards (ChangePin only). Lock and change cards
are partitioned between processes (index % procs), and within a process a
change card is used by one task at a time, so each process knows the current
PIN of its change cards without sharing state.

WRONG_PIN and LOCKED are answers and count as successes; any gRPC error
counts as an error (by status code). Requests/s and latencies are of the
answered requests; errors are counted (and timed) apart, so a server that
fails fast cannot look fast. Each mutating request has a fresh uuid4
request_id. Each request names a terminal from a pool (x-pinlife-terminal),
like many card readers, so the per-terminal throttle (more than 10 distinct
cards failing per 10 minutes) is not what is measured.
"""

from __future__ import annotations

import asyncio
import gc
import multiprocessing as mp
import queue
import random
import threading
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass

from bench.common import card_id, latency_summary, pins_for, wrong_4digit

# kind -> weight (percent of requests)
MIX = {
    "verify_ok": 78,  # right user-certificate PIN
    "verify_wrong": 8,  # wrong user-certificate PIN on a verify card
    "verify_lockset": 2,  # wrong PIN on a lock card (locks, then LOCKED answers)
    "change": 5,  # ChangePin of the user-certificate PIN on a change card
    "status": 7,  # GetPinStatus (all PINs), costs no try, records nothing
}


@dataclass(frozen=True)
class LoadSpec:
    target: str
    workload: str  # "health" | "mix"
    procs: int
    inflight: int  # per process
    warmup_s: float
    duration_s: float
    cards: int = 0
    lock_cards: int = 0
    change_cards: int = 0
    terminals_per_proc: int = 5000
    deadline_s: float = 10.0
    seed: int = 1
    rate: float = 0.0  # requests/s over all processes, sent at Poisson arrival times (open loop); 0: closed loop


def layout(cards: int) -> tuple[int, int, int]:
    """(verify, lock, change) card counts for N cards."""
    change = max(0, min(cards // 10, 2000))
    lock = max(0, min(cards // 100, 32))
    return cards - lock - change, lock, change


# -- child process ----------------------------------------------------------------
class _Stats:
    def __init__(self) -> None:
        self.latency: dict[str, list[float]] = {}
        self.answers: Counter = Counter()
        self.errors: Counter = Counter()

        self.error_latency: list[float] = []

    def add(self, kind: str, seconds: float, answer: str | None, error: str | None) -> None:
        if error is None:
            self.latency.setdefault(kind, []).append(seconds)
            self.answers[f"{kind}:{answer}"] += 1
        else:
            self.error_latency.append(seconds)
            self.errors[f"{kind}:{error}"] += 1


def _child(spec: LoadSpec, idx: int, ready, go, out) -> None:
    try:
        out.put((idx, asyncio.run(_child_main(spec, idx, ready, go))))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        out.put((idx, {"fatal": f"{type(exc).__name__}: {exc}"}))


async def _child_main(spec: LoadSpec, idx: int, ready, go) -> dict:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from pinlife.v1 import common_pb2 as cpb
    from pinlife.v1 import pin_service_pb2 as ppb
    from pinlife.v1 import pin_service_pb2_grpc

    rng = random.Random(spec.seed * 1000 + idx)
    channel = grpc.aio.insecure_channel(spec.target)
    await asyncio.wait_for(channel.channel_ready(), 30)
    health = health_pb2_grpc.HealthStub(channel)
    pins = pin_service_pb2_grpc.PinServiceStub(channel)
    check_name = {v.number: v.name.removeprefix("CHECK_RESULT_") for v in cpb.CheckResult.DESCRIPTOR.values}

    n_verify, n_lock, n_change = layout(spec.cards)
    lock_cards = [i for i in range(n_verify, n_verify + n_lock) if i % spec.procs == idx]
    change_pool = deque(i for i in range(n_verify + n_lock, spec.cards) if i % spec.procs == idx)
    change_pin = {i: pins_for(i).user_certificate for i in change_pool}
    kinds = list(MIX)
    weights = [MIX[k] for k in kinds]
    lost_change_cards = 0

    def metadata():
        return (("x-pinlife-terminal", f"bench-p{idx}-t{rng.randrange(spec.terminals_per_proc)}"),)

    async def call_health(h: list) -> str:
        h[0] = "health"
        r = await health.Check(health_pb2.HealthCheckRequest(), timeout=spec.deadline_s, metadata=metadata())
        return health_pb2.HealthCheckResponse.ServingStatus.Name(r.status)

    async def verify(i: int, pin: str) -> str:
        req = ppb.VerifyPinRequest(
            request_id=str(uuid.uuid4()), card_id=card_id(i), pin_type=cpb.PIN_TYPE_USER_CERTIFICATE, pin=pin
        )
        r = await pins.VerifyPin(req, timeout=spec.deadline_s, metadata=metadata())
        return check_name.get(r.check.result, str(r.check.result))

    async def call_mix(h: list) -> str:
        nonlocal lost_change_cards
        kind = rng.choices(kinds, weights)[0]
        if kind == "verify_lockset" and not lock_cards:
            kind = "verify_wrong"
        if kind == "change" and not change_pool:
            kind = "verify_ok"
        h[0] = kind
        if kind == "verify_ok":
            i = rng.randrange(n_verify)
            return await verify(i, pins_for(i).user_certificate)
        if kind == "verify_wrong":
            i = rng.randrange(n_verify)
            return await verify(i, wrong_4digit(pins_for(i).user_certificate, rng.randrange(1, 9999)))
        if kind == "verify_lockset":
            i = rng.choice(lock_cards)
            return await verify(i, wrong_4digit(pins_for(i).user_certificate, rng.randrange(1, 9999)))
        if kind == "status":
            i = rng.randrange(spec.cards)
            await pins.GetPinStatus(ppb.GetPinStatusRequest(card_id=card_id(i)), timeout=spec.deadline_s, metadata=metadata())
            return "OK"
        # change: this task holds the card until the answer is known
        i = change_pool.popleft()
        current = change_pin[i]
        new = wrong_4digit(current, rng.randrange(1, 9999))
        req = ppb.ChangePinRequest(
            request_id=str(uuid.uuid4()),
            card_id=card_id(i),
            pin_type=cpb.PIN_TYPE_USER_CERTIFICATE,
            current_pin=current,
            new_pin=new,
        )
        try:
            r = await pins.ChangePin(req, timeout=spec.deadline_s, metadata=metadata())
        except grpc.aio.AioRpcError:
            lost_change_cards += 1  # outcome unknown: the card leaves the rotation
            raise
        if r.changed:
            change_pin[i] = new
        change_pool.append(i)
        return check_name.get(r.check.result, str(r.check.result))

    one = call_health if spec.workload == "health" else call_mix
    stats = _Stats()

    gc.collect()
    gc.freeze()  # as the server does (service/runtime/heap.py): no full collection walks the start-up objects mid-run
    ready.put(idx)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, go.wait)
    t0 = time.perf_counter()
    record_from = t0 + spec.warmup_s
    stop_at = record_from + spec.duration_s
    cpu = [None, None]

    async def task() -> None:
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            h = ["?"]
            try:
                answer, error = await one(h), None
            except grpc.aio.AioRpcError as exc:
                answer, error = None, exc.code().name
            ended = time.perf_counter()
            if cpu[0] is None and ended >= record_from:
                cpu[0] = time.process_time()
            if record_from <= ended < stop_at:
                stats.add(h[0], ended - started, answer, error)

    async def at(scheduled: float) -> None:
        h = ["?"]
        try:
            answer, error = await one(h), None
        except grpc.aio.AioRpcError as exc:
            answer, error = None, exc.code().name
        if record_from <= scheduled < stop_at:
            stats.add(h[0], time.perf_counter() - scheduled, answer, error)

    async def arrivals() -> None:
        pending: set[asyncio.Task] = set()
        scheduled = time.perf_counter()
        while (scheduled := scheduled + rng.expovariate(spec.rate / spec.procs)) < stop_at:
            if (wait := scheduled - time.perf_counter()) > 0:
                await asyncio.sleep(wait)
            if cpu[0] is None and scheduled >= record_from:
                cpu[0] = time.process_time()
            t = asyncio.create_task(at(scheduled))
            pending.add(t)
            t.add_done_callback(pending.discard)
        await asyncio.gather(*pending)

    if spec.rate > 0:
        await arrivals()
    else:
        await asyncio.gather(*(task() for _ in range(spec.inflight)))
    cpu[1] = time.process_time()
    await channel.close()
    return {
        "latency": stats.latency,
        "error_latency": stats.error_latency,
        "answers": dict(stats.answers),
        "errors": dict(stats.errors),
        "cpu_s": (cpu[1] - cpu[0]) if cpu[0] is not None else None,
        "lost_change_cards": lost_change_cards,
    }


# -- parent -----------------------------------------------------------------------
def run_load(spec: LoadSpec, sample=None) -> dict:
    """`sample()`, if given, is called at the start and the end of the
    measured window (after the warm-up); the two values come back as
    `window_samples`."""
    ctx = mp.get_context("spawn")
    ready, out, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    procs = [
        ctx.Process(target=_child, args=(spec, i, ready, go, out), name=f"bench-load-{i}", daemon=True) for i in range(spec.procs)
    ]
    results: dict[int, dict] = {}
    try:
        for p in procs:
            p.start()
        deadline = time.monotonic() + 60
        n_ready = 0
        while n_ready < spec.procs:
            try:
                ready.get(timeout=1)
                n_ready += 1
            except queue.Empty:
                pass
            while not out.empty():  # a child that failed before ready
                i, r = out.get()
                results[i] = r
            if any("fatal" in r for r in results.values()):
                raise RuntimeError(f"load generator failed: {[r['fatal'] for r in results.values() if 'fatal' in r]}")
            if time.monotonic() > deadline:
                raise RuntimeError("load generators did not get ready in 60 s")
        go.set()
        samples: list = []
        if sample is not None:
            threading.Thread(target=_sample_window, args=(sample, spec, time.perf_counter(), samples), daemon=True).start()
        wait = spec.warmup_s + spec.duration_s + spec.deadline_s + 30
        deadline = time.monotonic() + wait
        while len(results) < spec.procs:
            try:
                i, r = out.get(timeout=max(0.1, deadline - time.monotonic()))
                results[i] = r
            except queue.Empty:
                raise RuntimeError(f"load generators did not report within {wait:.0f} s") from None
        for p in procs:
            p.join(10)
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join(5)
    fatal = [r["fatal"] for r in results.values() if "fatal" in r]
    if fatal:
        raise RuntimeError(f"load generator failed: {fatal}")
    out = aggregate(spec, list(results.values()))
    if sample is not None:
        out["window_samples"] = samples if len(samples) == 2 else None
    return out


def _sample_window(sample, spec: LoadSpec, started: float, samples: list) -> None:
    for at in (started + spec.warmup_s, started + spec.warmup_s + spec.duration_s):
        time.sleep(max(0.0, at - time.perf_counter()))
        samples.append(sample())


def aggregate(spec: LoadSpec, results: list[dict]) -> dict:
    all_lat: list[float] = []
    by_kind: dict[str, list[float]] = {}
    answers: Counter = Counter()
    errors: Counter = Counter()
    for r in results:
        for kind, xs in r["latency"].items():
            by_kind.setdefault(kind, []).extend(xs)
            all_lat.extend(xs)
        answers.update(r["answers"])
        errors.update(r["errors"])
    err_lat = [x for r in results for x in r.get("error_latency", [])]
    n_errors = sum(errors.values())
    answered = len(all_lat)
    completed = answered + n_errors
    cpu = [r["cpu_s"] for r in results if r.get("cpu_s") is not None]
    return {
        "workload": spec.workload,
        "procs": spec.procs,
        "inflight_per_proc": spec.inflight,
        "in_flight": spec.procs * spec.inflight if not spec.rate else None,
        "rate": spec.rate or None,
        "warmup_s": spec.warmup_s,
        "duration_s": spec.duration_s,
        "completed": completed,
        "answered": answered,
        "errors": n_errors,
        "rps": round(answered / spec.duration_s, 1),  # answered requests (gRPC OK) per second
        "rps_including_errors": round(completed / spec.duration_s, 1),
        **{k: v for k, v in latency_summary(all_lat).items() if k != "count"},  # answered requests only
        "error_latency": latency_summary(err_lat),
        "by_kind": {k: {"rps": round(len(v) / spec.duration_s, 1), **latency_summary(v)} for k, v in sorted(by_kind.items())},
        "answers": dict(sorted(answers.items())),
        "errors_by_code": dict(sorted(errors.items())),
        "loadgen_cpu_s": round(sum(cpu), 2) if cpu else None,
        "lost_change_cards": sum(r.get("lost_change_cards", 0) for r in results),
    }
