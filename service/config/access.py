"""The access rules (TOML: the [access] tables of the configuration file, or
the access file named by PINLIFE_ACCESS_FILE): the server's TLS
material, the terminal CA, which terminal has which role and office, and the
throttling policy. Relative paths are taken from the file's folder.

    [tls]
    cert = "server.pem"            # server certificate chain (PEM)
    key = "server-key.pem"         # its private key
    client_ca = "terminal-ca.pem"  # CA that issues terminal certificates

    [throttle]
    max_distinct_cards = 10        # failures on more distinct cards than this
    window_seconds = 600           # within this window
    penalty_seconds = 900          # throttle the terminal this long

    [terminals.reader-0001]        # the certificate's common name
    role = "medical_reader"

    [terminals.naka-ward-01]
    role = "ward_office"
    office = "naka-ward"

    [terminals.kiosk-0042]
    role = "convenience_store"
    chain = "seven"                # its store chain (per-chain rules)
    revoked = true                 # certificate refused (UNAUTHENTICATED)

Read as strictly as the settings (service/config/schema.py): an unknown
section or key is refused by name with the nearest known one (`revokd`:
did you mean revoked?), every value is checked (roles, booleans, numbers in
their range), a terminal's office and chain must be the offices file's, the
TLS files must be readable PEM and the key the certificate's; every problem
at once (AccessConfigError.problems).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ..domain.access import COUNTERS, Role
from ..domain.policy import ThrottlePolicy
from ..domain.streams import TERMINAL_ID, TERMINAL_ID_MAX_LENGTH
from .offices import OfficeIds, OfficesConfigError, an_id, load_offices, read_toml
from .schema import Field, Problems, boolean, integer, nearest, one_of, read_table, string, tables, unknown
from .settings import ConfigError

if TYPE_CHECKING:
    from .settings import Settings

SECTIONS = ("tls", "throttle", "terminals")
TLS = {"cert": Field(string), "key": Field(string), "client_ca": Field(string)}
THROTTLE = {
    "max_distinct_cards": Field(integer(1, 100_000), ThrottlePolicy.max_distinct_cards),
    "window_seconds": Field(integer(1, 2_592_000), int(ThrottlePolicy.window.total_seconds())),
    "penalty_seconds": Field(integer(1, 2_592_000), int(ThrottlePolicy.penalty.total_seconds())),
}
CONFIGURABLE_ROLES = tuple(r.value for r in Role if r is not Role.DEVELOPMENT)
TERMINAL = {
    "role": Field(one_of(*CONFIGURABLE_ROLES)),
    "office": Field(an_id, None),
    "chain": Field(an_id, None),
    "revoked": Field(boolean, False),
}


class AccessConfigError(ConfigError):
    """Every problem of the access rules, each naming where it is."""


@dataclass(frozen=True)
class TerminalEntry:
    role: Role
    office: str | None = None  # counters: the office whose hours and wards apply (required)
    revoked: bool = False
    chain: str | None = None  # convenience-store kiosks: the chain


@dataclass(frozen=True)
class TlsFiles:
    cert: bytes
    key: bytes = field(repr=False)
    client_ca: bytes = b""
    key_path: Path | None = None  # where the key was read (the server checks its mode: service/keys/file_modes.py)


@dataclass(frozen=True)
class AccessConfig:
    tls: TlsFiles
    terminals: dict[str, TerminalEntry]
    throttle: ThrottlePolicy = ThrottlePolicy()


def load_access_config(path: Path, offices: OfficeIds | None = None) -> AccessConfig:
    """The access file; with `offices`, each terminal's office and chain must be one of its."""
    return parse_access_config(read_toml(path, "access file", AccessConfigError), path.parent, f"access file {path}", offices)


def access_from_settings(settings: Settings) -> AccessConfig | None:
    """The access rules of the configuration: the [access] tables of the
    configuration file, or the access file it names; None in development
    mode. The offices file is read with them, as their terminals' offices
    and chains must be its own: its problems and theirs are reported
    together (AccessConfigError, also for the offices file's alone), so
    that `serve` refuses what `config check` refuses."""
    try:
        offices: OfficeIds | None = load_offices(settings.offices_file).ids
        offices_problems: list[str] = []
    except OfficesConfigError as exc:
        offices, offices_problems = exc.ids, exc.problems
    try:
        if settings.access_tables is not None:
            access = parse_access_config(settings.access_tables, settings.config_dir or Path("."), "", offices, prefix="access.")
        elif settings.access_file is not None:
            access = load_access_config(settings.access_file, offices)
        else:
            access = None
    except AccessConfigError as exc:
        raise AccessConfigError(offices_problems + exc.problems) from None
    if offices_problems:
        raise AccessConfigError(offices_problems)
    return access


