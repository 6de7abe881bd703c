"""The key ring (service/keys/ring.py): integrity tags and their rotation, PIN
verifiers, check values (which tell two keys under one id apart without
showing either), a repr without key material, and the key file's errors."""

from __future__ import annotations

import base64
import json
import os
import stat

import pytest

from pinlife.domain.pins import PinType
from pinlife.keys.ring import (
    CheckpointKey,
    IntegrityKeys,
    KeyFileError,
    KeyRing,
    SecretRef,
    add_missing_sections,
    write_new_key_file,
)

MESSAGE = b"stream card-a version 1 payload"
K1, K2 = b"\x01" * 32, b"\x02" * 32
REF = SecretRef.pin("card-a", PinType.USER_CERTIFICATE)


def integrity(current: str = "i1", **keys: bytes) -> IntegrityKeys:
    return IntegrityKeys(current, keys or {"i1": K1})


def ring(verifier: bytes = K1, integ: bytes = K2, seed: bytes = b"s" * 32, checkpoint: bool = True) -> KeyRing:
    cp = CheckpointKey("pinlife.test/log", seed) if checkpoint else None
    return KeyRing("v1", {"v1": verifier}, IntegrityKeys("i1", {"i1": integ}), cp)


def b64(v: bytes) -> str:
    return base64.b64encode(v).decode()


# --- integrity tags -----------------------------------------------------------------
def test_a_tag_checks_the_message_it_was_made_for():
    keys = integrity()
    tag = keys.tag(MESSAGE)
    key_id, _, digest = tag.partition(":")
    assert key_id == "i1" and len(digest) == 64 and int(digest, 16) >= 0
    assert keys.checks(tag, MESSAGE)
    assert not keys.checks(tag, MESSAGE + b"x")
    assert keys.tag(MESSAGE) == tag  # deterministic


def test_a_tag_under_an_unknown_key_id_or_with_an_altered_digest_fails():
    keys = integrity()
    tag = keys.tag(MESSAGE)
    _, _, digest = tag.partition(":")
    flipped = digest[:-1] + ("0" if digest[-1] != "0" else "1")
    assert not keys.checks(f"i9:{digest}", MESSAGE)  # unknown id, same digest
    assert not keys.checks(f"i1:{flipped}", MESSAGE)
    assert not keys.checks(f"i1:{digest[:-2]}", MESSAGE)  # truncated
    assert not keys.checks(f"i1:{digest.upper()}", MESSAGE)  # not the form tag makes
    for junk in (None, "", ":", digest, "i1:", "i1"):
        assert not keys.checks(junk, MESSAGE)
    assert not integrity("i1", i1=K2).checks(tag, MESSAGE)  # another key under the same id


def test_a_tag_made_with_an_old_current_key_still_checks_after_rotation():
    old = integrity("i1", i1=K1)
    tag = old.tag(MESSAGE)
    rotated = integrity("i2", i1=K1, i2=K2)
    assert rotated.checks(tag, MESSAGE)
    new_tag = rotated.tag(MESSAGE)
    assert new_tag.startswith("i2:") and new_tag != tag
    assert rotated.checks(new_tag, MESSAGE) and not old.checks(new_tag, MESSAGE)
    retired = integrity("i2", i2=K2)
    assert not retired.checks(tag, MESSAGE) and retired.checks(new_tag, MESSAGE)


def test_integrity_key_lookups():
    keys = integrity("i1", i1=K1)
    assert keys.key("i1") == K1 and keys.key_or_none("i1") == K1
    assert keys.key_or_none("i2") is None
    with pytest.raises(KeyFileError, match="integrity key 'i2' is not loaded"):
        keys.key("i2")


def test_integrity_keys_refuse_a_current_id_not_loaded_and_a_short_key():
    with pytest.raises(KeyFileError, match="current integrity key id 'i2' is not among the keys"):
        IntegrityKeys("i2", {"i1": K1})
    with pytest.raises(KeyFileError, match="integrity key 'i1' is shorter than 32 bytes"):
        IntegrityKeys("i1", {"i1": b"x" * 31})


