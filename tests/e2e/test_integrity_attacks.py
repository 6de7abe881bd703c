"""Attacks on the stored history by someone with power over the database
(docs/security.md, "Against whom"), through a real gRPC server and the
operator's `pinlife check [--checkpoint FILE]` / `pinlife checkpoint` with
the server's environment, on SQLite and PostgreSQL. The commands run in this
process (harness.cli), one of each in its own (harness.cli_process): exit
code, report and one-line refusal as the operator gets them.

The attacker is the database's superuser or owner: on PostgreSQL a session
in `session_replication_role = replica` (no trigger fires), on SQLite the
append-only triggers dropped. Without the keys they cannot make a keyed link
or a card MAC; with them (the last attack) only the lawful-history check and
a checkpoint kept elsewhere still stand.

What tests/store/test_tamper.py already covers is not repeated here (one
event changed in place, rehashed in place with or without the key, one
event deleted); neither is the restricted role's refusal
(tests/e2e/test_restricted_role.py)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import uuid
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import grpc
import pytest
from sqlalchemy import delete, func, insert, select, update

from pinlife.domain.chain import GENESIS_HASH, hashed_envelope, legacy_hash, link_hash
from pinlife.domain.log import LoggedEvent
from pinlife.domain.pins import PinType
from pinlife.keys.ring import SecretRef
from pinlife.store.event_store import EventStore
from pinlife.store.projection import state_message
from pinlife.store.tables import cards, checkpoints, events, log_head, pin_states, requests, secrets
from pinlife.v1 import common_pb2 as pb
from tests.conftest import make_key_file
from tests.e2e.harness import Client, ThreadedServer, cli, cli_process
from tests.keys import INTEGRITY, ring

USER, SIGN = pb.PIN_TYPE_USER_CERTIFICATE, pb.PIN_TYPE_SIGNATURE
PINS = {USER: "4821", SIGN: "KX73PQ"}
WRONG = {USER: "0000", SIGN: "ZZZ999"}
USER_VALUE = PinType.USER_CERTIFICATE.value


# -- the service, its operator and the attacker ----------------------------------------
class Service:
    """A real server (ThreadedServer) with a key file holding the same keys,
    for the CLI; a store handle for the attacker and for inspection."""

    def __init__(self, db_url: str, tmp_path: Path):
        verifier = os.urandom(32)
        self.url, self.tmp_path = db_url, tmp_path
        self.keys = ring("test-1", {"test-1": verifier})
        self.key_file = make_key_file(tmp_path / "keys.json", {"test-1": verifier}, "test-1")
        self.server = ThreadedServer(db_url, self.keys)
        self.client = Client(self.server.target)
        self.store = EventStore(db_url)
        self._running = True

    def stop(self) -> None:
        """Stop the server (it signs a last checkpoint as it leaves)."""
        if self._running:
            self._running = False
            self.client.close()
            self.server.close()

    def close(self) -> None:
        self.stop()
        self.store.close()

    def env(self) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("PINLIFE_")}
        return {
            **base,
            "PINLIFE_ENV": "test",
            "PINLIFE_DATABASE_URL": self.url,
            "PINLIFE_KEY_FILE": str(self.key_file),
            "PINLIFE_LOG_FORMAT": "json",
            "PINLIFE_WRITER": "thread",
        }

    def cli(self, *args: str, process: bool = False) -> subprocess.CompletedProcess:
        """`pinlife ARGS` in this process, or in its own (process=True)."""
        return (cli_process if process else cli)(*args, env=self.env(), timeout=120)

    def check(self, *checkpoint_files: Path, process: bool = False) -> tuple[int, dict]:
        """`pinlife check [--checkpoint FILE ...]`: its exit code and report."""
        args = [a for f in checkpoint_files for a in ("--checkpoint", str(f))]
        done = self.cli("check", *args, process=process)
        assert done.returncode in (0, 1), done.stderr
        report = json.loads(done.stdout)
        assert report["intact"] is (done.returncode == 0)
        return done.returncode, report

    def checkpoint(self, name: str) -> Path:
        """`pinlife checkpoint`, its note saved to a file outside the store."""
        done = self.cli("checkpoint")
        assert done.returncode == 0, done.stderr
        assert "verifier key: " in done.stderr
        path = self.tmp_path / name
        path.write_text(done.stdout)
        return path

    def count(self) -> int:
        with self.store.reader.begin() as conn:
            return conn.execute(select(func.count()).select_from(events)).scalar_one()

    def event_at(self, position: int) -> LoggedEvent:
        (e,) = self.store.log.read_all(position - 1, 1)
        assert e.position == position
        return e


@pytest.fixture
def svc(db_url, tmp_path):
    s = Service(db_url, tmp_path)
    yield s
    s.close()


@contextmanager
def as_attacker(store: EventStore):
    """A transaction in which the append-only triggers do not fire: a
    superuser's replica session on PostgreSQL; on SQLite, the triggers dropped."""
    with store.writer.begin() as conn:
        if store.dialect == "postgresql":
            conn.exec_driver_sql("SET LOCAL session_replication_role = replica")
        else:
            conn.exec_driver_sql("DROP TRIGGER IF EXISTS events_no_update")
            conn.exec_driver_sql("DROP TRIGGER IF EXISTS events_no_delete")
        yield conn


