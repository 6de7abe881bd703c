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
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from service.domain.access import COUNTERS, Role
from service.domain.policy import ThrottlePolicy
from service.domain.streams import TERMINAL_ID, TERMINAL_ID_MAX_LENGTH


class AccessConfigError(Exception):
    pass


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


def load_access_config(path: Path) -> AccessConfig:
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError as exc:
        raise AccessConfigError(f"access file {path} does not exist") from exc
    except tomllib.TOMLDecodeError as exc:
        raise AccessConfigError(f"access file {path}: {exc}") from exc
    return parse_access_config(data, path.parent, f"access file {path}")


def access_from_settings(settings) -> AccessConfig | None:
    """The access rules of the configuration: the [access] tables of the
    configuration file, or the access file it names; None in development mode."""
    if settings.access_tables is not None:
        return parse_access_config(settings.access_tables, settings.config_dir or Path("."), "[access]")
    if settings.access_file is not None:
        return load_access_config(settings.access_file)
    return None


def parse_access_config(data: dict, base: Path, origin: str) -> AccessConfig:
    """The access rules from their TOML tables (tls, throttle, terminals);
    relative paths are taken from base."""

    def read(name: str) -> bytes:
        value = data["tls"].get(name)
        if not value:
            raise AccessConfigError(f"{origin}: [tls] {name} is required")
        try:
            return (base / value).read_bytes()
        except OSError as exc:
            raise AccessConfigError(f"{origin}: cannot read [tls] {name}: {exc.strerror}") from exc

    if "tls" not in data:
        raise AccessConfigError(f"{origin}: a [tls] section is required (mutual TLS)")
    tls = TlsFiles(read("cert"), read("key"), read("client_ca"), base / data["tls"]["key"])
    terminals: dict[str, TerminalEntry] = {}
    for terminal_id, entry in data.get("terminals", {}).items():
        if not TERMINAL_ID.fullmatch(terminal_id):
            raise AccessConfigError(f"terminal id {terminal_id!r}: 1 to {TERMINAL_ID_MAX_LENGTH} of A-Z a-z 0-9 . _ -")
        try:
            role = Role(entry["role"])
        except (KeyError, ValueError) as exc:
            raise AccessConfigError(f"terminal {terminal_id}: role must be one of {[r.value for r in Role]}") from exc
        if role is Role.DEVELOPMENT:
            raise AccessConfigError(f"terminal {terminal_id}: the development role cannot be configured")
        if role in COUNTERS and not entry.get("office"):
            raise AccessConfigError(f"terminal {terminal_id}: a counter terminal needs its office (office = ...)")
        terminals[terminal_id] = TerminalEntry(role, entry.get("office"), bool(entry.get("revoked", False)), entry.get("chain"))
    t = data.get("throttle", {})
    try:
        policy = ThrottlePolicy(
            max_distinct_cards=int(t.get("max_distinct_cards", ThrottlePolicy.max_distinct_cards)),
            window=timedelta(seconds=int(t.get("window_seconds", ThrottlePolicy.window.total_seconds()))),
            penalty=timedelta(seconds=int(t.get("penalty_seconds", ThrottlePolicy.penalty.total_seconds()))),
        )
    except (TypeError, ValueError) as exc:
        raise AccessConfigError(f"{origin}: [throttle] values are whole numbers ({exc})") from exc
    if policy.max_distinct_cards < 1 or policy.window.total_seconds() <= 0 or policy.penalty.total_seconds() <= 0:
        raise AccessConfigError(f"{origin}: [throttle] values must be positive")
    return AccessConfig(tls, terminals, policy)
