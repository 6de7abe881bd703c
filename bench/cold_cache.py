"""The verify mix on a bulk-loaded PostgreSQL store while the tables a
verify reads are warm, then after the kernel's page cache is dropped,
window by window as it warms again: each window's rate, PostgreSQL's block
reads per request (blocks not in its shared buffers: from the page cache or
the disk) and the kernel's disk reads; before them, the rebuild's rate
warm and with the page cache dropped. Run as root on a quiet host (it
drops the page cache of the whole machine).

    python -m bench.cold_cache --cards 1000000
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

from bench.audit import rebuild_speed
from bench.bulk import BulkSpec, bulk_load
from bench.common import create_pg_database, drop_pg_database, pg_analyze, random_db_name
from bench.loadgen import LoadSpec, layout, run_load
from bench.server import ServerProcess
from pinlife.keys.ring import write_new_key_file
from pinlife.store.event_store import EventStore
from pinlife.store.migrate import upgrade

TABLES = ("cards", "pin_states", "secrets", "requests", "events")


def _blocks(url: str, name: str) -> tuple[int, int]:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT blks_read, blks_hit FROM pg_stat_database WHERE datname = %s", (name,)).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def _disk_read_kib() -> int:
    for line in Path("/proc/vmstat").read_text().splitlines():
        if line.startswith("pgpgin "):
            return int(line.split()[1])
    return 0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cards", type=int, default=1_000_000)
    p.add_argument("--cold-windows", type=int, default=6, help="10 s windows after the page cache is dropped")
    args = p.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="pinlife-cold-"))  # the key file and the server's log
    name = random_db_name("_cold")
    url = create_pg_database(name)
    try:
        upgrade(url)
        key_file = workdir / "keys.json"
        write_new_key_file(key_file)
        started = time.perf_counter()
        report = bulk_load(BulkSpec(url, key_file, args.cards, workers=2))
        print(f"loaded {args.cards:,} cards, {report.events:,} events in {time.perf_counter() - started:.0f} s", flush=True)
        pg_analyze(url)
        with psycopg.connect(url) as conn:
            for table in TABLES:
                size = conn.execute("SELECT pg_total_relation_size(%s)", (table,)).fetchone()
                print(f"{table}: {size[0] / 1e9:.3f} GB with its indexes" if size else table, flush=True)
        store = EventStore(url)
        try:
            for label in ("warm", "page cache dropped"):
                if label != "warm":
                    subprocess.run("sync; echo 3 > /proc/sys/vm/drop_caches", shell=True, check=True)
                (read0, _), disk0 = _blocks(url, name), _disk_read_kib()
                r = rebuild_speed(store)
                (read1, _), disk1 = _blocks(url, name), _disk_read_kib()
                print(
                    f"rebuild, {label}: {r['events_per_s']:,.0f} events/s; PostgreSQL blocks read {read1 - read0:,}; "
                    f"disk read {(disk1 - disk0) / 1024:,.0f} MiB",
                    flush=True,
                )
        finally:
            store.close()
        server = ServerProcess(url, key_file, workdir / "server.log")
        try:
            _, lock, change = layout(args.cards)

            def window(label: str) -> None:
                (read0, hit0), disk0 = _blocks(url, name), _disk_read_kib()
                out = run_load(
                    LoadSpec(server.target, "mix", 4, 16, 1.0, 10.0, cards=args.cards, lock_cards=lock, change_cards=change)
                )
                (read1, hit1), disk1 = _blocks(url, name), _disk_read_kib()
                n = max(1, out["answered"])
                print(
                    f"{label}: {out['rps']:,.0f} req/s, p99 {out['p99_ms']} ms; PostgreSQL blocks read "
                    f"{(read1 - read0) / n:.2f} and hit {(hit1 - hit0) / n:.1f} a request; disk read {(disk1 - disk0) / 1024:.0f} MiB",
                    flush=True,
                )

            window("warm, window 1")
            window("warm, window 2")
            subprocess.run("sync; echo 3 > /proc/sys/vm/drop_caches", shell=True, check=True)
            for i in range(1, args.cold_windows + 1):
                window(f"page cache dropped, window {i}")
        finally:
            server.stop()
    finally:
        drop_pg_database(name)


if __name__ == "__main__":
    main()
