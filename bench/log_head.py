"""What the single global position allows on PostgreSQL (issue 25, item 6).

Every batch takes the one `log_head` row (UPDATE ... RETURNING) and holds its
lock until it commits, so batches from any number of instances commit one
after another: the row allows at most 1 / (the time a batch holds it)
batches a second, whatever the cores. This measures that directly, without
the service's Python in the way: P processes (as P server instances would)
each run the write transaction's shape on a fresh, migrated database
(take B positions, insert B event rows with their indexes, upsert B PIN
states, commit with the store's durability), for each P and B, and report
batches and rows per second and the time the row was held per batch.

    python -m bench.log_head [--procs 1,2,4,8] [--batch 1,16,64] [--seconds 5] [--json FILE]

(figures and what they mean: docs/performance.md, "The single global position").
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import time
import uuid
from pathlib import Path

from bench.common import create_pg_database, drop_pg_database, random_db_name

TAKE = "UPDATE log_head SET position = position + %s WHERE id = 1 RETURNING position"
EVENT = (
    "INSERT INTO events (position, stream_id, stream_kind, version, event_id, event_type, schema_version, occurred_at, "
    "pin_type, channel, terminal_id, request_id, payload, prev_hash, hash, key_id, office) "
    "VALUES (%s, %s, 'card', 1, %s, 'PinVerified', 1, now(), 'user_certificate', 'medical_reader', %s, %s, "
    "'{}'::jsonb, %s, %s, 'integrity-1', NULL)"
)
PIN = (
    "INSERT INTO pin_states (card_id, pin_type, status, consecutive_failures, remaining_tries, last_version) "
    "VALUES (%s, 'user_certificate', 'active', 0, 3, 1) ON CONFLICT (card_id, pin_type) DO UPDATE SET last_version = "
    "pin_states.last_version + 1"
)
HASH = "0" * 64


def _worker(url: str, idx: int, batch: int, seconds: float, go, out) -> None:
    try:
        out.put(_work(url, idx, batch, seconds, go))
    except BaseException as exc:  # noqa: BLE001 - told to the parent
        out.put(f"{type(exc).__name__}: {exc}")


def _work(url: str, idx: int, batch: int, seconds: float, go) -> tuple[int, list[float]]:
    import psycopg

    run = uuid.uuid4().hex[:8]  # stream ids of this measurement's own
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        go.wait()
        holds: list[float] = []
        batches = 0
        n = 0
        stop = time.perf_counter() + seconds
        while time.perf_counter() < stop:
            with conn.transaction(), conn.cursor() as cur:
                cur.execute(TAKE, (batch,))
                taken = time.perf_counter()
                (end,) = cur.fetchone()
                rows = []
                for position in range(end - batch + 1, end + 1):
                    n += 1
                    rows.append((position, f"card-{run}-{n}", str(uuid.uuid4()), f"reader-{idx}", str(uuid.uuid4()), HASH, HASH))
                cur.executemany(EVENT, rows)
                cur.executemany(PIN, [(f"card-{run}-{n % 1000}",) for _ in range(batch)])
            holds.append(time.perf_counter() - taken)  # the row's lock: from taking it to the commit's return
            batches += 1
    return batches, holds


def measure(url: str, procs: int, batch: int, seconds: float) -> dict:
    ctx = mp.get_context("spawn")
    go, out = ctx.Event(), ctx.Queue()
    workers = [ctx.Process(target=_worker, args=(url, i, batch, seconds, go, out)) for i in range(procs)]
    for w in workers:
        w.start()
    time.sleep(1.0)  # connected
    go.set()
    results = [out.get(timeout=seconds + 60) for _ in workers]
    for w in workers:
        w.join(10)
    if failed := [r for r in results if isinstance(r, str)]:
        raise RuntimeError(f"a writer failed: {failed[0]}")
    batches = sum(b for b, _ in results)
    holds = sorted(h for _, hs in results for h in hs)
    mean_hold = statistics.fmean(holds) if holds else None
    return {
        "procs": procs,
        "batch": batch,
        "batches_per_s": round(batches / seconds, 1),
        "rows_per_s": round(batches * batch / seconds, 1),
        "hold_mean_ms": round(mean_hold * 1000, 3) if mean_hold else None,
        "hold_p99_ms": round(holds[int(len(holds) * 0.99)] * 1000, 3) if holds else None,
        # at most one batch holds the row at a time: its bound on batches/s
        "row_bound_batches_per_s": round(1 / mean_hold, 1) if mean_hold else None,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.log_head", description=__doc__.split("\n\n")[0])
    p.add_argument("--procs", default="1,2,4,8")
    p.add_argument("--batch", default="1,16,64")
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--json", type=Path)
    a = p.parse_args(argv)
    from pinlife.store.migrate import upgrade

    name = random_db_name("_loghead")
    url = create_pg_database(name)
    rows = []
    try:
        upgrade(url)
        for batch in [int(b) for b in a.batch.split(",")]:
            for procs in [int(n) for n in a.procs.split(",")]:
                r = measure(url, procs, batch, a.seconds)
                rows.append(r)
                print(
                    f"P={procs:<2} B={batch:<3} {r['batches_per_s']:>8,.0f} batches/s {r['rows_per_s']:>9,.0f} rows/s  "
                    f"row held {r['hold_mean_ms']:.2f} ms (p99 {r['hold_p99_ms']:.2f}): at most {r['row_bound_batches_per_s']:,.0f} batches/s",
                    flush=True,
                )
    finally:
        drop_pg_database(name)
    if a.json:
        a.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