# --- PIN verifiers ----------------------------------------------------------------------
def test_a_verifier_matches_its_pin_only_and_still_matches_after_rotation():
    old = KeyRing("v1", {"v1": K1}, integrity())
    made = old.make(REF, "4821")
    assert made.key_id == "v1"
    assert old.matches(made, REF, "4821") and not old.matches(made, REF, "4822")
    assert not old.matches(made, SecretRef.pin("card-b", PinType.USER_CERTIFICATE), "4821")
    assert not old.matches(made, SecretRef.pin("card-a", PinType.SIGNATURE), "4821")
    rotated = KeyRing("v2", {"v1": K1, "v2": K2}, integrity())
    assert rotated.matches(made, REF, "4821")
    assert rotated.make(REF, "4821").key_id == "v2"
    # the same id with another key: the correct PIN no longer matches (what check values guard against)
    assert not KeyRing("v1", {"v1": K2}, integrity()).matches(made, REF, "4821")
    with pytest.raises(KeyFileError, match="verifier key 'v1' is not loaded"):
        KeyRing("v2", {"v2": K2}, integrity()).matches(made, REF, "4821")


def test_a_key_ring_needs_integrity_keys():
    with pytest.raises(KeyFileError, match="no integrity keys"):
        KeyRing("v1", {"v1": K1})
    with pytest.raises(KeyFileError, match="verifier key 'v1' is shorter than 32 bytes"):
        KeyRing("v1", {"v1": K1[:16]}, integrity())


# --- check values ----------------------------------------------------------------------------
def test_check_values_name_every_key_by_purpose_and_id():
    assert set(ring().check_values()) == {("verifier", "v1"), ("integrity", "i1"), ("checkpoint", "pinlife.test/log")}
    assert set(ring(checkpoint=False).check_values()) == {("verifier", "v1"), ("integrity", "i1")}
    assert ring().check_values() == ring().check_values()  # the same keys: the same values
    assert integrity("i1", i1=K1).check_values() == {"i1": ring(integ=K1).check_values()[("integrity", "i1")]}


@pytest.mark.parametrize(
    "other, differs",
    [
        (ring(verifier=K2), ("verifier", "v1")),
        (ring(integ=K1), ("integrity", "i1")),
        (ring(seed=b"t" * 32), ("checkpoint", "pinlife.test/log")),
    ],
)
def test_a_different_key_under_the_same_id_has_a_different_check_value(other, differs):
    base, changed = ring().check_values(), other.check_values()
    assert set(changed) == set(base)
    assert {k for k in base if base[k] != changed[k]} == {differs}


def test_check_values_never_contain_key_material():
    seed = os.urandom(32)
    keys = ring(verifier=os.urandom(32), integ=os.urandom(32), seed=seed)
    material = [keys._keys["v1"], keys.integrity.key("i1"), seed]
    values = keys.check_values().values()
    for value in values:
        assert len(value) == 64 and int(value, 16) >= 0  # a SHA-256 sized hex value
        for key in material:
            for form in (key.hex(), b64(key), key.hex().upper(), key.decode("latin-1")):
                assert form not in value
            assert key.hex()[:16] not in value  # not even a part of it
    assert len(set(values)) == len(values)


# --- repr -------------------------------------------------------------------------------------
def test_the_key_ring_s_repr_shows_ids_and_never_key_material():
    seed = os.urandom(32)
    vk, ik = os.urandom(32), os.urandom(32)
    keys = ring(verifier=vk, integ=ik, seed=seed)
    for text in (repr(keys), str(keys), f"{keys!r}", repr(keys.integrity), repr(keys.checkpoint), repr([keys])):
        for key in (vk, ik, seed, keys.checkpoint.public_key()):
            for form in (repr(key), key.hex(), b64(key), str(list(key))[1:40]):
                assert form not in text, text
    assert repr(keys) == "KeyRing(current='v1', ids=['v1'], integrity=IntegrityKeys(current='i1', ids=['i1']))"


# --- the key file ----------------------------------------------------------------------------------
def _file(tmp_path, body) -> os.PathLike:
    path = tmp_path / "keys.json"
    path.write_text(body if isinstance(body, str) else json.dumps(body))
    path.chmod(0o600)
    return path


def _complete(**over) -> dict:
    body = {
        "current": "v1",
        "keys": {"v1": b64(K1)},
        "integrity": {"current": "i1", "keys": {"i1": b64(K2)}},
        "checkpoint": {"origin": "pinlife.test/log", "seed": b64(b"s" * 32)},
    }
    body.update(over)
    return body


def test_a_complete_key_file_loads(tmp_path):
    keys = KeyRing.load(_file(tmp_path, _complete()))
    assert keys.check_values() == ring().check_values()
    no_checkpoint = _complete()
    del no_checkpoint["checkpoint"]
    assert KeyRing.load(_file(tmp_path, no_checkpoint)).checkpoint is None  # optional


