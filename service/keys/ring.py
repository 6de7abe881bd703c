"""Secrets as keyed hashes: HMAC-SHA256 under a server key kept outside the
database (DESIGN.md §3). A 4-digit PIN has 10,000 values, so an unkeyed or
salted hash in a stolen database would fall in seconds; without the key it
cannot. The same holds for every other secret of a card (a proxy inquiry's
one-time code, a store reservation's token): each is stored as a keyed hash
under (card, kind, name), re-keyed by the same rotation.

Key file (JSON, named by PINLIFE_KEY_FILE, mode 0600):
    {"current": "2026-11", "keys": {"2026-11": "<base64 of >= 32 random bytes>"},
     "integrity": {"current": "i-2026-11", "keys": {"i-2026-11": "<base64 ...>"}},
     "checkpoint": {"origin": "pinlife.example.jp/yokohama", "seed": "<base64 of 32 bytes>"}}
- "current"/"keys": verifier keys. Several may be listed for rotation: new
  verifiers use "current"; older ones still verify. The message binds card,
  kind and name, so equal PINs on two cards, or on two PIN types of one
  card, have unrelated verifiers.
- "integrity": HMAC keys of the event chain and of the projection's MACs
  (service/domain/chain.py, service/store/projection.py), rotated the same
  way: new links and MACs use "current", older ids still check.
- "checkpoint": the Ed25519 seed that signs checkpoints (service/keys/notes.py)
  and the log's origin line; optional (no checkpoints are signed without it).

A check value per key id (an HMAC of a fixed label; for the checkpoint key,
a hash of its public key) is kept in the database at first use, so that a
different key under a known id is refused at start (service/store/key_checks.py)
rather than turning every correct PIN into a wrong one.
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

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ..domain.pins import PinType


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


CHECK_LABEL = b"pinlife key check value"


def _check_keys(what: str, current: str, keys: dict[str, bytes]) -> None:
    if current not in keys:
        raise KeyFileError(f"current {what} key id {current!r} is not among the keys")
    for key_id, key in keys.items():
        if len(key) < 32:
            raise KeyFileError(f"{what} key {key_id!r} is shorter than 32 bytes")


class IntegrityKeys:
    """HMAC-SHA256 keys that authenticate what the database holds: the event
    chain's links and the projection's MACs. Tagged values read
    "<key id>:<hex>", so a rotated key still checks what it made."""

    def __init__(self, current: str, keys: dict[str, bytes]):
        _check_keys("integrity", current, keys)
        self.current = current
        self._keys = dict(keys)

    def __repr__(self) -> str:
        return f"IntegrityKeys(current={self.current!r}, ids={sorted(self._keys)!r})"

    def key(self, key_id: str) -> bytes:
        try:
            return self._keys[key_id]
        except KeyError:
            raise KeyFileError(f"integrity key {key_id!r} is not loaded") from None

    def key_or_none(self, key_id: str) -> bytes | None:
        return self._keys.get(key_id)

    def tag(self, message: bytes) -> str:
        return f"{self.current}:{hmac.digest(self._keys[self.current], message, 'sha256').hex()}"

    def checks(self, tagged: str | None, message: bytes) -> bool:
        """Whether `tagged` (from tag) authenticates message under a loaded key."""
        key_id, _, digest = (tagged or "").rpartition(":")
        key = self._keys.get(key_id)
        return key is not None and hmac.compare_digest(hmac.digest(key, message, "sha256").hex(), digest)

    def check_values(self) -> dict[str, str]:
        return {kid: hmac.digest(k, CHECK_LABEL, "sha256").hex() for kid, k in self._keys.items()}


@dataclass(frozen=True, repr=False)
class CheckpointKey:
    """The log's origin and the Ed25519 seed that signs its checkpoints."""

    origin: str
    seed: bytes

    def private_key(self) -> Ed25519PrivateKey:
        return Ed25519PrivateKey.from_private_bytes(self.seed)

    def public_key(self) -> bytes:
        return self.private_key().public_key().public_bytes_raw()


