"""Signed notes and transparency-log checkpoints, as specified by C2SP
(c2sp.org/signed-note, c2sp.org/tlog-checkpoint) and implemented by Go's
golang.org/x/mod/sumdb/note, with Ed25519 keys.

A checkpoint body commits to a log's Merkle tree head:

    <origin>
    <tree size, decimal>
    <base64 of the 32-byte RFC 6962 root hash>
    [extension lines]

A signed note is its body (text ending in a newline), a blank line, and one or
more signature lines:

    — <key name> <base64(4-byte key id || Ed25519 signature of the body)>

    key id       = SHA-256(key name || "\\n" || 0x01 || 32-byte public key)[:4]
    verifier key = <key name>+<hex key id>+<base64(0x01 || public key)>

Every rejection raises NoteError (a ValueError).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import secrets
from collections.abc import Iterable
from typing import NamedTuple

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ALG_ED25519 = 0x01
MAX_SIGNATURES = 100  # per note, as Go's note.Open; the spec asks for at least 16
MAX_TREE_SIZE = 2**63 - 1  # Go's int64

_SIG_PREFIX = "\u2014 "  # em dash, space
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f]")  # ASCII controls but newline
_DECIMAL = re.compile(r"0|[1-9][0-9]*")
_HEX8 = re.compile(r"[0-9a-fA-F]{8}")


class NoteError(ValueError):
    """A malformed note, checkpoint or key; or a note no known key signed."""


# --- keys ---------------------------------------------------------------------


def _b64decode(text: str) -> bytes:
    """Standard base64 with padding, in its one canonical spelling."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise NoteError(f"bad base64: {text!r}") from None
    if base64.b64encode(raw).decode() != text:
        raise NoteError(f"non-canonical base64: {text!r}")
    return raw


def _check_text(text: str) -> None:
    """Valid UTF-8, no ASCII control characters but newline."""
    try:
        text.encode()
    except UnicodeEncodeError:
        raise NoteError("note text is not valid UTF-8") from None
    if _CONTROL.search(text):
        raise NoteError("note text has a control character")


def check_key_name(name: str) -> str:
    """The name, if it is a valid key name: non-empty, without spaces, '+' or
    control characters. NoteError otherwise."""
    if not isinstance(name, str) or not name or "+" in name or any(c.isspace() for c in name):
        raise NoteError(f"invalid key name {name!r}: it must be non-empty, with no spaces or '+'")
    _check_text(name)
    return name


def key_id(name: str, public_key: bytes) -> bytes:
    """The 4-byte id of an Ed25519 key (raw 32-byte public key) under a name."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([ALG_ED25519]) + public_key).digest()[:4]


def verifier_key(name: str, public_key: Ed25519PublicKey) -> str:
    """The verifier key string: <name>+<hex key id>+<base64(0x01 || key)>."""
    raw = public_key.public_bytes_raw()
    check_key_name(name)
    return f"{name}+{key_id(name, raw).hex()}+{base64.b64encode(bytes([ALG_ED25519]) + raw).decode()}"


class NoteVerifier(NamedTuple):
    """A parsed verifier key."""

    name: str
    key_id: bytes
    public_key: Ed25519PublicKey

    def verify(self, body: str, signature: bytes) -> bool:
        try:
            self.public_key.verify(signature, body.encode())
        except InvalidSignature:
            return False
        return True


def parse_verifier_key(vkey: str) -> NoteVerifier:
    """The NoteVerifier of a verifier key string; NoteError if malformed, of
    another algorithm, or if its key id does not match its name and key."""
    name, _, rest = vkey.partition("+")
    hash16, _, key64 = rest.partition("+")  # base64 may itself contain '+'
    check_key_name(name)
    if not _HEX8.fullmatch(hash16):
        raise NoteError(f"malformed verifier key {vkey!r}")
    key = _b64decode(key64)
    if len(key) != 33 or key[0] != ALG_ED25519:
        raise NoteError(f"verifier key {vkey!r} is not a 32-byte Ed25519 key")
    if key_id(name, key[1:]) != bytes.fromhex(hash16):
        raise NoteError(f"verifier key {vkey!r}: the key id does not match the name and key")
    return NoteVerifier(name, bytes.fromhex(hash16), Ed25519PublicKey.from_public_bytes(key[1:]))


def new_signing_seed() -> str:
    """A fresh Ed25519 private key: the base64 of its 32-byte seed."""
    return base64.b64encode(secrets.token_bytes(32)).decode()


def load_signing_key(seed_b64: str) -> Ed25519PrivateKey:
    """The Ed25519 private key of a base64 32-byte seed (RFC 8032)."""
    seed = _b64decode(seed_b64.strip())
    if len(seed) != 32:
        raise NoteError(f"an Ed25519 seed is 32 bytes, not {len(seed)}")
    return Ed25519PrivateKey.from_private_bytes(seed)


class NoteSigner:
    """Signs notes with an Ed25519 key under a key name."""

    __slots__ = ("name", "key_id", "verifier_key", "_key")

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        self.name = check_key_name(name)
        self._key = private_key
        self.key_id = key_id(name, private_key.public_key().public_bytes_raw())
        self.verifier_key = verifier_key(name, private_key.public_key())

    def sign(self, body: str) -> str:
        """The signed note: body, blank line, this key's signature line."""
        if not body.endswith("\n"):
            raise NoteError("a note's text must end with a newline")
        _check_text(body)
        sig = base64.b64encode(self.key_id + self._key.sign(body.encode())).decode()
        return f"{body}\n{_SIG_PREFIX}{self.name} {sig}\n"


