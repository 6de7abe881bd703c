"""The audit's rules (service/domain/audit.py), pure: filter validation, page
bounds, cursors bound to their query, the statistics' range and buckets in
Asia/Tokyo, and the outcome of every event type. No gRPC, no SQL."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pinlife.domain.audit import (
    CHANNELS,
    COUNT_NAMES,
    COUNTED_AS,
    DEFAULT_PAGE_SIZE,
    DEFAULT_TOP_TERMINALS,
    MAX_DAY_BUCKETS_DAYS,
    MAX_FILTER_VALUES,
    MAX_HOUR_BUCKETS_DAYS,
    MAX_PAGE_SIZE,
    MAX_TOP_TERMINALS,
    OUTCOMES,
    Counts,
    Cursor,
    Filter,
    Granularity,
    Outcome,
    bucket_start,
    buckets,
    decode_cursor,
    encode_cursor,
    outcome_of,
    page_size,
    top_terminals,
    validate_filter,
    validate_statistics_range,
)
from pinlife.domain.calendar import TOKYO
from pinlife.domain.errors import InvalidInput
from pinlife.domain.events import EVENT_TYPES
from pinlife.domain.pins import PinType
from pinlife.keys.ring import IntegrityKeys
from tests.keys import INTEGRITY

UTC = UTC
NOW = datetime(2026, 12, 1, 1, 30, tzinfo=UTC)  # 10:30 in Tokyo
HOUR, DAY = Granularity.HOUR, Granularity.DAY
STEP = {HOUR: timedelta(hours=1), DAY: timedelta(days=1)}


def violations(call) -> dict[str, str]:
    """The field violations of an INVALID_ARGUMENT, by field."""
    with pytest.raises(InvalidInput) as err:
        call()
    return {v.field: v.description for v in err.value.violations}


# -- validate_filter ---------------------------------------------------------------
def test_a_valid_filter_is_returned_as_it_is():
    f = Filter(
        start=NOW,
        end=NOW + timedelta(hours=1),
        event_types=frozenset({"PinLocked", "AuditRead"}),
        channels=frozenset({"medical_reader", "auditor"}),
        terminal_id="reader-01",
        office="naka-ward-office",
        pin_type=PinType.SIGNATURE,
        outcomes=frozenset({Outcome.LOCKED}),
        stream_kind="card",
    )
    assert validate_filter(f) is f
    assert validate_filter(Filter()) == Filter()  # nothing set: everything


@pytest.mark.parametrize("end", [NOW, NOW - timedelta(microseconds=1), NOW - timedelta(days=3)])
def test_a_reversed_or_empty_range_is_refused_naming_to(end):
    found = violations(lambda: validate_filter(Filter(start=NOW, end=end)))
    assert set(found) == {"filter.to"}
    assert "must be after filter.from" in found["filter.to"]
    # the prefix names the field
    assert set(violations(lambda: validate_filter(Filter(start=NOW, end=end), prefix="query"))) == {"query.to"}
    # an open end on either side is no range to reverse
    assert validate_filter(Filter(start=NOW)) and validate_filter(Filter(end=end))


def test_an_unknown_event_type_is_named_with_the_known_ones():
    found = violations(lambda: validate_filter(Filter(event_types=frozenset({"PinLocked", "PinExploded"}))))
    assert set(found) == {"filter.event_types"}
    unknown, known = found["filter.event_types"].split("; known: ")
    assert unknown == "unknown: PinExploded"  # the known type alongside is not named
    assert known.split(", ") == sorted(EVENT_TYPES)


def test_an_unknown_channel_is_named():
    found = violations(lambda: validate_filter(Filter(channels=frozenset({"hacker", "auditor"}))))
    assert set(found) == {"filter.channels"}
    assert found["filter.channels"].startswith("unknown: hacker; known: ")
    assert "medical_reader" in found["filter.channels"]
    assert validate_filter(Filter(channels=frozenset(CHANNELS)))  # every role's channel is known


def test_unknown_values_are_named_at_most_five_sorted():
    names = frozenset(f"Fake{i}" for i in range(8))
    found = violations(lambda: validate_filter(Filter(event_types=names)))
    assert found["filter.event_types"].startswith("unknown: Fake0, Fake1, Fake2, Fake3, Fake4; known: ")
    assert "Fake5" not in found["filter.event_types"]


@pytest.mark.parametrize("name, known", [("event_types", sorted(EVENT_TYPES)), ("channels", sorted(CHANNELS))])
def test_more_than_max_filter_values_are_refused(name, known):
    too_many = frozenset(f"value-{i}" for i in range(MAX_FILTER_VALUES + 1))
    found = violations(lambda: validate_filter(Filter(**{name: too_many})))
    assert found == {f"filter.{name}": f"at most {MAX_FILTER_VALUES} values"}
    # exactly MAX_FILTER_VALUES values are judged by name, not refused by count
    at_limit = frozenset(f"value-{i}" for i in range(MAX_FILTER_VALUES))
    assert violations(lambda: validate_filter(Filter(**{name: at_limit})))[f"filter.{name}"].startswith("unknown: ")
    assert validate_filter(Filter(**{name: frozenset(known)}))


@pytest.mark.parametrize("name", ["terminal_id", "office"])
@pytest.mark.parametrize("value", ["x" * 65, "reader\n01", "\x00"])
def test_a_long_or_unprintable_terminal_or_office_is_refused(name, value):
    assert violations(lambda: validate_filter(Filter(**{name: value}))) == {
        f"filter.{name}": "must be at most 64 printable characters"
    }
    assert validate_filter(Filter(**{name: "x" * 64}))


def test_every_problem_of_a_filter_is_reported_at_once():
    f = Filter(start=NOW, end=NOW, event_types=frozenset({"Nope"}), channels=frozenset({"nobody"}), office="o" * 65)
    assert set(violations(lambda: validate_filter(f))) == {"filter.to", "filter.event_types", "filter.channels", "filter.office"}


# -- page sizes and top terminals ---------------------------------------------------------
def test_page_size_zero_means_the_default_and_the_bounds_are_kept():
    assert page_size(0) == DEFAULT_PAGE_SIZE == 100
    assert [page_size(n) for n in (1, 57, MAX_PAGE_SIZE)] == [1, 57, MAX_PAGE_SIZE]


@pytest.mark.parametrize("requested", [MAX_PAGE_SIZE + 1, 5000, -1, -DEFAULT_PAGE_SIZE])
def test_page_size_out_of_bounds_is_refused_naming_the_field(requested):
    assert violations(lambda: page_size(requested)) == {
        "page_size": f"must be 1 to {MAX_PAGE_SIZE} (0 means {DEFAULT_PAGE_SIZE})"
    }
    assert set(violations(lambda: page_size(requested, "query.page_size"))) == {"query.page_size"}


def test_top_terminals_zero_means_the_default_and_over_the_maximum_is_refused():
    assert top_terminals(0) == DEFAULT_TOP_TERMINALS
    assert [top_terminals(n) for n in (1, 5, MAX_TOP_TERMINALS)] == [1, 5, MAX_TOP_TERMINALS]
    for requested in (MAX_TOP_TERMINALS + 1, 10**6):
        assert violations(lambda requested=requested: top_terminals(requested)) == {
            "top_terminals": f"must be at most {MAX_TOP_TERMINALS}"
        }


# -- cursors --------------------------------------------------------------------------
HISTORY_QUERY = {"rpc": "GetCardHistory", "card": "card-1", "order": "oldest_first", "filter": {}}
EVENTS_QUERY = {"rpc": "QueryEvents", "order": "newest_first", "filter": {"event_types": ["PinLocked"]}}


def body_of(token: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))


def token_of(body: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=")


def test_no_token_is_the_first_page():
    assert decode_cursor("", HISTORY_QUERY, (int,), SEAL) is None


def test_a_cursor_round_trips_for_the_query_it_was_issued_for():
    token = encode_cursor(Cursor((42,)), HISTORY_QUERY, SEAL)
    assert "=" not in token and token.isascii()
    assert decode_cursor(token, HISTORY_QUERY, (int,), SEAL) == Cursor((42,))
    at = datetime(2026, 12, 1, 10, 30, 0, 123456, tzinfo=TOKYO)
    token = encode_cursor(Cursor((at.isoformat(), 7)), EVENTS_QUERY, SEAL)
    decoded = decode_cursor(token, EVENTS_QUERY, (datetime, int), SEAL)
    assert decoded == Cursor((at, 7)) and decoded.key[0].utcoffset() == timedelta(hours=9)
    # the same query built in another key order is the same query
    assert decode_cursor(token, dict(reversed(EVENTS_QUERY.items())), (datetime, int), SEAL) == Cursor((at, 7))


@pytest.mark.parametrize(
    "other",
    [
        {**HISTORY_QUERY, "card": "card-2"},
        {**HISTORY_QUERY, "order": "newest_first"},
        {**HISTORY_QUERY, "filter": {"event_types": ["PinLocked"]}},
        {**HISTORY_QUERY, "rpc": "QueryEvents"},
    ],
)
def test_a_cursor_from_another_query_is_refused(other):
    token = encode_cursor(Cursor((3,)), HISTORY_QUERY, SEAL)
    assert violations(lambda: decode_cursor(token, other, (int,), SEAL)) == {
        "page_token": "was issued for another query: pass the same filter and order"
    }


NOT_OURS = "is not a page token this service issued"
SEAL = INTEGRITY  # page tokens are sealed with the integrity keys


@pytest.mark.parametrize(
    "token",
    [
        "garbage!",
        "x",  # one character more than a multiple of four: no base64
        base64.urlsafe_b64encode(b"not json").decode(),
        token_of([1, 2, 3]),  # JSON, not an object
        token_of({"v": 1, "k": [3]}),  # no digest
        token_of({"v": 2, "k": [3], "q": "0"}),  # another version
        token_of({"v": 1, "k": 3, "q": "0"}),  # the key is not a list
        token_of({"v": 1, "k": [3], "q": 0}),  # the digest is not text
        token_of({"v": 1, "k": [-1], "q": "0"}),  # no such position
        token_of({"v": 1, "k": [True], "q": "0"}),  # a boolean is not a position
        token_of({"v": 1, "k": [3.0], "q": "0"}),
        token_of({"v": 1, "k": ["x"], "q": "0"}),
        token_of({"v": 1, "k": [3, 4], "q": "0"}),  # too long a key
        token_of({"v": 1, "k": [], "q": "0"}),  # too short
        encode_cursor(Cursor((10**400,)), HISTORY_QUERY, SEAL),  # well formed, but over the length bound
    ],
)
def test_a_token_this_service_did_not_issue_is_refused(token):
    assert violations(lambda: decode_cursor(token, HISTORY_QUERY, (int,), SEAL)) == {"page_token": NOT_OURS}


def test_a_tampered_token_is_refused():
    token = encode_cursor(Cursor((3,)), HISTORY_QUERY, SEAL)
    body = body_of(token)
    # the digest or the key changed: its seal no longer checks
    for forged in (token_of({**body, "q": "0" * 16}), token_of({**body, "k": [2]})):
        assert violations(lambda f=forged: decode_cursor(f, HISTORY_QUERY, (int,), SEAL)) == {"page_token": NOT_OURS}
    # sealed by another service's key, or made before tokens were sealed (v1)
    other = IntegrityKeys("int-other", {"int-other": b"o" * 32})
    assert violations(lambda: decode_cursor(encode_cursor(Cursor((3,)), HISTORY_QUERY, other), HISTORY_QUERY, (int,), SEAL)) == {
        "page_token": NOT_OURS
    }
    v1 = token_of({"v": 1, "k": [3], "q": body["q"]})
    assert violations(lambda: decode_cursor(v1, HISTORY_QUERY, (int,), SEAL)) == {"page_token": NOT_OURS}
    # sealed, but a position past what a store can hold
    assert violations(
        lambda: decode_cursor(encode_cursor(Cursor((2**63,)), HISTORY_QUERY, SEAL), HISTORY_QUERY, (int,), SEAL)
    ) == {"page_token": NOT_OURS}
    # cut short, or with its body edited into something else
    assert violations(lambda: decode_cursor(token[:-6], HISTORY_QUERY, (int,), SEAL)) == {"page_token": NOT_OURS}
    edited = token_of({**body, "k": {"version": 3}})
    assert violations(lambda: decode_cursor(edited, HISTORY_QUERY, (int,), SEAL)) == {"page_token": NOT_OURS}
    assert set(violations(lambda: decode_cursor("%%%", HISTORY_QUERY, (int,), SEAL, "query.page_token"))) == {"query.page_token"}


def test_a_cursor_decoded_with_the_wrong_shape_is_refused():
    history_token = encode_cursor(Cursor((3,)), HISTORY_QUERY, SEAL)
    assert violations(lambda: decode_cursor(history_token, HISTORY_QUERY, (datetime, int), SEAL)) == {"page_token": NOT_OURS}
    query_token = encode_cursor(Cursor((NOW.isoformat(), 9)), HISTORY_QUERY, SEAL)
    assert violations(lambda: decode_cursor(query_token, HISTORY_QUERY, (int,), SEAL)) == {"page_token": NOT_OURS}
    naive = encode_cursor(Cursor((NOW.replace(tzinfo=None).isoformat(), 9)), EVENTS_QUERY, SEAL)  # a time without its zone
    assert violations(lambda: decode_cursor(naive, EVENTS_QUERY, (datetime, int), SEAL)) == {"page_token": NOT_OURS}
    not_a_time = encode_cursor(Cursor(("yesterday", 9)), EVENTS_QUERY, SEAL)
    assert violations(lambda: decode_cursor(not_a_time, EVENTS_QUERY, (datetime, int), SEAL)) == {"page_token": NOT_OURS}


@settings(max_examples=150, deadline=None)
@given(versions=st.integers(min_value=0, max_value=2**62), card=st.text(min_size=1, max_size=20))
def test_every_history_cursor_round_trips_and_fits_its_bound(versions, card):
    query = {**HISTORY_QUERY, "card": card}
    token = encode_cursor(Cursor((versions,)), query, SEAL)
    assert len(token) <= 512
    assert decode_cursor(token, query, (int,), SEAL) == Cursor((versions,))


@settings(max_examples=300, deadline=None)
@given(token=st.one_of(st.text(max_size=600), st.binary(max_size=300).map(lambda b: base64.urlsafe_b64encode(b).decode())))
def test_any_token_is_either_a_cursor_or_invalid_input(token):
    """Whatever a client sends, the answer is a cursor or INVALID_ARGUMENT
    naming page_token, never another exception (an INTERNAL)."""
    try:
        cursor = decode_cursor(token, EVENTS_QUERY, (datetime, int), SEAL)
    except InvalidInput as err:
        assert [v.field for v in err.violations] == ["page_token"]
    else:
        assert cursor is None or isinstance(cursor, Cursor)


# -- the statistics' range -------------------------------------------------------------
@pytest.mark.parametrize("granularity, limit", [(HOUR, MAX_HOUR_BUCKETS_DAYS), (DAY, MAX_DAY_BUCKETS_DAYS)])
def test_the_statistics_range_is_bounded_by_granularity(granularity, limit):
    longest = NOW + timedelta(days=limit)
    assert validate_statistics_range(NOW, longest, granularity) == (NOW, longest)
    found = violations(lambda: validate_statistics_range(NOW, longest + timedelta(seconds=1), granularity))
    assert found == {"to": f"the range is at most {limit} days by {granularity.value}"}


def test_a_range_too_long_by_hour_may_be_asked_by_day():
    end = NOW + timedelta(days=MAX_HOUR_BUCKETS_DAYS + 1)
    assert "to" in violations(lambda: validate_statistics_range(NOW, end, HOUR))
    assert validate_statistics_range(NOW, end, DAY) == (NOW, end)


@pytest.mark.parametrize("granularity", [HOUR, DAY])
def test_a_reversed_or_empty_statistics_range_is_refused(granularity):
    for end in (NOW, NOW - timedelta(hours=1)):
        assert violations(lambda end=end: validate_statistics_range(NOW, end, granularity)) == {
            "to": "must be after from (the range is [from, to))"
        }


def test_both_ends_of_the_statistics_range_are_required():
    assert violations(lambda: validate_statistics_range(None, NOW, HOUR)) == {"from": "is required"}
    assert violations(lambda: validate_statistics_range(NOW, None, DAY)) == {"to": "is required"}
    assert violations(lambda: validate_statistics_range(None, None, DAY)) == {"from": "is required", "to": "is required"}


# -- buckets in Asia/Tokyo ------------------------------------------------------------
def test_a_day_bucket_starts_at_midnight_in_tokyo_which_is_15_utc_the_day_before():
    late_evening = datetime(2026, 12, 1, 14, 59, 59, 999999, tzinfo=UTC)  # 23:59:59.999999 on 1 December in Tokyo
    start = bucket_start(late_evening, DAY)
    assert start == datetime(2026, 11, 30, 15, 0, tzinfo=UTC)
    assert (start.astimezone(TOKYO).date().isoformat(), start.utcoffset()) == ("2026-12-01", timedelta(hours=9))
    assert start.isoformat() == "2026-12-01T00:00:00+09:00"  # how the API names it
    # one microsecond later it is 2 December in Tokyo, still 1 December in UTC
    assert bucket_start(late_evening + timedelta(microseconds=1), DAY) == datetime(2026, 12, 1, 15, 0, tzinfo=UTC)
    # a naive UTC reading would put the morning of 2 December (JST) in 1 December's bucket
    assert bucket_start(datetime(2026, 12, 1, 20, 0, tzinfo=UTC), DAY).isoformat() == "2026-12-02T00:00:00+09:00"


def test_an_hour_bucket_is_the_tokyo_hour():
    assert bucket_start(NOW, HOUR).isoformat() == "2026-12-01T10:00:00+09:00"
    assert bucket_start(datetime(2026, 12, 1, 10, 0, tzinfo=TOKYO), HOUR) == datetime(2026, 12, 1, 1, 0, tzinfo=UTC)


def test_hour_buckets_across_a_range_and_across_midnight_in_tokyo():
    # 08:30-12:30 in Tokyo: the hours starting at 08, 09, 10, 11 and 12
    got = buckets(NOW - timedelta(hours=2), NOW + timedelta(hours=2), HOUR)
    assert [b.isoformat() for b in got] == [f"2026-12-01T{h:02}:00:00+09:00" for h in (8, 9, 10, 11, 12)]
    # [22:00, 02:00) in Tokyo, both ends on the hour: four buckets, the end's own hour excluded
    start = datetime(2026, 12, 1, 22, 0, tzinfo=TOKYO)
    got = buckets(start, start + timedelta(hours=4), HOUR)
    assert [b.strftime("%d %H") for b in got] == ["01 22", "01 23", "02 00", "02 01"]


def test_day_buckets_across_a_range():
    # from 10:30 on 1 December to 10:30 on 4 December (JST): the days 1, 2, 3 and 4
    got = buckets(NOW, NOW + timedelta(days=3), DAY)
    assert [b.isoformat() for b in got] == [f"2026-12-0{d}T00:00:00+09:00" for d in (1, 2, 3, 4)]
    # a range ending exactly at a Tokyo midnight holds no bucket of the next day
    assert len(buckets(datetime(2026, 11, 30, 15, 0, tzinfo=UTC), datetime(2026, 12, 2, 15, 0, tzinfo=UTC), DAY)) == 2


INSTANTS = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31), timezones=st.just(UTC)
)  # Japan kept no summer time after 1951


@settings(max_examples=200, deadline=None)
@given(
    start=INSTANTS,
    length=st.timedeltas(min_value=timedelta(microseconds=1), max_value=timedelta(days=40)),
    granularity=st.sampled_from([HOUR, DAY]),
    probe=st.floats(min_value=0, max_value=1, exclude_max=True),
)
def test_buckets_are_contiguous_cover_the_range_and_hold_their_instants(start, length, granularity, probe):
    end = start + length
    got = buckets(start, end, granularity)
    step = STEP[granularity]
    assert got and got[0] == bucket_start(start, granularity) <= start
    assert all(b.utcoffset() == timedelta(hours=9) for b in got)
    assert all(later - earlier == step for earlier, later in zip(got, got[1:]))  # contiguous, no gap, no repeat
    assert got[-1] < end <= got[-1] + step  # the last bucket holds the end's last instant
    micros = length // timedelta(microseconds=1)
    at = start + timedelta(microseconds=min(int(micros * probe), micros - 1))  # any instant of [start, end)
    assert start <= at < end
    b = bucket_start(at, granularity)
    assert b in got and b <= at < b + step
    local = b.astimezone(TOKYO)
    assert (local.minute, local.second, local.microsecond) == (0, 0, 0)
    if granularity is DAY:
        assert local.hour == 0


@settings(max_examples=200, deadline=None)
@given(at=INSTANTS, granularity=st.sampled_from([HOUR, DAY]))
def test_bucket_start_is_idempotent_and_the_next_bucket_starts_after_it(at, granularity):
    b = bucket_start(at, granularity)
    assert bucket_start(b, granularity) == b
    assert b <= at < b + STEP[granularity]
    assert bucket_start(b + STEP[granularity], granularity) == b + STEP[granularity]
    assert bucket_start(b - timedelta(microseconds=1), granularity) == b - STEP[granularity]


def test_the_longest_ranges_have_a_bounded_number_of_buckets():
    assert len(buckets(NOW, NOW + timedelta(days=MAX_HOUR_BUCKETS_DAYS), HOUR)) == MAX_HOUR_BUCKETS_DAYS * 24 + 1
    assert len(buckets(NOW, NOW + timedelta(days=MAX_DAY_BUCKETS_DAYS), DAY)) == MAX_DAY_BUCKETS_DAYS + 1


# -- outcomes and counters ----------------------------------------------------------------
@pytest.mark.parametrize("event_type", sorted(EVENT_TYPES))
def test_every_event_type_has_an_outcome_of_its_own(event_type):
    assert event_type in OUTCOMES, f"{event_type} has no outcome: it would fall to OTHER silently"
    assert outcome_of(event_type) is OUTCOMES[event_type]
    assert isinstance(outcome_of(event_type), Outcome)


def test_outcomes_say_what_happened():
    assert outcome_of("PinVerified") is Outcome.SUCCESS and outcome_of("CardEnrolled") is Outcome.SUCCESS
    assert outcome_of("PinVerificationFailed") is Outcome.FAILURE
    assert outcome_of("PinLocked") is Outcome.LOCKED and outcome_of("LockedPinAttempted") is Outcome.LOCKED
    assert outcome_of("AccessDenied") is Outcome.REFUSED and outcome_of("TerminalThrottled") is Outcome.REFUSED
    assert outcome_of("AuditRead") is Outcome.OTHER
    assert outcome_of("NoSuchEvent") is Outcome.OTHER
    assert set(OUTCOMES) == set(EVENT_TYPES)


def test_a_filter_by_outcome_admits_exactly_the_types_of_that_outcome():
    assert Filter().types() is None
    failures = Filter(outcomes=frozenset({Outcome.FAILURE})).types()
    assert failures == {t for t in EVENT_TYPES if outcome_of(t) is Outcome.FAILURE} >= {"PinVerificationFailed"}
    both = Filter(event_types=frozenset({"PinLocked", "PinVerified"}), outcomes=frozenset({Outcome.LOCKED})).types()
    assert both == {"PinLocked"}
    every = Filter(outcomes=frozenset(Outcome)).types()
    assert every == set(EVENT_TYPES)


def test_counters_count_known_types_and_every_event():
    assert set(COUNTED_AS) <= set(EVENT_TYPES)
    assert {c for counted in COUNTED_AS.values() for c in counted} | {"events"} == set(COUNT_NAMES)
    c = Counts()
    c.add("PinVerificationFailed", 3)
    c.add("PinVerified", 2)
    c.add("AccessDenied", 1, aggregated_refusals=4)
    c.add("AuditRead", 5)
    v = c.values
    assert (v["events"], v["checks"], v["failures"], v["refusals"], v["locks"]) == (11, 5, 3, 5, 0)


def test_a_filters_dict_is_stable_whatever_the_order_of_its_sets():
    a = Filter(
        start=NOW, event_types=frozenset(["PinVerified", "PinLocked"]), outcomes=frozenset([Outcome.LOCKED, Outcome.FAILURE])
    )
    b = Filter(
        start=NOW, event_types=frozenset(["PinLocked", "PinVerified"]), outcomes=frozenset([Outcome.FAILURE, Outcome.LOCKED])
    )
    assert (
        a.as_dict()
        == b.as_dict()
        == {"from": NOW.isoformat(), "event_types": ["PinLocked", "PinVerified"], "outcomes": ["failure", "locked"]}
    )
    token = encode_cursor(Cursor((1,)), {"filter": a.as_dict()}, SEAL)
    assert decode_cursor(token, {"filter": b.as_dict()}, (int,), SEAL) == Cursor((1,))
    assert (
        "another query"
        in violations(lambda: decode_cursor(token, {"filter": Filter(start=NOW).as_dict()}, (int,), SEAL))["page_token"]
    )
