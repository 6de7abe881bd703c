"""Signed notes and checkpoints (service/keys/notes.py), including interoperability
with Go's golang.org/x/mod/sumdb/note and the C2SP specification's examples."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pinlife.domain.merkle import Frontier
from pinlife.keys.notes import (
    Checkpoint,
    NoteError,
    NoteSigner,
    NoteVerifier,
    key_id,
    load_signing_key,
    new_signing_seed,
    open_note,
    parse_checkpoint,
    parse_signer_key,
    parse_verifier_key,
    verifier_key,
)

# golang.org/x/mod sumdb/note/note_test.go (TestSign, TestOpen).
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
GO_TEXT = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
GO_PETER_SIG = (
    "\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)
GO_ENOCH_SIG = "\u2014 EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n"

# c2sp.org/signed-note, "Verifier keys: Example".
C2SP_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
C2SP_NOTE = (
    "This is an example message.\n\n"
    "\u2014 example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n"
)

ORIGIN = "pinlife.example/log"
ROOT = Frontier().extend([b"a", b"b", b"c"]).root()


@pytest.fixture(scope="module")
def signer() -> NoteSigner:
    return NoteSigner(ORIGIN, Ed25519PrivateKey.generate())


def signed_checkpoint(signer: NoteSigner, size: int = 3, root: bytes = ROOT) -> str:
    return signer.sign(Checkpoint(ORIGIN, size, root).body())


# --- interoperability ---------------------------------------------------------


def test_go_signature_verifies():
    body, names = open_note(GO_TEXT + "\n" + GO_PETER_SIG, [GO_VKEY])
    assert (body, names) == (GO_TEXT, ["PeterNeumann"])


def test_go_private_key_signs_exactly_as_go_does():
    signer = parse_signer_key(GO_SKEY)
    assert signer.name == "PeterNeumann"
    assert signer.key_id.hex() == "c74f20a3"
    assert signer.verifier_key == GO_VKEY
    assert signer.sign(GO_TEXT) == GO_TEXT + "\n" + GO_PETER_SIG  # Ed25519 is deterministic


def test_go_private_key_is_an_ed25519_seed():
    seed = base64.b64decode(GO_SKEY.split("+", 4)[4])[1:]
    signer = NoteSigner("PeterNeumann", load_signing_key(base64.b64encode(seed).decode()))
    assert signer.verifier_key == GO_VKEY
    assert signer.sign(GO_TEXT) == GO_TEXT + "\n" + GO_PETER_SIG


def test_go_two_signatures_one_known_other_ignored():
    text = GO_TEXT + "\n" + GO_PETER_SIG + GO_ENOCH_SIG
    assert open_note(text, [GO_VKEY]) == (GO_TEXT, ["PeterNeumann"])
    assert open_note(text, [GO_ENOCH_VKEY]) == (GO_TEXT, ["EnochRoot"])
    assert open_note(text, [GO_VKEY, GO_ENOCH_VKEY]) == (GO_TEXT, ["PeterNeumann", "EnochRoot"])
    with pytest.raises(NoteError, match="no signature by a known key"):
        open_note(text, [])


def test_go_invalid_signature_by_known_key_rejects():
    bad = GO_PETER_SIG[:60] + "ABCD" + GO_PETER_SIG[60:]
    with pytest.raises(NoteError, match="invalid signature by key PeterNeumann\\+c74f20a3"):
        open_note(GO_TEXT + "\n" + bad, [GO_VKEY])


def test_go_repeated_signatures_count_once():
    text = GO_TEXT + "\n" + GO_PETER_SIG + GO_PETER_SIG + GO_ENOCH_SIG
    assert open_note(text, [GO_VKEY]) == (GO_TEXT, ["PeterNeumann"])


@pytest.mark.parametrize(
    "text",
    [
        GO_TEXT,
        GO_TEXT + "\n",
        GO_TEXT + "\n" + GO_PETER_SIG[:-1],
        "\x01" + GO_TEXT + "\n" + GO_PETER_SIG,
        "\udcff" + GO_TEXT + "\n" + GO_PETER_SIG,  # not UTF-8 (Go's "\xff")
        GO_TEXT + "\n" + GO_PETER_SIG.replace("PeterNeumann", "Bad Name"),
        GO_TEXT + "\n" + GO_PETER_SIG + "Unexpected line.\n",
        GO_TEXT + "\n" + GO_PETER_SIG * 101,
    ],
)
def test_go_malformed_notes(text):
    with pytest.raises(NoteError):
        open_note(text, [GO_VKEY])


def test_go_verifier_key_parses_and_manglings_do_not():
    v = parse_verifier_key(GO_VKEY)
    assert (v.name, v.key_id.hex()) == ("PeterNeumann", "c74f20a3")
    assert verifier_key(v.name, v.public_key) == GO_VKEY
    # As Go's TestNewVerifier: every proper substring, every byte bumped.
    for i in range(len(GO_VKEY) + 1):
        for j in range(i + 1, len(GO_VKEY) + 1):
            if (i, j) != (0, len(GO_VKEY)):
                with pytest.raises(NoteError):
                    parse_verifier_key(GO_VKEY[i:j])
    for i in range(len(GO_VKEY)):
        with pytest.raises(NoteError):
            parse_verifier_key(GO_VKEY[:i] + chr(ord(GO_VKEY[i]) + 1) + GO_VKEY[i + 1 :])
    with pytest.raises(NoteError):  # wrong length key, with adjusted key hash
        parse_verifier_key("PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==")
    with pytest.raises(NoteError):  # unknown algorithm, with adjusted key hash
        parse_verifier_key("PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW")


def test_go_private_key_manglings_are_rejected():
    for i in range(len(GO_SKEY)):  # every byte bumped, as Go's TestNewSigner
        with pytest.raises(NoteError):
            parse_signer_key(GO_SKEY[:i] + chr(ord(GO_SKEY[i]) + 1) + GO_SKEY[i + 1 :])
    for cut in (GO_SKEY[1:], GO_SKEY[:-1], GO_SKEY[len("PRIVATE+KEY+") :]):
        with pytest.raises(NoteError):
            parse_signer_key(cut)


def test_c2sp_example_note_verifies():
    assert open_note(C2SP_NOTE, [C2SP_VKEY]) == ("This is an example message.\n", ["example.com/foo"])


# --- round trip and tampering -------------------------------------------------


def test_checkpoint_round_trip(signer):
    note = signed_checkpoint(signer)
    assert note.startswith(f"{ORIGIN}\n3\n{base64.b64encode(ROOT).decode()}\n\n\u2014 {ORIGIN} ")
    body, names = open_note(note, [signer.verifier_key])
    assert names == [ORIGIN]
    assert parse_checkpoint(body) == Checkpoint(ORIGIN, 3, ROOT, ())


def test_verifier_key_of_signer(signer):
    v = parse_verifier_key(signer.verifier_key)
    assert isinstance(v, NoteVerifier)
    assert (v.name, v.key_id) == (ORIGIN, signer.key_id)
    assert v.key_id == key_id(ORIGIN, v.public_key.public_bytes_raw())
    assert signer.verifier_key.startswith(f"{ORIGIN}+{signer.key_id.hex()}+")
    assert open_note(signed_checkpoint(signer), [v]) == (Checkpoint(ORIGIN, 3, ROOT).body(), [ORIGIN])


def test_tampered_body_size_or_root_is_rejected(signer):
    note = signed_checkpoint(signer)
    root64 = base64.b64encode(ROOT).decode()
    other64 = base64.b64encode(bytes(32)).decode()
    for tampered in (
        note.replace("\n3\n", "\n4\n", 1),
        note.replace(root64, other64, 1),
        note.replace(ORIGIN + "\n", "pinlife.example/other\n", 1),
        "x" + note,
    ):
        assert tampered != note
        with pytest.raises(NoteError, match="invalid signature"):
            open_note(tampered, [signer.verifier_key])


def test_tampered_signature_is_rejected(signer):
    note = signed_checkpoint(signer)
    body, sig_line = note.split("\n\n")
    name, sig64 = sig_line[2:-1].split(" ")
    sig = bytearray(base64.b64decode(sig64))
    sig[10] ^= 1
    bad = f"{body}\n\n\u2014 {name} {base64.b64encode(bytes(sig)).decode()}\n"
    with pytest.raises(NoteError, match="invalid signature"):
        open_note(bad, [signer.verifier_key])
    short = f"{body}\n\n\u2014 {name} {base64.b64encode(bytes(sig[:40])).decode()}\n"
    with pytest.raises(NoteError, match="invalid signature"):
        open_note(short, [signer.verifier_key])


def test_wrong_key_is_rejected(signer):
    note = signed_checkpoint(signer)
    other_same_name = NoteSigner(ORIGIN, Ed25519PrivateKey.generate())
    with pytest.raises(NoteError, match="no signature by a known key"):
        open_note(note, [other_same_name.verifier_key])  # same name, another key id
    with pytest.raises(NoteError, match="no signature by a known key"):
        open_note(note, [GO_VKEY])


def test_ambiguous_verifier_keys_are_rejected(signer):
    v = parse_verifier_key(signer.verifier_key)
    impostor = v._replace(public_key=Ed25519PrivateKey.generate().public_key())
    with pytest.raises(NoteError, match="ambiguous"):
        open_note(signed_checkpoint(signer), [v, impostor])
    # The same key twice is no ambiguity.
    assert open_note(signed_checkpoint(signer), [signer.verifier_key, signer.verifier_key])[1] == [ORIGIN]


def test_cosigned_note_verifies_with_either_key(signer):
    witness = NoteSigner("witness.example/w1", Ed25519PrivateKey.generate())
    note = signed_checkpoint(signer)
    body = note.split("\n\n")[0] + "\n"
    cosigned = note + witness.sign(body)[len(body) + 1 :]
    assert open_note(cosigned, [witness.verifier_key]) == (body, ["witness.example/w1"])
    assert open_note(cosigned, [signer.verifier_key, witness.verifier_key])[1] == [ORIGIN, "witness.example/w1"]


def test_missing_blank_line_or_signatures_is_malformed(signer):
    note = signed_checkpoint(signer)
    body, sig_line = note.split("\n\n")
    with pytest.raises(NoteError, match="no blank line"):
        open_note(body + "\n" + sig_line, [signer.verifier_key])
    with pytest.raises(NoteError, match="no signature lines"):
        open_note(body + "\n\n", [signer.verifier_key])
    with pytest.raises(NoteError, match="not a signature line"):
        open_note(body + "\n\n" + sig_line.replace("\u2014", "-", 1), [signer.verifier_key])


def test_note_text_may_contain_blank_lines(signer):
    body = "first\n\nsecond\n"
    assert open_note(signer.sign(body), [signer.verifier_key]) == (body, [ORIGIN])


def test_sign_rejects_bad_text(signer):
    for body in ("no final newline", "tab\there\n", ""):
        with pytest.raises(NoteError):
            signer.sign(body)


# --- checkpoints --------------------------------------------------------------


def test_checkpoint_body_format():
    assert Checkpoint("o", 0, bytes(32)).body() == "o\n0\n" + "A" * 43 + "=\n"
    assert Checkpoint("o", 12, ROOT, ("ext one", "ext two")).body().endswith("\next one\next two\n")


def test_checkpoint_extension_lines_are_kept():
    cp = Checkpoint("example.com/behind-the-sofa", 20852163, ROOT, ("a", "b c"))
    assert parse_checkpoint(cp.body()) == cp


def test_c2sp_example_checkpoint_body_parses():
    body = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    cp = parse_checkpoint(body)
    assert (cp.origin, cp.size, cp.extra) == ("example.com/behind-the-sofa", 20852163, ())
    assert cp.root == base64.b64decode("CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=")
    assert cp.body() == body


R64 = base64.b64encode(ROOT).decode()


@pytest.mark.parametrize(
    "body",
    [
        f"o\n3\n{R64}",  # no final newline
        "o\n3\n",  # too few lines
        f"o\n3\n{R64}\n\n",  # an empty line (a missing blank-line split shows up here)
        f"o\n3\n{R64}\n\next\n",  # an empty extension line
        f"\n3\n{R64}\n",  # empty origin
        f"o\nthree\n{R64}\n",  # non-decimal size
        f"o\n03\n{R64}\n",  # leading zero
        f"o\n00\n{R64}\n",
        f"o\n-3\n{R64}\n",
        f"o\n+3\n{R64}\n",
        f"o\n 3\n{R64}\n",
        f"o\n3_0\n{R64}\n",
        f"o\n\u0663\n{R64}\n",  # an Arabic-Indic digit: int() would take it
        f"o\n{2**63}\n{R64}\n",  # beyond int64
        "o\n3\nnot base64!\n",  # bad base64
        f"o\n3\n{R64[:-1]}\n",  # bad padding
        f"o\n3\n{base64.b64encode(ROOT[:31]).decode()}\n",  # 31 bytes
        f"o\n3\n{base64.b64encode(ROOT + b'x').decode()}\n",  # 33 bytes
        f"o\n3\n{R64}\nbad\x00ext\n",  # control character
    ],
)
def test_parse_checkpoint_rejects(body):
    with pytest.raises(NoteError):
        parse_checkpoint(body)


def test_parse_checkpoint_accepts_size_zero_and_max():
    assert parse_checkpoint(f"o\n0\n{R64}\n").size == 0
    assert parse_checkpoint(f"o\n{2**63 - 1}\n{R64}\n").size == 2**63 - 1


@pytest.mark.parametrize(
    "cp",
    [
        Checkpoint("", 1, ROOT),
        Checkpoint("two\nlines", 1, ROOT),
        Checkpoint("o", -1, ROOT),
        Checkpoint("o", 2**63, ROOT),
        Checkpoint("o", 1, ROOT[:31]),
        Checkpoint("o", 1, ROOT, ("",)),
        Checkpoint("o", 1, ROOT, ("a\nb",)),
    ],
)
def test_checkpoint_body_rejects_bad_fields(cp):
    with pytest.raises(NoteError):
        cp.body()


def test_errors_are_value_errors():
    assert issubclass(NoteError, ValueError)


# --- keys ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["", "has space", "has+plus", "tab\tname", "nbsp\u00a0name", "nul\x00"])
def test_key_names_are_validated(name):
    with pytest.raises(NoteError):
        NoteSigner(name, Ed25519PrivateKey.generate())


def test_signing_seed_round_trip():
    seed = new_signing_seed()
    assert len(base64.b64decode(seed)) == 32
    a, b = load_signing_key(seed), load_signing_key(seed)
    assert a.public_key().public_bytes_raw() == b.public_key().public_bytes_raw()
    assert NoteSigner("n", a).sign("x\n") == NoteSigner("n", b).sign("x\n")
    assert new_signing_seed() != seed


@pytest.mark.parametrize("seed", ["", "AAAA", base64.b64encode(bytes(31)).decode(), "not base64", "A" * 43])
def test_load_signing_key_rejects_bad_seeds(seed):
    with pytest.raises(NoteError):
        load_signing_key(seed)