def parse_signer_key(skey: str) -> NoteSigner:
    """The signer of a Go private key string (note.GenerateKey's format):
    PRIVATE+KEY+<name>+<hex key id>+<base64(0x01 || 32-byte seed)>."""
    parts = skey.split("+", 4)
    if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"] or not _HEX8.fullmatch(parts[3]):
        raise NoteError("malformed private key")
    name, hash16, key64 = parts[2:]
    check_key_name(name)
    key = _b64decode(key64)
    if len(key) != 33 or key[0] != ALG_ED25519:
        raise NoteError("the private key is not a 32-byte Ed25519 seed")
    signer = NoteSigner(name, Ed25519PrivateKey.from_private_bytes(key[1:]))
    if signer.key_id != bytes.fromhex(hash16):
        raise NoteError("the private key's id does not match its name and key")
    return signer


# --- notes --------------------------------------------------------------------


def open_note(text: str, verifier_keys: Iterable[str | NoteVerifier]) -> tuple[str, list[str]]:
    """The body of a signed note and the names of the known keys that signed
    it, in signature order. Signatures by unknown keys are ignored (key
    rotation, witnesses' cosignatures); a bad signature by a known key, or no
    signature by any known key, rejects the note."""
    known: dict[tuple[str, bytes], NoteVerifier] = {}
    for k in verifier_keys:
        v = parse_verifier_key(k) if isinstance(k, str) else k
        other = known.setdefault((v.name, v.key_id), v)
        if other.public_key.public_bytes_raw() != v.public_key.public_bytes_raw():
            raise NoteError(f"ambiguous key {v.name}+{v.key_id.hex()}")

    _check_text(text)
    split = text.rfind("\n\n")
    if split < 0:
        raise NoteError("malformed note: no blank line before the signatures")
    body, sig_block = text[: split + 1], text[split + 2 :]
    if not sig_block.endswith("\n"):
        raise NoteError("malformed note: no signature lines, or no final newline")
    lines = sig_block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"malformed note: more than {MAX_SIGNATURES} signatures")

    verified: list[str] = []
    unknown: list[str] = []
    seen: set[tuple[str, bytes]] = set()
    for line in lines:
        if not line.startswith(_SIG_PREFIX):
            raise NoteError(f"malformed note: {line!r} is not a signature line")
        name, _, sig64 = line[len(_SIG_PREFIX) :].partition(" ")
        check_key_name(name)
        sig = _b64decode(sig64)
        if len(sig) < 5:
            raise NoteError(f"malformed note: short signature by {name}")
        ident = (name, sig[:4])
        verifier = known.get(ident)
        if verifier is None:
            unknown.append(f"{name}+{sig[:4].hex()}")
            continue
        if ident in seen:
            continue
        seen.add(ident)
        if not verifier.verify(body, sig[4:]):
            raise NoteError(f"invalid signature by key {name}+{sig[:4].hex()}")
        verified.append(name)
    if not verified:
        raise NoteError(f"note has no signature by a known key (signed by {', '.join(unknown)})")
    return body, verified


# --- checkpoints --------------------------------------------------------------


class Checkpoint(NamedTuple):
    """A log's tree head: its origin, tree size and RFC 6962 root hash, and any
    extension lines (opaque, non-empty, without their newline)."""

    origin: str
    size: int
    root: bytes
    extra: tuple[str, ...] = ()

    def body(self) -> str:
        """The note text of the checkpoint (ending in a newline)."""
        for line in (self.origin, *self.extra):
            if not line or "\n" in line:
                raise NoteError(f"checkpoint line {line!r} must be non-empty and one line")
            _check_text(line)
        if isinstance(self.size, bool) or not isinstance(self.size, int) or not 0 <= self.size <= MAX_TREE_SIZE:
            raise NoteError(f"bad tree size {self.size!r}")
        if len(self.root) != 32:
            raise NoteError(f"the root hash is 32 bytes, not {len(self.root)}")
        lines = (self.origin, str(self.size), base64.b64encode(self.root).decode(), *self.extra)
        return "".join(line + "\n" for line in lines)


def parse_checkpoint(body: str) -> Checkpoint:
    """The checkpoint of a note body (as open_note returns it)."""
    _check_text(body)
    if not body.endswith("\n"):
        raise NoteError("a checkpoint ends with a newline")
    lines = body[:-1].split("\n")
    if len(lines) < 3 or not all(lines):
        raise NoteError("a checkpoint is at least three lines, none empty")
    origin, size, root64, *extra = lines
    if not _DECIMAL.fullmatch(size) or int(size) > MAX_TREE_SIZE:
        raise NoteError(f"bad tree size {size!r}: decimal, without leading zeros")
    root = _b64decode(root64)
    if len(root) != 32:
        raise NoteError(f"the root hash is 32 bytes, not {len(root)}")
    return Checkpoint(origin, int(size), root, tuple(extra))