def wipe_stored_checkpoints(conn) -> None:
    """The checkpoints the server keeps in the store are the attacker's to delete."""
    conn.execute(delete(checkpoints))


def rewrite_log(conn, kept: list[LoggedEvent], relink) -> int:
    """Replace the log with `kept`, renumbered 1..n, each stream's versions
    1..k; an event whose position, version or previous link changed is
    relinked by relink(prev_hash, position, envelope) -> (hash, key_id). The
    card heads and the log head follow. Returns the first position rewritten."""
    rows, last = [], {}
    first_changed = None
    for position, e in enumerate(kept, 1):
        prev_hash, version = last.get(e.stream_id, (GENESIS_HASH, 0))
        moved = dataclasses.replace(e, position=position, version=version + 1, prev_hash=prev_hash)
        if (moved.position, moved.version, moved.prev_hash) != (e.position, e.version, e.prev_hash):
            first_changed = first_changed or position
            h, key_id = relink(prev_hash, position, moved.envelope())
            moved = dataclasses.replace(moved, hash=h, key_id=key_id)
        last[e.stream_id] = (moved.hash, moved.version)
        rows.append(dataclasses.asdict(moved))
    conn.execute(delete(events))
    conn.execute(insert(events), rows)
    for stream_id, (h, version) in last.items():
        conn.execute(update(cards).where(cards.c.card_id == stream_id).values(version=version, last_hash=h))
    conn.execute(update(log_head).where(log_head.c.id == 1).values(position=len(kept)))
    assert first_changed is not None
    return first_changed


def lock(client: Client, card: str) -> None:
    for _ in range(2):
        assert client.verify(card, USER, WRONG[USER]).check.result == pb.CHECK_RESULT_WRONG_PIN
    last = client.verify(card, USER, WRONG[USER]).check
    assert (last.result, last.locked_now) == (pb.CHECK_RESULT_LOCKED, True)


def interleaved_history(c: Client) -> None:
    """Three cards whose events interleave; card-A's user PIN ends locked."""
    c.enroll("card-A", PINS)
    c.enroll("card-B", PINS)
    c.verify("card-B", USER, PINS[USER])
    c.verify("card-A", USER, WRONG[USER])
    c.enroll("card-C", PINS)
    c.verify("card-A", USER, WRONG[USER])
    c.verify("card-C", SIGN, WRONG[SIGN])
    c.verify("card-A", USER, WRONG[USER])  # the third: failure and lock
    c.verify("card-B", SIGN, PINS[SIGN])
    c.verify("card-C", USER, PINS[USER])


