"""Alembic environment. The URL comes from config.attributes["url"] (set by
pinlife.store.migrate) or PINLIFE_DATABASE_URL."""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy.engine import Engine

from pinlife.store.engine import make_engine
from pinlife.store.tables import metadata

config = context.config


def _url() -> str:
    url = config.attributes.get("url") or os.environ.get("PINLIFE_DATABASE_URL")
    if not url:
        from pinlife.config.settings import DEFAULT_DATABASE_URL

        url = DEFAULT_DATABASE_URL
    return url


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")  # a Connection, or an Engine (pytest-alembic)
    if isinstance(connection, Engine):
        with connection.connect() as conn:
            context.configure(connection=conn, target_metadata=metadata)
            with context.begin_transaction():
                context.run_migrations()
        return
    if connection is not None:
        context.configure(connection=connection, target_metadata=metadata)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(_url(), pool_size=1)
    with engine.connect() as conn:
        context.configure(connection=conn, target_metadata=metadata)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
