"""A bulk loader of authentic stores (the growth phase, bench/growth.py).

It writes what the service's writer would have written for each card's
history, with the service's own functions, only in bulk:

- each card's commands (an enrolment with all four PINs, verifies of the
  user-certificate PIN, about one in ten wrong and followed by a right one,
  and for about one card in a hundred three wrong resident-registry PINs,
  which lock it, then, mostly, an unlock at a counter) are decided by the
  domain (`decide`, then `evolve` per event), in-process, without a store:
  a decision the rules would refuse stops the load;
- each event's envelope is `chain.hashed_envelope`, its link and Merkle leaf
  `chain.link_and_leaf` under the current integrity key and its position;
  each card's MAC is the integrity key's tag of `projection.state_message`,
  its PIN rows `projection.pin_row`, its verifiers `KeyRing.make`; the
  values go through the columns' own converters (`HotSql.bind_time`,
  `bind_json`), in `hot_sql`'s column orders;
- signed checkpoints, when asked for, are `checkpoints.sign_checkpoint`
  over the leaves just written (never read back), every `checkpoint_every`
  events and at the end: the store a writer that signed as it went leaves.
  Without them the store is one whose events no checkpoint covers (a
  restored backup, a store from before checkpoints): the server's signer
  then signs the whole log back from the events.

Not written: kept answers (`requests`: the history is older than the replay
window, and the server prunes them anyway), terminals' rows (their failure
windows have long expired; the server makes a terminal's row when it first
sees it) and terminal streams (this history has no refusals or throttling).

Positions and time: the cards are taken in chunks; within a chunk the cards'
commands are interleaved at random (each card's in order), each command at
its own instant, so occurred-at grows with the position over the whole log,
and the history spans `days` days up to the load. A card's events thus lie
within its chunk's stretch of the log (a few thousand positions), not spread
over the whole log as years of traffic would spread them.

Writing: worker processes take every Nth chunk; a worker decides its chunk,
tells the parent how many events it holds, gets the chunk's first position
(all earlier chunks' counts are known by then), links, MACs and writes it:
on PostgreSQL with COPY on its own connection, one transaction per chunk; on
SQLite it hands the rows to the parent, the one writer (executemany, a
transaction every few chunks). The parent takes each chunk's leaves in
position order for the checkpoints and sets `log_head` at the end.
"""

from __future__ import annotations

import multiprocessing
import random
import time
import traceback
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from bench.common import card_id, log, pins_for, wrong_4digit

PIN_ORDER = ("resident_registry", "card_info_input_support", "user_certificate", "signature")
READER_CARDS = 2000  # one card reader per this many cards (at least 100 readers)
COUNTERS = 20


@dataclass(frozen=True)
class BulkSpec:
    url: str
    key_file: Path
    cards: int
    start: int = 0  # the first card index
    seed: int = 1
    days: float = 30.0  # the history spans this many days up to the load
    chunk: int = 2000  # cards per chunk (one transaction each on PostgreSQL)
    workers: int = 2
    checkpoints: bool = True
    checkpoint_every: int = 100_000  # events between signed checkpoints


@dataclass
class BulkReport:
    cards: int = 0
    events: int = 0
    seconds: float = 0.0
    checkpoints: int = 0
    checkpoint_seconds: float = 0.0
    commands: dict[str, int] = field(default_factory=dict)
    chunks: int = 0
    worker_cpu_s: float = 0.0  # the worker processes' CPU
    database_cpu_s: float = 0.0  # PostgreSQL's backends serving the workers (not its checkpointer or WAL writer)
    parent_cpu_s: float = 0.0  # this process's CPU during the load (SQLite's writes, the checkpoints)

    def as_dict(self) -> dict:
        cpu = self.worker_cpu_s + self.database_cpu_s + self.parent_cpu_s
        return {
            "cards": self.cards,
            "events": self.events,
            "seconds": round(self.seconds, 2),
            "cards_per_s": round(self.cards / self.seconds, 1) if self.seconds else None,
            "events_per_s": round(self.events / self.seconds, 1) if self.seconds else None,
            "events_per_card": round(self.events / self.cards, 3) if self.cards else None,
            "checkpoints": self.checkpoints,
            "checkpoint_seconds": round(self.checkpoint_seconds, 2),
            "commands": dict(sorted(self.commands.items())),
            "chunks": self.chunks,
            "cpu_s": {
                "workers": round(self.worker_cpu_s, 1),
                "database": round(self.database_cpu_s, 1),
                "parent": round(self.parent_cpu_s, 1),
            },
            "cpu_ms_per_card": round(cpu * 1000 / self.cards, 3) if self.cards else None,
            # what the CPU cost allows on this many idle cores (the load spread over them)
            "cards_per_s_cpu_bound_per_core": round(self.cards / cpu, 1) if cpu else None,
        }


