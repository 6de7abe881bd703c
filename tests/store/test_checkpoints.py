"""Signed checkpoints as the store keeps them (service/store/checkpoints.py),
on SQLite and PostgreSQL: the Merkle frontier stored with each checkpoint
and extended from it is the RFC 6962 tree of the log's leaves; a frontier
edited in the database is never extended (nothing is signed); a stored or
supplied checkpoint note altered after signing is reported by the check.
(The pure Merkle tree and notes: tests/unit/test_merkle.py, test_notes.py;
truncation against a kept checkpoint through the CLI:
tests/e2e/test_integrity_attacks.py.)"""

from __future__ import annotations

import base64
import hashlib
import json
import threading

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select, update

from pinlife.app.batch import ThreadRunner
from pinlife.domain.chain import leaf_data, link_hash
from pinlife.domain.merkle import Frontier
from pinlife.keys.notes import NoteSigner, open_note, parse_checkpoint
from pinlife.keys.ring import IntegrityKeys, SecretRef
from pinlife.store import checkpoints
from pinlife.store.check import check_store
from pinlife.store.projection import state_message
from pinlife.store.tables import cards, events
from pinlife.store.tables import checkpoints as checkpoints_table
from tests.keys import CHECKPOINT, INTEGRITY
from tests.store.helpers import CORRECT, COUNTER, USER, enroll, run_ok, verify

CARD = "card-M"


def disable_append_only(store) -> None:
    """What the database's owner can do: PostgreSQL's triggers disabled, SQLite's dropped."""
    with store.writer.begin() as conn:
        if store.dialect == "postgresql":
            conn.exec_driver_sql("ALTER TABLE events DISABLE TRIGGER USER")
        else:
            conn.exec_driver_sql("DROP TRIGGER events_no_update")
            conn.exec_driver_sql("DROP TRIGGER events_no_delete")


# -- an RFC 6962 Merkle tree hash, written here from the RFC (not the product's) --------
def _mth(hashes: list[bytes]) -> bytes:
    if not hashes:
        return hashlib.sha256(b"").digest()
    if len(hashes) == 1:
        return hashes[0]
    k = 1 << ((len(hashes) - 1).bit_length() - 1)
    return hashlib.sha256(b"\x01" + _mth(hashes[:k]) + _mth(hashes[k:])).digest()


def leaf_hashes(store, upto: int | None = None) -> list[bytes]:
    """SHA-256(0x00 || leaf) of each stored event, in position order."""
    out = [hashlib.sha256(b"\x00" + leaf_data(e.position, e.envelope())).digest() for e in store.log.all_events()]
    assert len(out) == store.log.head_position()
    return out if upto is None else out[:upto]


def subtree_roots(hashes: list[bytes]) -> list[bytes]:
    """The roots of the perfect subtrees that make up the tree, left to right."""
    roots, start = [], 0
    for bit in reversed(range(len(hashes).bit_length())):
        if len(hashes) >> bit & 1:
            roots.append(_mth(hashes[start : start + (1 << bit)]))
            start += 1 << bit
    return roots


def grow_to(writer, store, n: int) -> None:
    """Append events (a card's enrolment, then correct verifies) until the log holds n."""
    if store.log.head_position() == 0:
        run_ok(writer, enroll(CARD))
    while (head := store.log.head_position()) < n:
        run_ok(writer, *(verify(CARD, USER, CORRECT[USER]) for _ in range(min(250, n - head))))
    assert store.log.head_position() == n


def stored_row(store, tree_size: int):
    with store.reader.begin() as conn:
        return conn.execute(select(checkpoints_table).where(checkpoints_table.c.tree_size == tree_size)).one()


# -- the incremental frontier is the from-scratch tree ------------------------------------
SCHEDULES = {
    "step by step": [1, 2, 3, 4, 5, 6, 7, 8, 9, 15, 16, 17, 31, 32, 33, 1000, 1024, 1025],
    "once": [1025],
    "in ones then a long run": [1, 2, 3, 7, 8, 9, 1023],
}


