"""The request-rate rule (service/domain/rate.py), without a clock: the time
is an argument. And the bound it gives: the most events one admitted call
appends, measured over each RPC's worst case through the servicers on the
in-memory store, and the events per terminal per hour of each role's
default (the table of docs/security.md and docs/operations.md)."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest

from pinlife.domain.access import Role
from pinlife.domain.pins import PinType, retry_limit
from pinlife.domain.policy import ThrottlePolicy
from pinlife.domain.rate import (
    DEFAULT_RATES,
    MAX_EVENTS_PER_CALL,
    Bucket,
    RatePolicy,
    format_rate,
    parse_rate,
    take,
)
from tests.clock import FakeClock
from tests.procedures import NAKA, SIGN, USER, enroll, kiosk_reset, proxy_complete, proxy_request, reserve
from tests.rpc import CALLS_AT
from tests.unit.direct import Service, policy

ONE_PER_SECOND = RatePolicy(1.0, 3)


def admitted(bucket: Bucket | None, rate: RatePolicy, now: float) -> tuple[Bucket, bool]:
    bucket, wait = take(bucket, rate, now)
    return bucket, wait == 0.0


def test_a_new_terminal_finds_its_bucket_full_then_waits_for_a_token():
    b, ok = admitted(None, ONE_PER_SECOND, 100.0)
    assert ok and b == Bucket(2.0, 100.0)
    b, _ = take(b, ONE_PER_SECOND, 100.0)
    b, _ = take(b, ONE_PER_SECOND, 100.0)
    assert b.tokens == 0.0
    b, wait = take(b, ONE_PER_SECOND, 100.25)
    assert wait == pytest.approx(0.75)  # until the next token, not a whole second
    b, wait = take(b, ONE_PER_SECOND, 100.5)  # a refused call takes nothing
    assert wait == pytest.approx(0.5)
    b, ok = admitted(b, ONE_PER_SECOND, 101.0)
    assert ok and b.tokens == pytest.approx(0.0)


def test_the_bucket_refills_to_its_burst_and_no_further():
    b, _ = take(None, ONE_PER_SECOND, 0.0)
    b, _ = take(b, ONE_PER_SECOND, 3600.0)  # an idle hour: 3 tokens, not 3,600
    assert b.tokens == 2.0
    for _ in range(2):
        b, wait = take(b, ONE_PER_SECOND, 3600.0)
        assert wait == 0.0
    assert take(b, ONE_PER_SECOND, 3600.0)[1] > 0


def test_a_clock_that_steps_back_refills_nothing():
    b, _ = take(None, ONE_PER_SECOND, 10.0)
    b, _ = take(b, ONE_PER_SECOND, 5.0)
    assert b == Bucket(1.0, 10.0)


@pytest.mark.parametrize("rate", [RatePolicy(1.0, 3), RatePolicy(0.2, 20), RatePolicy(50.0, 1), RatePolicy(1 / 60, 10)])
def test_over_any_interval_at_most_the_burst_and_the_refill_are_admitted(rate):
    rng = random.Random(7)
    now, bucket, times = 0.0, None, []
    for _ in range(5_000):  # a flood at random moments, most refused
        now += rng.expovariate(rate.per_second * 20)
        bucket, ok = admitted(bucket, rate, now)
        if ok:
            times.append(now)
    assert len(times) > rate.burst
    for i in range(0, len(times), 37):
        for j in range(i, min(len(times), i + 400), 13):
            assert j - i + 1 <= rate.burst + rate.per_second * (times[j] - times[i]) + 1e-9


@pytest.mark.parametrize(
    "text, rate",
    [
        ("12/min burst 20", RatePolicy(0.2, 20)),
        ("2/s burst 5", RatePolicy(2.0, 5)),
        ("0.5/sec burst 1", RatePolicy(0.5, 1)),
        ("30/h  burst 3", RatePolicy(30 / 3600, 3)),
        ("off", None),
        ("OFF", None),
    ],
)
def test_a_rate_as_configured(text, rate):
    assert parse_rate(text) == rate


@pytest.mark.parametrize(
    "text", ["", "12/min", "12 per min burst 2", "12/day burst 2", "0/s burst 1", "1/s burst 0", "-1/s burst 2"]
)
def test_a_malformed_rate_says_what_is_expected(text):
    with pytest.raises(ValueError, match="burst"):
        parse_rate(text)


def test_a_rate_reads_back_as_it_is_written():
    for rate in DEFAULT_RATES.values():
        assert parse_rate(format_rate(rate)) == rate


# The bound (docs/security.md, "Events per terminal per hour"): each role's
# default, per instance. A change to a default changes this table and the docs.
BOUND = {
    Role.MEDICAL_READER: (740, 2_220),
    Role.SELF_SERVICE: (370, 1_110),
    Role.SMARTPHONE_APP: (370, 1_110),
    Role.CONVENIENCE_STORE: (370, 1_110),
    Role.WARD_OFFICE: (1_830, 5_490),
    Role.SPECIAL_CENTER: (1_830, 5_490),
    Role.CALL_CENTER: (370, 1_110),
    Role.AUDITOR: (3_660, 10_980),
}


def test_the_documented_bound_per_role():
    assert DEFAULT_RATES[Role.DEVELOPMENT] is None  # development mode: no limit (terminals name themselves)
    for role, (calls, events) in BOUND.items():
        rate = DEFAULT_RATES[role]
        assert rate is not None
        assert (rate.calls_per_hour(), rate.events_per_hour()) == (calls, events), role


def test_an_hour_of_flood_admits_the_calls_of_the_bound():
    for role, (calls, _) in BOUND.items():
        rate = DEFAULT_RATES[role]
        assert rate is not None
        bucket, n = None, 0
        for step in range(36_000 + 1):  # a call every 100 ms for an hour, endpoints included
            bucket, ok = admitted(bucket, rate, step / 10)
            n += ok
        assert n == calls, role


# -- the most events one call appends ---------------------------------------------------


class Recorder:
    """Each call's events: the log's growth while it ran."""

    def __init__(self, service: Service):
        self.service = service
        self.most: dict[str, int] = {}

    def __call__(self, name: str, call):
        before = self.service.store.log.head_position()
        try:
            result = call()
        except Exception as exc:  # noqa: BLE001  # a refusal appends too
            result = exc
        appended = self.service.store.log.head_position() - before
        self.most[name] = max(self.most.get(name, 0), appended)
        return result


def test_the_most_events_one_call_appends_is_measured_over_each_rpcs_worst_case():
    """A throttle of 1 card so that one failure more starts it: the verify
    that both locks a PIN and starts the terminal's throttle appends the
    most (the failure and the lock on the card, TerminalThrottled on the
    terminal); two-event decisions elsewhere. Every other RPC's worst case
    appends fewer: one event (enrolment, a reset, an unlock, a suspension, a
    resumption, a refusal), or an auditor's AuditRead and the
    TerminalThrottled a status miss may start (tests/unit/test_api_throttle.py)."""
    clock = FakeClock(CALLS_AT)
    service = Service(clock, policy(clock, ThrottlePolicy(1, timedelta(hours=1), timedelta(minutes=15))))
    rec = Recorder(service)
    naka = service.client("naka-counter-01", office=NAKA)
    reader, prep = service.client("reader-01"), service.client("prep-01")
    app, kiosk = service.client("app-01"), service.client("kiosk-01", chain="example-chain")
    try:
        for card in ("card-A", "card-B", "card-C", "card-D"):
            rec("EnrollCard", lambda card=card: enroll(naka, card))
        # card-B one wrong try from its lock (by another terminal: its own window)
        for _ in range(retry_limit(PinType.USER_CERTIFICATE) - 1):
            rec("VerifyPin", lambda: prep.verify("card-B", USER, "0000"))
        rec("VerifyPin", lambda: reader.verify("card-A", USER, "0000"))  # the reader's first failing card
        rec("VerifyPin", lambda: reader.verify("card-B", USER, "0000"))  # fails, locks, throttles the reader
        assert rec.most["VerifyPin"] == 3
        # the proxy procedure: an inquiry superseded, its code wrong to the void
        rec("RequestProxyReset", lambda: proxy_request(naka, "card-C"))
        clock.advance(timedelta(hours=1))  # a re-issue supersedes only an inquiry issued an hour or more before
        inquiry = rec("RequestProxyReset", lambda: proxy_request(naka, "card-C"))
        for _ in range(3):
            rec("CompleteProxyReset", lambda: proxy_complete(naka, "card-C", inquiry.inquiry_id, "00000000"))
        # a store reset: proved, reserved; proved, reset
        rec("ReserveStoreReset", lambda: reserve(app, "card-D", "4821", pin_type=SIGN))
        rec("StoreResetPin", lambda: kiosk_reset(kiosk, "card-D", "4821", pin_type=SIGN))
        # status misses up to a throttle
        for i in range(3):
            rec("GetPinStatus", lambda i=i: app.status(f"ghost-{i}"))
    finally:
        service.close()
    assert max(rec.most.values()) == MAX_EVENTS_PER_CALL, rec.most
    assert rec.most["RequestProxyReset"] == 2 and rec.most["CompleteProxyReset"] == 2
    assert rec.most["ReserveStoreReset"] == 2 and rec.most["StoreResetPin"] == 2
