"""The replay window (Policy.replay_window, 24 h; service/app/handlers.py)
through the servicers on the in-memory store: a retry within it gets the
kept answer and appends nothing; after it the id is refused INVALID_ARGUMENT
on request_id, costs nothing and appends nothing; the window runs from each
answer. A refusal the rules decided (and recorded) is kept and replayed
alike: the same code, message and details, marked in the trailing metadata
`x-pinlife-replayed: true`, the id bound to its first request. Moved down
from tests/e2e/test_replay_window.py, which keeps the
window's edges over a real channel on each store (the kept answer's time as
each store keeps it)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from pinlife.domain.policy import Policy
from pinlife.domain.streams import terminal_stream
from pinlife.v1 import common_pb2 as pb
from tests.clock import FakeClock
from tests.procedures import CALLERS, CARD, enroll, reset
from tests.rpc import field_violations, precondition_violations, replayed_refusal
from tests.unit.direct import Service

USER = pb.PIN_TYPE_USER_CERTIFICATE
WINDOW = Policy().replay_window
START = datetime(2026, 12, 1, 1, 0, tzinfo=UTC)  # a Tuesday, 10:00 in Tokyo


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def service(clock):
    s = Service(clock)
    yield s
    s.close()


@pytest.fixture
def client(service):
    return service.client("reader-07")


def test_window_is_24_hours(service):
    assert WINDOW == timedelta(hours=24)
    assert service.app.policy.replay_window == WINDOW  # the servers' default: the shipped configuration's


def test_an_answer_is_replayed_within_the_window_and_refused_after_it(service, client, clock):
    store = service.store
    client.enroll("card-R1", {USER: "4821"})
    ok_id, wrong_id = str(uuid.uuid4()), str(uuid.uuid4())
    first = client.verify("card-R1", USER, "4821", request_id=ok_id)
    assert first.check.result == pb.CHECK_RESULT_OK and not first.replayed
    wrong = client.verify("card-R1", USER, "0000", request_id=wrong_id)
    assert wrong.check.result == pb.CHECK_RESULT_WRONG_PIN and wrong.check.remaining_tries == 2
    stream = [e.event_type for e in store.log.stream("card-R1")]
    length = store.log.head_position()

    # Within the window, up to its very end: the kept answer, nothing appended.
    for by in (timedelta(0), timedelta(hours=1), WINDOW - timedelta(seconds=1)):
        clock.now = START + by
        again = client.verify("card-R1", USER, "4821", request_id=ok_id)
        assert again.replayed and again.check == first.check
        again_wrong = client.verify("card-R1", USER, "0000", request_id=wrong_id)
        assert again_wrong.replayed and again_wrong.check == wrong.check
    clock.now = START + WINDOW  # exactly the window: still replayed
    assert client.verify("card-R1", USER, "4821", request_id=ok_id).replayed
    assert [e.event_type for e in store.log.stream("card-R1")] == stream
    assert store.log.head_position() == length

    # After it: refused as reused, on request_id, and nothing appended.
    clock.now = START + WINDOW + timedelta(seconds=1)
    for rid, pin in ((ok_id, "4821"), (wrong_id, "0000")):
        with pytest.raises(grpc.RpcError) as err:
            client.verify("card-R1", USER, pin, request_id=rid)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        violations = field_violations(err.value)
        assert set(violations) == {"request_id"}, violations
        assert "24 h" in violations["request_id"]
    clock.advance(days=3)
    with pytest.raises(grpc.RpcError) as err:
        client.verify("card-R1", USER, "0000", request_id=wrong_id)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "request_id" in field_violations(err.value)
    assert [e.event_type for e in store.log.stream("card-R1")] == stream
    assert store.log.head_position() == length
    # The refused retry of the wrong try cost the holder no try.
    (state,) = client.status("card-R1", USER).pins
    assert state.consecutive_failures == 1 and state.remaining_tries == 2

    # A new request id is decided as usual.
    fresh = client.verify("card-R1", USER, "4821")
    assert fresh.check.result == pb.CHECK_RESULT_OK and not fresh.replayed
    assert store.log.head_position() == length + 1


def test_the_window_runs_from_each_answer_not_from_the_terminal(client, clock):
    """Two ids answered a day apart: at the second's time + 1 h the first is
    refused, the second replayed."""
    client.enroll("card-R2", {USER: "4821"})
    early, late = str(uuid.uuid4()), str(uuid.uuid4())
    client.verify("card-R2", USER, "4821", request_id=early)
    clock.advance(hours=20)
    answer = client.verify("card-R2", USER, "4821", request_id=late)
    clock.advance(hours=5)  # early: 25 h ago; late: 5 h ago
    with pytest.raises(grpc.RpcError) as err:
        client.verify("card-R2", USER, "4821", request_id=early)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "request_id" in field_violations(err.value)
    again = client.verify("card-R2", USER, "4821", request_id=late)
    assert again.replayed and again.check == answer.check


def refusal(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value


def same_refusal(again: grpc.RpcError, first: grpc.RpcError) -> bool:
    return (again.code(), again.details(), precondition_violations(again)) == (
        first.code(),
        first.details(),
        precondition_violations(first),
    )


def test_a_refusal_is_replayed_within_the_window_even_when_the_request_would_now_succeed(service, clock):
    store = service.store
    counter = service.client(*CALLERS["naka"])
    enroll(counter, "card-R3")
    rid = str(uuid.uuid4())
    first = refusal(lambda: reset(counter, "card-R3", documents=[], request_id=rid))
    assert first.code() == grpc.StatusCode.FAILED_PRECONDITION and not replayed_refusal(first)
    assert [(v.type, v.subject) for v in precondition_violations(first)] == [("DOCUMENT_MISSING", "documents/my_number_card")]
    stream = [e.event_type for e in store.log.stream("card-R3")]
    assert stream[-1] == "CounterProcedureRefused"
    length = store.log.head_position()

    for by, documents in ((timedelta(0), []), (timedelta(hours=1), [CARD]), (WINDOW, [CARD])):
        clock.now = START + by
        again = refusal(lambda documents=documents: reset(counter, "card-R3", documents=documents, request_id=rid))
        assert replayed_refusal(again) and same_refusal(again, first)
    assert [e.event_type for e in store.log.stream("card-R3")] == stream
    assert store.log.head_position() == length
    assert counter.verify("card-R3", USER, "4821").check.result == pb.CHECK_RESULT_OK  # never reset

    clock.now = START + WINDOW + timedelta(seconds=1)  # after it: refused as reused, as an answer is
    late = refusal(lambda: reset(counter, "card-R3", request_id=rid))
    assert late.code() == grpc.StatusCode.INVALID_ARGUMENT and "request_id" in field_violations(late)
    assert not replayed_refusal(late)
    assert reset(counter, "card-R3").pin.status == pb.PIN_STATUS_ACTIVE  # a new id: decided afresh


def test_a_refusal_recorded_on_the_terminals_stream_only_is_kept_too(service):
    """Out of jurisdiction: the counter's refusal is on its own stream, not the card's; replayed alike."""
    enroll(service.client(*CALLERS["naka"]), "card-R4")
    tsurumi = service.client(*CALLERS["tsurumi"])
    rid = str(uuid.uuid4())
    first = refusal(lambda: reset(tsurumi, "card-R4", request_id=rid))
    assert [v.type for v in precondition_violations(first)] == ["OUT_OF_JURISDICTION"], first.details()
    counter_stream = terminal_stream(CALLERS["tsurumi"][0])
    recorded = len(service.store.log.stream(counter_stream))
    again = refusal(lambda: reset(tsurumi, "card-R4", request_id=rid))
    assert replayed_refusal(again) and same_refusal(again, first)
    assert len(service.store.log.stream(counter_stream)) == recorded


def test_bad_input_and_an_unknown_card_are_not_kept(service, client):
    """Refused before anything is decided or recorded: a retry with the same id is decided afresh."""
    rid = str(uuid.uuid4())
    bad = refusal(lambda: client.verify("card-R5", USER, "48", request_id=rid))
    assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT and not replayed_refusal(bad)
    missing = refusal(lambda: client.verify("card-R5", USER, "4821", request_id=rid))
    assert missing.code() == grpc.StatusCode.NOT_FOUND and not replayed_refusal(missing)
    enroll(service.client(*CALLERS["naka"]), "card-R5")
    answer = client.verify("card-R5", USER, "4821", request_id=rid)
    assert answer.check.result == pb.CHECK_RESULT_OK and not answer.replayed
