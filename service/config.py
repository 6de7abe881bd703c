"""Settings from the environment. Every knob has a safe default for
development; production refuses the development conveniences."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from service.clock import ClockSettingError, ServiceClock

DEFAULT_DATABASE_URL = "sqlite:///var/pinlife.db"
DEFAULT_KEY_FILE = "var/dev-keys.json"


class ConfigError(Exception):
    pass


@dataclass(frozen=True)
class Settings:
    environment: str = "development"
    database_url: str = DEFAULT_DATABASE_URL
    listen: str = "127.0.0.1:50051"
    key_file: Path = Path(DEFAULT_KEY_FILE)
    batch_max: int = 256
    log_format: str = "auto"  # auto | json | console
    access_file: Path | None = None  # TLS, terminals and roles, throttling
    writer: str = "process"  # process | thread: where group-commit batches run
    clock: str = "system"  # the service clock (service/clock.py); only "system" in production
    offices_file: Path | None = None  # offices, hours, store chains (default: service/offices.toml)

    @property
    def tls(self) -> bool:
        return self.access_file is not None

    @property
    def production(self) -> bool:
        return self.environment == "production"

    @property
    def listen_host(self) -> str:
        host, _, _ = self.listen.rpartition(":")
        return host.strip("[]")

    def service_clock(self) -> ServiceClock:
        return ServiceClock.parse(self.clock)

    def check(self) -> None:
        if self.environment not in ("development", "test", "production"):
            raise ConfigError(f"PINLIFE_ENV must be development, test or production, not {self.environment!r}")
        if self.production and not self.tls:
            raise ConfigError("production requires mutual TLS: set PINLIFE_ACCESS_FILE")
        if not self.tls and not _is_loopback(self.listen_host):
            raise ConfigError(f"plain-text development mode may only listen on loopback, not {self.listen!r}")
        if self.writer not in ("process", "thread"):
            raise ConfigError(f"PINLIFE_WRITER must be process or thread, not {self.writer!r}")
        if self.batch_max < 1:
            raise ConfigError("PINLIFE_BATCH_MAX must be at least 1")
        try:
            clock = self.service_clock()
        except ClockSettingError as exc:
            raise ConfigError(f"PINLIFE_CLOCK {exc}") from exc
        if self.production and not clock.is_system:
            raise ConfigError("production keeps the system clock: unset PINLIFE_CLOCK")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def from_env(env: dict[str, str] | None = None) -> Settings:
    env = dict(os.environ if env is None else env)
    try:
        batch_max = int(env.get("PINLIFE_BATCH_MAX", "256"))
    except ValueError as exc:
        raise ConfigError("PINLIFE_BATCH_MAX must be an integer") from exc
    settings = Settings(
        environment=env.get("PINLIFE_ENV", "development"),
        database_url=env.get("PINLIFE_DATABASE_URL", DEFAULT_DATABASE_URL),
        listen=env.get("PINLIFE_LISTEN", "127.0.0.1:50051"),
        key_file=Path(env.get("PINLIFE_KEY_FILE", DEFAULT_KEY_FILE)),
        batch_max=batch_max,
        log_format=env.get("PINLIFE_LOG_FORMAT", "auto"),
        access_file=Path(env["PINLIFE_ACCESS_FILE"]) if env.get("PINLIFE_ACCESS_FILE") else None,
        writer=env.get("PINLIFE_WRITER", "process"),
        clock=env.get("PINLIFE_CLOCK", "system"),
        offices_file=Path(env["PINLIFE_OFFICES_FILE"]) if env.get("PINLIFE_OFFICES_FILE") else None,
    )
    settings.check()
    return settings
