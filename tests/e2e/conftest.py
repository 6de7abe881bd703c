from __future__ import annotations

import pytest

from tests.e2e.harness import Client, ThreadedServer


@pytest.fixture
def server(db_url, keys):
    srv = ThreadedServer(db_url, keys)
    yield srv
    srv.close()


@pytest.fixture
def client(server):
    c = Client(server.target)
    yield c
    c.close()
