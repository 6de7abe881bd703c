"""PIN verifiers (DESIGN.md §3): keyed HMAC digests with a key id, kept
outside the event log, never the PIN; replaced on change; re-keyed on a
successful check after a key rotation."""

from __future__ import annotations

import hashlib
import os
import re

from pinlife.app.batch import ThreadRunner
from pinlife.domain.outcomes import CheckResult
from pinlife.keys.ring import SecretRef, Verifier
from tests.keys import ring
from tests.store.helpers import (
    CARD_INFO,
    CORRECT,
    RESIDENT,
    SIGNATURE,
    TABLES,
    USER,
    WRONG,
    change,
    dump,
    enroll,
    run_ok,
    verify,
)

HEX64 = re.compile(r"[0-9a-f]{64}")

# Signature PINs with letters outside a-f cannot turn up in a hex digest, a
# UUID or a hash by chance, so finding one anywhere would be a real leak.
SECRET_INITIAL = "QWXYZ7391KJ"
SECRET_NEW = "PLMNO8462TR"
SECRET_WRONG = "VUTSR5173GH"
SECRET_FOUR = "7391"


def verifier_rows(store) -> dict[tuple[str, str], dict]:
    return {(r["card_id"], r["name"]): r for r in dump(store.writer, "secrets") if r["kind"] == "pin"}


def test_no_pin_anywhere_in_the_database(store, writer):
    pins = {**CORRECT, SIGNATURE: SECRET_INITIAL.lower(), USER: SECRET_FOUR}  # lower case: normalised to upper
    run_ok(writer, enroll("card-a", pins))
    run_ok(
        writer,
        verify("card-a", SIGNATURE, SECRET_WRONG),
        verify("card-a", SIGNATURE, SECRET_INITIAL),
        change("card-a", SIGNATURE, SECRET_INITIAL, SECRET_NEW),
        verify("card-a", SIGNATURE, SECRET_NEW),
        verify("card-a", USER, SECRET_FOUR),
        change("card-a", USER, SECRET_FOUR, "8642"),
    )
    values = []
    for table in TABLES:
        rows = dump(store.writer, table)
        assert rows, table
        values += [(table, col, str(v)) for r in rows for col, v in r.items()]
    assert any(t == "events" and c == "payload" for t, c, _ in values)  # the dump does reach the payloads
    for secret in (SECRET_INITIAL, SECRET_NEW, SECRET_WRONG):
        leaks = [(t, c) for t, c, v in values if secret in v.upper()]
        assert not leaks, (secret, leaks)
    # a 4-digit PIN may occur inside a hex string by chance; it must never be a value
    assert not [(t, c) for t, c, v in values if v in (SECRET_FOUR, "8642")]


def test_verifiers_are_keyed_digests_with_the_key_id(store, writer, keys):
    run_ok(writer, enroll("card-a"), enroll("card-b", {USER: CORRECT[USER]}))
    rows = verifier_rows(store)
    assert set(rows) == {("card-a", t.value) for t in CORRECT} | {("card-b", USER.value)}
    for (card_id, pin_type), r in rows.items():
        assert r["key_id"] == keys.current
        assert HEX64.fullmatch(r["digest"])
        assert r["set_at_version"] == 1
        stored = Verifier(r["key_id"], r["digest"])
        t = next(t for t in CORRECT if t.value == pin_type)
        assert keys.matches(stored, SecretRef.pin(card_id, t), CORRECT[t])
        assert not keys.matches(stored, SecretRef.pin(card_id, t), WRONG[t])
        # not an unkeyed hash of the PIN
        assert r["digest"] != hashlib.sha256(CORRECT[t].encode()).hexdigest()
        # and useless under another key
        other = ring(keys.current, {keys.current: os.urandom(32)})
        assert not other.matches(stored, SecretRef.pin(card_id, t), CORRECT[t])
    assert store.cards.secret(SecretRef.pin("card-a", USER)) == Verifier(keys.current, rows[("card-a", USER.value)]["digest"])