# -- a chunk's history, decided by the domain --------------------------------------------
class _Chunk:
    """The decided events of a chunk of cards, before positions."""

    def __init__(self) -> None:
        self.events: list[tuple[dict[str, Any], datetime]] = []  # envelope, occurred at (UTC)
        self.states: dict[str, Any] = {}  # card id -> CardState
        self.verifiers: dict[str, dict[Any, Any]] = {}  # card id -> {PinType: Verifier}
        self.secret_versions: dict[str, dict[Any, int]] = {}  # card id -> {PinType: stream version when set}
        self.enrolled_at: dict[str, datetime] = {}
        self.commands: dict[str, int] = {}


def _plan(index: int, rng: random.Random, readers: int) -> list[tuple[str, Any]]:
    """A card's commands: (kind, detail), in order."""
    plan: list[tuple[str, Any]] = [("enroll", None)]
    for _ in range(rng.randint(2, 5)):
        reader = rng.randrange(readers)
        if rng.random() < 0.1:
            plan.append(("verify_wrong", reader))
        plan.append(("verify", reader))
    if rng.random() < 0.01:
        counter = rng.randrange(COUNTERS)
        at = rng.randrange(1, len(plan) + 1)
        lock = [("rr_wrong", counter)] * 3 + ([("unlock", counter)] if rng.random() < 0.7 else [])
        plan[at:at] = lock
    return plan


def _enrolled_pins(pins: Any) -> dict:
    from pinlife.domain.pins import PinType

    return {
        PinType.RESIDENT_REGISTRY: pins.resident_registry,
        PinType.CARD_INFO_INPUT_SUPPORT: pins.card_info_input_support,
        PinType.USER_CERTIFICATE: pins.user_certificate,
        PinType.SIGNATURE: pins.signature,
    }


def decide_chunk(keys: Any, first_card: int, count: int, seed: int, t0: datetime, span: timedelta, readers: int) -> _Chunk:
    """The chunk's commands, interleaved, each decided and its events folded."""
    from pinlife.domain.chain import hashed_envelope
    from pinlife.domain.commands import EnrollCard, UnlockPin, VerifyPin
    from pinlife.domain.decide import decide
    from pinlife.domain.decision import Context
    from pinlife.domain.documents import Applicant, Document, DocumentType
    from pinlife.domain.events import Recorded
    from pinlife.domain.pins import PinType
    from pinlife.domain.policy import Policy
    from pinlife.domain.state import CardState, evolve
    from pinlife.keys.ring import SecretRef
    from pinlife.runtime.ids import new_id

    policy = Policy()
    rng = random.Random(seed * 1_000_003 + first_card)
    plans = {i: _plan(i, rng, readers) for i in range(first_card, first_card + count)}
    order = [i for i, p in plans.items() for _ in p]
    rng.shuffle(order)  # interleaved; each card's commands stay in order (taken front to back below)
    nxt = dict.fromkeys(plans, 0)
    out = _Chunk()
    step = span / max(1, len(order))
    holder_docs = (Document(DocumentType.MY_NUMBER_CARD),)
    card_pins = {i: _enrolled_pins(pins_for(i)) for i in plans}
    for n, i in enumerate(order):
        kind, detail = plans[i][nxt[i]]
        nxt[i] += 1
        cid = card_id(i)
        pins = card_pins[i]
        now = t0 + step * n
        request_id = str(uuid.uuid4())
        cmd: Any
        if kind == "enroll":
            cmd = EnrollCard(request_id, cid, dict(pins))
            channel, terminal = "development", "bench-loader"  # as bench/loader.py enrols
            out.enrolled_at[cid] = now
        elif kind in ("verify", "verify_wrong"):
            right = pins[PinType.USER_CERTIFICATE]
            pin = right if kind == "verify" else wrong_4digit(right)
            cmd = VerifyPin(request_id, cid, PinType.USER_CERTIFICATE, pin)
            channel, terminal = "medical_reader", f"bench-reader-{detail:05d}"
        elif kind == "rr_wrong":
            cmd = VerifyPin(request_id, cid, PinType.RESIDENT_REGISTRY, wrong_4digit(pins[PinType.RESIDENT_REGISTRY]))
            channel, terminal = "ward_office", f"bench-counter-{detail:03d}"
        else:  # unlock
            cmd = UnlockPin(request_id, cid, PinType.RESIDENT_REGISTRY, Applicant.HOLDER, holder_docs, False, None)
            channel, terminal = "ward_office", f"bench-counter-{detail:03d}"
        state = out.states.get(cid) or CardState(cid)
        verifiers = out.verifiers.setdefault(cid, {})

        def matches(pin_type: PinType, pin: str, enrolled: dict = pins) -> bool:
            # The PIN each verifier was made from (keys.make, below), compared
            # as the verifier would compare: the loader knows which PINs are
            # right; it spares a keyed hash per verify (no PIN is ever changed).
            return pin == enrolled[pin_type]

        decision = decide(state, cmd, Context(now, policy, matches, new_id=new_id))
        if decision.error is not None or decision.terminal_events:
            raise RuntimeError(f"the rules refused {kind} on {cid}: {decision.error!r} {decision.terminal_events!r}")
        for e in decision.events:
            version = state.version + 1
            pin_type = getattr(e, "pin_type", None)
            env = hashed_envelope(
                cid,
                version,
                new_id(),
                e.type_name,
                e.schema_version,
                now,
                pin_type.value if pin_type else None,
                channel,
                terminal,
                request_id,
                e.payload(),
                None,
            )
            out.events.append((env, now))
            state = evolve(state, Recorded(e, version, now))
        for pin_type, pin in decision.new_pins.items():
            verifiers[pin_type] = keys.make(SecretRef.pin(cid, pin_type), pin)
            out.secret_versions.setdefault(cid, {})[pin_type] = state.version
        out.states[cid] = state
        out.commands[kind] = out.commands.get(kind, 0) + 1
    return out


