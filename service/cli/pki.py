"""`pinlife pki init DIR`: mutual TLS for development and trials in one
command. A development CA, the server's certificate (its subjectAltNames:
every DNS name and IP address given, which gRPC, grpcurl and Go check; the
common name is not relied on), and a certificate per terminal of an access
file (its common name the terminal id), each key in a file of mode 0600.

    DIR/ca.pem  DIR/ca-key.pem                       the CA ([tls] client_ca; the clients' --ca)
    DIR/server.pem  DIR/server-key.pem               [tls] cert and key
    DIR/terminals/ID.pem  DIR/terminals/ID-key.pem   a terminal's --cert and --key

Run again after adding terminals: what exists is kept (a key is never
overwritten; a certificate only when it no longer fits: another key, another
CA, other names, expiring), what is missing is made. --force makes every key
and certificate anew. Production CAs: the same with OpenSSL,
docs/operations.md. Keys are ECDSA P-256, written with `cryptography`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
import re
import tempfile
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ..domain.streams import TERMINAL_ID, TERMINAL_ID_MAX_LENGTH
from ..keys.file_modes import check_private_file
from .args import default_server
from .exits import fail

CA_DAYS = 3650
RENEW_BEFORE = dt.timedelta(days=30)  # a kept certificate expiring sooner is re-issued
DNS_NAME = re.compile(r"(\*\.)?([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
PrivateKey = ec.EllipticCurvePrivateKey


class PkiError(Exception):
    pass


@dataclass
class Made:
    """What the command did, a line per file."""

    lines: list[str]

    def note(self, action: str, path: Path, what: str) -> None:
        self.lines.append(f"  {action:<8} {path}  ({what})")


# -- files ----------------------------------------------------------------------------
def _write(path: Path, data: bytes, mode: int, replace: bool) -> None:
    """`data` in `path` with `mode`: a new file is created with its mode (never
    readable by others, not even for a moment); an existing one is replaced
    only when `replace`, through a file of the same mode renamed over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not replace:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(path, mode)  # the umask may have taken bits a certificate needs
        return
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _key(path: Path, force: bool, made: Made, what: str) -> tuple[PrivateKey, bool]:
    """The private key in `path`, made (mode 0600) if missing or with --force;
    True if it is new."""
    if path.exists() and not force:
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as exc:
            raise PkiError(f"{path} is not an unencrypted PEM private key ({exc}): move it away, or --force") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise PkiError(f"{path} is not an ECDSA key (made elsewhere?): move it away, or --force")
        made.note("kept", path, what)
        if warning := check_private_file(path, production=False, what=what):
            made.lines.append(f"  warning: {warning}")
        return key, False
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    _write(path, pem, 0o600, replace=path.exists())
    made.note("made", path, f"{what}, mode 0600")
    return key, True


def _load_cert(path: Path) -> x509.Certificate | None:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return None  # unreadable or not a certificate: issued anew


def _same_key(cert: x509.Certificate, key: PrivateKey) -> bool:
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    return cert.public_key().public_bytes(serialization.Encoding.DER, public) == key.public_key().public_bytes(
        serialization.Encoding.DER, public
    )


# -- certificates ----------------------------------------------------------------------
def _builder(subject: x509.Name, issuer: x509.Name, key: PrivateKey, days: int) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))  # a little clock skew
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )


def _usage(*, sign_certs: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=sign_certs,
        crl_sign=sign_certs,
        encipher_only=False,
        decipher_only=False,
    )


@dataclass
class Ca:
    cert: x509.Certificate
    key: PrivateKey

    def issued(self, cert: x509.Certificate) -> bool:
        try:
            cert.verify_directly_issued_by(self.cert)
        except (ValueError, TypeError, InvalidSignature):
            return False
        return True

    def sign(self, subject: x509.Name, key: PrivateKey, days: int, usage: x509.ObjectIdentifier, sans=None) -> x509.Certificate:
        b = (
            _builder(subject, self.cert.subject, key, days)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_usage(), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
        )
        if sans:
            b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return b.sign(self.key, hashes.SHA256())


