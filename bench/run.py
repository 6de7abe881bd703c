"""pinlife benchmark: `python -m bench.run [--quick] [--store sqlite|postgres|both] [--json PATH]`.

For each store (SQLite in a temp dir, then PostgreSQL in throwaway databases):
  1. create and migrate the database, write a key file, load N enrolled cards
     in-process (ThreadRunner.process, big batches);
  2. start the real server (`python -m pinlife.cli serve`) and wait for SERVING;
  3. drive it over gRPC from separate load-generator processes: the health
     Check ceiling, then a realistic verify mix; requests/s, p50, p99, errors;
  4. in-process, no gRPC: the service's command path against a peer built on
     the `eventsourcing` library, same command, store kind, cards, concurrency;
  5. audit reads with many events: history page p50/p99, projection rebuild speed,
     AuditService pages (one card's history, one terminal's day; PostgreSQL plans printed),
     WatchEvents catch-up events/s; live watch lag while the verify mix runs (after step 3);
  6. the server's peak RSS (VmHWM).
Prints a table and writes JSON. It reports; it never fails on a target.
See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import signal
import sqlite3
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from bench.common import (
    ROOT,
    Stopwatch,
    create_pg_database,
    drop_pg_database,
    log,
    machine_info,
    pg_facts,
    pg_reachable,
    random_db_name,
)

TARGETS = {
    "verify_over_ceiling_sqlite": 0.75,
    "verify_over_ceiling_postgres": 0.6,
    "verify_p99_ms": 50.0,
    "inprocess_service_over_peer": 3.0,
    "history_p99_ms": 20.0,
    "history_min_events": 1_000_000,
    "rebuild_events_per_s": 50_000.0,
    "peak_rss_mb": 300.0,  # MB = 10^6 bytes
    "open_loop_p99_ms_at_60": 15.0,  # verify-mix p99 at 60 % of the closed-loop rate (issue 25)
    # the verify mix with auditors at work over the mix alone (audit_load, issue 23)
    "with_1_watcher_over_alone": 0.9,
    "with_100_watchers_over_alone": 0.8,
    "with_integrity_over_alone": 0.8,
}


@dataclass(frozen=True)
class Config:
    mode: str
    cards: int  # enrolled cards for the server phases (target)
    cards_budget_s: float
    events: int  # total events for the audit phase (target)
    events_budget_s: float
    load_batch: int
    procs: int  # load-generator processes
    inflight: int  # concurrent requests per process
    warmup_s: float
    duration_s: float
    peer_cards: int
    peer_concurrency: int
    peer_warmup_s: float
    peer_duration_s: float
    peer_budget_s: float
    reads: int  # history pages read
    watch_events: int  # events a WatchEvents catch-up reads


FULL = Config(
    mode="full",
    cards=100_000,
    cards_budget_s=120,
    events=1_000_000,
    events_budget_s=240,
    load_batch=1000,
    procs=4,
    inflight=16,
    warmup_s=5,
    duration_s=30,
    peer_cards=5000,
    peer_concurrency=64,
    peer_warmup_s=3,
    peer_duration_s=30,
    peer_budget_s=60,
    reads=2000,
    watch_events=300_000,
)
QUICK = Config(
    mode="quick",
    cards=20_000,
    cards_budget_s=15,
    events=100_000,
    events_budget_s=20,
    load_batch=1000,
    procs=4,
    inflight=16,
    warmup_s=2,
    duration_s=8,
    peer_cards=2000,
    peer_concurrency=64,
    peer_warmup_s=1.5,
    peer_duration_s=8,
    peer_budget_s=15,
    reads=1000,
    watch_events=100_000,
)


OPEN_LOOP_FRACTIONS = (0.3, 0.6, 0.8)  # of the closed-loop verify mix's rate
# The audit-load phase's windows: each condition twice, mirrored (StoreRun.audit_load).
AUDIT_LOAD_ORDER = ("alone", "1_watcher", "100_watchers", "integrity", "integrity", "100_watchers", "1_watcher", "alone")


def _added(before: dict | None, runs: dict) -> dict:
    """IntegrityLoop.stop()'s figures over several windows."""
    if before is None:
        return runs
    return {
        "runs_completed": before["runs_completed"] + runs["runs_completed"],
        "errors": before["errors"] + runs["errors"],
        "first_errors": (before["first_errors"] + runs["first_errors"])[:3],
    }


