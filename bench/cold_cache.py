"""The verify mix on a bulk-loaded PostgreSQL store while the tables a
verify reads are warm, then after the kernel's page cache is dropped,
window by window as it warms again: each window's rate, PostgreSQL's block
reads per request (blocks not in its shared buffers: from the page cache or
the disk) and the kernel's disk reads; before them, the rebuild's rate
warm and with the page cache dropped. Run as root on a quiet host (it
drops the page cache of the whole machine).

    python -m bench.cold_cache --cards 1000000
    python -m bench.cold_cache --cards 10000000 --prewarm --no-cold-rebuild --integrity-budget 120

--prewarm reads the tables a verify reads, and their indexes, into the
page cache (pg_prewarm's `read` mode) before the warm windows: a freshly
loaded store larger than the shared buffers is otherwise warm only where
the load wrote last. Each rebuild line splits its wall time into this
process's CPU, PostgreSQL's and the machine's I/O wait. --integrity-budget
runs a whole-store VerifyIntegrity over gRPC for that many seconds at the
end and prints its rate (bench/growth.py's measurement).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import psycopg

from bench.audit import rebuild_speed
from bench.bulk import BulkSpec, bulk_load
from bench.common import create_pg_database, drop_pg_database, pg_analyze, random_db_name
from bench.growth import GrowthConfig, GrowthRun
from bench.loadgen import LoadSpec, layout, run_load
from bench.server import ServerProcess, postgres_cpu_seconds
from pinlife.keys.ring import write_new_key_file
from pinlife.store.event_store import EventStore
from pinlife.store.migrate import upgrade

TABLES = ("cards", "pin_states", "secrets", "requests", "events")
VERIFY_READS = ("cards", "pin_states", "secrets")  # a verify's reads: the card's head, its PIN states, its verifiers


def _iowait_s() -> float:
    """The machine's I/O wait so far, in CPU-seconds (/proc/stat)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    return int(fields[5]) / os.sysconf("SC_CLK_TCK")


def _sampling_peaks(server: ServerProcess, work) -> dict[int, float]:
    """Run `work` while the resident set of each of the server's processes
    (the check's own process among them) is read every 0.2 s; each one's
    peak (VmHWM), in MB, by pid."""
    peaks: dict[int, float] = {}
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.2):
            for p in server.memory()["processes"]:
                peaks[p["pid"]] = max(peaks.get(p["pid"], 0.0), round((p["vm_hwm_kib"] or 0) * 1024 / 1e6, 1))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        work()
    finally:
        done.set()
        sampler.join()
    return peaks


def _prewarm(url: str) -> None:
    """Read the tables a verify reads, and their indexes, into the page cache."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
        t, disk0 = time.perf_counter(), _disk_read_kib()
        blocks = 0
        for table in VERIFY_READS:
            rels = conn.execute(
                "SELECT %s::regclass UNION ALL SELECT indexrelid::regclass FROM pg_index WHERE indrelid = %s::regclass",
                (table, table),
            ).fetchall()
            for (rel,) in rels:
                row = conn.execute("SELECT pg_prewarm(%s::regclass, 'read')", (rel,)).fetchone()
                blocks += int(row[0]) if row else 0
        print(
            f"prewarm: {blocks * 8 / 1024 / 1024:.2f} GiB of {', '.join(VERIFY_READS)} and their indexes read in "
            f"{time.perf_counter() - t:.0f} s; disk read {(_disk_read_kib() - disk0) / 1024:,.0f} MiB",
            flush=True,
        )


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
    p.add_argument("--prewarm", action="store_true", help="read the tables a verify reads into the page cache first")
    p.add_argument(
        "--no-cold-rebuild", action="store_true", help="rebuild once, as loaded (not again with the page cache dropped)"
    )
    p.add_argument(
        "--integrity-budget", type=float, default=0.0, help="seconds of a whole-store VerifyIntegrity at the end (0: none)"
    )
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
            for label in ("warm", "page cache dropped")[: 1 if args.no_cold_rebuild else 2]:
                if label != "warm":
                    subprocess.run("sync; echo 3 > /proc/sys/vm/drop_caches", shell=True, check=True)
                (read0, _), disk0 = _blocks(url, name), _disk_read_kib()
                cpu0, pg0, io0 = time.process_time(), postgres_cpu_seconds(), _iowait_s()
                r = rebuild_speed(store)
                cpu1, pg1, io1 = time.process_time(), postgres_cpu_seconds(), _iowait_s()
                (read1, _), disk1 = _blocks(url, name), _disk_read_kib()
                print(
                    f"rebuild, {label}: {r['events_per_s']:,.0f} events/s over {r['seconds']:.0f} s; "
                    f"CPU s: this process {cpu1 - cpu0:.0f}, PostgreSQL {pg1 - pg0:.0f}; I/O wait {io1 - io0:.0f} CPU-s; "
                    f"PostgreSQL blocks read {read1 - read0:,}; disk read {(disk1 - disk0) / 1024:,.0f} MiB "
                    f"({(disk1 - disk0) / 1024 / max(r['seconds'], 1e-9):.0f} MiB/s)",
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

            if args.prewarm:
                _prewarm(url)
            window("warm, window 1")
            window("warm, window 2")
            subprocess.run("sync; echo 3 > /proc/sys/vm/drop_caches", shell=True, check=True)
            for i in range(1, args.cold_windows + 1):
                window(f"page cache dropped, window {i}")
            if args.integrity_budget:
                run = GrowthRun("postgres", args.cards, GrowthConfig(integrity_budget_s=args.integrity_budget), workdir)
                run.res["events"] = report.events
                peaks = _sampling_peaks(server, lambda: run.integrity(server))
                print(f"VerifyIntegrity: {run.res['integrity']}", flush=True)
                print(f"peak RSS of the server's processes while it ran, MB: {peaks}", flush=True)
        finally:
            server.stop()
    finally:
        drop_pg_database(name)


if __name__ == "__main__":
    main()
