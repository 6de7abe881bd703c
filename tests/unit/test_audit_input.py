"""Auditors' input out of range is INVALID_ARGUMENT naming the field, never
an internal error: times protobuf itself would not accept, times outside
[2000, 2200), statistics ranges there, positions past 64-bit storage."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from pinlife.api import audit_mapping as amap
from pinlife.domain.audit import MAX_FILTER_VALUES, Granularity, validate_filter, validate_position, validate_statistics_range
from pinlife.domain.errors import InvalidInput
from pinlife.domain.log import LoggedEvent
from pinlife.v1 import audit_service_pb2 as apb


def fields(fn) -> set[str]:
    with pytest.raises(InvalidInput) as err:
        fn()
    return {v.field for v in err.value.violations}


@pytest.mark.parametrize(
    "seconds, nanos",
    [(0, 1_000_000_000), (0, -1), (2**62, 0), (-(2**62), 0), (253402300800, 0)],  # nanos out of range; past 9999-12-31
)
def test_a_timestamp_protobuf_would_not_accept_names_its_field(seconds, nanos):
    ts = Timestamp(seconds=seconds, nanos=nanos)
    assert fields(lambda: amap.time(ts, True, "filter.from")) == {"filter.from"}


@pytest.mark.parametrize("year", [1970, 1999, 2200, 9999])
def test_a_filter_outside_the_times_asked_about_names_its_field(year):
    f = apb.EventFilter()
    getattr(f, "from").FromDatetime(datetime(year, 6, 1))
    assert fields(lambda: validate_filter(amap.event_filter(f))) == {"filter.from"}


@pytest.mark.parametrize(
    "name, value", [("event_types", "PinLocked"), ("channels", "medical_reader"), ("outcomes", apb.EVENT_OUTCOME_LOCKED)]
)
def test_a_filter_list_is_counted_as_sent_before_its_repeats_are_merged(name, value):
    too_long = apb.EventFilter(**{name: [value] * (MAX_FILTER_VALUES + 1)})
    with pytest.raises(InvalidInput) as err:
        amap.event_filter(too_long)
    ((field, description),) = [(v.field, v.description) for v in err.value.violations]
    assert field == f"filter.{name}" and description.startswith(f"at most {MAX_FILTER_VALUES} values (sent: 51")
    at_limit = amap.event_filter(apb.EventFilter(**{name: [value] * MAX_FILTER_VALUES}))
    assert validate_filter(at_limit) == at_limit


def test_every_list_over_its_bound_is_named_at_once():
    f = apb.EventFilter(event_types=["PinLocked"] * 60, channels=["medical_reader"] * 60)
    assert fields(lambda: amap.event_filter(f)) == {"filter.event_types", "filter.channels"}


def test_statistics_for_the_year_9999_are_refused_naming_both_ends():
    start, end = datetime(9999, 12, 30, tzinfo=UTC), datetime(9999, 12, 31, tzinfo=UTC)
    assert fields(lambda: validate_statistics_range(start, end, Granularity.HOUR)) == {"from", "to"}


@pytest.mark.parametrize("position", [2**63, 2**64 - 1, -1])
def test_a_position_past_64_bit_storage_names_its_field(position):
    assert fields(lambda: validate_position(position, "after_position")) == {"after_position"}


def test_positions_and_times_in_range_pass():
    assert validate_position(2**63 - 1, "after_position") == 2**63 - 1
    start, end = datetime(2026, 12, 1, tzinfo=UTC), datetime(2026, 12, 2, tzinfo=UTC)
    assert validate_statistics_range(start, end, Granularity.HOUR) == (start, end)


def stored(**changes) -> LoggedEvent:
    """A row of the log as someone may insert it behind the service's back."""
    columns = dict(
        position=7,
        stream_id="card-1",
        stream_kind="card",
        version=2,
        event_id="e-7",
        event_type="PinVerified",
        schema_version=1,
        occurred_at=datetime(2026, 12, 1, tzinfo=UTC),
        pin_type="user_certificate",
        channel="medical_reader",
        terminal_id="reader-1",
        request_id="r-1",
        payload={},
        prev_hash="0" * 64,
        hash="1" * 64,
    )
    return LoggedEvent.read(**{**columns, **changes})


@pytest.mark.parametrize(
    "changes, shown",
    [
        ({"payload": "a string, not an object"}, {"stored": "a string, not an object"}),
        ({"event_type": "NoSuchEvent", "payload": {"x": 1}}, {"x": 1.0}),
        ({"payload": {"blob": "x" * 100_000}}, {"oversized_payload_bytes": 100_012.0}),
        ({"pin_type": "no_such_pin"}, None),
        ({"version": -5}, None),
    ],
)
def test_a_row_inserted_behind_the_service_is_shown_as_far_as_it_can_be(changes, shown):
    out = amap.event(stored(**changes))
    payload = dict(out.payload.json)
    if shown is not None:
        assert payload == shown
    else:
        assert set(payload) == {"unreadable"} and out.position == 7
