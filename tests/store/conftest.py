"""Store-layer fixtures: an EventStore on a freshly migrated database of each
backend (via tests/conftest.py's db_url), a settable clock and a writer."""

from __future__ import annotations

import pytest

from pinlife.app.batch import ThreadRunner
from pinlife.store.event_store import EventStore
from tests.clock import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(db_url):
    s = EventStore(db_url)
    yield s
    s.close()


@pytest.fixture
def writer(store, keys, clock) -> ThreadRunner:
    return ThreadRunner(store, keys, clock)
