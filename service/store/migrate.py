"""Run the Alembic migrations programmatically (used by the CLI and tests)."""

from __future__ import annotations

from alembic import command
from alembic.config import Config

from .engine import normalize_url
from .schema_check import MIGRATIONS


def alembic_config(url: str) -> Config:
    """Alembic's configuration, made here rather than read from alembic.ini
    (which an installed package does not have; the checkout's alembic.ini is
    for `alembic revision`)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["url"] = normalize_url(url)
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    command.downgrade(alembic_config(url), revision)


def terminals_lack_macs(url: str) -> bool:
    """Whether the store has a terminals table without its mac column (a
    store before migration 0009): the migration that adds it is then
    followed by sealing the rows it finds (service/store/rechain.py)."""
    from sqlalchemy import inspect

    from .engine import make_engine

    engine = make_engine(url, pool_size=1)
    try:
        with engine.connect() as conn:
            inspector = inspect(conn)
            if not inspector.has_table("terminals"):
                return False
            return "mac" not in {c["name"] for c in inspector.get_columns("terminals")}
    finally:
        engine.dispose()
