"""PIN verifiers: HMAC-SHA256 under a server key kept outside the database
(DESIGN.md §3). A 4-digit PIN has 10,000 values, so an unkeyed or salted hash
in a stolen database would fall in seconds; without the key it cannot.

Key file (JSON, named by PINLIFE_KEY_FILE):
    {"current": "2026-11", "keys": {"2026-11": "<base64 of >= 32 random bytes>"}}
Several keys may be listed for rotation: new verifiers use "current"; older
ones still verify. The message binds card and PIN type, so equal PINs on two
cards, or on two PIN types of one card, have unrelated verifiers.
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

from service.domain.pins import PinType


class KeyFileError(Exception):
    pass


@dataclass(frozen=True)
class Verifier:
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

    def _digest(self, key_id: str, card_id: str, pin_type: PinType, pin: str) -> str:
        message = f"pinlife-v1\x1f{card_id}\x1f{pin_type.value}\x1f{pin}".encode()
        return hmac.new(self._keys[key_id], message, hashlib.sha256).hexdigest()

    def make(self, card_id: str, pin_type: PinType, pin: str) -> Verifier:
        return Verifier(self.current, self._digest(self.current, card_id, pin_type, pin))

    def matches(self, stored: Verifier, card_id: str, pin_type: PinType, pin: str) -> bool:
        if stored.key_id not in self._keys:
            raise KeyFileError(f"verifier key {stored.key_id!r} is not loaded")
        return hmac.compare_digest(self._digest(stored.key_id, card_id, pin_type, pin), stored.digest)

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