class _Rows:
    """A chunk's rows, linked from its first position (hot_sql's column orders)."""

    def __init__(self, chunk: _Chunk, first: int, keys: Any, sql: Any):
        from pinlife.domain.chain import GENESIS_HASH, link_and_leaf
        from pinlife.store.projection import pin_row, state_message

        integrity = keys.integrity
        key_id = integrity.current
        key = integrity.key(key_id)
        bind_time = sql.bind_time
        hashes: dict[str, str] = {}
        self.events: list[tuple] = []
        leaves = bytearray()
        for position, (env, at) in enumerate(chunk.events, first):
            sid = env["card_id"]
            prev = hashes.get(sid, GENESIS_HASH)
            link, leaf = link_and_leaf(key, prev, position, env)
            hashes[sid] = link
            leaves += leaf
            self.events.append(sql.event_row(position, env, at, prev, link, key_id))
        self.leaves = bytes(leaves)
        self.cards, self.pins, self.secrets = [], [], []
        for cid, state in chunk.states.items():
            verifiers = chunk.verifiers[cid]
            mac = integrity.tag(state_message(state, hashes[cid], verifiers))
            self.cards.append(
                (cid, state.version, hashes[cid], state.status.value, state.ward, bind_time(chunk.enrolled_at[cid]), mac)
            )
            self.pins += [pin_row(cid, state, t, bind_time) for t in sorted(state.pins, key=lambda t: t.value)]
            set_at = chunk.secret_versions.get(cid, {})
            self.secrets += [(cid, "pin", t.value, v.key_id, v.digest, set_at[t]) for t, v in verifiers.items()]


