"""The growth phase (`python -m bench.run --growth`, `make bench-growth`):
the same figures at growing store sizes, to see what stays flat.

For each store and each size (cards; about 5 events a card), a fresh
database is loaded by the bulk loader (bench/bulk.py: authentic rows, made
by the service's own functions; signed checkpoints every 100,000 events),
then:
  - the server is started (`python -m pinlife.cli serve`): seconds to
    SERVING, the start-up checkpoint included (there is nothing left to sign
    on a store loaded with checkpoints; see `no_checkpoints` below);
  - the verify mix over gRPC (bench/loadgen.py), and its status reads
    (`by_kind.status`);
  - history pages (store.log.stream of random cards), the store side of
    GetCardHistory and of one terminal's day (QueryEvents), and QueryEvents
    pages over gRPC (one card reader's events, first page of 100);
  - WatchEvents catch-up from position 0 over gRPC;
  - a whole-store VerifyIntegrity over gRPC, within a budget (its rate from
    the progress it streams, cards checked per second);
  - the projection rebuild, in a process of its own (events/s, its peak RSS);
  - the server's peak RSS (VmHWM over its processes), after all of these;
  - bytes on disk per card and per event.
Sizes up to `no_checkpoints_max` are loaded a second time without any
checkpoint (a store whose events no checkpoint covers: the server's signer
signs the whole log back at start): start-up, the first verify answered,
and how long until the start-up checkpoint covers the log.

JSON under `growth.<store>.<cards>` (bench/README.md), a table and a PNG plot
(each figure against the store size, log axes).
"""

from __future__ import annotations

import json
import multiprocessing
import resource
import sqlite3
import time
import traceback
import uuid
from dataclasses import dataclass
from pathlib import Path

from bench.common import create_pg_database, drop_pg_database, latency_summary, log, pg_analyze, random_db_name

DEFAULT_SIZES = (10_000, 100_000, 1_000_000)


@dataclass(frozen=True)
class GrowthConfig:
    sizes: tuple[int, ...] = DEFAULT_SIZES
    sqlite_max: int = 1_000_000  # the largest SQLite store (PostgreSQL takes every size)
    no_checkpoints_max: int = 100_000  # sizes up to this are also loaded without checkpoints
    workers: int = 2  # bulk-loader processes
    procs: int = 4
    inflight: int = 16
    warmup_s: float = 2.0
    duration_s: float = 8.0
    reads: int = 1000  # history pages and store-side audit pages
    grpc_pages: int = 200  # QueryEvents pages over gRPC
    watch_events: int = 100_000
    integrity_budget_s: float = 60.0
    checkpoint_every: int = 100_000