# -- one store -------------------------------------------------------------------------
class StoreRun:
    def __init__(self, kind: str, cfg: Config, workdir: Path):
        self.kind = kind
        self.cfg = cfg
        self.dir = workdir / kind
        self.dir.mkdir(parents=True, exist_ok=True)
        self.res: dict = {"store": kind, "errors": []}
        self._pg_dbs: list[str] = []
        self._closers: list = []

    # databases --------------------------------------------------------------
    def new_database(self, label: str) -> str:
        if self.kind == "sqlite":
            return f"sqlite:///{self.dir / (label + '.db')}"
        name = random_db_name("" if label == "main" else f"_{label}")
        self._pg_dbs.append(name)
        return create_pg_database(name)

    def phase(self, name: str, fn, *args, **kwargs):
        sw = Stopwatch()
        log(f"{self.kind}: {name} ...")
        try:
            out = fn(*args, **kwargs)
            self.res.setdefault("phase_seconds", {})[name] = round(sw.elapsed, 1)
            return out
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # noqa: BLE001 - recorded, the run goes on
            self.res["errors"].append({"phase": name, "error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()})
            log(f"{self.kind}: {name} FAILED: {type(exc).__name__}: {exc}")
            self.res.setdefault("phase_seconds", {})[name] = round(sw.elapsed, 1)
            return None

    def run(self) -> dict:
        from pinlife.keys.ring import KeyRing, write_new_key_file

        key_file = self.dir / "keys.json"
        write_new_key_file(key_file)
        keys = KeyRing.load(key_file)
        server = None
        try:
            url = self.phase("create database", self.setup_main)
            if url is None:
                return self.res
            cards = self.phase("load cards", self.load_cards, url, keys) or 0
            if cards:
                server = self.phase("start server", self.start_server, url, key_file)
            if server is not None:
                self.phase("ceiling", self.ceiling, server)
                self.phase("verify mix", self.verify_mix, server, cards)
                self.phase("open loop", self.open_loop, server, cards)
                self.res["server"]["memory"] = server.memory()
                # what the server's processes take from the machine (shared pages counted once)
                self.res["server"]["pss_mb"] = round(self.res["server"]["memory"]["pss_kib"] * 1024 / 1e6, 1)
                self.phase("audit load", self.audit_load, server, url, cards)
                self.res["server"]["memory_after_audit_load"] = server.memory()
                self.phase("live watch", self.live_watch, server, url, cards)
                self.res["server"]["memory_after_watch"] = server.memory()
                self.res["server"]["log"] = self.server_log_excerpt(server)
                self.res["server"]["log_bytes"] = server.log_path.stat().st_size if server.log_path.exists() else None
                server.stop()
                server = None
            self.phase("in-process comparison", self.inprocess, keys)
            if cards:
                self.phase("audit", self.audit, url, keys, cards)
        finally:
            if server is not None:
                server.stop()
            self.cleanup()
        return self.res

    def cleanup(self) -> None:
        for close in reversed(self._closers):
            try:
                close()
            except Exception:  # noqa: BLE001
                pass
        for name in self._pg_dbs:
            try:
                drop_pg_database(name)
                log(f"{self.kind}: dropped database {name}")
            except Exception as exc:  # noqa: BLE001
                log(f"{self.kind}: could not drop database {name}: {exc}")
        self._pg_dbs.clear()

    def analyze(self, url: str, after: str) -> None:
        """PostgreSQL only: ANALYZE after a bulk load, as autovacuum would in
        production (see bench.common.pg_analyze)."""
        if self.kind != "postgres":
            return
        from bench.common import pg_analyze

        self.res.setdefault("analyze_seconds", {})[after] = round(pg_analyze(url), 2)

    def server_log_excerpt(self, server, limit: int = 30) -> dict:
        """Warnings and errors of the server, and its non-OK rpc lines by status."""
        lines, statuses = [], {}
        try:
            with open(server.log_path, errors="replace") as f:
                for line in f:
                    try:
                        entry = json.loads(line)
                    except ValueError:  # not a log line (a traceback printed by Python itself)
                        entry = {}
                    if entry.get("event") == "rpc":
                        st = entry.get("status", "?")
                        statuses[st] = statuses.get(st, 0) + 1
                    elif entry.get("level") != "info" and len(lines) < limit:
                        lines.append(line.strip()[:600])
        except OSError:
            pass
        return {"rpc_status_counts": statuses, "warnings_and_errors": lines}

    # phases -----------------------------------------------------------------
    def setup_main(self) -> str:
        from pinlife.store.migrate import upgrade

        url = self.new_database("main")
        upgrade(url)
        if self.kind == "sqlite":
            path = url.removeprefix("sqlite:///")
            with sqlite3.connect(path) as c:
                facts = {
                    "version": sqlite3.sqlite_version,
                    "journal_mode": c.execute("PRAGMA journal_mode").fetchone()[0],
                    "default_synchronous": c.execute("PRAGMA synchronous").fetchone()[0],
                    "note": "the service opens its connections with synchronous=FULL (2), WAL, BEGIN IMMEDIATE",
                    "filesystem_dir": str(self.dir),
                }
        else:
            facts = pg_facts(url)
        self.res["store_facts"] = facts
        return url

    def load_cards(self, url: str, keys) -> int:
        from bench.loader import enroll_cards
        from pinlife.store.event_store import EventStore

        store = EventStore(url)
        try:
            rep = enroll_cards(store, keys, 0, self.cfg.cards, batch=self.cfg.load_batch, budget_s=self.cfg.cards_budget_s)
            self.analyze(url, "cards")
            cards = rep.done + rep.failed  # indices [0, cards) were attempted
            self.res["cards"] = {
                "target": self.cfg.cards,
                "loaded": rep.done,
                "load": rep.as_dict(),
                "events_after_load": store.log.head_position(),
            }
            msg = f"{self.kind}: enrolled {rep.done:,} cards in {rep.seconds:.1f} s ({rep.rate:,.0f}/s)"
            if rep.budget_hit:
                msg += f" -- stopped before the target of {self.cfg.cards:,}: {rep.stop_reason}"
            log(msg)
            return cards if rep.failed == 0 else rep.done
        finally:
            store.close()

    def start_server(self, url: str, key_file: Path):
        from bench.server import ServerProcess

        server = ServerProcess(url, key_file, self.dir / "server.log")
        self._closers.append(server.stop)
        self.res["server"] = {"pid": server.pid, "target": server.target, "start_s": round(server.start_seconds, 2)}
        return server

    def _load(self, server, workload: str, cards: int = 0, rate: float = 0.0) -> dict:
        from bench.loadgen import LoadSpec, layout, run_load

        cfg = self.cfg
        spec = LoadSpec(server.target, workload, cfg.procs, cfg.inflight, cfg.warmup_s, cfg.duration_s, cards=cards, rate=rate)
        if workload == "mix":
            _, lock, change = layout(cards)
            spec = replace(spec, lock_cards=lock, change_cards=change)
        cpu0, t0 = server.cpu_seconds(), time.perf_counter()
        out = run_load(spec, sample=self._cpu_sample(server))
        cpu1, wall = server.cpu_seconds(), time.perf_counter() - t0
        if cpu0 is not None and cpu1 is not None:
            # over the whole call (spawn, warm-up, measurement): a rough figure
            out["server_cpu_s"] = round(cpu1 - cpu0, 2)
            out["server_cpu_cores"] = round((cpu1 - cpu0) / wall, 2)
        if out.get("loadgen_cpu_s") is not None:
            out["loadgen_cpu_cores"] = round(out["loadgen_cpu_s"] / spec.duration_s, 2)
        out["cpu_ms_per_request"] = cpu_per_request(out)
        return out

    def _cpu_sample(self, server):
        """CPU seconds so far by party: the server and its children and, on
        PostgreSQL, the database server's processes, which share the cores."""
        if self.kind != "postgres":
            return server.cpu_by_process
        from bench.server import postgres_cpu_seconds

        return lambda: {**server.cpu_by_process(), "postgres": postgres_cpu_seconds()}

    def cpu_bound(self) -> None:
        """What CPU cost alone allows: when the machine's cores are the limit
        (server, its children and the load generators share them),
        verify / ceiling cannot exceed the CPU of one health check over the
        CPU of one verify-mix request, all processes counted (PostgreSQL's
        too: it runs on the same cores)."""
        h = _get(self.res, ("ceiling", "cpu_ms_per_request", "total"))
        v = _get(self.res, ("verify_mix", "cpu_ms_per_request", "total"))
        if h and v:
            self.res["verify_over_ceiling_cpu_bound"] = round(h / v, 3)
            if ratio := self.res.get("verify_over_ceiling"):
                self.res["verify_over_cpu_bound"] = round(ratio / (h / v), 3)

    def ceiling(self, server) -> None:
        r = self._load(server, "health")
        self.res["ceiling"] = r
        log(
            f"{self.kind}: ceiling (health Check) {r['rps']:,.0f} req/s, p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, errors {r['errors']}"
        )

    def verify_mix(self, server, cards: int) -> None:
        from bench.loadgen import MIX, layout

        r = self._load(server, "mix", cards)
        r["layout"] = dict(zip(("verify_cards", "lock_cards", "change_cards"), layout(cards)))
        r["mix_percent"] = MIX
        self.res["verify_mix"] = r
        ceiling = self.res.get("ceiling", {}).get("rps")
        if ceiling:
            self.res["verify_over_ceiling"] = round(r["rps"] / ceiling, 3)
            self.cpu_bound()
        log(
            f"{self.kind}: verify mix {r['rps']:,.0f} req/s, p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, errors {r['errors']}"
            + (f", {self.res['verify_over_ceiling']:.2f}x ceiling" if ceiling else "")
        )

    def open_loop(self, server, cards: int) -> None:
        """The verify mix sent at fixed arrival rates (Poisson), fractions of
        the closed-loop mix's answered rate measured just before: latency from
        each request's scheduled time (stores.<store>.open_loop)."""
        capacity = _get(self.res, ("verify_mix", "rps"))
        if not capacity:
            raise RuntimeError("no verify-mix rate to take fractions of")
        out = []
        for fraction in OPEN_LOOP_FRACTIONS:
            r = self._load(server, "mix", cards, rate=round(capacity * fraction, 1))
            out.append(
                {
                    "rate_fraction": fraction,
                    "rate_rps": r["rate"],
                    "answered_rps": r["rps"],
                    "p50_ms": r["p50_ms"],
                    "p99_ms": r["p99_ms"],
                    "p999_ms": r["p999_ms"],
                    "errors": r["errors"],
                    "server_cpu_cores": r.get("server_cpu_cores"),
                }
            )
            log(
                f"{self.kind}: open loop at {fraction:.0%} ({r['rate']:,.0f} req/s): "
                f"p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, p99.9 {r['p999_ms']} ms, errors {r['errors']}"
            )
        self.res["open_loop"] = out

    def inprocess(self, keys) -> None:
        from bench.loader import enroll_cards
        from bench.peer import PeerPins, load_peer, peer_env_postgres, peer_env_sqlite, run_peer, run_service
        from pinlife.store.event_store import EventStore
        from pinlife.store.migrate import upgrade

        cfg = self.cfg
        out: dict = {
            "cards": cfg.peer_cards,
            "concurrency": cfg.peer_concurrency,
            "warmup_s": cfg.peer_warmup_s,
            "duration_s": cfg.peer_duration_s,
        }
        self.res["inprocess"] = out
        # the service's own path, on its own database
        url = self.new_database("inproc")
        upgrade(url)
        store = EventStore(url)
        try:
            rep = enroll_cards(store, keys, 0, cfg.peer_cards, batch=cfg.load_batch, budget_s=cfg.peer_budget_s)
        finally:
            store.close()
        self.analyze(url, "inproc cards")
        cards = rep.done
        out["service_load"] = rep.as_dict()
        svc = run_service(url, keys, cards, cfg.peer_concurrency, cfg.peer_warmup_s, cfg.peer_duration_s)
        out["service"] = svc
        log(f"{self.kind}: in-process service {svc['per_s']:,.0f}/s p99 {svc['p99_ms']} ms")
        # the eventsourcing peer, on its own database
        peer_url = None
        if self.kind == "sqlite":
            env = peer_env_sqlite(str(self.dir / "peer.db"))
        else:
            peer_url = self.new_database("peer")
            env = peer_env_postgres(peer_url, pool=min(cfg.peer_concurrency, 32))
        app = PeerPins(keys, env)
        self._closers.append(app.close)
        load_s = load_peer(app, cards)
        if peer_url:
            self.analyze(peer_url, "peer cards")
        peer = run_peer(app, cards, cfg.peer_concurrency, cfg.peer_warmup_s, cfg.peer_duration_s)
        peer["load_s"] = round(load_s, 2)
        peer["env"] = {k: v for k, v in env.items() if "PASSWORD" not in k}
        out["peer"] = peer
        app.close()
        if peer["per_s"]:
            out["service_over_peer"] = round(svc["per_s"] / peer["per_s"], 2)
        log(
            f"{self.kind}: in-process peer {peer['per_s']:,.0f}/s p99 {peer['p99_ms']} ms; "
            f"service/peer {out.get('service_over_peer')}x"
        )

    def audit(self, url: str, keys, cards: int) -> None:
        from bench.audit import audit_pages, history_reads, rebuild_speed, watch_catch_up
        from bench.loader import add_verify_events
        from pinlife.store.event_store import EventStore

        cfg = self.cfg
        store = EventStore(url)
        try:
            before = store.log.head_position()
            out: dict = {"target_events": cfg.events, "events_before_load": before}
            self.res["audit"] = out
            if cfg.events > before:
                rep = add_verify_events(
                    store, keys, cards, cfg.events - before, batch=cfg.load_batch, budget_s=cfg.events_budget_s
                )
                out["load"] = rep.as_dict()
                log(
                    f"{self.kind}: added {rep.done:,} verify events in {rep.seconds:.1f} s ({rep.rate:,.0f}/s)"
                    + (f" -- stopped before the target: {rep.stop_reason}" if rep.budget_hit else "")
                )
                self.analyze(url, "events")
            out["events"] = store.log.head_position()
            out["cards"] = cards
            h = history_reads(store, cards, cfg.reads)
            out["history"] = h
            log(
                f"{self.kind}: {out['events']:,} events; history page p50 {h['p50_ms']} ms, p99 {h['p99_ms']} ms "
                f"({h['events_per_page_mean']} events/page)"
            )
            rb = rebuild_speed(store)
            out["rebuild"] = rb
            log(f"{self.kind}: rebuild {rb['events']:,} events in {rb['seconds']} s = {rb['events_per_s']:,.0f} events/s")
            p = audit_pages(store, keys, cards, cfg.reads)
            out["pages"] = p
            log(
                f"{self.kind}: GetCardHistory page p50 {p['card_history']['p50_ms']} ms, p99 {p['card_history']['p99_ms']} ms; "
                f"one terminal's day page p50 {p['terminal_day']['p50_ms']} ms, p99 {p['terminal_day']['p99_ms']} ms"
            )
            for name, plan in p.get("plans", {}).items():
                log(f"{self.kind}: plan of {name}:\n    " + plan.replace("\n", "\n    "))
        finally:
            store.close()
        from bench.server import ServerProcess

        server = ServerProcess(url, self.dir / "keys.json", self.dir / "server-audit.log")
        self._closers.append(server.stop)
        try:
            w = watch_catch_up(server.target, min(out["events"], cfg.watch_events))
            out["watch_catch_up"] = w
            log(
                f"{self.kind}: WatchEvents catch-up {w['events']:,} events in {w['seconds']} s = {w['events_per_s']:,.0f} events/s"
            )
        finally:
            server.stop()

    def audit_load(self, server, url: str, cards: int) -> None:
        """The verify mix alone and, in the same run, with 1 watcher, with 100
        watchers, and with whole-store VerifyIntegrity runs one after another;
        health polled throughout (stores.<store>.audit_load). Each condition
        is measured twice, in the order A B C D D C B A (AUDIT_LOAD_ORDER), and
        its figure is the mean of the two: the server's rate drifts as the
        store grows over the phase, and a single pass in one order would
        charge that drift to the conditions measured last."""
        from bench.audit_load import HealthMonitor, IntegrityLoop, Watchers
        from pinlife.store.event_store import EventStore

        store = EventStore(url)

        def head() -> int:
            return store.log.head_position()

        self._closers.append(store.close)
        out: dict = {}
        self.res["audit_load"] = out
        windows: dict[str, list[dict]] = {name: [] for name in AUDIT_LOAD_ORDER[:4]}
        out["windows"] = []
        health = HealthMonitor(server.target).start()
        try:
            for name in AUDIT_LOAD_ORDER:
                if name in ("1_watcher", "100_watchers"):
                    n = 1 if name == "1_watcher" else 100
                    watchers = Watchers(server.target, head(), n).start()  # from the log's head: they follow it live
                    try:
                        r = self._load(server, "mix", cards)
                    finally:
                        out[f"watchers_{name}"] = watchers.stop()
                elif name == "integrity":
                    integrity = IntegrityLoop(server.target).start()
                    try:
                        r = self._load(server, "mix", cards)
                    finally:
                        runs = integrity.stop()
                        out["integrity_runs"] = _added(out.get("integrity_runs"), runs)
                else:
                    r = self._load(server, "mix", cards)
                cpu = r.get("cpu_ms_per_request") or {}
                server_ms = round(cpu["server"] + cpu["children"], 3) if "server" in cpu and "children" in cpu else None
                window = {"condition": name, "rps": r["rps"], "p99_ms": r["p99_ms"], "server_cpu_ms_per_request": server_ms}
                out["windows"].append(window)
                windows[name].append(window)
        finally:
            out["health_not_serving_s"] = health.stop()
        # server_cpu_ms_per_request: what each condition costs the server itself (its process and its
        # children: the writer, an integrity check) per verify answered; the watchers' own process shares
        # the cores but is not the server.
        out["server_cpu_ms_per_request"] = {}
        for name, results in windows.items():
            rps = round(sum(w["rps"] for w in results) / len(results), 1) if results else 0.0
            p99 = max((w["p99_ms"] for w in results if w["p99_ms"] is not None), default=None)
            if name == "alone":
                out["verify_alone_rps"], out["verify_alone_p99_ms"] = rps, p99
            else:
                out[f"with_{name}_rps"], out[f"with_{name}_p99_ms"] = rps, p99
            known = [w["server_cpu_ms_per_request"] for w in results if w["server_cpu_ms_per_request"] is not None]
            out["server_cpu_ms_per_request"][name] = round(sum(known) / len(known), 3) if known else None
        alone = out["verify_alone_rps"]
        for name in ("1_watcher", "100_watchers", "integrity"):
            out[f"with_{name}_over_alone"] = round(out[f"with_{name}_rps"] / alone, 3) if alone else None
        out["server_memory"] = server.memory()
        log(
            f"{self.kind}: audit load: verify alone {alone:,.0f} req/s; with 1 watcher {out['with_1_watcher_over_alone']}x, "
            f"with 100 watchers {out['with_100_watchers_over_alone']}x, with integrity runs {out['with_integrity_over_alone']}x; "
            f"health not serving {out['health_not_serving_s']} s"
        )

    def live_watch(self, server, url: str, cards: int) -> None:
        """The verify mix again, with a WatchEvents subscriber following the
        log: the lag from each event's time to its delivery, and the verify
        figures while it runs (the plain verify mix above is the reference)."""
        from bench.audit import LiveWatcher
        from pinlife.store.event_store import EventStore

        store = EventStore(url)
        try:
            head = store.log.head_position()
        finally:
            store.close()
        watcher = LiveWatcher(server.target, head).start()
        try:
            r = self._load(server, "mix", cards)
        finally:
            w = watcher.stop()
        w["verify_rps"], w["verify_p50_ms"], w["verify_p99_ms"], w["verify_errors"] = (
            r["rps"],
            r["p50_ms"],
            r["p99_ms"],
            r["errors"],
        )
        self.res["watch_live"] = w
        log(
            f"{self.kind}: live watch: {w['events']:,} events delivered, lag p50 {w.get('lag_p50_ms')} ms, p99 {w.get('lag_p99_ms')} ms; "
            f"verify mix meanwhile {r['rps']:,.0f} req/s, p99 {r['p99_ms']} ms"
        )


# -- targets and the table -----------------------------------------------------------
def cpu_per_request(load: dict) -> dict | None:
    """CPU milliseconds per answered request over the measured window: the
    server process, its children (the writer process), the load generators."""
    samples, answered = load.get("window_samples"), load.get("answered")
    if not samples or not answered or load.get("loadgen_cpu_s") is None:
        return None
    before, after = samples
    out = {k: round((after[k] - before[k]) * 1000 / answered, 3) for k in after}
    out["load_generators"] = round(load["loadgen_cpu_s"] * 1000 / answered, 3)
    out["total"] = round(sum(out.values()), 3)
    return out


def judge(kind: str, r: dict) -> dict:
    """Each target: the figure, the target, and met / not met / n/a."""
    out = {}

    def put(name, value, target, ok, note=None):
        out[name] = {"value": value, "target": target, "met": None if value is None else ok, **({"note": note} if note else {})}

    ratio = r.get("verify_over_ceiling")
    t = TARGETS[f"verify_over_ceiling_{kind}"]
    put("verify_over_ceiling", ratio, f">= {t}", ratio is not None and ratio >= t)
    p99 = r.get("verify_mix", {}).get("p99_ms")
    put("verify_p99_ms", p99, f"< {TARGETS['verify_p99_ms']}", p99 is not None and p99 < TARGETS["verify_p99_ms"])
    sp = r.get("inprocess", {}).get("service_over_peer")
    put(
        "inprocess_service_over_peer",
        sp,
        f">= {TARGETS['inprocess_service_over_peer']}",
        sp is not None and sp >= TARGETS["inprocess_service_over_peer"],
    )
    a = r.get("audit", {})
    hp = a.get("history", {}).get("p99_ms")
    events = a.get("events") or 0
    note = None if events >= TARGETS["history_min_events"] else f"only {events:,} events stored (target is with 1,000,000)"
    put(
        "history_p99_ms",
        hp,
        f"< {TARGETS['history_p99_ms']} with >= 1,000,000 events",
        hp is not None and hp < TARGETS["history_p99_ms"] and not note,
        note,
    )
    rb = a.get("rebuild", {}).get("events_per_s")
    put(
        "rebuild_events_per_s",
        rb,
        f">= {TARGETS['rebuild_events_per_s']:,.0f}",
        rb is not None and rb >= TARGETS["rebuild_events_per_s"],
    )
    hwm = r.get("server", {}).get("memory", {}).get("vm_hwm_kib")
    mb = None if hwm is None else round(hwm * 1024 / 1e6, 1)
    put("peak_rss_mb", mb, f"< {TARGETS['peak_rss_mb']}", mb is not None and mb < TARGETS["peak_rss_mb"])
    at60 = next((o["p99_ms"] for o in r.get("open_loop") or [] if o["rate_fraction"] == 0.6), None)
    t = TARGETS["open_loop_p99_ms_at_60"]
    put("open_loop_p99_ms_at_60", at60, f"< {t} at 60 % of the verify rate", at60 is not None and at60 < t)
    vb = r.get("verify_over_cpu_bound")
    put("verify_over_cpu_bound", vb, ">= 0.9", vb is not None and vb >= 0.9)
    al = r.get("audit_load", {})
    for name in ("with_1_watcher_over_alone", "with_100_watchers_over_alone", "with_integrity_over_alone"):
        v, t = al.get(name), TARGETS[name]
        put(name, v, f">= {t}", v is not None and v >= t)
    down = al.get("health_not_serving_s")
    put("audit_load_health_not_serving_s", down, "0", down == 0)
    return out


def fmt(v, digits=1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def table(report: dict) -> str:
    stores = list(report["stores"])
    g = lambda s, *path: _get(report["stores"][s], path)  # noqa: E731
    rows: list[tuple[str, list, str]] = []

    def row(label, path, target="", digits=1):
        rows.append((label, [fmt(g(s, *path), digits) for s in stores], target))

    def met(label, name):
        vals = []
        for s in stores:
            j = report["stores"][s].get("targets", {}).get(name, {})
            vals.append({True: "yes", False: "NO", None: "-"}[j.get("met")] + (" (*)" if j.get("note") else ""))
        rows.append((label, vals, ""))

    row("cards enrolled (server phases)", ("cards", "loaded"))
    row("  enrolment load, s", ("cards", "load", "seconds"))
    row("  enrolment rate, cards/s", ("cards", "load", "per_s"), digits=0)
    row("server start, s", ("server", "start_s"), digits=2)
    row("ceiling: health Check req/s", ("ceiling", "rps"), digits=0)
    rows.append(
        (
            "  ceiling p50 | p99 ms",
            [f"{fmt(g(s, 'ceiling', 'p50_ms'), 2)} | {fmt(g(s, 'ceiling', 'p99_ms'), 2)}" for s in stores],
            "",
        )
    )
    row("  ceiling errors", ("ceiling", "errors"))
    row("verify mix req/s", ("verify_mix", "rps"), digits=0)
    for i, fraction in enumerate(OPEN_LOOP_FRACTIONS):
        rows.append(
            (
                f"  open loop at {fraction:.0%}: p50 | p99 | p99.9 ms",
                [
                    " | ".join(fmt(_get(report["stores"][s], ("open_loop", i, k)), 2) for k in ("p50_ms", "p99_ms", "p999_ms"))
                    for s in stores
                ],
                "p99 < 15" if fraction == 0.6 else "",
            )
        )
    rows.append(
        (
            "  verify p50 | p99 ms",
            [f"{fmt(g(s, 'verify_mix', 'p50_ms'), 2)} | {fmt(g(s, 'verify_mix', 'p99_ms'), 2)}" for s in stores],
            "p99 < 50",
        )
    )
    row("  verify errors", ("verify_mix", "errors"))
    rows.append(
        (
            "  CPU cores: server | load gen (ceiling)",
            [f"{fmt(g(s, 'ceiling', 'server_cpu_cores'), 2)} | {fmt(g(s, 'ceiling', 'loadgen_cpu_cores'), 2)}" for s in stores],
            "",
        )
    )
    rows.append(
        (
            "  CPU cores: server | load gen (verify)",
            [
                f"{fmt(g(s, 'verify_mix', 'server_cpu_cores'), 2)} | {fmt(g(s, 'verify_mix', 'loadgen_cpu_cores'), 2)}"
                for s in stores
            ],
            "",
        )
    )
    for phase, label in (("ceiling", "ceiling"), ("verify_mix", "verify")):
        rows.append(
            (
                f"  CPU ms/request: server|writer|load|PostgreSQL ({label})",
                [
                    " | ".join(
                        fmt(g(s, phase, "cpu_ms_per_request", k), 3)
                        for k in ("server", "children", "load_generators", "postgres")
                    )
                    for s in stores
                ],
                "",
            )
        )
    rows.append(("verify / ceiling", [fmt(g(s, "verify_over_ceiling"), 3) for s in stores], ">= 0.75 SQLite, >= 0.6 PG"))
    row("  bound by CPU cost (health CPU / verify CPU)", ("verify_over_ceiling_cpu_bound",), digits=3)
    row("  verify / ceiling over that bound", ("verify_over_cpu_bound",), ">= 0.9", digits=3)
    row("in-process service, verifies/s", ("inprocess", "service", "per_s"), digits=0)
    row("in-process peer (eventsourcing), /s", ("inprocess", "peer", "per_s"), digits=0)
    rows.append(
        (
            "  service p99 | peer p99 ms",
            [f"{fmt(g(s, 'inprocess', 'service', 'p99_ms'), 1)} | {fmt(g(s, 'inprocess', 'peer', 'p99_ms'), 1)}" for s in stores],
            "",
        )
    )
    row("service / peer", ("inprocess", "service_over_peer"), ">= 3", digits=2)
    row("events stored (audit)", ("audit", "events"))
    row("  event load, s", ("audit", "load", "seconds"))
    row("  event load rate, events/s", ("audit", "load", "per_s"), digits=0)
    rows.append(
        (
            "history page p50 | p99 ms",
            [f"{fmt(g(s, 'audit', 'history', 'p50_ms'), 2)} | {fmt(g(s, 'audit', 'history', 'p99_ms'), 2)}" for s in stores],
            "p99 < 20 at 1M events",
        )
    )
    row("  events per page (mean)", ("audit", "history", "events_per_page_mean"), digits=1)
    rows.append(
        (
            "GetCardHistory page (100) p50 | p99 ms",
            [
                f"{fmt(g(s, 'audit', 'pages', 'card_history', 'p50_ms'), 2)} | {fmt(g(s, 'audit', 'pages', 'card_history', 'p99_ms'), 2)}"
                for s in stores
            ],
            "",
        )
    )
    rows.append(
        (
            "one terminal's day page (100) p50 | p99 ms",
            [
                f"{fmt(g(s, 'audit', 'pages', 'terminal_day', 'p50_ms'), 2)} | {fmt(g(s, 'audit', 'pages', 'terminal_day', 'p99_ms'), 2)}"
                for s in stores
            ],
            "",
        )
    )
    row("WatchEvents catch-up, events/s", ("audit", "watch_catch_up", "events_per_s"), digits=0)
    rows.append(
        (
            "live watch lag p50 | p99 ms (under the verify mix)",
            [f"{fmt(g(s, 'watch_live', 'lag_p50_ms'), 1)} | {fmt(g(s, 'watch_live', 'lag_p99_ms'), 1)}" for s in stores],
            "",
        )
    )
    row("  verify mix req/s with a watcher", ("watch_live", "verify_rps"), digits=0)
    row("audit load: verify alone, req/s", ("audit_load", "verify_alone_rps"), digits=0)
    row("  with 1 watcher / alone", ("audit_load", "with_1_watcher_over_alone"), ">= 0.9", digits=3)
    row("  with 100 watchers / alone", ("audit_load", "with_100_watchers_over_alone"), ">= 0.8", digits=3)
    row("  with integrity runs / alone", ("audit_load", "with_integrity_over_alone"), ">= 0.8", digits=3)
    row("  server CPU ms/verify: alone", ("audit_load", "server_cpu_ms_per_request", "alone"), digits=3)
    row("  server CPU ms/verify: 100 watchers", ("audit_load", "server_cpu_ms_per_request", "100_watchers"), digits=3)
    row("  health not SERVING, s", ("audit_load", "health_not_serving_s"), "0", digits=1)
    row("rebuild, events/s", ("audit", "rebuild", "events_per_s"), ">= 50,000", digits=0)
    row("server peak RSS (VmHWM), MB", ("targets", "peak_rss_mb", "value"), "< 300")
    row("server PSS after the open loop, MB", ("server", "pss_mb"))
    met("target: verify/ceiling", "verify_over_ceiling")
    met("target: verify p99", "verify_p99_ms")
    met("target: service/peer", "inprocess_service_over_peer")
    met("target: history p99", "history_p99_ms")
    met("target: rebuild", "rebuild_events_per_s")
    met("target: peak RSS", "peak_rss_mb")
    met("target: open-loop p99 at 60 %", "open_loop_p99_ms_at_60")
    met("target: verify / CPU-cost bound", "verify_over_cpu_bound")
    met("target: 1 watcher", "with_1_watcher_over_alone")
    met("target: 100 watchers", "with_100_watchers_over_alone")
    met("target: integrity runs", "with_integrity_over_alone")
    met("target: health during audit load", "audit_load_health_not_serving_s")
    rows.append(("errors (phases that failed)", [str(len(report["stores"][s].get("errors", []))) for s in stores], ""))

    w0 = max(len(r[0]) for r in rows)
    widths = [max(len(s), *(len(r[1][i]) for r in rows)) for i, s in enumerate(stores)]
    head = f"{'':<{w0}}  " + "  ".join(f"{s:>{widths[i]}}" for i, s in enumerate(stores)) + "  target"
    lines = [head, "-" * len(head)]
    for label, vals, target in rows:
        lines.append(
            f"{label:<{w0}}  " + "  ".join(f"{v:>{widths[i]}}" for i, v in enumerate(vals)) + (f"  {target}" if target else "")
        )
    return "\n".join(lines)


def _get(d, path):
    for p in path:
        if isinstance(d, list) and isinstance(p, int):
            d = d[p] if p < len(d) else None
        elif isinstance(d, dict):
            d = d.get(p)
        else:
            return None
    return d


def _save(report: dict, path: Path | None, kind: str, started: datetime, workdir: Path, keep: bool) -> Path:
    """Write the report (to bench-results/<kind>-<time>.json unless a path
    is given) and remove the run's temp dir unless it is kept; the report's path."""
    out = path or ROOT / "bench-results" / f"{kind}-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    if keep:
        log(f"kept {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return out


# -- main ------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="short run (about 7 minutes for both stores on 2 cores)")
    p.add_argument("--store", choices=("sqlite", "postgres", "both"), default="both")
    p.add_argument("--json", type=Path, help="where to write the results (default bench-results/bench-<timestamp>.json)")
    p.add_argument("--cards", type=int, help="cards enrolled for the server phases")
    p.add_argument("--events", type=int, help="events stored for the audit phase")
    p.add_argument("--duration", type=float, help="seconds measured per gRPC workload and per in-process run")
    p.add_argument("--warmup", type=float, help="seconds of warm-up before each gRPC measurement")
    p.add_argument("--procs", type=int, help="load-generator processes")
    p.add_argument("--inflight", type=int, help="requests in flight per load-generator process")
    p.add_argument("--peer-cards", type=int, help="cards in each in-process comparison database")
    p.add_argument("--load-budget", type=float, help="seconds allowed for each bulk load (cards, events)")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (SQLite files, server logs)")
    g = p.add_argument_group("growth", "the growth phase alone (bench/growth.py): the figures at growing store sizes")
    g.add_argument("--growth", action="store_true", help="run the growth phase (and nothing else)")
    g.add_argument("--growth-sizes", help="cards per store size, comma-separated (default 10000,100000,1000000)")
    g.add_argument("--growth-sqlite-max", type=int, help="the largest SQLite store, in cards (default 1000000)")
    g.add_argument(
        "--growth-no-checkpoints-max", type=int, help="sizes up to this are loaded again without checkpoints (default 100000)"
    )
    g.add_argument("--growth-workers", type=int, help="bulk-loader processes (default: the machine's cores)")
    g.add_argument("--plot", type=Path, help="where to write the growth plot (default beside the JSON, .png)")
    return p.parse_args(argv)


def make_config(a: argparse.Namespace) -> Config:
    cfg = QUICK if a.quick else FULL
    over = {
        "cards": a.cards,
        "events": a.events,
        "duration_s": a.duration,
        "peer_duration_s": a.duration,
        "warmup_s": a.warmup,
        "procs": a.procs,
        "inflight": a.inflight,
        "peer_cards": a.peer_cards,
        "cards_budget_s": a.load_budget,
        "events_budget_s": a.load_budget,
    }
    cfg = replace(cfg, **{k: v for k, v in over.items() if v is not None})
    return replace(cfg, peer_concurrency=cfg.procs * cfg.inflight)


def growth_main(args: argparse.Namespace, argv: list[str] | None) -> int:
    """`--growth`: the growth phase alone; JSON, a table, a plot."""
    import os

    from bench.growth import DEFAULT_SIZES, GrowthConfig, plot, run_growth
    from bench.growth import table as growth_table

    def on_term(_sig, _frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    from pinlife.runtime import logs

    logs.configure("json", level=logging.WARNING)
    over = {
        "sizes": tuple(int(s.replace("_", "")) for s in args.growth_sizes.split(",")) if args.growth_sizes else DEFAULT_SIZES,
        "sqlite_max": args.growth_sqlite_max,
        "no_checkpoints_max": args.growth_no_checkpoints_max,
        "workers": args.growth_workers or len(os.sched_getaffinity(0)),
        "procs": args.procs,
        "inflight": args.inflight,
        "warmup_s": args.warmup,
        "duration_s": args.duration,
    }
    cfg = GrowthConfig(**{k: v for k, v in over.items() if v is not None})
    stores = ["sqlite", "postgres"] if args.store == "both" else [args.store]
    if "postgres" in stores and (why := pg_reachable()):
        log(f"postgres: not reachable, skipped: {why}")
        stores.remove("postgres")
    started = datetime.now(UTC)
    wall = Stopwatch()
    workdir = Path(tempfile.mkdtemp(prefix="pinlife-growth-"))
    report: dict = {
        "benchmark": "pinlife-growth",
        "started_at": started.isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, "-m", "bench.run", *(argv if argv is not None else sys.argv[1:])]),
        "machine": machine_info(),
    }
    m = report["machine"]
    log(f"growth: stores {', '.join(stores)}, sizes {', '.join(f'{s:,}' for s in cfg.sizes)}; temp dir {workdir}")
    interrupted = False
    try:
        report["growth"] = run_growth(stores, cfg, workdir)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        report["wall_seconds"] = round(wall.elapsed, 1)
        out = _save(report, args.json, "growth", started, workdir, args.keep)
    print()
    print(f"pinlife growth benchmark, {m['nproc']} cpus ({m['cpu_model']}), Python {m['python']}, service at {m['git_commit']}")
    print()
    growth = report.get("growth", {"stores": {}})
    print(growth_table(growth))
    png = plot(growth, args.plot or out.with_suffix(".png"))
    errors = [(k, s, e) for k, per in growth["stores"].items() for s, r in per.items() for e in r.get("errors", [])]
    for kind, size, e in errors:
        print(f"{kind} {size}: phase '{e['phase']}' failed: {e['error']}")
    print(f"\nwall time {report['wall_seconds']:.0f} s; results written to {out}" + (f", plot {png}" if png else ""))
    return 1 if interrupted or errors else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.growth:
        return growth_main(args, argv)
    cfg = make_config(args)

    def on_term(_sig, _frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    from pinlife.runtime import logs

    workdir = Path(tempfile.mkdtemp(prefix="pinlife-bench-"))
    service_log = open(workdir / "inprocess-service.log", "w")
    logs.configure("json", level=logging.WARNING, stream=service_log)  # the in-process service's warnings

    started = datetime.now(UTC)
    wall = Stopwatch()
    stores = ["sqlite", "postgres"] if args.store == "both" else [args.store]
    report: dict = {
        "benchmark": "pinlife",
        "started_at": started.isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, "-m", "bench.run", *(argv if argv is not None else sys.argv[1:])]),
        "mode": cfg.mode,
        "config": asdict(cfg),
        "machine": machine_info(),
        "targets": TARGETS,
        "stores": {},
    }
    log(
        f"mode {cfg.mode}: stores {', '.join(stores)}; cards {cfg.cards:,} (load budget {cfg.cards_budget_s:.0f} s), "
        f"events {cfg.events:,} (budget {cfg.events_budget_s:.0f} s); gRPC {cfg.procs} procs x {cfg.inflight} in flight = "
        f"{cfg.procs * cfg.inflight}, warm-up {cfg.warmup_s:g} s + {cfg.duration_s:g} s; in-process {cfg.peer_cards:,} cards, "
        f"{cfg.peer_concurrency} concurrent, {cfg.peer_duration_s:g} s; {cfg.reads:,} history reads"
    )
    m = report["machine"]
    log(f"machine: {m['nproc']} cpus, {m['cpu_model']}, Python {m['python']}, SQLite {m['sqlite']}; temp dir {workdir}")
    interrupted = False
    try:
        for kind in stores:
            if kind == "postgres" and (why := pg_reachable()):
                log(f"postgres: not reachable, skipped: {why}")
                report["stores"][kind] = {"store": kind, "skipped": why, "errors": []}
                continue
            sw = Stopwatch()
            run = StoreRun(kind, cfg, workdir)
            try:
                res = run.run()
            except KeyboardInterrupt:
                interrupted = True
                res = run.res
                res["errors"].append({"phase": "interrupted", "error": "KeyboardInterrupt"})
            res["wall_seconds"] = round(sw.elapsed, 1)
            res["targets"] = judge(kind, res)
            report["stores"][kind] = res
            log(f"{kind}: done in {sw.elapsed:.0f} s")
            if interrupted:
                break
    finally:
        report["wall_seconds"] = round(wall.elapsed, 1)
        end = machine_info()
        if (end["service_tree"], end["service_tree_dirty"]) != (m["service_tree"], m["service_tree_dirty"]) or end[
            "service_tree_dirty"
        ]:
            report["warning"] = (
                f"service/ or migrations/ changed or had uncommitted changes during the run (commit {m['git_commit']} "
                f"-> {end['git_commit']}, dirty {m['service_tree_dirty']} -> {end['service_tree_dirty']}): "
                "server processes started later may have run other code than the in-process phases"
            )
        service_log.close()
        out = _save(report, args.json, "bench", started, workdir, args.keep)

    print()
    print(
        f"pinlife benchmark, {cfg.mode} mode, {m['nproc']} cpus ({m['cpu_model']}), Python {m['python']}, "
        f"service at {m['git_commit']}{' (dirty)' if m['service_tree_dirty'] else ''}"
    )
    for kind, r in report["stores"].items():
        f = r.get("store_facts", {})
        print(f"  {kind}: {f.get('version', r.get('skipped', '?'))}")
    print()
    print(table(report))
    print()
    for kind, r in report["stores"].items():
        for e in r.get("errors", []):
            print(f"{kind}: phase '{e['phase']}' failed: {e['error']}")
        for name, j in r.get("targets", {}).items():
            if j.get("note"):
                print(f"(*) {kind} {name}: {j['note']}")
        for what, path in (("cards", ("cards", "load")), ("events", ("audit", "load"))):
            ld = _get(r, path)
            if ld and ld.get("budget_hit"):
                print(
                    f"{kind}: the {what} load stopped at {ld['done']:,} of {ld['target']:,} after {ld['seconds']:.0f} s "
                    f"({ld['stop_reason']}); batches of {ld['batch_size']} took first {ld['first_batches_s']} s, "
                    f"last {ld['last_batches_s']} s"
                )
    if report.get("warning"):
        print(f"WARNING: {report['warning']}")
    print(f"\nwall time {report['wall_seconds']:.0f} s; results written to {out}")
    failed = interrupted or any(r.get("errors") for r in report["stores"].values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
