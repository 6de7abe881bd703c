"""Secrets as keyed hashes: HMAC-SHA256 under a server key kept outside the
database (DESIGN.md §3). A 4-digit PIN has 10,000 values, so an unkeyed or
salted hash in a stolen database would fall in seconds; without the key it
cannot. The same holds for every other secret of a card (a proxy inquiry's
one-time code, a store reservation's token): each is stored as a keyed hash
under (card, kind, name), re-keyed by the same rotation.

Key file (JSON, named by PINLIFE_KEY_FILE):
    {"current": "2026-11", "keys": {"2026-11": "<base64 of >= 32 random bytes>"}}
Several keys may be listed for rotation: new verifiers use "current"; older
ones still verify. The message binds card, kind and name, so equal PINs on
two cards, or on two PIN types of one card, have unrelated verifiers.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from service.domain.pins import PinType


class KeyFileError(Exception):
    pass


class SecretKind:
    """The kinds of secret (stored in secrets.kind)."""

    PIN = "pin"  # name: the PIN type
    INQUIRY_CODE = "inquiry_code"  # name: the inquiry id
    ALL = (PIN, INQUIRY_CODE)


class SecretRef(NamedTuple):
    """Which secret: of a card, of a kind, by name. (A tuple of strings: it
    keys the unit of work's cache on the write path, so it hashes cheaply.)"""

    card_id: str
    kind: str
    name: str

    @classmethod
    def pin(cls, card_id: str, pin_type: PinType) -> SecretRef:
        return cls(card_id, SecretKind.PIN, pin_type.value)


@dataclass(frozen=True)
class Verifier:
    """A secret's keyed hash and the id of the key it was made with."""

    key_id: str
    digest: str  # hex


class KeyRing:
    def __init__(self, current: str, keys: dict[str, bytes]):
        if current not in keys:
            raise KeyFileError(f"current key id {current!r} is not among the keys")
        for key_id, key in keys.items():
            if len(key) < 32:
                raise KeyFileError(f"key {key_id!r} is shorter than 32 bytes")
        self.current = current
        self._keys = dict(keys)

    def __repr__(self) -> str:  # never print key material
        return f"KeyRing(current={self.current!r}, ids={sorted(self._keys)!r})"

    def _digest(self, key_id: str, ref: SecretRef, value: str) -> str:
        if ref.kind == SecretKind.PIN:  # the form PIN verifiers have had from the start
            message = f"pinlife-v1\x1f{ref.card_id}\x1f{ref.name}\x1f{value}"
        else:
            message = f"pinlife-v1\x1f{ref.kind}\x1f{ref.card_id}\x1f{ref.name}\x1f{value}"
        return hmac.new(self._keys[key_id], message.encode(), hashlib.sha256).hexdigest()

    def make(self, ref: SecretRef, value: str) -> Verifier:
        return Verifier(self.current, self._digest(self.current, ref, value))

    def matches(self, stored: Verifier, ref: SecretRef, value: str) -> bool:
        if stored.key_id not in self._keys:
            raise KeyFileError(f"verifier key {stored.key_id!r} is not loaded")
        return hmac.compare_digest(self._digest(stored.key_id, ref, value), stored.digest)

    @classmethod
    def load(cls, path: Path) -> KeyRing:
        try:
            data = json.loads(path.read_text())
            keys = {kid: base64.b64decode(v, validate=True) for kid, v in data["keys"].items()}
            return cls(data["current"], keys)
        except FileNotFoundError as exc:
            raise KeyFileError(f"key file {path} does not exist") from exc
        except (ValueError, TypeError, KeyError) as exc:
            raise KeyFileError(f"key file {path} is not valid: {type(exc).__name__}") from exc


def write_new_key_file(path: Path, key_id: str = "dev-1") -> None:
    """A fresh random key, readable by the owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = json.dumps({"current": key_id, "keys": {key_id: base64.b64encode(secrets.token_bytes(32)).decode()}})
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(body + "\n")
