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
tests/store/test_answer_pruning.py.

A refusal the rules decided is kept alike (a counter reset missing the
holder's card): a retry with the same id gets the same FAILED_PRECONDITION,
marked `x-pinlife-replayed: true`, appends nothing, and still does once the
documents are complete; a kept refusal edited in the store is never
replayed (DATA_LOSS)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from sqlalchemy import select, update

from pinlife.domain.policy import Policy
from pinlife.store.tables import requests
from pinlife.v1 import common_pb2 as pb
from tests.clock import FakeClock
from tests.e2e.harness import Client, ThreadedServer
from tests.keys import INTEGRITY
from tests.procedures import CALLERS, CARD, enroll, reset
from tests.rpc import field_violations, precondition_violations, replayed_refusal

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


def naka_counter(server: ThreadedServer) -> Client:
    terminal, office, _ = CALLERS["naka"]
    return Client(server.target, terminal, office=office)


def refused_reset(counter: Client, request_id: str, documents=()) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        reset(counter, "card-R2", documents=documents, request_id=request_id)
    return err.value


def test_a_refusal_is_replayed_and_appends_nothing_even_once_the_request_would_succeed(moved):
    server, _, clock = moved
    store = server.store
    counter = naka_counter(server)
    try:
        enroll(counter, "card-R2")
        rid = str(uuid.uuid4())
        first = refused_reset(counter, rid)
        assert first.code() == grpc.StatusCode.FAILED_PRECONDITION and not replayed_refusal(first)
        assert [(v.type, v.subject) for v in precondition_violations(first)] == [("DOCUMENT_MISSING", "documents/my_number_card")]
        assert store.log.stream("card-R2")[-1].event_type == "CounterProcedureRefused"
        length = log_length(store)

        for documents in ((), (CARD,)):  # the same request, then with the holder's card now recorded
            clock.now = START + WINDOW
            again = refused_reset(counter, rid, documents)
            assert again.code() == first.code() and again.details() == first.details()
            assert precondition_violations(again) == precondition_violations(first)
            assert replayed_refusal(again)
        assert log_length(store) == length
        assert counter.verify("card-R2", USER, "4821").check.result == pb.CHECK_RESULT_OK  # never reset
        assert store.integrity.first_broken_link(INTEGRITY) is None
    finally:
        counter.close()


@pytest.mark.parametrize("forgery", ["outcome", "outcome and mac"])
def test_a_kept_refusal_edited_in_the_store_is_never_replayed(moved, forgery):
    """The refusal turned into the answer of a reset that succeeded (copied
    from another request, with or without its MAC): the retry gets DATA_LOSS
    naming the request, nothing appended, the PIN not reset."""
    server, _, _ = moved
    store = server.store
    counter = naka_counter(server)
    try:
        enroll(counter, "card-R2")
        refused_reset(counter, "refused-0001")
        reset(counter, "card-R2", documents=[CARD], request_id="reset-ok-01", new_pin="1357")
        with store.writer.begin() as conn:
            ok = conn.execute(select(requests).where(requests.c.request_id == "reset-ok-01")).one()
            forged = {"outcome": ok.outcome} | ({"mac": ok.mac} if forgery == "outcome and mac" else {})
            assert conn.execute(update(requests).where(requests.c.request_id == "refused-0001").values(**forged)).rowcount == 1
        length = log_length(store)
        err = refused_reset(counter, "refused-0001", (CARD,))
        assert err.code() == grpc.StatusCode.DATA_LOSS and "refused-0001" in err.details()
        assert log_length(store) == length
        assert counter.verify("card-R2", USER, "1357").check.result == pb.CHECK_RESULT_OK
    finally:
        counter.close()
