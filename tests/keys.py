"""Key rings for tests: verifier keys as given, one shared integrity key (so
that rings differing in verifier keys open the same store), and a
checkpoint signing key."""

from __future__ import annotations

from pinlife.keys.ring import CheckpointKey, IntegrityKeys, KeyRing

INTEGRITY = IntegrityKeys("int-test", {"int-test": b"i" * 32})
CHECKPOINT = CheckpointKey("pinlife.test/log", b"c" * 32)


def ring(current: str, keys: dict[str, bytes], integrity: IntegrityKeys = INTEGRITY) -> KeyRing:
    return KeyRing(current, keys, integrity, CHECKPOINT)