def _ca(out: Path, force: bool, made: Made) -> tuple[Ca, bool]:
    """The CA: its key kept or made; its certificate kept if it is this key's;
    True if the CA is new (every certificate it issued before is re-issued)."""
    key_path, cert_path = out / "ca-key.pem", out / "ca.pem"
    if cert_path.exists() and not key_path.exists() and not force:
        raise PkiError(f"{cert_path} exists without its key {key_path}: a CA made elsewhere? use another DIR, or --force")
    key, new_key = _key(key_path, force, made, "the development CA's private key: keep it to yourself")
    cert = None if new_key else _load_cert(cert_path)
    if cert is not None and _same_key(cert, key) and cert.not_valid_after_utc - RENEW_BEFORE > dt.datetime.now(dt.UTC):
        made.note("kept", cert_path, "the CA certificate: [tls] client_ca, and the clients' --ca")
        return Ca(cert, key), False
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "pinlife development"),
            x509.NameAttribute(NameOID.COMMON_NAME, "pinlife development CA"),
        ]
    )
    cert = (
        _builder(name, name, key, CA_DAYS)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_usage(sign_certs=True), critical=True)
        .sign(key, hashes.SHA256())
    )
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644, replace=cert_path.exists())
    made.note("made", cert_path, "the CA certificate: [tls] client_ca, and the clients' --ca")
    return Ca(cert, key), True


def _leaf(
    ca: Ca,
    new_ca: bool,
    cert_path: Path,
    key_path: Path,
    *,
    subject: x509.Name,
    usage: x509.ObjectIdentifier,
    sans: list[x509.GeneralName],
    days: int,
    force: bool,
    made: Made,
    what: str,
) -> None:
    """A key (kept unless missing or --force) and its certificate from the CA:
    kept if it still fits (this key, this CA, this subject and these names,
    not expiring), else issued."""
    key, new_key = _key(key_path, force, made, f"{what}'s private key")
    cert = _load_cert(cert_path)
    if cert is None:
        why = ""
    elif force or new_key or not _same_key(cert, key):
        why = "a new key"
    elif new_ca or not ca.issued(cert):
        why = "a new CA"
    elif cert.subject != subject or _sans(cert) != set(sans):
        why = "other names"
    elif cert.not_valid_after_utc - RENEW_BEFORE <= dt.datetime.now(dt.UTC):
        why = f"it expires {cert.not_valid_after_utc:%Y-%m-%d}"
    else:
        made.note("kept", cert_path, f"{what}'s certificate")
        return
    cert = ca.sign(subject, key, days, usage, sans)
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644, replace=cert_path.exists())
    until = f"until {cert.not_valid_after_utc:%Y-%m-%d}"
    made.note("issued", cert_path, f"{what}'s certificate, {until}" + (f"; re-issued: {why}" if why else ""))


def _san_list(cert: x509.Certificate) -> list[x509.GeneralName]:
    try:
        return list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        return []


def _sans(cert: x509.Certificate) -> set[x509.GeneralName]:
    return set(_san_list(cert))


# -- what to make ---------------------------------------------------------------------
def server_names(names: list[str] | None, ips: list[str] | None) -> list[x509.GeneralName]:
    """The server certificate's subjectAltNames: the DNS names and the IP
    addresses given (an address given as a name counts as an address);
    neither given: localhost and 127.0.0.1 (init keeps an existing
    certificate's names instead)."""
    if not names and not ips:
        names, ips = ["localhost"], ["127.0.0.1"]
    dns: list[str] = []
    addresses: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for name in names or ():
        try:
            addresses.append(ipaddress.ip_address(name))
            continue
        except ValueError:
            pass
        if not DNS_NAME.fullmatch(name) or len(name) > 253:
            raise PkiError(f"--server-name {name!r} is not a DNS name (letters, digits and -, labels separated by dots)")
        dns.append(name.lower())
    for ip in ips or ():
        try:
            addresses.append(ipaddress.ip_address(ip.strip("[]")))
        except ValueError:
            raise PkiError(f"--server-ip {ip!r} is not an IPv4 or IPv6 address") from None
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dict.fromkeys(dns)]
    return sans + [x509.IPAddress(a) for a in dict.fromkeys(addresses)]