# -- a kept answer edited: never replayed -----------------------------------------------------
@pytest.mark.parametrize("forgery", ["outcome", "outcome and mac"])
def test_a_kept_answer_edited_in_the_store_is_never_replayed(svc, forgery):
    """A wrong PIN's kept answer turned into a correct one (copied from
    another request of the card, with or without its MAC): the terminal's
    retry of the wrong PIN gets DATA_LOSS, not a success."""
    c = svc.client
    c.enroll("card-A", PINS)
    assert c.verify("card-A", USER, PINS[USER], request_id="request-ok").check.result == pb.CHECK_RESULT_OK
    assert c.verify("card-A", USER, WRONG[USER], request_id="request-1").check.result == pb.CHECK_RESULT_WRONG_PIN
    replayed = c.verify("card-A", USER, WRONG[USER], request_id="request-1").check  # a retry: the kept answer
    assert replayed.result == pb.CHECK_RESULT_WRONG_PIN

    with svc.store.writer.begin() as conn:
        ok = conn.execute(select(requests).where(requests.c.request_id == "request-ok")).one()
        forged = {"outcome": ok.outcome} | ({"mac": ok.mac} if forgery == "outcome and mac" else {})
        assert conn.execute(update(requests).where(requests.c.request_id == "request-1").values(**forged)).rowcount == 1

    before = svc.count()
    with pytest.raises(grpc.RpcError) as err:
        c.verify("card-A", USER, WRONG[USER], request_id="request-1")
    assert err.value.code() == grpc.StatusCode.DATA_LOSS
    assert "card-A" in err.value.details() and "request-1" in err.value.details()
    assert svc.count() == before
    assert c.verify("card-A", USER, PINS[USER], request_id="request-ok").check.result == pb.CHECK_RESULT_OK  # untouched


# -- a. the projection edited: DATA_LOSS, nothing appended, the card named ------------------
def test_a_lock_undone_in_the_projection_is_never_acted_on_and_check_names_the_card(svc):
    c = svc.client
    c.enroll("card-A", PINS)
    c.enroll("card-B", PINS)
    lock(c, "card-A")
    rc, report = svc.check()
    assert rc == 0, report

    # A plain UPDATE (the service's own role may write pin_states): unlocked, no failures, three tries.
    with svc.store.writer.begin() as conn:
        n = conn.execute(
            update(pin_states)
            .where(pin_states.c.card_id == "card-A", pin_states.c.pin_type == USER_VALUE)
            .values(status="active", consecutive_failures=0, remaining_tries=3, locked_at=None)
        ).rowcount
    assert n == 1

    before, stream = svc.count(), svc.store.log.stream("card-A")
    assert stream[-1].event_type == "PinLocked"
    with pytest.raises(grpc.RpcError) as err:
        c.verify("card-A", USER, PINS[USER])
    assert err.value.code() == grpc.StatusCode.DATA_LOSS
    assert "card-A" in err.value.details() and "integrity" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:  # a status read is refused too: it would show the forged state
        c.status("card-A", USER)
    assert err.value.code() == grpc.StatusCode.DATA_LOSS
    with pytest.raises(grpc.RpcError) as err:  # and a change with the right PIN
        c.change("card-A", USER, PINS[USER], "1357")
    assert err.value.code() == grpc.StatusCode.DATA_LOSS
    assert svc.count() == before
    assert svc.store.log.stream("card-A") == stream

    # the other card is served as before
    assert c.verify("card-B", USER, PINS[USER]).check.result == pb.CHECK_RESULT_OK
    assert svc.count() == before + 1

    svc.stop()
    rc, report = svc.check()
    assert rc == 1
    assert report["cards_failing_mac"] == ["card-A"] and report["cards_failing_mac_count"] == 1
    assert report["projection_mismatches"] == ["card-A"]
    assert report["first_broken_link"] is None  # the log itself is untouched


# -- b. history rewritten without the key ----------------------------------------------------
RELINKS = {
    # plain SHA-256, the key id kept
    "sha256": lambda prev, position, env: (legacy_hash(prev, env), INTEGRITY.current),
    # plain SHA-256 passed off as a link made before keyed chains
    "unkeyed": lambda prev, position, env: (legacy_hash(prev, env), None),
    # an HMAC under a guessed key, the key id kept
    "wrong-key": lambda prev, position, env: (link_hash(b"g" * 32, prev, position, env), INTEGRITY.current),
}
REASONS = {
    "sha256": "the keyed link does not match the event's content and position",
    "unkeyed": "the link is not keyed",
    "wrong-key": "the keyed link does not match the event's content and position",
}


