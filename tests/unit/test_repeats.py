"""Repeated refusals and attempts, aggregated per terminal, key and window
(service/domain/repeats.py): pure, given a terminal's repeats / when events
occur / then what is recorded and what is counted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pinlife.domain import repeats
from pinlife.domain.events import (
    AuditRead,
    CounterProcedureRefused,
    LockedPinAttempted,
    PinVerificationFailed,
    Purpose,
    RepeatsCounted,
    ResetRefused,
)
from pinlife.domain.pins import PinType

T0 = datetime(2026, 4, 1, 1, 30, tzinfo=UTC)
W = timedelta(minutes=10)
USER, SIGN = PinType.USER_CERTIFICATE, PinType.SIGNATURE
LOCKED = LockedPinAttempted(USER, Purpose.VERIFY)


def occur(table, stream, event, at):
    return repeats.aggregate(table, stream, (event,), at, W)


def test_the_first_in_a_window_is_recorded_the_rest_counted_and_the_next_window_carries_the_count():
    table: dict = {}
    recorded = []
    for second in range(500):  # 500 attempts, one a second: windows open at 0, 600 s
        got = occur(table, "card-a", LOCKED, T0 + timedelta(seconds=second))
        table = got.repeats
        recorded += got.events
        assert got.reports == ()
    assert recorded == [LockedPinAttempted(USER, Purpose.VERIFY, 0)]
    assert table[repeats.key_of("card-a", LOCKED).encode()] == repeats.Pending(T0, 499)
    later = occur(table, "card-a", LOCKED, T0 + W)
    assert later.events == (LockedPinAttempted(USER, Purpose.VERIFY, 499),)  # every attempt is accounted for
    assert later.repeats[repeats.key_of("card-a", LOCKED).encode()] == repeats.Pending(T0 + W, 0)


def test_the_key_is_the_stream_type_pin_type_and_payload_but_not_its_counts():
    table: dict = {}
    kinds = [
        ("card-a", LOCKED),
        ("card-b", LOCKED),  # another card
        ("card-a", LockedPinAttempted(SIGN, Purpose.VERIFY)),  # another PIN
        ("card-a", LockedPinAttempted(USER, Purpose.CHANGE)),  # another purpose
        ("card-a", ResetRefused(USER, "proxy", "no_open_inquiry")),
        ("card-a", CounterProcedureRefused("reset", ("documents/ids",), USER)),
        ("card-a", CounterProcedureRefused("reset", ("documents/ids",), SIGN)),
    ]
    for stream, e in kinds * 3:
        got = occur(table, stream, e, T0)
        table = got.repeats
    assert sorted(p.repeats for p in table.values()) == [2] * len(kinds)
    # an audit call's key is its RPC, card and filter; how many events it returned is not
    first = occur({}, "", AuditRead("QueryEvents", "", "{}", 10), T0)
    again = occur(first.repeats, "", AuditRead("QueryEvents", "", "{}", 3), T0 + timedelta(seconds=1))
    assert first.events == (AuditRead("QueryEvents", "", "{}", 10, 0),) and again.events == ()


def test_other_events_pass_as_they_are():
    failed = PinVerificationFailed(USER, Purpose.VERIFY, 1, 2)
    got = repeats.aggregate({}, "card-a", (failed, failed), T0, W)
    assert got.events == (failed, failed) and got.repeats == {}


def test_a_full_table_forgets_keys_with_nothing_pending_then_reports_the_oldest_count():
    table: dict = {}
    for i in range(repeats.MAX_KEYS):
        table = occur(table, f"card-{i:02}", LOCKED, T0 + timedelta(seconds=i)).repeats
    table = occur(table, "card-00", LOCKED, T0 + timedelta(seconds=40)).repeats  # one repeat pending on card-00
    got = occur(table, "card-new", LOCKED, T0 + timedelta(seconds=41))
    assert got.events == (LOCKED,) and got.reports == ()  # card-01, with nothing pending, was forgotten
    assert len(got.repeats) == repeats.MAX_KEYS
    table = got.repeats
    for i in range(2, repeats.MAX_KEYS):  # now every key has a repeat pending
        table = occur(table, f"card-{i:02}", LOCKED, T0 + timedelta(seconds=50)).repeats
    table = occur(table, "card-new", LOCKED, T0 + timedelta(seconds=50)).repeats
    got = occur(table, "card-other", LOCKED, T0 + timedelta(seconds=60))
    assert got.events == (LOCKED,)
    assert got.reports == (RepeatsCounted("LockedPinAttempted", "card-00", '{"purpose":"verify"}', 1, T0.isoformat(), USER),)
    assert len(got.repeats) == repeats.MAX_KEYS


def test_an_ended_window_with_nothing_pending_is_forgotten():
    table = occur({}, "card-a", LOCKED, T0).repeats
    table = occur(table, "card-b", LOCKED, T0 + W).repeats
    assert list(table) == [repeats.key_of("card-b", LOCKED).encode()]


def test_the_row_round_trips():
    table = occur(occur({}, "card-a", LOCKED, T0).repeats, "card-a", LOCKED, T0).repeats
    assert repeats.from_json(repeats.to_json(table)) == table
    assert repeats.to_json({}) is None and repeats.from_json(None) == {}


def test_a_terminals_suspensions_refused_beyond_its_bound_are_one_event_per_card_and_window():
    """SuspensionRefused (procedures.suspension_bound): the count made and the
    time it frees up differ from call to call, so they are not the key."""
    from pinlife.domain.events import SuspensionRefused

    table: dict = {}
    recorded = []
    for second in range(100):
        free_at = (T0 + timedelta(minutes=30, seconds=second)).isoformat()
        got = occur(table, "", SuspensionRefused("card-a", 30 + second, 3600, free_at), T0 + timedelta(seconds=second))
        table, recorded = got.repeats, recorded + list(got.events)
    assert [(e.card_id, e.repeated) for e in recorded] == [("card-a", 0)]
    other = occur(table, "", SuspensionRefused("card-b", 130, 3600, T0.isoformat()), T0 + timedelta(seconds=100))
    assert [e.card_id for e in other.events] == ["card-b"]  # another card: its own key
