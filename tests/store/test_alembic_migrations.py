"""pytest-alembic's checks of the migrations, on a throwaway PostgreSQL
database (and SQLite): one head, every revision upgrades from empty, each
step down and up again, and the models (service/store/tables.py) match what
the migrations build."""

from __future__ import annotations

import pytest
from pytest_alembic.tests import (  # noqa: F401 - collected here, where alembic_engine is
    test_model_definitions_match_ddl,
    test_single_head_revision,
    test_up_down_consistency,
    test_upgrade,
)

from pinlife.store.engine import make_engine


@pytest.fixture
def alembic_engine(databases, backend):
    engine = make_engine(databases.create(backend, migrate=False), pool_size=1)
    yield engine
    engine.dispose()