@pytest.mark.parametrize("relink", sorted(RELINKS))
def test_a_cards_failures_and_lock_cut_out_and_the_log_renumbered_break_the_first_rewritten_link(svc, relink):
    c = svc.client
    c.enroll("card-A", PINS)
    with svc.store.reader.begin() as conn:  # the attacker's backup of card-A's authentic state, before its failures
        backup_card = conn.execute(select(cards).where(cards.c.card_id == "card-A")).one()._asdict()
        backup_pins = [r._asdict() for r in conn.execute(select(pin_states).where(pin_states.c.card_id == "card-A"))]
    c.enroll("card-B", PINS)
    c.verify("card-B", USER, PINS[USER])
    lock(c, "card-A")
    c.enroll("card-C", PINS)
    c.verify("card-B", SIGN, WRONG[SIGN])
    c.verify("card-C", USER, PINS[USER])
    svc.stop()

    log = list(svc.store.log.all_events())
    cut = [e for e in log if e.stream_id == "card-A" and e.event_type in ("PinVerificationFailed", "PinLocked")]
    assert len(cut) == 4
    kept = [e for e in log if e not in cut]
    with as_attacker(svc.store) as conn:
        first = rewrite_log(conn, kept, RELINKS[relink])
        # card-A back to its authentic state before the failures (its MAC checks)
        conn.execute(update(cards).where(cards.c.card_id == "card-A").values(**backup_card))
        conn.execute(delete(pin_states).where(pin_states.c.card_id == "card-A"))
        conn.execute(insert(pin_states), backup_pins)
        wipe_stored_checkpoints(conn)
    assert first == cut[0].position
    now_there = svc.event_at(first)
    assert now_there.stream_id != "card-A"
    assert [e.position for e in svc.store.log.all_events()] == list(range(1, len(kept) + 1))  # no gap left

    rc, report = svc.check()
    assert rc == 1
    broken = report["first_broken_link"]
    where = (broken["stream_id"], broken["version"], broken["position"])
    assert where == (now_there.stream_id, now_there.version, first)
    assert broken["reason"].startswith(REASONS[relink]), broken
    assert "card-A" not in report["cards_failing_mac"]  # the rollback itself passes the MAC: the links catch it


# -- c. a whole card deleted, nothing renumbered ----------------------------------------------
def test_a_whole_card_deleted_leaves_a_gap_in_positions(svc):
    interleaved_history(svc.client)
    svc.stop()
    gone = svc.store.log.stream("card-B")
    first_gone = gone[0].position
    assert first_gone < svc.store.log.head_position() and gone[-1].position < svc.store.log.head_position()
    with as_attacker(svc.store) as conn:
        conn.execute(delete(events).where(events.c.stream_id == "card-B"))
        for table in (cards, pin_states, secrets):
            conn.execute(delete(table).where(table.c.card_id == "card-B"))
        wipe_stored_checkpoints(conn)
    next_event = svc.store.log.read_all(first_gone, 1)[0]

    rc, report = svc.check()
    assert rc == 1
    assert report["first_broken_link"] == {
        "stream_id": next_event.stream_id,
        "version": next_event.version,
        "position": first_gone,
        "reason": f"position {first_gone} is missing from the log",
    }
    # every trace of the card is gone: only the positions tell
    assert report["cards_failing_mac"] == [] and report["projection_mismatches"] == [] and report["cards"] == 2


# -- d. two events of different cards swapped --------------------------------------------------
def test_two_adjacent_events_of_different_cards_swapped_are_detected(svc):
    interleaved_history(svc.client)
    svc.stop()
    log = list(svc.store.log.all_events())
    # Adjacent events of two cards, neither a stream's first: each stream's own
    # order, versions and previous links are unchanged by the swap.
    p = next(e.position for e, f in zip(log, log[1:]) if e.stream_id != f.stream_id and e.version > 1 and f.version > 1)
    a, b = svc.event_at(p), svc.event_at(p + 1)
    with as_attacker(svc.store) as conn:
        conn.execute(update(events).where(events.c.position == p).values(position=-1))
        conn.execute(update(events).where(events.c.position == p + 1).values(position=p))
        conn.execute(update(events).where(events.c.position == -1).values(position=p + 1))
        wipe_stored_checkpoints(conn)
    assert (svc.event_at(p).event_id, svc.event_at(p + 1).event_id) == (b.event_id, a.event_id)

    rc, report = svc.check()
    assert rc == 1
    assert report["first_broken_link"] == {
        "stream_id": b.stream_id,
        "version": b.version,
        "position": p,
        "reason": "the keyed link does not match the event's content and position",
    }
    assert report["first_unlawful"] is None  # each stream's history is still lawful: the positions tell