# -- workers ------------------------------------------------------------------------------
def _worker(
    spec: BulkSpec, chunks: list[tuple[int, int, int]], t0: datetime, span: timedelta, readers: int, pipe: Connection
) -> None:
    """chunks: (chunk number, first card, cards). Tells the parent each
    chunk's event count, waits for its first position, then writes it."""
    try:
        from sqlalchemy import create_engine

        from pinlife.keys.ring import KeyRing
        from pinlife.store.engine import normalize_url
        from pinlife.store.hot_sql import CARD_COLUMNS, EVENT_COLUMNS, PIN_COLUMNS, SECRET_COLUMNS, HotSql

        keys = KeyRing.load(spec.key_file)
        engine = create_engine(normalize_url(spec.url))
        sql = HotSql(engine.dialect)
        pg = None
        backend = None
        if sql.pg:
            import psycopg

            pg = psycopg.connect(spec.url.replace("postgresql+psycopg://", "postgresql://"))
            backend = pg.execute("SELECT pg_backend_pid()").fetchone()[0]  # its CPU, read from /proc below (same host)
        for number, first_card, count in chunks:
            t = time.perf_counter()
            chunk = decide_chunk(keys, first_card, count, spec.seed, t0 + span * number, span, readers)
            decided = time.perf_counter() - t
            pipe.send(("count", number, len(chunk.events)))
            kind, got, first = pipe.recv()
            assert (kind, got) == ("first", number)
            rows = _Rows(chunk, first, keys, sql)
            stats = {"decide_s": decided, "commands": chunk.commands}
            if pg is not None:
                t = time.perf_counter()
                with pg.cursor() as cur:
                    for table, columns, data in (
                        ("events", EVENT_COLUMNS, rows.events),
                        ("cards", CARD_COLUMNS, rows.cards),
                        ("pin_states", PIN_COLUMNS, rows.pins),
                        ("secrets", SECRET_COLUMNS, rows.secrets),
                    ):
                        with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                            for row in data:
                                copy.write_row(row)
                pg.commit()
                stats["write_s"] = time.perf_counter() - t
                pipe.send(("done", number, rows.leaves, None, stats))
            else:
                pipe.send(("done", number, rows.leaves, (rows.events, rows.cards, rows.pins, rows.secrets), stats))
        cpu = {"worker_cpu_s": time.process_time(), "database_cpu_s": _cpu_seconds(backend) if backend else 0.0}
        if pg is not None:
            pg.close()
        engine.dispose()
        pipe.send(("bye", cpu))
    except BaseException:  # noqa: BLE001 - reported to the parent, which stops the load
        pipe.send(("error", traceback.format_exc()))


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process of this host (0 if it cannot be read)."""
    import os

    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


# -- the parent ---------------------------------------------------------------------------
def bulk_load(spec: BulkSpec) -> BulkReport:
    """Loads spec.cards cards into a migrated, empty store (its log must
    be empty: positions start at 1)."""
    from pinlife.keys.ring import KeyRing
    from pinlife.store.checkpoints import sign_checkpoint
    from pinlife.store.event_store import EventStore
    from pinlife.store.hot_sql import HotSql

    keys = KeyRing.load(spec.key_file)
    store = EventStore(spec.url)
    report = BulkReport(cards=spec.cards)
    started = time.perf_counter()
    parent_cpu = time.process_time()
    sqlite_db = None
    try:
        if store.log.head_position() != 0:
            raise RuntimeError("the bulk loader writes into an empty store only")
        if store.dialect == "sqlite":
            import sqlite3

            sqlite_db = sqlite3.connect(spec.url.removeprefix("sqlite:///"), isolation_level=None)
            sqlite_db.execute("PRAGMA synchronous=OFF")  # a bulk load: made durable at its end (below)
            sql = HotSql(store.writer.dialect)
        readers = max(100, spec.cards // READER_CARDS)
        chunks = [(n, spec.start + s, min(spec.chunk, spec.cards - s)) for n, s in enumerate(range(0, spec.cards, spec.chunk))]
        report.chunks = len(chunks)
        span = timedelta(days=spec.days) / max(1, len(chunks))
        t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=spec.days)
        workers = max(1, min(spec.workers, len(chunks)))
        ctx = multiprocessing.get_context("spawn")
        pipes, procs, owner = [], [], {}
        for w in range(workers):
            mine = chunks[w::workers]
            for c in mine:
                owner[c[0]] = w
            parent_end, child_end = ctx.Pipe()
            p = ctx.Process(target=_worker, args=(spec, mine, t0, span, readers, child_end), daemon=True)
            p.start()
            child_end.close()
            pipes.append(parent_end)
            procs.append(p)

        counts: dict[int, int] = {}
        firsts: dict[int, int] = {}
        done: dict[int, bytes] = {}
        next_first, next_position = 0, 1  # the next chunk to place, and its first position
        next_done = 0  # the next chunk whose leaves are taken, in order
        committed = 0  # positions 1..committed written (in order) and committed
        leaves = bytearray()  # leaf hashes of positions signed+1..committed
        signed = 0
        alive = set(range(workers))
        last_note = time.perf_counter()
        pending_sqlite = 0

        def known(positions: range) -> list[bytes] | None:
            if positions.start != signed + 1 or positions.stop - 1 > committed:
                return None
            return [bytes(leaves[32 * i : 32 * i + 32]) for i in range(len(positions))]

        def sign(upto: int) -> None:
            nonlocal signed, leaves
            t = time.perf_counter()
            with store.writer.begin() as conn:
                conn.exec_driver_sql(
                    "UPDATE log_head SET position = %s WHERE id = 1"
                    if store.dialect == "postgresql"
                    else "UPDATE log_head SET position = ? WHERE id = 1",
                    (upto,),
                )
            cp = sign_checkpoint(store, keys, datetime.now(UTC), known, upto=upto)
            if cp is None or cp.tree_size != upto:
                raise RuntimeError(f"checkpoint at {upto} not signed ({cp})")
            del leaves[: 32 * (upto - signed)]
            signed = upto
            report.checkpoints += 1
            report.checkpoint_seconds += time.perf_counter() - t

        while alive:
            for conn in wait([pipes[w] for w in alive]):
                w = pipes.index(conn)
                try:
                    msg = conn.recv()
                except EOFError:
                    raise RuntimeError(f"bulk worker {w} died") from None
                if msg[0] == "error":
                    raise RuntimeError(f"bulk worker {w} failed:\n{msg[1]}")
                if msg[0] == "bye":
                    alive.discard(w)
                    report.worker_cpu_s += msg[1]["worker_cpu_s"]
                    report.database_cpu_s += msg[1]["database_cpu_s"]
                elif msg[0] == "count":
                    counts[msg[1]] = msg[2]
                elif msg[0] == "done":
                    _, number, chunk_leaves, rows, stats = msg
                    if rows is not None:  # SQLite: the parent writes
                        assert sqlite_db is not None
                        if pending_sqlite == 0:
                            sqlite_db.execute("BEGIN")
                        for statement, data in zip(
                            (sql.insert_events, sql.insert_cards, sql.upsert_pins, sql.upsert_secrets), rows
                        ):
                            sqlite_db.executemany(statement, data)
                        pending_sqlite += 1
                    done[number] = chunk_leaves
                    for k, v in stats["commands"].items():
                        report.commands[k] = report.commands.get(k, 0) + v
            while next_first in counts:  # place chunks in order: first positions
                firsts[next_first] = next_position
                pipes[owner[next_first]].send(("first", next_first, next_position))
                next_position += counts[next_first]
                next_first += 1
            if sqlite_db is not None and pending_sqlite >= 10:
                sqlite_db.execute("COMMIT")
                pending_sqlite = 0
            while next_done in done and (sqlite_db is None or pending_sqlite == 0):
                leaves += done.pop(next_done)
                committed = firsts[next_done] + counts[next_done] - 1
                next_done += 1
                if spec.checkpoints and committed - signed >= spec.checkpoint_every:
                    sign(committed)
                elif not spec.checkpoints:
                    leaves.clear()
            if time.perf_counter() - last_note > 10:
                last_note = time.perf_counter()
                log(
                    f"  bulk load: {next_done * spec.chunk:,}/{spec.cards:,} cards, {committed:,} events in {last_note - started:.0f} s"
                )
            if sqlite_db is not None and not alive and pending_sqlite:
                sqlite_db.execute("COMMIT")
                pending_sqlite = 0
                while next_done in done:
                    leaves += done.pop(next_done)
                    committed = firsts[next_done] + counts[next_done] - 1
                    next_done += 1
        for p in procs:
            p.join(30)
        if next_done != len(chunks):
            raise RuntimeError(f"only {next_done} of {len(chunks)} chunks were written")
        report.events = committed
        if spec.checkpoints and committed > signed:
            sign(committed)
        with store.writer.begin() as conn:
            p = "%s" if store.dialect == "postgresql" else "?"
            conn.exec_driver_sql(f"UPDATE log_head SET position = {p} WHERE id = 1", (committed,))
        if sqlite_db is not None:
            sqlite_db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        report.seconds = time.perf_counter() - started
        report.parent_cpu_s = time.process_time() - parent_cpu
        return report
    finally:
        if sqlite_db is not None:
            sqlite_db.close()
        store.close()
