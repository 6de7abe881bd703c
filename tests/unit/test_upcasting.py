"""Old stored shapes are read as the current event classes (upcasting.py)."""

from __future__ import annotations

import pytest

from pinlife.domain.chain import canonical, link_hash
from pinlife.domain.events import (
    EVENT_TYPES,
    CardEnrolled,
    CounterOutOfService,
    CounterProcedure,
    CounterProcedureRefused,
    InquiryCloseReason,
    PinReset,
    PinVerified,
    ProxyInquiryClosed,
    ProxyInquiryCodeRejected,
    RefusalReason,
    ResetProcedure,
    ResetRefused,
)
from pinlife.domain.pins import PinType
from pinlife.domain.upcasting import UPCASTERS, UnknownEventShape, event_from_stored, upcast

USER, SIGNATURE = PinType.USER_CERTIFICATE, PinType.SIGNATURE


def test_a_version_1_card_enrolled_reads_as_the_current_class_without_a_ward():
    event = event_from_stored("CardEnrolled", 1, None, {"pin_types": ["user_certificate", "signature"]})
    assert event == CardEnrolled((USER, SIGNATURE), ward=None)


def test_a_current_payload_is_read_as_it_is():
    payload = {"pin_types": ["user_certificate"], "ward": "naka"}
    assert event_from_stored("CardEnrolled", 2, None, payload) == CardEnrolled((USER,), "naka")
    assert upcast("PinVerified", 1, {}) == {}
    assert event_from_stored("PinVerified", 1, "user_certificate", {}) == PinVerified(USER)


def test_a_version_1_wrong_proxy_code_reads_as_not_counted_per_day():
    payload = {"inquiry_id": "inq-1", "wrong_codes": 2, "remaining": 1}
    event = event_from_stored("ProxyInquiryCodeRejected", 1, "user_certificate", payload)
    assert event == ProxyInquiryCodeRejected(USER, "inq-1", 2, 1, wrong_codes_today=0)
    assert event.payload() == {**payload, "wrong_codes_today": 0}


def test_every_old_version_of_every_event_type_has_an_upcaster():
    for name, cls in EVENT_TYPES.items():
        for version in range(1, cls.schema_version):
            assert (name, version) in UPCASTERS, f"{name} v{version} cannot be read"


@pytest.mark.parametrize(
    "type_name, version, message",
    [("CardEnrolled", 3, "newer than this release"), ("CardCloned", 1, "unknown event type")],
)
def test_a_shape_this_release_cannot_read_is_refused_by_name(type_name, version, message):
    with pytest.raises(UnknownEventShape, match=message):
        upcast(type_name, version, {"pin_types": []})


# -- the stored vocabulary (events.py): enums whose values are stored words -------------------

STORED_WORDS = {
    RefusalReason: {
        "out_of_hours",
        "out_of_jurisdiction",
        "unknown_office",
        "counter_only",
        "store_closed",
        "no_reservation",
        "reservation_expired",
        "no_open_inquiry",
        "proxy_codes_exhausted",
        "inquiry_open",
    },
    ResetProcedure: {"counter", "proxy", "store_reservation", "convenience_store", "proxy_inquiry"},
    CounterProcedure: {"reset", "unlock", "resume", "proxy_inquiry", "proxy_completion"},
    InquiryCloseReason: {"superseded", "voided", "expired"},
}


@pytest.mark.parametrize("vocabulary", STORED_WORDS)
def test_the_stored_words_never_change(vocabulary):
    """Stored in payloads and covered by the keyed chain: a renamed value would break every link made over it."""
    assert {m.value for m in vocabulary} == STORED_WORDS[vocabulary]


def test_the_api_violation_types_are_the_upper_cased_refusal_reasons():
    assert [r.violation_type for r in RefusalReason] == [
        "OUT_OF_HOURS",
        "OUT_OF_JURISDICTION",
        "UNKNOWN_OFFICE",
        "COUNTER_ONLY",
        "STORE_CLOSED",
        "NO_RESERVATION",
        "RESERVATION_EXPIRED",
        "NO_OPEN_INQUIRY",
        "PROXY_CODES_EXHAUSTED",
        "INQUIRY_OPEN",
    ]
    assert all(type(r.violation_type) is str for r in RefusalReason)