def test_equal_pins_give_unrelated_digests(store, writer):
    same = {RESIDENT: "4321", CARD_INFO: "4321", USER: "4321"}
    run_ok(writer, enroll("card-a", same), enroll("card-b", same))
    digests = [r["digest"] for r in dump(store.writer, "secrets")]
    assert len(digests) == 6 and len(set(digests)) == 6


def test_a_change_replaces_the_verifier(store, writer):
    run_ok(writer, enroll("card-a"))
    before = verifier_rows(store)
    answers = run_ok(writer, change("card-a", USER, CORRECT[USER], "8080"))
    assert answers[0].outcome.result is CheckResult.OK
    after = verifier_rows(store)
    assert after[("card-a", "user_certificate")]["digest"] != before[("card-a", "user_certificate")]["digest"]
    assert after[("card-a", "user_certificate")]["set_at_version"] == 2
    assert {k: v for k, v in after.items() if k[1] != "user_certificate"} == {
        k: v for k, v in before.items() if k[1] != "user_certificate"
    }
    old, new = run_ok(writer, verify("card-a", USER, CORRECT[USER]), verify("card-a", USER, "8080"))
    assert (old.outcome.result, new.outcome.result) == (CheckResult.WRONG_PIN, CheckResult.OK)


def test_a_failed_change_keeps_the_verifier(store, writer):
    run_ok(writer, enroll("card-a"))
    before = verifier_rows(store)
    answers = run_ok(writer, change("card-a", USER, WRONG[USER], "8080"))
    assert answers[0].outcome.result is CheckResult.WRONG_PIN
    assert verifier_rows(store) == before
    assert run_ok(writer, verify("card-a", USER, "8080"))[0].outcome.result is CheckResult.WRONG_PIN
    assert run_ok(writer, verify("card-a", USER, CORRECT[USER]))[0].outcome.result is CheckResult.OK


def test_key_rotation_rekeys_on_success_only(store, clock):
    k1, k2 = os.urandom(32), os.urandom(32)
    old_ring = ring("k1", {"k1": k1})
    new_ring = ring("k2", {"k1": k1, "k2": k2})
    run_ok(ThreadRunner(store, old_ring, clock), enroll("card-a"))
    assert {r["key_id"] for r in dump(store.writer, "secrets")} == {"k1"}

    rotated = ThreadRunner(store, new_ring, clock)
    wrong = run_ok(rotated, verify("card-a", USER, WRONG[USER]))[0]
    assert wrong.outcome.result is CheckResult.WRONG_PIN
    assert verifier_rows(store)[("card-a", "user_certificate")]["key_id"] == "k1"

    ok = run_ok(rotated, verify("card-a", USER, CORRECT[USER]))[0]
    assert ok.outcome.result is CheckResult.OK
    rows = verifier_rows(store)
    assert rows[("card-a", "user_certificate")]["key_id"] == "k2"
    assert rows[("card-a", "user_certificate")]["set_at_version"] == 3
    assert new_ring.matches(
        Verifier("k2", rows[("card-a", "user_certificate")]["digest"]), SecretRef.pin("card-a", USER), CORRECT[USER]
    )
    # the other PIN types stay under k1 until they are used
    assert {r["key_id"] for k, r in rows.items() if k[1] != "user_certificate"} == {"k1"}

    # a change under the new key stores the new PIN under k2
    run_ok(rotated, change("card-a", SIGNATURE, CORRECT[SIGNATURE], "NEWSIG99"))
    assert verifier_rows(store)[("card-a", "signature")]["key_id"] == "k2"
    # and the re-keyed verifiers still verify once k1 is retired
    retired = ThreadRunner(store, ring("k2", {"k2": k2}), clock)
    a, b = run_ok(retired, verify("card-a", USER, CORRECT[USER]), verify("card-a", SIGNATURE, "NEWSIG99"))
    assert (a.outcome.result, b.outcome.result) == (CheckResult.OK, CheckResult.OK)
    # no event records the re-keying or any verifier
    assert {e.event_type for e in store.log.all_events()} == {
        "CardEnrolled",
        "PinVerificationFailed",
        "PinVerified",
        "PinChanged",
    }