def terminals_of(path: Path) -> tuple[list[str], list[str]]:
    """The terminal ids of an access file (its [terminals.*] tables), or of a
    configuration file ([access.terminals.*], or the access_file it names):
    those to certify, and those revoked."""
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise PkiError(f"cannot read --access {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise PkiError(f"--access {path}: {exc}") from None
    access = data.get("access")
    if "terminals" not in data and isinstance(access, dict):
        if "terminals" in access:
            data = access
        elif isinstance(access.get("access_file"), str):
            return terminals_of(path.parent / access["access_file"])
    tables = data.get("terminals")
    if not isinstance(tables, dict) or not tables:
        raise PkiError(f"--access {path} has no [terminals.ID] tables (docs/operations.md, mutual TLS)")
    active: list[str] = []
    revoked: list[str] = []
    for terminal_id, entry in tables.items():
        if not TERMINAL_ID.fullmatch(terminal_id):
            raise PkiError(f"{path}: terminal id {terminal_id!r}: 1 to {TERMINAL_ID_MAX_LENGTH} of A-Z a-z 0-9 . _ -")
        (revoked if isinstance(entry, dict) and entry.get("revoked") is True else active).append(terminal_id)
    return active, revoked


def _relative(path: Path, base: Path) -> str:
    return os.path.relpath(path.resolve(), base.resolve())


def _how_to_call(out: Path, sans: list[x509.GeneralName], access: Path | None, terminals: list[str]) -> list[str]:
    base = access.parent if access is not None else Path.cwd()
    tls = [
        f'cert = "{_relative(out / "server.pem", base)}"',
        f'key = "{_relative(out / "server-key.pem", base)}"',
        f'client_ca = "{_relative(out / "ca.pem", base)}"',
    ]
    where = f"in {access}" if access is not None else "in the access file (paths relative to its folder; here, to this one)"
    lines = ["", f"[tls] {where}:", "", "  [tls]", *(f"  {line}" for line in tls)]
    values = [str(s.value) for s in sans]
    first = next((v for v in ("localhost", "127.0.0.1") if v in values), values[0])  # loopback if it may be called so
    host = f"[{first}]" if ":" in first else first
    port = default_server().rpartition(":")[2]
    server = f"{host}:{port}"
    lines += [
        "",
        f"The server's certificate is for {', '.join(values)} (subjectAltNames): call it by one of them, or pass "
        "--server-name NAME (grpcurl: -authority NAME).",
        f"Serve: PINLIFE_ACCESS_FILE={access or 'access.toml'} pinlife serve",
    ]
    if terminals:
        t = terminals[0]
        cert, key = out / "terminals" / f"{t}.pem", out / "terminals" / f"{t}-key.pem"
        lines += [
            f"Call as {t} (each terminal: terminals/ID.pem and terminals/ID-key.pem):",
            f"  pinlife --server {server} --ca {out / 'ca.pem'} --cert {cert} --key {key} status CARD",
            f"  grpcurl -cacert {out / 'ca.pem'} -cert {cert} -key {key} {server} list",
        ]
    return lines


# -- the command ----------------------------------------------------------------------
def init(args: argparse.Namespace) -> None:
    try:
        lines = make(
            Path(args.dir),
            access=Path(args.access) if args.access else None,
            extra_terminals=args.terminal or [],
            names=args.server_name,
            ips=args.server_ip,
            days=args.days,
            force=args.force,
        )
    except PkiError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot write {exc.filename}: {exc.strerror}")
    print("\n".join(lines))


def make(
    out: Path,
    *,
    access: Path | None = None,
    extra_terminals: Sequence[str] = (),
    names: list[str] | None = None,
    ips: list[str] | None = None,
    days: int = 365,
    force: bool = False,
) -> list[str]:
    """The CA, the server's key and certificate, and a key and certificate
    per terminal in `out`; the lines that say what was done and what next."""
    kept = _load_cert(out / "server.pem") if not names and not ips and not force else None
    sans = list(kept_sans) if kept is not None and (kept_sans := _san_list(kept)) else server_names(names, ips)
    terminals, revoked = terminals_of(access) if access is not None else ([], [])
    for t in extra_terminals:
        if not TERMINAL_ID.fullmatch(t):
            raise PkiError(f"--terminal {t!r}: 1 to {TERMINAL_ID_MAX_LENGTH} of A-Z a-z 0-9 . _ -")
    terminals = list(dict.fromkeys([*terminals, *extra_terminals]))
    if out.exists() and not out.is_dir():
        raise PkiError(f"{out} is not a folder")
    made = Made([f"{out}:"])
    ca, new_ca = _ca(out, force, made)
    first_dns = next((str(s.value) for s in sans if isinstance(s, x509.DNSName)), str(sans[0].value))
    server_subject = x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "pinlife development"), x509.NameAttribute(NameOID.COMMON_NAME, first_dns)]
    )
    _leaf(
        ca,
        new_ca,
        out / "server.pem",
        out / "server-key.pem",
        subject=server_subject,
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
        sans=sans,
        days=days,
        force=force,
        made=made,
        what="the server",
    )
    for t in terminals:
        subject = x509.Name(
            [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "pinlife terminals"), x509.NameAttribute(NameOID.COMMON_NAME, t)]
        )
        _leaf(
            ca,
            new_ca,
            out / "terminals" / f"{t}.pem",
            out / "terminals" / f"{t}-key.pem",
            subject=subject,
            usage=ExtendedKeyUsageOID.CLIENT_AUTH,
            sans=[],
            days=days,
            force=force,
            made=made,
            what=f"terminal {t}",
        )
    for t in revoked:
        made.lines.append(f"  skipped  terminal {t} (revoked in {access})")
    if not terminals:
        made.lines.append("  no terminals: --access FILE (its [terminals.ID] tables) or --terminal ID")
    return made.lines + _how_to_call(out, sans, access, terminals)