def test_an_event_with_words_stores_the_bytes_of_the_plain_strings():
    given = ResetRefused(SIGNATURE, ResetProcedure.CONVENIENCE_STORE, RefusalReason.STORE_CLOSED)
    as_strings = ResetRefused(SIGNATURE, "convenience_store", "store_closed")
    payload = given.payload()
    assert payload == {"procedure": "convenience_store", "reason": "store_closed", "repeated": 0}
    assert all(type(payload[k]) is str for k in ("procedure", "reason"))
    envelope = {"card_id": "card-1", "version": 3, "type": "ResetRefused", "payload": payload}
    assert canonical(envelope) == canonical({**envelope, "payload": as_strings.payload()})
    assert b'"payload":{"procedure":"convenience_store","reason":"store_closed","repeated":0}' in canonical(envelope)
    assert link_hash(b"k" * 32, "0" * 64, 7, envelope) == link_hash(
        b"k" * 32,
        "0" * 64,
        7,
        {**envelope, "payload": {"procedure": "convenience_store", "reason": "store_closed", "repeated": 0}},
    )


@pytest.mark.parametrize(
    "event",
    [
        ResetRefused(SIGNATURE, ResetProcedure.CONVENIENCE_STORE, RefusalReason.NO_RESERVATION),
        ResetRefused(USER, ResetProcedure.PROXY, RefusalReason.NO_OPEN_INQUIRY),
        PinReset(USER, ResetProcedure.COUNTER, "holder", ("my_number_card",)),
        CounterProcedureRefused(CounterProcedure.PROXY_COMPLETION, ("documents/inquiry_form",)),
        ProxyInquiryClosed(USER, "inq-1", InquiryCloseReason.VOIDED),
        CounterOutOfService("ResetPin", "card-1", RefusalReason.OUT_OF_HOURS),
        CounterProcedureRefused(CounterProcedure.RESET, ("documents/ids",), USER, 7),
        ResetRefused(USER, ResetProcedure.PROXY_INQUIRY, RefusalReason.INQUIRY_OPEN, 2),
    ],
)
def test_a_stored_word_reads_back_as_its_member(event):
    pin_type = getattr(event, "pin_type", None)
    rebuilt = event_from_stored(event.type_name, event.schema_version, pin_type.value if pin_type else None, event.payload())
    assert rebuilt == event
    assert all(type(getattr(rebuilt, f)) is type(getattr(event, f)) for f in ("procedure", "reason") if hasattr(event, f))


def test_an_unknown_stored_word_reads_as_stored_not_as_a_crash():
    event = event_from_stored("ResetRefused", 1, "signature", {"procedure": "kiosk", "reason": "bored"})
    assert (event.procedure, event.reason) == ("kiosk", "bored")
    assert type(event.procedure) is str and type(event.reason) is str
    assert event.payload() == {"procedure": "kiosk", "reason": "bored", "repeated": 0}  # upcast from v1
    closed = event_from_stored("ProxyInquiryClosed", 1, "user_certificate", {"inquiry_id": "inq-1", "reason": "lost"})
    assert closed.reason == "lost" and not isinstance(closed.reason, InquiryCloseReason)


# -- aggregated events (service/domain/repeats.py): v2 added `repeated` ------------------------


@pytest.mark.parametrize(
    "type_name, pin_type, v1",
    [
        ("LockedPinAttempted", "signature", {"purpose": "verify"}),
        ("SuspendedCardAttempted", "signature", {"purpose": "change"}),
        ("ResetRefused", "signature", {"procedure": "convenience_store", "reason": "store_closed"}),
        ("CounterOutOfService", None, {"rpc": "ResetPin", "card_id": "card-1", "reason": "out_of_hours"}),
        ("AuditRead", None, {"rpc": "QueryEvents", "card_id": "", "filter": "{}", "events_returned": 3}),
    ],
)
def test_a_v1_aggregated_event_reads_as_recorded_on_its_own(type_name, pin_type, v1):
    event = event_from_stored(type_name, 1, pin_type, v1)
    assert event.schema_version == 2 and event.repeated == 0
    assert event.payload() == {**v1, "repeated": 0}


def test_a_v1_counter_refusal_reads_with_no_pin_type():
    """v1 did not record the PIN type a counter refusal was for: read as None (unknown); v2 records it."""
    event = event_from_stored("CounterProcedureRefused", 1, None, {"procedure": "reset", "missing": ["documents/ids"]})
    assert event == CounterProcedureRefused(CounterProcedure.RESET, ("documents/ids",), None, 0)
    v2 = event_from_stored("CounterProcedureRefused", 2, "signature", {"procedure": "unlock", "missing": [], "repeated": 3})
    assert (v2.pin_type, v2.repeated) == (SIGNATURE, 3)


def test_an_event_that_records_a_pin_type_without_one_is_unreadable():
    with pytest.raises(ValueError, match="records a PIN type"):
        event_from_stored("LockedPinAttempted", 2, None, {"purpose": "verify", "repeated": 0})