def test_a_missing_key_file_is_refused(tmp_path):
    with pytest.raises(KeyFileError, match=r"key file .*nothing\.json does not exist"):
        KeyRing.load(tmp_path / "nothing.json")


@pytest.mark.parametrize("body", ["", "{", "not json", '{"current": "v1",}', "\x00\x01"])
def test_a_key_file_that_is_not_json_is_refused(tmp_path, body):
    with pytest.raises(KeyFileError, match="is not valid JSON"):
        KeyRing.load(_file(tmp_path, body))


BAD = {
    "short verifier key": (_complete(keys={"v1": b64(b"k" * 31)}), "verifier key 'v1' is shorter than 32 bytes"),
    "short integrity key": (
        _complete(integrity={"current": "i1", "keys": {"i1": b64(b"k" * 16)}}),
        "integrity key 'i1' is shorter than 32 bytes",
    ),
    "short seed": (_complete(checkpoint={"origin": "o", "seed": b64(b"s" * 31)}), "the checkpoint seed is not 32 bytes"),
    "long seed": (_complete(checkpoint={"origin": "o", "seed": b64(b"s" * 33)}), "the checkpoint seed is not 32 bytes"),
    "bad base64": (_complete(keys={"v1": "not*base64!"}), "is not valid"),
    "current not listed": (_complete(current="v9"), "current verifier key id 'v9' is not among the keys"),
    "no keys": ({k: v for k, v in _complete().items() if k != "keys"}, "is not valid: KeyError"),
    "no integrity": ({k: v for k, v in _complete().items() if k != "integrity"}, "`pinlife dev-key "),
    "a list": ([], "is not valid"),
    "null": (None, "is not valid"),
    "keys a list": (_complete(keys=[b64(K1)]), "is not valid"),
    "seed missing": (_complete(checkpoint={"origin": "o"}), "is not valid: KeyError"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_an_invalid_key_file_is_refused_with_the_reason(tmp_path, case):
    body, reason = BAD[case]
    with pytest.raises(KeyFileError) as err:
        KeyRing.load(_file(tmp_path, json.dumps(body)))
    assert reason in str(err.value)
    assert b64(K1) not in str(err.value) and b64(K2) not in str(err.value)  # the message shows no key


def test_a_key_file_that_cannot_be_read_is_refused(tmp_path):
    with pytest.raises(KeyFileError, match=str(tmp_path)):
        KeyRing.load(tmp_path)  # a directory


# --- writing development key files --------------------------------------------------------------
def test_a_new_key_file_is_private_complete_and_never_written_over(tmp_path):
    path = tmp_path / "var" / "keys.json"
    write_new_key_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    keys = KeyRing.load(path)
    assert keys.current == "dev-1" and keys.integrity.current == "integrity-1"
    assert keys.checkpoint is not None and keys.checkpoint.origin == "pinlife.dev/local"
    body = path.read_bytes()
    with pytest.raises(FileExistsError):
        write_new_key_file(path)
    assert path.read_bytes() == body
    other = tmp_path / "other.json"
    write_new_key_file(other)  # random: the same ids, other keys
    assert set(KeyRing.load(other).check_values()) == set(keys.check_values())
    assert not set(KeyRing.load(other).check_values().values()) & set(keys.check_values().values())


def test_missing_sections_are_added_and_the_verifier_keys_kept(tmp_path):
    path = _file(tmp_path, {"current": "v1", "keys": {"v1": b64(K1), "v0": b64(K2)}})
    assert add_missing_sections(path) == ["integrity", "checkpoint"]
    data = json.loads(path.read_text())
    assert data["current"] == "v1" and data["keys"] == {"v1": b64(K1), "v0": b64(K2)}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    keys = KeyRing.load(path)
    assert keys.check_values()[("verifier", "v1")] == ring().check_values()[("verifier", "v1")]
    body = path.read_bytes()
    assert add_missing_sections(path) == [] and path.read_bytes() == body  # complete: untouched
    only_integrity = _complete()
    del only_integrity["checkpoint"]
    path = _file(tmp_path, only_integrity)
    assert add_missing_sections(path) == ["checkpoint"]
    assert json.loads(path.read_text())["integrity"] == only_integrity["integrity"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keys.json"]  # no temporary file left
