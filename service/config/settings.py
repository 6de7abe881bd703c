"""The service's configuration: one TOML file (`pinlife.toml`, named by
PINLIFE_CONFIG; `pinlife.example.toml` documents every key), each key
overridable by an environment variable named after it (PINLIFE_ and the
key's name in capitals: `[store] database_url` is PINLIFE_DATABASE_URL).
Every key has a safe default for development; production refuses the
development conveniences. All problems are reported at once, each naming
the key, its variable and what is wrong (`pinlife config check FILE`).

No secret lives in the file: keys and TLS private keys are files it names.
The access rules (TLS, terminals and roles, throttling) are the `[access]`
tables of this file, or the access file it names (service/config/access.py);
offices, hours and store chains are the offices file it names
(service/config/offices.py; the shipped default is service/config/offices.toml)."""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..domain.access import Role
from ..domain.lawful import CLOCK_TOLERANCE
from ..domain.rate import DEFAULT_RATES, RATE_FORMAT, RatePolicy, format_rate, parse_rate
from ..runtime.clock import ClockSettingError, ServiceClock
from .schema import unknown

DEFAULT_DATABASE_URL = "sqlite:///var/pinlife.db"
DEFAULT_KEY_FILE = "var/dev-keys.json"
ENVIRONMENTS = ("development", "test", "production")
LOG_FORMATS = ("auto", "json", "console")
LOG_LEVELS = ("debug", "info", "warning", "error")
TRACING = ("off", "console", "otlp")
WRITERS = ("process", "thread")
ACCESS_TABLES = ("tls", "throttle", "terminals")  # [access] tables given inline (service/config/access.py)


class ConfigError(Exception):
    """Every problem found, each naming its key and variable."""

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("; ".join(self.problems))


@dataclass(frozen=True)
class Key:
    section: str
    name: str
    kind: type  # str, int, float, Path (an optional path: "" is none)
    help: str
    check: Callable[[Any], str | None] = lambda value: None  # a problem, or None

    @property
    def default(self) -> Any:
        """The default is the Settings field's (one place)."""
        return _DEFAULTS[self.name]

    @property
    def var(self) -> str:
        return "PINLIFE_" + self.name.upper()

    @property
    def where(self) -> str:
        return f"{self.var} ([{self.section}] {self.name})"


def _one_of(*allowed: str) -> Callable[[Any], str | None]:
    return lambda v: None if v in allowed else f"must be {', '.join(allowed[:-1])} or {allowed[-1]}, not {v!r}"


def _at_least(low: float) -> Callable[[Any], str | None]:
    return lambda v: None if v >= low else f"must be at least {low:g}"


def _rate(v: str) -> str | None:
    try:
        parse_rate(v)
    except ValueError as exc:
        return str(exc)
    return None


def _database_url(optional: bool = False) -> Callable[[Any], str | None]:
    def check(v: str) -> str | None:
        if optional and v == "":
            return None
        # the store's own rule (the drivers it opens, the URL forms it takes); here, not at the
        # top: the client commands read settings without loading the store
        from ..store.engine import url_problem

        return url_problem(v)

    return check


def _address(optional: bool = False) -> Callable[[Any], str | None]:
    def check(v: str) -> str | None:
        if optional and v == "":
            return None
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            return f"must be HOST:PORT, not {v!r}"
        return None

    return check


