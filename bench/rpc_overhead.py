"""The cost of the `rpc` decorator (service/api/servicers.py) per call, with
metrics off and on (and tracing, where the servicers take it), in one run:
what telemetry adds to the verify path before the store is reached.

    .venv/bin/python -m bench.rpc_overhead [--calls 20000] [--rounds 7]

A servicer whose method returns at once, called directly on an event loop
(no channel, no store); the one log line per call is written as JSON to
/dev/null, as a server writes it to its log. Rounds alternate between the
variants and each variant's best round is kept (timeit's advice: the
minimum is the figure least disturbed by the rest of the machine)."""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from typing import Any

from pinlife.api.servicers import Gate, _Base, rpc
from pinlife.app.handlers import Caller
from pinlife.runtime import logs

FULL = "pinlife.v1.PinService"


class _Context:
    """As much of grpc.aio.ServicerContext as the decorator reads."""

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return (("x-pinlife-terminal", "clinic-reader-01"),)

    def cancelled(self) -> bool:
        return False


class _Servicer(_Base):
    @rpc(FULL, "VerifyPin")
    async def VerifyPin(self, request: Any, caller: Caller) -> str:
        return "ok"


class _Request:
    card_id = "card-000001"
    request_id = "r"


def _servicer(metrics: Any, tracing: Any) -> _Servicer:
    servicer = _Servicer(app=None, identify=lambda _ctx: Caller("development", "clinic-reader-01"), gate=Gate(), metrics=metrics)  # type: ignore[arg-type]
    if tracing is not None:
        servicer.tracing = tracing
    return servicer


async def _round(servicer: _Servicer, calls: int) -> float:
    request, context = _Request(), _Context()
    call = servicer.VerifyPin
    started = time.perf_counter()
    for _ in range(calls):
        await call(request, context)
    return (time.perf_counter() - started) / calls


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    logs.configure("json", stream=open(os.devnull, "w"))  # noqa: SIM115 - for the whole run

    from pinlife.runtime.metrics import Metrics

    variants: dict[str, _Servicer] = {"metrics off": _servicer(None, None), "metrics on": _servicer(Metrics(), None)}
    try:
        from pinlife.runtime.tracing import Tracing  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        pass
    else:
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        exporter = InMemorySpanExporter()
        variants["metrics and tracing on"] = _servicer(Metrics(), Tracing.in_memory(exporter))

    best = {name: float("inf") for name in variants}
    loop = asyncio.new_event_loop()
    try:
        for servicer in variants.values():  # warm up
            loop.run_until_complete(_round(servicer, 1000))
        for _ in range(args.rounds):
            for name, servicer in variants.items():
                best[name] = min(best[name], loop.run_until_complete(_round(servicer, args.calls)))
                if name == "metrics and tracing on":
                    exporter.clear()
    finally:
        loop.close()
    base = best["metrics off"]
    for name, seconds in best.items():
        print(f"{name:24} {seconds * 1e6:7.2f} µs/call  ({(seconds - base) * 1e6:+.2f} µs)")


if __name__ == "__main__":
    main()