@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
def test_each_stored_checkpoint_is_the_rfc6962_tree_of_the_logs_leaves(store, writer, keys, clock, schedule):
    vkey = checkpoints.public_verifier_key(keys)
    for n in SCHEDULES[schedule]:
        grow_to(writer, store, n)
        signed = checkpoints.sign_checkpoint(store, keys, clock())
        assert signed is not None and signed.tree_size == n
        hashes = leaf_hashes(store)
        root = _mth(hashes)
        assert signed.root_hash == root.hex(), n
        assert checkpoints.latest(store) == signed
        row = stored_row(store, n)
        assert row.root_hash == root.hex()
        frontier = json.loads(row.frontier)
        assert frontier == {"size": n, "hashes": [h.hex() for h in subtree_roots(hashes)]}, n
        assert INTEGRITY.checks(row.mac, checkpoints.FRONTIER_LABEL + row.frontier.encode())
        body, signers = open_note(row.note, [vkey])
        assert signers == [CHECKPOINT.origin]
        assert tuple(parse_checkpoint(body)) == (CHECKPOINT.origin, n, root, ())
        assert checkpoints.sign_checkpoint(store, keys, clock()) is None  # nothing appended since
    assert [c.tree_size for c in checkpoints.stored(store)] == SCHEDULES[schedule]
    assert checkpoints.check_stored(store, keys) is None
    report = check_store(store, keys)
    assert report.intact and report.stored_checkpoints == len(SCHEDULES[schedule])


# -- a forged frontier is never extended ----------------------------------------------------
def _other_tree(store, row) -> str:
    """The frontier of a tree of the same size with one leaf changed."""
    leaves = [leaf_data(e.position, e.envelope()) for e in store.log.all_events()][: row.tree_size]
    leaves[-1] = leaves[-1] + b" "
    return Frontier().extend(leaves).to_json()


def _hash_replaced(store, row) -> dict:
    doc = json.loads(row.frontier)
    doc["hashes"][0] = "ab" * 32
    return {"frontier": json.dumps(doc, separators=(",", ":"))}


GUESSED = IntegrityKeys(INTEGRITY.current, {INTEGRITY.current: b"g" * 32})
FORGERIES = {
    "a hash replaced": _hash_replaced,
    "another tree's frontier": lambda store, row: {"frontier": _other_tree(store, row)},
    "re-MACed under a guessed key": lambda store, row: {
        "frontier": (f := _other_tree(store, row)),
        "mac": GUESSED.tag(checkpoints.FRONTIER_LABEL + f.encode()),
    },
    "the MAC removed": lambda store, row: {"mac": ""},
    "an older checkpoint's frontier and MAC": lambda store, row: {
        k: getattr(stored_row(store, 3), k) for k in ("frontier", "mac")
    },
}


@pytest.mark.parametrize("forgery", sorted(FORGERIES))
def test_a_forged_frontier_is_never_extended_and_signing_goes_on_from_the_one_before(store, writer, keys, clock, forgery):
    """A row someone without the keys edited or inserted never stops
    signing (on any instance): it is skipped, the next checkpoint extends
    the authentic one before it, and the check names the forged row."""
    grow_to(writer, store, 3)
    checkpoints.sign_checkpoint(store, keys, clock())
    grow_to(writer, store, 7)
    checkpoints.sign_checkpoint(store, keys, clock())
    make = FORGERIES[forgery]
    values = make(store, stored_row(store, 7))
    with store.writer.begin() as conn:
        n = conn.execute(update(checkpoints_table).where(checkpoints_table.c.tree_size == 7).values(**values)).rowcount
    assert n == 1

    grow_to(writer, store, 12)  # the log goes on growing
    signed = checkpoints.sign_checkpoint(store, keys, clock())
    assert signed is not None and signed.tree_size == 12
    assert signed.root_hash == _mth(leaf_hashes(store)).hex()  # the log's own tree, not one from the forged frontier
    assert checkpoints.signed_size(store, keys) == 12
    problem = checkpoints.check_stored(store, keys)
    assert problem is not None and problem.tree_size == 7, problem


# -- altered checkpoint notes are reported --------------------------------------------------
def _swap_line(note: str, index: int, new: str) -> str:
    lines = note.split("\n")
    lines[index] = new
    return "\n".join(lines)


def _other_root(note: str) -> str:
    return _swap_line(note, 2, base64.b64encode(hashlib.sha256(b"another root").digest()).decode())


def _other_size(note: str) -> str:
    return _swap_line(note, 1, str(int(note.split("\n")[1]) - 1))


def _resigned(note: str) -> str:
    """The body signed again by the attacker's own key under the log's name."""
    body = note[: note.rfind("\n\n") + 1]
    return NoteSigner(CHECKPOINT.origin, Ed25519PrivateKey.from_private_bytes(b"a" * 32)).sign(body)


ALTERED_NOTES = {
    "root changed": (_other_root, "invalid signature by key"),
    "size changed": (_other_size, "invalid signature by key"),
    "signed by another key": (_resigned, "note has no signature by a known key"),
}