# The keys, by section. Settings (below) has one field per key, same name.
KEYS: tuple[Key, ...] = (
    Key("server", "env", str, "development, test or production", _one_of(*ENVIRONMENTS)),
    Key("server", "listen", str, "gRPC address (plain text only on loopback)", _address()),
    Key("server", "metrics_listen", str, "Prometheus metrics over HTTP, HOST:PORT (empty: off)", _address(optional=True)),
    Key("server", "grace_seconds", float, "on SIGTERM, how long in-flight calls may finish", _at_least(0)),
    Key("server", "log_format", str, "auto (console on a terminal, else JSON), json or console", _one_of(*LOG_FORMATS)),
    Key(
        "server",
        "log_level",
        str,
        "debug, info, warning or error; also gRPC's, SQLAlchemy's, Alembic's lines",
        _one_of(*LOG_LEVELS),
    ),
    Key("server", "clock", str, "the service clock; only system in production (start:, shift:, fixed:)"),
    Key("store", "database_url", str, "sqlite:///FILE or postgresql://USER@HOST/DB", _database_url()),
    Key("store", "pool_size", int, "read connections per instance", _at_least(1)),
    Key("store", "writer", str, "where batches run: process (a writer process) or thread", _one_of(*WRITERS)),
    Key("store", "batch_max", int, "commands per group-commit transaction", _at_least(1)),
    Key("store", "batch_deadline_seconds", float, "a batch not committed by then fails UNAVAILABLE", _at_least(0.1)),
    Key(
        "store",
        "startup_retry_seconds",
        float,
        "how long `serve` retries a database it cannot reach at start, then exits 3",
        _at_least(0),
    ),
    Key("keys", "key_file", Path, "the verifier, integrity and checkpoint keys (mode 0600)"),
    Key("access", "access_file", Path, "TLS, terminals, roles, throttling (or the [access] tables here)"),
    Key("procedures", "offices_file", Path, "offices, hours, closures, store chains (default: the shipped one)"),
    Key("procedures", "replay_window_hours", float, "a request id's answer is replayed this long", _at_least(0.01)),
    Key(
        "audit",
        "audit_database_url",
        str,
        "where auditors' reads go, e.g. a read replica (empty: the store itself)",
        _database_url(optional=True),
    ),
    Key("audit", "audit_pool_size", int, "read connections for auditors' calls, apart from the PIN path's", _at_least(1)),
    Key(
        "audit",
        "max_integrity_runs",
        int,
        "whole-store integrity checks at once per instance (more: RESOURCE_EXHAUSTED)",
        _at_least(1),
    ),
    Key("audit", "max_watchers", int, "WatchEvents streams at once per instance", _at_least(1)),
    Key("audit", "max_watchers_per_terminal", int, "WatchEvents streams at once per auditor terminal", _at_least(1)),
    Key(
        "audit",
        "clock_skew_seconds",
        float,
        "how far instances' clocks may differ before history is judged unlawful",
        _at_least(0),
    ),
    Key("telemetry", "tracing", str, "OpenTelemetry spans: off, console (stdout) or otlp (a collector)", _one_of(*TRACING)),
    Key(
        "telemetry",
        "otlp_endpoint",
        str,
        "the collector's OTLP/gRPC URL (empty: OTEL_EXPORTER_OTLP_ENDPOINT, else localhost:4317)",
    ),
    # One request rate per role (service/domain/rate.py): [rate] rate_medical_reader, ...
    *(
        Key("rate", f"rate_{role.value}", str, f"request rate per {role.value} terminal per instance: {RATE_FORMAT}", _rate)
        for role in Role
    ),
)


@dataclass(frozen=True)
class Settings:
    env: str = "development"
    listen: str = "127.0.0.1:50051"
    metrics_listen: str = ""
    grace_seconds: float = 10.0
    log_format: str = "auto"
    log_level: str = "info"
    clock: str = "system"
    database_url: str = DEFAULT_DATABASE_URL
    pool_size: int = 4
    writer: str = "process"
    batch_max: int = 256
    batch_deadline_seconds: float = 2.0
    startup_retry_seconds: float = 30.0
    key_file: Path = Path(DEFAULT_KEY_FILE)
    access_file: Path | None = None
    offices_file: Path | None = None
    replay_window_hours: float = 24.0
    audit_database_url: str = ""
    audit_pool_size: int = 2
    max_integrity_runs: int = 1
    max_watchers: int = 128
    max_watchers_per_terminal: int = 4
    clock_skew_seconds: float = CLOCK_TOLERANCE.total_seconds()
    tracing: str = "off"
    otlp_endpoint: str = ""
    rate_medical_reader: str = format_rate(DEFAULT_RATES[Role.MEDICAL_READER])
    rate_convenience_store: str = format_rate(DEFAULT_RATES[Role.CONVENIENCE_STORE])
    rate_smartphone_app: str = format_rate(DEFAULT_RATES[Role.SMARTPHONE_APP])
    rate_self_service: str = format_rate(DEFAULT_RATES[Role.SELF_SERVICE])
    rate_ward_office: str = format_rate(DEFAULT_RATES[Role.WARD_OFFICE])
    rate_special_center: str = format_rate(DEFAULT_RATES[Role.SPECIAL_CENTER])
    rate_auditor: str = format_rate(DEFAULT_RATES[Role.AUDITOR])
    rate_call_center: str = format_rate(DEFAULT_RATES[Role.CALL_CENTER])
    rate_development: str = format_rate(DEFAULT_RATES[Role.DEVELOPMENT])
    # The [access] tables given in the configuration file itself, and the
    # folder their relative paths are taken from.
    access_tables: dict[str, Any] | None = field(default=None, compare=False, repr=False)
    config_dir: Path | None = None

    @property
    def tls(self) -> bool:
        return self.access_file is not None or self.access_tables is not None

    @property
    def environment(self) -> str:
        return self.env

    @property
    def production(self) -> bool:
        return self.env == "production"

    @property
    def listen_host(self) -> str:
        host, _, _ = self.listen.rpartition(":")
        return host.strip("[]")

    def rates(self) -> dict[str, RatePolicy | None]:
        """Each role's request rate (its channel name to its policy; None: no limit)."""
        return {role.value: parse_rate(getattr(self, f"rate_{role.value}")) for role in Role}

    def service_clock(self) -> ServiceClock:
        return ServiceClock.parse(self.clock)

    def check(self) -> None:
        if problems := self.problems():
            raise ConfigError(problems)

    def problems(self) -> list[str]:
        """The rules between keys (one key's own rule is its Key.check)."""
        problems = []
        if self.production and not self.tls:
            problems.append(
                "production requires mutual TLS: set PINLIFE_ACCESS_FILE ([access] access_file) or the [access] tables"
            )
        if not self.tls and not is_loopback(self.listen_host):
            problems.append(
                f"PINLIFE_LISTEN ([server] listen): plain-text development mode may only listen on loopback, not {self.listen!r}"
            )
        try:
            clock = self.service_clock()
        except ClockSettingError as exc:
            problems.append(f"PINLIFE_CLOCK ([server] clock) {exc}")
        else:
            if self.production and not clock.is_system:
                problems.append("PINLIFE_CLOCK ([server] clock): production keeps the system clock")
        return problems


