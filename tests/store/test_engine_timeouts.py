"""PostgreSQL waits are bounded (service/store/engine.py): a new connection
to a server that never answers fails within the connect timeout, and is
classified as the store being unavailable; the server-side timeouts and the
TCP ones are set on every connection."""

from __future__ import annotations

import socket

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from pinlife.store import engine as engines
from pinlife.store.engine import make_engine
from pinlife.store.errors import is_unavailable


def test_a_connection_to_a_server_that_never_answers_fails_fast_as_unavailable():
    """The kernel completes the handshake (the listen backlog) but nothing
    ever answers the start-up message: the connect timeout ends it."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        engine = make_engine(f"postgresql://postgres@127.0.0.1:{port}/test")
        try:
            with pytest.raises(OperationalError) as err:
                with engine.connect():
                    pass
        finally:
            engine.dispose()
        assert "timeout expired" in str(err.value.orig)  # ended by the connect timeout, not by the server
        assert is_unavailable(err.value)


@pytest.mark.postgres
def test_timeouts_are_set_on_every_connection(databases):
    url = databases.create("postgres")
    writer, reader = make_engine(url, writer=True), make_engine(url)
    try:
        for engine, idle_in_transaction in ((writer, "10s"), (reader, "0")):
            with engine.connect() as conn:
                show = {
                    name: conn.execute(text(f"SHOW {name}")).scalar()
                    for name in ("statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout")
                }
                params = conn.connection.driver_connection.info.get_parameters()
            assert show == {
                "statement_timeout": "10s",
                "lock_timeout": "10s",
                "idle_in_transaction_session_timeout": idle_in_transaction,
            }
            assert params["connect_timeout"] == str(engines.CONNECT_TIMEOUT)
            assert params["tcp_user_timeout"] == str(engines.TCP_USER_TIMEOUT_MS)
            assert params["keepalives_idle"] == str(engines.KEEPALIVES_IDLE)
        assert writer.pool.timeout() == engines.POOL_TIMEOUT
    finally:
        writer.dispose()
        reader.dispose()