@pytest.fixture
def signed(store, writer, keys, clock):
    grow_to(writer, store, 9)
    cp = checkpoints.sign_checkpoint(store, keys, clock())
    assert check_store(store, keys, [cp.note]).intact
    return cp


@pytest.mark.parametrize("alteration", sorted(ALTERED_NOTES))
def test_a_stored_note_altered_after_signing_is_reported(store, keys, signed, alteration):
    alter, reason = ALTERED_NOTES[alteration]
    note = alter(signed.note)
    assert note != signed.note and note.endswith("\n")
    with store.writer.begin() as conn:
        conn.execute(update(checkpoints_table).where(checkpoints_table.c.tree_size == 9).values(note=note))
    report = check_store(store, keys)
    assert not report.intact
    assert report.checkpoint_problem["tree_size"] == 9
    assert report.checkpoint_problem["reason"].startswith(f"stored checkpoint does not verify: {reason}")


@pytest.mark.parametrize("alteration", sorted(ALTERED_NOTES))
def test_a_supplied_note_altered_after_signing_is_reported(store, keys, signed, alteration):
    alter, reason = ALTERED_NOTES[alteration]
    report = check_store(store, keys, [alter(signed.note)])
    assert not report.intact and report.checkpoint_problem is None
    assert report.supplied_checkpoint_problem["tree_size"] == 0
    assert report.supplied_checkpoint_problem["reason"].startswith(f"the checkpoint does not verify: {reason}")


def test_a_stored_row_whose_root_differs_from_its_signed_note_is_reported(store, keys, signed):
    with store.writer.begin() as conn:
        conn.execute(update(checkpoints_table).values(root_hash="ab" * 32))
    report = check_store(store, keys)
    assert report.checkpoint_problem == {
        "tree_size": 9,
        "reason": "the stored checkpoint's row does not match its signed note",
    }


def test_with_the_integrity_key_a_relinked_event_still_fails_the_stored_checkpoint(store, writer, keys, signed):
    """An attacker holding the integrity key but not the checkpoint key
    changes an event before the checkpoint, relinks it and re-MACs the card:
    links, heads and MACs check; the signed root does not."""
    last = store.log.stream(CARD)[-1]
    assert last.position == 9
    changed = {**last.envelope(), "terminal_id": "terminal-forged"}
    new_hash = link_hash(INTEGRITY.key(INTEGRITY.current), last.prev_hash, last.position, changed)
    disable_append_only(store)
    state = store.cards.read_card(CARD)
    verifiers = {t: store.cards.secret(SecretRef.pin(CARD, t)) for t in state.pins}
    with store.writer.begin() as conn:
        conn.execute(update(events).where(events.c.position == 9).values(terminal_id="terminal-forged", hash=new_hash))
        mac = INTEGRITY.tag(state_message(state, new_hash, verifiers))
        conn.execute(update(cards).where(cards.c.card_id == CARD).values(last_hash=new_hash, mac=mac))

    report = check_store(store, keys)
    assert report.first_broken_link is None and report.cards_failing_mac == [] and report.first_unlawful is None
    assert report.checkpoint_problem == {
        "tree_size": 9,
        "reason": "the log's first 9 events do not match the checkpoint",
    }
    assert checkpoints.check_against(store, signed.note, [checkpoints.public_verifier_key(keys)]) == (
        9,
        "the log's first 9 events do not have the checkpoint's root (rewritten or removed)",
    )


# -- an instance's checkpoints, signed off the write path (CheckpointSigner) ---------------
def test_the_signer_signs_from_the_leaves_it_was_told_without_reading_the_events_back(store, keys, clock):
    """The checkpoint is the RFC 6962 tree of the log; an event edited in the
    database between its commit and the checkpoint does not enter it (the
    writer signs what it wrote), so the edit fails against the checkpoint."""
    signer = checkpoints.CheckpointSigner(store, keys, clock)
    writer = ThreadRunner(store, keys, clock, leaves=signer)
    run_ok(writer, enroll(CARD))
    run_ok(writer, *(verify(CARD, USER, CORRECT[USER]) for _ in range(6)))
    assert checkpoints.latest(store) is None  # a batch only hands its leaves over
    disable_append_only(store)
    with store.writer.begin() as conn:
        conn.execute(update(events).where(events.c.position == 3).values(terminal_id="terminal-forged"))
    signed = signer.sign()
    assert signed is not None and signed.tree_size == 7
    assert checkpoints.check_stored(store, keys) == (7, "the log's first 7 events do not match the checkpoint")
    with store.writer.begin() as conn:  # the edit undone: the log is the tree signed
        conn.execute(update(events).where(events.c.position == 3).values(terminal_id=COUNTER.terminal_id))
    assert checkpoints.check_stored(store, keys) is None
    assert signed.root_hash == _mth(leaf_hashes(store)).hex()