class KeyRing:
    """The server's keys: PIN and code verifiers (this class's own methods),
    integrity keys, and the checkpoint signing key."""

    def __init__(
        self,
        current: str,
        keys: dict[str, bytes],
        integrity: IntegrityKeys | None = None,
        checkpoint: CheckpointKey | None = None,
    ):
        _check_keys("verifier", current, keys)
        if integrity is None:
            raise KeyFileError('no integrity keys (the key file\'s "integrity" section)')
        self.current = current
        self._keys = dict(keys)
        self.integrity = integrity
        self.checkpoint = checkpoint

    def __repr__(self) -> str:  # never print key material
        return f"KeyRing(current={self.current!r}, ids={sorted(self._keys)!r}, integrity={self.integrity!r})"

    def check_values(self) -> dict[tuple[str, str], str]:
        """(purpose, key id) -> check value, for every loaded key."""
        out = {("verifier", kid): hmac.digest(k, CHECK_LABEL, "sha256").hex() for kid, k in self._keys.items()}
        out.update({("integrity", kid): v for kid, v in self.integrity.check_values().items()})
        if self.checkpoint is not None:
            out[("checkpoint", self.checkpoint.origin)] = hashlib.sha256(self.checkpoint.public_key()).hexdigest()
        return out

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
        except FileNotFoundError as exc:
            raise KeyFileError(f"key file {path} does not exist") from exc
        except ValueError as exc:
            raise KeyFileError(f"key file {path} is not valid JSON") from exc
        except OSError as exc:
            raise KeyFileError(f"key file {path} cannot be read: {exc.strerror}") from exc
        try:
            keys = _decode_keys(data["keys"])
            if "integrity" not in data:
                raise KeyFileError(
                    f'key file {path} has no "integrity" section (add one with `pinlife dev-key {path}` in '
                    "development; in production from the secret store)"
                )
            integrity = IntegrityKeys(data["integrity"]["current"], _decode_keys(data["integrity"]["keys"]))
            cp = data.get("checkpoint")
            checkpoint = None if cp is None else CheckpointKey(cp["origin"], base64.b64decode(cp["seed"], validate=True))
            if checkpoint is not None and len(checkpoint.seed) != 32:
                raise KeyFileError(f"key file {path}: the checkpoint seed is not 32 bytes")
            return cls(data["current"], keys, integrity, checkpoint)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise KeyFileError(f"key file {path} is not valid: {type(exc).__name__} {exc}") from exc


def _decode_keys(keys: dict[str, str]) -> dict[str, bytes]:
    return {kid: base64.b64decode(v, validate=True) for kid, v in keys.items()}


def _random_b64() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


def new_key_file_sections(existing: dict | None = None, key_id: str = "dev-1") -> dict:
    """A development key file: the sections `existing` lacks, made fresh
    (verifier keys already in it are never replaced)."""
    data = dict(existing or {})
    if "keys" not in data:
        data.update(current=key_id, keys={key_id: _random_b64()})
    data.setdefault("integrity", {"current": "integrity-1", "keys": {"integrity-1": _random_b64()}})
    data.setdefault("checkpoint", {"origin": "pinlife.dev/local", "seed": _random_b64()})
    return data


def write_new_key_file(path: Path, key_id: str = "dev-1") -> None:
    """A fresh random key file (every section), readable by the owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(new_key_file_sections(key_id=key_id), indent=1) + "\n")


def add_missing_sections(path: Path) -> list[str]:
    """Add the sections an older key file lacks (integrity, checkpoint);
    returns their names. Verifier keys are kept as they are."""
    data = json.loads(path.read_text())
    added = [s for s in ("integrity", "checkpoint") if s not in data]
    if added:
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(new_key_file_sections(data), indent=1) + "\n")
        os.replace(tmp, path)
    return added
