"""A request id's answer is replayed only within the replay window
(Policy.replay_window, 24 h; service/app/handlers.py replay), over the real
gRPC API on SQLite and PostgreSQL, with the server's clock moved by the
test: each store keeps when an answer was given, and the window's edges
fall where they should on each (a retry at exactly 24 h is replayed, one a
second later refused INVALID_ARGUMENT on request_id), nothing appended.

The rule's other cases (every retry within the window, the refusal costing
no try, a new id decided as usual, the window running from each answer) are
tested through the servicers on the in-memory store:
tests/unit/test_api_replay.py; pruning kept answers on each store:
tests/store/test_answer_pruning.py."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from pinlife.v1 import common_pb2 as pb
from service.domain.policy import Policy
from tests.clock import FakeClock
from tests.e2e.harness import Client, ThreadedServer
from tests.keys import INTEGRITY
from tests.rpc import field_violations

USER = pb.PIN_TYPE_USER_CERTIFICATE
WINDOW = Policy().replay_window
# A Tuesday, 10:00 in Tokyo.
START = datetime(2026, 12, 1, 1, 0, tzinfo=UTC)


@pytest.fixture
def moved(db_url, keys):
    clock = FakeClock(START)
    server = ThreadedServer(db_url, keys, clock=clock)
    client = Client(server.target, terminal="reader-07")
    yield server, client, clock
    client.close()
    server.close()


def log_length(store) -> int:
    return sum(1 for _ in store.log.all_events())


def test_an_answer_is_replayed_to_the_end_of_the_window_and_refused_after_it(moved):
    server, client, clock = moved
    store = server.store
    client.enroll("card-R1", {USER: "4821"})
    rid = str(uuid.uuid4())
    wrong = client.verify("card-R1", USER, "0000", request_id=rid)
    assert wrong.check.result == pb.CHECK_RESULT_WRONG_PIN and not wrong.replayed
    length = log_length(store)

    clock.now = START + WINDOW  # exactly the window: still replayed
    again = client.verify("card-R1", USER, "0000", request_id=rid)
    assert again.replayed and again.check == wrong.check

    clock.now = START + WINDOW + timedelta(seconds=1)  # after it: refused as reused, on request_id
    with pytest.raises(grpc.RpcError) as err:
        client.verify("card-R1", USER, "0000", request_id=rid)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations = field_violations(err.value)
    assert set(violations) == {"request_id"} and "24 h" in violations["request_id"], violations
    assert log_length(store) == length
    (state,) = client.status("card-R1", USER).pins
    assert state.consecutive_failures == 1  # the refused retry cost no try
    assert store.integrity.first_broken_link(INTEGRITY) is None
    assert store.cards.projection() == store.cards.rebuild()