def test_the_signer_signs_over_another_writers_events_by_reading_and_checking_them(store, keys, clock):
    signer = checkpoints.CheckpointSigner(store, keys, clock)
    ours, theirs = ThreadRunner(store, keys, clock, leaves=signer), ThreadRunner(store, keys, clock)
    run_ok(ours, enroll(CARD))
    run_ok(theirs, verify(CARD, USER, CORRECT[USER]))  # another instance's event between ours
    run_ok(ours, verify(CARD, USER, CORRECT[USER]))
    signed = signer.sign()
    assert signed is not None and signed.tree_size == 3 and signed.root_hash == _mth(leaf_hashes(store)).hex()
    assert checkpoints.check_stored(store, keys) is None


def test_a_long_unsigned_tail_is_signed_in_steps_each_stored(store, keys, clock):
    """A store with no checkpoint over its events (a restored backup, a bulk
    load, a store from before checkpoints): each step reads at most `step`
    events back and is stored, so no signing rereads what one covered."""
    writer = ThreadRunner(store, keys, clock)  # tells no signer: every event is read back
    run_ok(writer, enroll(CARD))
    run_ok(writer, *(verify(CARD, USER, CORRECT[USER]) for _ in range(9)))
    signer = checkpoints.CheckpointSigner(store, keys, clock, step=4)
    assert signer.sign().tree_size == 10
    assert [c.tree_size for c in checkpoints.stored(store)] == [4, 8, 10]
    assert checkpoints.check_stored(store, keys) is None


def test_a_round_signs_the_head_it_began_with_and_leaves_what_commits_meanwhile_to_the_next(store, keys, clock, monkeypatch):
    """On a busy log a batch commits while each checkpoint is signed: the
    round stops at the head it saw when it began, so it signs one checkpoint
    per round and not one after every batch (each a write beside the
    writer's, which made a verify wait tens of milliseconds)."""
    signer = checkpoints.CheckpointSigner(store, keys, clock)
    writer = ThreadRunner(store, keys, clock, leaves=signer)
    run_ok(writer, enroll(CARD))
    run_ok(writer, *(verify(CARD, USER, CORRECT[USER]) for _ in range(3)))
    real, meanwhile = checkpoints.sign_checkpoint, [verify(CARD, USER, CORRECT[USER]) for _ in range(3)]

    def a_batch_commits_meanwhile(*args, **kwargs):
        signed = real(*args, **kwargs)
        if meanwhile:
            run_ok(writer, meanwhile.pop())
        return signed

    monkeypatch.setattr(checkpoints, "sign_checkpoint", a_batch_commits_meanwhile)
    assert signer.sign().tree_size == 4
    assert [c.tree_size for c in checkpoints.stored(store)] == [4]
    assert signer.sign().tree_size == 5  # the next round: what committed during the first
    assert [c.tree_size for c in checkpoints.stored(store)] == [4, 5]
    assert checkpoints.check_stored(store, keys) is None


def test_a_signer_blocked_on_its_database_never_holds_a_batch(store, keys, clock, monkeypatch):
    """Signing, and any read-back it needs, runs on the signer's own thread:
    while it is stuck reading the log back, batches commit and answer."""
    run_ok(ThreadRunner(store, keys, clock), enroll(CARD))  # a tail no signer knows: it must be read back
    reading, release = threading.Event(), threading.Event()
    real = checkpoints._leaves

    def stuck(*args, **kwargs):
        reading.set()
        release.wait(30)
        yield from real(*args, **kwargs)

    monkeypatch.setattr(checkpoints, "_leaves", stuck)
    signer = checkpoints.CheckpointSigner(store, keys, clock, every=3600)
    writer = ThreadRunner(store, keys, clock, leaves=signer)
    signer.start()
    try:
        assert reading.wait(30)
        answers = run_ok(writer, *(verify(CARD, USER, CORRECT[USER]) for _ in range(3)))
        assert [a.stream_version for a in answers] == [2, 3, 4]  # committed and answered while it waits
        assert checkpoints.latest(store) is None
    finally:
        release.set()
        signer.stop()  # the round ends, then the log as it is left is signed
    assert checkpoints.latest(store).tree_size == 4
