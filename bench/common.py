"""Shared pieces: card ids and their PINs (derived from the card index, so
loaders and load generators agree without sharing state), percentiles,
throwaway PostgreSQL databases, machine information."""

from __future__ import annotations

import hashlib
import os
import platform
import secrets
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"

# -- cards and PINs -----------------------------------------------------------
# PIN types by their proto numbers (pinlife.v1.PinType) and domain values.
PB_RESIDENT_REGISTRY = 1
PB_CARD_INFO_INPUT_SUPPORT = 2
PB_USER_CERTIFICATE = 3
PB_SIGNATURE = 4


def card_id(index: int) -> str:
    """Opaque, never 12 digits (so never mistaken for an Individual Number)."""
    return f"bench-{index:07d}"


def _digits(index: int, salt: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{salt}:{index}".encode(), digest_size=4).digest(), "big")


@dataclass(frozen=True)
class CardPins:
    resident_registry: str
    card_info_input_support: str
    user_certificate: str
    signature: str


def pins_for(index: int) -> CardPins:
    """The four PINs a card is enrolled with: three 4-digit, one signature PIN."""
    return CardPins(
        f"{_digits(index, 'rr') % 10000:04d}",
        f"{_digits(index, 'ci') % 10000:04d}",
        f"{_digits(index, 'uc') % 10000:04d}",
        f"S{_digits(index, 'sg') % 10**7:07d}X",  # 9 chars, letters and digits
    )


def wrong_4digit(pin: str, k: int = 1) -> str:
    """A well-formed 4-digit PIN that differs from `pin`."""
    return f"{(int(pin) + k) % 10000:04d}"


# -- statistics -----------------------------------------------------------------
def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an already sorted list (q in 0..100)."""
    if not sorted_values:
        return None
    rank = max(1, -(-len(sorted_values) * q // 100))  # ceil
    return sorted_values[int(min(rank, len(sorted_values))) - 1]


def latency_summary(latencies_s: list[float]) -> dict:
    xs = sorted(latencies_s)
    ms = lambda v: None if v is None else round(v * 1000, 3)  # noqa: E731
    return {
        "count": len(xs),
        "p50_ms": ms(percentile(xs, 50)),
        "p90_ms": ms(percentile(xs, 90)),
        "p99_ms": ms(percentile(xs, 99)),
        "p999_ms": ms(percentile(xs, 99.9)),
        "max_ms": ms(xs[-1] if xs else None),
        "mean_ms": ms(sum(xs) / len(xs) if xs else None),
    }


# -- PostgreSQL throwaway databases ---------------------------------------------
def pg_admin_url() -> str:
    return os.environ.get("PINLIFE_BENCH_POSTGRES_URL") or os.environ.get("PINLIFE_TEST_POSTGRES_URL") or DEFAULT_POSTGRES_URL


def random_db_name(suffix: str = "") -> str:
    return f"pinlife_bench_{secrets.token_hex(4)}{suffix}"


def _admin_connect():
    import psycopg

    return psycopg.connect(pg_admin_url().replace("postgresql+psycopg://", "postgresql://"), autocommit=True, connect_timeout=5)


def create_pg_database(name: str) -> str:
    """Creates the database; returns its URL (same server and user as the admin URL)."""
    from sqlalchemy.engine import make_url

    assert name.startswith("pinlife_bench_") and name.replace("_", "").isalnum()
    with _admin_connect() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    u = make_url(pg_admin_url()).set(drivername="postgresql", database=name)
    return u.render_as_string(hide_password=False)


def drop_pg_database(name: str) -> None:
    assert name.startswith("pinlife_bench_") and name.replace("_", "").isalnum()
    with _admin_connect() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pg_reachable() -> str | None:
    """None if reachable, else the reason."""
    try:
        with _admin_connect() as conn:
            conn.execute("SELECT 1")
        return None
    except Exception as exc:  # noqa: BLE001
        return f"{type(exc).__name__}: {exc}".strip()


def pg_facts(url: str) -> dict:
    import psycopg

    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        row = lambda q: conn.execute(q).fetchone()[0]  # noqa: E731
        return {
            "version": row("SELECT version()"),
            "synchronous_commit": row("SHOW synchronous_commit"),
            "fsync": row("SHOW fsync"),
            "shared_buffers": row("SHOW shared_buffers"),
            "max_connections": row("SHOW max_connections"),
            "autovacuum": row("SHOW autovacuum"),
        }


def pg_analyze(url: str) -> float:
    """ANALYZE the whole database; returns seconds. After a bulk load the
    planner has no statistics until autovacuum's analyze runs (never, when
    autovacuum is off): without them it guesses 0.5 % of rows per value of
    an IN list and scans whole tables. Production would have autovacuum."""
    import psycopg

    t = time.perf_counter()
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        conn.execute("ANALYZE")
    return time.perf_counter() - t


# -- machine --------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=5).stdout.strip()
    except Exception:  # noqa: BLE001
        return None


def machine_info() -> dict:
    mem_total = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_total = f"{int(line.split()[1]) // 1024} MiB"
    except OSError:
        pass
    dirty = _git("status", "--porcelain", "--", "service", "migrations")
    trees = [_git("rev-parse", f"HEAD:{d}") for d in ("service", "migrations")]
    return {
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory": mem_total,
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "sqlite": sqlite3.sqlite_version,
        "packages": {d: _version(d) for d in ("grpcio", "protobuf", "SQLAlchemy", "psycopg", "eventsourcing", "structlog")},
        "git_commit": _git("rev-parse", "--short", "HEAD"),
        "service_tree": "/".join((t or "?")[:10] for t in trees),  # git trees of service/ and migrations/
        "service_tree_dirty": bool(dirty),
    }


class Stopwatch:
    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.t0


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)
