"""The request-rate limit at the API gate (service/api/rate_limit.py), through
the servicers on the in-memory store (tests/unit/direct.py) with a clock of
the test's own: a terminal over its role's rate gets RESOURCE_EXHAUSTED with
RetryInfo (the delay to its next token) and QuotaFailure, appends nothing,
writes no log line per call and is counted in a metric; another terminal,
and another role, are unaffected; the bucket refills. Over a real channel on
both stores: tests/e2e/test_rate_limit.py."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from structlog.testing import capture_logs

from pinlife.api.rate_limit import RateLimiter
from pinlife.app.handlers import Caller
from pinlife.domain.rate import RatePolicy
from pinlife.runtime.metrics import Metrics
from tests.clock import FakeClock
from tests.rpc import CALLS_AT, USER
from tests.unit.direct import Service, as_given

READER = Caller("medical_reader", "medical_reader-01")
OTHER_READER = Caller("medical_reader", "medical_reader-02")
COUNTER = Caller("ward_office", "ward_office-01", "naka-ward-office")
AUDITOR = Caller("auditor", "auditor-01")


class Monotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def details(err: grpc.RpcError) -> tuple[float, str]:
    """The RetryInfo delay (seconds) and the QuotaFailure subject of an error."""
    delay, subject = None, None
    for detail in rpc_status.from_call(err).details:
        info, quota = error_details_pb2.RetryInfo(), error_details_pb2.QuotaFailure()
        if detail.Unpack(info):
            delay = info.retry_delay.ToTimedelta().total_seconds()
        elif detail.Unpack(quota):
            subject = quota.violations[0].subject
    assert delay is not None and subject is not None
    return delay, subject


@pytest.fixture
def limited():
    clock, monotonic, metrics = FakeClock(CALLS_AT), Monotonic(), Metrics()
    limiter = RateLimiter({"medical_reader": RatePolicy(0.5, 2), "ward_office": None}, monotonic, metrics)
    service = Service(clock, identify=as_given, limiter=limiter)
    counter = service.client(caller=COUNTER)
    counter.enroll("card-R1", {USER: "4821"})
    yield service, monotonic, metrics
    service.close()


def test_a_terminal_over_its_rate_is_refused_with_the_delay_to_its_next_token(limited):
    service, monotonic, metrics = limited
    reader, other = service.client(caller=READER), service.client(caller=OTHER_READER)
    assert reader.verify("card-R1", USER, "4821").check.remaining_tries > 0
    assert reader.verify("card-R1", USER, "4821").check.remaining_tries > 0
    head = service.store.log.head_position()
    with capture_logs() as logs:
        for i in range(50):
            monotonic.now += 0.01
            with pytest.raises(grpc.RpcError) as err:
                reader.verify("card-R1", USER, "0000")  # a wrong PIN: would cost the holder a try
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            if i == 0:
                delay, subject = details(err.value)
                assert delay == pytest.approx(2.0 - 0.01, abs=0.002)  # 0.5 tokens/s, one token short
                assert subject == "terminal:medical_reader-01"
                assert "request rate of its role medical_reader (30/min burst 2)" in err.value.details()
        # the other reader of the same role has its own bucket
        assert other.verify("card-R1", USER, "4821").check.remaining_tries > 0
    # the 50 refused calls did nothing: no try spent, no event (the other reader's verify is the one)
    assert service.store.log.head_position() == head + 1
    # one aggregated line, not one per call
    limited_lines = [e for e in logs if e["event"] == "rate_limited"]
    assert [(e["terminal"], e["refused"]) for e in limited_lines] == [("medical_reader-01", 1)]
    assert not [e for e in logs if e["event"] == "rpc" and e.get("status") == "RESOURCE_EXHAUSTED"]
    assert metrics.registry.get_sample_value("pinlife_rate_limited_total", {"channel": "medical_reader"}) == 50
    # after two seconds a token is back
    monotonic.now += 2.0
    assert reader.verify("card-R1", USER, "4821").check.remaining_tries > 0


def test_a_refusal_line_per_terminal_and_minute_carries_the_count(limited):
    service, monotonic, _ = limited
    reader = service.client(caller=READER)
    with capture_logs() as logs:
        for _ in range(2 + 30):
            monotonic.now += 0.001
            try:
                reader.verify("card-R1", USER, "4821")
            except grpc.RpcError:
                pass
        monotonic.now += 61  # refilled by then, so empty the bucket again
        for _ in range(2 + 5):
            try:
                reader.verify("card-R1", USER, "4821")
            except grpc.RpcError:
                pass
    refused = [e["refused"] for e in logs if e["event"] == "rate_limited"]
    # the first at once; the next 29 counted into the line of the first refusal a minute on (the 4 after it, into the next)
    assert refused == [1, 29 + 1]


def test_a_role_without_a_limit_and_other_roles_are_unaffected(limited):
    service, monotonic, _ = limited
    counter, auditor = service.client(caller=COUNTER), service.client(caller=AUDITOR)
    for _ in range(30):
        counter.verify("card-R1", USER, "4821")
        auditor.status("card-R1")


def test_the_rate_comes_before_authorization_so_refusals_are_bounded_too(limited):
    """A reader calling what its role may not: PERMISSION_DENIED (recorded,
    aggregated) within its rate, RESOURCE_EXHAUSTED (nothing recorded) over it."""
    service, _, _ = limited
    reader = service.client(caller=READER)
    codes = []
    for _ in range(5):
        try:
            reader.change("card-R1", USER, "4821", "1234")
        except grpc.RpcError as err:
            codes.append(err.code())
    assert codes == [grpc.StatusCode.PERMISSION_DENIED] * 2 + [grpc.StatusCode.RESOURCE_EXHAUSTED] * 3


def test_forgotten_idle_terminals_keep_memory_bounded():
    monotonic = Monotonic()
    limiter = RateLimiter({"medical_reader": RatePolicy(1.0, 2)}, monotonic, remember=100)
    for i in range(100):
        limiter.admit(Caller("medical_reader", f"r-{i}"))
    assert len(limiter.buckets) == 100
    monotonic.now += 2.0  # every bucket has refilled: the next new terminal forgets them
    limiter.admit(Caller("medical_reader", "r-new"))
    assert set(limiter.buckets) == {"r-new"}
