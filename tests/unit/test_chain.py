"""The keyed chain of a stream (DESIGN.md §3: tamper evidence): each link is
an HMAC under an integrity key over the previous link, the event's global
position and its canonical envelope."""

from __future__ import annotations

import copy
import hashlib
import hmac
from datetime import UTC, datetime, timedelta, timezone

import pytest

from pinlife.domain.chain import GENESIS_HASH, Link, StreamHead, canonical_time, first_broken_link, legacy_hash, link_hash

KEY, OTHER_KEY = b"k" * 32, b"o" * 32
KEYS = {"k1": KEY}


def event_hash(prev: str, env: dict, position: int = 1) -> str:
    return link_hash(KEY, prev, position, env)


def check(rows, head=None):
    return first_broken_link([Link(*r) for r in rows], KEYS.get, head)


JST = timezone(timedelta(hours=9))


def envelope(version: int, card_id: str = "card-0001", **changes) -> dict:
    env = {
        "card_id": card_id,
        "version": version,
        "event_id": f"00000000-0000-4000-8000-{version:012d}",
        "type": "PinVerificationFailed",
        "schema_version": 1,
        "occurred_at": canonical_time(datetime(2025, 4, 1, 9, 0, tzinfo=UTC) + timedelta(seconds=version)),
        "pin_type": "user_certificate",
        "channel": "medical_reader",
        "terminal_id": "reader-17",
        "request_id": f"req-{version:08d}",
        "payload": {"purpose": "verify", "consecutive_failures": 1, "remaining_tries": 2},
    }
    env.update(changes)
    return env


def chain(n: int) -> list[tuple[int, dict, str, str, str]]:
    """(position, envelope, prev_hash, hash, key id) rows of a well-formed stream."""
    rows, prev = [], GENESIS_HASH
    for v in range(1, n + 1):
        env = envelope(v)
        h = event_hash(prev, env, 100 + v)
        rows.append((100 + v, env, prev, h, "k1"))
        prev = h
    return rows


# --- event_hash ---------------------------------------------------------------


def test_event_hash_is_deterministic_and_hex_sha256():
    h = event_hash(GENESIS_HASH, envelope(1))
    assert h == event_hash(GENESIS_HASH, envelope(1))
    assert len(h) == 64 and int(h, 16) >= 0


def test_a_link_is_an_hmac_of_prev_hash_position_and_canonical_json():
    env = {"b": "x", "a": 1, "payload": {"z": [1, 2], "y": None}}
    canonical = b'{"a":1,"b":"x","payload":{"y":null,"z":[1,2]}}'
    prev = "ab" * 32
    message = bytes.fromhex(prev) + (7).to_bytes(8, "big") + canonical
    assert link_hash(KEY, prev, 7, env) == hmac.new(KEY, message, hashlib.sha256).hexdigest()
    assert legacy_hash(prev, env) == hashlib.sha256(bytes.fromhex(prev) + canonical).hexdigest()


def test_a_link_depends_on_the_key_and_the_global_position():
    env = envelope(1)
    assert link_hash(KEY, GENESIS_HASH, 1, env) != link_hash(OTHER_KEY, GENESIS_HASH, 1, env)
    assert link_hash(KEY, GENESIS_HASH, 1, env) != link_hash(KEY, GENESIS_HASH, 2, env)


def test_a_stream_relinked_with_another_key_or_unkeyed_is_broken():
    rows, prev = [], GENESIS_HASH
    for v in (1, 2):
        h = link_hash(OTHER_KEY, prev, 100 + v, envelope(v))
        rows.append((100 + v, envelope(v), prev, h, "k1"))
        prev = h
    assert "keyed link" in check(rows).reason
    unkeyed = [(p, e, pr, legacy_hash(pr, e), None) for p, e, pr, _, _ in chain(2)]
    assert "not keyed" in check(unkeyed).reason
    assert "not loaded" in check([(*chain(1)[0][:4], "k9")]).reason


def test_an_event_moved_to_another_position_is_broken():
    rows = chain(3)
    position, env, prev, h, kid = rows[1]
    rows[1] = (position + 50, env, prev, h, kid)
    assert check(rows).version == 2


def test_event_hash_ignores_key_order():
    env = envelope(1)
    reordered = dict(reversed(list(env.items())))
    reordered["payload"] = dict(reversed(list(env["payload"].items())))
    assert event_hash(GENESIS_HASH, env) == event_hash(GENESIS_HASH, reordered)


def test_event_hash_depends_on_the_previous_hash():
    env = envelope(2)
    assert event_hash(GENESIS_HASH, env) != event_hash("1" + GENESIS_HASH[1:], env)