# -- e. truncation, caught by a checkpoint kept outside the store --------------------------------
def test_a_log_cut_inside_a_kept_checkpoint_fails_check_against_that_checkpoint(svc):
    c = svc.client
    c.enroll("card-E1", PINS)
    c.verify("card-E1", USER, PINS[USER])
    c.enroll("card-E2", PINS)
    c.verify("card-E2", SIGN, PINS[SIGN])
    c.verify("card-E1", SIGN, WRONG[SIGN])
    kept = svc.checkpoint("checkpoint.note")
    size = svc.store.log.head_position()
    assert kept.read_text().splitlines()[1] == str(size)
    c.verify("card-E2", USER, PINS[USER])
    c.verify("card-E1", USER, PINS[USER])
    svc.stop()
    rc, report = svc.check(kept)
    assert rc == 0, report

    cut_after = size - 2
    with as_attacker(svc.store) as conn:  # the tail deleted, nothing re-hashed
        conn.execute(delete(events).where(events.c.position > cut_after))
        wipe_stored_checkpoints(conn)

    rc, report = svc.check(kept)
    assert rc == 1
    assert report["supplied_checkpoint_problem"] == {
        "tree_size": size,
        "reason": f"the log ends at position {cut_after}, before {size}",
    }


def test_a_log_truncated_to_an_exact_prefix_is_caught_only_by_a_kept_checkpoint(svc):
    """Whole streams cut from the end, log head lowered: every link, head,
    MAC and position of what is left is authentic."""
    c = svc.client
    c.enroll("card-E1", PINS)
    c.verify("card-E1", USER, PINS[USER])
    c.verify("card-E1", SIGN, WRONG[SIGN])
    prefix = svc.store.log.head_position()
    c.enroll("card-E2", PINS)
    c.verify("card-E2", USER, PINS[USER])
    kept = svc.checkpoint("checkpoint.note")
    size = svc.store.log.head_position()
    c.enroll("card-E3", PINS)
    c.verify("card-E2", SIGN, PINS[SIGN])
    svc.stop()
    assert prefix < size < svc.store.log.head_position()

    with as_attacker(svc.store) as conn:
        conn.execute(delete(events).where(events.c.position > prefix))
        for table in (cards, pin_states, secrets):
            conn.execute(delete(table).where(table.c.card_id.in_(["card-E2", "card-E3"])))
        conn.execute(update(log_head).where(log_head.c.id == 1).values(position=prefix))
        wipe_stored_checkpoints(conn)

    rc, report = svc.check()
    assert rc == 0, report  # nothing in the store itself shows it: this is what the checkpoint is for
    rc, report = svc.check(kept, process=True)  # as the operator runs it: exit 1 and the report
    assert rc == 1
    assert report["supplied_checkpoint_problem"] == {
        "tree_size": size,
        "reason": f"the log ends at position {prefix}, before {size}",
    }