assert [f.name for f in fields(Settings)][: len(KEYS)] == [k.name for k in KEYS], "Settings follows KEYS"
_DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(Settings)}


def is_loopback(host: str) -> bool:
    """Whether a host (a name or an address) is this machine's loopback."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _convert(key: Key, raw: Any, from_env: bool) -> Any:
    """The value of raw for key; ValueError with what is wrong."""
    if key.kind is Path:
        if not isinstance(raw, str):
            raise ValueError(f"must be a path (a string), not {raw!r}")
        return Path(raw) if raw else (None if key.default is None else key.default)
    if key.kind is str:
        if not isinstance(raw, str):
            raise ValueError(f"must be a string, not {raw!r}")
        return raw
    if key.kind is int:
        if isinstance(raw, bool) or not isinstance(raw, (int, str)):
            raise ValueError(f"must be an integer, not {raw!r}")
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f"must be an integer, not {raw!r}") from None
    if key.kind is float:
        if isinstance(raw, bool) or not isinstance(raw, (int, float, str)) or (isinstance(raw, str) and not from_env):
            raise ValueError(f"must be a number, not {raw!r}")
        try:
            return float(raw)
        except ValueError:
            raise ValueError(f"must be a number, not {raw!r}") from None
    raise AssertionError(key.kind)


def read_file(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"PINLIFE_CONFIG: {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"PINLIFE_CONFIG: cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"PINLIFE_CONFIG: {path} is not valid TOML: {exc}") from None


def load(env: dict[str, str] | None = None, path: Path | str | None = None) -> Settings:
    """The settings: the file (path, else $PINLIFE_CONFIG, else none), each
    key overridden by its variable when set. ConfigError lists every problem."""
    settings, problems = load_with_problems(env, path)
    if problems:
        raise ConfigError(problems)
    return settings


def load_with_problems(env: dict[str, str] | None = None, path: Path | str | None = None) -> tuple[Settings, list[str]]:
    """The settings, each wrong key at its default, and every problem found
    (`pinlife config check` goes on to check the other files with them);
    ConfigError only for a file that cannot be read."""
    env = dict(os.environ if env is None else env)
    path = Path(path) if path else (Path(env["PINLIFE_CONFIG"]) if env.get("PINLIFE_CONFIG") else None)
    data = read_file(path) if path else {}
    problems: list[str] = []
    values: dict[str, Any] = {}
    base = path.parent if path else None
    sections = {k.section for k in KEYS}
    for section, table in data.items():
        if section not in sections:
            problems.append(f"[{section}]: {unknown(section, sections, 'section')}")
        elif not isinstance(table, dict):
            problems.append(f"[{section}]: must be a table")
    for key in KEYS:
        table = data.get(key.section)
        table = table if isinstance(table, dict) else {}
        if key.var in env:
            raw, from_env = env[key.var], True
        elif key.name in table:
            raw, from_env = table[key.name], False
        else:
            values[key.name] = key.default
            continue
        try:
            value = _convert(key, raw, from_env)
        except ValueError as exc:
            problems.append(f"{key.where} {exc}")
            values[key.name] = key.default
            continue
        if isinstance(value, Path) and not from_env and base is not None and not value.is_absolute():
            value = base / value  # a path in the file is taken from the file's folder
        if value is not None and (problem := key.check(value)):
            problems.append(f"{key.where} {problem}")
            value = key.default
        values[key.name] = value
    for section, table in data.items():
        if not isinstance(table, dict) or section not in sections:
            continue
        known = [k.name for k in KEYS if k.section == section] + (list(ACCESS_TABLES) if section == "access" else [])
        for name in table:
            if name not in known:
                problems.append(f"[{section}] {name}: {unknown(name, known)}")
    access = data.get("access")
    if not isinstance(access, dict):
        access = {}
    tables = {name: access[name] for name in ACCESS_TABLES if name in access}
    if tables and values.get("access_file") is not None:
        problems.append("[access]: give the access tables here or name an access file, not both")
    settings = Settings(**values, access_tables=tables or None, config_dir=base)
    problems += settings.problems()
    return settings, problems


def from_env(env: dict[str, str] | None = None) -> Settings:
    """The settings from the environment (and the file PINLIFE_CONFIG names)."""
    return load(env)