@pytest.mark.parametrize(
    "field, value",
    [
        ("card_id", "card-0002"),
        ("version", 2),
        ("event_id", "00000000-0000-4000-8000-999999999999"),
        ("type", "PinVerified"),
        ("schema_version", 2),
        ("occurred_at", canonical_time(datetime(2025, 4, 1, 9, 0, 1, 1, tzinfo=UTC))),
        ("pin_type", "signature"),
        ("channel", "convenience_store"),
        ("terminal_id", "reader-18"),
        ("request_id", "req-99999999"),
        ("payload", {"purpose": "verify", "consecutive_failures": 2, "remaining_tries": 2}),
        ("payload", {"purpose": "change", "consecutive_failures": 1, "remaining_tries": 2}),
        ("payload", {"purpose": "verify", "consecutive_failures": 1, "remaining_tries": "2"}),
    ],
)
def test_event_hash_depends_on_every_envelope_field(field, value):
    original = envelope(1)
    assert original[field] != value
    assert event_hash(GENESIS_HASH, original) != event_hash(GENESIS_HASH, {**original, field: value})


def test_event_hash_depends_on_a_field_being_present():
    original = envelope(1)
    with_extra = {**original, "office": "naka"}
    without = {k: v for k, v in original.items() if k != "terminal_id"}
    hashes = {event_hash(GENESIS_HASH, e) for e in (original, with_extra, without)}
    assert len(hashes) == 3


def test_canonical_time_is_utc_with_microseconds():
    jst = datetime(2025, 4, 1, 18, 0, 0, 123456, tzinfo=JST)
    utc = datetime(2025, 4, 1, 9, 0, 0, 123456, tzinfo=UTC)
    naive_utc = datetime(2025, 4, 1, 9, 0, 0, 123456)
    assert canonical_time(jst) == canonical_time(utc) == canonical_time(naive_utc) == "2025-04-01T09:00:00.123456Z"


# --- first_broken_link ----------------------------------------------------------


def test_a_good_chain_has_no_broken_link():
    assert check(chain(6)) is None
    assert check([]) is None


def test_a_changed_payload_is_found_at_its_version():
    rows = chain(6)
    position, env, prev, h, kid = rows[2]
    env = copy.deepcopy(env)
    env["payload"]["consecutive_failures"] = 0
    rows[2] = (position, env, prev, h, kid)
    link = check(rows)
    assert (link.stream_id, link.version, link.position) == ("card-0001", 3, 103)
    assert "link" in link.reason


def test_a_changed_payload_with_a_recomputed_hash_breaks_the_next_link():
    rows = chain(6)
    position, env, prev, _, kid = rows[2]
    env = {**env, "payload": {**env["payload"], "remaining_tries": 3}}
    rows[2] = (position, env, prev, event_hash(prev, env, position), kid)
    link = check(rows)
    assert (link.version, link.position) == (4, 104)
    assert "previous" in link.reason


def test_a_changed_prev_hash_is_found_at_its_version():
    rows = chain(6)
    position, env, _, h, kid = rows[1]
    rows[1] = (position, env, "f" * 64, h, kid)
    link = check(rows)
    assert (link.version, link.position) == (2, 102)
    assert "previous" in link.reason


def test_a_changed_stored_hash_is_found_at_its_version():
    rows = chain(6)
    position, env, prev, _, kid = rows[5]
    rows[5] = (position, env, prev, "0" * 64, kid)
    assert check(rows).version == 6


@pytest.mark.parametrize("missing", [0, 1, 3])
def test_a_missing_version_is_found(missing):
    rows = chain(6)
    del rows[missing]
    link = check(rows)
    expected = missing + 1  # the version that should come next
    assert link.version == expected + 1  # the version found in its place
    assert link.position == 100 + expected + 1
    assert f"where {expected} was expected" in link.reason


def test_a_repeated_version_is_found():
    rows = chain(4)
    rows.insert(2, rows[1])
    link = check(rows)
    assert link.version == 2 and link.position == 102


def test_only_the_first_break_is_reported():
    rows = chain(6)
    for i in (1, 4):
        position, env, prev, h, kid = rows[i]
        rows[i] = (position, {**env, "terminal_id": "evil"}, prev, h, kid)
    assert check(rows).version == 2


def test_a_chain_must_start_from_genesis():
    rows, prev = [], "a" * 64
    for v in (1, 2):
        env = envelope(v)
        h = event_hash(prev, env, v)
        rows.append((v, env, prev, h, "k1"))
        prev = h
    link = check(rows)
    assert link.version == 1


def test_canonical_time_takes_a_naive_time_as_utc_whatever_the_local_zone(monkeypatch):
    import time

    monkeypatch.setenv("TZ", "JST-9")  # a POSIX zone string: needs no tzdata
    time.tzset()
    try:
        assert canonical_time(datetime(2025, 4, 1, 9, 0)) == "2025-04-01T09:00:00.000000Z"
    finally:
        monkeypatch.undo()
        time.tzset()


# --- the stream's head ------------------------------------------------------------


def test_a_stream_cut_short_is_broken_against_its_head():
    rows = chain(6)
    _, env, _, last_hash, _ = rows[-1]
    head = StreamHead(env["card_id"], 6, last_hash)
    assert check(rows, head) is None
    link = check(rows[:-1], head)
    assert link is not None and link.version == 6 and "head records version 6" in link.reason
    assert check([], head).version == 1  # every event gone, the head remains


def test_a_head_with_another_hash_is_broken():
    rows = chain(3)
    _, env, _, _, _ = rows[-1]
    assert check(rows, StreamHead(env["card_id"], 3, "f" * 64)) is not None
