"""The reset procedures through the real gRPC API, on SQLite and PostgreSQL
(DESIGN.md §2): one case of each procedure's path, to show the real channel
and stores carry it (a counter reset after a lock with its recovery
guidance and a refusal's details, the proxy's two visits with the inquiry
kept by the store, the convenience-store reset with its reservation, a
suspension and its resumption), and the log after each. The service clock
is a test clock moved between steps (Asia/Tokyo times).

The procedures' rules (office hours and jurisdiction, a legal
representative's documents, unlock, an inquiry voided, superseded or
expired, the store's refusals, bad input with every field named, and the
cases above) are tested through the servicers on the in-memory store:
tests/unit/test_api_procedures.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from pinlife.v1 import common_pb2 as pb
from pinlife.v1 import counter_service_pb2 as cpb
from pinlife.v1 import pin_service_pb2 as ppb
from tests.clock import FakeClock
from tests.e2e.harness import Client, ThreadedServer
from tests.keys import INTEGRITY
from tests.procedures import (
    CALLERS,
    CARD,
    JST,
    NAKA,
    SIGN,
    TUESDAY_10,
    USER,
    enroll,
    kiosk_reset,
    lock,
    proxy_complete,
    proxy_request,
    refused,
    reserve,
    reset,
    rid,
)
from tests.rpc import precondition_violations, retry_seconds


@pytest.fixture
def clock():
    return FakeClock(TUESDAY_10.astimezone(UTC))


@pytest.fixture
def server(db_url, keys, clock):
    srv = ThreadedServer(db_url, keys, clock=clock)
    yield srv
    srv.close()


@pytest.fixture
def clients(server):
    made = {
        name: Client(server.target, terminal, office=office, chain=chain) for name, (terminal, office, chain) in CALLERS.items()
    }
    yield made
    for c in made.values():
        c.close()


def test_a_patient_locked_out_at_a_clinic_is_told_where_and_when_then_a_clerk_resets(server, clients):
    enroll(clients["naka"], "card-P1")
    locked = lock(clients["reader"], "card-P1", USER, "0000", 3)
    assert (locked.result, locked.locked_now) == (pb.CHECK_RESULT_LOCKED, True)
    rec = locked.recovery
    assert rec.route == pb.RECOVERY_ROUTE_COUNTER and list(rec.procedures) == [pb.RECOVERY_PROCEDURE_COUNTER_RESET]
    # the offices serving ward naka, earliest first: the ward office is open now, the Special Center at 11:30
    assert [o.office_id for o in rec.next_openings] == [NAKA, "special-center-yokohama"]
    assert rec.next_openings[0].opens_at.ToDatetime(UTC) == TUESDAY_10.astimezone(UTC)
    assert rec.next_openings[1].opens_at.ToDatetime(UTC) == datetime(2026, 12, 1, 11, 30, tzinfo=JST)
    assert "Naka Ward Office" in rec.description
    status = clients["naka"].status("card-P1", USER).pins[0]
    assert status.status == pb.PIN_STATUS_LOCKED and status.recovery.next_openings[0].office_id == NAKA

    # the clerk forgets to record the card: refused, naming it, and recorded
    err = refused(lambda: reset(clients["naka"], "card-P1", documents=[]))
    assert [(v.type, v.subject) for v in precondition_violations(err)] == [("DOCUMENT_MISSING", "documents/my_number_card")]
    answer = reset(clients["naka"], "card-P1")
    assert answer.pin.status == pb.PIN_STATUS_ACTIVE and answer.pin.remaining_tries == 3
    assert clients["reader"].verify("card-P1", USER, "1357").check.result == pb.CHECK_RESULT_OK
    assert clients["reader"].verify("card-P1", USER, "4821").check.result == pb.CHECK_RESULT_WRONG_PIN
    types = [e.event_type for e in server.store.log.stream("card-P1")]
    assert types[-4:] == ["CounterProcedureRefused", "PinReset", "PinVerified", "PinVerificationFailed"]
    reset_event = server.store.log.stream("card-P1")[-3]
    assert reset_event.payload == {"procedure": "counter", "applicant": "holder", "documents": ["my_number_card"]}
    assert (
        server.store.cards.rebuild() == server.store.cards.projection()
        and server.store.integrity.first_broken_link(INTEGRITY) is None
    )


def test_a_proxy_completes_the_two_visit_procedure_once(server, clients, clock):
    enroll(clients["naka"], "card-X1")
    lock(clients["reader"], "card-X1", USER, "0000", 3)
    first_id = rid()
    inquiry = proxy_request(clients["naka"], "card-X1", first_id)
    assert len(inquiry.code) == 8 and inquiry.code.isdigit() and not inquiry.replayed
    assert inquiry.expires_at.ToDatetime(UTC) == TUESDAY_10.astimezone(UTC) + timedelta(days=30)
    again = proxy_request(clients["naka"], "card-X1", first_id)  # a retry: the same inquiry, and the code is not given twice
    assert (again.replayed, again.inquiry_id, again.code) == (True, inquiry.inquiry_id, "")

    clock.advance(days=10)  # the second visit
    wrong = "00000000" if inquiry.code != "00000000" else "11111111"
    w = proxy_complete(clients["naka"], "card-X1", inquiry.inquiry_id, wrong)
    assert (w.result, w.remaining_attempts) == (cpb.PROXY_RESET_RESULT_WRONG_CODE, 2)
    done = proxy_complete(clients["naka"], "card-X1", inquiry.inquiry_id, inquiry.code)
    assert done.result == cpb.PROXY_RESET_RESULT_COMPLETED and done.pin.status == pb.PIN_STATUS_ACTIVE
    assert clients["reader"].verify("card-X1", USER, "2468").check.result == pb.CHECK_RESULT_OK
    reused = proxy_complete(clients["naka"], "card-X1", inquiry.inquiry_id, inquiry.code, "9999")
    assert reused.result == cpb.PROXY_RESET_RESULT_NO_OPEN_INQUIRY
    assert clients["reader"].verify("card-X1", USER, "2468").check.result == pb.CHECK_RESULT_OK
    # the code is in no event, and stored only as a keyed hash
    assert all(inquiry.code not in str(e.payload) for e in server.store.log.stream("card-X1"))
    assert server.store.cards.rebuild() == server.store.cards.projection()


def test_a_holder_resets_the_signature_pin_at_a_convenience_store(server, clients, clock):
    enroll(clients["naka"], "card-S1")
    locked = lock(clients["reader"], "card-S1", SIGN, "ZZZ999", 5)
    assert locked.recovery.route == pb.RECOVERY_ROUTE_CONVENIENCE_STORE_OR_COUNTER
    assert list(locked.recovery.procedures) == [
        pb.RECOVERY_PROCEDURE_CONVENIENCE_STORE_RESET,
        pb.RECOVERY_PROCEDURE_COUNTER_RESET,
    ]
    err = refused(lambda: kiosk_reset(clients["kiosk"], "card-S1", "4821"))
    assert "no reservation" in err.details()
    wrong = reserve(clients["app"], "card-S1", "0000")  # a wrong proving PIN is a failed try of the user-certificate PIN
    assert (wrong.reserved, wrong.check.result, wrong.check.remaining_tries) == (False, pb.CHECK_RESULT_WRONG_PIN, 2)
    ok = reserve(clients["app"], "card-S1", "4821")
    assert ok.reserved and ok.proving_pin_type == USER
    assert ok.expires_at.ToDatetime(UTC) == TUESDAY_10.astimezone(UTC) + timedelta(hours=24)
    clock.now = datetime(2026, 12, 1, 23, 30, tzinfo=JST).astimezone(UTC)
    assert "06:30-23:00" in refused(lambda: kiosk_reset(clients["kiosk"], "card-S1", "4821")).details()
    clock.now = datetime(2026, 12, 2, 7, 0, tzinfo=JST).astimezone(UTC)  # next morning, within 24 hours
    done = kiosk_reset(clients["kiosk"], "card-S1", "4821", "NEWPIN7")
    assert done.reset and done.check.result == pb.CHECK_RESULT_OK
    assert clients["reader"].verify("card-S1", SIGN, "newpin7").check.result == pb.CHECK_RESULT_OK
    assert "no reservation" in refused(lambda: kiosk_reset(clients["kiosk"], "card-S1", "4821")).details()  # used
    assert server.store.cards.rebuild() == server.store.cards.projection()


def test_a_lost_card_is_suspended_by_the_call_centre_answers_suspended_and_is_resumed_at_a_counter(server, clients, clock):
    enroll(clients["naka"], "card-Z1")
    clock.now = datetime(2026, 12, 5, 3, 0, tzinfo=JST).astimezone(UTC)  # Saturday, 3 a.m.: the hold line works
    req = cpb.SuspendCardRequest(request_id=rid(), card_id="card-Z1", reason=cpb.SUSPENSION_REASON_LOST)
    assert (
        clients["call"].counter.SuspendCard(req, timeout=10, metadata=clients["call"].metadata).card_status
        == pb.CARD_STATUS_SUSPENDED
    )
    answer = clients["reader"].verify("card-Z1", USER, "4821").check
    assert answer.result == pb.CHECK_RESULT_CARD_SUSPENDED and answer.recovery.route == pb.RECOVERY_ROUTE_RESUME_AT_COUNTER
    assert clients["reader"].verify("card-Z1", USER, "0000").check.remaining_tries == 3  # never checked, costs nothing
    change = ppb.ChangePinRequest(request_id=rid(), card_id="card-Z1", pin_type=USER, current_pin="4821", new_pin="1111")
    assert (
        clients["reader"].pins.ChangePin(change, timeout=10, metadata=clients["reader"].metadata).check.result
        == pb.CHECK_RESULT_CARD_SUSPENDED
    )
    err = refused(lambda: clients["naka"].status("card-Z1"))  # the counter itself is closed at 3 a.m.
    assert [v.type for v in precondition_violations(err)] == ["OUT_OF_HOURS"]
    clock.now = TUESDAY_10.astimezone(UTC) + timedelta(days=7)
    assert clients["naka"].status("card-Z1").card_status == pb.CARD_STATUS_SUSPENDED
    resume = cpb.ResumeCardRequest(request_id=rid(), card_id="card-Z1", applicant=pb.APPLICANT_HOLDER, documents=[CARD])
    assert (
        clients["naka"].counter.ResumeCard(resume, timeout=10, metadata=clients["naka"].metadata).card_status
        == pb.CARD_STATUS_ACTIVE
    )
    assert clients["reader"].verify("card-Z1", USER, "4821").check.result == pb.CHECK_RESULT_OK
    types = [e.event_type for e in server.store.log.stream("card-Z1")]
    assert types[1:] == [  # the second verify within the window is counted, not recorded (docs/audit.md)
        "CardSuspended",
        "SuspendedCardAttempted",
        "SuspendedCardAttempted",
        "CardResumed",
        "PinVerified",
    ]
    assert server.store.cards.rebuild() == server.store.cards.projection()


# -- bounds (issue 22, items 5 and 6) ------------------------------------------------------


def _exhausted(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, info.value.details()
    return info.value


def _quota_subjects(err: grpc.RpcError) -> list[str]:
    out = []
    for detail in rpc_status.from_call(err).details:
        failure = error_details_pb2.QuotaFailure()
        if detail.Unpack(failure):
            out += [v.subject for v in failure.violations]
    return out


def test_the_call_centres_suspensions_are_bounded_per_hour(server, clients, clock):
    cards = [f"card-S{i:02d}" for i in range(32)]
    for card in cards:
        enroll(clients["naka"], card)
    night = datetime(2026, 12, 5, 3, 0, tzinfo=JST).astimezone(UTC)  # Saturday, 3 a.m.

    def suspend(card):
        req = cpb.SuspendCardRequest(request_id=rid(), card_id=card, reason=cpb.SUSPENSION_REASON_LOST)
        return clients["call"].counter.SuspendCard(req, timeout=10, metadata=clients["call"].metadata)

    for i, card in enumerate(cards[:30]):  # the default: 30 an hour, one a minute here
        clock.now = night + timedelta(minutes=i)
        assert suspend(card).card_status == pb.CARD_STATUS_SUSPENDED
    clock.now = night + timedelta(minutes=30)
    err = _exhausted(lambda: suspend(cards[30]))
    assert retry_seconds(err) == 30 * 60  # the first suspension leaves the hour at 04:00
    assert _quota_subjects(err) == ["terminal/suspensions"] and "04:00:00" in err.details()
    assert clients["app"].status(cards[30]).card_status == pb.CARD_STATUS_ACTIVE  # no card suspended
    assert [e.event_type for e in server.store.log.stream(cards[30])] == ["CardEnrolled"]
    (refusal,) = [e for e in server.store.log.stream("terminal:call-centre-01") if e.event_type == "SuspensionRefused"]
    assert refusal.payload["card_id"] == cards[30] and refusal.payload["suspensions"] == 30
    clock.now = night + timedelta(minutes=60)  # 04:00: the first suspension has left the window
    assert suspend(cards[30]).card_status == pb.CARD_STATUS_SUSPENDED
    _exhausted(lambda: suspend(cards[31]))
    assert server.store.cards.rebuild() == server.store.cards.projection()


def test_wrong_proxy_codes_are_bounded_per_card_and_day_across_reissued_inquiries(server, clients, clock):
    enroll(clients["naka"], "card-G1")
    codes = []
    for wrongs in (3, 2):  # an inquiry voided at its third wrong code, re-issued, two more: five today
        inquiry = proxy_request(clients["naka"], "card-G1")
        codes.append(inquiry)
        wrong = "00000000" if inquiry.code != "00000000" else "11111111"
        for _ in range(wrongs):
            clock.advance(minutes=1)
            answer = proxy_complete(clients["naka"], "card-G1", inquiry.inquiry_id, wrong)
    assert (answer.result, answer.remaining_attempts) == (
        cpb.PROXY_RESET_RESULT_WRONG_CODE,
        0,
    )  # the inquiry takes 1, the card none
    # beyond the bound even the right code is refused, unchecked, until 00:00 in Tokyo
    err = _exhausted(lambda: proxy_complete(clients["naka"], "card-G1", inquiry.inquiry_id, inquiry.code))
    now = clock()
    assert retry_seconds(err) == int((datetime(2026, 12, 2, 0, 0, tzinfo=JST) - now).total_seconds())
    assert _quota_subjects(err) == ["card-G1/user_certificate"] and "2026-12-02 00:00" in err.details()
    stream = server.store.log.stream("card-G1")
    rejected = [e.payload["wrong_codes_today"] for e in stream if e.event_type == "ProxyInquiryCodeRejected"]
    assert rejected == [1, 2, 3, 4, 5]
    assert (stream[-1].event_type, stream[-1].payload["reason"]) == ("ResetRefused", "proxy_codes_exhausted")
    assert server.store.cards.rebuild() == server.store.cards.projection()
    clock.now = datetime(2026, 12, 2, 10, 0, tzinfo=JST).astimezone(UTC)  # the next day, the office open
    done = proxy_complete(clients["naka"], "card-G1", inquiry.inquiry_id, inquiry.code)
    assert done.result == cpb.PROXY_RESET_RESULT_COMPLETED
    assert clients["reader"].verify("card-G1", USER, "2468").check.result == pb.CHECK_RESULT_OK
    assert server.store.cards.rebuild() == server.store.cards.projection()
