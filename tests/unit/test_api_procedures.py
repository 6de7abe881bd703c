"""The reset procedures (DESIGN.md §2) through the servicers on the
in-memory store (tests/unit/direct.py): a counter reset (holder, legal
representative), unlock, the proxy's two visits, suspension, the
convenience-store reset, office hours and jurisdiction, the recovery
guidance of a locked answer, and bad input with every field named. The
service clock is a test clock moved between steps (Asia/Tokyo times).

Moved down from tests/e2e/test_procedures.py, which keeps one case of each
procedure's path over a real channel on each store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
import pytest

from pinlife.domain.streams import terminal_stream
from pinlife.v1 import common_pb2 as pb
from pinlife.v1 import counter_service_pb2 as cpb
from pinlife.v1 import pin_service_pb2 as ppb
from tests.clock import FakeClock
from tests.procedures import (
    CALLERS,
    CARD,
    JST,
    NAKA,
    OTHER_ID,
    PHOTO_ID,
    RESIDENT,
    SIGN,
    TUESDAY_10,
    USER,
    D,
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
from tests.rpc import field_violations, precondition_violations
from tests.unit.direct import Service


@pytest.fixture
def clock():
    return FakeClock(TUESDAY_10.astimezone(UTC))


@pytest.fixture
def service(clock):
    s = Service(clock)
    yield s
    s.close()


@pytest.fixture
def clients(service):
    return {name: service.client(terminal, office, chain) for name, (terminal, office, chain) in CALLERS.items()}


def test_a_patient_locked_out_at_a_clinic_is_told_where_and_when_then_a_clerk_resets(service, clients):
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
    types = [e.event_type for e in service.store.log.stream("card-P1")]
    assert types[-4:] == ["CounterProcedureRefused", "PinReset", "PinVerified", "PinVerificationFailed"]
    reset_event = service.store.log.stream("card-P1")[-3]
    assert reset_event.payload == {"procedure": "counter", "applicant": "holder", "documents": ["my_number_card"]}


def test_a_counter_outside_its_hours_or_wards_is_refused_and_the_refusal_recorded(service, clients, clock):
    enroll(clients["naka"], "card-H1")
    lock(clients["reader"], "card-H1", USER, "0000", 3)
    clock.now = datetime(2026, 12, 2, 3, 0, tzinfo=JST).astimezone(UTC)  # 3 a.m.
    err = refused(lambda: reset(clients["naka"], "card-H1"))
    assert "next opens 2026-12-02 08:45" in err.details()
    [violation] = precondition_violations(err)
    assert (violation.type, violation.subject) == ("OUT_OF_HOURS", f"offices/{NAKA}")
    clock.now = datetime(2026, 12, 19, 10, 0, tzinfo=JST).astimezone(UTC)  # a 3rd Saturday: ward office closed
    assert "next opens 2026-12-21 08:45" in refused(lambda: reset(clients["naka"], "card-H1")).details()
    clock.now = TUESDAY_10.astimezone(UTC)
    err = refused(lambda: reset(clients["tsurumi"], "card-H1"))
    assert "does not serve ward naka" in err.details() and "Naka Ward Office" in err.details()
    refusals = [e.payload["reason"] for e in service.store.log.stream(terminal_stream("naka-counter-01"))]
    assert refusals == ["out_of_hours", "out_of_hours"]
    assert [e.payload["reason"] for e in service.store.log.stream(terminal_stream("tsurumi-counter-01"))] == [
        "out_of_jurisdiction"
    ]
    assert reset(clients["naka"], "card-H1").pin.status == pb.PIN_STATUS_ACTIVE  # in hours, its ward: done


def test_a_legal_representative_needs_two_ids_and_a_recent_proof_of_authority(service, clients):
    enroll(clients["naka"], "card-L1")
    stale = D(type=pb.DOCUMENT_TYPE_FAMILY_REGISTER, issued_on="2026-08-31")  # more than 3 months before 2026-12-01
    err = refused(
        lambda: reset(clients["naka"], "card-L1", applicant=pb.APPLICANT_LEGAL_REPRESENTATIVE, documents=[CARD, OTHER_ID, stale])
    )
    assert {(v.type, v.subject) for v in precondition_violations(err)} == {
        ("DOCUMENT_MISSING", "documents/ids"),
        ("DOCUMENT_MISSING", "documents/public_photo_id"),
        ("DOCUMENT_STALE", "documents/authority"),
    }
    guardian = refused(
        lambda: reset(
            clients["naka"],
            "card-L1",
            applicant=pb.APPLICANT_LEGAL_REPRESENTATIVE,
            adult_ward=True,
            documents=[CARD, OTHER_ID, PHOTO_ID, D(type=pb.DOCUMENT_TYPE_FAMILY_REGISTER, issued_on="2026-11-20")],
        )
    )
    assert [v.subject for v in precondition_violations(guardian)] == ["documents/authority"]
    ok = reset(
        clients["naka"],
        "card-L1",
        applicant=pb.APPLICANT_LEGAL_REPRESENTATIVE,
        adult_ward=True,
        documents=[CARD, OTHER_ID, PHOTO_ID, D(type=pb.DOCUMENT_TYPE_ADULT_GUARDIANSHIP_CERTIFICATE, issued_on="2026-09-01")],
    )
    assert ok.pin.status == pb.PIN_STATUS_ACTIVE
    refusals = [e for e in service.store.log.stream("card-L1") if e.event_type == "CounterProcedureRefused"]
    assert len(refusals) == 2


def test_unlock_keeps_the_pin(service, clients):
    enroll(clients["naka"], "card-U1")
    lock(clients["reader"], "card-U1", USER, "0000", 3)
    req = cpb.UnlockPinRequest(
        request_id=rid(), card_id="card-U1", pin_type=USER, applicant=pb.APPLICANT_HOLDER, documents=[CARD]
    )
    assert clients["naka"].counter.UnlockPin(req, timeout=10, metadata=clients["naka"].metadata).pin.remaining_tries == 3
    assert clients["reader"].verify("card-U1", USER, "4821").check.result == pb.CHECK_RESULT_OK


def test_a_proxy_completes_the_two_visit_procedure_once(service, clients, clock):
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
    assert all(inquiry.code not in str(e.payload) for e in service.store.log.stream("card-X1"))


def test_an_inquiry_is_voided_after_wrong_codes_superseded_by_a_new_one_and_expires(service, clients, clock):
    enroll(clients["naka"], "card-X2")
    first = proxy_request(clients["naka"], "card-X2")
    err = refused(lambda: proxy_request(clients["naka"], "card-X2"))  # too soon: one form in the post at a time
    assert "INQUIRY_OPEN" in str(err.trailing_metadata()) or "is open" in err.details()
    clock.advance(minutes=61)
    second = proxy_request(clients["naka"], "card-X2")  # supersedes the first
    assert (
        proxy_complete(clients["naka"], "card-X2", first.inquiry_id, first.code).result == cpb.PROXY_RESET_RESULT_NO_OPEN_INQUIRY
    )
    wrong = "00000000" if second.code != "00000000" else "11111111"
    results = [proxy_complete(clients["naka"], "card-X2", second.inquiry_id, wrong).result for _ in range(3)]
    assert results == [cpb.PROXY_RESET_RESULT_WRONG_CODE, cpb.PROXY_RESET_RESULT_WRONG_CODE, cpb.PROXY_RESET_RESULT_VOIDED]
    assert (
        proxy_complete(clients["naka"], "card-X2", second.inquiry_id, second.code).result
        == cpb.PROXY_RESET_RESULT_NO_OPEN_INQUIRY
    )
    third = proxy_request(clients["naka"], "card-X2")  # the second was voided: none is open
    clock.advance(days=31)
    clock.now = clock.now.replace(hour=1)  # 10:00 in Tokyo, a weekday (2027-01-01 is closed: move on)
    while clock.now.astimezone(JST).weekday() >= 5 or clock.now.astimezone(JST).strftime("%m-%d") <= "01-03":
        clock.advance(days=1)
    assert proxy_complete(clients["naka"], "card-X2", third.inquiry_id, third.code).result == cpb.PROXY_RESET_RESULT_EXPIRED
    closed = [e.payload["reason"] for e in service.store.log.stream("card-X2") if e.event_type == "ProxyInquiryClosed"]
    assert closed == ["superseded", "voided", "expired"]


def test_a_holder_resets_the_signature_pin_at_a_convenience_store(service, clients, clock):
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


def test_store_refusals_expiry_counter_only_and_a_locked_proving_pin(service, clients, clock):
    enroll(clients["naka"], "card-S2")
    assert reserve(clients["app"], "card-S2", "4821").reserved
    clock.advance(hours=25)
    assert "expired" in refused(lambda: kiosk_reset(clients["kiosk"], "card-S2", "4821")).details()
    err = refused(lambda: reserve(clients["app"], "card-S2", "KX73PQ", pin_type=RESIDENT))
    assert "only at a ward office or Special Center" in err.details()
    err = refused(lambda: kiosk_reset(clients["kiosk"], "card-S2", "KX73PQ", "1111", pin_type=USER))
    assert "cannot reset the user_certificate PIN" in err.details()  # no chain allows it by default
    lock(clients["reader"], "card-S2", USER, "0000", 3)
    blocked = reserve(clients["app"], "card-S2", "4821")
    assert (blocked.reserved, blocked.check.result) == (False, pb.CHECK_RESULT_LOCKED)
    refusals = [e.payload["reason"] for e in service.store.log.stream("card-S2") if e.event_type == "ResetRefused"]
    assert refusals == ["reservation_expired", "counter_only", "counter_only"]


def test_a_lost_card_is_suspended_by_the_call_centre_answers_suspended_and_is_resumed_at_a_counter(service, clients, clock):
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
    types = [e.event_type for e in service.store.log.stream("card-Z1")]
    assert types[1:] == [  # the second verify within the window is counted, not recorded (docs/audit.md)
        "CardSuspended",
        "SuspendedCardAttempted",
        "SuspendedCardAttempted",
        "CardResumed",
        "PinVerified",
    ]
    attempts = [e.payload for e in service.store.log.stream("card-Z1") if e.event_type == "SuspendedCardAttempted"]
    assert [(a["purpose"], a["repeated"]) for a in attempts] == [("verify", 0), ("change", 0)]


def test_bad_input_to_the_procedures_is_invalid_argument_with_every_field(clients):
    enroll(clients["naka"], "card-B1")
    req = cpb.ResetPinRequest(
        request_id="x",
        card_id="card-B1",
        pin_type=USER,
        new_pin="12a",
        documents=[D(type=99), D(type=pb.DOCUMENT_TYPE_FAMILY_REGISTER, issued_on="yesterday")],
    )
    with pytest.raises(grpc.RpcError) as info:
        clients["naka"].counter.ResetPin(req, timeout=10, metadata=clients["naka"].metadata)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(info.value)) == {
        "request_id",
        "new_pin",
        "applicant",
        "documents[0].type",
        "documents[1].issued_on",
    }
    assert "12a" not in info.value.details()


def test_a_counter_is_gated_for_every_call_it_may_make_and_a_refusal_spends_no_try(service, clients, clock):
    """DESIGN §5: a stolen counter credential used at 3 a.m. must not work,
    whatever it asks; the refusal is recorded and costs the holder nothing."""
    enroll(clients["naka"], "card-G1")
    naka = clients["naka"]
    clock.now = datetime(2026, 12, 2, 3, 0, tzinfo=JST).astimezone(UTC)  # Wednesday, 3 a.m.
    change = ppb.ChangePinRequest(request_id=rid(), card_id="card-G1", pin_type=USER, current_pin="0000", new_pin="1111")
    calls = {
        "VerifyPin": lambda: naka.verify("card-G1", USER, "0000"),
        "ChangePin": lambda: naka.pins.ChangePin(change, timeout=10, metadata=naka.metadata),
        "GetPinStatus": lambda: naka.status("card-G1"),
        "EnrollCard": lambda: enroll(naka, "card-G2"),
    }
    for name, call in calls.items():
        err = refused(call)
        [violation] = precondition_violations(err)
        assert (violation.type, violation.subject) == ("OUT_OF_HOURS", f"offices/{NAKA}"), name
        assert "next opens 2026-12-02 08:45" in err.details(), name
    recorded = [(e.payload["rpc"], e.payload["reason"]) for e in service.store.log.stream(terminal_stream("naka-counter-01"))]
    assert recorded == [(name, "out_of_hours") for name in calls]
    assert [e.event_type for e in service.store.log.stream("card-G1")] == ["CardEnrolled"]  # no try spent, nothing checked
    assert service.store.log.stream("card-G2") == []
    assert clients["reader"].verify("card-G1", USER, "0000").check.remaining_tries == 2  # the reader's is the first try


def test_a_counter_acts_only_for_the_wards_its_office_serves_and_each_probe_counts_toward_its_throttle(service, clients):
    tsurumi = clients["tsurumi"]
    cards = [f"card-W{i:02d}" for i in range(11)]
    for card in cards:
        enroll(clients["naka"], card)
    err = refused(lambda: enroll(clients["naka"], "card-W99", ward="tsurumi"))  # a ward its office does not serve
    assert [v.type for v in precondition_violations(err)] == ["OUT_OF_JURISDICTION"]
    for card in cards:  # each answer proves the card exists and names its ward: a failure on that card
        err = refused(lambda card=card: tsurumi.verify(card, USER, "4821"))
        assert [v.type for v in precondition_violations(err)] == ["OUT_OF_JURISDICTION"]
        assert "Naka Ward Office" in err.details()
    with pytest.raises(grpc.RpcError) as info:  # 11 distinct cards within the window: throttled (default 10)
        tsurumi.status(cards[0])
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    types = [e.event_type for e in service.store.log.stream(terminal_stream("tsurumi-counter-01"))]
    assert types == ["CounterOutOfService"] * 11 + ["TerminalThrottled"]
    assert clients["reader"].verify(cards[0], USER, "4821").check.result == pb.CHECK_RESULT_OK  # the card itself is untouched


def test_an_enrolment_names_a_ward_that_an_office_serves(service, clients):
    with pytest.raises(grpc.RpcError) as info:
        enroll(clients["naka"], "card-A1", ward="atlantis")
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    [(field, message)] = field_violations(info.value).items()
    assert field == "ward" and "offices file" in message and "naka" in message
    assert service.store.log.stream("card-A1") == []
    enroll(clients["naka"], "card-A2", ward=None)  # no ward recorded: every office serves the card