# -- one store of one size ---------------------------------------------------------------
class GrowthRun:
    def __init__(self, kind: str, cards: int, cfg: GrowthConfig, workdir: Path, checkpoints: bool = True):
        self.kind, self.cards, self.cfg, self.checkpoints = kind, cards, cfg, checkpoints
        self.dir = workdir / f"{kind}-{cards}{'' if checkpoints else '-nocp'}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.res: dict = {"store": kind, "cards": cards, "checkpoints": checkpoints, "errors": [], "phase_seconds": {}}
        self.db_name: str | None = None

    def phase(self, name: str, fn, *args, **kwargs):
        t = time.perf_counter()
        log(f"growth {self.kind} {self.cards:,}{'' if self.checkpoints else ' (no checkpoints)'}: {name} ...")
        try:
            return fn(*args, **kwargs)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # noqa: BLE001 - recorded, the run goes on
            self.res["errors"].append({"phase": name, "error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()})
            log(f"growth {self.kind} {self.cards:,}: {name} FAILED: {type(exc).__name__}: {exc}")
            return None
        finally:
            self.res["phase_seconds"][name] = round(time.perf_counter() - t, 1)

    def url(self) -> str:
        if self.kind == "sqlite":
            return f"sqlite:///{self.dir / 'growth.db'}"
        self.db_name = random_db_name("_growth")
        return create_pg_database(self.db_name)

    def run(self) -> dict:
        from pinlife.keys.ring import write_new_key_file

        key_file = self.dir / "keys.json"
        write_new_key_file(key_file)
        server = None
        try:
            url = self.url()
            if self.phase("load", self.load, url, key_file) is None:
                return self.res
            self.phase("disk", self.disk, url)
            server = self.phase("start server", self.start_server, url, key_file)
            if server is None:
                return self.res
            if not self.checkpoints:
                self.phase("start-up checkpoint", self.first_answers, server, url, key_file)
                return self.res
            self.phase("verify mix", self.verify_mix, server)
            self.phase("reads", self.reads, url, key_file)
            self.phase("query pages", self.query_pages, server)
            self.phase("watch catch-up", self.watch, server)
            self.phase("integrity", self.integrity, server)
            self.res["server_memory"] = server.memory()
            self.res["server_log_warnings"] = _warnings(server.log_path)
            server.stop()
            server = None
            self.phase("rebuild", self.rebuild, url)
        finally:
            if server is not None:
                server.stop()
            if self.db_name:
                try:
                    drop_pg_database(self.db_name)
                except Exception as exc:  # noqa: BLE001
                    log(f"growth: could not drop {self.db_name}: {exc}")
            for f in self.dir.glob("growth.db*"):
                f.unlink()
        return self.res

    # phases ---------------------------------------------------------------------
    def load(self, url: str, key_file: Path) -> dict:
        from bench.bulk import BulkSpec, bulk_load
        from pinlife.store.migrate import upgrade

        upgrade(url)
        spec = BulkSpec(
            url,
            key_file,
            self.cards,
            workers=self.cfg.workers,
            checkpoints=self.checkpoints,
            checkpoint_every=self.cfg.checkpoint_every,
        )
        rep = bulk_load(spec).as_dict()
        if self.kind == "postgres":
            rep["analyze_s"] = round(pg_analyze(url), 2)
        self.res["load"] = rep
        self.res["events"] = rep["events"]
        log(
            f"growth {self.kind}: loaded {rep['cards']:,} cards, {rep['events']:,} events in {rep['seconds']} s "
            f"({rep['cards_per_s']:,.0f} cards/s, {rep['events_per_s']:,.0f} events/s), {rep['checkpoints']} checkpoints"
        )
        return rep

    def disk(self, url: str) -> None:
        if self.kind == "sqlite":
            path = Path(url.removeprefix("sqlite:///"))
            with sqlite3.connect(path) as c:
                c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            size = sum(f.stat().st_size for f in path.parent.glob(path.name + "*"))
            tables = None
        else:
            import psycopg

            with psycopg.connect(url, autocommit=True) as c:
                c.execute("CHECKPOINT")
                size = c.execute("SELECT pg_database_size(current_database())").fetchone()[0]
                tables = {
                    name: int(b)
                    for name, b in c.execute(
                        "SELECT relname, pg_total_relation_size(oid) FROM pg_class WHERE relkind = 'r' "
                        "AND relnamespace = 'public'::regnamespace ORDER BY 2 DESC"
                    )
                }
        events = self.res.get("events") or 1
        self.res["disk"] = {
            "bytes": size,
            "bytes_per_card": round(size / self.cards, 1),
            "bytes_per_event": round(size / events, 1),
            **({"tables": tables} if tables else {}),
        }

    def start_server(self, url: str, key_file: Path):
        from bench.server import ServerProcess

        server = ServerProcess(url, key_file, self.dir / "server.log")
        self.res["server"] = {"start_s": round(server.start_seconds, 2), "memory_at_start": server.memory()["vm_hwm_kib"]}
        log(f"growth {self.kind} {self.cards:,}: SERVING after {server.start_seconds:.2f} s")
        return server

    def first_answers(self, server, url: str, key_file: Path) -> None:
        """A store no checkpoint covers: the first verify's answer time, and
        how long until the server's signer has covered the log."""
        import grpc

        from bench.common import PB_USER_CERTIFICATE, card_id, pins_for
        from pinlife.keys.ring import KeyRing
        from pinlife.store.checkpoints import signed_size
        from pinlife.store.event_store import EventStore
        from pinlife.v1 import common_pb2, pin_service_pb2_grpc
        from pinlife.v1 import pin_service_pb2 as ppb

        keys = KeyRing.load(key_file)
        store = EventStore(url)
        out: dict = {}
        try:
            head = store.log.head_position()  # the log as loaded: what the start-up signing must cover
            with grpc.insecure_channel(server.target) as channel:
                stub = pin_service_pb2_grpc.PinServiceStub(channel)
                md = (("x-pinlife-terminal", "bench-growth"),)
                lat = []
                for i in range(20):
                    t = time.perf_counter()
                    r = stub.VerifyPin(
                        ppb.VerifyPinRequest(
                            request_id=str(uuid.uuid4()),
                            card_id=card_id(i),
                            pin_type=PB_USER_CERTIFICATE,
                            pin=pins_for(i).user_certificate,
                        ),
                        metadata=md,
                        timeout=60,
                    )
                    lat.append(time.perf_counter() - t)
                    if i == 0:
                        out["first_verify_s"] = round(lat[0], 3)
                        out["first_verify_result"] = common_pb2.CheckResult.Name(r.check.result)
                out["verify_latency"] = latency_summary(lat)
            t = time.perf_counter()
            while (size := signed_size(store, keys)) < head and time.perf_counter() - t < 600:
                time.sleep(0.5)
            out["checkpoint_covers_log_s"] = round(server.start_seconds + time.perf_counter() - t, 1)
            out["signed_size"], out["head_at_start"] = size, head
        finally:
            store.close()
        out["server_memory"] = server.memory()["vm_hwm_kib"]
        self.res["no_checkpoints"] = out
        log(
            f"growth {self.kind} {self.cards:,} without checkpoints: first verify {out['first_verify_s']} s "
            f"({out['first_verify_result']}), log covered by a checkpoint after {out['checkpoint_covers_log_s']} s"
        )

    def verify_mix(self, server) -> None:
        from bench.loadgen import LoadSpec, layout, run_load

        _, lock, change = layout(self.cards)
        spec = LoadSpec(
            server.target,
            "mix",
            self.cfg.procs,
            self.cfg.inflight,
            self.cfg.warmup_s,
            self.cfg.duration_s,
            cards=self.cards,
            lock_cards=lock,
            change_cards=change,
        )
        r = run_load(spec)
        status = r.get("by_kind", {}).get("status", {})
        self.res["verify_mix"] = {k: r.get(k) for k in ("rps", "p50_ms", "p99_ms", "p999_ms", "errors", "errors_by_code")}
        self.res["status_read"] = {k: status.get(k) for k in ("rps", "p50_ms", "p99_ms")}
        log(
            f"growth {self.kind} {self.cards:,}: verify mix {r['rps']:,.0f} req/s p99 {r['p99_ms']} ms; status p99 {status.get('p99_ms')} ms"
        )

    def reads(self, url: str, key_file: Path) -> None:
        from bench.audit import audit_pages, history_reads
        from pinlife.keys.ring import KeyRing
        from pinlife.store.event_store import EventStore

        store = EventStore(url)
        try:
            self.res["history"] = history_reads(store, self.cards, self.cfg.reads)
            pages = audit_pages(store, KeyRing.load(key_file), self.cards, self.cfg.reads)
            pages.pop("plans", None)
            self.res["pages"] = pages
        finally:
            store.close()

    def query_pages(self, server) -> None:
        """QueryEvents over gRPC: the first page of 100 of one card reader's
        events, oldest first (a terminal's whole history: its index's range)."""
        import random

        import grpc

        from bench.bulk import READER_CARDS
        from pinlife.v1 import audit_service_pb2 as apb
        from pinlife.v1 import audit_service_pb2_grpc

        readers = max(100, self.cards // READER_CARDS)
        rng = random.Random(3)
        lat, sizes = [], []
        with grpc.insecure_channel(server.target) as channel:
            stub = audit_service_pb2_grpc.AuditServiceStub(channel)
            md = (("x-pinlife-terminal", "bench-auditor"),)
            for n in range(self.cfg.grpc_pages + 10):
                f = apb.EventFilter(terminal_id=f"bench-reader-{rng.randrange(readers):05d}")
                t = time.perf_counter()
                r = stub.QueryEvents(apb.QueryEventsRequest(filter=f, page_size=100), metadata=md, timeout=30)
                if n >= 10:
                    lat.append(time.perf_counter() - t)
                    sizes.append(len(r.events))
        self.res["query_events"] = {
            **{k: v for k, v in latency_summary(lat).items() if k != "count"},
            "pages": len(lat),
            "events_per_page_mean": round(sum(sizes) / len(sizes), 1) if sizes else None,
        }

    def watch(self, server) -> None:
        from bench.audit import watch_catch_up

        self.res["watch_catch_up"] = watch_catch_up(server.target, min(self.res.get("events") or 0, self.cfg.watch_events))

    def integrity(self, server) -> None:
        """A whole-store VerifyIntegrity, within the budget: cards checked
        per second from its progress, the report if it finished."""
        import grpc

        from pinlife.v1 import audit_service_pb2 as apb
        from pinlife.v1 import audit_service_pb2_grpc

        out: dict = {"budget_s": self.cfg.integrity_budget_s}
        with grpc.insecure_channel(server.target) as channel:
            stub = audit_service_pb2_grpc.AuditServiceStub(channel)
            md = (("x-pinlife-terminal", "bench-auditor"),)
            call = stub.VerifyIntegrity(apb.VerifyIntegrityRequest(), metadata=md, timeout=3600)
            t = time.perf_counter()
            cards_started = cards_done = 0
            t_cards = t_cards_end = None
            try:
                for r in call:
                    now = time.perf_counter()
                    if r.HasField("report"):
                        out["intact"] = r.report.intact
                        out["finished"] = True
                        break
                    p = r.progress
                    if p.phase == "cards":
                        if t_cards is None:
                            t_cards, cards_started = now, p.done
                        cards_done = p.done
                        if p.total and p.done >= p.total:
                            t_cards_end = now
                    elif t_cards is not None and t_cards_end is None:
                        t_cards_end = now  # the cards phase is over
                    if now - t > self.cfg.integrity_budget_s:
                        out["finished"] = False
                        call.cancel()
                        break
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.CANCELLED:
                    raise
            seconds = time.perf_counter() - t
        out["seconds"] = round(seconds, 1)
        if t_cards is not None:
            # over the cards phase only (each card's links, MAC, projection and lawful history)
            cards_s = (t_cards_end or time.perf_counter()) - t_cards
            rate = (cards_done - cards_started) / cards_s if cards_s > 0 else None
            out["cards_checked"] = cards_done
            out["cards_phase_s"] = round(cards_s, 2)
            out["cards_per_s"] = round(rate, 1) if rate else None
            per_card = (self.res.get("events") or 0) / self.cards
            out["events_per_s"] = round(rate * per_card, 1) if rate else None
        self.res["integrity"] = out
        log(f"growth {self.kind} {self.cards:,}: VerifyIntegrity {out}")

    def rebuild(self, url: str) -> None:
        ctx = multiprocessing.get_context("spawn")
        q = ctx.Queue()
        p = ctx.Process(target=_rebuild_child, args=(url, q), daemon=True)
        p.start()
        try:
            out = q.get(timeout=3600)
        finally:
            p.join(30)
        if "error" in out:
            raise RuntimeError(out["error"])
        self.res["rebuild"] = out
        log(f"growth {self.kind} {self.cards:,}: rebuild {out}")


def _rebuild_child(url: str, q) -> None:
    try:
        from bench.audit import rebuild_speed
        from pinlife.store.event_store import EventStore

        store = EventStore(url)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out = rebuild_speed(store)
        out["peak_rss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out["rss_before_kib"] = before
        store.close()
        q.put(out)
    except BaseException:  # noqa: BLE001
        q.put({"error": traceback.format_exc()})


def _warnings(path: Path, limit: int = 10) -> list[str]:
    out = []
    try:
        with open(path, errors="replace") as f:
            for line in f:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if entry.get("level") not in (None, "info", "debug") and len(out) < limit:
                    out.append(line.strip()[:400])
    except OSError:
        pass
    return out


# -- the whole phase -----------------------------------------------------------------------
def run_growth(stores: list[str], cfg: GrowthConfig, workdir: Path) -> dict:
    out: dict = {"config": {**cfg.__dict__, "sizes": list(cfg.sizes)}, "stores": {}}
    for kind in stores:
        per: dict = {}
        out["stores"][kind] = per
        for cards in cfg.sizes:
            if kind == "sqlite" and cards > cfg.sqlite_max:
                continue
            per[str(cards)] = GrowthRun(kind, cards, cfg, workdir).run()
            if cards <= cfg.no_checkpoints_max:
                per[f"{cards}-no-checkpoints"] = GrowthRun(kind, cards, cfg, workdir, checkpoints=False).run()
    return out


# figure name -> (label, path in a size's result, unit)
FIGURES: dict[str, tuple[str, tuple, str]] = {
    "load_cards_per_s": ("bulk load, cards/s", ("load", "cards_per_s"), "cards/s"),
    "start_s": ("server start-up, s", ("server", "start_s"), "s"),
    "verify_rps": ("verify mix, req/s", ("verify_mix", "rps"), "req/s"),
    "verify_p99_ms": ("verify mix p99, ms", ("verify_mix", "p99_ms"), "ms"),
    "status_p99_ms": ("status read p99, ms", ("status_read", "p99_ms"), "ms"),
    "history_p99_ms": ("history page p99, ms", ("history", "p99_ms"), "ms"),
    "card_history_p99_ms": ("GetCardHistory page p99, ms (store)", ("pages", "card_history", "p99_ms"), "ms"),
    "terminal_day_p99_ms": ("one terminal's day page p99, ms (store)", ("pages", "terminal_day", "p99_ms"), "ms"),
    "query_events_p99_ms": ("QueryEvents page p99, ms (gRPC)", ("query_events", "p99_ms"), "ms"),
    "watch_events_per_s": ("WatchEvents catch-up, events/s", ("watch_catch_up", "events_per_s"), "events/s"),
    "integrity_events_per_s": ("VerifyIntegrity, events/s", ("integrity", "events_per_s"), "events/s"),
    "rebuild_events_per_s": ("rebuild, events/s", ("rebuild", "events_per_s"), "events/s"),
    "rebuild_peak_rss_mb": ("rebuild peak RSS, MB", ("rebuild", "peak_rss_kib"), "MB"),
    "server_peak_rss_mb": ("server peak RSS, MB", ("server_memory", "vm_hwm_kib"), "MB"),
    "bytes_per_event": ("disk, bytes/event", ("disk", "bytes_per_event"), "bytes"),
    "bytes_per_card": ("disk, bytes/card", ("disk", "bytes_per_card"), "bytes"),
}


def _get(d, path):
    for p in path:
        d = d.get(p) if isinstance(d, dict) else None
    return d


def figure(res: dict, name: str):
    v = _get(res, FIGURES[name][1])
    if v is not None and name.endswith("_mb"):
        v = round(v * 1024 / 1e6, 1)
    return v


def table(growth: dict) -> str:
    from bench.run import fmt

    lines = []
    for kind, per in growth["stores"].items():
        sizes = [k for k in per if k.isdigit()]
        cols = [f"{int(k):,} cards" for k in sizes]
        rows: list[tuple[str, list[str]]] = [
            ("events", [fmt(per[k].get("events")) for k in sizes]),
            ("load, s", [fmt(_get(per[k], ("load", "seconds"))) for k in sizes]),
        ]
        for name, (label, _, _) in FIGURES.items():
            rows.append((label, [fmt(figure(per[k], name), 2 if "p99" in name or name == "start_s" else 0) for k in sizes]))
        for k in [k for k in per if k.endswith("-no-checkpoints")]:
            nc = per[k].get("no_checkpoints", {})
            base = k.split("-")[0]
            i = sizes.index(base) if base in sizes else None
            for label, v in (
                ("no checkpoints: start-up, s", _get(per[k], ("server", "start_s"))),
                ("no checkpoints: first verify, s", nc.get("first_verify_s")),
                ("no checkpoints: log covered after, s", nc.get("checkpoint_covers_log_s")),
            ):
                row = next((r for r in rows if r[0] == label), None)
                if row is None:
                    row = (label, ["-"] * len(sizes))
                    rows.append(row)
                if i is not None:
                    row[1][i] = fmt(v, 2)
        rows.append(("errors (phases that failed)", [str(len(per[k].get("errors", []))) for k in sizes]))
        w0 = max(len(r[0]) for r in rows)
        widths = [max(len(c), *(len(r[1][i]) for r in rows)) for i, c in enumerate(cols)]
        head = f"{kind:<{w0}}  " + "  ".join(f"{c:>{widths[i]}}" for i, c in enumerate(cols))
        lines += [head, "-" * len(head)]
        lines += [f"{label:<{w0}}  " + "  ".join(f"{v:>{widths[i]}}" for i, v in enumerate(vals)) for label, vals in rows]
        lines.append("")
    return "\n".join(lines)


def plot(growth: dict, path: Path, dpi: int = 80) -> Path | None:
    """Each figure against the store size (cards), log axes, one line per store."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("growth: matplotlib is not installed (the bench extra): no plot")
        return None
    names = list(FIGURES)
    cols = 4
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.8 * rows))
    for ax, name in zip(axes.flat, names):
        label, _, unit = FIGURES[name]
        for kind, per in growth["stores"].items():
            pts = [(int(k), figure(r, name)) for k, r in per.items() if k.isdigit()]
            pts = [(x, y) for x, y in pts if y]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=kind)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("cards", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(True, which="both", alpha=0.3)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