def parse_access_config(
    data: dict[str, Any], base: Path, origin: str, offices: OfficeIds | None = None, *, prefix: str = ""
) -> AccessConfig:
    """The access rules from their TOML tables (tls, throttle, terminals);
    relative paths are taken from base; every problem at once
    (AccessConfigError.problems), each `origin: where: what` with where
    prefixed (`access.` for the tables inside the configuration file)."""
    problems = Problems(origin)
    for name in data:
        if name not in SECTIONS:
            problems.add(prefix + name, unknown(name, SECTIONS, "section"))
    tls: TlsFiles | None = None
    if "tls" not in data:
        problems.add(prefix + "tls", "a [tls] section is required (mutual TLS)")
    elif (t := read_table(problems, prefix + "tls", data["tls"], TLS)) is not None:
        tls = _tls_files(problems, prefix + "tls", base, t)
    terminals: dict[str, TerminalEntry] = {}
    for terminal_id, entry in tables(problems, prefix + "terminals", data.get("terminals", {})).items():
        where = f"{prefix}terminals.{terminal_id}"
        if not TERMINAL_ID.fullmatch(terminal_id):
            problems.add(where, f"the terminal id must be 1 to {TERMINAL_ID_MAX_LENGTH} of A-Z a-z 0-9 . _ -")
        v = read_table(problems, where, entry, TERMINAL)
        if (terminal := _terminal(problems, where, v, entry, offices)) is not None:
            terminals[terminal_id] = terminal
    t = read_table(problems, prefix + "throttle", data.get("throttle", {}), THROTTLE)
    if problems or tls is None or t is None:
        raise AccessConfigError(problems.items)
    policy = ThrottlePolicy(
        max_distinct_cards=t["max_distinct_cards"],
        window=timedelta(seconds=t["window_seconds"]),
        penalty=timedelta(seconds=t["penalty_seconds"]),
    )
    return AccessConfig(tls, terminals, policy)


def _terminal(
    problems: Problems, where: str, v: dict[str, Any] | None, entry: Any, offices: OfficeIds | None
) -> TerminalEntry | None:
    """The terminal's entry (v: its values, None if some are wrong), its
    role's rules, and its office and chain those of the offices file (also
    checked when other values of the entry are wrong, from the entry itself)."""
    before = len(problems.items)
    if offices is not None and isinstance(entry, dict):
        for name, known in (("office", offices.offices), ("chain", offices.chains)):
            if isinstance(value := entry.get(name), str) and value not in known:
                problems.add(f"{where}.{name}", _not_in(value, known, name, offices.path))
    if v is None:
        return None
    role = Role(v["role"])
    if role in COUNTERS and v["office"] is None:
        problems.add(where, f"a counter terminal ({role.value}) needs its office (office = ...)")
    if role not in COUNTERS and v["office"] is not None:
        problems.add(f"{where}.office", f"only a counter terminal has an office ({', '.join(sorted(r.value for r in COUNTERS))})")
    if role is not Role.CONVENIENCE_STORE and v["chain"] is not None:
        problems.add(f"{where}.chain", f"only a {Role.CONVENIENCE_STORE.value} terminal (a kiosk) has a chain")
    if len(problems.items) != before:
        return None
    return TerminalEntry(role, v["office"], v["revoked"], v["chain"])


def _not_in(name: str, known: frozenset[str], noun: str, path: Path) -> str:
    """`'naka-ward' is not an office of offices.toml (did you mean naka-ward-office?)`."""
    article = "an" if noun[0] in "aeiou" else "a"
    guess = nearest(name, known)
    hint = f"did you mean {guess}?" if guess else f"it has {', '.join(sorted(known))}" if known else f"it has no {noun}s"
    if not guess and len(known) > 8:
        hint = f"it has {len(known)} {noun}s, none close"
    return f"{name!r} is not {article} {noun} of {path} ({hint})"


def _tls_files(problems: Problems, where: str, base: Path, t: dict[str, str]) -> TlsFiles | None:
    """The TLS files, read, parsed, and the key the certificate's: what gRPC
    would otherwise refuse only when a terminal connects."""
    raw: dict[str, bytes] = {}
    for name in TLS:
        try:
            raw[name] = (base / t[name]).read_bytes()
        except OSError as exc:
            problems.add(f"{where}.{name}", f"cannot read {base / t[name]}: {exc.strerror}")
    if len(raw) != len(TLS):
        return None
    before = len(problems.items)
    certs = _certificates(problems, f"{where}.cert", raw["cert"], base / t["cert"])
    _certificates(problems, f"{where}.client_ca", raw["client_ca"], base / t["client_ca"])
    try:
        key = serialization.load_pem_private_key(raw["key"], password=None)
    except TypeError:
        problems.add(f"{where}.key", f"{base / t['key']} is encrypted: the server needs it unencrypted (PEM), mode 0600")
    except ValueError:
        problems.add(f"{where}.key", f"{base / t['key']} is not a PEM private key")
    else:
        spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        if certs and certs[0].public_key().public_bytes(*spki) != key.public_key().public_bytes(*spki):
            problems.add(where, f"the key {base / t['key']} is not the key of the certificate {base / t['cert']}")
    if len(problems.items) != before:
        return None
    return TlsFiles(raw["cert"], raw["key"], raw["client_ca"], base / t["key"])


def _certificates(problems: Problems, where: str, pem: bytes, path: Path) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(pem)
    except ValueError:
        problems.add(where, f"{path} is not a PEM certificate")
        return []