# -- f. with the key: a forged PinVerified after a lock -----------------------------------------
def forge_verified_after_lock(store: EventStore, card: str) -> LoggedEvent:
    """Append a PinVerified of the card's locked user PIN with a correct
    keyed link, and write the projection it folds to with a correct MAC.
    Only INSERTs and projection writes: the triggers are not in the way."""
    stream = store.log.stream(card)
    locked = stream[-1]
    assert locked.event_type == "PinLocked"
    model = next(e for e in store.log.all_events() if e.event_type == "PinVerified")  # an authentic one to copy
    position = store.log.head_position() + 1
    env = hashed_envelope(
        card,
        locked.version + 1,
        str(uuid.uuid4()),
        "PinVerified",
        model.schema_version,
        locked.occurred_at + timedelta(seconds=1),
        USER_VALUE,
        locked.channel,
        locked.terminal_id,
        f"forged-{uuid.uuid4()}",
        model.payload,
    )
    h = link_hash(INTEGRITY.key(INTEGRITY.current), locked.hash, position, env)
    with store.writer.begin() as conn:
        conn.execute(
            insert(events).values(
                position=position,
                stream_id=card,
                stream_kind=locked.stream_kind,
                version=env["version"],
                event_id=env["event_id"],
                event_type="PinVerified",
                schema_version=model.schema_version,
                occurred_at=locked.occurred_at + timedelta(seconds=1),
                pin_type=USER_VALUE,
                channel=locked.channel,
                terminal_id=locked.terminal_id,
                request_id=env["request_id"],
                payload=model.payload,
                prev_hash=locked.hash,
                hash=h,
                key_id=INTEGRITY.current,
            )
        )
        conn.execute(update(log_head).where(log_head.c.id == 1).values(position=position))
    state = store.cards.rebuild()[card]
    assert not state.pins[PinType.USER_CERTIFICATE].locked
    verifiers = {t: store.cards.secret(SecretRef.pin(card, t)) for t in state.pins}
    mac = INTEGRITY.tag(state_message(state, h, verifiers))
    with store.writer.begin() as conn:
        conn.execute(
            update(pin_states)
            .where(pin_states.c.card_id == card, pin_states.c.pin_type == USER_VALUE)
            .values(status="active", consecutive_failures=0, remaining_tries=3, locked_at=None, last_version=state.version)
        )
        conn.execute(update(cards).where(cards.c.card_id == card).values(version=state.version, last_hash=h, mac=mac))
    return store.log.stream(card)[-1]


def test_with_the_key_a_forged_verify_after_a_lock_is_named_by_the_lawful_history_check(svc):
    c = svc.client
    c.enroll("card-A", PINS)
    c.enroll("card-B", PINS)
    c.verify("card-A", USER, PINS[USER])
    lock(c, "card-A")
    c.verify("card-B", USER, PINS[USER])

    forged = forge_verified_after_lock(svc.store, "card-A")
    assert forged.position == svc.store.log.head_position()
    # The forgery authenticates: the service acts on it (a known limit against the key holder).
    assert c.verify("card-A", USER, PINS[USER]).check.result == pb.CHECK_RESULT_OK
    svc.stop()

    rc, report = svc.check()
    assert rc == 1
    unlawful = report["first_unlawful"]
    named = (unlawful["stream_id"], unlawful["version"], unlawful["event_type"])
    assert named == ("card-A", forged.version, "PinVerified")
    assert svc.store.log.stream("card-A")[forged.version - 1].position == forged.position
    assert "the user_certificate PIN is locked" in unlawful["reason"]
    # links, MACs, projection and the stored checkpoints all authenticate: only the rules tell
    assert report["first_broken_link"] is None
    assert report["cards_failing_mac"] == [] and report["projection_mismatches"] == []
    assert report["checkpoint_problem"] is None


# -- g. the stored frontier forged: check says so, and signing refuses in one line -----------------
def test_a_forged_frontier_fails_check_and_pinlife_checkpoint_signs_on_without_it(svc):
    c = svc.client
    c.enroll("card-G", PINS)
    svc.checkpoint("first.note")
    c.verify("card-G", USER, PINS[USER])
    svc.stop()
    first = int(svc.tmp_path.joinpath("first.note").read_text().splitlines()[1])
    head = svc.store.log.head_position()
    assert first < head
    with as_attacker(svc.store) as conn:  # later checkpoints gone, the first one's frontier MAC forged
        conn.execute(delete(checkpoints).where(checkpoints.c.tree_size > first))
        conn.execute(update(checkpoints).where(checkpoints.c.tree_size == first).values(mac="00" * 32))

    rc, report = svc.check()
    assert rc == 1
    assert report["checkpoint_problem"]["tree_size"] == first
    assert "frontier fails its MAC" in report["checkpoint_problem"]["reason"]

    done = svc.cli("checkpoint", process=True)  # as the operator runs it: a forged row never stops signing
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "integrity_violation" in done.stderr
    assert done.stdout.splitlines()[1] == str(head)  # the whole log, signed from scratch
