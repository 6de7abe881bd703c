"""The verify mix against a real server, with the CPU each party spends per
request: the server and its writer process, PostgreSQL (every `postgres`
process on this machine, so run it on a quiet one), the load generators; and
PostgreSQL's WAL bytes per request. For comparing commits on one host: run
it from git worktrees of each, alternated (the figures in docs/performance.md).

    python -m bench.cpu_by_party --store postgres --windows 2
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import psycopg
import structlog

from bench.common import create_pg_database, drop_pg_database, random_db_name
from bench.loader import enroll_cards
from bench.loadgen import LoadSpec, layout, run_load
from bench.server import ServerProcess, postgres_cpu_seconds
from pinlife.keys.ring import KeyRing, write_new_key_file
from pinlife.store.event_store import EventStore
from pinlife.store.migrate import upgrade


def wal_bytes(url: str) -> int:
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        row = conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')").fetchone()
        return int(row[0]) if row else 0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--store", choices=("sqlite", "postgres"), default="postgres")
    p.add_argument("--windows", type=int, default=2, help="measurement windows on one server")
    p.add_argument("--cards", type=int, default=10_000)
    p.add_argument("--duration", type=float, default=8.0)
    args = p.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    work = Path(tempfile.mkdtemp(prefix="pinlife-cpu-"))
    key_file = work / "keys.json"
    write_new_key_file(key_file)
    keys = KeyRing.load(key_file)
    pg = args.store == "postgres"
    name = random_db_name("cpu") if pg else None
    url = create_pg_database(name) if name else f"sqlite:///{work}/pinlife.db"
    try:
        upgrade(url)
        store = EventStore(url)
        enroll_cards(store, keys, 0, args.cards, batch=1000, budget_s=300)
        store.close()
        server = ServerProcess(url, key_file, work / "server.log")
        try:
            _, lock, change = layout(args.cards)
            for w in range(args.windows):
                spec = LoadSpec(
                    server.target,
                    "mix",
                    4,
                    16,
                    2.0,
                    args.duration,
                    cards=args.cards,
                    lock_cards=lock,
                    change_cards=change,
                    seed=w + 1,
                )
                wal0 = wal_bytes(url) if pg else 0
                cpu0, pg0, t0 = server.cpu_seconds() or 0.0, postgres_cpu_seconds(), time.perf_counter()
                out = run_load(spec)
                cpu1, pg1, wall = server.cpu_seconds() or 0.0, postgres_cpu_seconds(), time.perf_counter() - t0
                wal1 = wal_bytes(url) if pg else 0
                n = max(1.0, out["rps"] * wall)  # requests over the whole call, at the measured rate
                print(
                    f"{args.store} window {w}: {out['rps']:,.0f} req/s, p50 {out['p50_ms']} ms, p99 {out['p99_ms']} ms; "
                    f"CPU ms per request: server+writer {(cpu1 - cpu0) / n * 1000:.3f}, postgres {(pg1 - pg0) / n * 1000:.3f}, "
                    f"load generators {(out.get('loadgen_cpu_s') or 0) / max(1.0, out['rps'] * args.duration) * 1000:.3f}"
                    + (f"; WAL {(wal1 - wal0) / n:,.0f} B per request" if pg else ""),
                    flush=True,
                )
        finally:
            server.stop()
    finally:
        if name:
            drop_pg_database(name)


if __name__ == "__main__":
    main()
